//! The one end-to-end test binary. Every test starts its own gateway (a real `canarygate`
//! process on an ephemeral loopback port, or in-process through `gateway::start`) between
//! real peers from the `tests` harness, and checks what crosses the sockets byte by byte.
//!
//! Modules follow a request's life: how traffic is split ([`split`]), how bodies are
//! streamed ([`bodies`]), the HTTP/1.1 protocol features ([`protocol`]), every bad input
//! ([`bad_input`]) and upstream fault ([`faults`]), the command line ([`cli`]), real
//! third-party peers ([`thirdparty`]), the allocation budget of the hot path
//! ([`alloc`]) and per-variant kernel accounting ([`kernel`]). The control plane follows:
//! the configuration file ([`config`]), the admin socket and `canarygate ctl` ([`admin`]),
//! sticky and forced assignment ([`assignment`]), stage variables ([`stagevars`]), promote
//! and rollback ([`promote`]), endpoint health ([`health`]), changes under load ([`hitless`]), Prometheus metrics
//! ([`metrics`]), the live dashboard in a browser ([`dashboard`]), access logs
//! ([`accesslog`]), progressive delivery ([`rollout`]) and TLS at the edge and to
//! upstreams ([`tls`]), HTTP/2 from clients ([`http2`]) and to upstreams with gRPC
//! canaries ([`grpc`]). Last, how it is shipped: the Debian package, its systemd unit
//! and sd_notify ([`package`]), the
//! Grafana dashboard and alert rules against a real scrape ([`deploy`]) and the process's
//! log format ([`logs`]). Fleet mode, many gateways on one etcd, comes last ([`fleet`]).
//! The crate root is a file, not `main.rs`, so the modules under `e2e/` are named with
//! `#[path]`.

#[path = "e2e/accesslog.rs"]
mod accesslog;
#[path = "e2e/admin.rs"]
mod admin;
#[path = "e2e/alloc.rs"]
mod alloc;
#[path = "e2e/assignment.rs"]
mod assignment;
#[path = "e2e/bad_input.rs"]
mod bad_input;
#[path = "e2e/bodies.rs"]
mod bodies;
#[path = "e2e/cli.rs"]
mod cli;
#[path = "e2e/config.rs"]
mod config;
#[path = "e2e/dashboard.rs"]
mod dashboard;
#[path = "e2e/deploy.rs"]
mod deploy;
#[path = "e2e/faults.rs"]
mod faults;
#[path = "e2e/fleet.rs"]
mod fleet;
#[path = "e2e/framing.rs"]
mod framing;
#[path = "e2e/grpc.rs"]
mod grpc;
#[path = "e2e/health.rs"]
mod health;
#[path = "e2e/hitless.rs"]
mod hitless;
#[path = "e2e/http2.rs"]
mod http2;
#[path = "e2e/kernel.rs"]
mod kernel;
#[path = "e2e/logs.rs"]
mod logs;
#[path = "e2e/metrics.rs"]
mod metrics;
#[path = "e2e/package.rs"]
mod package;
#[path = "e2e/promote.rs"]
mod promote;
#[path = "e2e/protocol.rs"]
mod protocol;
#[path = "e2e/realservers.rs"]
mod realservers;
#[path = "e2e/rollout.rs"]
mod rollout;
#[path = "e2e/split.rs"]
mod split;
#[path = "e2e/stagevars.rs"]
mod stagevars;
#[path = "e2e/thirdparty.rs"]
mod thirdparty;
#[path = "e2e/tls.rs"]
mod tls;
#[path = "e2e/upgrade.rs"]
mod upgrade;

use std::net::SocketAddr;
use std::time::Duration;

use tests::GatewayProc;

/// Starts `canarygate run` with `--stable STABLE` and the extra flags.
fn start_gw(stable: &str, extra: &[&str]) -> GatewayProc {
    let mut args = vec!["--stable", stable];
    args.extend_from_slice(extra);
    GatewayProc::start(&args)
}

/// An in-process gateway config listening on an ephemeral loopback port: one route to
/// `stable`, and to `canary` (at 0 %) when it has endpoints.
fn in_process_config(stable: Vec<SocketAddr>, canary: Vec<SocketAddr>) -> gateway::Config {
    gateway::Config::single_route(SocketAddr::from(([127, 0, 0, 1], 0)), stable, canary, 0)
}

/// How long tests wait for the gateway to close a connection it must close.
const CLOSE_WITHIN: Duration = Duration::from_secs(5);
