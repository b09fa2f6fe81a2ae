//! One request's phases, in the order they run:
//! read head -> route -> choose variant -> [`exchange`] (choose endpoint, send, read the
//! response head, relay the body; on failure the [`policy`] decides) -> answer.
//!
//! Each phase borrows the [`Client`] (the connection and its reused buffers) and the one
//! [`RequestCtx`] made when the head was routed, and writes what happened into the one
//! [`Outcome`]. [`run`] is the single exit: it lends them to [`record`], which
//! alone turns it into metrics, the kill-switch window and the access log, and returns
//! what the connection does next. Nothing here counts anything.
//!
//! The session is generic over the client stream ([`Stream`]): plain TCP today, TLS or
//! an HTTP/2 stream when those layers wrap it.

pub(crate) mod exchange;
pub(crate) mod policy;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use gateway_common::Variant;

use super::accesslog::Inline;
use super::assign::assign;
use super::error::ProxyError;
use super::h1::ParseError;
use super::h1::head::{BodyKind, Forwarding, MAX_HEADERS, Rewrite, is_grpc, parse, write_upstream};
use super::h1::response::{write_error_response, write_grpc_error};
use super::io::Stream;
use super::io::buf::{InBuf, flush};
use super::io::park::{PARK_AFTER, Park};
use super::record;
use super::request::{Outcome, RequestCtx};
use super::route::snapshot::{Plan, RouteSnap};
use super::upstream::UpConn;
use super::worker::Worker;

/// The first line of the HTTP/2 connection preface; an HTTP/1 parser would refuse it
/// (`HTTP/2.0`) once it has these bytes, so they are looked for first.
const PREFACE_LINE: &[u8] = b"PRI * HTTP/2.0\r\n";

/// gRPC status code UNIMPLEMENTED: the call is not served here.
const GRPC_UNIMPLEMENTED: u8 = 12;

/// Initial capacity of the per-connection output buffer (heads and small bodies).
const OUT_CAPACITY: usize = 32 * 1024;

/// A client connection and the buffers it keeps for its whole life.
pub(crate) struct Client<S> {
    pub(crate) stream: S,
    pub(crate) ip: IpAddr,
    /// `ip` as text, for `X-Forwarded-For`.
    fwd: Forwarding,
    /// Index of the stage (listener) the connection arrived on.
    pub(crate) stage: usize,
    pub(crate) buf: InBuf,
    out: Vec<u8>,
    /// The stable deployment's version of the upstream head, written beside `out` for
    /// canary requests that may fail over to stable (`retry_on_stable`); else empty.
    alt: Vec<u8>,
    /// Requests answered on this connection so far.
    pub(crate) served: u64,
    /// The connection closes while the client may still be sending (a refused or
    /// unread body, a rejected head): close it lingering.
    pub(crate) linger: bool,
    /// The request came as an HTTP/2 stream (written as HTTP/1.1 for the phases).
    pub(crate) h2: bool,
    /// The stage takes HTTP/2 with prior knowledge on this plain connection (h2c).
    pub(crate) h2c: bool,
    /// How long it may be quiet between requests before it is parked (`io::park`).
    pub(crate) park_after: Duration,
}

impl<S: Stream> Client<S> {
    /// A connection from `ip` on stage `stage`, with read buffers for heads of up to
    /// `max_header_bytes`.
    pub(crate) fn new(
        stream: S,
        ip: IpAddr,
        https: bool,
        stage: usize,
        max_header_bytes: usize,
    ) -> Self {
        Client {
            stream,
            ip,
            fwd: Forwarding::new(ip, https),
            stage,
            buf: InBuf::new(max_header_bytes.max(16 * 1024) + 1),
            out: Vec::with_capacity(OUT_CAPACITY),
            alt: Vec::new(),
            served: 0,
            linger: false,
            h2: false,
            h2c: false,
            park_after: PARK_AFTER,
        }
    }
}

impl<S: Park> Client<S> {
    /// Frees the buffers while the connection waits between requests (nothing is
    /// buffered then); [`Client::unshed`] gets them back.
    pub(crate) fn shed(&mut self) {
        self.buf.release();
        self.out = Vec::new();
        self.alt = Vec::new();
        self.stream.shed();
    }

    /// Makes ready for the next request after [`Client::shed`] (the read buffer comes
    /// back with the first read).
    pub(crate) fn unshed(&mut self) {
        self.out.reserve(OUT_CAPACITY);
    }
}

/// What happens to the client connection after a request.
pub(crate) enum Next {
    KeepAlive,
    Close,
    /// Both sides agreed to switch protocols: tunnel bytes to this upstream connection.
    Upgrade(UpConn),
    /// The connection began with the HTTP/2 preface (h2c with prior knowledge): serve it
    /// as HTTP/2 from the bytes in the read buffer.
    H2,
}

/// Serves the next request on `c`: its phases in order, then [`record`] (a rejection or
/// the routed request's outcome), then the response's last bytes. Returns what the
/// connection does next. The context and outcome live in this frame and are lent to
/// every phase and to `record`, never moved.
pub(crate) async fn run<S: Stream>(w: &Worker, c: &mut Client<S>) -> Next {
    let mut ctx = match read_head(w, c).await {
        Ok(Some(ctx)) => ctx,
        Ok(None) if c.h2c && c.served == 0 && c.buf.data().starts_with(PREFACE_LINE) => {
            return Next::H2;
        }
        Ok(None) => return Next::Close,
        Err(e) => return reject(w, c, &e).await,
    };
    let mut out = Outcome::new(&ctx.head);
    record::begin(w, &ctx);
    let next = match exchange::proxy(w, c, &mut ctx, &mut out).await {
        Ok(next) => next,
        Err(e) => {
            let next = fail(w, c, &ctx, &mut out, &e).await;
            // Whatever an unanswered failure left (an upstream head, a partial
            // response) is not for the client.
            c.out.clear();
            next
        }
    };
    record::finish(w, &ctx, &mut out);
    // The response's last bytes go out only now, so its figures are in place by the
    // time the client has all of it.
    if flush(&mut c.out, &mut c.stream).await.is_err() {
        return Next::Close;
    }
    next
}

/// A head refused before a route was chosen (malformed, no route, too slow): answered,
/// then recorded.
async fn reject<S: Stream>(w: &Worker, c: &mut Client<S>, e: &ProxyError) -> Next {
    log::debug!("rejected request from {}: {e}", c.ip);
    let keep = matches!(e, ProxyError::NoRoute);
    answer_error(w, c, e, None, !keep).await;
    record::rejected(w, e.reject_kind());
    if keep {
        Next::KeepAlive
    } else {
        c.linger = true;
        Next::Close
    }
}

/// The request failed with `e`: answer it if the response has not started, and note
/// the failure for `record`.
async fn fail<S: Stream>(
    w: &Worker,
    c: &mut Client<S>,
    ctx: &RequestCtx,
    out: &mut Outcome,
    e: &ProxyError,
) -> Next {
    log::debug!("request from {} failed: {e}", c.ip);
    out.connect_failed = e.is_connect_failure();
    out.failure = e.upstream_failure();
    out.reject = if out.failure.is_none() {
        e.reject_kind()
    } else {
        None
    };
    if out.response_started || e.status().is_none() {
        return Next::Close;
    }
    let close = !(e.keeps_client() && out.request_done && ctx.head.keep_alive);
    c.linger |= close && !out.request_done;
    out.status = e.status().map_or(0, |s| s.0);
    out.bytes_out += answer_error(w, c, e, Some(ctx.variant), close).await;
    if close { Next::Close } else { Next::KeepAlive }
}

/// Phase 1: reads until a complete head is buffered, then routes it. `Ok(None)`: the
/// client closed or idled out between requests.
async fn read_head<S: Stream>(
    w: &Worker,
    c: &mut Client<S>,
) -> Result<Option<RequestCtx>, ProxyError> {
    let cfg = &w.config;
    // The first head must arrive within the header timeout of the accept; later ones
    // may wait for the keep-alive timeout, then get the header timeout once started.
    let mut deadline = (c.served == 0).then(|| Instant::now() + cfg.timeouts.header);
    loop {
        let data = c.buf.data();
        // The connection preface of HTTP/2 (RFC 9113 §3.4), or the start of it: not
        // HTTP/1, and not for the HTTP/1 parser.
        let preface = c.h2c && c.served == 0 && !data.is_empty() && {
            let n = data.len().min(PREFACE_LINE.len());
            data[..n] == PREFACE_LINE[..n]
        };
        if preface && data.len() >= PREFACE_LINE.len() {
            return Ok(None);
        }
        if !c.buf.is_empty() && !preface {
            if let Some(ctx) = route(w, c)? {
                c.buf.consume(ctx.head.head_len);
                return Ok(Some(ctx));
            }
            deadline.get_or_insert_with(|| Instant::now() + cfg.timeouts.header);
        }
        if c.buf.is_full() {
            return Err(ProxyError::Parse(ParseError::HeadTooLarge));
        }
        let wait = deadline.map_or(cfg.timeouts.keepalive, |d| {
            d.saturating_duration_since(Instant::now())
        });
        match monoio::time::timeout(wait, c.buf.fill(&mut c.stream)).await {
            Err(_) if deadline.is_some() && (!c.buf.is_empty() || c.served == 0) => {
                return Err(ProxyError::HeadTimeout);
            }
            Err(_) | Ok(Ok(0) | Err(_)) => return Ok(None),
            Ok(Ok(_)) => {}
        }
    }
}

/// Phases 2-3, synchronous over the read buffer: parse the head, find the route, choose
/// the variant (forced, sticky or random) and write the upstream head into `c.out` (and
/// stable's into `c.alt` when the canary may fail over). `Ok(None)`: incomplete.
fn route<S: Stream>(w: &Worker, c: &mut Client<S>) -> Result<Option<RequestCtx>, ProxyError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let Some(req) = parse(c.buf.data(), w.config.limits.max_header_bytes, &mut headers)? else {
        return Ok(None);
    };
    let snap = w.snapshot();
    let stage = &snap.stages[c.stage];
    let Some(route_idx) = stage.find(req.host, req.path.as_bytes()) else {
        // The head is consumed so the connection can go on (the body, if any, cannot be
        // skipped safely, so then it closes).
        let close = req.head.body != BodyKind::None || !req.head.keep_alive;
        c.buf.consume(req.head.head_len);
        return Err(if close {
            ProxyError::NoRouteClose
        } else {
            ProxyError::NoRoute
        });
    };
    let route = &stage.routes[route_idx];
    let chosen = assign(route, req.headers, c.ip, &mut w.picker.borrow_mut());
    let (plan, variant) = route.plan(chosen);
    if !plan.protocol.is_h2() && is_grpc(req.headers) {
        // gRPC needs HTTP/2 end to end; the call, body and all, ends here and the
        // connection (or HTTP/2 stream) with it.
        c.buf.consume(req.head.head_len);
        return Err(ProxyError::GrpcNeedsHttp2);
    }
    write_upstream(&req, &rewrite(route, plan), &c.fwd, &mut c.out);
    c.alt.clear();
    if variant == Variant::Canary
        && route.retry_on_stable
        && req.head.idempotent
        && req.head.body == BodyKind::None
    {
        let (stable, _) = route.plan(Variant::Stable);
        write_upstream(&req, &rewrite(route, stable), &c.fwd, &mut c.alt);
    }
    let log = w.log.is_some().then(|| {
        (
            Inline::new(req.method.as_bytes()),
            Inline::new(req.path.as_bytes()),
        )
    });
    let mut head = req.head;
    if w.shared.draining() {
        // Shutting down: this response says `Connection: close` and ends the connection.
        head.keep_alive = false;
    }
    Ok(Some(RequestCtx {
        start: Instant::now(),
        snap,
        stage: c.stage,
        route: route_idx,
        variant,
        head,
        h2: c.h2,
        log,
    }))
}

/// How `route` and the deployment's `plan` change a request on its way upstream.
fn rewrite<'a>(route: &RouteSnap, plan: &'a Plan) -> Rewrite<'a> {
    let strip = if route.strip_path_prefix && route.path_prefix != "/" {
        route.path_prefix.len()
    } else {
        0
    };
    Rewrite {
        path_prefix: &plan.path_prefix,
        strip,
        headers: &plan.headers,
        fallback_host: plan.endpoints.first().map(|e| e.addr),
    }
}

/// Sends the gateway's own response for `e`; returns the bytes written.
async fn answer_error<S: Stream>(
    w: &Worker,
    c: &mut Client<S>,
    e: &ProxyError,
    variant: Option<Variant>,
    close: bool,
) -> u64 {
    let Some((status, reason)) = e.status() else {
        return 0;
    };
    let variant_header = w
        .config
        .variant_header
        .as_deref()
        .zip(variant)
        .map(|(name, v)| (name, v.as_str()));
    c.out.clear();
    if matches!(e, ProxyError::GrpcNeedsHttp2) {
        write_grpc_error(
            &mut c.out,
            GRPC_UNIMPLEMENTED,
            e.detail(),
            close,
            variant_header,
        );
    } else {
        write_error_response(
            &mut c.out,
            status,
            reason,
            e.detail(),
            close,
            variant_header,
        );
    }
    let n = c.out.len() as u64;
    if flush(&mut c.out, &mut c.stream).await.is_err() {
        return 0;
    }
    n
}
