//! The byte stream of an upstream connection: plain TCP, or TLS over TCP for a
//! deployment with `https://` endpoints. One type for both, so pools, the exchange and
//! the tunnel handle every upstream the same way; the TCP socket underneath stays
//! reachable for socket options and the pool's idle probe.

use monoio::BufResult;
use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, Split};
use monoio::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};

use crate::dataplane::tls::ClientStream;

/// An upstream connection's stream.
#[derive(Debug)]
pub(crate) enum UpStream {
    Plain(TcpStream),
    /// Boxed: a TLS session is large and most connections are plain.
    Tls(Box<ClientStream>),
}

/// The TCP socket's descriptor, for socket options and the pool's idle probe; it
/// stays open exactly as long as the stream.
impl AsRawFd for UpStream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            UpStream::Plain(s) => s.as_raw_fd(),
            UpStream::Tls(s) => s.tcp().as_raw_fd(),
        }
    }
}

// SAFETY: `Split` promises that a read half and a write half may be used at the same
// time. Both variants are `Split` (TcpStream, and monoio-rustls' stream over it), and
// the enum never changes variant after it is made, so each half reaches the same inner
// stream the inner type allows to split.
unsafe impl Split for UpStream {}

impl AsyncReadRent for UpStream {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            UpStream::Plain(s) => s.read(buf).await,
            UpStream::Tls(s) => s.read(buf).await,
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            UpStream::Plain(s) => s.readv(buf).await,
            UpStream::Tls(s) => s.readv(buf).await,
        }
    }
}

impl AsyncWriteRent for UpStream {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            UpStream::Plain(s) => s.write(buf).await,
            UpStream::Tls(s) => s.write(buf).await,
        }
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            UpStream::Plain(s) => s.writev(buf).await,
            UpStream::Tls(s) => s.writev(buf).await,
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        match self {
            UpStream::Plain(s) => s.flush().await,
            UpStream::Tls(s) => s.flush().await,
        }
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        match self {
            UpStream::Plain(s) => s.shutdown().await,
            UpStream::Tls(s) => s.shutdown().await,
        }
    }
}
