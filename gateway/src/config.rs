//! What one gateway instance runs: its stages (listeners) with their routes, each route's
//! stable and canary deployments, stage variables and assignment, and every timeout and
//! limit. Built from a TOML file ([`file`]), from the `run` flags (one stage, one route),
//! or by tests directly, always as the same [`Config`], checked by [`Config::validate`];
//! the values they read share one set of parsers ([`value`]) and every default is
//! written once, here. Routing parts change at run time through [`crate::control`];
//! server parts (workers, listeners, timeouts) need a restart.

pub(crate) mod file;
pub(crate) mod fleet;
pub(crate) mod health;
pub(crate) mod killswitch;
pub(crate) mod render;
pub(crate) mod template;
pub(crate) mod tls;
mod validate;
pub(crate) mod value;

pub use fleet::FleetConfig;
pub use tls::{StageTls, TlsCert, TlsVersion, UpstreamTls};
pub use validate::ConfigError;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Name of the stage and route built from the `run` flags.
pub(crate) const DEFAULT_NAME: &str = "default";

/// A deployment: an id, its endpoints (round-robin) and variables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deployment {
    /// Deployment id shown in stats and logs (e.g. a version or build number).
    pub id: String,
    /// Endpoints, used in turn.
    pub endpoints: Vec<SocketAddr>,
    /// For the stable deployment: the stage variables. For the canary: overrides applied
    /// on top of the stage variables for canary requests.
    pub variables: BTreeMap<String, String>,
    /// How its endpoints are watched (active check, outlier detection).
    pub health: health::HealthConfig,
    /// TLS toward its endpoints (`https://` endpoints); `None` = plain TCP.
    pub tls: Option<tls::UpstreamTls>,
    /// The HTTP version its endpoints speak.
    pub protocol: UpstreamProtocol,
}

/// A set of gRPC status codes (0 OK ..= 16 UNAUTHENTICATED), as a bit per code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrpcCodes(pub u32);

/// gRPC's status code names, by code.
pub(crate) const GRPC_CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

impl GrpcCodes {
    /// The codes given.
    pub fn of(codes: &[u16]) -> GrpcCodes {
        GrpcCodes(
            codes
                .iter()
                .filter(|&&c| c < 32)
                .fold(0, |m, &c| m | 1 << c),
        )
    }

    /// Whether `code` is in the set.
    pub fn contains(self, code: u16) -> bool {
        code < 32 && self.0 & (1 << code) != 0
    }
}

/// The default: the codes that mean the server failed, as a 5xx does (UNKNOWN,
/// DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS); the codes that
/// are the caller's business (INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED...) are
/// like a 4xx and do not count.
impl Default for GrpcCodes {
    fn default() -> GrpcCodes {
        GrpcCodes::of(&[2, 4, 12, 13, 14, 15])
    }
}

/// The HTTP version a deployment's endpoints speak.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (over TLS too, with ALPN `http/1.1`).
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge over plain TCP (RFC 9113 §3.3).
    H2c,
    /// HTTP/2 over TLS, agreed by ALPN `h2`.
    H2,
}

impl UpstreamProtocol {
    /// The name in the configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamProtocol::Http1 => "http1",
            UpstreamProtocol::H2c => "h2c",
            UpstreamProtocol::H2 => "h2",
        }
    }

    /// HTTP/2, with or without TLS.
    pub fn is_h2(self) -> bool {
        self != UpstreamProtocol::Http1
    }
}

/// The canary half of a route: its deployment and share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Canary {
    /// The canary deployment (its `variables` are the stage-variable overrides).
    pub deployment: Deployment,
    /// Share of requests, in parts per million.
    pub ppm: u32,
}

/// Where a sticky assignment takes its key from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StickyKey {
    /// The value of this request header (lower-case name).
    Header(String),
    /// The value of this cookie.
    Cookie(String),
    /// The client's IP address.
    ClientIp,
}

/// How requests are assigned to a variant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Assignment {
    /// Independently at random for each request.
    Random,
    /// By a salted hash of a key into 1,000,000 buckets: canary iff bucket < ppm.
    Sticky {
        /// Where the key comes from.
        key: StickyKey,
        /// Salt mixed into the hash (defaults to the route name).
        salt: String,
    },
}

/// One route of a stage: which requests it takes and where they go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteConfig {
    /// Unique name (across all stages), used by the admin socket and in metrics.
    pub name: String,
    /// Host the route matches (lower-case, without port); `None` matches any host.
    pub host: Option<String>,
    /// Path prefix the route matches (starts with `/`).
    pub path_prefix: String,
    /// Remove `path_prefix` from the path before forwarding.
    pub strip_path_prefix: bool,
    /// An idempotent canary request without a body whose canary upstream fails before
    /// answering (refused, reset, closed, timed out) is sent to stable instead; the
    /// failure still counts against the canary.
    pub retry_on_stable: bool,
    /// Prefix put before the path sent upstream; may use `${stageVariables.NAME}`.
    pub upstream_path_prefix: String,
    /// Headers added toward the upstream (replacing any the client sent with the same
    /// name); values may use `${stageVariables.NAME}`.
    pub request_headers: Vec<(String, String)>,
    /// Random or sticky assignment.
    pub assignment: Assignment,
    /// Request header that forces the variant (`always` / `never`); `None` = off.
    pub force_header: Option<String>,
    /// Cookie that forces the variant (`always` / `never`); `None` = off.
    pub force_cookie: Option<String>,
    /// The stable deployment.
    pub stable: Deployment,
    /// The canary, if any.
    pub canary: Option<Canary>,
    /// Rollout plan (`rollout = { ... }`): started for a new canary; see [`crate::rollout`].
    pub rollout: Option<crate::rollout::Plan>,
    /// Data-plane kill switch of the canary (`kill_switch = { ... }`); `None` = off.
    pub kill_switch: Option<killswitch::KillSwitchConfig>,
}

/// A stage: one listener and its routes (longest matching prefix wins).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageConfig {
    /// Stage name.
    pub name: String,
    /// Listen address.
    pub listen: SocketAddr,
    /// Routes.
    pub routes: Vec<RouteConfig>,
    /// TLS termination on the listener; `None` = plain HTTP.
    pub tls: Option<tls::StageTls>,
    /// HTTP/2 from clients: ALPN `h2` beside `http/1.1` on a TLS listener, h2c with
    /// prior knowledge on a plain one (`http2 = true`, `--http2`).
    pub http2: bool,
}

impl RouteConfig {
    /// A route matching everything, with defaults for all optional parts.
    pub fn catch_all(name: &str, stable: Vec<SocketAddr>) -> Self {
        RouteConfig {
            name: name.to_owned(),
            host: None,
            path_prefix: "/".into(),
            strip_path_prefix: false,
            retry_on_stable: false,
            upstream_path_prefix: String::new(),
            request_headers: Vec::new(),
            assignment: Assignment::Random,
            force_header: None,
            force_cookie: None,
            stable: Deployment {
                id: "stable".into(),
                endpoints: stable,
                variables: BTreeMap::new(),
                health: health::HealthConfig::default(),
                tls: None,
                protocol: UpstreamProtocol::Http1,
            },
            canary: None,
            rollout: None,
            kill_switch: None,
        }
    }
}

/// Which I/O driver the workers should use.
/// `--kernel-accounting`: whether to account TCP per variant in the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KernelAccounting {
    /// Use eBPF when the kernel and privileges allow it; otherwise run without it and
    /// log why.
    Auto,
    /// Refuse to start without it.
    On,
    /// Never load anything into the kernel.
    // The library default (`ServerConfig::default`): accounting moves the whole process into a
    // cgroup of its own, which a program embedding the gateway must ask for.
    #[default]
    Off,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DriverChoice {
    /// io_uring when the kernel allows it, else epoll (said at startup).
    #[default]
    Auto,
    /// io_uring or refuse to start.
    IoUring,
    /// epoll, even where io_uring works (e.g. to compare, or under a seccomp filter).
    Epoll,
}

/// How the process writes its own log lines (not the access log) to stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// `[2026-01-02T03:04:05Z INFO  target] message`, for people.
    #[default]
    Text,
    /// One JSON object per line (`ts`, `level`, `target`, `msg`), for journald, Loki
    /// and other tools.
    Json,
}

/// Timeouts applied by every worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Time a client has to send a complete request head once it started one (408 after).
    pub header: Duration,
    /// Time an idle keep-alive client connection is kept open between requests.
    pub keepalive: Duration,
    /// Time allowed for a TCP connect to an upstream endpoint (504 after).
    pub connect: Duration,
    /// Time allowed for the upstream to start answering, and between reads while it answers
    /// or while the client sends a body (504 after).
    pub response: Duration,
    /// Idle upstream connections older than this are closed instead of reused.
    pub pool_idle: Duration,
    /// A peer (client or upstream) that takes none of the bytes sent to it for this long
    /// is cut off (`TCP_USER_TIMEOUT`, which also covers a zero receive window), so a
    /// client that stops reading cannot hold a response and its upstream forever.
    pub send: Duration,
    /// Time a client has to complete its TLS handshake (closed after, counted as a
    /// `timeout` handshake failure).
    pub tls_handshake: Duration,
}

/// Size limits applied by every worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted request head (request line plus headers), in bytes (431 above).
    pub max_header_bytes: usize,
    /// Largest accepted request body, in bytes; 0 means unlimited (413 above).
    pub max_body_bytes: u64,
    /// Idle upstream connections kept per endpoint and per worker.
    pub pool_max_idle: usize,
    /// TLS handshakes in progress per worker; a connection beyond it is closed at once
    /// (counted as an `overload` handshake failure).
    pub max_tls_handshakes: usize,
    /// Streams one HTTP/2 client may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS).
    pub h2_max_concurrent_streams: u32,
}

/// Everything a gateway instance needs to start: the server settings and the stages.
/// The `run` flags build one stage with one route ([`Config::single_route`]), the file
/// parser ([`file`]) as many as the file has; [`Config::validate`] checks either.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// Settings of the whole process; changing them needs a restart.
    pub server: ServerConfig,
    /// Stages with their routes; at least one.
    pub stages: Vec<StageConfig>,
}

/// Settings of the whole process: workers, driver, control plane, logs, timeouts and
/// limits. `Default` is the library's default for each.
#[derive(Clone, Debug, Default)]
pub struct ServerConfig {
    /// Unix socket of the admin interface; `None` = no admin socket.
    pub admin_socket: Option<PathBuf>,
    /// Address of the Prometheus `/metrics` endpoint; `None` = not served.
    pub metrics_listen: Option<SocketAddr>,
    /// Serve the live dashboard at `/dashboard` on the metrics listener (which it needs).
    pub dashboard: bool,
    /// JSON-lines access log of every request; `None` = off.
    pub access_log: Option<PathBuf>,
    /// JSON-lines access log of canary requests only; `None` = off.
    pub canary_access_log: Option<PathBuf>,
    /// File the configuration came from, re-read by `reload` and SIGHUP.
    pub source: Option<PathBuf>,
    /// Command line only (`--takeover`): the admin socket of a running gateway whose
    /// listening sockets this one takes over (binary upgrade); `None` = bind them.
    pub takeover: Option<PathBuf>,
    /// Worker threads, one per core; 0 means one per available core.
    pub workers: usize,
    /// I/O driver.
    pub io_driver: DriverChoice,
    /// Per-variant kernel TCP accounting (eBPF); `Off` here, [`CLI_KERNEL_ACCOUNTING`] on
    /// the command line, because it moves the whole process into a cgroup of its own.
    pub kernel_accounting: KernelAccounting,
    /// Response header naming the variant that served the request; `None` = not sent.
    pub variant_header: Option<String>,
    /// Format of the process's log lines on stderr.
    pub log_format: LogFormat,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Limits.
    pub limits: Limits,
    /// The `grpc-status` codes that count as errors (metrics, judge, kill switch).
    pub grpc_error_codes: GrpcCodes,
    /// Fleet mode: the routing configuration is the fleet's, in etcd; `None` = this
    /// process's own.
    pub fleet: Option<FleetConfig>,
}

/// Kernel accounting of `canarygate run` and `canarygate demo` when `--kernel-accounting`
/// is not given (the library default, [`ServerConfig::default`], is `Off`).
pub(crate) const CLI_KERNEL_ACCOUNTING: KernelAccounting = KernelAccounting::Auto;

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            header: Duration::from_secs(10),
            keepalive: Duration::from_secs(60),
            connect: Duration::from_secs(3),
            response: Duration::from_secs(30),
            send: Duration::from_secs(60),
            pool_idle: Duration::from_secs(30),
            tls_handshake: Duration::from_secs(10),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 16 * 1024,
            max_body_bytes: 1 << 30,
            pool_max_idle: 256,
            max_tls_handshakes: 256,
            h2_max_concurrent_streams: 128,
        }
    }
}

impl Config {
    /// One stage and one catch-all route, both named [`DEFAULT_NAME`], with default server
    /// settings: what the `run` flags describe. The route has a canary (id `canary`) when
    /// `canary` has endpoints or `canary_ppm` is above 0 ([`Config::validate`] refuses a
    /// share without endpoints).
    pub fn single_route(
        listen: SocketAddr,
        stable: Vec<SocketAddr>,
        canary: Vec<SocketAddr>,
        canary_ppm: u32,
    ) -> Self {
        let mut route = RouteConfig::catch_all(DEFAULT_NAME, stable);
        if !canary.is_empty() || canary_ppm > 0 {
            route.canary = Some(Canary {
                deployment: Deployment {
                    id: "canary".into(),
                    endpoints: canary,
                    variables: BTreeMap::new(),
                    health: health::HealthConfig::default(),
                    tls: None,
                    protocol: UpstreamProtocol::Http1,
                },
                ppm: canary_ppm,
            });
        }
        Config {
            server: ServerConfig::default(),
            stages: vec![StageConfig {
                name: DEFAULT_NAME.into(),
                listen,
                routes: vec![route],
                tls: None,
                http2: false,
            }],
        }
    }
}

impl ServerConfig {
    /// Worker count after resolving 0 to the number of available cores.
    pub fn effective_workers(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        }
    }
}
