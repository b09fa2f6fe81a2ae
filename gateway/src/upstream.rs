//! The two deployments a worker sends requests to, and how it reaches their endpoints.
//!
//! Each worker owns one [`Upstreams`]: per deployment, its endpoints with a round-robin
//! cursor, and per endpoint a keep-alive [`pool::Pool`]. Nothing here is shared between
//! workers, so nothing here locks.

pub mod pool;

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use gateway_common::{VARIANT_COUNT, Variant};
use monoio::net::TcpStream;

use crate::proxy::buf::InBuf;
use crate::proxy::error::ProxyError;
use pool::Pool;

/// Bytes of response buffered per upstream connection.
const UPSTREAM_BUF: usize = 16 * 1024;

/// A connection to one upstream endpoint, with its own read buffer.
#[derive(Debug)]
pub struct UpConn {
    /// The socket.
    pub stream: TcpStream,
    /// Bytes received from the upstream and not consumed yet.
    pub buf: InBuf,
    /// Index of the endpoint in [`Upstreams`].
    pub endpoint: usize,
    /// True when the connection came from the pool (it served earlier requests).
    pub reused: bool,
}

#[derive(Debug)]
struct Deployment {
    /// Index of this deployment's first endpoint in `Upstreams::addrs`.
    first: usize,
    len: usize,
    cursor: Cell<usize>,
}

/// One worker's view of the stable and canary deployments.
#[derive(Debug)]
pub struct Upstreams {
    addrs: Vec<SocketAddr>,
    deployments: [Deployment; VARIANT_COUNT],
    pools: RefCell<Vec<Pool>>,
    connect_timeout: Duration,
}

impl Upstreams {
    /// Endpoints of both deployments, pools holding up to `max_idle` connections each
    /// for at most `idle_timeout`.
    pub fn new(
        stable: &[SocketAddr],
        canary: &[SocketAddr],
        max_idle: usize,
        idle_timeout: Duration,
        connect_timeout: Duration,
    ) -> Self {
        let addrs: Vec<SocketAddr> = stable.iter().chain(canary).copied().collect();
        let pools = addrs
            .iter()
            .map(|_| Pool::new(max_idle, idle_timeout))
            .collect();
        Upstreams {
            deployments: [
                Deployment {
                    first: 0,
                    len: stable.len(),
                    cursor: Cell::new(0),
                },
                Deployment {
                    first: stable.len(),
                    len: canary.len(),
                    cursor: Cell::new(0),
                },
            ],
            addrs,
            pools: RefCell::new(pools),
            connect_timeout,
        }
    }

    /// True when `variant` has at least one endpoint.
    pub fn has_endpoints(&self, variant: Variant) -> bool {
        self.deployments[variant.index()].len > 0
    }

    /// The next endpoint of `variant` in round-robin order.
    pub fn next_endpoint(&self, variant: Variant) -> Option<usize> {
        let d = &self.deployments[variant.index()];
        if d.len == 0 {
            return None;
        }
        let i = d.cursor.get();
        d.cursor.set(if i + 1 >= d.len { 0 } else { i + 1 });
        Some(d.first + i)
    }

    /// Address of endpoint `endpoint`.
    pub fn addr(&self, endpoint: usize) -> SocketAddr {
        self.addrs[endpoint]
    }

    /// An idle pooled connection to `endpoint`, or a new one.
    pub async fn get(&self, endpoint: usize) -> Result<UpConn, ProxyError> {
        let pooled = self.pools.borrow_mut()[endpoint].take(Instant::now());
        if let Some(conn) = pooled {
            return Ok(conn);
        }
        let addr = self.addrs[endpoint];
        let stream = match monoio::time::timeout(
            self.connect_timeout,
            TcpStream::connect_addr(addr),
        )
        .await
        {
            Err(_) => return Err(ProxyError::ConnectTimeout),
            Ok(Err(e)) => return Err(ProxyError::Connect(e)),
            Ok(Ok(s)) => s,
        };
        // Small heads must not wait for Nagle; failure only costs latency.
        let _ = stream.set_nodelay(true);
        Ok(UpConn {
            stream,
            buf: InBuf::new(UPSTREAM_BUF),
            endpoint,
            reused: false,
        })
    }

    /// Returns a connection whose last exchange completed cleanly to its pool.
    pub fn put(&self, mut conn: UpConn) {
        if !conn.buf.is_empty() {
            // Bytes after the response: the upstream is out of step; never reuse.
            return;
        }
        conn.reused = true;
        let endpoint = conn.endpoint;
        self.pools.borrow_mut()[endpoint].put(conn, Instant::now());
    }

    /// Closes idle connections past their idle timeout.
    pub fn sweep(&self) {
        let now = Instant::now();
        for pool in self.pools.borrow_mut().iter_mut() {
            pool.sweep(now);
        }
    }

    /// Idle connections currently pooled, over all endpoints.
    pub fn idle(&self) -> usize {
        self.pools.borrow().iter().map(Pool::len).sum()
    }
}
