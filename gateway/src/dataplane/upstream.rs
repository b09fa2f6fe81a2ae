//! The two deployments a worker sends requests to, and how it reaches their endpoints.
//!
//! Each worker owns one [`Upstreams`]: per endpoint a keep-alive [`pool::Pool`], per route
//! and variant a round-robin cursor. Endpoints themselves come from the routing snapshot.
//! Nothing here is shared between workers, so nothing here locks.

pub(crate) mod h2;
pub(crate) mod health;
pub(crate) mod pool;
pub(crate) mod stream;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway_common::{VARIANT_COUNT, Variant};
use monoio::net::TcpStream;

use super::io::buf::InBuf;
use super::io::socket;
use super::tls;
use health::{DOWN, Endpoint, OUT, UP};
use pool::Pool;
pub(crate) use stream::UpStream;

/// Why no connection to an endpoint could be had.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    /// The connect failed (refused, unreachable, reset).
    #[error("upstream connect failed: {0}")]
    Failed(std::io::Error),
    /// The connect (and TLS handshake) took longer than the connect timeout.
    #[error("upstream connect timeout")]
    Timeout,
    /// The TLS handshake with the endpoint failed (its certificate, most often).
    #[error("upstream TLS handshake failed: {0}")]
    Tls(std::io::Error),
}

/// How a deployment's connections are secured: its client configuration and the name
/// its endpoints' certificates are checked against (`None`: each endpoint's address).
#[derive(Debug)]
pub struct UpTls {
    /// The rustls client configuration (trust roots, client certificate, ALPN).
    pub config: Arc<rustls::ClientConfig>,
    /// SNI and verification name.
    pub name: Option<rustls::pki_types::ServerName<'static>>,
    /// Identifies these settings (never 0, which is plain TCP): connections made with
    /// one set of trust roots, name or client certificate are pooled apart from others.
    pub id: u64,
}

/// Bytes of response buffered per upstream connection.
const UPSTREAM_BUF: usize = 16 * 1024;

/// A connection to one upstream endpoint, with its own read buffer.
#[derive(Debug)]
pub(crate) struct UpConn {
    /// The socket, or TLS over it.
    pub(crate) stream: UpStream,
    /// Bytes received from the upstream and not consumed yet.
    pub(crate) buf: InBuf,
    /// The endpoint.
    pub(crate) addr: SocketAddr,
    /// The deployment it serves: its socket is tagged for that variant's kernel
    /// accounting, so it goes back to that variant's pool only.
    pub(crate) variant: Variant,
    /// True when the connection came from the pool (it served earlier requests).
    pub(crate) reused: bool,
    /// The TLS settings it was made with ([`UpTls::id`]; 0: plain).
    pub(crate) tls: u64,
    /// Counts the connection as in flight on its endpoint while it is out of the pool.
    busy: Busy,
}

/// A request in flight on an endpoint, counted in the endpoint's per-worker gauge for as
/// long as its connection is out of the pool (a tunnel included).
#[derive(Debug, Default)]
struct Busy(Option<Rc<Cell<u32>>>);

impl Busy {
    fn new(count: &Rc<Cell<u32>>) -> Busy {
        count.set(count.get() + 1);
        Busy(Some(Rc::clone(count)))
    }

    fn release(&mut self) {
        if let Some(c) = self.0.take() {
            c.set(c.get().saturating_sub(1));
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.release();
    }
}

/// A pool's key: endpoint address, variant, and the TLS settings its connections were
/// made and verified with ([`UpTls::id`]; 0 for plain TCP).
type PoolKey = (SocketAddr, Variant, u64);

/// One worker's connections to upstream endpoints: a keep-alive pool per endpoint
/// address, variant and security (so pools survive routing changes that keep the
/// endpoint, a socket counted for one variant in the kernel never carries the other's
/// requests when both deployments list the same address, and a plain connection never
/// serves a deployment that asks for TLS) and a round-robin cursor per route and
/// variant.
#[derive(Debug)]
pub(crate) struct Upstreams {
    pools: RefCell<HashMap<PoolKey, Pool, BuildHasherDefault<AddrHasher>>>,
    /// Multiplexed connections of deployments that speak HTTP/2.
    h2: h2::H2Pools,
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
            h2: h2::H2Pools::default(),
            cursors: RefCell::new(Vec::new()),
            max_idle,
            idle_timeout: timeouts.pool_idle,
            connect_timeout: timeouts.connect,
            send_timeout: timeouts.send,
        }
    }

    /// The index of the next of `endpoints` for route `route_id` and `variant`, in
    /// round-robin order among those that are up; never `avoid` (the endpoint a retry
    /// follows) when there is another one. When none is up (panic mode: every endpoint
    /// failed its checks or is ejected) the endpoints that are down take traffic too;
    /// draining and maintenance ones never do. `None`: no endpoint may take it.
    pub(crate) fn next_endpoint(
        &self,
        route_id: usize,
        variant: Variant,
        endpoints: &[Arc<Endpoint>],
        avoid: Option<usize>,
    ) -> Option<usize> {
        let n = endpoints.len();
        if n == 0 {
            return None;
        }
        let slot = route_id * VARIANT_COUNT + variant.index();
        let mut cursors = self.cursors.borrow_mut();
        if cursors.len() <= slot {
            cursors.resize(slot + 1, 0);
        }
        let start = cursors[slot] as usize % n;
        let pick = |allowed: u8| {
            (0..n)
                .map(|k| (start + k) % n)
                .find(|&i| Some(i) != avoid && endpoints[i].state() <= allowed)
        };
        let i = pick(UP)
            .or_else(|| pick(DOWN))
            .or_else(|| avoid.filter(|&a| a < n && endpoints[a].state() != OUT))?;
        cursors[slot] = ((i + 1) % n) as u32;
        Some(i)
    }

    /// An idle pooled connection to `addr` that is still open, if there is one. Kept
    /// apart from [`Upstreams::connect`] so the common, pooled case builds no connect
    /// future at all.
    #[inline]
    pub(crate) fn pooled(&self, addr: SocketAddr, variant: Variant, tls: u64) -> Option<UpConn> {
        let mut pools = self.pools.borrow_mut();
        let pool = pools.get_mut(&(addr, variant, tls))?;
        let mut conn = pool.take(Instant::now())?;
        conn.busy = Busy::new(pool.busy());
        Some(conn)
    }

    /// A new connection to `addr`, within the connect timeout (the TLS handshake
    /// included, with `tls`). `variant` is the deployment the connection serves (kernel
    /// accounting tags the socket with it).
    pub(crate) async fn connect(
        &self,
        addr: SocketAddr,
        variant: Variant,
        tls: Option<&UpTls>,
    ) -> Result<UpConn, ConnectError> {
        let started = Instant::now();
        let tcp = match monoio::time::timeout(self.connect_timeout, TcpStream::connect_addr(addr))
            .await
        {
            Err(_) => return Err(ConnectError::Timeout),
            Ok(Err(e)) => return Err(ConnectError::Failed(e)),
            Ok(Ok(s)) => s,
        };
        // Small heads must not wait for Nagle; failure only costs latency.
        let _ = tcp.set_nodelay(true);
        socket::set_send_timeout(&tcp, self.send_timeout);
        // Kernel accounting: this socket's TCP figures count for `variant` from now on
        // (TLS records, for a TLS deployment).
        crate::kernel::tag_upstream(&tcp, variant);
        let stream = match tls {
            None => UpStream::Plain(tcp),
            Some(t) => {
                let name = t
                    .name
                    .clone()
                    .unwrap_or(rustls::pki_types::ServerName::IpAddress(addr.ip().into()));
                let left = self.connect_timeout.saturating_sub(started.elapsed());
                match monoio::time::timeout(left, tls::connect(Arc::clone(&t.config), name, tcp))
                    .await
                {
                    Err(_) => return Err(ConnectError::Timeout),
                    Ok(Err(e)) => return Err(ConnectError::Tls(e)),
                    Ok(Ok(s)) => UpStream::Tls(Box::new(s)),
                }
            }
        };
        let tls_id = tls.map_or(0, |t| t.id);
        let busy = Busy::new(self.pool(addr, variant, tls_id).busy());
        Ok(UpConn {
            stream,
            buf: InBuf::new(UPSTREAM_BUF),
            addr,
            variant,
            reused: false,
            tls: tls_id,
            busy,
        })
    }

    /// A stream to `addr` for a deployment that speaks HTTP/2: on a pooled connection
    /// with room for it (unless `fresh`), else on a new one (connected, TLS-checked for
    /// ALPN `h2` and handshaken within the connect timeout) that later requests share.
    /// The stream opens when the exchange writes the request head.
    pub(crate) async fn h2_stream(
        &self,
        addr: SocketAddr,
        variant: Variant,
        tls: Option<&UpTls>,
        fresh: bool,
    ) -> Result<UpConn, ConnectError> {
        let tls_id = tls.map_or(0, |t| t.id);
        let key = (addr, variant, tls_id);
        let pooled = if fresh { None } else { self.h2.with_room(key) };
        let reused = pooled.is_some();
        let conn = if let Some(c) = pooled {
            c
        } else {
            let started = Instant::now();
            let up = self.connect(addr, variant, tls).await?;
            let left = self.connect_timeout.saturating_sub(started.elapsed());
            self.h2.handshake(key, up.stream, left).await?
        };
        let busy = Busy::new(self.pool(addr, variant, tls_id).busy());
        Ok(UpConn {
            stream: UpStream::H2(Box::new(h2::stream::H2Stream::new(
                conn,
                tls.is_some(),
                self.send_timeout,
            ))),
            buf: InBuf::new(UPSTREAM_BUF),
            addr,
            variant,
            reused,
            tls: tls_id,
            busy,
        })
    }

    /// The pool of `addr` for `variant` (TLS or not), made when missing.
    fn pool(&self, addr: SocketAddr, variant: Variant, tls: u64) -> std::cell::RefMut<'_, Pool> {
        std::cell::RefMut::map(self.pools.borrow_mut(), |pools| {
            pools
                .entry((addr, variant, tls))
                .or_insert_with(|| Pool::new(self.max_idle, self.idle_timeout))
        })
    }

    /// Returns a connection whose last exchange completed cleanly to its pool;
    /// `upstream_timeout_s` is the idle timeout the upstream announced in that exchange.
    /// `endpoint` is its health: a draining endpoint keeps no idle connection.
    pub(crate) fn put(
        &self,
        mut conn: UpConn,
        endpoint: &Endpoint,
        upstream_timeout_s: Option<u32>,
    ) {
        conn.busy.release();
        if !conn.buf.is_empty() || endpoint.state() == OUT || matches!(conn.stream, UpStream::H2(_))
        {
            // (An HTTP/2 stream is done; its connection stays in the HTTP/2 pool.)
            // Bytes after the response: the upstream is out of step; never reuse.
            return;
        }
        conn.reused = true;
        self.pool(conn.addr, conn.variant, conn.tls)
            .put(conn, Instant::now(), upstream_timeout_s);
    }

    /// Closes idle connections past their retirement time or closed by their upstream,
    /// and every idle connection to an endpoint that drains or is in maintenance;
    /// publishes each endpoint's in-flight requests and idle connections for worker `w`;
    /// forgets pools with nothing in them.
    pub(crate) fn sweep<'a>(
        &self,
        w: usize,
        endpoints: impl Iterator<Item = (&'a Endpoint, Variant, u64)>,
    ) {
        let now = Instant::now();
        self.h2.sweep(now, self.idle_timeout);
        let mut pools = self.pools.borrow_mut();
        for (e, variant, tls) in endpoints {
            let (busy, idle) = match pools.get_mut(&(e.addr, variant, tls)) {
                Some(pool) => {
                    if e.state() == OUT {
                        pool.clear();
                    }
                    (pool.busy().get(), pool.len() as u32)
                }
                None => (0, 0),
            };
            e.set_gauges(w, busy, idle);
        }
        pools.retain(|_, pool| {
            pool.sweep(now);
            !pool.is_empty() || pool.busy().get() > 0
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

    fn addrs(n: u16) -> Vec<Arc<Endpoint>> {
        (0..n)
            .map(|i| {
                Arc::new(Endpoint::new(
                    SocketAddr::from(([127, 0, 0, 1], 9000 + i)),
                    1,
                ))
            })
            .collect()
    }

    #[test]
    fn round_robin_per_route_and_variant() {
        let u = Upstreams::new(4, &crate::config::Timeouts::default());
        let e = addrs(3);
        let picks: Vec<_> = (0..6)
            .map(|_| u.next_endpoint(0, Variant::Stable, &e, None).unwrap())
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        // Another variant (and another route) has its own cursor.
        assert_eq!(u.next_endpoint(0, Variant::Canary, &e, None), Some(0));
        assert_eq!(u.next_endpoint(1, Variant::Stable, &e, None), Some(0));
        assert_eq!(u.next_endpoint(0, Variant::Stable, &[], None), None);
    }

    #[test]
    fn a_retry_never_goes_to_the_endpoint_that_failed_when_there_is_another() {
        let u = Upstreams::new(4, &crate::config::Timeouts::default());
        let e = addrs(3);
        e[2].set_state(DOWN);
        for _ in 0..10 {
            for failed in 0..3 {
                let next = u.next_endpoint(0, Variant::Stable, &e, Some(failed));
                assert_ne!(next, Some(failed));
                // An endpoint that is up, when there is one besides the failed one.
                assert_ne!(next, (failed != 2).then_some(2));
            }
        }
        // With one endpoint there is no other: the retry goes to it again.
        let one = addrs(1);
        assert_eq!(u.next_endpoint(0, Variant::Canary, &one, Some(0)), Some(0));
    }

    #[test]
    fn endpoints_down_are_skipped_until_none_is_up_and_out_ones_never_serve() {
        let u = Upstreams::new(4, &crate::config::Timeouts::default());
        let e = addrs(3);
        e[1].set_state(DOWN);
        let picks: Vec<_> = (0..4)
            .map(|_| u.next_endpoint(0, Variant::Stable, &e, None).unwrap())
            .collect();
        assert_eq!(picks, [0, 2, 0, 2]);
        // Panic mode: all down, all serve; a draining one still does not.
        e[0].set_state(DOWN);
        e[2].set_state(OUT);
        let picks: Vec<_> = (0..4)
            .map(|_| u.next_endpoint(0, Variant::Stable, &e, None).unwrap())
            .collect();
        assert_eq!(picks, [0, 1, 0, 1]);
        for x in &e {
            x.set_state(OUT);
        }
        assert_eq!(u.next_endpoint(0, Variant::Stable, &e, None), None);
        assert_eq!(u.next_endpoint(0, Variant::Stable, &e, Some(1)), None);
    }
}
