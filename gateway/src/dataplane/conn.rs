//! One accepted client connection, from accept to close: the top of the data plane.
//! Sets the TCP socket up (options, kernel accounting tag), runs the TLS handshake on a
//! TLS stage (counted here: completed, failed by reason, in progress), then request
//! after request through [`session::run`]; after the last one it tunnels an upgraded
//! connection or closes lingering.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::io::AsyncWriteRent as _;
use monoio::net::TcpStream;

use super::h2;
use super::io::Stream;
use super::io::relay::tunnel;
use super::session::{self, Client, Next};
use super::tls;
use super::worker::Worker;
use crate::metrics::{Counter, TlsFailure};

/// An accepted connection counts as busy until its first request is over (or it closed
/// without one), so a graceful stop or a binary upgrade waits for a client that has
/// connected and not yet sent, or not yet been read: closing it would reset a request
/// the client believes it made. The header and TLS handshake timeouts bound the wait.
struct Fresh<'a>(Option<&'a Counter>);

impl<'a> Fresh<'a> {
    fn new(busy: &'a Counter) -> Self {
        busy.inc();
        Fresh(Some(busy))
    }

    fn over(&mut self) {
        if let Some(busy) = self.0.take() {
            busy.dec();
        }
    }
}

impl Drop for Fresh<'_> {
    fn drop(&mut self) {
        self.over();
    }
}

/// Serves one accepted TCP connection on stage `stage` until it closes. Runs as its own
/// task.
pub(crate) async fn serve(worker: Rc<Worker>, stream: TcpStream, peer: SocketAddr, stage: usize) {
    let mut fresh = Fresh::new(&worker.metrics.busy);
    // TCP_NODELAY and the send timeout came with the socket, from its listener
    // (`io::socket::set_client_defaults`).
    // Kernel accounting: this socket counts as downstream (TLS records, once TLS).
    crate::kernel::tag_downstream(&stream);
    let (tls, http2) = worker
        .snapshot()
        .stages
        .get(stage)
        .map_or((None, false), |s| (s.tls.clone(), s.http2));
    let max_header = worker.config.limits.max_header_bytes;
    let Some(config) = tls else {
        let mut client = Client::new(stream, peer.ip(), false, stage, max_header);
        client.h2c = http2;
        serve_client(&worker, client, &mut fresh).await;
        return;
    };
    let m = &worker.metrics;
    // Handshakes cost CPU and memory before anything is known of the client: past the
    // limit a connection is closed at once rather than queued behind the others.
    if m.tls_handshaking.get() >= worker.config.limits.max_tls_handshakes as u64 {
        m.tls_failures[TlsFailure::Overload as usize].inc();
        return;
    }
    m.tls_handshaking.inc();
    let done = tls::accept(config, stream, worker.config.timeouts.tls_handshake).await;
    m.tls_handshaking.dec();
    match done {
        Ok(stream) => {
            m.tls_handshakes.inc();
            if stream.session().handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
                m.tls_resumed.inc();
            }
            if stream.session().alpn_protocol() == Some(b"h2") {
                // HTTP/2 by ALPN (RFC 9113 §3.2); h2 ends it with close_notify itself.
                fresh.over();
                worker.metrics.accepted.inc();
                worker.metrics.open.inc();
                h2::serve(&worker, stream, &[], peer.ip(), true, stage).await;
                worker.metrics.open.dec();
                return;
            }
            let client = Client::new(stream, peer.ip(), true, stage, max_header);
            if let Some(mut stream) = serve_client(&worker, client, &mut fresh).await {
                // TLS closes with close_notify (RFC 8446 §6.1), so the client can tell
                // the end of the connection from a truncation.
                let _ = monoio::time::timeout(CLOSE_NOTIFY_TIME, stream.shutdown()).await;
            }
        }
        Err(why) => {
            log::debug!("TLS handshake from {peer} failed: {}", why.as_str());
            m.tls_failures[why as usize].inc();
        }
    }
}

/// Longest a TLS connection's `close_notify` may take to go out.
const CLOSE_NOTIFY_TIME: Duration = Duration::from_secs(1);

/// Serves requests on `c` until the connection ends. Returns the stream unless it was
/// tunnelled or already shut down (a lingering close).
async fn serve_client<S: Stream>(
    w: &Rc<Worker>,
    mut c: Client<S>,
    fresh: &mut Fresh<'_>,
) -> Option<S> {
    let m = &w.metrics;
    m.accepted.inc();
    m.open.inc();
    let upgraded = loop {
        let next = session::run(w, &mut c).await;
        fresh.over();
        match next {
            // A graceful stop began while the response went out: close now rather than
            // wait for a next request (requests already buffered were pipelined before
            // the stop and are still answered).
            Next::KeepAlive if w.shared.draining() && c.buf.is_empty() => break None,
            Next::KeepAlive => c.served += 1,
            Next::Close => break None,
            Next::Upgrade(up) => break Some(up),
            Next::H2 => {
                h2::serve(w, c.stream, c.buf.data(), c.ip, false, c.stage).await;
                m.open.dec();
                return None;
            }
        }
    };
    let rest = if let Some(up) = upgraded {
        m.busy.inc();
        tunnel(c.stream, c.buf, up.stream, up.buf).await;
        m.busy.dec();
        None
    } else if c.linger {
        linger(&mut c).await;
        None
    } else {
        Some(c.stream)
    };
    m.open.dec();
    rest
}

/// Longest a lingering close keeps reading, and longest it waits for one read.
const LINGER_TIME: Duration = Duration::from_secs(10);
const LINGER_IDLE: Duration = Duration::from_secs(2);

/// Closes a connection whose client may still be sending (nginx's and Apache's
/// "lingering close"): stop writing (FIN after the answer), then read and discard what
/// arrives until the client closes, goes quiet for [`LINGER_IDLE`], or [`LINGER_TIME`]
/// passes. Closing with unread bytes at once would reset the connection, and a client
/// still writing its request would fail on that reset before reading the answer.
async fn linger<S: Stream>(c: &mut Client<S>) {
    if c.stream.shutdown().await.is_err() {
        return;
    }
    let deadline = Instant::now() + LINGER_TIME;
    loop {
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .min(LINGER_IDLE);
        if wait.is_zero() {
            return;
        }
        c.buf.consume(c.buf.data().len());
        match monoio::time::timeout(wait, c.buf.fill(&mut c.stream)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return,
        }
    }
}
