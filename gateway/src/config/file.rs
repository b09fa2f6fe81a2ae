//! The TOML configuration file: parsed with serde (unknown fields are errors that name
//! the line), then checked (addresses, percents, templates, unique names) into a
//! [`Config`]. `canarygate check-config FILE` runs exactly this.
//!
//! ```toml
//! [server]
//! workers = 2
//! admin_socket = "/run/canarygate.sock"
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
use super::value::{parse_addr, parse_duration, parse_header_name};
use super::{
    Assignment, Canary, Config, Deployment, RouteConfig, ServerConfig, StageConfig, StickyKey,
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
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileServer {
    workers: Option<u16>,
    io_driver: Option<Spanned<String>>,
    variant_header: Option<String>,
    admin_socket: Option<PathBuf>,
    metrics_listen: Option<Spanned<String>>,
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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileStage {
    name: Spanned<String>,
    listen: Spanned<String>,
    #[serde(default)]
    route: Vec<FileRoute>,
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
    if file.stage.is_empty() {
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
        config.stages.push(StageConfig {
            name: stage.name.get_ref().clone(),
            listen,
            routes,
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

    fn endpoints(
        &self,
        list: &Spanned<Vec<String>>,
        what: &str,
    ) -> Result<Vec<SocketAddr>, FileError> {
        if list.get_ref().is_empty() {
            return Err(self.invalid(
                list.span(),
                format!("{what}: at least one endpoint is needed"),
            ));
        }
        list.get_ref()
            .iter()
            .map(|e| parse_addr(e).map_err(|m| self.invalid(list.span(), format!("{what}: {m}"))))
            .collect()
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
        let mut route = RouteConfig::catch_all(
            &name,
            self.endpoints(&r.stable.endpoints, &at("stable.endpoints"))?,
        );
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
            let endpoints = self.endpoints(&c.endpoints, &at("canary.endpoints"))?;
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
}
