//! Moving bodies: from the client to the upstream and back, streamed through the
//! connection's own buffers, never held whole, whatever their size.
//!
//! Small pieces are appended to the pending head so a small message goes out in one
//! write; larger ones are written straight from the read buffer. Chunked bodies are
//! checked by [`ChunkedDecoder`] as they pass, and de-chunked for HTTP/1.0 clients.

use std::time::Duration;

use monoio::io::{AsyncWriteRent, Splitable};
use monoio::net::TcpStream;

use super::buf::{InBuf, flush};
use super::chunked::{ChunkError, ChunkedDecoder};
use super::head::BodyKind;

/// Pieces up to this size are coalesced with pending bytes into one write.
const COALESCE: usize = 16 * 1024;

/// Why a body relay stopped early.
#[derive(Debug)]
pub enum RelayError {
    /// The sender closed its connection before the body ended.
    SrcClosed,
    /// The sender stopped sending for longer than the timeout.
    SrcTimeout,
    /// Reading from the sender failed.
    SrcIo,
    /// Writing to the receiver failed.
    DstIo,
    /// The chunked framing is invalid.
    Framing(ChunkError),
    /// The body is larger than the limit.
    TooLarge,
}

/// Streams one body of kind `body` from `src` (bytes already in `src_buf` first) to
/// `dst`, after the bytes pending in `out` (usually the head). `limit` caps the body's
/// data size (0 = none); `dechunk` forwards only chunk data. Returns the body bytes read.
#[expect(
    clippy::too_many_arguments,
    reason = "the relay's inputs are all distinct borrows"
)]
pub async fn relay_body(
    src: &mut TcpStream,
    src_buf: &mut InBuf,
    dst: &mut TcpStream,
    out: &mut Vec<u8>,
    body: BodyKind,
    dechunk: bool,
    read_timeout: Duration,
    limit: u64,
) -> Result<u64, RelayError> {
    let mut remaining = match body {
        BodyKind::Length(n) => n,
        _ => 0,
    };
    let mut decoder = ChunkedDecoder::new();
    let mut total: u64 = 0;
    loop {
        let avail = src_buf.data();
        let (take, done) = match body {
            BodyKind::None => (0, true),
            BodyKind::Length(_) => {
                let take = (avail.len() as u64).min(remaining) as usize;
                remaining -= take as u64;
                (take, remaining == 0)
            }
            BodyKind::UntilClose => (avail.len(), false),
            BodyKind::Chunked => {
                let mut pos = 0;
                while pos < avail.len() && !decoder.is_done() {
                    let p = decoder.decode(&avail[pos..]).map_err(RelayError::Framing)?;
                    if dechunk && let Some(r) = p.data {
                        out.extend_from_slice(&avail[pos + r.start..pos + r.end]);
                    }
                    pos += p.consumed;
                }
                (pos, decoder.is_done())
            }
        };
        total += take as u64;
        let data = if body == BodyKind::Chunked {
            decoder.data_total()
        } else {
            total
        };
        if limit > 0 && data > limit {
            return Err(RelayError::TooLarge);
        }
        if dechunk {
            src_buf.consume(take);
        } else if take > 0 && out.len() + take <= COALESCE {
            out.extend_from_slice(&src_buf.data()[..take]);
            src_buf.consume(take);
        } else if take > 0 {
            flush(out, dst).await.map_err(|_| RelayError::DstIo)?;
            src_buf
                .write_to(dst, take)
                .await
                .map_err(|_| RelayError::DstIo)?;
        }
        if done {
            flush(out, dst).await.map_err(|_| RelayError::DstIo)?;
            return Ok(total);
        }
        if out.len() >= COALESCE / 2 || !src_buf.is_empty() {
            flush(out, dst).await.map_err(|_| RelayError::DstIo)?;
        }
        if src_buf.is_full() {
            // Only a chunk line longer than the buffer can get here; the decoder caps
            // lines well below any sensible buffer size.
            return Err(RelayError::Framing(ChunkError::LineTooLong));
        }
        match monoio::time::timeout(read_timeout, src_buf.fill(src)).await {
            Err(_) => return Err(RelayError::SrcTimeout),
            Ok(Err(_)) => return Err(RelayError::SrcIo),
            Ok(Ok(0)) if body == BodyKind::UntilClose => {
                flush(out, dst).await.map_err(|_| RelayError::DstIo)?;
                return Ok(total);
            }
            Ok(Ok(0)) => return Err(RelayError::SrcClosed),
            Ok(Ok(_)) => {}
        }
    }
}

/// Relays bytes both ways between an upgraded client connection and its upstream until
/// both directions have ended. Bytes already buffered on either side go first.
pub async fn tunnel(
    mut client: TcpStream,
    mut client_buf: InBuf,
    mut upstream: TcpStream,
    mut upstream_buf: InBuf,
) -> (u64, u64) {
    let n = client_buf.data().len();
    if n > 0 && client_buf.write_to(&mut upstream, n).await.is_err() {
        return (0, 0);
    }
    let n = upstream_buf.data().len();
    if n > 0 && upstream_buf.write_to(&mut client, n).await.is_err() {
        return (0, 0);
    }
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = upstream.into_split();
    let up = async {
        let n = monoio::io::copy(&mut cr, &mut uw).await.unwrap_or(0);
        let _ = uw.shutdown().await;
        n
    };
    let down = async {
        let n = monoio::io::copy(&mut ur, &mut cw).await.unwrap_or(0);
        let _ = cw.shutdown().await;
        n
    };
    monoio::join!(up, down)
}
