//! A connection as the `h2` crate wants it (a client's, or one to an HTTP/2 upstream): a poll-based byte stream (tokio's
//! `AsyncRead`/`AsyncWrite`) over the worker's completion-based one (monoio's rent
//! traits), plain TCP or TLS alike. The stream is split so a read can wait in the ring
//! while frames go out: each half keeps at most one operation in flight, owning its
//! buffer while the kernel fills or drains it.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, ready};

use monoio::BufResult;
use monoio::io::{
    AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub(crate) mod flood;

use self::flood::FrameScan;
use super::Stream;

/// Bytes read from the socket at once.
const READ_BUF: usize = 16 * 1024;
/// Bytes `h2` may hand over before they must go out.
const WRITE_BUF: usize = 32 * 1024;

type ReadOp<S> = Pin<Box<dyn Future<Output = (OwnedReadHalf<S>, BufResult<usize, Vec<u8>>)>>>;
type WriteOp<S> = Pin<Box<dyn Future<Output = (OwnedWriteHalf<S>, io::Result<()>, Vec<u8>)>>>;

enum Reading<S: Stream> {
    /// The half and its buffer; `buf[pos..]` is read and not yet taken.
    Idle(OwnedReadHalf<S>, Vec<u8>),
    Busy(ReadOp<S>),
    /// Only while a state is being replaced, or after an error.
    Gone,
}

enum Writing<S: Stream> {
    /// The half and the bytes taken and not yet written.
    Idle(OwnedWriteHalf<S>, Vec<u8>),
    Busy(WriteOp<S>),
    Gone,
}

/// A client stream for `h2`.
pub(crate) struct PollIo<S: Stream> {
    reading: Reading<S>,
    pos: usize,
    writing: Writing<S>,
    shut: bool,
    /// The frames handed to `h2`, followed for a control-frame flood (a client's
    /// connection only: the scanner expects the client preface first).
    scan: Option<FrameScan>,
    /// Set on a flood (the connection's driver then ends it); reading stops.
    flood: Rc<Cell<bool>>,
}

impl<S: Stream> PollIo<S> {
    /// Wraps `stream`; `read` holds bytes already read from it (an h2c preface the HTTP/1
    /// reader saw), handed out first. `flood` is set if the client floods control frames;
    /// `None` for a connection to an upstream, whose frames are not watched.
    pub(crate) fn new(stream: S, read: &[u8], flood: Option<Rc<Cell<bool>>>) -> Self {
        let (rd, wr) = stream.into_split();
        let mut buf = Vec::with_capacity(READ_BUF.max(read.len()));
        buf.extend_from_slice(read);
        PollIo {
            reading: Reading::Idle(rd, buf),
            pos: 0,
            writing: Writing::Idle(wr, Vec::with_capacity(WRITE_BUF)),
            shut: false,
            scan: flood.as_ref().map(|_| FrameScan::new()),
            flood: flood.unwrap_or_default(),
        }
    }

    fn poll_written(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Writing::Busy(op) = &mut self.writing {
            let (half, res, mut buf) = ready!(op.as_mut().poll(cx));
            buf.clear();
            self.writing = Writing::Idle(half, buf);
            res?;
        }
        Poll::Ready(Ok(()))
    }

    /// Starts writing what is buffered.
    fn start_write(&mut self) {
        if let Writing::Idle(half, buf) = std::mem::replace(&mut self.writing, Writing::Gone) {
            let mut half = half;
            self.writing = Writing::Busy(Box::pin(async move {
                let (res, buf) = half.write_all(buf).await;
                (half, res.map(|_| ()), buf)
            }));
        }
    }
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "stream already failed")
}

impl<S: Stream> AsyncRead for PollIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.flood.get() {
            // Nothing more is read from a flooding client; its driver has been woken to
            // end the connection.
            return Poll::Pending;
        }
        loop {
            match &mut this.reading {
                Reading::Idle(_, buf) if this.pos < buf.len() => {
                    let n = (buf.len() - this.pos).min(out.remaining());
                    let bytes = &buf[this.pos..this.pos + n];
                    out.put_slice(bytes);
                    this.pos += n;
                    if this.scan.as_mut().is_some_and(|s| s.feed(bytes)) {
                        this.flood.set(true);
                        cx.waker().wake_by_ref();
                    }
                    return Poll::Ready(Ok(()));
                }
                Reading::Idle(..) => {
                    let Reading::Idle(mut half, mut buf) =
                        std::mem::replace(&mut this.reading, Reading::Gone)
                    else {
                        unreachable!("matched Idle above");
                    };
                    buf.clear();
                    buf.reserve(READ_BUF);
                    this.pos = 0;
                    this.reading = Reading::Busy(Box::pin(async move {
                        let res = half.read(buf).await;
                        (half, res)
                    }));
                }
                Reading::Busy(op) => {
                    let (half, (res, buf)) = ready!(op.as_mut().poll(cx));
                    this.reading = Reading::Idle(half, buf);
                    match res {
                        // The end of the stream: nothing put in `out`.
                        Ok(0) => return Poll::Ready(Ok(())),
                        Ok(_) => {}
                        Err(e) => {
                            this.reading = Reading::Gone;
                            return Poll::Ready(Err(e));
                        }
                    }
                }
                Reading::Gone => return Poll::Ready(Err(gone())),
            }
        }
    }
}

impl<S: Stream> AsyncWrite for PollIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        src: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            ready!(this.poll_written(cx))?;
            match &mut this.writing {
                Writing::Idle(_, buf) if buf.len() < WRITE_BUF => {
                    let n = src.len().min(WRITE_BUF - buf.len());
                    buf.extend_from_slice(&src[..n]);
                    return Poll::Ready(Ok(n));
                }
                Writing::Idle(..) => this.start_write(),
                Writing::Busy(_) => {}
                Writing::Gone => return Poll::Ready(Err(gone())),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            ready!(this.poll_written(cx))?;
            match &this.writing {
                Writing::Idle(_, buf) if buf.is_empty() => return Poll::Ready(Ok(())),
                Writing::Idle(..) => this.start_write(),
                Writing::Busy(_) => {}
                Writing::Gone => return Poll::Ready(Err(gone())),
            }
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        let this = self.get_mut();
        if !this.shut {
            this.shut = true;
            if let Writing::Idle(mut half, buf) =
                std::mem::replace(&mut this.writing, Writing::Gone)
            {
                // A TLS stream sends close_notify here, then both end with a FIN.
                this.writing = Writing::Busy(Box::pin(async move {
                    let res = half.shutdown().await;
                    (half, res, buf)
                }));
            }
        }
        this.poll_written(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};

    use monoio::net::TcpStream;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// Bytes already read come first; a large write goes out whole while a read waits;
    /// shutdown ends the stream for the peer.
    async fn echo_through() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let peer = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut got = vec![0u8; 200_000];
            s.read_exact(&mut got).unwrap();
            s.write_all(b"tail").unwrap();
            let mut rest = Vec::new();
            s.read_to_end(&mut rest).unwrap();
            (got, rest)
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut io = PollIo::new(tcp, b"head", None);
        let mut first = [0u8; 4];
        io.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"head");
        let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        io.write_all(&big).await.unwrap();
        io.flush().await.unwrap();
        let mut tail = [0u8; 4];
        io.read_exact(&mut tail).await.unwrap();
        assert_eq!(&tail, b"tail");
        io.write_all(b"bye").await.unwrap();
        io.shutdown().await.unwrap();
        let (got, rest) = peer.join().unwrap();
        assert_eq!(got, big);
        assert_eq!(rest, b"bye");
    }

    #[test]
    fn relays_both_ways_on_io_uring_and_epoll() {
        if let Ok(mut rt) = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .enable_timer()
            .build()
        {
            rt.block_on(echo_through());
        }
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
            .block_on(echo_through());
    }
}
