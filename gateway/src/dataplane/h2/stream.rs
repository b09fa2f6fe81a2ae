//! One HTTP/2 stream as the session sees a client: a byte stream that carries one
//! HTTP/1.1 request (the head written from the HEADERS, the DATA frames as its body,
//! chunked when no `content-length` says how long, trailers in the last chunk) and takes
//! one HTTP/1.1 response (its head parsed into a HEADERS frame, its body, de-chunked,
//! into DATA frames sent as flow control allows, its trailers into a trailing HEADERS).
//! So every stream goes through the very phases an HTTP/1.1 request does: routing,
//! assignment, stage variables, the exchange, metrics, logs and the kill switch.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode};
use monoio::BufResult;
use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut, RawBuf};
use monoio::io::{AsyncReadRent, AsyncWriteRent, Split};

use crate::dataplane::h1::chunked::{ChunkedDecoder, Piece};
use crate::dataplane::h1::head::MAX_HEADERS;
use crate::dataplane::h1::translate::{self, Framing};

/// The request, as HTTP/1.1 bytes on their way to the session.
enum Req {
    /// Head and body bytes queued in `Exchange::pending` are handed out; more DATA may
    /// follow.
    Body,
    /// The body is complete (and its last chunk queued, when chunked).
    Done,
}

/// How far the response has come.
enum Resp {
    /// Collecting the head.
    Head,
    /// The head went out as HEADERS; the body follows.
    Body(Body),
    /// The response is complete (END_STREAM sent) or was abandoned.
    Done,
}

enum Body {
    Length(u64),
    Chunked(ChunkedDecoder, HeaderMap),
    UntilClose,
}

/// The sending side of a stream, shared with the watch for the client's reset.
pub(crate) struct Out {
    respond: Option<SendResponse<Bytes>>,
    send: Option<SendStream<Bytes>>,
    /// END_STREAM went out (or the stream was reset by the gateway).
    pub(crate) complete: bool,
}

impl Out {
    /// Ready when the stream ends without having been completed: `true` if the client
    /// reset it, `false` if the connection failed.
    pub(crate) fn poll_reset(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        let polled = match (self.respond.as_mut(), self.send.as_mut()) {
            (Some(r), _) => r.poll_reset(cx),
            (None, Some(s)) => s.poll_reset(cx),
            (None, None) => return Poll::Pending,
        };
        polled.map(|r| r.is_ok())
    }
}

/// One stream, readable and writable by the session.
pub(crate) struct Exchange {
    recv: RecvStream,
    chunked: bool,
    req: Req,
    /// Request bytes not yet read by the session, from `pos`.
    pending: Vec<u8>,
    pos: usize,
    /// DATA bytes handed to the session whose flow-control window is not yet released.
    unreleased: usize,
    pub(crate) out: Rc<RefCell<Out>>,
    resp: Resp,
    /// Response bytes received and not yet understood (a partial head or chunk line).
    held: Vec<u8>,
    is_head: bool,
    /// Longest wait for the client's flow-control window to open.
    send_timeout: Duration,
    /// Response body bytes sent.
    pub(crate) sent: u64,
}

impl Exchange {
    /// The stream of `req`, answered through `respond`. `Err`: the request cannot be
    /// written as HTTP/1.1 (answered already with the status given).
    pub(crate) fn new(
        req: Request<RecvStream>,
        respond: SendResponse<Bytes>,
        send_timeout: Duration,
    ) -> Exchange {
        let (parts, recv) = req.into_parts();
        let mut pending = Vec::with_capacity(1024);
        let framing = translate::request_framing(&parts.headers, recv.is_end_stream());
        translate::write_request_head(&parts, framing, &mut pending);
        let req = if framing == Framing::None || recv.is_end_stream() {
            if framing == Framing::Chunked {
                pending.extend_from_slice(b"0\r\n\r\n");
            }
            Req::Done
        } else {
            Req::Body
        };
        Exchange {
            recv,
            chunked: framing == Framing::Chunked,
            req,
            pending,
            pos: 0,
            unreleased: 0,
            out: Rc::new(RefCell::new(Out {
                respond: Some(respond),
                send: None,
                complete: false,
            })),
            resp: Resp::Head,
            held: Vec::new(),
            is_head: parts.method == http::Method::HEAD,
            send_timeout,
            sent: 0,
        }
    }

    /// Fills `pending` with the next request bytes; `false` at the end of them.
    async fn next_request_bytes(&mut self) -> io::Result<bool> {
        if self.unreleased > 0 {
            // The session took the last DATA: let the client send as much again.
            let _ = self.recv.flow_control().release_capacity(self.unreleased);
            self.unreleased = 0;
        }
        self.pending.clear();
        self.pos = 0;
        if matches!(self.req, Req::Done) {
            return Ok(false);
        }
        match poll_fn(|cx| self.recv.poll_data(cx)).await {
            Some(Ok(data)) => {
                self.unreleased = data.len();
                if self.chunked {
                    if data.is_empty() {
                        return Ok(true);
                    }
                    translate::write_chunk_size(&mut self.pending, data.len());
                    self.pending.extend_from_slice(&data);
                    self.pending.extend_from_slice(b"\r\n");
                } else {
                    self.pending.extend_from_slice(&data);
                }
                Ok(true)
            }
            Some(Err(e)) => Err(h2_io(e)),
            None => {
                self.req = Req::Done;
                if self.chunked {
                    let trailers = poll_fn(|cx| self.recv.poll_trailers(cx))
                        .await
                        .map_err(h2_io)?;
                    self.pending.extend_from_slice(b"0\r\n");
                    if let Some(t) = trailers {
                        translate::write_trailers(&t, &mut self.pending);
                    }
                    self.pending.extend_from_slice(b"\r\n");
                    return Ok(true);
                }
                Ok(false)
            }
        }
    }

    /// Reads request bytes into `dst`; 0 once the request is complete and the client
    /// reset the stream (before that, a read after the request waits).
    async fn read_into(&mut self, dst: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.pending.len() {
            if !self.next_request_bytes().await? {
                // The request is whole; the session reads again only if it looks for
                // a next request or for the client going away: report that when the
                // client resets the stream.
                let out = Rc::clone(&self.out);
                poll_fn(|cx| out.borrow_mut().poll_reset(cx)).await;
                return Ok(0);
            }
        }
        let n = dst.len().min(self.pending.len() - self.pos);
        dst[..n].copy_from_slice(&self.pending[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }

    /// Takes response bytes from the session.
    async fn take(&mut self, src: &[u8]) -> io::Result<()> {
        let mut src = src;
        loop {
            match &mut self.resp {
                Resp::Head => {
                    self.held.extend_from_slice(src);
                    src = &[];
                    if !self.head()? {
                        return Ok(());
                    }
                    // The rest of `held` is body.
                    let rest = std::mem::take(&mut self.held);
                    if !rest.is_empty() {
                        self.body(&rest).await?;
                    }
                    if src.is_empty() {
                        return Ok(());
                    }
                }
                Resp::Body(_) => return self.body(src).await,
                // After the end, nothing more belongs to this stream.
                Resp::Done => return Ok(()),
            }
        }
    }

    /// Parses the response head in `held`; sends it (and informational heads) as
    /// HEADERS. `Ok(true)` once the final head went out, leaving the body in `held`.
    fn head(&mut self) -> io::Result<bool> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut parsed = httparse::Response::new(&mut headers);
            let len = match parsed.parse(&self.held) {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) => return Ok(false),
                Err(_) => return Err(bad("the response head is not HTTP/1.1")),
            };
            let code = parsed.code.unwrap_or(0);
            let status = StatusCode::from_u16(code).map_err(|_| bad("invalid status"))?;
            let (map, framing) = translate::response_headers(parsed.headers);
            let mut response = Response::new(());
            *response.status_mut() = status;
            *response.headers_mut() = map;
            let mut out = self.out.borrow_mut();
            let respond = out.respond.as_mut().ok_or_else(|| bad("answered twice"))?;
            if status.is_informational() {
                self.held.drain(..len);
                if code != 101 {
                    respond.send_informational(response).map_err(h2_io)?;
                }
                continue;
            }
            self.held.drain(..len);
            let body = if self.is_head || code == 204 || code == 304 {
                None
            } else {
                match framing {
                    Framing::Length(0) => None,
                    Framing::Length(n) => Some(Body::Length(n)),
                    Framing::Chunked => {
                        Some(Body::Chunked(ChunkedDecoder::new(), HeaderMap::new()))
                    }
                    Framing::None => Some(Body::UntilClose),
                }
            };
            match body {
                None => {
                    respond.send_response(response, true).map_err(h2_io)?;
                    out.respond = None;
                    out.complete = true;
                    self.resp = Resp::Done;
                }
                Some(body) => {
                    let send = respond.send_response(response, false).map_err(h2_io)?;
                    out.respond = None;
                    out.send = Some(send);
                    self.resp = Resp::Body(body);
                }
            }
            return Ok(true);
        }
    }

    /// Sends body bytes of the response.
    async fn body(&mut self, src: &[u8]) -> io::Result<()> {
        let Resp::Body(body) = &mut self.resp else {
            return Ok(());
        };
        match body {
            Body::UntilClose => self.data(src, false).await,
            Body::Length(left) => {
                let n = (*left).min(src.len() as u64) as usize;
                *left -= n as u64;
                let end = *left == 0;
                if end {
                    self.resp = Resp::Done;
                }
                self.data(&src[..n], end).await
            }
            Body::Chunked(..) => {
                self.held.extend_from_slice(src);
                let held = std::mem::take(&mut self.held);
                let mut at = 0;
                let mut result = Ok(());
                while at < held.len() {
                    let Resp::Body(Body::Chunked(decoder, trailers)) = &mut self.resp else {
                        break;
                    };
                    let p = decoder
                        .decode(&held[at..])
                        .map_err(|_| bad("invalid chunked framing"))?;
                    let base = at;
                    at += p.consumed;
                    match p.piece {
                        None => break,
                        Some(Piece::Size(_)) => {}
                        Some(Piece::Data { range, .. }) => {
                            let r = base + range.start..base + range.end;
                            if let Err(e) = self.data(&held[r], false).await {
                                result = Err(e);
                                break;
                            }
                        }
                        Some(Piece::Trailer { name, value }) => {
                            let name = &held[base + name.start..base + name.end];
                            let value = &held[base + value.start..base + value.end];
                            if let (Ok(n), Ok(v)) =
                                (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
                            {
                                trailers.append(n, v);
                            }
                        }
                        Some(Piece::End) => {
                            let trailers = std::mem::take(trailers);
                            self.resp = Resp::Done;
                            result = self.finish_body(trailers);
                            break;
                        }
                    }
                }
                if matches!(self.resp, Resp::Body(_)) {
                    self.held = held[at..].to_vec();
                }
                result
            }
        }
    }

    /// Ends the body: END_STREAM on an empty DATA frame, or the trailers.
    fn finish_body(&mut self, trailers: HeaderMap) -> io::Result<()> {
        let mut out = self.out.borrow_mut();
        out.complete = true;
        let Some(send) = out.send.as_mut() else {
            return Ok(());
        };
        if trailers.is_empty() {
            send.send_data(Bytes::new(), true).map_err(h2_io)
        } else {
            send.send_trailers(trailers).map_err(h2_io)
        }
    }

    /// Sends `data` as the client's window allows (waiting at most `send_timeout` for
    /// it to open), ending the stream after it when `end`.
    async fn data(&mut self, data: &[u8], end: bool) -> io::Result<()> {
        let timeout = self.send_timeout;
        let out = Rc::clone(&self.out);
        if out.borrow().send.is_none() {
            return Err(bad("no response stream"));
        }
        if end {
            out.borrow_mut().complete = true;
        }
        if data.is_empty() {
            if end {
                with_send(&out, |s| s.send_data(Bytes::new(), true)).map_err(h2_io)?;
            }
            return Ok(());
        }
        let mut data = Bytes::copy_from_slice(data);
        self.sent += data.len() as u64;
        while !data.is_empty() {
            let want = data.len();
            with_send(&out, |s| {
                s.reserve_capacity(want);
                Ok(())
            })
            .map_err(h2_io)?;
            let capacity = poll_fn(|cx| match out.borrow_mut().send.as_mut() {
                Some(s) => s.poll_capacity(cx),
                None => Poll::Ready(None),
            });
            let granted = monoio::time::timeout(timeout, capacity)
                .await
                .map_err(|_| {
                    let _ = with_send(&out, |s| {
                        s.send_reset(Reason::FLOW_CONTROL_ERROR);
                        Ok(())
                    });
                    io::Error::new(io::ErrorKind::TimedOut, "the client's window stayed shut")
                })?;
            let n = match granted {
                Some(Ok(n)) => n,
                Some(Err(e)) => return Err(h2_io(e)),
                None => return Err(io::ErrorKind::BrokenPipe.into()),
            };
            if n == 0 {
                continue;
            }
            let chunk = data.split_to(n.min(data.len()));
            let last = end && data.is_empty();
            with_send(&out, |s| s.send_data(chunk, last)).map_err(h2_io)?;
        }
        Ok(())
    }

    /// After the session: a response the upstream ended by closing ends here; a
    /// response cut short (or never started) resets the stream.
    pub(crate) fn finish(&mut self) {
        let mut out = self.out.borrow_mut();
        out.complete = true;
        match std::mem::replace(&mut self.resp, Resp::Done) {
            Resp::Done => {}
            Resp::Body(Body::UntilClose) => {
                if let Some(send) = out.send.as_mut() {
                    let _ = send.send_data(Bytes::new(), true);
                }
            }
            Resp::Head | Resp::Body(_) => {
                if let Some(r) = out.respond.as_mut() {
                    r.send_reset(Reason::INTERNAL_ERROR);
                } else if let Some(s) = out.send.as_mut() {
                    s.send_reset(Reason::INTERNAL_ERROR);
                }
            }
        }
    }
}

/// Runs `f` on the stream's sending half (an error if it is gone).
fn with_send<T>(
    out: &RefCell<Out>,
    f: impl FnOnce(&mut SendStream<Bytes>) -> Result<T, h2::Error>,
) -> Result<T, h2::Error> {
    match out.borrow_mut().send.as_mut() {
        Some(s) => f(s),
        None => Err(h2::Error::from(Reason::STREAM_CLOSED)),
    }
}

fn bad(why: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

fn h2_io(e: h2::Error) -> io::Error {
    if e.is_io() {
        return e
            .into_io()
            .unwrap_or_else(|| io::ErrorKind::BrokenPipe.into());
    }
    io::Error::new(io::ErrorKind::ConnectionReset, e)
}

// SAFETY: the tunnel of an upgraded connection is the only user of split halves; an
// HTTP/2 stream never upgrades (its request head carries no `Upgrade`). Reads touch
// only the request side of the exchange and writes only the response side.
unsafe impl Split for Exchange {}

impl AsyncReadRent for Exchange {
    async fn read<T: IoBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        // SAFETY: `write_ptr` and `bytes_total` describe the buffer's writable memory,
        // which `buf` owns for this call; `set_init` below marks only what was written.
        let dst = unsafe { std::slice::from_raw_parts_mut(buf.write_ptr(), buf.bytes_total()) };
        let res = self.read_into(dst).await;
        if let Ok(n) = res {
            // SAFETY: `read_into` initialised the first `n` bytes of `dst`.
            unsafe { buf.set_init(n) };
        }
        (res, buf)
    }

    async fn readv<T: IoVecBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        // SAFETY: the raw buffer views the first iovec of `buf`, which outlives it.
        let res = match unsafe { RawBuf::new_from_iovec_mut(&mut buf) } {
            Some(raw) => self.read(raw).await.0,
            None => Ok(0),
        };
        if let Ok(n) = res {
            // SAFETY: `n` bytes of the first iovec were written.
            unsafe { buf.set_init(n) };
        }
        (res, buf)
    }
}

impl AsyncWriteRent for Exchange {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        // SAFETY: `read_ptr` and `bytes_init` describe the buffer's initialised bytes,
        // owned by `buf` for this call.
        let src = unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) };
        let res = self.take(src).await.map(|()| src.len());
        (res, buf)
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        // SAFETY: the raw buffer views the first iovec of `buf`, which outlives it.
        let res = match unsafe { RawBuf::new_from_iovec(&buf) } {
            Some(raw) => self.write(raw).await.0,
            None => Ok(0),
        };
        (res, buf)
    }

    async fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        Ok(())
    }
}
