//! A per-worker, per-endpoint pool of idle keep-alive upstream connections.
//!
//! Most recently used first (its socket is the least likely to have been closed by the
//! upstream); connections idle longer than the timeout are closed on the next take or
//! sweep. Storage is allocated once, at the maximum size.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::UpConn;

/// Idle connections to one endpoint.
#[derive(Debug)]
pub struct Pool {
    idle: VecDeque<(UpConn, Instant)>,
    max_idle: usize,
    idle_timeout: Duration,
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

    /// The most recently returned connection that has not expired.
    pub fn take(&mut self, now: Instant) -> Option<UpConn> {
        while let Some((conn, since)) = self.idle.pop_back() {
            if now.duration_since(since) < self.idle_timeout {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps `conn` for reuse, unless the pool is full (then it is closed).
    pub fn put(&mut self, conn: UpConn, now: Instant) {
        if self.idle.len() < self.max_idle {
            self.idle.push_back((conn, now));
        }
    }

    /// Closes expired connections (the oldest are at the front).
    pub fn sweep(&mut self, now: Instant) {
        while self
            .idle
            .front()
            .is_some_and(|(_, since)| now.duration_since(*since) >= self.idle_timeout)
        {
            self.idle.pop_front();
        }
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
