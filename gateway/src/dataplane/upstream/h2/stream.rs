//! One request to an HTTP/2 upstream as the exchange sees an upstream connection: a
//! byte stream that takes one HTTP/1.1 request (the head the session wrote becomes the
//! HEADERS, the body, de-chunked, DATA frames sent as the upstream's window allows,
//! chunked trailers a trailing HEADERS) and gives back one HTTP/1.1 response (its
//! HEADERS as a head, its DATA chunked unless a `content-length` says how long, its
//! trailers in the last chunk). So an HTTP/2 upstream goes through the very phases an
//! HTTP/1.1 one does: attempts, retries, the relay, metrics, logs and the kill switch.
//! The mirror of [`crate::dataplane::h2::stream`], which does the same for a client's
//! stream.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use h2::client::ResponseFuture;
use h2::{Reason, RecvStream, SendStream};
use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use monoio::BufResult;
use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut, RawBuf};
use monoio::io::{AsyncReadRent, AsyncWriteRent};

use super::H2Conn;
use crate::dataplane::h1::chunked::{ChunkedDecoder, Piece};
use crate::dataplane::h1::head::MAX_HEADERS;
use crate::dataplane::h1::translate::{self, Framing};

/// How far the request has gone.
enum Req {
    /// Collecting the head the session writes.
    Head(Vec<u8>),
    /// HEADERS went out; body bytes follow, framed as the head said.
    Body(SendStream<Bytes>, ReqBody),
    /// END_STREAM went out.
    Done,
}

enum ReqBody {
    Length(u64),
    Chunked(ChunkedDecoder, Vec<u8>, HeaderMap),
}

/// How far the response has come.
enum Resp {
    /// Waiting for the response HEADERS.
    Head,
    /// Handing out DATA; `chunked` when the head said `transfer-encoding: chunked`.
    Body(RecvStream, bool),
    /// Everything was handed out.
    Done,
}

/// One request's stream to an HTTP/2 upstream.
pub(crate) struct H2Stream {
    conn: Rc<H2Conn>,
    scheme: &'static str,
    req: Req,
    response: Option<ResponseFuture>,
    resp: Resp,
    is_head: bool,
    /// Response bytes not yet read by the exchange, from `pos`.
    pending: Vec<u8>,
    pos: usize,
    /// DATA bytes handed out whose flow-control window is not yet released.
    unreleased: usize,
    /// Longest wait for the upstream's flow-control window to open.
    send_timeout: Duration,
    /// The call's `grpc-status`, once the response headers or trailers carried one.
    grpc_status: Option<u16>,
}

impl std::fmt::Debug for H2Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Stream")
            .field("conn", &self.conn)
            .finish_non_exhaustive()
    }
}

impl H2Stream {
    /// A stream to be opened on `conn` when the request head is written; `tls`: the
    /// connection is `h2` (`:scheme` https) rather than `h2c`.
    pub(crate) fn new(conn: Rc<H2Conn>, tls: bool, send_timeout: Duration) -> H2Stream {
        conn.open.set(conn.open.get() + 1);
        H2Stream {
            conn,
            scheme: if tls { "https" } else { "http" },
            req: Req::Head(Vec::with_capacity(1024)),
            response: None,
            resp: Resp::Head,
            is_head: false,
            pending: Vec::new(),
            pos: 0,
            unreleased: 0,
            send_timeout,
            grpc_status: None,
        }
    }

    /// The `grpc-status` the upstream answered with, if any.
    pub(crate) fn grpc_status(&self) -> Option<u16> {
        self.grpc_status
    }

    /// The TCP socket of the connection the stream is on.
    pub(crate) fn fd(&self) -> std::os::fd::RawFd {
        self.conn.fd
    }

    /// Takes request bytes from the exchange.
    async fn take(&mut self, src: &[u8]) -> io::Result<()> {
        if let Req::Head(held) = &mut self.req {
            held.extend_from_slice(src);
            let Some(rest) = self.open().await? else {
                return Ok(());
            };
            return self.body(&rest).await;
        }
        self.body(src).await
    }

    /// Opens the stream once the head in `Req::Head` is complete; returns the bytes
    /// after it (`None`: incomplete).
    async fn open(&mut self) -> io::Result<Option<Vec<u8>>> {
        let Req::Head(held) = &mut self.req else {
            return Ok(Some(Vec::new()));
        };
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        let len = match parsed.parse(held) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(bad("the request head is not HTTP/1.1")),
        };
        let (request, framing) = translate::request_to_h2(&parsed, self.scheme).map_err(bad)?;
        self.is_head = request.method() == http::Method::HEAD;
        let rest = held[len..].to_vec();
        let mut send = super::ready(&self.conn).await.map_err(h2_io)?;
        let end = matches!(framing, Framing::None | Framing::Length(0));
        let (response, stream) = send.send_request(request, end).map_err(h2_io)?;
        self.response = Some(response);
        self.req = match framing {
            _ if end => Req::Done,
            Framing::Length(n) => Req::Body(stream, ReqBody::Length(n)),
            Framing::Chunked | Framing::None => Req::Body(
                stream,
                ReqBody::Chunked(ChunkedDecoder::new(), Vec::new(), HeaderMap::new()),
            ),
        };
        Ok(Some(rest))
    }

    /// Sends request body bytes.
    async fn body(&mut self, src: &[u8]) -> io::Result<()> {
        let Req::Body(_, body) = &mut self.req else {
            // After END_STREAM nothing more belongs to this request.
            return Ok(());
        };
        match body {
            ReqBody::Length(left) => {
                let n = (*left).min(src.len() as u64) as usize;
                *left -= n as u64;
                let end = *left == 0;
                self.data(&src[..n], end).await
            }
            ReqBody::Chunked(_, held, _) => {
                held.extend_from_slice(src);
                let held = std::mem::take(held);
                let mut at = 0;
                while at < held.len() {
                    let Req::Body(_, ReqBody::Chunked(decoder, _, trailers)) = &mut self.req else {
                        return Ok(());
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
                            self.data(&held[base + range.start..base + range.end], false)
                                .await?;
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
                            let Req::Body(mut send, _) =
                                std::mem::replace(&mut self.req, Req::Done)
                            else {
                                unreachable!("matched above")
                            };
                            return if trailers.is_empty() {
                                send.send_data(Bytes::new(), true)
                            } else {
                                send.send_trailers(trailers)
                            }
                            .map_err(h2_io);
                        }
                    }
                }
                if let Req::Body(_, ReqBody::Chunked(_, keep, _)) = &mut self.req {
                    *keep = held[at..].to_vec();
                }
                Ok(())
            }
        }
    }

    /// Sends `data` as the upstream's window allows (waiting at most `send_timeout`
    /// for it to open), ending the stream after it when `end`.
    async fn data(&mut self, data: &[u8], end: bool) -> io::Result<()> {
        let timeout = self.send_timeout;
        let Req::Body(send, _) = &mut self.req else {
            return Ok(());
        };
        if data.is_empty() {
            if end {
                send.send_data(Bytes::new(), true).map_err(h2_io)?;
                self.req = Req::Done;
            }
            return Ok(());
        }
        let mut data = Bytes::copy_from_slice(data);
        while !data.is_empty() {
            send.reserve_capacity(data.len());
            let granted = monoio::time::timeout(timeout, poll_fn(|cx| send.poll_capacity(cx)))
                .await
                .map_err(|_| {
                    send.send_reset(Reason::CANCEL);
                    io::Error::new(io::ErrorKind::TimedOut, "the upstream's window stayed shut")
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
            send.send_data(chunk, end && data.is_empty())
                .map_err(h2_io)?;
        }
        if end {
            self.req = Req::Done;
        }
        Ok(())
    }

    /// Fills `pending` with the next response bytes; `false` at the end of them.
    async fn next_response_bytes(&mut self) -> io::Result<bool> {
        self.pending.clear();
        self.pos = 0;
        match &mut self.resp {
            Resp::Done => Ok(false),
            Resp::Head => {
                let Some(fut) = self.response.as_mut() else {
                    return Err(bad("no request was sent"));
                };
                let response = poll_fn(|cx| Pin::new(&mut *fut).poll(cx))
                    .await
                    .map_err(h2_io)?;
                self.response = None;
                let (parts, recv) = response.into_parts();
                self.grpc_status = grpc_status(&parts.headers).or(self.grpc_status);
                let code = parts.status.as_u16();
                let no_body = self.is_head || code == 204 || code == 304;
                let framing = translate::write_response_head(
                    &parts,
                    no_body,
                    recv.is_end_stream(),
                    &mut self.pending,
                );
                self.resp = match framing {
                    Framing::None => Resp::Done,
                    Framing::Length(_) => Resp::Body(recv, false),
                    Framing::Chunked => Resp::Body(recv, true),
                };
                Ok(true)
            }
            Resp::Body(recv, chunked) => {
                if self.unreleased > 0 {
                    // The exchange took the last DATA: let the upstream send as much again.
                    let _ = recv.flow_control().release_capacity(self.unreleased);
                    self.unreleased = 0;
                }
                match poll_fn(|cx| recv.poll_data(cx)).await {
                    Some(Ok(data)) => {
                        self.unreleased = data.len();
                        if *chunked {
                            if !data.is_empty() {
                                translate::write_chunk_size(&mut self.pending, data.len());
                                self.pending.extend_from_slice(&data);
                                self.pending.extend_from_slice(b"\r\n");
                            }
                        } else {
                            self.pending.extend_from_slice(&data);
                        }
                        Ok(true)
                    }
                    Some(Err(e)) => Err(h2_io(e)),
                    None if *chunked => {
                        let trailers = poll_fn(|cx| recv.poll_trailers(cx)).await.map_err(h2_io)?;
                        self.pending.extend_from_slice(b"0\r\n");
                        if let Some(t) = trailers {
                            self.grpc_status = grpc_status(&t).or(self.grpc_status);
                            translate::write_trailers(&t, &mut self.pending);
                        }
                        self.pending.extend_from_slice(b"\r\n");
                        self.resp = Resp::Done;
                        Ok(true)
                    }
                    None => {
                        self.resp = Resp::Done;
                        Ok(false)
                    }
                }
            }
        }
    }

    /// Reads response bytes into `dst`; 0 once the response is complete.
    async fn read_into(&mut self, dst: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.pending.len() {
            if !self.next_response_bytes().await? {
                return Ok(0);
            }
        }
        let n = dst.len().min(self.pending.len() - self.pos);
        dst[..n].copy_from_slice(&self.pending[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Drop for H2Stream {
    fn drop(&mut self) {
        // A stream dropped before both ends closed is reset (CANCEL) by h2 itself.
        self.conn.closed_stream();
    }
}

/// The `grpc-status` field's code, if it has a readable one.
fn grpc_status(fields: &HeaderMap) -> Option<u16> {
    fields
        .get("grpc-status")
        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
        .and_then(|v| v.trim().parse().ok())
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

impl AsyncReadRent for H2Stream {
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

impl AsyncWriteRent for H2Stream {
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
