//! One client connection, request after request, top to bottom:
//! accept -> parse head -> pick variant -> upstream pool -> relay -> record.
//!
//! Each phase is a function below, in that order. A [`RequestCtx`] is created when a head
//! has been parsed and is passed down the phases; [`record`] is the one place where every
//! request, successful or not, is counted. Buffers belong to the connection and are reused
//! for every request on it, so the steady state allocates nothing.

pub mod buf;
pub mod chunked;
pub mod error;
pub mod head;
pub mod relay;
pub mod response;

use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use gateway_common::Variant;
use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;

use crate::accesslog::{Inline, Record};
use crate::control::{Held, Plan, RouteSnap};
use crate::runtime::Worker;
use crate::select::assign::assign;
use crate::upstream::UpConn;
use buf::{InBuf, flush};
use error::{ProxyError, write_error_response};
use head::{
    BodyKind, Forwarding, MAX_HEADERS, RequestHead, Rewrite, Version, parse, write_upstream,
};
use relay::{BodySpec, Ends, RelayError, relay_body, tunnel};
use response::{ResponseHead, parse_response};

/// Initial capacity of the per-connection output buffer (heads and small bodies).
const OUT_CAPACITY: usize = 32 * 1024;

/// A client connection and the buffers it keeps for its whole life.
struct Client {
    stream: TcpStream,
    ip: IpAddr,
    /// `ip` as text, for `X-Forwarded-For`.
    fwd: Forwarding,
    /// Index of the stage (listener) the connection arrived on.
    stage: usize,
    buf: InBuf,
    out: Vec<u8>,
    /// The stable deployment's version of the upstream head, written beside `out` for
    /// canary requests that may fail over to stable (`retry_on_stable`); else empty.
    alt: Vec<u8>,
    served: u64,
    /// The connection closes while the client may still be sending (a refused or
    /// unread body, a rejected head): close it lingering (see [`linger`]).
    linger: bool,
}

/// What happens to the client connection after a request.
enum Next {
    KeepAlive,
    Close,
    Upgrade(UpConn),
}

/// A parsed request with its route and variant chosen and its upstream head written.
struct Routed {
    head: RequestHead,
    snap: Rc<Held>,
    route: usize,
    variant: Variant,
    log: Option<(Inline<16>, Inline<256>)>,
}

/// Per-request state, from parsed head to the final [`record`].
struct RequestCtx {
    start: Instant,
    snap: Option<Rc<Held>>,
    stage: usize,
    route: usize,
    upstream: Option<SocketAddr>,
    log: Option<(Inline<16>, Inline<256>)>,
    variant: Option<Variant>,
    status: u16,
    upstream_head: Option<Duration>,
    bytes_in: u64,
    bytes_out: u64,
    request_done: bool,
    response_started: bool,
    /// The upstream could not be connected to (counted by the canary kill switch).
    connect_failed: bool,
}

impl RequestCtx {
    fn route(&self) -> Option<&RouteSnap> {
        self.snap
            .as_ref()
            .map(|s| &*s.stages[self.stage].routes[self.route])
    }
}

/// Serves one accepted connection on stage `stage` until it closes. Runs as its own task.
pub async fn serve(worker: Rc<Worker>, stream: TcpStream, peer: SocketAddr, stage: usize) {
    let m = &worker.metrics;
    m.accepted.inc();
    m.open.inc();
    // Small heads must not wait for Nagle; failure only costs latency.
    let _ = stream.set_nodelay(true);
    crate::socket::set_send_timeout(&stream, worker.config.timeouts.send);
    // Kernel accounting: this socket counts as downstream.
    crate::kernel::tag_downstream(&stream);
    let cfg = &worker.config;
    let mut client = Client {
        stream,
        ip: peer.ip(),
        fwd: Forwarding::new(peer.ip()),
        stage,
        buf: InBuf::new(cfg.limits.max_header_bytes.max(16 * 1024) + 1),
        out: Vec::with_capacity(OUT_CAPACITY),
        alt: Vec::new(),
        served: 0,
        linger: false,
    };
    let upgraded = loop {
        match serve_request(&worker, &mut client).await {
            // A graceful stop began while the response went out: close now rather than
            // wait for a next request (requests already buffered were pipelined before
            // the stop and are still answered).
            Next::KeepAlive if worker.shared.draining() && client.buf.is_empty() => {
                break None;
            }
            Next::KeepAlive => client.served += 1,
            Next::Close => break None,
            Next::Upgrade(up) => break Some(up),
        }
    };
    if let Some(up) = upgraded {
        m.busy.inc();
        tunnel(client.stream, client.buf, up.stream, up.buf).await;
        m.busy.dec();
    } else if client.linger {
        linger(&mut client).await;
    }
    m.open.dec();
}

/// One request: head, proxying, error answer if needed, record.
async fn serve_request(w: &Worker, c: &mut Client) -> Next {
    let routed = match read_head(w, c).await {
        Ok(Some(routed)) => routed,
        Ok(None) => return Next::Close,
        Err(e) => {
            if let Some(kind) = e.reject_kind() {
                w.metrics.rejected[kind as usize].inc();
            }
            log::debug!("rejected request from {}: {e}", c.ip);
            let keep = matches!(e, ProxyError::NoRoute);
            answer_error(w, c, &e, None, !keep).await;
            return if keep {
                Next::KeepAlive
            } else {
                c.linger = true;
                Next::Close
            };
        }
    };
    let mut head = routed.head;
    if w.shared.draining() {
        // Shutting down: this response says `Connection: close` and ends the connection.
        head.keep_alive = false;
    }
    w.metrics.busy.inc();
    let mut ctx = RequestCtx {
        start: Instant::now(),
        snap: Some(routed.snap),
        stage: c.stage,
        route: routed.route,
        upstream: None,
        log: routed.log,
        variant: Some(routed.variant),
        status: 0,
        upstream_head: None,
        bytes_in: head.head_len as u64,
        bytes_out: 0,
        request_done: head.body == BodyKind::None,
        response_started: false,
        connect_failed: false,
    };
    let result = proxy_request(w, c, &head, &mut ctx).await;
    let next = match result {
        Ok(next) => next,
        Err(e) => {
            log::debug!("request from {} failed: {e}", c.ip);
            ctx.connect_failed = is_connect_failure(&e);
            if ctx.response_started || e.status().is_none() {
                Next::Close
            } else {
                let close = !(e.keeps_client() && ctx.request_done && head.keep_alive);
                c.linger |= close && !ctx.request_done;
                ctx.status = e.status().map_or(0, |s| s.0);
                ctx.bytes_out += answer_error(w, c, &e, ctx.variant, close).await;
                if close { Next::Close } else { Next::KeepAlive }
            }
            .with_error(w, &ctx, &e)
        }
    };
    record(w, &ctx);
    w.metrics.busy.dec();
    next
}

/// Phase 1: reads until a complete head is buffered, parses it, picks its route and
/// variant, and writes the upstream head into `c.out`. `Ok(None)`: the client closed or
/// idled out between requests.
async fn read_head(w: &Worker, c: &mut Client) -> Result<Option<Routed>, ProxyError> {
    let cfg = &w.config;
    // The first head must arrive within the header timeout of the accept; later ones
    // may wait for the keep-alive timeout, then get the header timeout once started.
    let mut deadline = (c.served == 0).then(|| Instant::now() + cfg.timeouts.header);
    loop {
        if !c.buf.is_empty() {
            if let Some(routed) = route_request(w, c)? {
                c.buf.consume(routed.head.head_len);
                return Ok(Some(routed));
            }
            deadline.get_or_insert_with(|| Instant::now() + cfg.timeouts.header);
        }
        if c.buf.is_full() {
            return Err(ProxyError::HeadTooLarge);
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

/// Phases 2-3, synchronous over the read buffer: parse the head, find the route, pick the
/// variant (forced, sticky or random) and write the upstream head. `Ok(None)`: incomplete.
fn route_request(w: &Worker, c: &mut Client) -> Result<Option<Routed>, ProxyError> {
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
        let len = req.head.head_len;
        c.buf.consume(len);
        return Err(if close {
            ProxyError::NoRouteClose
        } else {
            ProxyError::NoRoute
        });
    };
    let route = &stage.routes[route_idx];
    let (variant, _) = assign(route, req.headers, c.ip, &mut w.picker.borrow_mut());
    let (plan, variant) = route.plan(variant);
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
    let head = req.head;
    Ok(Some(Routed {
        head,
        snap,
        route: route_idx,
        variant,
        log,
    }))
}

/// Longest a lingering close keeps reading, and longest it waits for one read.
const LINGER_TIME: Duration = Duration::from_secs(10);
const LINGER_IDLE: Duration = Duration::from_secs(2);

/// Closes a connection whose client may still be sending (nginx's and Apache's
/// "lingering close"): stop writing (FIN after the answer), then read and discard what
/// arrives until the client closes, goes quiet for [`LINGER_IDLE`], or [`LINGER_TIME`]
/// passes. Closing with unread bytes at once would reset the connection, and a client
/// still writing its request would fail on that reset before reading the answer.
async fn linger(c: &mut Client) {
    use monoio::io::AsyncWriteRent as _;
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

/// The upstream could not be connected to (in time).
fn is_connect_failure(e: &ProxyError) -> bool {
    matches!(
        e.upstream_failure(),
        Some(
            crate::metrics::UpstreamFailure::Connect
                | crate::metrics::UpstreamFailure::ConnectTimeout
        )
    )
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
        fallback_host: plan.endpoints.first().copied(),
    }
}

/// Phases 2-5: pick a variant, get an upstream connection, send the request, relay the
/// response. Retries once, on the next endpoint, when the request is idempotent, has no
/// body and the upstream failed before answering.
async fn proxy_request(
    w: &Worker,
    c: &mut Client,
    head: &RequestHead,
    ctx: &mut RequestCtx,
) -> Result<Next, ProxyError> {
    let limit = w.config.limits.max_body_bytes;
    if let BodyKind::Length(n) = head.body
        && limit > 0
        && n > limit
    {
        return Err(ProxyError::BodyTooLarge);
    }

    let Some(mut variant) = ctx.variant else {
        return Err(ProxyError::NoRoute);
    };
    let snap = ctx.snap.clone().ok_or(ProxyError::NoRoute)?;
    let route = &snap.stages[ctx.stage].routes[ctx.route];
    let (mut plan, _) = route.plan(variant);
    let mut vm = route.metrics.slot(w.id, variant);
    vm.requests.inc();
    vm.in_flight.inc();

    let retryable = head.idempotent && head.body == BodyKind::None;
    let mut attempt = 0;
    // After a stale pooled connection: the same endpoint again, on a new connection.
    let mut resend: Option<SocketAddr> = None;
    let mut stale_resent = false;
    let (mut up, resp) = loop {
        let Some(endpoint) = resend.take().or_else(|| {
            w.upstreams
                .next_endpoint(route.id, variant, &plan.endpoints)
        }) else {
            return Err(ProxyError::Connect(std::io::ErrorKind::NotFound.into()));
        };
        ctx.upstream = Some(endpoint);
        match exchange_head(w, c, head, ctx, route, variant, endpoint, stale_resent).await {
            Ok(done) => break done,
            // The upstream had closed the pooled connection while it was idle (its
            // keep-alive timeout, a restart) and the close showed only now. Sending again
            // is safe when the request never reached it, or when it is idempotent (RFC
            // 9110 §9.2.2); either way only without a body, which is not kept.
            Err(ProxyError::Stale { sent })
                if !stale_resent && head.body == BodyKind::None && (!sent || head.idempotent) =>
            {
                log::debug!("pooled connection to {endpoint} was closed; sending again");
                vm.stale_retries.inc();
                stale_resent = true;
                resend = Some(endpoint);
            }
            Err(e)
                if variant == Variant::Canary
                    && !c.alt.is_empty()
                    && e.upstream_failure().is_some() =>
            {
                // `retry_on_stable`: the canary failed before answering; stable answers
                // instead, with the head written for it. The canary is charged with the
                // failure as if it had answered 502 (metrics, judge, kill switch).
                log::debug!("canary {endpoint} failed ({e}); sending the request to stable");
                if let Some(kind) = e.upstream_failure() {
                    vm.upstream_failures[kind as usize].inc();
                }
                let now = Instant::now();
                let canary_us = now.duration_since(ctx.start).as_micros() as u64;
                settle(w, route, variant, 502, is_connect_failure(&e), canary_us);
                std::mem::swap(&mut c.out, &mut c.alt);
                c.alt.clear();
                variant = Variant::Stable;
                plan = route.plan(variant).0;
                vm = route.metrics.slot(w.id, variant);
                vm.requests.inc();
                vm.in_flight.inc();
                vm.retries.inc();
                ctx.variant = Some(variant);
                ctx.start = now;
                ctx.upstream_head = None;
            }
            Err(e) if retryable && attempt == 0 && e.upstream_failure().is_some() => {
                log::debug!("retrying after {e} from {endpoint}");
                if let Some(kind) = e.upstream_failure() {
                    vm.upstream_failures[kind as usize].inc();
                }
                vm.retries.inc();
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    };
    ctx.status = resp.status;
    ctx.upstream_head = Some(ctx.start.elapsed());
    ctx.bytes_out += c.out.len() as u64;

    if resp.upgraded {
        flush(&mut c.out, &mut c.stream)
            .await
            .map_err(ProxyError::ClientGone)?;
        return Ok(Next::Upgrade(up));
    }
    ctx.response_started = true;
    let head_bytes = c.out.len() as u64;
    let timeout = w.config.timeouts.response;
    let body = relay_body(
        Ends {
            src: &mut up.stream,
            src_buf: &mut up.buf,
            dst: &mut c.stream,
            out: &mut c.out,
        },
        BodySpec {
            kind: resp.body,
            dechunk: resp.dechunk,
            read_timeout: timeout,
            limit: 0,
        },
    )
    .await
    .map_err(|e| match e {
        RelayError::DstIo => ProxyError::ClientGone(std::io::ErrorKind::BrokenPipe.into()),
        RelayError::SrcTimeout => ProxyError::ResponseTimeout,
        RelayError::Framing { sent, .. } => {
            if !sent {
                // Nothing of this response reached the client: it gets a 502 instead.
                ctx.response_started = false;
                ctx.bytes_out -= head_bytes;
            }
            ProxyError::BadResponse("invalid chunked body")
        }
        RelayError::SrcClosed | RelayError::SrcIo | RelayError::TooLarge => {
            ProxyError::UpstreamClosed("upstream closed the connection mid-body")
        }
    })?;
    ctx.bytes_out += body;
    if resp.reusable {
        w.upstreams.put(up, resp.idle_timeout_s);
    }
    Ok(if resp.close_client {
        Next::Close
    } else {
        Next::KeepAlive
    })
}

/// Phase 3-4: connection from the pool (or a new one when `fresh`), request head and
/// body out, response head in (interim 1xx responses forwarded or skipped). A pooled
/// connection that fails before any response byte is [`ProxyError::Stale`].
#[expect(
    clippy::too_many_arguments,
    reason = "the phase's inputs are distinct borrows; the layers issue gives them a context"
)]
async fn exchange_head(
    w: &Worker,
    c: &mut Client,
    head: &RequestHead,
    ctx: &mut RequestCtx,
    route: &RouteSnap,
    variant: Variant,
    endpoint: SocketAddr,
    fresh: bool,
) -> Result<(UpConn, ResponseHead), ProxyError> {
    let vm = route.metrics.slot(w.id, variant);
    let mut up = w.upstreams.get(endpoint, variant, fresh).await?;
    // Any response byte (even of a 1xx) means the upstream took the request.
    let mut answered = false;
    if up.reused {
        vm.upstream_reuses.inc();
    } else {
        vm.upstream_connects.inc();
    }

    let mut refused_body = false;
    if head.body == BodyKind::None {
        // Kept in `c.out` so a retry can send it again.
        let out = std::mem::take(&mut c.out);
        let (res, out) = up.stream.write_all(out).await;
        c.out = out;
        if res.is_err() {
            return Err(if up.reused {
                ProxyError::Stale { sent: false }
            } else {
                ProxyError::UpstreamClosed("upstream closed before the request was sent")
            });
        }
    } else {
        if head.expect_continue && c.buf.is_empty() {
            let (res, _) = c
                .stream
                .write_all(&b"HTTP/1.1 100 Continue\r\n\r\n"[..])
                .await;
            res.map_err(ProxyError::ClientGone)?;
        }
        let limit = w.config.limits.max_body_bytes;
        let timeout = w.config.timeouts.response;
        let sent = relay_body(
            Ends {
                src: &mut c.stream,
                src_buf: &mut c.buf,
                dst: &mut up.stream,
                out: &mut c.out,
            },
            BodySpec {
                kind: head.body,
                dechunk: false,
                read_timeout: timeout,
                limit,
            },
        )
        .await;
        match sent {
            Ok(n) => {
                ctx.bytes_in += n;
                ctx.request_done = true;
            }
            // The upstream stopped taking the body: it may have answered already (a 413
            // or 401 before reading an upload), and that answer is what the client
            // should see. Read on; without a response head this is a 502 below.
            Err(RelayError::DstIo) => {
                refused_body = true;
                c.linger = true;
            }
            Err(e) => {
                return Err(match e {
                    RelayError::SrcClosed | RelayError::SrcIo => {
                        ProxyError::ClientGone(std::io::ErrorKind::UnexpectedEof.into())
                    }
                    RelayError::SrcTimeout => ProxyError::ClientBodyTimeout,
                    RelayError::Framing { .. } => ProxyError::BadRequest("invalid chunked body"),
                    RelayError::TooLarge => ProxyError::BodyTooLarge,
                    RelayError::DstIo => {
                        ProxyError::UpstreamClosed("upstream closed while receiving the body")
                    }
                });
            }
        }
    }

    let variant_header = w
        .config
        .variant_header
        .as_deref()
        .map(|name| (name, variant.as_str()));
    // The client connection closes after this response, and the response says so, when
    // the rest of the request body was never read, or when a graceful stop began while
    // the upstream worked.
    let mut head = *head;
    loop {
        if refused_body || w.shared.draining() {
            head.keep_alive = false;
        }
        if !up.buf.is_empty()
            && let Some(resp) = parse_response(up.buf.data(), &head, variant_header, &mut c.out)?
        {
            answered = true;
            if (100..200).contains(&resp.status) && !resp.upgraded {
                if head.version == Version::Http11 && resp.status != 100 {
                    up.buf
                        .write_to(&mut c.stream, resp.head_len)
                        .await
                        .map_err(ProxyError::ClientGone)?;
                } else {
                    up.buf.consume(resp.head_len);
                }
                continue;
            }
            up.buf.consume(resp.head_len);
            let resp = if refused_body {
                ResponseHead {
                    reusable: false,
                    ..resp
                }
            } else {
                resp
            };
            return Ok((up, resp));
        }
        if up.buf.is_full() {
            return Err(ProxyError::BadResponse("response head too large"));
        }
        match monoio::time::timeout(w.config.timeouts.response, up.buf.fill(&mut up.stream)).await {
            Err(_) => return Err(ProxyError::ResponseTimeout),
            Ok(Ok(0) | Err(_)) if refused_body => {
                return Err(ProxyError::UpstreamClosed(
                    "upstream closed while receiving the body",
                ));
            }
            Ok(Ok(0) | Err(_)) if up.reused && !answered && up.buf.is_empty() => {
                return Err(ProxyError::Stale { sent: true });
            }
            Ok(Ok(0) | Err(_)) => {
                return Err(ProxyError::UpstreamClosed(
                    "upstream closed before responding",
                ));
            }
            Ok(Ok(_)) => {}
        }
    }
}

/// Sends the gateway's own response for `e`; returns the bytes written.
async fn answer_error(
    w: &Worker,
    c: &mut Client,
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
    write_error_response(
        &mut c.out,
        status,
        reason,
        e.detail(),
        close,
        variant_header,
    );
    let n = c.out.len() as u64;
    if flush(&mut c.out, &mut c.stream).await.is_err() {
        return 0;
    }
    n
}

impl Next {
    /// Counts `e` against the request's route and variant before the final record.
    fn with_error(self, w: &Worker, ctx: &RequestCtx, e: &ProxyError) -> Next {
        match (
            ctx.route().zip(ctx.variant),
            e.upstream_failure(),
            e.reject_kind(),
        ) {
            (Some((r, v)), Some(kind), _) => {
                r.metrics.slot(w.id, v).upstream_failures[kind as usize].inc();
            }
            (_, None, Some(kind)) => w.metrics.rejected[kind as usize].inc(),
            _ => {}
        }
        self
    }
}

/// Phase 6, the one place every routed request is counted: status class, bytes and
/// latency for its route and variant, and its access-log record.
/// Ends one attempt of `variant` on `route` in the figures: no longer in flight, its
/// status class, its total latency, and (for the canary) the kill switch's window.
fn settle(
    w: &Worker,
    route: &RouteSnap,
    variant: Variant,
    status: u16,
    connect_failed: bool,
    total_us: u64,
) {
    let vm = route.metrics.slot(w.id, variant);
    vm.in_flight.dec();
    if (100..600).contains(&status) {
        vm.responses[usize::from(status / 100 - 1)].inc();
    }
    vm.total_latency.record(total_us);
    if variant == Variant::Canary {
        route
            .kill
            .record(w.id, &route.name, status, connect_failed, &route.split);
    }
}

fn record(w: &Worker, ctx: &RequestCtx) {
    let (Some(route), Some(variant)) = (ctx.route(), ctx.variant) else {
        return;
    };
    let vm = route.metrics.slot(w.id, variant);
    vm.bytes_in.add(ctx.bytes_in);
    vm.bytes_out.add(ctx.bytes_out);
    let upstream_us = ctx.upstream_head.map(|d| d.as_micros() as u64);
    if let Some(us) = upstream_us {
        vm.upstream_latency.record(us);
    }
    let total_us = ctx.start.elapsed().as_micros() as u64;
    settle(w, route, variant, ctx.status, ctx.connect_failed, total_us);
    if let (Some(queue), Some((method, path))) = (&w.log, &ctx.log) {
        let (plan, _) = route.plan(variant);
        let rec = Record {
            time_us: crate::accesslog::now_us(),
            stage: Inline::new(route.stage.as_bytes()),
            route: Inline::new(route.name.as_bytes()),
            deployment: Inline::new(plan.deployment_id.as_bytes()),
            variant,
            method: *method,
            path: *path,
            status: ctx.status,
            upstream: ctx.upstream,
            latency_us: total_us,
            upstream_latency_us: upstream_us,
            bytes_in: ctx.bytes_in,
            bytes_out: ctx.bytes_out,
        };
        if queue.push(rec).is_err() {
            w.metrics.log_dropped.inc();
        }
    }
}
