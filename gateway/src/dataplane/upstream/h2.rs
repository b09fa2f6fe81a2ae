//! HTTP/2 connections to the endpoints of deployments with `protocol = "h2c"` or
//! `"h2"`. Per endpoint, variant and security (the same key as the HTTP/1.1 pools) a
//! worker keeps a few multiplexed connections, each driven by a task of its own; a
//! request takes a stream on the first one with room (fewer of our streams open than
//! the upstream's `SETTINGS_MAX_CONCURRENT_STREAMS`) and opens a new connection only
//! when none has room. A connection with no stream open for the pool's idle timeout is
//! dropped (the driver then ends it with GOAWAY), and one that failed or was sent away
//! is forgotten at the next request or sweep.

pub(crate) mod stream;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::poll_fn;
use std::hash::BuildHasherDefault;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::SendRequest;

use super::{AddrHasher, ConnectError, PoolKey, UpStream};
use crate::dataplane::io::poll::PollIo;

/// The stream window each HTTP/2 upstream connection opens (per stream and, x4, for the
/// connection): large enough that a long body on loopback is not held to 64 KiB per
/// round trip, and the most a stream buffers while its client reads slowly.
const STREAM_WINDOW: u32 = 256 * 1024;
/// Largest response header block accepted from an upstream.
const MAX_HEADER_LIST: u32 = 64 * 1024;
/// Most connections per endpoint, variant and security in one worker.
const MAX_CONNS: usize = 16;

/// One multiplexed connection.
#[derive(Debug)]
pub(crate) struct H2Conn {
    send: SendRequest<Bytes>,
    /// Our streams open on it.
    open: Cell<u32>,
    /// Cleared by the driver when the connection ends (error, GOAWAY, close).
    alive: Rc<Cell<bool>>,
    /// When its last stream closed.
    idle_since: Cell<Instant>,
    /// The TCP socket's descriptor (for [`UpStream`]'s `AsRawFd`; never probed).
    fd: RawFd,
}

impl H2Conn {
    fn has_room(&self) -> bool {
        self.alive.get() && (self.open.get() as usize) < self.send.current_max_send_streams()
    }

    /// A stream opened on this connection ends.
    fn closed_stream(&self) {
        self.open.set(self.open.get().saturating_sub(1));
        if self.open.get() == 0 {
            self.idle_since.set(Instant::now());
        }
    }
}

/// A worker's HTTP/2 upstream connections.
#[derive(Debug, Default)]
pub(crate) struct H2Pools {
    conns: RefCell<HashMap<PoolKey, Vec<Rc<H2Conn>>, BuildHasherDefault<AddrHasher>>>,
}

impl H2Pools {
    /// A live connection under `key` with room for one more stream.
    pub(crate) fn with_room(&self, key: PoolKey) -> Option<Rc<H2Conn>> {
        let mut conns = self.conns.borrow_mut();
        let list = conns.get_mut(&key)?;
        list.retain(|c| c.alive.get());
        list.iter().find(|c| c.has_room()).cloned()
    }

    /// Starts the connection over `stream` (made and, for `h2`, TLS-checked by the
    /// caller): the HTTP/2 handshake within `timeout`, then a driver task. The
    /// connection joins the pool of `key` unless that pool is full.
    pub(crate) async fn handshake(
        &self,
        key: PoolKey,
        stream: UpStream,
        timeout: Duration,
    ) -> Result<Rc<H2Conn>, ConnectError> {
        if let UpStream::Tls(s) = &stream
            && s.session().alpn_protocol() != Some(b"h2")
        {
            return Err(ConnectError::Tls(std::io::Error::other(
                "the endpoint did not agree to HTTP/2 (ALPN h2); is it an HTTP/2 server?",
            )));
        }
        let fd = stream.as_raw_fd();
        // The control-frame flood watch is for clients (it expects a client's preface).
        let io = PollIo::new(stream, &[], None);
        let handshake = h2::client::Builder::new()
            .enable_push(false)
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(STREAM_WINDOW * 4)
            .max_header_list_size(MAX_HEADER_LIST)
            .handshake::<_, Bytes>(io);
        let (send, conn) = match monoio::time::timeout(timeout, handshake).await {
            Err(_) => return Err(ConnectError::Timeout),
            Ok(Err(e)) => {
                return Err(ConnectError::Failed(std::io::Error::other(format!(
                    "HTTP/2 handshake: {e}"
                ))));
            }
            Ok(Ok(pair)) => pair,
        };
        let alive = Rc::new(Cell::new(true));
        let flag = Rc::clone(&alive);
        let addr = key.0;
        monoio::spawn(async move {
            if let Err(e) = conn.await {
                log::debug!("HTTP/2 connection to {addr} ended: {e}");
            }
            flag.set(false);
        });
        // The upstream's SETTINGS (its stream limit) arrive with the first read; until
        // then h2 assumes no limit, which `ready` below enforces either way.
        let c = Rc::new(H2Conn {
            send,
            open: Cell::new(0),
            alive,
            idle_since: Cell::new(Instant::now()),
            fd,
        });
        let mut conns = self.conns.borrow_mut();
        let list = conns.entry(key).or_default();
        list.retain(|c| c.alive.get());
        if list.len() < MAX_CONNS {
            list.push(Rc::clone(&c));
        }
        Ok(c)
    }

    /// Drops connections that failed, and those idle for longer than `idle`.
    pub(crate) fn sweep(&self, now: Instant, idle: Duration) {
        let mut conns = self.conns.borrow_mut();
        for list in conns.values_mut() {
            list.retain(|c| {
                c.alive.get() && (c.open.get() > 0 || now.duration_since(c.idle_since.get()) < idle)
            });
        }
        conns.retain(|_, list| !list.is_empty());
    }
}

/// Waits until `conn` may open a stream (its upstream's stream limit allows one more).
/// `Err`: the connection is gone.
pub(crate) async fn ready(conn: &H2Conn) -> Result<SendRequest<Bytes>, h2::Error> {
    let mut send = conn.send.clone();
    poll_fn(|cx| send.poll_ready(cx)).await?;
    Ok(send)
}
