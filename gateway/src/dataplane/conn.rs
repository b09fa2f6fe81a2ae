//! One accepted client connection, from accept to close: the top of the data plane.
//! Sets the TCP socket up (options, kernel accounting tag), runs the TLS handshake on a
//! TLS stage (counted here: completed, failed by reason, in progress), then request
//! after request through [`session::run`]; after the last one it tunnels an upgraded
//! connection or closes lingering.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::io::Canceller;
use monoio::net::TcpStream;

use super::h2;
use super::io::Stream;
use super::io::park::{Park, Woke, next_delay};
use super::io::relay::tunnel;
use super::session::{self, Client, Next};
use super::tls;
use super::worker::Worker;
use crate::metrics::TlsFailure;

/// An accepted connection counts as busy until its first request is over (or it closed
/// without one), so a graceful stop or a binary upgrade waits for a client that has
/// connected and not yet sent, or not yet been read: closing it would reset a request
/// the client believes it made. The header and TLS handshake timeouts bound the wait.
struct Fresh(Option<Rc<Worker>>);

impl Fresh {
    fn new(w: &Rc<Worker>) -> Self {
        w.metrics.busy.inc();
        Fresh(Some(Rc::clone(w)))
    }

    fn over(&mut self) {
        if let Some(w) = self.0.take() {
            w.metrics.busy.dec();
        }
    }
}

impl Drop for Fresh {
    fn drop(&mut self) {
        self.over();
    }
}

/// Serves one accepted TCP connection on stage `stage` until it closes. Runs as its own
/// task.
pub(crate) async fn serve(worker: Rc<Worker>, stream: TcpStream, peer: SocketAddr, stage: usize) {
    let mut fresh = Fresh::new(&worker);
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
        opened(&worker);
        serve_client(worker, client, fresh).await;
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
            opened(&worker);
            // The rest runs as a task of its own, so that the state of a TLS connection
            // is not part of every plain connection's task (this one is as large as its
            // largest branch).
            if stream.session().alpn_protocol() == Some(b"h2") {
                // HTTP/2 by ALPN (RFC 9113 §3.2); h2 ends it with close_notify itself.
                fresh.over();
                monoio::spawn(async move {
                    h2::serve(&worker, stream, &[], peer.ip(), true, stage).await;
                    worker.metrics.open.dec();
                });
                return;
            }
            let client = Client::new(stream, peer.ip(), true, stage, max_header);
            monoio::spawn(serve_client(worker, client, fresh));
        }
        Err(why) => {
            log::debug!("TLS handshake from {peer} failed: {}", why.as_str());
            m.tls_failures[why as usize].inc();
        }
    }
}

/// Counts a connection ready for requests (plain, or TLS once handshaken) as open.
fn opened(w: &Worker) {
    w.metrics.accepted.inc();
    w.metrics.open.inc();
}

/// Serves requests on `c` until the connection ends, or until it is quiet for its park
/// delay (`io::park::PARK_AFTER` at first, growing for clients of a steady pace) between requests: then it is handed to a [`parked`] task and this one
/// ends, freeing the request state and the buffers.
async fn serve_client<S: Park>(w: Rc<Worker>, mut c: Client<S>, mut fresh: Fresh) {
    let m = &w.metrics;
    // Kept across waits, so that waiting for a request allocates nothing.
    let mut cancel = Canceller::new();
    let upgraded = loop {
        let next = session::run(&w, &mut c).await;
        fresh.over();
        match next {
            // A graceful stop began while the response went out: close now rather than
            // wait for a next request (requests already buffered were pipelined before
            // the stop and are still answered).
            Next::KeepAlive if w.shared.draining() && c.buf.is_empty() => break None,
            Next::KeepAlive => {
                c.served += 1;
                if !c.buf.is_empty() {
                    continue;
                }
                match c
                    .stream
                    .next_bytes(&mut c.buf, c.park_after, &mut cancel)
                    .await
                {
                    Woke::Data => {}
                    Woke::Closed => break None,
                    Woke::Quiet => {
                        c.shed();
                        m.parked.inc();
                        m.parks.inc();
                        monoio::spawn(parked(Rc::clone(&w), c));
                        return;
                    }
                }
            }
            Next::Close => break None,
            Next::Upgrade(up) => break Some(up),
            Next::H2 => {
                h2::serve(&w, c.stream, c.buf.data(), c.ip, false, c.stage).await;
                m.open.dec();
                return;
            }
        }
    };
    if let Some(up) = upgraded {
        m.busy.inc();
        tunnel(c.stream, c.buf, up.stream, up.buf).await;
        m.busy.dec();
    } else if c.linger {
        linger(&mut c).await;
    } else {
        c.stream.close().await;
    }
    m.open.dec();
}

/// A quiet keep-alive connection between requests: only its socket, a few fields and a
/// readiness wait. When the client sends, a new [`serve_client`] task takes it up again;
/// after the rest of the keep-alive timeout it closes.
async fn parked<S: Park>(w: Rc<Worker>, mut c: Client<S>) {
    let rest = w.config.timeouts.keepalive.saturating_sub(c.park_after);
    let since = Instant::now();
    let woke = monoio::time::timeout(rest, c.stream.readable()).await;
    w.metrics.parked.dec();
    if matches!(woke, Ok(Ok(()))) && !w.shared.draining() {
        c.park_after = next_delay(c.park_after, since.elapsed());
        c.unshed();
        // A task of its own: this one stays small, holding only what waits.
        monoio::spawn(serve_client(Rc::clone(&w), c, Fresh(None)));
        return;
    }
    c.stream.close().await;
    w.metrics.open.dec();
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
