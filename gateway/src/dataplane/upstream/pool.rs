//! A per-worker, per-endpoint pool of idle keep-alive upstream connections, watched so
//! that none the upstream has closed carries a request.
//!
//! Most recently used first (its socket is the least likely to have been closed by the
//! upstream). Each connection has a retirement time: the gateway's pool idle timeout, or
//! earlier when the upstream announced its own (`Keep-Alive: timeout=N`, as Node and
//! Apache send), a margin before the upstream would close it. A connection is looked at
//! (a non-blocking peek, [`probe_idle`]) when it is taken after more than [`PEEK_AFTER`]
//! idle, and every idle connection on each sweep: one the upstream closed, reset or wrote
//! to while idle is dropped then. Under load the most recently used connection is taken
//! again within microseconds, before a close could even cross the wire, and the peek (a
//! system call, 0.3-0.7 µs here) is skipped; a close that does cross a request is handled
//! by the caller's resend ([`crate::proxy`]). Storage is allocated once, at the maximum
//! size.

use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::UpConn;
use crate::dataplane::io::socket::{self, probe_idle};

/// A connection idle for less than this is taken without a peek.
pub(crate) const PEEK_AFTER: Duration = Duration::from_millis(1);

/// An idle connection, when it was returned, and when it must be retired.
#[derive(Debug)]
struct Idle {
    conn: UpConn,
    since: Instant,
    retire: Instant,
}

/// Idle connections to one endpoint.
#[derive(Debug)]
pub(crate) struct Pool {
    idle: VecDeque<Idle>,
    max_idle: usize,
    idle_timeout: Duration,
    /// Connections to the endpoint out of the pool, carrying a request.
    busy: Rc<Cell<u32>>,
}

/// How long before the upstream's announced idle timeout a connection is retired: a
/// quarter of it, at most one second (the close may already be on its way).
pub(crate) fn retire_after(upstream_timeout_s: u32) -> Duration {
    let full = Duration::from_secs(u64::from(upstream_timeout_s));
    full.saturating_sub((full / 4).min(Duration::from_secs(1)))
}

impl Pool {
    /// An empty pool keeping up to `max_idle` connections for `idle_timeout`.
    pub(crate) fn new(max_idle: usize, idle_timeout: Duration) -> Self {
        Pool {
            idle: VecDeque::with_capacity(max_idle),
            max_idle,
            idle_timeout,
            busy: Rc::default(),
        }
    }

    /// The count of this endpoint's connections out of the pool.
    pub(crate) fn busy(&self) -> &Rc<Cell<u32>> {
        &self.busy
    }

    /// Closes every idle connection.
    pub(crate) fn clear(&mut self) {
        self.idle.clear();
    }

    /// The most recently returned connection that is neither past its retirement time
    /// nor closed by the upstream. Those that are are closed on the way.
    pub(crate) fn take(&mut self, now: Instant) -> Option<UpConn> {
        while let Some(idle) = self.idle.pop_back() {
            if now < idle.retire
                && (now.duration_since(idle.since) < PEEK_AFTER
                    || probe_idle(&idle.conn.stream) == socket::Idle::Quiet)
            {
                return Some(idle.conn);
            }
        }
        None
    }

    /// Keeps `conn` for reuse, unless the pool is full (then it is closed).
    /// `upstream_timeout_s` is the idle timeout the upstream announced, if any.
    pub(crate) fn put(&mut self, conn: UpConn, now: Instant, upstream_timeout_s: Option<u32>) {
        let keep = upstream_timeout_s.map_or(self.idle_timeout, |s| {
            retire_after(s).min(self.idle_timeout)
        });
        if self.idle.len() < self.max_idle && !keep.is_zero() {
            self.idle.push_back(Idle {
                conn,
                since: now,
                retire: now + keep,
            });
        }
    }

    /// Closes connections past their retirement time or closed by the upstream.
    pub(crate) fn sweep(&mut self, now: Instant) {
        self.idle.retain(|idle| {
            now < idle.retire && probe_idle(&idle.conn.stream) == socket::Idle::Quiet
        });
    }

    /// Idle connections held.
    pub(crate) fn len(&self) -> usize {
        self.idle.len()
    }

    /// True when no connection is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.idle.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pooled connection to a fresh loopback peer, and the peer's end.
    async fn pooled() -> (UpConn, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let stream = monoio::net::TcpStream::connect_addr(addr).await.unwrap();
        let (peer, _) = l.accept().unwrap();
        let conn = UpConn {
            stream: crate::dataplane::upstream::UpStream::Plain(stream),
            buf: crate::dataplane::io::buf::InBuf::new(1024),
            addr,
            variant: gateway_common::Variant::Stable,
            reused: true,
            tls: 0,
            busy: crate::dataplane::upstream::Busy::default(),
        };
        (conn, peer)
    }

    #[test]
    fn closed_and_expired_connections_are_never_taken() {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
            .block_on(async {
                let mut pool = Pool::new(8, Duration::from_secs(30));
                let (open, _keep) = pooled().await;
                let (closed, peer) = pooled().await;
                let t0 = Instant::now();
                pool.put(open, t0, None);
                pool.put(closed, t0, None);
                drop(peer);
                monoio::time::sleep(Duration::from_millis(20)).await;
                // The closed one (most recent) is skipped and dropped; the open one is
                // taken.
                let now = Instant::now();
                assert!(pool.take(now).is_some());
                assert!(pool.take(now).is_none());

                // The sweep drops a connection the upstream closed while idle.
                let (closed, peer) = pooled().await;
                pool.put(closed, Instant::now(), None);
                drop(peer);
                monoio::time::sleep(Duration::from_millis(20)).await;
                pool.sweep(Instant::now());
                assert!(pool.is_empty());

                // An announced `Keep-Alive: timeout=1` retires it after 750 ms.
                let (open, _keep) = pooled().await;
                let t0 = Instant::now();
                pool.put(open, t0, Some(1));
                assert_eq!(pool.len(), 1);
                assert!(pool.take(t0 + Duration::from_millis(760)).is_none());
                let (open, _keep2) = pooled().await;
                pool.put(open, t0, Some(1));
                assert!(pool.take(t0 + Duration::from_millis(700)).is_some());
                // `timeout=0`: never pooled.
                let (open, _keep3) = pooled().await;
                pool.put(open, t0, Some(0));
                assert!(pool.is_empty());
            });
    }

    #[test]
    fn announced_timeouts_retire_early() {
        assert_eq!(retire_after(0), Duration::ZERO);
        assert_eq!(retire_after(1), Duration::from_millis(750));
        assert_eq!(retire_after(2), Duration::from_millis(1500));
        assert_eq!(retire_after(5), Duration::from_secs(4));
        assert_eq!(retire_after(60), Duration::from_secs(59));
    }
}
