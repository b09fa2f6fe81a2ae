//! canarygate: an HTTP/1.1 load balancer that sends an exact share of traffic to a canary
//! deployment and keeps everything about that share separate.
//!
//! Modules are declared in the order a request meets them:
//! [`runtime`] (threads, cores, listeners) -> [`proxy`] (accept, head parsing, framing,
//! relay) -> [`select`] (which variant) -> [`upstream`] (pools, connect) -> [`metrics`]
//! (per-core counters and latency histograms). [`config`] and [`cli`] describe what to run;
//! [`control`] holds the routing state operators change through [`admin`] (the admin
//! socket, `/metrics`, `canarygate ctl`); [`accesslog`] writes per-variant logs off the hot
//! path; [`kernel`] accounts each variant's TCP traffic in the kernel (eBPF); [`fleet`] keeps the routing
//! configuration of many gateways in etcd (fleet mode); [`notify`]
//! tells systemd when the gateway is ready and when it stops; [`demo`] is the
//! self-contained tour behind `canarygate demo`.

pub(crate) mod admin;
pub(crate) mod cli;
pub(crate) mod config;
pub(crate) mod control;
pub mod dataplane;
pub(crate) mod demo;
pub(crate) mod fleet;
pub(crate) mod judge;
pub(crate) mod kernel;
pub(crate) mod metrics;
pub(crate) mod notify;
pub(crate) mod rollout;
pub(crate) mod runtime;
pub(crate) mod takeover;
pub(crate) mod tls;

// What the binary, `tests/`, `benches/` and `fuzz/` use; everything else is crate-private
// so that `dead_code` and `unreachable_pub` see it.
pub use admin::protocol::parse as parse_admin_command;
pub use cli::main;
pub use config::file::parse as parse_config_file;
pub use config::{
    Assignment, Canary, Config, ConfigError, Deployment, DriverChoice, FleetConfig, GrpcCodes,
    KernelAccounting, Limits, LogFormat, RouteConfig, ServerConfig, StageConfig, StageTls,
    StickyKey, Timeouts, TlsCert, TlsVersion, UpstreamProtocol, UpstreamTls,
};
pub use control::health::Admin as EndpointAdmin;
pub use control::state::Control;
pub use dataplane::assign::bucket;
pub use dataplane::h1::translate::{
    Framing as H2Framing, request_framing as h2_request_framing,
    write_request_head as h2_request_head,
};
pub use dataplane::route::split::{Picker, Split};
pub use gateway_common::{PPM_MAX, Variant};
pub use kernel::{Kernel, KernelStats, built as kernel_built};
pub use metrics::histogram::AtomicHistogram;
pub use metrics::{RouteStats, Stats, VariantStats, WorkerMetrics, WorkerStats};
pub use runtime::{Driver, Gateway, StartError, start};
pub use tls::TlsError;
