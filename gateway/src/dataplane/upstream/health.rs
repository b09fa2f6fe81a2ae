//! What the data path knows of an endpoint's health: one state word the control plane
//! writes (up, down, out) and, per worker, the consecutive-failure counters of passive
//! outlier detection and the in-flight and idle-connection gauges, each written only by
//! its own worker on its own cache line. Workers never lock and never write a line
//! another core writes; the control plane (`control::health`) reads the counters,
//! decides, and publishes the state.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering::Relaxed};

use crate::config::health::Outlier;

/// Published state: takes traffic.
pub(crate) const UP: u8 = 0;
/// Published state: failed its checks or ejected; takes traffic only in panic mode
/// (when no endpoint of the deployment is up).
pub(crate) const DOWN: u8 = 1;
/// Published state: draining or in maintenance; takes no new request, ever.
pub(crate) const OUT: u8 = 2;

/// One endpoint of one deployment of one route, shared by the control plane and every
/// worker for as long as the endpoint stays in the configuration.
#[derive(Debug)]
pub struct Endpoint {
    /// Its address.
    pub addr: SocketAddr,
    state: AtomicU8,
    workers: Box<[Slot]>,
}

/// One worker's view of an endpoint.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Slot {
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    in_flight: AtomicU32,
    idle: AtomicU32,
}

/// What passive detection learns from one attempt on an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Observed {
    /// A response head with this status.
    Answered(u16),
    /// The connect failed or timed out.
    ConnectFailed,
    /// The connection closed or was reset before a response head, or the head was not
    /// HTTP.
    Reset,
    /// No response head in time.
    Timeout,
}

/// One worker's passive counters of an endpoint, read by the control plane.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Consecutive responses whose status the outlier settings count.
    pub consecutive_5xx: u32,
    /// Consecutive gateway failures the outlier settings count.
    pub consecutive_gateway: u32,
}

impl Endpoint {
    /// An endpoint at `addr`, up, seen by `workers` workers.
    pub fn new(addr: SocketAddr, workers: usize) -> Endpoint {
        Endpoint {
            addr,
            state: AtomicU8::new(UP),
            workers: (0..workers.max(1)).map(|_| Slot::default()).collect(),
        }
    }

    /// The published state ([`UP`], [`DOWN`] or [`OUT`]).
    #[inline]
    pub(crate) fn state(&self) -> u8 {
        self.state.load(Relaxed)
    }

    /// Publishes a new state (control plane only).
    pub(crate) fn set_state(&self, state: u8) {
        self.state.store(state, Relaxed);
    }

    /// Notes what worker `w` saw, counted as `outlier` says; without outlier detection
    /// nothing is kept. A success clears the counters (a load, and a store only when they
    /// were not zero already).
    #[inline]
    pub(crate) fn observe(&self, w: usize, outlier: Option<&Outlier>, seen: Observed) {
        let (Some(o), Some(slot)) = (outlier, self.workers.get(w)) else {
            return;
        };
        let bump = |c: &AtomicU32| c.store(c.load(Relaxed).saturating_add(1), Relaxed);
        let clear = |c: &AtomicU32| {
            if c.load(Relaxed) != 0 {
                c.store(0, Relaxed);
            }
        };
        match seen {
            Observed::Answered(status) => {
                clear(&slot.consecutive_gateway);
                if o.statuses.contains(status) {
                    bump(&slot.consecutive_5xx);
                } else {
                    clear(&slot.consecutive_5xx);
                }
            }
            failure => {
                let counted = match failure {
                    Observed::ConnectFailed => o.count_connect_failures,
                    Observed::Reset => o.count_resets,
                    _ => o.count_timeouts,
                };
                if counted {
                    bump(&slot.consecutive_gateway);
                }
            }
        }
    }

    /// Worker `w`'s passive counters.
    pub fn counters(&self, w: usize) -> Counters {
        self.workers
            .get(w)
            .map_or_else(Counters::default, |s| Counters {
                consecutive_5xx: s.consecutive_5xx.load(Relaxed),
                consecutive_gateway: s.consecutive_gateway.load(Relaxed),
            })
    }

    /// Number of workers with a slot.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Clears every worker's passive counters (control plane, when it ejects: the
    /// endpoint starts afresh when it comes back). A worker's update racing with this
    /// is lost, which costs at most one observation.
    pub(crate) fn reset_counters(&self) {
        for s in &self.workers {
            s.consecutive_5xx.store(0, Relaxed);
            s.consecutive_gateway.store(0, Relaxed);
        }
    }

    /// Publishes worker `w`'s requests in flight on the endpoint and its idle pooled
    /// connections (the worker's pool sweep does, a few times a second).
    pub(crate) fn set_gauges(&self, w: usize, in_flight: u32, idle: u32) {
        if let Some(s) = self.workers.get(w) {
            s.in_flight.store(in_flight, Relaxed);
            s.idle.store(idle, Relaxed);
        }
    }

    /// Requests in flight and idle pooled connections, summed over workers.
    pub fn gauges(&self) -> (u32, u32) {
        self.workers.iter().fold((0, 0), |(f, i), s| {
            (f + s.in_flight.load(Relaxed), i + s.idle.load(Relaxed))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_per_worker_and_follow_the_outlier_settings() {
        let e = Endpoint::new("127.0.0.1:1".parse().unwrap(), 2);
        let o = Outlier {
            count_timeouts: false,
            ..Outlier::default()
        };
        for _ in 0..3 {
            e.observe(0, Some(&o), Observed::Answered(503));
        }
        e.observe(1, Some(&o), Observed::ConnectFailed);
        e.observe(1, Some(&o), Observed::Timeout);
        assert_eq!(e.counters(0).consecutive_5xx, 3);
        assert_eq!(
            e.counters(1),
            Counters {
                consecutive_5xx: 0,
                consecutive_gateway: 1
            }
        );
        e.observe(0, Some(&o), Observed::Answered(200));
        assert_eq!(e.counters(0).consecutive_5xx, 0);
        // Without outlier settings nothing is kept; an unknown worker is ignored.
        e.observe(0, None, Observed::Answered(503));
        e.observe(7, Some(&o), Observed::Answered(503));
        assert_eq!(e.counters(0), Counters::default());
        e.observe(1, Some(&o), Observed::Answered(404));
        assert_eq!(e.counters(1), Counters::default());
        e.set_gauges(0, 2, 3);
        e.set_gauges(1, 1, 0);
        assert_eq!(e.gauges(), (3, 3));
    }
}
