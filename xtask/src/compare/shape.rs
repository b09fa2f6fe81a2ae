//! The traffic shapes of the plain comparison (`--shapes`): what each one asks of the
//! load generator (path, extra headers, a wrk script for request bodies, background
//! slow clients), the connection counts it runs at and how its figures are named.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use clap::ValueEnum;
use serde::Serialize;

/// 1 MiB.
pub(crate) const MIB: u64 = 1 << 20;
/// Connections of every shape but keep-alive (whose counts are `--connections`).
pub(crate) const SHAPE_CONNECTIONS: usize = 16;
/// Mixed shape: slow keep-alive clients in the background.
pub(crate) const SLOW_CLIENTS: usize = 256;
/// Mixed shape: requests per second of each slow client (open loop).
pub(crate) const SLOW_RATE_EACH: usize = 10;

/// One traffic shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Shape {
    /// Keep-alive small responses (`ok\n`) at `--connections`.
    Keepalive,
    /// A new client connection per request (`Connection: close`), 16 connections.
    Churn,
    /// GET of a 1 MiB response body, 16 keep-alive connections.
    #[value(name = "download-1m")]
    #[serde(rename = "download-1m")]
    Download1m,
    /// GET of a 16 MiB response body, 16 keep-alive connections.
    #[value(name = "download-16m")]
    #[serde(rename = "download-16m")]
    Download16m,
    /// POST of a 1 MiB request body (Content-Length), 16 keep-alive connections.
    #[value(name = "upload-1m")]
    #[serde(rename = "upload-1m")]
    Upload1m,
    /// POST of a 16 MiB request body (Content-Length), 16 keep-alive connections.
    #[value(name = "upload-16m")]
    #[serde(rename = "upload-16m")]
    Upload16m,
    /// 256 slow open-loop keep-alive clients (10 req/s each) and 16 fast closed-loop
    /// connections at once.
    Mixed,
}

/// The metric a shape's throughput is reported in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unit {
    /// Requests per second, CPU per request.
    Request,
    /// New connections per second, CPU per connection.
    Connection,
    /// MiB per second, CPU per MiB, MiB per CPU second.
    Body(u64),
}

impl Shape {
    /// Every shape, in the order they run and are reported.
    pub(crate) const ALL: [Shape; 7] = [
        Shape::Keepalive,
        Shape::Churn,
        Shape::Download1m,
        Shape::Download16m,
        Shape::Upload1m,
        Shape::Upload16m,
        Shape::Mixed,
    ];

    /// The name `--shapes` takes.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Shape::Keepalive => "keepalive",
            Shape::Churn => "churn",
            Shape::Download1m => "download-1m",
            Shape::Download16m => "download-16m",
            Shape::Upload1m => "upload-1m",
            Shape::Upload16m => "upload-16m",
            Shape::Mixed => "mixed",
        }
    }

    /// What the shape is, for the report.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Shape::Keepalive => "keep-alive small responses (`ok\\n`)",
            Shape::Churn => "a new client connection per request (`Connection: close`)",
            Shape::Download1m => "GET of a 1 MiB response body (nginx sendfile), keep-alive",
            Shape::Download16m => "GET of a 16 MiB response body (nginx sendfile), keep-alive",
            Shape::Upload1m => "POST of a 1 MiB request body (Content-Length), keep-alive",
            Shape::Upload16m => "POST of a 16 MiB request body (Content-Length), keep-alive",
            Shape::Mixed => {
                "256 slow keep-alive clients (cg-load, open loop, 10 req/s each) and fast \
                 closed-loop ones at once; req/s and p99 are the fast clients', CPU per \
                 request over both"
            }
        }
    }

    /// Path requested (the upstreams serve each, [`super::procs::upstream_conf`]).
    pub(crate) fn path(self) -> &'static str {
        match self {
            Shape::Download1m => "/1m",
            Shape::Download16m => "/16m",
            Shape::Upload1m | Shape::Upload16m => "/upload",
            Shape::Keepalive | Shape::Churn | Shape::Mixed => "/",
        }
    }

    /// Bytes of the body each request moves (response for downloads, request for
    /// uploads).
    pub(crate) fn body_bytes(self) -> Option<u64> {
        match self {
            Shape::Download1m | Shape::Upload1m => Some(MIB),
            Shape::Download16m | Shape::Upload16m => Some(16 * MIB),
            Shape::Keepalive | Shape::Churn | Shape::Mixed => None,
        }
    }

    /// How throughput and CPU are counted.
    pub(crate) fn unit(self) -> Unit {
        match (self, self.body_bytes()) {
            (_, Some(b)) => Unit::Body(b),
            (Shape::Churn, None) => Unit::Connection,
            _ => Unit::Request,
        }
    }

    /// Size of the request body sent, for uploads.
    pub(crate) fn upload_bytes(self) -> Option<u64> {
        matches!(self, Shape::Upload1m | Shape::Upload16m)
            .then(|| self.body_bytes())
            .flatten()
    }

    /// Extra request headers (`Name: value`).
    pub(crate) fn headers(self) -> Vec<String> {
        match self {
            Shape::Churn => vec!["Connection: close".into()],
            _ => Vec::new(),
        }
    }

    /// Background slow clients `(connections, total req/s)`, for the mixed shape.
    pub(crate) fn slow_clients(self) -> Option<(usize, usize)> {
        (self == Shape::Mixed).then_some((SLOW_CLIENTS, SLOW_CLIENTS * SLOW_RATE_EACH))
    }

    /// Connection counts: `--connections` for keep-alive, [`SHAPE_CONNECTIONS`] else.
    pub(crate) fn connections(self, keepalive: &[usize]) -> Vec<usize> {
        match self {
            Shape::Keepalive => keepalive.to_vec(),
            _ => vec![SHAPE_CONNECTIONS],
        }
    }

    /// Writes the wrk script of an upload shape into `dir` and returns its path.
    pub(crate) fn write_script(self, dir: &Path) -> Result<Option<PathBuf>> {
        let Some(n) = self.upload_bytes() else {
            return Ok(None);
        };
        let path = dir.join(format!("{}.lua", self.name()));
        fs::write(&path, upload_script(n))
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(Some(path))
    }
}

/// The wrk script that POSTs `n` bytes per request (wrk sets Content-Length).
pub(crate) fn upload_script(n: u64) -> String {
    format!(
        "wrk.method = \"POST\"\nwrk.body = string.rep(\"x\", {n})\n\
         wrk.headers[\"Content-Type\"] = \"application/octet-stream\"\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_scripts() {
        assert_eq!(
            upload_script(1_048_576),
            "wrk.method = \"POST\"\nwrk.body = string.rep(\"x\", 1048576)\n\
             wrk.headers[\"Content-Type\"] = \"application/octet-stream\"\n"
        );
        assert_eq!(Shape::Upload16m.upload_bytes(), Some(16 * MIB));
        assert_eq!(Shape::Download1m.upload_bytes(), None);
    }

    #[test]
    fn names_match_the_flag() {
        for s in Shape::ALL {
            let parsed = Shape::from_str(s.name(), false).expect("a --shapes value");
            assert_eq!(parsed, s);
            assert_eq!(
                serde_json::to_value(s).expect("serializes"),
                serde_json::Value::from(s.name())
            );
        }
        assert_eq!(Shape::Churn.unit(), Unit::Connection);
        assert_eq!(Shape::Upload1m.unit(), Unit::Body(MIB));
        assert_eq!(Shape::Mixed.slow_clients(), Some((256, 2560)));
    }
}
