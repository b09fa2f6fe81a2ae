//! A per-worker, per-endpoint pool of idle keep-alive upstream connections, watched so
//! that none the upstream has closed carries a request.
//!
//! Most recently used first (its socket is the least likely to have been closed by the
//! upstream). Each connection has a retirement time: the gateway's pool idle timeout, or
//! earlier when the upstream announced its own (`Keep-Alive: timeout=N`, as Node and
//! Apache send), a margin before the upstream would close it. A connection is looked at
//! (a non-blocking peek, [`probe_idle`]) when it is taken, and every idle connection on
//! each sweep: one the upstream closed, reset or wrote to while idle is dropped then.
//! Storage is allocated once, at the maximum size.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::UpConn;
use crate::socket::{Idle, probe_idle};

/// Idle connections to one endpoint.
#[derive(Debug)]
pub struct Pool {
    /// Connections with the instant they must be retired by.
    idle: VecDeque<(UpConn, Instant)>,
    max_idle: usize,
    idle_timeout: Duration,
}

/// How long before the upstream's announced idle timeout a connection is retired: a
/// quarter of it, at most one second (the close may already be on its way).
pub(crate) fn retire_after(upstream_timeout_s: u32) -> Duration {
    let full = Duration::from_secs(u64::from(upstream_timeout_s));
    full.saturating_sub((full / 4).min(Duration::from_secs(1)))
}

impl Pool {
    /// An empty pool keeping up to `max_idle` connections for `idle_timeout`.
    pub fn new(max_idle: usize, idle_timeout: Duration) -> Self {
        Pool {
            idle: VecDeque::with_capacity(max_idle),
            max_idle,
            idle_timeout,
        }
    }

    /// The most recently returned connection that is neither past its retirement time
    /// nor closed by the upstream. Those that are are closed on the way.
    pub fn take(&mut self, now: Instant) -> Option<UpConn> {
        while let Some((conn, retire)) = self.idle.pop_back() {
            if now < retire && probe_idle(&conn.stream) == Idle::Quiet {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps `conn` for reuse, unless the pool is full (then it is closed).
    /// `upstream_timeout_s` is the idle timeout the upstream announced, if any.
    pub fn put(&mut self, conn: UpConn, now: Instant, upstream_timeout_s: Option<u32>) {
        let keep = upstream_timeout_s.map_or(self.idle_timeout, |s| {
            retire_after(s).min(self.idle_timeout)
        });
        if self.idle.len() < self.max_idle && !keep.is_zero() {
            self.idle.push_back((conn, now + keep));
        }
    }

    /// Closes connections past their retirement time or closed by the upstream.
    pub fn sweep(&mut self, now: Instant) {
        self.idle
            .retain(|(conn, retire)| now < *retire && probe_idle(&conn.stream) == Idle::Quiet);
    }

    /// Idle connections held.
    pub fn len(&self) -> usize {
        self.idle.len()
    }

    /// True when no connection is held.
    pub fn is_empty(&self) -> bool {
        self.idle.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announced_timeouts_retire_early() {
        assert_eq!(retire_after(0), Duration::ZERO);
        assert_eq!(retire_after(1), Duration::from_millis(750));
        assert_eq!(retire_after(2), Duration::from_millis(1500));
        assert_eq!(retire_after(5), Duration::from_secs(4));
        assert_eq!(retire_after(60), Duration::from_secs(59));
    }
}
