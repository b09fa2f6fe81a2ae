//! The load generators the comparison can drive, and the parsing of their output:
//! `wrk -t1 --latency` (the neutral default) or our own `cg-load --json` for keep-alive
//! requests (wrk also over https://, its OpenSSL pinned by an `OPENSSL_CONF` file), and
//! `cg-handshake --json` for TLS handshakes per second ([`Handshakes`]).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::ValueEnum;

use crate::step::display;

/// Which load generator drives the proxies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum LoadgenKind {
    /// wrk, one thread: a tool none of the proxies was written against.
    Wrk,
    /// cg-load (benches/), one thread.
    CgLoad,
}

impl LoadgenKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            LoadgenKind::Wrk => "wrk -t1",
            LoadgenKind::CgLoad => "cg-load -t1",
        }
    }
}

/// A configured load generator.
pub(crate) struct Loadgen {
    pub(crate) kind: LoadgenKind,
    /// Path of cg-load (built by the comparison).
    pub(crate) cg_load: PathBuf,
    /// `OPENSSL_CONF` for wrk: the TLS parameters its OpenSSL offers on https:// URLs.
    pub(crate) openssl_conf: Option<PathBuf>,
}

/// Something that puts a measured load on a URL: what [`super::bench::Bench`] drives.
pub(crate) trait Load {
    /// Runs `connections` clients against `url` for `duration`; blocks. The load
    /// generator must be a child process waited for here (its CPU is read that way).
    fn run(&self, url: &str, connections: usize, duration: Duration) -> Result<LoadResult>;
}

/// What one load run measured.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct LoadResult {
    /// Complete responses.
    pub(crate) requests: u64,
    /// Responses per second.
    pub(crate) rps: f64,
    /// Median latency, µs.
    pub(crate) p50_us: f64,
    /// 99th percentile latency, µs.
    pub(crate) p99_us: f64,
    /// Socket errors and non-2xx/3xx responses.
    pub(crate) errors: u64,
    /// Handshake runs: completed connections whose session was resumed.
    pub(crate) resumed: Option<u64>,
}

impl Load for Loadgen {
    /// Runs `connections` keep-alive connections against `url` for `duration`.
    fn run(&self, url: &str, connections: usize, duration: Duration) -> Result<LoadResult> {
        let mut cmd = match self.kind {
            LoadgenKind::Wrk => {
                let mut c = Command::new("wrk");
                if let Some(conf) = &self.openssl_conf {
                    c.env("OPENSSL_CONF", conf);
                }
                c.args(["-t1", "--latency", "-c", &connections.to_string()])
                    .arg("-d")
                    .arg(format!("{}s", duration.as_secs().max(1)))
                    .arg(url);
                c
            }
            LoadgenKind::CgLoad => {
                let mut c = Command::new(&self.cg_load);
                c.args(["-t", "1", "-q", "--json", "-c", &connections.to_string()])
                    .arg("-d")
                    .arg(format!("{}ms", duration.as_millis()))
                    .arg(url);
                c
            }
        };
        let shown = display(&cmd);
        let out = cmd
            .output()
            .with_context(|| format!("could not start `{shown}`"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        // cg-load exits 1 when no request succeeded; its JSON still says what happened.
        let tolerated = self.kind == LoadgenKind::CgLoad && out.status.code() == Some(1);
        if !(out.status.success() || tolerated) {
            bail!(
                "`{shown}` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        match self.kind {
            LoadgenKind::Wrk => parse_wrk(&stdout),
            LoadgenKind::CgLoad => parse_cg_load(&stdout),
        }
        .with_context(|| format!("reading the output of `{shown}`:\n{stdout}"))
    }
}

/// `850.00us`, `1.23ms`, `2.00s` -> microseconds.
fn wrk_time_us(s: &str) -> Option<f64> {
    let (n, scale) = if let Some(n) = s.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60e6)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e6)
    } else {
        return None;
    };
    n.parse::<f64>().ok().map(|v| v * scale)
}

/// Reads requests, req/s, p50/p99 and errors from `wrk --latency` output.
pub(crate) fn parse_wrk(out: &str) -> Result<LoadResult> {
    let mut r = LoadResult::default();
    let (mut have_rps, mut have_reqs) = (false, false);
    for line in out.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", v] => {
                r.rps = v.parse().context("Requests/sec")?;
                have_rps = true;
            }
            [n, "requests", "in", ..] => {
                r.requests = n.parse().context("requests")?;
                have_reqs = true;
            }
            ["50%", v] => r.p50_us = wrk_time_us(v).context("50% latency")?,
            ["99%", v] => r.p99_us = wrk_time_us(v).context("99% latency")?,
            ["Socket", "errors:", rest @ ..] => {
                r.errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => r.errors += n.parse::<u64>()?,
            _ => {}
        }
    }
    if !(have_rps && have_reqs) {
        bail!("no `Requests/sec:` or `N requests in` line");
    }
    Ok(r)
}

/// Reads the same figures from `cg-load --json`.
pub(crate) fn parse_cg_load(out: &str) -> Result<LoadResult> {
    let v: serde_json::Value = serde_json::from_str(out).context("cg-load JSON")?;
    let num = |ptr: &str| {
        v.pointer(ptr)
            .and_then(serde_json::Value::as_f64)
            .with_context(|| format!("cg-load JSON has no {ptr}"))
    };
    Ok(LoadResult {
        requests: num("/requests")? as u64,
        rps: num("/rps")?,
        p50_us: num("/latency_us/p50")?,
        p99_us: num("/latency_us/p99")?,
        errors: num("/errors_total")? as u64,
        resumed: None,
    })
}

/// `cg-handshake`: every connection a new TLS handshake, full or (with `resume`) resumed
/// from the ticket of the connection before, against a pinned certificate.
pub(crate) struct Handshakes {
    /// Path of cg-handshake (built by the comparison).
    pub(crate) bin: PathBuf,
    /// The certificate every proxy serves (PEM).
    pub(crate) cert: PathBuf,
    /// SNI and Host header.
    pub(crate) server_name: &'static str,
    /// The one TLS 1.3 suite offered.
    pub(crate) suite: String,
    /// Resume sessions.
    pub(crate) resume: bool,
}

impl Handshakes {
    /// Runs and returns the whole report (negotiated parameters included).
    pub(crate) fn report(
        &self,
        url: &str,
        clients: usize,
        duration: Duration,
    ) -> Result<serde_json::Value> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg(url)
            .arg("--cert")
            .arg(&self.cert)
            .args(["--server-name", self.server_name, "--suite", &self.suite])
            .args(["--json", "-c", &clients.to_string()])
            .arg("-d")
            .arg(format!("{}ms", duration.as_millis()));
        if self.resume {
            cmd.arg("--resume");
        }
        let shown = display(&cmd);
        let out = cmd
            .output()
            .with_context(|| format!("could not start `{shown}`"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        // Exit 1: no connection completed; the JSON says why.
        if !(out.status.success() || out.status.code() == Some(1)) {
            bail!(
                "`{shown}` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        serde_json::from_str(&stdout)
            .with_context(|| format!("reading the output of `{shown}`:\n{stdout}"))
    }
}

impl Load for Handshakes {
    fn run(&self, url: &str, connections: usize, duration: Duration) -> Result<LoadResult> {
        parse_cg_handshake(&self.report(url, connections, duration)?)
    }
}

/// Reads handshakes (as requests), their rate, latency, errors and resumptions from
/// `cg-handshake --json`.
pub(crate) fn parse_cg_handshake(v: &serde_json::Value) -> Result<LoadResult> {
    let num = |ptr: &str| {
        v.pointer(ptr)
            .and_then(serde_json::Value::as_f64)
            .with_context(|| format!("cg-handshake JSON has no {ptr}"))
    };
    Ok(LoadResult {
        requests: num("/connections")? as u64,
        rps: num("/rate")?,
        p50_us: num("/latency_us/p50")?,
        p99_us: num("/latency_us/p99")?,
        errors: num("/errors_total")? as u64,
        resumed: Some(num("/resumed")? as u64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK: &str = "Running 5s test @ http://127.0.0.1:8080/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.24ms  311.22us  14.51ms   93.35%
    Req/Sec    51.98k     2.47k   55.11k    82.00%
  Latency Distribution
     50%    1.20ms
     75%    1.30ms
     90%    1.45ms
     99%    2.26ms
  258669 requests in 5.00s, 40.21MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  51722.30
Transfer/sec:      8.04MB
";

    #[test]
    fn parses_wrk() {
        let r = parse_wrk(WRK).expect("valid");
        assert_eq!(r.requests, 258_669);
        assert!((r.rps - 51_722.30).abs() < 1e-6);
        assert!((r.p50_us - 1_200.0).abs() < 1e-6);
        assert!((r.p99_us - 2_260.0).abs() < 1e-6);
        assert_eq!(r.errors, 7);
        assert!(parse_wrk("nothing").is_err());
    }

    #[test]
    fn wrk_units() {
        assert_eq!(wrk_time_us("850.00us"), Some(850.0));
        assert_eq!(wrk_time_us("2.00s"), Some(2e6));
        assert_eq!(wrk_time_us("1.00m"), Some(60e6));
        assert_eq!(wrk_time_us("12"), None);
    }

    #[test]
    fn parses_cg_load() {
        let json = r#"{"requests": 10, "rps": 5.5, "latency_us": {"p50": 100, "p99": 250},
            "errors_total": 1}"#;
        let r = parse_cg_load(json).expect("valid");
        assert_eq!((r.requests, r.errors), (10, 1));
        assert_eq!((r.rps, r.p50_us, r.p99_us), (5.5, 100.0, 250.0));
    }

    #[test]
    fn parses_cg_handshake() {
        let json = r#"{"connections": 900, "rate": 450.5, "full": 8, "resumed": 892,
            "latency_us": {"p50": 900, "p99": 4000}, "errors_total": 2}"#;
        let v = serde_json::from_str(json).expect("JSON");
        let r = parse_cg_handshake(&v).expect("valid");
        assert_eq!((r.requests, r.errors, r.resumed), (900, 2, Some(892)));
        assert_eq!((r.rps, r.p50_us, r.p99_us), (450.5, 900.0, 4000.0));
    }
}
