//! canarygate: an HTTP/1.1 load balancer that sends an exact share of traffic to a canary
//! deployment and keeps everything about that share separate.
//!
//! Modules are declared in the order a request meets them:
//! [`runtime`] (threads, cores, listeners) -> [`proxy`] (accept, head parsing, framing,
//! relay) -> [`select`] (which variant) -> [`upstream`] (pools, connect) -> [`metrics`]
//! (per-core counters and latency histograms). [`config`] and [`cli`] describe what to run;
//! [`demo`] is the self-contained tour behind `canarygate demo`.

pub mod cli;
pub mod config;
pub mod demo;
pub mod metrics;
pub mod proxy;
pub mod runtime;
pub mod select;
pub mod upstream;

pub use config::{Config, DriverChoice, Limits, Timeouts};
pub use gateway_common::{PPM_MAX, Variant};
pub use metrics::{Stats, VariantStats, WorkerStats};
pub use runtime::{Driver, Gateway, StartError, start};
pub use select::Split;
