//! End-to-end harness for canarygate: everything the `e2e` test binary needs to put the
//! gateway between real peers on ephemeral loopback ports.
//!
//! In data-path order: a [`client`] that writes raw bytes and reads responses, the gateway
//! itself as a real process ([`process`]) or in-process through the `gateway` library, and
//! behind it a test [`upstream`] (plain HTTP/1.1), one whose delay and failure share
//! change mid-test ([`tunable`]), a WebSocket echo server ([`ws`]) or nginx
//! ([`thirdparty`]), or nothing at all ([`dead_end`]). [`wire`] holds the framing
//! both sides share and the deterministic body pattern; [`load`] drives the split-accuracy
//! and hitless-change tests. [`control`] speaks to the control plane: config files, the
//! admin socket (raw and through `canarygate ctl`) and a real Prometheus parser.
//! [`etcd`] runs a real one-member etcd on loopback for the fleet-mode tests.
//!
//! Everything binds `127.0.0.1` only, every socket read has a timeout, and every process
//! started here is killed by its own PID when its handle drops.

pub mod client;
pub mod control;
pub mod dead_end;
pub mod etcd;
pub mod load;
pub mod peers;
pub mod process;
pub mod thirdparty;
pub mod tls;
pub mod tunable;
pub mod upstream;
pub mod wire;
pub mod ws;

#[cfg(test)]
mod tests;

pub use client::{
    Client, Framing, HOST, IO_TIMEOUT, Response, get_request, get_with, one_shot, post_request,
};
pub use control::{AdminConn, ConfigFile, PromText, Reply, ctl, parse_prometheus};
pub use dead_end::{Blackhole, refused_addr};
pub use etcd::Etcd;
pub use load::{BackgroundLoad, LoadReport, pipelined_gets};
pub use peers::{ManyPorts, ServerProc, node_sse_client};
pub use process::{
    CliOutput, Expect, GatewayProc, TempDir, cpu_time_of, free_port, gateway_bin, run_cli,
    run_program, workspace_root,
};
pub use thirdparty::{Nginx, curl};
pub use tunable::TunableUpstream;
pub use upstream::{Behavior, SeenRequest, TestUpstream};
pub use wire::{Digest, first_pattern_mismatch, pattern, pattern_bytes};
pub use ws::{WsEchoUpstream, ws_connect};

/// The binomial acceptance bound used by the split tests: `k` hits out of `n` trials with
/// probability `p` pass when `|k - np| <= 3.291 * sqrt(np(1-p)) + 1` (99.9 % two-sided).
pub fn within_binomial_bound(k: u64, n: u64, p: f64) -> (bool, f64, f64) {
    let np = n as f64 * p;
    let bound = 3.291 * (np * (1.0 - p)).sqrt() + 1.0;
    (((k as f64) - np).abs() <= bound, np, bound)
}
