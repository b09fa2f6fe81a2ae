//! One accepted client connection, from accept to close: the top of the data plane.
//! Sets the TCP socket up (options, kernel accounting tag), then runs request after
//! request through [`session::run`]; after the last one it tunnels an upgraded
//! connection or closes lingering.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;

use super::io::Stream;
use super::io::relay::tunnel;
use super::io::socket;
use super::session::{self, Client, Next};
use super::worker::Worker;

/// Serves one accepted TCP connection on stage `stage` until it closes. Runs as its own
/// task.
pub(crate) async fn serve(worker: Rc<Worker>, stream: TcpStream, peer: SocketAddr, stage: usize) {
    // Small heads must not wait for Nagle; failure only costs latency.
    let _ = stream.set_nodelay(true);
    socket::set_send_timeout(&stream, worker.config.timeouts.send);
    // Kernel accounting: this socket counts as downstream.
    crate::kernel::tag_downstream(&stream);
    let client = Client::new(
        stream,
        peer.ip(),
        stage,
        worker.config.limits.max_header_bytes,
    );
    serve_client(&worker, client).await;
}

/// Serves requests on `c` until the connection ends.
async fn serve_client<S: Stream>(w: &Worker, mut c: Client<S>) {
    let m = &w.metrics;
    m.accepted.inc();
    m.open.inc();
    let upgraded = loop {
        match session::run(w, &mut c).await {
            // A graceful stop began while the response went out: close now rather than
            // wait for a next request (requests already buffered were pipelined before
            // the stop and are still answered).
            Next::KeepAlive if w.shared.draining() && c.buf.is_empty() => break None,
            Next::KeepAlive => c.served += 1,
            Next::Close => break None,
            Next::Upgrade(up) => break Some(up),
        }
    };
    if let Some(up) = upgraded {
        m.busy.inc();
        tunnel(c.stream, c.buf, up.stream, up.buf).await;
        m.busy.dec();
    } else if c.linger {
        linger(&mut c).await;
    }
    m.open.dec();
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
