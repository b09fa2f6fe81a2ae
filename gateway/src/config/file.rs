//! The TOML configuration file: parsed with serde (unknown fields are errors that name
//! the line), then checked (addresses, percents, templates, unique names) into a
//! [`Config`]. `canarygate check-config FILE` runs exactly this.
//!
//! ```toml
//! [server]
//! workers = 2
//! admin_socket = "/run/canarygate/admin.sock"
//!
//! [[stage]]
//! name = "prod"
//! listen = "127.0.0.1:8080"
//!
//! [[stage.route]]
//! name = "api"
//! path_prefix = "/api"
//! upstream_path_prefix = "/${stageVariables.version}"
//! stable = { id = "v1", endpoints = ["127.0.0.1:9001"], variables = { version = "v1" } }
//! canary = { id = "v2", endpoints = ["127.0.0.1:9002"], percent = 5, variables = { version = "v2" } }
//! ```

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::health::{FileHealthCheck, FileOutlier, HealthConfig};
use super::tls::parse_server_name;
use super::value::{parse_addr, parse_duration, parse_header_name};
use super::{
    Assignment, Canary, Config, Deployment, FleetConfig, GRPC_CODE_NAMES, GrpcCodes, RouteConfig,
    ServerConfig, StageConfig, StageTls, StickyKey, TlsCert, TlsVersion, UpstreamProtocol,
    UpstreamTls,
};
use crate::config::template::Template;
use crate::config::value::parse_percent;

/// A configuration file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Syntax error, unknown field or wrong type (the message names line and column).
    #[error("{path}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// toml's message, with line, column and the offending text.
        message: String,
    },
    /// A value is well-formed TOML but not acceptable.
    #[error("{path}:{line}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line of the value.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    server: FileServer,
    #[serde(default)]
    stage: Vec<FileStage>,
    /// Fleet mode: the stages come from etcd (and may be left out here).
    fleet: Option<FileFleet>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFleet {
    etcd: Spanned<Vec<String>>,
    prefix: Option<Spanned<String>>,
    member: Option<Spanned<String>>,
    cache: Option<PathBuf>,
    lease: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileServer {
    workers: Option<u16>,
    io_driver: Option<Spanned<String>>,
    variant_header: Option<String>,
    log_format: Option<Spanned<String>>,
    admin_socket: Option<PathBuf>,
    metrics_listen: Option<Spanned<String>>,
    dashboard: Option<Spanned<bool>>,
    access_log: Option<PathBuf>,
    canary_access_log: Option<PathBuf>,
    header_timeout: Option<Spanned<String>>,
    keepalive_timeout: Option<Spanned<String>>,
    connect_timeout: Option<Spanned<String>>,
    response_timeout: Option<Spanned<String>>,
    send_timeout: Option<Spanned<String>>,
    pool_idle_timeout: Option<Spanned<String>>,
    pool_max_idle: Option<usize>,
    max_header_bytes: Option<usize>,
    max_body_bytes: Option<u64>,
    tls_handshake_timeout: Option<Spanned<String>>,
    max_tls_handshakes: Option<usize>,
    h2_max_concurrent_streams: Option<u32>,
    grpc_error_codes: Option<Spanned<Vec<GrpcCode>>>,
}

/// A gRPC status code in `grpc_error_codes`: its number or its name.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum GrpcCode {
    Number(i64),
    Name(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileStage {
    name: Spanned<String>,
    listen: Spanned<String>,
    #[serde(default)]
    route: Vec<FileRoute>,
    /// TLS termination: certificates chosen by SNI.
    tls: Option<Spanned<Vec<FileTlsCert>>>,
    tls_min_version: Option<Spanned<String>>,
    /// HTTP/2 from clients (ALPN h2, h2c with prior knowledge).
    #[serde(default)]
    http2: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTlsCert {
    cert: PathBuf,
    key: PathBuf,
    #[serde(default)]
    server_names: Vec<Spanned<String>>,
    #[serde(default)]
    default: bool,
}

/// `tls = { ... }` on a deployment with `https://` endpoints.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileUpstreamTls {
    server_name: Option<Spanned<String>>,
    ca_file: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRoute {
    name: Spanned<String>,
    host: Option<String>,
    path_prefix: Option<Spanned<String>>,
    #[serde(default)]
    strip_path_prefix: bool,
    #[serde(default)]
    retry_on_stable: bool,
    upstream_path_prefix: Option<Spanned<String>>,
    #[serde(default)]
    request_headers: BTreeMap<String, Spanned<String>>,
    assignment: Option<Spanned<String>>,
    sticky_key: Option<Spanned<String>>,
    sticky_salt: Option<String>,
    force_header: Option<String>,
    force_cookie: Option<String>,
    stable: FileDeployment,
    canary: Option<FileCanary>,
    rollout: Option<Spanned<crate::rollout::plan::FilePlan>>,
    kill_switch: Option<Spanned<crate::config::killswitch::FileKillSwitch>>,
    /// Default active check of both deployments.
    health_check: Option<Spanned<FileHealthCheck>>,
    /// Default outlier detection of both deployments.
    outlier: Option<Spanned<FileOutlier>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDeployment {
    id: String,
    endpoints: Spanned<Vec<String>>,
    #[serde(default)]
    variables: BTreeMap<String, String>,
    health_check: Option<Spanned<FileHealthCheck>>,
    outlier: Option<Spanned<FileOutlier>>,
    tls: Option<Spanned<FileUpstreamTls>>,
    protocol: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCanary {
    id: String,
    endpoints: Spanned<Vec<String>>,
    #[serde(default)]
    percent: Option<Spanned<Percent>>,
    #[serde(default)]
    variables: BTreeMap<String, String>,
    health_check: Option<Spanned<FileHealthCheck>>,
    outlier: Option<Spanned<FileOutlier>>,
    tls: Option<Spanned<FileUpstreamTls>>,
    protocol: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Percent {
    Int(i64),
    Float(f64),
    Text(String),
}

/// Reads and checks the configuration file at `path`.
pub(crate) fn load(path: &Path) -> Result<Config, FileError> {
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut config = parse(&text, path)?;
    config.server.source = Some(path.to_owned());
    Ok(config)
}

/// Parses configuration text; `path` is only used in messages.
pub fn parse(text: &str, path: &Path) -> Result<Config, FileError> {
    let file: FileConfig = toml::from_str(text).map_err(|e| {
        // toml's message is "TOML parse error at line L, column C", a snippet, then the
        // reason; keep the position and the reason on one line.
        let full = e.to_string();
        let position = full
            .lines()
            .next()
            .unwrap_or_default()
            .trim_start_matches("TOML parse error at ")
            .to_owned();
        let reason = full
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or_default()
            .trim()
            .to_owned();
        FileError::Syntax {
            path: path.to_owned(),
            message: format!("{position}: {reason}"),
        }
    })?;
    let cx = Cx { text, path };
    let mut config = Config::default();
    cx.server(&file.server, &mut config.server)?;
    if let Some(f) = &file.fleet {
        config.server.fleet = Some(cx.fleet(f)?);
    }
    if file.stage.is_empty() && file.fleet.is_none() {
        return Err(cx.invalid(0..0, "at least one [[stage]] is needed"));
    }
    let mut route_names = HashSet::new();
    let mut listens = HashSet::new();
    let mut stage_names = HashSet::new();
    for stage in &file.stage {
        let listen = cx.addr(&stage.listen, "listen")?;
        if !listens.insert(listen) {
            return Err(cx.invalid(
                stage.listen.span(),
                format!("listen address {listen} is used by two stages"),
            ));
        }
        if !stage_names.insert(stage.name.get_ref().clone()) {
            return Err(cx.invalid(
                stage.name.span(),
                format!("stage name '{}' is used twice", stage.name.get_ref()),
            ));
        }
        let mut routes = Vec::new();
        for r in &stage.route {
            let route = cx.route(r)?;
            if !route_names.insert(route.name.clone()) {
                return Err(cx.invalid(
                    r.name.span(),
                    format!(
                        "route name '{}' is used twice (names are global)",
                        route.name
                    ),
                ));
            }
            routes.push(route);
        }
        if routes.is_empty() {
            return Err(cx.invalid(
                stage.name.span(),
                format!("stage '{}' has no [[stage.route]]", stage.name.get_ref()),
            ));
        }
        let tls = cx.stage_tls(stage)?;
        config.stages.push(StageConfig {
            name: stage.name.get_ref().clone(),
            listen,
            routes,
            tls,
            http2: stage.http2,
        });
    }
    Ok(config)
}

struct Cx<'a> {
    text: &'a str,
    path: &'a Path,
}

impl Cx<'_> {
    fn invalid(&self, span: std::ops::Range<usize>, message: impl Into<String>) -> FileError {
        let line = self.text[..span.start.min(self.text.len())]
            .matches('\n')
            .count()
            + 1;
        FileError::Invalid {
            path: self.path.to_owned(),
            line,
            message: message.into(),
        }
    }

    fn addr(&self, text: &Spanned<String>, what: &str) -> Result<SocketAddr, FileError> {
        parse_addr(text.get_ref()).map_err(|e| self.invalid(text.span(), format!("{what}: {e}")))
    }

    fn duration(
        &self,
        v: Option<&Spanned<String>>,
        what: &str,
        into: &mut std::time::Duration,
    ) -> Result<(), FileError> {
        if let Some(v) = v {
            *into = parse_duration(v.get_ref())
                .map_err(|e| self.invalid(v.span(), format!("{what}: {e}")))?;
        }
        Ok(())
    }

    fn fleet(&self, f: &FileFleet) -> Result<FleetConfig, FileError> {
        use super::fleet::{parse_etcd_url, parse_member, parse_prefix};
        let span = f.etcd.span();
        let etcd = f
            .etcd
            .get_ref()
            .iter()
            .map(|u| parse_etcd_url(u))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.invalid(span.clone(), format!("fleet.etcd: {e}")))?;
        if etcd.is_empty() {
            return Err(self.invalid(span, "fleet.etcd: give at least one etcd URL"));
        }
        let mut c = FleetConfig::new(etcd);
        if let Some(p) = &f.prefix {
            let prefix = parse_prefix(p.get_ref())
                .map_err(|e| self.invalid(p.span(), format!("fleet.prefix: {e}")))?;
            c.set_prefix(prefix);
        }
        if let Some(m) = &f.member {
            c.member = parse_member(m.get_ref())
                .map_err(|e| self.invalid(m.span(), format!("fleet.member: {e}")))?;
        }
        if let Some(path) = &f.cache {
            c.cache = Some(path.clone());
        }
        self.duration(f.lease.as_ref(), "fleet.lease", &mut c.lease)?;
        if c.lease < std::time::Duration::from_secs(1) {
            let span = f.lease.as_ref().map_or(0..0, Spanned::span);
            return Err(self.invalid(
                span,
                "fleet.lease: at least 1s (etcd leases are whole seconds)",
            ));
        }
        Ok(c)
    }

    fn server(&self, s: &FileServer, c: &mut ServerConfig) -> Result<(), FileError> {
        if let Some(w) = s.workers {
            c.workers = usize::from(w);
        }
        if let Some(d) = &s.io_driver {
            c.io_driver = d
                .get_ref()
                .parse()
                .map_err(|e| self.invalid(d.span(), format!("io_driver: {e}")))?;
        }
        if let Some(f) = &s.log_format {
            c.log_format = f
                .get_ref()
                .parse()
                .map_err(|e| self.invalid(f.span(), format!("log_format: {e}")))?;
        }
        if let Some(h) = &s.variant_header {
            c.variant_header = Some(
                parse_header_name(h)
                    .map_err(|e| self.invalid(0..0, format!("variant_header: {e}")))?,
            );
        }
        c.admin_socket.clone_from(&s.admin_socket);
        if let Some(m) = &s.metrics_listen {
            c.metrics_listen = Some(self.addr(m, "metrics_listen")?);
        }
        if let Some(d) = &s.dashboard {
            if *d.get_ref() && c.metrics_listen.is_none() {
                return Err(self.invalid(
                    d.span(),
                    "dashboard: it is served on the metrics listener; set metrics_listen too",
                ));
            }
            c.dashboard = *d.get_ref();
        }
        c.access_log.clone_from(&s.access_log);
        c.canary_access_log.clone_from(&s.canary_access_log);
        self.duration(
            s.header_timeout.as_ref(),
            "header_timeout",
            &mut c.timeouts.header,
        )?;
        self.duration(
            s.keepalive_timeout.as_ref(),
            "keepalive_timeout",
            &mut c.timeouts.keepalive,
        )?;
        self.duration(
            s.connect_timeout.as_ref(),
            "connect_timeout",
            &mut c.timeouts.connect,
        )?;
        self.duration(
            s.response_timeout.as_ref(),
            "response_timeout",
            &mut c.timeouts.response,
        )?;
        self.duration(
            s.send_timeout.as_ref(),
            "send_timeout",
            &mut c.timeouts.send,
        )?;
        self.duration(
            s.pool_idle_timeout.as_ref(),
            "pool_idle_timeout",
            &mut c.timeouts.pool_idle,
        )?;
        self.duration(
            s.tls_handshake_timeout.as_ref(),
            "tls_handshake_timeout",
            &mut c.timeouts.tls_handshake,
        )?;
        if let Some(n) = s.max_tls_handshakes {
            c.limits.max_tls_handshakes = n;
        }
        if let Some(n) = s.h2_max_concurrent_streams {
            c.limits.h2_max_concurrent_streams = n;
        }
        if let Some(list) = &s.grpc_error_codes {
            let mut codes = Vec::new();
            for code in list.get_ref() {
                let n = match code {
                    GrpcCode::Number(n) => u16::try_from(*n).ok().filter(|&n| n <= 16),
                    GrpcCode::Name(name) => GRPC_CODE_NAMES
                        .iter()
                        .position(|k| k.eq_ignore_ascii_case(name))
                        .map(|i| i as u16),
                };
                let Some(n) = n else {
                    return Err(self.invalid(
                        list.span(),
                        format!(
                            "grpc_error_codes: {code:?} is not a gRPC status code (0..=16 or a name such as UNAVAILABLE)"
                        ),
                    ));
                };
                codes.push(n);
            }
            c.grpc_error_codes = GrpcCodes::of(&codes);
        }
        if let Some(n) = s.pool_max_idle {
            c.limits.pool_max_idle = n;
        }
        if let Some(n) = s.max_header_bytes {
            if !(1024..=1_048_576).contains(&n) {
                return Err(self.invalid(0..0, "max_header_bytes must be within 1024..=1048576"));
            }
            c.limits.max_header_bytes = n;
        }
        if let Some(n) = s.max_body_bytes {
            c.limits.max_body_bytes = n;
        }
        Ok(())
    }

    /// A deployment's endpoints (`host:port`, `http://host:port` or
    /// `https://host:port`, one scheme for all) and its upstream TLS settings.
    fn endpoints(
        &self,
        list: &Spanned<Vec<String>>,
        tls: Option<&Spanned<FileUpstreamTls>>,
        what: &str,
    ) -> Result<(Vec<SocketAddr>, Option<UpstreamTls>), FileError> {
        let bad = |m: String| self.invalid(list.span(), format!("{what}: {m}"));
        if list.get_ref().is_empty() {
            return Err(bad("at least one endpoint is needed".into()));
        }
        let mut https = None;
        let mut host_name = None;
        let mut addrs = Vec::new();
        for e in list.get_ref() {
            let (secure, rest) = if let Some(r) = e.strip_prefix("https://") {
                (true, r)
            } else {
                (false, e.strip_prefix("http://").unwrap_or(e))
            };
            let rest = rest.strip_suffix('/').unwrap_or(rest);
            if *https.get_or_insert(secure) != secure {
                return Err(bad(
                    "endpoints mix https:// and plain ones; a deployment uses one".into(),
                ));
            }
            let host = rest.rsplit_once(':').map_or(rest, |(h, _)| h);
            if host.parse::<std::net::IpAddr>().is_err() && !host.starts_with('[') {
                host_name.get_or_insert_with(|| host.to_ascii_lowercase());
            }
            addrs.push(parse_addr(rest).map_err(bad)?);
        }
        let tls = match (https == Some(true), tls) {
            (false, None) => None,
            (false, Some(t)) => {
                return Err(self.invalid(
                    t.span(),
                    format!("{what}: tls settings need https:// endpoints"),
                ));
            }
            (true, t) => Some(self.upstream_tls(t, host_name, what)?),
        };
        Ok((addrs, tls))
    }

    /// A deployment's `protocol`: `http1` (the default), `h2c` (plain endpoints) or `h2`
    /// (`https://` endpoints). `secure`: the endpoints are `https://`.
    fn protocol(
        &self,
        value: Option<&Spanned<String>>,
        secure: bool,
        what: &str,
    ) -> Result<UpstreamProtocol, FileError> {
        let Some(v) = value else {
            return Ok(UpstreamProtocol::Http1);
        };
        let bad = |m: &str| self.invalid(v.span(), format!("{what}: {m}"));
        match (v.get_ref().as_str(), secure) {
            ("http1" | "http/1.1", _) => Ok(UpstreamProtocol::Http1),
            ("h2c", false) => Ok(UpstreamProtocol::H2c),
            ("h2c", true) => Err(bad(
                "h2c is HTTP/2 over plain TCP; with https:// endpoints use \"h2\"",
            )),
            ("h2", true) => Ok(UpstreamProtocol::H2),
            ("h2", false) => Err(bad(
                "h2 is HTTP/2 over TLS and needs https:// endpoints; plain ones use \"h2c\"",
            )),
            (other, _) => Err(bad(&format!(
                "'{other}' is not http1, h2c (HTTP/2 over plain TCP) or h2 (HTTP/2 over TLS)"
            ))),
        }
    }

    fn upstream_tls(
        &self,
        t: Option<&Spanned<FileUpstreamTls>>,
        host_name: Option<String>,
        what: &str,
    ) -> Result<UpstreamTls, FileError> {
        let default = FileUpstreamTls::default();
        let (f, span) = t.map_or((&default, 0..0), |t| (t.get_ref(), t.span()));
        let server_name = match &f.server_name {
            Some(n) => Some(
                parse_server_name(n.get_ref())
                    .map_err(|e| self.invalid(n.span(), format!("{what}: tls.server_name: {e}")))?,
            ),
            None => host_name,
        };
        if server_name.as_deref().is_some_and(|n| n.starts_with("*.")) {
            return Err(self.invalid(
                span,
                format!("{what}: tls.server_name may not be a wildcard"),
            ));
        }
        let client_cert = match (&f.client_cert, &f.client_key) {
            (Some(c), Some(k)) => Some((self.file_path(c), self.file_path(k))),
            (None, None) => None,
            _ => {
                return Err(self.invalid(
                    span,
                    format!("{what}: tls.client_cert and tls.client_key go together"),
                ));
            }
        };
        Ok(UpstreamTls {
            server_name,
            ca_file: f.ca_file.as_deref().map(|p| self.file_path(p)),
            client_cert,
        })
    }

    /// A path from the file, relative to the file's directory.
    fn file_path(&self, p: &Path) -> PathBuf {
        match self.path.parent() {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p.to_owned(),
        }
    }

    /// A stage's `tls` and `tls_min_version`.
    fn stage_tls(&self, stage: &FileStage) -> Result<Option<StageTls>, FileError> {
        let name = stage.name.get_ref();
        let Some(list) = &stage.tls else {
            if let Some(v) = &stage.tls_min_version {
                return Err(self.invalid(
                    v.span(),
                    format!("stage '{name}': tls_min_version needs tls certificates"),
                ));
            }
            return Ok(None);
        };
        if list.get_ref().is_empty() {
            return Err(self.invalid(
                list.span(),
                format!("stage '{name}': tls needs at least one certificate"),
            ));
        }
        let mut certs = Vec::new();
        for c in list.get_ref() {
            let mut server_names = Vec::new();
            for n in &c.server_names {
                server_names.push(parse_server_name(n.get_ref()).map_err(|e| {
                    self.invalid(n.span(), format!("stage '{name}': tls server_names: {e}"))
                })?);
            }
            certs.push(TlsCert {
                cert: self.file_path(&c.cert),
                key: self.file_path(&c.key),
                server_names,
                default: c.default,
            });
        }
        if certs.iter().filter(|c| c.default).count() > 1 {
            return Err(self.invalid(
                list.span(),
                format!("stage '{name}': more than one tls certificate is marked default"),
            ));
        }
        let min_version = match &stage.tls_min_version {
            Some(v) => v.get_ref().parse().map_err(|e| {
                self.invalid(v.span(), format!("stage '{name}': tls_min_version: {e}"))
            })?,
            None => TlsVersion::default(),
        };
        Ok(Some(StageTls { certs, min_version }))
    }

    /// A deployment's health settings: its own `health_check` and `outlier`, else the
    /// route's.
    fn health(
        &self,
        r: &FileRoute,
        check: Option<&Spanned<FileHealthCheck>>,
        outlier: Option<&Spanned<FileOutlier>>,
        at: &str,
    ) -> Result<HealthConfig, FileError> {
        let (check, check_at) = match check {
            Some(c) => (Some(c), format!("{at}.health_check")),
            None => (
                r.health_check.as_ref(),
                format!("{at} (route health_check)"),
            ),
        };
        let (outlier, outlier_at) = match outlier {
            Some(o) => (Some(o), format!("{at}.outlier")),
            None => (r.outlier.as_ref(), format!("{at} (route outlier)")),
        };
        Ok(HealthConfig {
            check: check
                .map(|c| {
                    c.get_ref()
                        .check()
                        .map_err(|e| self.invalid(c.span(), format!("{check_at}: {e}")))
                })
                .transpose()?,
            outlier: outlier
                .map(|o| {
                    o.get_ref()
                        .check()
                        .map_err(|e| self.invalid(o.span(), format!("{outlier_at}: {e}")))
                })
                .transpose()?,
        })
    }

    fn route(&self, r: &FileRoute) -> Result<RouteConfig, FileError> {
        let name = r.name.get_ref().clone();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(self.invalid(
                r.name.span(),
                format!("route name '{name}' may only use letters, digits, '-', '_' and '.'"),
            ));
        }
        let at = |what: &str| format!("route '{name}' {what}");
        let (stable, stable_tls) = self.endpoints(
            &r.stable.endpoints,
            r.stable.tls.as_ref(),
            &at("stable.endpoints"),
        )?;
        let mut route = RouteConfig::catch_all(&name, stable);
        route.stable.protocol = self.protocol(
            r.stable.protocol.as_ref(),
            stable_tls.is_some(),
            &at("stable.protocol"),
        )?;
        route.stable.tls = stable_tls;
        route.stable.id.clone_from(&r.stable.id);
        route.stable.variables.clone_from(&r.stable.variables);
        route.stable.health = self.health(
            r,
            r.stable.health_check.as_ref(),
            r.stable.outlier.as_ref(),
            &at("stable"),
        )?;
        route.host = r.host.as_ref().map(|h| h.to_ascii_lowercase());
        if let Some(p) = &r.path_prefix {
            if !p.get_ref().starts_with('/') {
                return Err(self.invalid(p.span(), at("path_prefix must start with '/'")));
            }
            route.path_prefix.clone_from(p.get_ref());
        }
        route.strip_path_prefix = r.strip_path_prefix;
        route.retry_on_stable = r.retry_on_stable;
        if let Some(t) = &r.upstream_path_prefix {
            Template::parse(t.get_ref())
                .map_err(|e| self.invalid(t.span(), at(&format!("upstream_path_prefix: {e}"))))?;
            route.upstream_path_prefix.clone_from(t.get_ref());
        }
        for (k, v) in &r.request_headers {
            let k = parse_header_name(k)
                .map_err(|e| self.invalid(v.span(), at(&format!("request_headers: {e}"))))?;
            Template::parse(v.get_ref())
                .map_err(|e| self.invalid(v.span(), at(&format!("request_headers.{k}: {e}"))))?;
            route.request_headers.push((k, v.get_ref().clone()));
        }
        route.assignment = match r.assignment.as_ref().map(|a| a.get_ref().as_str()) {
            None | Some("random") => {
                if let Some(k) = &r.sticky_key {
                    return Err(
                        self.invalid(k.span(), at("sticky_key needs assignment = \"sticky\""))
                    );
                }
                Assignment::Random
            }
            Some("sticky") => {
                let Some(k) = &r.sticky_key else {
                    return Err(self.invalid(r.name.span(), at("assignment = \"sticky\" needs sticky_key (header:NAME, cookie:NAME or ip)")));
                };
                let key = parse_sticky_key(k.get_ref())
                    .map_err(|e| self.invalid(k.span(), at(&format!("sticky_key: {e}"))))?;
                Assignment::Sticky {
                    key,
                    salt: r.sticky_salt.clone().unwrap_or_else(|| name.clone()),
                }
            }
            Some(other) => {
                let span = r.assignment.as_ref().map_or(0..0, Spanned::span);
                return Err(self.invalid(
                    span,
                    at(&format!("assignment '{other}' is not random or sticky")),
                ));
            }
        };
        route.force_header = match &r.force_header {
            Some(h) if h.is_empty() => None,
            Some(h) => Some(
                parse_header_name(h)
                    .map_err(|e| self.invalid(r.name.span(), at(&format!("force_header: {e}"))))?,
            ),
            None => Some("x-canary".into()),
        };
        route.force_cookie = match &r.force_cookie {
            Some(c) if c.is_empty() => None,
            Some(c) => Some(c.clone()),
            None => Some("canary".into()),
        };
        if let Some(c) = &r.canary {
            let (endpoints, tls) =
                self.endpoints(&c.endpoints, c.tls.as_ref(), &at("canary.endpoints"))?;
            let protocol =
                self.protocol(c.protocol.as_ref(), tls.is_some(), &at("canary.protocol"))?;
            let ppm = match &c.percent {
                None => 0,
                Some(p) => {
                    let text = match p.get_ref() {
                        Percent::Int(i) => i.to_string(),
                        Percent::Float(f) => f.to_string(),
                        Percent::Text(t) => t.clone(),
                    };
                    parse_percent(&text)
                        .map_err(|e| self.invalid(p.span(), at(&format!("canary.percent: {e}"))))?
                }
            };
            route.canary = Some(Canary {
                deployment: Deployment {
                    id: c.id.clone(),
                    endpoints,
                    variables: c.variables.clone(),
                    health: self.health(
                        r,
                        c.health_check.as_ref(),
                        c.outlier.as_ref(),
                        &at("canary"),
                    )?,
                    tls,
                    protocol,
                },
                ppm,
            });
        }
        if let Some(p) = &r.rollout {
            route.rollout = Some(
                p.get_ref()
                    .check()
                    .map_err(|e| self.invalid(p.span(), at(&format!("rollout: {e}"))))?,
            );
        }
        if let Some(k) = &r.kill_switch {
            route.kill_switch = Some(
                k.get_ref()
                    .check()
                    .map_err(|e| self.invalid(k.span(), at(&format!("kill_switch: {e}"))))?,
            );
        }
        Ok(route)
    }
}

/// `header:NAME`, `cookie:NAME` or `ip`.
pub(crate) fn parse_sticky_key(text: &str) -> Result<StickyKey, String> {
    match text.split_once(':') {
        Some(("header", name)) => Ok(StickyKey::Header(parse_header_name(name)?)),
        Some(("cookie", name)) if !name.is_empty() => Ok(StickyKey::Cookie(name.to_owned())),
        None if text == "ip" => Ok(StickyKey::ClientIp),
        _ => Err(format!("'{text}' is not header:NAME, cookie:NAME or ip")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[server]
workers = 1
admin_socket = "/tmp/cg.sock"

[[stage]]
name = "prod"
listen = "127.0.0.1:0"

[[stage.route]]
name = "api"
path_prefix = "/api"
upstream_path_prefix = "/${stageVariables.version}"
request_headers = { "x-version" = "${stageVariables.version}" }
assignment = "sticky"
sticky_key = "cookie:uid"
retry_on_stable = true
stable = { id = "v1", endpoints = ["127.0.0.1:9001"], variables = { version = "v1" } }
canary = { id = "v2", endpoints = ["127.0.0.1:9002", "127.0.0.1:9003"], percent = 12.25, variables = { version = "v2" } }

[[stage.route]]
name = "web"
stable = { id = "w1", endpoints = ["127.0.0.1:9004"] }
"#;

    fn err(text: &str) -> String {
        parse(text, Path::new("cg.toml")).unwrap_err().to_string()
    }

    #[test]
    fn parses_a_full_file() {
        let c = parse(GOOD, Path::new("cg.toml")).unwrap();
        assert_eq!(c.stages.len(), 1);
        let api = &c.stages[0].routes[0];
        assert_eq!(api.canary.as_ref().unwrap().ppm, 122_500);
        assert_eq!(
            api.assignment,
            Assignment::Sticky {
                key: StickyKey::Cookie("uid".into()),
                salt: "api".into()
            }
        );
        assert_eq!(api.force_header.as_deref(), Some("x-canary"));
        assert!(api.retry_on_stable && !c.stages[0].routes[1].retry_on_stable);
        assert_eq!(c.stages[0].routes[1].path_prefix, "/");
        assert_eq!(
            c.server.admin_socket.as_deref(),
            Some(Path::new("/tmp/cg.sock"))
        );
    }

    #[test]
    fn log_format_is_text_unless_the_file_says_json() {
        use crate::config::LogFormat;
        let c = parse(GOOD, Path::new("cg.toml")).unwrap();
        assert_eq!(c.server.log_format, LogFormat::Text);
        let json = GOOD.replace("workers = 1", "workers = 1\nlog_format = \"json\"");
        let c = parse(&json, Path::new("cg.toml")).unwrap();
        assert_eq!(c.server.log_format, LogFormat::Json);
        let e = err(&GOOD.replace("workers = 1", "workers = 1\nlog_format = \"xml\""));
        assert!(
            e.starts_with("cg.toml:4:") && e.contains("log_format: 'xml' is not text or json"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_the_line() {
        let e = err(&GOOD.replace(
            "path_prefix = \"/api\"",
            "path_prefix = \"/api\"\nbogus = 1",
        ));
        assert!(
            e.contains("line 13") && e.contains("unknown field `bogus`") && !e.contains('\n'),
            "{e}"
        );
        let e = err(&GOOD.replace("percent = 12.25", "percent = 150"));
        assert!(
            e.starts_with("cg.toml:19:") && e.contains("canary.percent"),
            "{e}"
        );
        let e = err(&GOOD.replace("\"127.0.0.1:9004\"", "\"nowhere\""));
        assert!(e.starts_with("cg.toml:23:") && e.contains("nowhere"), "{e}");
        let e = err(&GOOD.replace("name = \"web\"", "name = \"api\""));
        assert!(e.contains("used twice"), "{e}");
        let e = err(&GOOD.replace(
            "${stageVariables.version}\"\nrequest",
            "${stageVariables.version\"\nrequest",
        ));
        assert!(e.starts_with("cg.toml:13:"), "{e}");
        let e = err(&GOOD.replace("cookie:uid", "session"));
        assert!(e.contains("sticky_key"), "{e}");
    }

    const TLS: &str = r#"
[[stage]]
name = "edge"
listen = "127.0.0.1:8443"
tls_min_version = "1.3"
tls = [
  { cert = "certs/api.pem", key = "/abs/api.key", server_names = ["API.example.com", "*.example.com"] },
  { cert = "other.pem", key = "other.key", default = true },
]

[[stage.route]]
name = "api"
stable = { id = "v1", endpoints = ["https://127.0.0.1:9443"], tls = { ca_file = "ca.pem", server_name = "api.internal" } }
canary = { id = "v2", endpoints = ["127.0.0.1:9002", "http://127.0.0.1:9003"] }
"#;

    #[test]
    fn parses_tls_listeners_and_upstreams() {
        let c = parse(TLS, Path::new("/etc/cg/cg.toml")).unwrap();
        let tls = c.stages[0].tls.as_ref().unwrap();
        assert_eq!(tls.min_version, TlsVersion::Tls13);
        assert_eq!(tls.certs[0].cert, Path::new("/etc/cg/certs/api.pem"));
        assert_eq!(tls.certs[0].key, Path::new("/abs/api.key"));
        assert_eq!(
            tls.certs[0].server_names,
            ["api.example.com", "*.example.com"]
        );
        assert!(!tls.certs[0].default && tls.certs[1].default);
        let r = &c.stages[0].routes[0];
        let up = r.stable.tls.as_ref().unwrap();
        assert_eq!(up.server_name.as_deref(), Some("api.internal"));
        assert_eq!(up.ca_file.as_deref(), Some(Path::new("/etc/cg/ca.pem")));
        assert_eq!(r.stable.endpoints, ["127.0.0.1:9443".parse().unwrap()]);
        let canary = &r.canary.as_ref().unwrap().deployment;
        assert!(canary.tls.is_none());
        assert_eq!(canary.endpoints.len(), 2);
    }

    #[test]
    fn tls_errors_name_the_line() {
        let e = err(&TLS.replace("\"1.3\"", "\"1.1\""));
        assert!(e.starts_with("cg.toml:5:") && e.contains("RFC 8996"), "{e}");
        let e = err(&TLS.replace("*.example.com", "*.*.example.com"));
        assert!(
            e.starts_with("cg.toml:7:") && e.contains("server_names"),
            "{e}"
        );
        let e = err(&TLS.replace(
            "key = \"other.key\", default",
            "key = \"other.key\", bogus = 1, default",
        ));
        assert!(e.contains("unknown field `bogus`"), "{e}");
        let e = err(&TLS.replace("\"127.0.0.1:9002\"", "\"https://127.0.0.1:9002\""));
        assert!(
            e.starts_with("cg.toml:14:") && e.contains("mix https://"),
            "{e}"
        );
        let e = err(&TLS.replace("https://127.0.0.1:9443", "127.0.0.1:9443"));
        assert!(e.contains("tls settings need https:// endpoints"), "{e}");
        let e = err(&TLS.replace(
            "default = true",
            "default = true },\n  { cert = \"c\", key = \"k\", default = true",
        ));
        assert!(e.contains("more than one"), "{e}");
        let e = err(&TLS.replace("tls = [\n", "tls = [\n]\nx = [\n"));
        assert!(
            e.contains("at least one certificate") || e.contains("unknown field"),
            "{e}"
        );
        let e = err(&TLS.replace("server_name = \"api.internal\"", "client_cert = \"c.pem\""));
        assert!(
            e.contains("client_cert and tls.client_key go together"),
            "{e}"
        );
    }
}
