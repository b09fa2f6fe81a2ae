//! Moving bodies: from the client to the upstream and back, streamed through the
//! connection's own buffers, never held whole, whatever their size.
//!
//! Bytes that have arrived are sent before the next read that may wait: small pieces are
//! appended to the pending head so a message that arrived whole goes out in one write,
//! larger ones are written straight from the read buffer, and whatever is pending is
//! flushed before every read. Chunked bodies are decoded by [`ChunkedDecoder`] and sent on
//! re-framed by [`Reframer`] (the sender's framing bytes are never forwarded), or
//! de-chunked for HTTP/1.0 clients.

use std::time::Duration;

use monoio::io::{AsyncReadRent, AsyncWriteRent, Split, Splitable};

use super::buf::{InBuf, flush};
use crate::dataplane::h1::chunked::{ChunkError, ChunkedDecoder, Piece, Reframer};
use crate::dataplane::h1::head::BodyKind;

/// Pieces up to this size are coalesced with pending bytes into one write.
const COALESCE: usize = 16 * 1024;

/// Why a body relay stopped early.
#[derive(Debug)]
pub(crate) enum RelayError {
    /// The sender closed its connection before the body ended.
    SrcClosed,
    /// The sender stopped sending for longer than the timeout.
    SrcTimeout,
    /// Reading from the sender failed.
    SrcIo,
    /// Writing to the receiver failed.
    DstIo,
    /// The chunked framing is invalid. `sent`: some of the message had been written to
    /// the receiver already (else nothing was, and the pending bytes were dropped, so the
    /// caller may still answer with an error of its own).
    Framing {
        /// What was wrong.
        error: ChunkError,
        /// Whether anything reached the receiver.
        sent: bool,
    },
    /// The body is larger than the limit.
    TooLarge,
}

/// How one body is delimited and relayed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BodySpec {
    /// How the sender delimits it.
    pub(crate) kind: BodyKind,
    /// Forward only the data of a chunked body (for an HTTP/1.0 receiver).
    pub(crate) dechunk: bool,
    /// Longest wait for the sender's next bytes.
    pub(crate) read_timeout: Duration,
    /// Largest data size accepted (0: no limit).
    pub(crate) limit: u64,
    /// Leave the body's last bytes in `out` (at most one read buffer's worth) for the
    /// caller to send: the session records a response before its last byte goes out, so
    /// a client that has the whole response also finds it in the figures.
    pub(crate) hold_last: bool,
}

/// The two ends of one relay: bytes come from `src` (those already in `src_buf` first)
/// and go to `dst` after the bytes pending in `out` (usually the head).
pub(crate) struct Ends<'a, S, D> {
    /// The sender.
    pub(crate) src: &'a mut S,
    /// Bytes received from the sender and not consumed yet.
    pub(crate) src_buf: &'a mut InBuf,
    /// The receiver.
    pub(crate) dst: &'a mut D,
    /// Bytes waiting to be written to the receiver.
    pub(crate) out: &'a mut Vec<u8>,
}

/// Streams one body described by `spec` between `ends`. Returns the body bytes read from
/// the sender (framing included).
pub(crate) async fn relay_body<S: AsyncReadRent, D: AsyncWriteRent>(
    ends: Ends<'_, S, D>,
    spec: BodySpec,
) -> Result<u64, RelayError> {
    let Ends {
        src,
        src_buf,
        dst,
        out,
    } = ends;
    let mut remaining = match spec.kind {
        BodyKind::Length(n) => n,
        _ => 0,
    };
    let mut decoder = ChunkedDecoder::new();
    let mut total: u64 = 0;
    let mut sent = false;
    let framing = |error: ChunkError, sent: bool, out: &mut Vec<u8>| {
        if !sent {
            out.clear();
        }
        RelayError::Framing { error, sent }
    };
    loop {
        let done = match spec.kind {
            BodyKind::None => true,
            BodyKind::Length(_) => {
                let take = (src_buf.data().len() as u64).min(remaining) as usize;
                remaining -= take as u64;
                total += take as u64;
                let hold = spec.hold_last && remaining == 0;
                pass(src_buf, take, dst, out, &mut sent, hold).await?;
                remaining == 0
            }
            BodyKind::UntilClose => {
                let take = src_buf.data().len();
                total += take as u64;
                pass(src_buf, take, dst, out, &mut sent, false).await?;
                false
            }
            BodyKind::Chunked => {
                match reframe(&mut decoder, src_buf, dst, out, spec.dechunk, &mut sent).await {
                    Ok(n) => total += n,
                    Err(RelayError::Framing { error, .. }) => {
                        return Err(framing(error, sent, out));
                    }
                    Err(e) => return Err(e),
                }
                decoder.is_done()
            }
        };
        let data = if spec.kind == BodyKind::Chunked {
            decoder.data_total()
        } else {
            total
        };
        if spec.limit > 0 && data > spec.limit {
            return Err(RelayError::TooLarge);
        }
        if done && spec.hold_last {
            return Ok(total);
        }
        // Everything that has arrived goes out before a read that may wait.
        sent |= !out.is_empty();
        flush(out, dst).await.map_err(|_| RelayError::DstIo)?;
        if done {
            return Ok(total);
        }
        if src_buf.is_full() {
            // Only a chunk line longer than the buffer can get here; the decoder caps
            // lines well below any sensible buffer size.
            return Err(framing(ChunkError::LineTooLong, sent, out));
        }
        match monoio::time::timeout(spec.read_timeout, src_buf.fill(src)).await {
            Err(_) => return Err(RelayError::SrcTimeout),
            Ok(Err(_)) => return Err(RelayError::SrcIo),
            Ok(Ok(0)) if spec.kind == BodyKind::UntilClose => return Ok(total),
            Ok(Ok(0)) => return Err(RelayError::SrcClosed),
            Ok(Ok(_)) => {}
        }
    }
}

/// Sends the first `take` buffered bytes on unchanged: appended to `out` when small (or
/// when `hold`: they end the body and stay for the caller), else written from the read
/// buffer itself after what `out` holds.
async fn pass(
    src_buf: &mut InBuf,
    take: usize,
    dst: &mut impl AsyncWriteRent,
    out: &mut Vec<u8>,
    sent: &mut bool,
    hold: bool,
) -> Result<(), RelayError> {
    if take == 0 {
        return Ok(());
    }
    if hold || out.len() + take <= COALESCE {
        out.extend_from_slice(&src_buf.data()[..take]);
        src_buf.consume(take);
        return Ok(());
    }
    *sent = true;
    flush(out, dst).await.map_err(|_| RelayError::DstIo)?;
    src_buf
        .write_to(dst, take)
        .await
        .map_err(|_| RelayError::DstIo)
}

/// Decodes the chunked framing buffered in `src_buf` and appends the normalised framing
/// and the data to `out` (only the data when `dechunk`). A line that is not complete yet
/// stays in the buffer. Returns the bytes consumed; sets `sent` when it wrote to `dst`.
async fn reframe(
    decoder: &mut ChunkedDecoder,
    src_buf: &mut InBuf,
    dst: &mut impl AsyncWriteRent,
    out: &mut Vec<u8>,
    dechunk: bool,
    sent: &mut bool,
) -> Result<u64, RelayError> {
    let mut consumed = 0u64;
    while !decoder.is_done() && !src_buf.is_empty() {
        let avail = src_buf.data();
        let p = decoder
            .decode(avail)
            .map_err(|error| RelayError::Framing { error, sent: *sent })?;
        consumed += p.consumed as u64;
        match p.piece {
            None => {
                src_buf.consume(p.consumed);
                break;
            }
            Some(Piece::Data { range, ends_chunk }) => {
                src_buf.consume(range.start);
                let n = range.len();
                if dechunk || out.len() + n <= COALESCE {
                    out.extend_from_slice(&src_buf.data()[..n]);
                    src_buf.consume(n);
                } else {
                    *sent = true;
                    flush(out, dst).await.map_err(|_| RelayError::DstIo)?;
                    src_buf
                        .write_to(dst, n)
                        .await
                        .map_err(|_| RelayError::DstIo)?;
                }
                if ends_chunk && !dechunk {
                    Reframer::end_data(out);
                }
            }
            Some(piece) => {
                if !dechunk {
                    Reframer::frame(out, &piece, avail);
                }
                src_buf.consume(p.consumed);
            }
        }
        if out.len() >= COALESCE {
            *sent = true;
            flush(out, dst).await.map_err(|_| RelayError::DstIo)?;
        }
    }
    Ok(consumed)
}

/// Relays bytes both ways between an upgraded client connection and its upstream until
/// both directions have ended. Bytes already buffered on either side go first.
pub(crate) async fn tunnel<C, U>(
    mut client: C,
    mut client_buf: InBuf,
    mut upstream: U,
    mut upstream_buf: InBuf,
) -> (u64, u64)
where
    C: AsyncReadRent + AsyncWriteRent + Split,
    U: AsyncReadRent + AsyncWriteRent + Split,
{
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
