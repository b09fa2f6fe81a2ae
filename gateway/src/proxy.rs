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

use crate::runtime::Worker;
use crate::upstream::UpConn;
use buf::{InBuf, flush};
use error::{ProxyError, write_error_response};
use head::{BodyKind, Forwarding, Parsed, RequestHead, Version, parse_request};
use relay::{RelayError, relay_body, tunnel};
use response::{ResponseHead, parse_response};

/// Initial capacity of the per-connection output buffer (heads and small bodies).
const OUT_CAPACITY: usize = 32 * 1024;

/// A client connection and the buffers it keeps for its whole life.
struct Client {
    stream: TcpStream,
    ip: IpAddr,
    buf: InBuf,
    out: Vec<u8>,
    served: u64,
}

/// What happens to the client connection after a request.
enum Next {
    KeepAlive,
    Close,
    Upgrade(UpConn),
}

/// Per-request state, from parsed head to the final [`record`].
struct RequestCtx {
    start: Instant,
    variant: Option<Variant>,
    status: u16,
    upstream_head: Option<Duration>,
    bytes_in: u64,
    bytes_out: u64,
    request_done: bool,
    response_started: bool,
}

/// Serves one accepted connection until it closes. Runs as its own task on the worker.
pub async fn serve(worker: Rc<Worker>, stream: TcpStream, peer: SocketAddr) {
    let m = &worker.metrics;
    m.accepted.inc();
    m.open.inc();
    // Small heads must not wait for Nagle; failure only costs latency.
    let _ = stream.set_nodelay(true);
    let cfg = &worker.config;
    let mut client = Client {
        stream,
        ip: peer.ip(),
        buf: InBuf::new(cfg.limits.max_header_bytes.max(16 * 1024) + 1),
        out: Vec::with_capacity(OUT_CAPACITY),
        served: 0,
    };
    let upgraded = loop {
        match serve_request(&worker, &mut client).await {
            Next::KeepAlive => client.served += 1,
            Next::Close => break None,
            Next::Upgrade(up) => break Some(up),
        }
    };
    if let Some(up) = upgraded {
        tunnel(client.stream, client.buf, up.stream, up.buf).await;
    }
    m.open.dec();
}

/// One request: head, proxying, error answer if needed, record.
async fn serve_request(w: &Worker, c: &mut Client) -> Next {
    let head = match read_head(w, c).await {
        Ok(Some(head)) => head,
        Ok(None) => return Next::Close,
        Err(e) => {
            if let Some(kind) = e.reject_kind() {
                w.metrics.rejected[kind as usize].inc();
            }
            log::debug!("rejected request from {}: {e}", c.ip);
            answer_error(w, c, &e, None, true).await;
            return Next::Close;
        }
    };
    let mut ctx = RequestCtx {
        start: Instant::now(),
        variant: None,
        status: 0,
        upstream_head: None,
        bytes_in: head.head_len as u64,
        bytes_out: 0,
        request_done: head.body == BodyKind::None,
        response_started: false,
    };
    let result = proxy_request(w, c, &head, &mut ctx).await;
    let next = match result {
        Ok(next) => next,
        Err(e) => {
            log::debug!("request from {} failed: {e}", c.ip);
            if ctx.response_started || e.status().is_none() {
                Next::Close
            } else {
                let close = !(e.keeps_client() && ctx.request_done && head.keep_alive);
                ctx.status = e.status().map_or(0, |s| s.0);
                ctx.bytes_out += answer_error(w, c, &e, ctx.variant, close).await;
                if close { Next::Close } else { Next::KeepAlive }
            }
            .with_error(w, &ctx, &e)
        }
    };
    record(w, &ctx);
    next
}

/// Phase 1: reads until a complete head is buffered and parses it, writing the upstream
/// head into `c.out`. `Ok(None)`: the client closed or idled out between requests.
async fn read_head(w: &Worker, c: &mut Client) -> Result<Option<RequestHead>, ProxyError> {
    let cfg = &w.config;
    // The first head must arrive within the header timeout of the accept; later ones
    // may wait for the keep-alive timeout, then get the header timeout once started.
    let mut deadline = (c.served == 0).then(|| Instant::now() + cfg.timeouts.header);
    loop {
        if !c.buf.is_empty() {
            let fwd = Forwarding { client_ip: c.ip };
            match parse_request(c.buf.data(), cfg.limits.max_header_bytes, fwd, &mut c.out)? {
                Parsed::Complete(head) => {
                    c.buf.consume(head.head_len);
                    return Ok(Some(head));
                }
                Parsed::Partial => {
                    deadline.get_or_insert_with(|| Instant::now() + cfg.timeouts.header);
                }
            }
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

    let mut variant = w.picker.borrow_mut().pick(&w.split);
    if !w.upstreams.has_endpoints(variant) {
        variant = Variant::Stable;
    }
    ctx.variant = Some(variant);
    let vm = w.metrics.variant(variant);
    vm.requests.inc();

    let retryable = head.idempotent && head.body == BodyKind::None;
    let mut attempt = 0;
    let (mut up, resp) = loop {
        let Some(endpoint) = w.upstreams.next_endpoint(variant) else {
            return Err(ProxyError::Connect(std::io::ErrorKind::NotFound.into()));
        };
        match exchange_head(w, c, head, ctx, variant, endpoint).await {
            Ok(done) => break done,
            Err(e) if retryable && attempt == 0 && e.upstream_failure().is_some() => {
                log::debug!("retrying after {e} from {}", w.upstreams.addr(endpoint));
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
    let timeout = w.config.timeouts.response;
    let body = relay_body(
        &mut up.stream,
        &mut up.buf,
        &mut c.stream,
        &mut c.out,
        resp.body,
        resp.dechunk,
        timeout,
        0,
    )
    .await
    .map_err(|e| match e {
        RelayError::DstIo => ProxyError::ClientGone(std::io::ErrorKind::BrokenPipe.into()),
        RelayError::SrcTimeout => ProxyError::ResponseTimeout,
        RelayError::Framing(_) => ProxyError::BadResponse("invalid chunked body"),
        RelayError::SrcClosed | RelayError::SrcIo | RelayError::TooLarge => {
            ProxyError::UpstreamClosed("upstream closed the connection mid-body")
        }
    })?;
    ctx.bytes_out += body;
    if resp.reusable {
        w.upstreams.put(up);
    }
    Ok(if resp.close_client {
        Next::Close
    } else {
        Next::KeepAlive
    })
}

/// Phase 3-4: connection from the pool (or a new one), request head and body out,
/// response head in (interim 1xx responses forwarded or skipped).
async fn exchange_head(
    w: &Worker,
    c: &mut Client,
    head: &RequestHead,
    ctx: &mut RequestCtx,
    variant: Variant,
    endpoint: usize,
) -> Result<(UpConn, ResponseHead), ProxyError> {
    let vm = w.metrics.variant(variant);
    let mut up = w.upstreams.get(endpoint).await?;
    if up.reused {
        vm.upstream_reuses.inc();
    } else {
        vm.upstream_connects.inc();
    }

    if head.body == BodyKind::None {
        // Kept in `c.out` so a retry can send it again.
        let out = std::mem::take(&mut c.out);
        let (res, out) = up.stream.write_all(out).await;
        c.out = out;
        res.map_err(|_| ProxyError::UpstreamClosed("upstream closed before the request was sent"))?;
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
        let n = relay_body(
            &mut c.stream,
            &mut c.buf,
            &mut up.stream,
            &mut c.out,
            head.body,
            false,
            timeout,
            limit,
        )
        .await
        .map_err(|e| match e {
            RelayError::SrcClosed | RelayError::SrcIo => {
                ProxyError::ClientGone(std::io::ErrorKind::UnexpectedEof.into())
            }
            RelayError::SrcTimeout => ProxyError::ClientBodyTimeout,
            RelayError::DstIo => {
                ProxyError::UpstreamClosed("upstream closed while receiving the body")
            }
            RelayError::Framing(_) => ProxyError::BadRequest("invalid chunked body"),
            RelayError::TooLarge => ProxyError::BodyTooLarge,
        })?;
        ctx.bytes_in += n;
        ctx.request_done = true;
    }

    let variant_header = w
        .config
        .variant_header
        .as_deref()
        .map(|name| (name, variant.as_str()));
    loop {
        if !up.buf.is_empty()
            && let Some(resp) = parse_response(up.buf.data(), head, variant_header, &mut c.out)?
        {
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
            return Ok((up, resp));
        }
        if up.buf.is_full() {
            return Err(ProxyError::BadResponse("response head too large"));
        }
        match monoio::time::timeout(w.config.timeouts.response, up.buf.fill(&mut up.stream)).await {
            Err(_) => return Err(ProxyError::ResponseTimeout),
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
    /// Counts `e` against the request's variant before the final record.
    fn with_error(self, w: &Worker, ctx: &RequestCtx, e: &ProxyError) -> Next {
        match (ctx.variant, e.upstream_failure(), e.reject_kind()) {
            (Some(v), Some(kind), _) => w.metrics.variant(v).upstream_failures[kind as usize].inc(),
            (_, None, Some(kind)) => w.metrics.rejected[kind as usize].inc(),
            _ => {}
        }
        self
    }
}

/// Phase 6, the one place every routed request is counted: status class, bytes and
/// latency for its variant.
fn record(w: &Worker, ctx: &RequestCtx) {
    let Some(variant) = ctx.variant else { return };
    let vm = w.metrics.variant(variant);
    if (100..600).contains(&ctx.status) {
        vm.responses[usize::from(ctx.status / 100 - 1)].inc();
    }
    vm.bytes_in.add(ctx.bytes_in);
    vm.bytes_out.add(ctx.bytes_out);
    if let Some(d) = ctx.upstream_head {
        vm.upstream_latency.record(d.as_micros() as u64);
    }
    vm.total_latency
        .record(ctx.start.elapsed().as_micros() as u64);
}
