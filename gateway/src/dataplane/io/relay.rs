//! Moving bodies: from the client to the upstream and back, streamed through the
//! connection's own buffers, never held whole, whatever their size.
//!
//! Bytes that have arrived are sent before the next read that may wait: pieces that fit
//! are appended to the pending head so a message that arrived whole goes out in one
//! write, others are written straight from the read buffer (never copied into the
//! pending bytes when nothing is pending), and whatever is pending is flushed before
//! every read. The middle of a long body with a known length moves through a large
//! buffer the worker lends ([`BulkBufs`]), read and written in pieces of up to
//! [`BULK`] bytes, and never read past its end. Chunked bodies are decoded by [`ChunkedDecoder`] and sent on
//! re-framed by [`Reframer`] (the sender's framing bytes are never forwarded), or
//! de-chunked for HTTP/1.0 clients.

use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Split, Splitable};

use super::buf::{BULK, BulkBufs, InBuf, flush};
use crate::dataplane::h1::chunked::{ChunkError, ChunkedDecoder, Piece, Reframer};
use crate::dataplane::h1::head::BodyKind;

/// Pieces up to this size are coalesced with pending bytes into one write.
const COALESCE: usize = 16 * 1024;
/// A body with at least this much left to read (past what is buffered and what the
/// relay holds back) goes through a bulk buffer.
const BULK_MIN: u64 = 64 * 1024;

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
    /// The worker's large buffers, lent for the middle of a long body.
    pub(crate) bulk: &'a BulkBufs,
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
        bulk,
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
        if let BodyKind::Length(_) = spec.kind {
            // Held back: the last bytes, which the caller sends itself.
            let keep = if spec.hold_last {
                remaining.min(src_buf.capacity() as u64)
            } else {
                0
            };
            // Everything buffered went out above (a length body takes all of it while
            // more remains), so the bulk reads continue right after it.
            if remaining - keep >= BULK_MIN && src_buf.is_empty() {
                sent = true;
                let moved = relay_bulk(src, dst, bulk, remaining - keep, spec.read_timeout).await;
                let n = moved?;
                remaining -= n;
                total += n;
                continue;
            }
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
    if hold || (!out.is_empty() && out.len() + take <= COALESCE) {
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

/// Moves exactly `len` bytes from `src` to `dst` through a buffer lent by `bulk`, in
/// reads of up to [`BULK`] bytes (never more than what is left, so nothing after the
/// body is read) each written whole before the next read. Returns `len`.
async fn relay_bulk<S: AsyncReadRent, D: AsyncWriteRent>(
    src: &mut S,
    dst: &mut D,
    bulk: &BulkBufs,
    len: u64,
    read_timeout: Duration,
) -> Result<u64, RelayError> {
    let mut buf = bulk.take();
    let mut moved = 0u64;
    while moved < len {
        let want = (len - moved).min(BULK as u64) as usize;
        buf.clear();
        // A read cut off by the timeout keeps the buffer; it is simply not returned.
        let (res, slice) = monoio::time::timeout(read_timeout, src.read(buf.slice_mut(0..want)))
            .await
            .map_err(|_| RelayError::SrcTimeout)?;
        buf = slice.into_inner();
        let n = match res {
            Ok(0) => return Err(RelayError::SrcClosed),
            Err(_) => return Err(RelayError::SrcIo),
            Ok(n) => n,
        };
        let (res, back) = dst.write_all(buf).await;
        buf = back;
        res.map_err(|_| RelayError::DstIo)?;
        moved += n as u64;
    }
    bulk.give(buf);
    Ok(moved)
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

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};

    use monoio::net::TcpStream;

    use super::*;

    /// A connected pair: the end for a helper thread, and the end the relay takes into
    /// its runtime (non-blocking, for [`TcpStream::from_std`]).
    fn pair() -> (std::net::TcpStream, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (ours, _) = l.accept().unwrap();
        ours.set_nonblocking(true).unwrap();
        (peer, ours)
    }

    fn body(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    /// Relays a `len`-byte length body sent (with `after` behind it) by a peer, some of
    /// it already buffered; returns what the receiver got, what `out` held back, and
    /// the first bytes read from the sender afterwards.
    fn relay(
        len: usize,
        buffered: usize,
        after: &'static [u8],
        hold_last: bool,
    ) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let data = body(len);
        let (mut sender, src) = pair();
        let (mut receiver, dst) = pair();
        let (mut feed_peer, feed) = pair();
        feed_peer.write_all(&data[..buffered]).unwrap();
        drop(feed_peer);
        let rest = data[buffered..].to_vec();
        let writer = std::thread::spawn(move || {
            sender.write_all(&rest).unwrap();
            sender.write_all(after).unwrap();
            sender
        });
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            receiver.read_to_end(&mut got).unwrap();
            got
        });
        let bulk = BulkBufs::default();
        let (out, next) = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
            .block_on(async {
                let (mut src, mut dst) = (
                    TcpStream::from_std(src).unwrap(),
                    TcpStream::from_std(dst).unwrap(),
                );
                let mut src_buf = InBuf::new(16 * 1024 + 1);
                let mut out = b"HEAD".to_vec();
                // The first `buffered` bytes arrived with the head, in the same buffer.
                let mut feed = TcpStream::from_std(feed).unwrap();
                while src_buf.data().len() < buffered {
                    assert!(src_buf.fill(&mut feed).await.unwrap() > 0);
                }
                let spec = BodySpec {
                    kind: BodyKind::Length(len as u64),
                    dechunk: false,
                    read_timeout: Duration::from_secs(5),
                    limit: 0,
                    hold_last,
                };
                let n = relay_body(
                    Ends {
                        src: &mut src,
                        src_buf: &mut src_buf,
                        dst: &mut dst,
                        out: &mut out,
                        bulk: &bulk,
                    },
                    spec,
                )
                .await
                .unwrap();
                assert_eq!(n, len as u64);
                // Nothing past the body was read from the sender.
                assert!(src_buf.is_empty());
                let mut next = InBuf::new(64);
                while next.data().len() < after.len() {
                    assert!(next.fill(&mut src).await.unwrap() > 0);
                }
                (out, next.data().to_vec())
            });
        let _ = writer.join().unwrap();
        (reader.join().unwrap(), out, next)
    }

    #[test]
    fn long_body_moves_in_bulk_and_stops_at_its_end() {
        let len = 3 * BULK + 12_345;
        let want = body(len);
        for buffered in [0, 1000] {
            let (got, out, next) = relay(len, buffered, b"NEXT", false);
            assert_eq!(&got[..4], b"HEAD");
            assert!(got[4..] == want[..], "buffered {buffered}: body differs");
            assert!(out.is_empty());
            assert_eq!(next, b"NEXT");
        }
    }

    #[test]
    fn held_back_tail_stays_for_the_caller() {
        let len = 2 * BULK + 777;
        let want = body(len);
        let (got, out, next) = relay(len, 100, b"GET /", true);
        // The head and everything but the held tail reached the receiver.
        assert_eq!(&got[..4], b"HEAD");
        let mut whole = got[4..].to_vec();
        assert!(!out.is_empty() && out.len() <= 16 * 1024 + 1);
        whole.extend_from_slice(&out);
        assert!(whole == want, "body differs");
        assert_eq!(next, b"GET /");
    }

    #[test]
    fn body_under_the_bulk_size_goes_through_the_connection_buffer() {
        let len = 40_000;
        let want = body(len);
        let (got, out, next) = relay(len, 0, b"X", false);
        assert_eq!(&got[..4], b"HEAD");
        assert!(got[4..] == want[..]);
        assert!(out.is_empty());
        assert_eq!(next, b"X");
    }
}
