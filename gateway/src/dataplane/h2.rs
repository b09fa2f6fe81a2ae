//! HTTP/2 client connections (RFC 9113), by the `h2` crate (hyper's implementation: it
//! has the fixes for rapid reset, CVE-2023-44487, and the 2024 CONTINUATION flood, and
//! is fuzzed upstream), driven on the worker through a poll adapter ([`io`]). Each
//! stream is one request through the very phases of an HTTP/1.1 request: it is handed
//! to [`session::run`] as an HTTP/1.1 exchange ([`stream`], [`crate::dataplane::h1::translate`]), so routing,
//! assignment, stage variables, the upstream exchange (HTTP/1.1 upstreams, bodies
//! streamed both ways), metrics, logs and the kill switch are the same code.
//!
//! Limits: `h2_max_concurrent_streams`, a header list no larger than
//! `max_header_bytes`, a 4 KiB HPACK table, 1 MiB stream and 2 MiB connection windows
//! (so a body is not slowed to 64 KiB per round trip), at most 256 KiB buffered per
//! stream toward a slow client, which must open its window within `send_timeout`. The
//! crate answers abuse (resets before the gateway took a stream, too many streams it
//! had to reset, a CONTINUATION flood, oversized header blocks) with GOAWAY
//! ENHANCE_YOUR_CALM; on top, a client that resets more than [`MAX_CLIENT_RESETS`]
//! streams and more than half of its streams is sent away the same way, and so is one
//! that floods PING, SETTINGS or empty DATA frames without asking for anything
//! ([`crate::dataplane::io::poll::flood`]; pings and SETTINGS are answered one at a time as the client reads, so a
//! client that does not read is bounded by the socket's buffers anyway).

pub(crate) mod stream;

use std::cell::Cell;
use std::net::IpAddr;
use std::pin::pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::Reason;
use h2::server::SendResponse;
use http::Request;

use self::stream::Exchange;
use super::io::Stream;
use super::io::poll::PollIo;
use super::session::{self, Client};
use super::worker::Worker;
use crate::metrics::H2Failure;

/// Streams a client may reset before the connection is closed as abusive, once they are
/// also more than half of its streams.
const MAX_CLIENT_RESETS: u64 = 200;

/// How often the connection looks at the stop flag and its idle time.
const TICK: Duration = Duration::from_millis(500);

/// Serves one HTTP/2 connection until it closes. `read`: bytes already read from it (the
/// preface of an h2c client).
pub(crate) async fn serve<S: Stream>(
    w: &Rc<Worker>,
    stream: S,
    read: &[u8],
    ip: IpAddr,
    https: bool,
    stage: usize,
) {
    let cfg = &w.config;
    let m = &w.metrics;
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(cfg.limits.h2_max_concurrent_streams)
        .max_header_list_size(cfg.limits.max_header_bytes as u32)
        .header_table_size(4096)
        .initial_window_size(1 << 20)
        .initial_connection_window_size(2 << 20)
        .max_send_buffer_size(256 * 1024)
        .max_pending_accept_reset_streams(20)
        .max_local_error_reset_streams(Some(256));
    let flood = Rc::new(Cell::new(false));
    let handshake =
        builder.handshake::<_, Bytes>(PollIo::new(stream, read, Some(Rc::clone(&flood))));
    let mut conn = match monoio::time::timeout(cfg.timeouts.header, handshake).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            log::debug!("HTTP/2 handshake from {ip} failed: {e}");
            m.h2_failures[H2Failure::Handshake as usize].inc();
            return;
        }
        Err(_) => {
            m.h2_failures[H2Failure::Handshake as usize].inc();
            return;
        }
    };
    m.h2_connections.inc();
    let state = Rc::new(ConnState::default());
    let mut streams = 0u64;
    let mut idle_since = Instant::now();
    let mut closing = false;
    let mut tick = pin!(monoio::time::sleep(TICK));
    // Streams the client reset keep their task until the upstream answered: past this
    // many tasks no new stream is taken (the connection is still driven, so the others
    // go on), which bounds the work a rapid-reset client can cause.
    let max_tasks = u64::from(cfg.limits.h2_max_concurrent_streams) * 2;
    loop {
        // Ready once the reader saw a control-frame flood (it stops reading and wakes
        // this task), until the connection is closing.
        let flooded = std::future::poll_fn(|_| {
            if flood.get() && !closing {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        });
        let next = if state.tasks.get() < max_tasks {
            monoio::select! {
                r = conn.accept() => Some(r),
                () = &mut tick => None,
                () = flooded => None,
            }
        } else {
            monoio::select! {
                r = std::future::poll_fn(|cx| conn.poll_closed(cx)) => Some(r.err().map(Err)),
                () = &mut tick => None,
                () = flooded => None,
            }
        };
        match next {
            Some(Some(Ok((req, respond)))) => {
                streams += 1;
                m.h2_streams.inc();
                state.tasks.set(state.tasks.get() + 1);
                let task = serve_stream(
                    Rc::clone(w),
                    Rc::clone(&state),
                    req,
                    respond,
                    ip,
                    https,
                    stage,
                );
                monoio::spawn(task);
                let resets = state.resets.get();
                if !closing && resets > MAX_CLIENT_RESETS && resets * 2 > streams {
                    log::debug!("HTTP/2 client {ip} reset {resets} of {streams} streams");
                    m.h2_failures[H2Failure::Abuse as usize].inc();
                    conn.abrupt_shutdown(Reason::ENHANCE_YOUR_CALM);
                    closing = true;
                }
            }
            Some(Some(Err(e))) => {
                log::debug!("HTTP/2 connection from {ip} ended: {e}");
                m.h2_failures[failure(&e) as usize].inc();
                break;
            }
            Some(None) => break,
            None if flood.get() && !closing => {
                log::debug!("HTTP/2 client {ip} flooded control frames");
                m.h2_failures[H2Failure::Abuse as usize].inc();
                conn.abrupt_shutdown(Reason::ENHANCE_YOUR_CALM);
                closing = true;
            }
            None => {
                tick.as_mut().reset((Instant::now() + TICK).into());
                if conn.has_streams() {
                    idle_since = Instant::now();
                }
                if !closing
                    && (w.shared.draining() || idle_since.elapsed() >= cfg.timeouts.keepalive)
                {
                    // GOAWAY: streams in flight finish, no new one starts.
                    conn.graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

/// What the connection's stream tasks share with it.
#[derive(Default)]
struct ConnState {
    /// Stream tasks running.
    tasks: Cell<u64>,
    /// Streams the client reset before their response was complete.
    resets: Cell<u64>,
}

/// What kind of end an `h2` connection error is.
fn failure(e: &h2::Error) -> H2Failure {
    if e.is_io() {
        return H2Failure::Io;
    }
    match e.reason() {
        Some(Reason::ENHANCE_YOUR_CALM) => H2Failure::Abuse,
        _ => H2Failure::Protocol,
    }
}

/// One stream through the session; a reset by the client is counted as it arrives
/// (the session then ends at its next write).
async fn serve_stream(
    w: Rc<Worker>,
    state: Rc<ConnState>,
    req: Request<h2::RecvStream>,
    mut respond: SendResponse<Bytes>,
    ip: IpAddr,
    https: bool,
    stage: usize,
) {
    if req.method() == http::Method::CONNECT {
        // CONNECT tunnels (and RFC 8441 extended CONNECT) are not proxied.
        let mut refused = http::Response::new(());
        *refused.status_mut() = http::StatusCode::METHOD_NOT_ALLOWED;
        let _ = respond.send_response(refused, true);
    } else {
        let exchange = Exchange::new(req, respond, w.config.timeouts.send);
        let out = Rc::clone(&exchange.out);
        let max_header = w.config.limits.max_header_bytes;
        let mut client = Client::new(exchange, ip, https, stage, max_header);
        client.h2 = true;
        {
            let mut run = pin!(session::run(&w, &mut client));
            let mut watch = pin!(std::future::poll_fn(|cx| out.borrow_mut().poll_reset(cx)));
            let finished = monoio::select! {
                _ = &mut run => true,
                by_client = &mut watch => {
                    if by_client && !out.borrow().complete {
                        w.metrics.h2_client_resets.inc();
                        state.resets.set(state.resets.get() + 1);
                    }
                    false
                },
            };
            if !finished {
                let _ = run.await;
            }
        }
        client.stream.finish();
    }
    state.tasks.set(state.tasks.get() - 1);
}
