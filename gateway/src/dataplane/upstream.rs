//! The two deployments a worker sends requests to, and how it reaches their endpoints.
//!
//! Each worker owns one [`Upstreams`]: per endpoint a keep-alive [`pool::Pool`], per route
//! and variant a round-robin cursor. Endpoints themselves come from the routing snapshot.
//! Nothing here is shared between workers, so nothing here locks.

pub(crate) mod pool;

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use gateway_common::{VARIANT_COUNT, Variant};
use monoio::net::TcpStream;

use super::io::buf::InBuf;
use super::io::socket;
use pool::Pool;

/// Why no connection to an endpoint could be had.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    /// The connect failed (refused, unreachable, reset).
    #[error("upstream connect failed: {0}")]
    Failed(std::io::Error),
    /// The connect took longer than the connect timeout.
    #[error("upstream connect timeout")]
    Timeout,
}

/// Bytes of response buffered per upstream connection.
const UPSTREAM_BUF: usize = 16 * 1024;

/// A connection to one upstream endpoint, with its own read buffer.
#[derive(Debug)]
pub(crate) struct UpConn {
    /// The socket.
    pub(crate) stream: TcpStream,
    /// Bytes received from the upstream and not consumed yet.
    pub(crate) buf: InBuf,
    /// The endpoint.
    pub(crate) addr: SocketAddr,
    /// The deployment it serves: its socket is tagged for that variant's kernel
    /// accounting, so it goes back to that variant's pool only.
    pub(crate) variant: Variant,
    /// True when the connection came from the pool (it served earlier requests).
    pub(crate) reused: bool,
}

/// One worker's connections to upstream endpoints: a keep-alive pool per endpoint
/// address and variant (so pools survive routing changes that keep the endpoint, and a
/// socket counted for one variant in the kernel never carries the other's requests when
/// both deployments list the same address) and a round-robin cursor per route and
/// variant.
#[derive(Debug)]
pub(crate) struct Upstreams {
    pools: RefCell<HashMap<(SocketAddr, Variant), Pool, BuildHasherDefault<AddrHasher>>>,
    cursors: RefCell<Vec<u32>>,
    max_idle: usize,
    idle_timeout: Duration,
    connect_timeout: Duration,
    send_timeout: Duration,
}

impl Upstreams {
    /// Pools holding up to `max_idle` connections per endpoint for at most
    /// `timeouts.pool_idle`; new connections get `timeouts.connect` and `timeouts.send`.
    pub(crate) fn new(max_idle: usize, timeouts: &crate::config::Timeouts) -> Self {
        Upstreams {
            pools: RefCell::new(HashMap::default()),
            cursors: RefCell::new(Vec::new()),
            max_idle,
            idle_timeout: timeouts.pool_idle,
            connect_timeout: timeouts.connect,
            send_timeout: timeouts.send,
        }
    }

    /// The next of `endpoints` for route `route_id` and `variant`, in round-robin order;
    /// never `avoid` (the endpoint a retry follows) when there is another one.
    pub(crate) fn next_endpoint(
        &self,
        route_id: usize,
        variant: Variant,
        endpoints: &[SocketAddr],
        avoid: Option<SocketAddr>,
    ) -> Option<SocketAddr> {
        if endpoints.is_empty() {
            return None;
        }
        let slot = route_id * VARIANT_COUNT + variant.index();
        let mut cursors = self.cursors.borrow_mut();
        if cursors.len() <= slot {
            cursors.resize(slot + 1, 0);
        }
        let n = endpoints.len();
        let mut i = cursors[slot] as usize % n;
        if n > 1 && avoid == Some(endpoints[i]) {
            i = (i + 1) % n;
        }
        cursors[slot] = ((i + 1) % n) as u32;
        Some(endpoints[i])
    }

    /// An idle pooled connection to `addr` that is still open, if there is one. Kept
    /// apart from [`Upstreams::connect`] so the common, pooled case builds no connect
    /// future at all.
    #[inline]
    pub(crate) fn pooled(&self, addr: SocketAddr, variant: Variant) -> Option<UpConn> {
        self.pools
            .borrow_mut()
            .get_mut(&(addr, variant))
            .and_then(|p| p.take(Instant::now()))
    }

    /// A new connection to `addr`, within the connect timeout. `variant` is the
    /// deployment the connection serves (kernel accounting tags the socket with it).
    pub(crate) async fn connect(
        &self,
        addr: SocketAddr,
        variant: Variant,
    ) -> Result<UpConn, ConnectError> {
        let stream = match monoio::time::timeout(
            self.connect_timeout,
            TcpStream::connect_addr(addr),
        )
        .await
        {
            Err(_) => return Err(ConnectError::Timeout),
            Ok(Err(e)) => return Err(ConnectError::Failed(e)),
            Ok(Ok(s)) => s,
        };
        // Small heads must not wait for Nagle; failure only costs latency.
        let _ = stream.set_nodelay(true);
        socket::set_send_timeout(&stream, self.send_timeout);
        // Kernel accounting: this socket's TCP figures count for `variant` from now on.
        crate::kernel::tag_upstream(&stream, variant);
        Ok(UpConn {
            stream,
            buf: InBuf::new(UPSTREAM_BUF),
            addr,
            variant,
            reused: false,
        })
    }

    /// Returns a connection whose last exchange completed cleanly to its pool;
    /// `upstream_timeout_s` is the idle timeout the upstream announced in that exchange.
    pub(crate) fn put(&self, mut conn: UpConn, upstream_timeout_s: Option<u32>) {
        if !conn.buf.is_empty() {
            // Bytes after the response: the upstream is out of step; never reuse.
            return;
        }
        conn.reused = true;
        let (max_idle, idle_timeout) = (self.max_idle, self.idle_timeout);
        self.pools
            .borrow_mut()
            .entry((conn.addr, conn.variant))
            .or_insert_with(|| Pool::new(max_idle, idle_timeout))
            .put(conn, Instant::now(), upstream_timeout_s);
    }

    /// Closes idle connections past their retirement time or closed by their upstream;
    /// forgets empty pools.
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        self.pools.borrow_mut().retain(|_, pool| {
            pool.sweep(now);
            !pool.is_empty()
        });
    }
}

/// Hasher for the pool map, looked up twice per request: the multiply-rotate mix of
/// rustc's `FxHasher`. Keys are endpoint addresses from the operator's own config, not
/// attacker-chosen, so SipHash's flooding resistance buys nothing here, while it cost
/// ~300 instructions per request in a callgrind profile.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct AddrHasher(u64);

impl AddrHasher {
    const K: u64 = 0xf135_7aea_2e62_a9c5;

    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(26) ^ word).wrapping_mul(Self::K);
    }
}

impl Hasher for AddrHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.mix(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.mix(u64::from_le_bytes(w));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.mix(u64::from(i));
    }

    fn write_u16(&mut self, i: u16) {
        self.mix(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.mix(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.mix(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.mix(i as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(n: u16) -> Vec<SocketAddr> {
        (0..n)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], 9000 + i)))
            .collect()
    }

    #[test]
    fn round_robin_per_route_and_variant() {
        let u = Upstreams::new(4, &crate::config::Timeouts::default());
        let e = addrs(3);
        let picks: Vec<_> = (0..6)
            .map(|_| u.next_endpoint(0, Variant::Stable, &e, None).unwrap())
            .collect();
        assert_eq!(picks, [e[0], e[1], e[2], e[0], e[1], e[2]]);
        // Another variant (and another route) has its own cursor.
        assert_eq!(u.next_endpoint(0, Variant::Canary, &e, None), Some(e[0]));
        assert_eq!(u.next_endpoint(1, Variant::Stable, &e, None), Some(e[0]));
        assert_eq!(u.next_endpoint(0, Variant::Stable, &[], None), None);
    }

    #[test]
    fn a_retry_never_goes_to_the_endpoint_that_failed_when_there_is_another() {
        let u = Upstreams::new(4, &crate::config::Timeouts::default());
        let e = addrs(3);
        for _ in 0..10 {
            for failed in &e {
                let next = u.next_endpoint(0, Variant::Stable, &e, Some(*failed));
                assert_ne!(next, Some(*failed));
            }
        }
        // With one endpoint there is no other: the retry goes to it again.
        let one = addrs(1);
        assert_eq!(
            u.next_endpoint(0, Variant::Canary, &one, Some(one[0])),
            Some(one[0])
        );
    }
}
