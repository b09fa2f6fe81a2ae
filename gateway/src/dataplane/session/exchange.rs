//! Phases 4-6 of a routed request: choose an endpoint, take a connection (pooled or
//! new), send the request head and body, read the response head (forwarding or skipping
//! interim 1xx responses), then relay the response body. A failed attempt goes to
//! [`policy::decide`], whose answer is the only place a retry, a resend or a failover to
//! stable is chosen. What happens is written into the [`Outcome`]; nothing is counted.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Instant;

use gateway_common::Variant;
use monoio::io::AsyncWriteRentExt;

use super::policy::{self, Attempts, Retry};
use super::{Client, Next};
use crate::dataplane::error::ProxyError;
use crate::dataplane::h1::ParseError;
use crate::dataplane::h1::head::{BodyKind, Version};
use crate::dataplane::h1::response::{ResponseHead, parse_response};
use crate::dataplane::io::Stream;
use crate::dataplane::io::buf::flush;
use crate::dataplane::io::relay::{BodySpec, Ends, RelayError, relay_body};
use crate::dataplane::record;
use crate::dataplane::request::{FailedOver, Outcome, RequestCtx};
use crate::dataplane::upstream::UpConn;
use crate::dataplane::upstream::health::Observed;
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
    out.status = resp.status;
    record::settle_attempts(w, ctx, out);
    out.upstream_head = Some(ctx.start.elapsed());
    out.bytes_out += c.out.len() as u64;
    if resp.upgraded {
        flush(&mut c.out, &mut c.stream)
            .await
            .map_err(ProxyError::ClientGone)?;
        return Ok(Next::Upgrade(up));
    }
    out.response_started = true;
    relay_response(w, c, &mut up, &resp, out).await?;
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
/// the connection, the head and the index of the endpoint in the serving plan.
async fn attempts<S: Stream>(
    w: &Worker,
    c: &mut Client<S>,
    ctx: &mut RequestCtx,
    out: &mut Outcome,
) -> Result<(UpConn, ResponseHead, usize), ProxyError> {
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
                out.saw(ctx.variant, index, Observed::Answered(resp.status));
                return Ok((up, resp, index));
            }
            Err(e) => e,
        };
        let decision = policy::decide(&e, &ctx.head, ctx.variant, !c.alt.is_empty(), used);
        if decision != Retry::Again
            && let Some(seen) = observed(&e)
        {
            out.saw(ctx.variant, index, seen);
        }
        let tally = out.tally(ctx.variant);
        tally.eventful = true;
        if decision != Retry::Again
            && let Some(kind) = e.upstream_failure()
        {
            tally.failures[kind as usize] += 1;
        }
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
/// the request out, the response head in. A pooled connection that fails before any
/// response byte is [`ProxyError::Stale`].
async fn attempt<S: Stream>(
    w: &Worker,
    c: &mut Client<S>,
    ctx: &RequestCtx,
    out: &mut Outcome,
    endpoint: SocketAddr,
    fresh: bool,
) -> Result<(UpConn, ResponseHead), ProxyError> {
    let tls = ctx.plan().tls.as_deref();
    let pooled = if fresh {
        None
    } else {
        w.upstreams
            .pooled(endpoint, ctx.variant, tls.map_or(0, |t| t.id))
    };
    let mut up = match pooled {
        Some(up) => up,
        None => w.upstreams.connect(endpoint, ctx.variant, tls).await?,
    };
    let tally = out.tally(ctx.variant);
    if up.reused {
        tally.reuses += 1;
    } else {
        tally.connects += 1;
    }
    let refused_body = send_request(w, c, ctx, out, &mut up).await?;
    let resp = read_response_head(w, c, ctx, &mut up, refused_body).await?;
    Ok((up, resp))
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
async fn read_response_head<S: Stream>(
    w: &Worker,
    c: &mut Client<S>,
    ctx: &RequestCtx,
    up: &mut UpConn,
    refused_body: bool,
) -> Result<ResponseHead, ProxyError> {
    let variant_header = w
        .config
        .variant_header
        .as_deref()
        .map(|name| (name, ctx.variant.as_str()));
    // Any response byte (even of a 1xx) means the upstream took the request.
    let mut answered = false;
    // The client connection closes after this response, and the response says so, when
    // the rest of the request body was never read, or when a graceful stop began while
    // the upstream worked.
    let mut head = ctx.head;
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
            let resp = ResponseHead {
                reusable: resp.reusable && !refused_body,
                ..resp
            };
            return Ok(resp);
        }
        if up.buf.is_full() {
            return Err(ProxyError::bad_response("response head too large"));
        }
        match monoio::time::timeout(w.config.timeouts.response, up.buf.fill(&mut up.stream)).await {
            Err(_) => return Err(ProxyError::ResponseTimeout),
            // A TLS upstream that refuses the session after the handshake (TLS 1.3
            // servers check a client certificate only then) says why in an alert.
            Ok(Err(e)) if !up.reused && crate::dataplane::tls::is_alert(&e) => {
                log::warn!("upstream {} ended the TLS session: {e}", up.addr);
                return Err(ProxyError::UpstreamTls(
                    "upstream refused the TLS session with an alert (a client certificate it wants?)",
                ));
            }
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

/// Streams the response body to the client after its head (pending in `c.out`).
async fn relay_response<S: Stream>(
    w: &Worker,
    c: &mut Client<S>,
    up: &mut UpConn,
    resp: &ResponseHead,
    out: &mut Outcome,
) -> Result<(), ProxyError> {
    let head_bytes = c.out.len() as u64;
    let body = relay_body(
        Ends {
            src: &mut up.stream,
            src_buf: &mut up.buf,
            dst: &mut c.stream,
            out: &mut c.out,
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
