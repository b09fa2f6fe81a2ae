//! Phases 4-6 of a routed request: choose an endpoint, take a connection (pooled or
//! new), send the request head and body, read the response head (forwarding or skipping
//! interim 1xx responses), then relay the response body. A failed attempt goes to
//! [`policy::decide`], whose answer is the only place a retry, a resend or a failover to
//! stable is chosen. What happens is written into the [`Outcome`]; nothing is counted.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Instant;

use gateway_common::Variant;
use std::cell::Cell;
use std::pin::pin;

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};

use super::policy::{self, Attempts, Retry};
use super::{Client, Next};
use crate::dataplane::error::ProxyError;
use crate::dataplane::h1::ParseError;
use crate::dataplane::h1::head::{BodyKind, Version};
use crate::dataplane::h1::response::{ResponseHead, parse_response};
use crate::dataplane::io::Stream;
use crate::dataplane::io::buf::{InBuf, flush};
use crate::dataplane::io::halves;
use crate::dataplane::io::relay::{BodySpec, Ends, RelayError, relay_body};
use crate::dataplane::record;
use crate::dataplane::request::{FailedOver, Outcome, RequestCtx};
use crate::dataplane::upstream::health::Observed;
use crate::dataplane::upstream::{UpConn, UpStream};
use crate::dataplane::worker::Worker;

/// Sends the routed request upstream and relays the response to the client, all but its
/// last bytes, which stay in `c.out` for [`super::run`] to send once the request is
/// recorded. Returns what the client connection does next.
pub(crate) async fn proxy<S: Stream>(
    w: &Worker,
    c: &mut Client<S>,
    ctx: &mut RequestCtx,
    out: &mut Outcome,
) -> Result<Next, ProxyError> {
    let limit = w.config.limits.max_body_bytes;
    if let BodyKind::Length(n) = ctx.head.body
        && limit > 0
        && n > limit
    {
        return Err(ProxyError::BodyTooLarge);
    }
    let (mut up, resp, endpoint) = attempts(w, c, ctx, out).await?;
    let resp = match resp {
        Some(resp) => {
            answered(w, ctx, out, &resp, c.out.len());
            if resp.upgraded {
                flush(&mut c.out, &mut c.stream)
                    .await
                    .map_err(ProxyError::ClientGone)?;
                return Ok(Next::Upgrade(up));
            }
            let (src, dst) = (
                Up::new(&mut up.stream, &mut up.buf),
                Down::new(&mut c.stream, &mut c.out),
            );
            relay_response(w, src, dst, &resp, out).await?;
            resp
        }
        None => match duplex(w, c, ctx, out, &mut up, endpoint).await {
            Ok(resp) => resp,
            Err(e) => {
                charge(out, ctx.variant, endpoint, &e, false);
                return Err(e);
            }
        },
    };
    if let UpStream::H2(s) = &up.stream {
        out.grpc_status = s.grpc_status();
    }
    if resp.reusable
        && let Some(e) = ctx.plan().endpoints.get(endpoint)
    {
        w.upstreams.put(up, e, resp.idle_timeout_s);
    }
    Ok(if resp.close_client {
        Next::Close
    } else {
        Next::KeepAlive
    })
}

/// The upstream answered with `resp` (its head, `head_len` bytes for the client,
/// pending): the figures of the attempts settle and the response begins.
fn answered(w: &Worker, ctx: &RequestCtx, out: &mut Outcome, resp: &ResponseHead, head_len: usize) {
    out.status = resp.status;
    record::settle_attempts(w, ctx, out);
    out.upstream_head = Some(ctx.start.elapsed());
    out.bytes_out += head_len as u64;
    out.response_started = !resp.upgraded;
}

/// Charges the failure `e` of an attempt on endpoint `index` to `variant`: what outlier
/// detection learns, and the failure's kind; `again`: the request is sent again on a
/// new connection (a stale pooled one), which is neither.
fn charge(out: &mut Outcome, variant: Variant, index: usize, e: &ProxyError, again: bool) {
    if !again && let Some(seen) = observed(e) {
        out.saw(variant, index, seen);
    }
    let tally = out.tally(variant);
    tally.eventful = true;
    if !again && let Some(kind) = e.upstream_failure() {
        tally.failures[kind as usize] += 1;
    }
}

/// What passive outlier detection learns from a failed attempt, if anything.
fn observed(e: &ProxyError) -> Option<Observed> {
    Some(match e {
        ProxyError::Connect(_) | ProxyError::ConnectTimeout => Observed::ConnectFailed,
        ProxyError::UpstreamClosed(_)
        | ProxyError::Stale { .. }
        | ProxyError::Parse(ParseError::BadResponse(_)) => Observed::Reset,
        ProxyError::ResponseTimeout => Observed::Timeout,
        _ => return None,
    })
}

/// Attempts until one gets a final response head, or the policy says to stop. Returns
/// the connection, the head and the index of the endpoint in the serving plan; for a
/// request with a body, as soon as its head went out (no head yet: [`duplex`] follows).
async fn attempts<S: Stream>(
    w: &Worker,
    c: &mut Client<S>,
    ctx: &mut RequestCtx,
    out: &mut Outcome,
) -> Result<(UpConn, Option<ResponseHead>, usize), ProxyError> {
    let mut used = Attempts::default();
    // After a stale pooled connection: the same endpoint again, on a new connection.
    let mut resend: Option<usize> = None;
    // After a failure: a retry goes to another endpoint when the deployment has one.
    let mut failed: Option<usize> = None;
    loop {
        let next = resend.take().or_else(|| {
            let route = ctx.route();
            w.upstreams
                .next_endpoint(route.id, ctx.variant, &ctx.plan().endpoints, failed)
        });
        let Some(index) = next else {
            return Err(ProxyError::NoEndpoint);
        };
        let endpoint = ctx.plan().endpoints[index].addr;
        out.upstream = Some(endpoint);
        let e = match attempt(w, c, ctx, out, endpoint, used.resent).await {
            Ok((up, resp)) => {
                if let Some(r) = &resp {
                    out.saw(ctx.variant, index, Observed::Answered(r.status));
                }
                return Ok((up, resp, index));
            }
            Err(e) => e,
        };
        let decision = policy::decide(&e, &ctx.head, ctx.variant, !c.alt.is_empty(), used);
        charge(out, ctx.variant, index, &e, decision == Retry::Again);
        let tally = out.tally(ctx.variant);
        match decision {
            Retry::Again => {
                log::debug!("pooled connection to {endpoint} was closed; sending again");
                tally.stale_retries += 1;
                used.resent = true;
                resend = Some(index);
            }
            Retry::Next => {
                log::debug!("retrying after {e} from {endpoint}");
                tally.retries += 1;
                used.retried = true;
                failed = Some(index);
            }
            Retry::Stable => {
                // The canary failed before answering; stable answers instead, with the
                // head written for it. The canary is charged with the failure as if it
                // had answered 502 (metrics, judge, kill switch).
                log::debug!("canary {endpoint} failed ({e}); sending the request to stable");
                let now = Instant::now();
                out.failed_over = Some(FailedOver {
                    latency_us: now.duration_since(ctx.start).as_micros() as u64,
                    connect_failed: e.is_connect_failure(),
                });
                std::mem::swap(&mut c.out, &mut c.alt);
                c.alt.clear();
                ctx.variant = Variant::Stable;
                ctx.start = now;
                failed = None;
                out.upstream_head = None;
                let stable = out.tally(Variant::Stable);
                stable.retries += 1;
                stable.eventful = true;
                record::begin_variant(w, ctx);
            }
            Retry::Fail => return Err(e),
        }
    }
}

/// One attempt on `endpoint`: a connection from the pool (or a new one when `fresh`),
/// the request head out, and for a request without a body the response head in. A pooled connection that fails before any
/// response byte is [`ProxyError::Stale`].
async fn attempt<S: Stream>(
    w: &Worker,
    c: &mut Client<S>,
    ctx: &RequestCtx,
    out: &mut Outcome,
    endpoint: SocketAddr,
    fresh: bool,
) -> Result<(UpConn, Option<ResponseHead>), ProxyError> {
    let tls = ctx.plan().tls.as_deref();
    let mut up = if ctx.plan().protocol.is_h2() {
        w.upstreams
            .h2_stream(endpoint, ctx.variant, tls, fresh)
            .await?
    } else {
        let pooled = if fresh {
            None
        } else {
            w.upstreams
                .pooled(endpoint, ctx.variant, tls.map_or(0, |t| t.id))
        };
        match pooled {
            Some(up) => up,
            None => w.upstreams.connect(endpoint, ctx.variant, tls).await?,
        }
    };
    let tally = out.tally(ctx.variant);
    if up.reused {
        tally.reuses += 1;
    } else {
        tally.connects += 1;
    }
    // Full duplex where it is needed most: a bidirectional gRPC stream or any body to
    // an HTTP/2 upstream. Toward HTTP/1.1 the body goes first, the response after it.
    if ctx.head.body != BodyKind::None && ctx.plan().protocol.is_h2() {
        send_head(c, &mut up, false).await?;
        return Ok((up, None));
    }
    let refused_body = send_request(w, c, ctx, out, &mut up).await?;
    let reused = up.reused;
    let resp = read_response_head(
        w,
        ctx,
        Up::new(&mut up.stream, &mut up.buf),
        Down::new(&mut c.stream, &mut c.out),
        reused,
        refused_body,
    )
    .await?;
    Ok((up, Some(resp)))
}

/// Writes the request head from `c.out`, where it stays when `keep` (a request
/// without a body may be sent again after a stale pooled connection).
async fn send_head<S: Stream>(
    c: &mut Client<S>,
    up: &mut UpConn,
    keep: bool,
) -> Result<(), ProxyError> {
    let buf = std::mem::take(&mut c.out);
    let (res, mut buf) = up.stream.write_all(buf).await;
    if res.is_ok() {
        if !keep {
            buf.clear();
        }
        c.out = buf;
        return Ok(());
    }
    c.out = buf;
    Err(if up.reused {
        ProxyError::Stale { sent: false }
    } else {
        ProxyError::UpstreamClosed("upstream closed before the request was sent")
    })
}

/// The exchange of a request with a body, once its head went out: the body streams up
/// while the response head and body come down, so an upstream that answers as it reads
/// (an echo, a bidirectional gRPC stream, a `413` before the upload) is never left
/// waiting for the whole upload, and no side waits for the other's window. The body's
/// last bytes of response stay in `c.out` as for any response.
///
/// Used toward HTTP/2 upstreams. When the upstream stops taking the body (it answered
/// already), the response is still relayed; when the response ends before the upload
/// does, the upload goes on until it ends or the upstream stops taking it, and then the
/// client connection closes lingering (the rest of its body is unread).
async fn duplex<S: Stream>(
    w: &Worker,
    c: &mut Client<S>,
    ctx: &RequestCtx,
    out: &mut Outcome,
    up: &mut UpConn,
    index: usize,
) -> Result<ResponseHead, ProxyError> {
    if ctx.head.expect_continue && c.buf.is_empty() {
        let (res, _) = c
            .stream
            .write_all(&b"HTTP/1.1 100 Continue\r\n\r\n"[..])
            .await;
        res.map_err(ProxyError::ClientGone)?;
    }
    let reused = up.reused;
    let (result, sent) = {
        let Client {
            stream,
            buf,
            out: pending,
            alt,
            ..
        } = c;
        let (mut client_rd, mut client_wr) = halves::split(stream);
        let (mut up_rd, mut up_wr) = halves::split(&mut up.stream);
        // The stable alternative head is never written for a request with a body; its
        // buffer carries the body's small pieces.
        alt.clear();
        let uploaded = Cell::new(false);
        let mut upload = pin!(async {
            let r = relay_body(
                Ends {
                    src: &mut client_rd,
                    src_buf: buf,
                    dst: &mut up_wr,
                    out: alt,
                    bulk: &w.bulk,
                },
                BodySpec {
                    kind: ctx.head.body,
                    dechunk: false,
                    read_timeout: w.config.timeouts.response,
                    limit: w.config.limits.max_body_bytes,
                    hold_last: false,
                },
            )
            .await;
            uploaded.set(true);
            r
        });
        let up_buf = &mut up.buf;
        let mut download = pin!(async {
            let resp = read_response_head(
                w,
                ctx,
                Up::new(&mut up_rd, &mut *up_buf),
                Down::new(&mut client_wr, &mut *pending),
                reused,
                !uploaded.get(),
            )
            .await?;
            out.saw(ctx.variant, index, Observed::Answered(resp.status));
            answered(w, ctx, out, &resp, pending.len());
            if !resp.upgraded {
                relay_response(
                    w,
                    Up::new(&mut up_rd, &mut *up_buf),
                    Down::new(&mut client_wr, &mut *pending),
                    &resp,
                    out,
                )
                .await?;
            }
            Ok::<_, ProxyError>(resp)
        });
        let mut sent: Option<Result<u64, RelayError>> = None;
        let result = loop {
            if sent.is_some() {
                break download.as_mut().await;
            }
            monoio::select! {
                r = upload.as_mut() => match r {
                    Ok(_) | Err(RelayError::DstIo) => sent = Some(r),
                    Err(RelayError::SrcClosed | RelayError::SrcIo) => {
                        break Err(ProxyError::ClientGone(ErrorKind::UnexpectedEof.into()));
                    }
                    Err(RelayError::SrcTimeout) => break Err(ProxyError::ClientBodyTimeout),
                    Err(RelayError::Framing { .. }) => {
                        break Err(ProxyError::bad_request("invalid chunked body"));
                    }
                    Err(RelayError::TooLarge) => break Err(ProxyError::BodyTooLarge),
                },
                r = download.as_mut() => break r,
            }
        };
        if result.is_ok() && sent.is_none() {
            // The response is whole; the upload goes on (a client that sends its whole
            // body before it reads must be able to), until the upstream stops taking it.
            sent = Some(upload.as_mut().await);
        }
        (result, sent)
    };
    let mut resp = result?;
    if let Some(Ok(n)) = sent {
        out.bytes_in += n;
        out.request_done = true;
    } else {
        // The upstream stopped reading the body, or answered before it was whole: the
        // rest of it is never read, so the connection cannot carry another request.
        c.linger = true;
        resp.reusable = false;
        resp.close_client = true;
    }
    Ok(resp)
}

/// Writes the request head (kept in `c.out` so a retry can send it again) and streams the
/// body. `Ok(true)`: the upstream stopped taking the body; it may have answered already
/// (a 413 or 401 before reading an upload), and that answer is what the client should
/// see.
async fn send_request<S: Stream>(
    w: &Worker,
    c: &mut Client<S>,
    ctx: &RequestCtx,
    out: &mut Outcome,
    up: &mut UpConn,
) -> Result<bool, ProxyError> {
    let head = &ctx.head;
    if head.body == BodyKind::None {
        let buf = std::mem::take(&mut c.out);
        let (res, buf) = up.stream.write_all(buf).await;
        c.out = buf;
        return match res {
            Ok(_) => Ok(false),
            Err(_) if up.reused => Err(ProxyError::Stale { sent: false }),
            Err(_) => Err(ProxyError::UpstreamClosed(
                "upstream closed before the request was sent",
            )),
        };
    }
    if head.expect_continue && c.buf.is_empty() {
        let (res, _) = c
            .stream
            .write_all(&b"HTTP/1.1 100 Continue\r\n\r\n"[..])
            .await;
        res.map_err(ProxyError::ClientGone)?;
    }
    let sent = relay_body(
        Ends {
            src: &mut c.stream,
            src_buf: &mut c.buf,
            dst: &mut up.stream,
            out: &mut c.out,
            bulk: &w.bulk,
        },
        BodySpec {
            kind: head.body,
            dechunk: false,
            read_timeout: w.config.timeouts.response,
            limit: w.config.limits.max_body_bytes,
            hold_last: false,
        },
    )
    .await;
    match sent {
        Ok(n) => {
            out.bytes_in += n;
            out.request_done = true;
            Ok(false)
        }
        // Read on; without a response head this is a 502.
        Err(RelayError::DstIo) => {
            c.linger = true;
            Ok(true)
        }
        Err(RelayError::SrcClosed | RelayError::SrcIo) => {
            Err(ProxyError::ClientGone(ErrorKind::UnexpectedEof.into()))
        }
        Err(RelayError::SrcTimeout) => Err(ProxyError::ClientBodyTimeout),
        Err(RelayError::Framing { .. }) => Err(ProxyError::bad_request("invalid chunked body")),
        Err(RelayError::TooLarge) => Err(ProxyError::BodyTooLarge),
    }
}

/// Reads until a final response head is buffered and written for the client into
/// `c.out`. Interim responses are forwarded to HTTP/1.1 clients (except `100 Continue`,
/// which the gateway answered itself) and skipped for HTTP/1.0 ones.
async fn read_response_head<R: AsyncReadRent, W: AsyncWriteRent>(
    w: &Worker,
    ctx: &RequestCtx,
    up: Up<'_, R>,
    down: Down<'_, W>,
    reused: bool,
    unread_body: bool,
) -> Result<ResponseHead, ProxyError> {
    let variant_header = w
        .config
        .variant_header
        .as_deref()
        .map(|name| (name, ctx.variant.as_str()));
    // Any response byte (even of a 1xx) means the upstream took the request.
    let mut answered = false;
    // The client connection closes after this response, and the response says so, when
    // the upstream answers before the request body is all sent (it may never be), or
    // when a graceful stop began while the upstream worked.
    let mut head = ctx.head;
    loop {
        if unread_body || w.shared.draining() {
            head.keep_alive = false;
        }
        if !up.buf.is_empty()
            && let Some(resp) = parse_response(up.buf.data(), &head, variant_header, down.out)?
        {
            answered = true;
            if (100..200).contains(&resp.status) && !resp.upgraded {
                if head.version == Version::Http11 && resp.status != 100 {
                    up.buf
                        .write_to(down.stream, resp.head_len)
                        .await
                        .map_err(ProxyError::ClientGone)?;
                } else {
                    up.buf.consume(resp.head_len);
                }
                continue;
            }
            up.buf.consume(resp.head_len);
            let resp = ResponseHead {
                reusable: resp.reusable && !unread_body,
                ..resp
            };
            return Ok(resp);
        }
        if up.buf.is_full() {
            return Err(ProxyError::bad_response("response head too large"));
        }
        match monoio::time::timeout(w.config.timeouts.response, up.buf.fill(up.stream)).await {
            Err(_) => return Err(ProxyError::ResponseTimeout),
            // A TLS upstream that refuses the session after the handshake (TLS 1.3
            // servers check a client certificate only then) says why in an alert.
            Ok(Err(e)) if !reused && crate::dataplane::tls::is_alert(&e) => {
                log::warn!(
                    "an upstream of route {} ended the TLS session: {e}",
                    ctx.route().name
                );
                return Err(ProxyError::UpstreamTls(
                    "upstream refused the TLS session with an alert (a client certificate it wants?)",
                ));
            }
            Ok(Ok(0) | Err(_)) if unread_body => {
                return Err(ProxyError::UpstreamClosed(
                    "upstream closed while receiving the body",
                ));
            }
            Ok(Ok(0) | Err(_)) if reused && !answered && up.buf.is_empty() => {
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

/// The upstream end of an exchange: its stream (or read half) and its read buffer.
struct Up<'a, R> {
    stream: &'a mut R,
    buf: &'a mut InBuf,
}

impl<'a, R> Up<'a, R> {
    fn new(stream: &'a mut R, buf: &'a mut InBuf) -> Self {
        Up { stream, buf }
    }
}

/// The client end of an exchange: its stream (or write half) and the bytes pending for
/// it.
struct Down<'a, W> {
    stream: &'a mut W,
    out: &'a mut Vec<u8>,
}

impl<'a, W> Down<'a, W> {
    fn new(stream: &'a mut W, out: &'a mut Vec<u8>) -> Self {
        Down { stream, out }
    }
}

/// Streams the response body to the client after its head (pending in `down.out`).
async fn relay_response<R: AsyncReadRent, W: AsyncWriteRent>(
    w: &Worker,
    up: Up<'_, R>,
    down: Down<'_, W>,
    resp: &ResponseHead,
    out: &mut Outcome,
) -> Result<(), ProxyError> {
    let head_bytes = down.out.len() as u64;
    let body = relay_body(
        Ends {
            src: up.stream,
            src_buf: up.buf,
            dst: down.stream,
            out: down.out,
            bulk: &w.bulk,
        },
        BodySpec {
            kind: resp.body,
            dechunk: resp.dechunk,
            read_timeout: w.config.timeouts.response,
            limit: 0,
            hold_last: true,
        },
    )
    .await
    .map_err(|e| match e {
        RelayError::DstIo => ProxyError::ClientGone(ErrorKind::BrokenPipe.into()),
        RelayError::SrcTimeout => ProxyError::ResponseTimeout,
        RelayError::Framing { sent, .. } => {
            if !sent {
                // Nothing of this response reached the client: it gets a 502 instead.
                out.response_started = false;
                out.bytes_out -= head_bytes;
            }
            ProxyError::bad_response("invalid chunked body")
        }
        RelayError::SrcClosed | RelayError::SrcIo | RelayError::TooLarge => {
            ProxyError::UpstreamClosed("upstream closed the connection mid-body")
        }
    })?;
    out.bytes_out += body;
    Ok(())
}
