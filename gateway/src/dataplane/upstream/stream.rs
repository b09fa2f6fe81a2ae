//! The byte stream of an upstream connection: plain TCP, TLS over TCP for a
//! deployment with `https://` endpoints, or one stream of an HTTP/2 connection for a
//! deployment that speaks HTTP/2 ([`H2Stream`]). One type for all, so pools, the exchange and
//! the tunnel handle every upstream the same way; the TCP socket underneath stays
//! reachable for socket options and the pool's idle probe.

use monoio::BufResult;
use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, Split};
use monoio::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};

use super::h2::stream::H2Stream;
use crate::dataplane::tls::ClientStream;

/// An upstream connection's stream.
#[derive(Debug)]
pub(crate) enum UpStream {
    Plain(TcpStream),
    /// Boxed: a TLS session is large and most connections are plain.
    Tls(Box<ClientStream>),
    /// One request on a multiplexed HTTP/2 connection (never pooled itself, never
    /// upgraded: the connection is pooled instead, and HTTP/2 has no `101`).
    H2(Box<H2Stream>),
}

/// The TCP socket's descriptor, for socket options and the pool's idle probe; it
/// stays open exactly as long as the stream.
impl AsRawFd for UpStream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            UpStream::Plain(s) => s.as_raw_fd(),
            UpStream::Tls(s) => s.tcp().as_raw_fd(),
            // The connection's socket, open while its driver runs; an HTTP/2 stream
            // never reaches the pool's idle probe.
            UpStream::H2(s) => s.fd(),
        }
    }
}

// SAFETY: `Split` promises that a read half and a write half may be used at the same
// time. The TCP and TLS variants are `Split` (TcpStream, and monoio-rustls' stream over
// it), and the enum never changes variant after it is made, so each half reaches the
// same inner stream the inner type allows to split. An HTTP/2 stream is split only by
// the exchange of a request with a body, once its head went out (the tunnel never
// gets one: HTTP/2 has no `101`): from then on its writes touch only the request's
// sending state and its reads only the response's.
unsafe impl Split for UpStream {}

impl AsyncReadRent for UpStream {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            UpStream::Plain(s) => s.read(buf).await,
            UpStream::Tls(s) => s.read(buf).await,
            UpStream::H2(s) => s.read(buf).await,
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            UpStream::Plain(s) => s.readv(buf).await,
            UpStream::Tls(s) => s.readv(buf).await,
            UpStream::H2(s) => s.readv(buf).await,
        }
    }
}

impl AsyncWriteRent for UpStream {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            UpStream::Plain(s) => s.write(buf).await,
            UpStream::Tls(s) => s.write(buf).await,
            UpStream::H2(s) => s.write(buf).await,
        }
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            UpStream::Plain(s) => s.writev(buf).await,
            UpStream::Tls(s) => s.writev(buf).await,
            UpStream::H2(s) => s.writev(buf).await,
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        match self {
            UpStream::Plain(s) => s.flush().await,
            UpStream::Tls(s) => s.flush().await,
            UpStream::H2(s) => s.flush().await,
        }
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        match self {
            UpStream::Plain(s) => s.shutdown().await,
            UpStream::Tls(s) => s.shutdown().await,
            UpStream::H2(s) => s.shutdown().await,
        }
    }
}
