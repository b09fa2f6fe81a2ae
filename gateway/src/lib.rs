//! canarygate: an HTTP/1.1 load balancer that sends an exact share of traffic to a canary
//! deployment and keeps everything about that share separate.
//!
//! Modules are declared in the order a request meets them:
//! [`runtime`] (threads, cores, listeners) -> [`proxy`] (accept, head parsing, framing,
//! relay) -> [`select`] (which variant) -> [`upstream`] (pools, connect) -> [`metrics`]
//! (per-core counters and latency histograms). [`config`] and [`cli`] describe what to run;
//! [`control`] holds the routing state operators change through [`admin`] (the admin
//! socket, `/metrics`, `canarygate ctl`); [`accesslog`] writes per-variant logs off the hot
//! path; [`kernel`] accounts each variant's TCP traffic in the kernel (eBPF); [`demo`] is
//! the self-contained tour behind `canarygate demo`.

pub mod admin;
pub mod cli;
pub mod config;
pub mod control;
pub mod dataplane;
pub(crate) mod demo;
pub(crate) mod judge;
pub mod kernel;
pub mod metrics;
pub(crate) mod rollout;
pub mod runtime;

pub use config::{Config, ConfigError, DriverChoice, Limits, ServerConfig, Timeouts};
pub use control::Control;
pub use dataplane::assign::bucket;
pub use dataplane::route::split::{Picker, Split};
pub use gateway_common::{PPM_MAX, Variant};
pub use kernel::{KernelAccounting, KernelStats};
pub use metrics::{RouteStats, Stats, VariantStats, WorkerStats};
pub use runtime::{Driver, Gateway, StartError, start};
