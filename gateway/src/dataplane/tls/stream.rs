//! A TLS connection over a monoio TCP stream, driven from the worker's own buffers:
//! ciphertext is read from the socket into an owned buffer and fed to rustls, plaintext
//! comes out of rustls' reader; plaintext written goes into rustls and its records go
//! out in one socket write per call.
//!
//! Written here rather than taken from monoio-rustls because the session bounds its
//! reads by dropping them (`monoio::time::timeout`), and a TLS stream must survive
//! that: the buffer a dropped read took is simply replaced on the next read (nothing
//! buffered is ever in it, so nothing is lost), where monoio-rustls' wrapper panics on
//! its next use. It also lends the rustls session out (resumption, SNI, ALPN).

use std::io::{self, Read as _, Write as _};
use std::time::Duration;

use monoio::BufResult;
use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut, RawBuf};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt as _, Canceller, Split};
use monoio::net::TcpStream;
use rustls::{ConnectionCommon, SideData};

use crate::dataplane::io::buf::InBuf;
use crate::dataplane::io::park::{Park, Woke};

/// Ciphertext read from the socket at a time (one full TLS record and then some).
const READ_BUF: usize = 18 * 1024;

/// A TLS connection of either side (`C` is a rustls `ServerConnection` or
/// `ClientConnection`).
#[derive(Debug)]
pub(crate) struct TlsStream<C> {
    io: TcpStream,
    conn: C,
    /// Ciphertext from the socket; `rbuf[rpos..]` is not yet fed to rustls. `None`
    /// while a socket read holds it (and after that read was dropped).
    rbuf: Option<Vec<u8>>,
    rpos: usize,
    /// Records on their way to the socket; `None` while a socket write holds it.
    wbuf: Option<Vec<u8>>,
}

fn invalid(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl<C, S> TlsStream<C>
where
    C: std::ops::DerefMut<Target = ConnectionCommon<S>>,
    S: SideData,
{
    /// `conn` (fresh, not handshaken) over `io`.
    pub(crate) fn new(io: TcpStream, conn: C) -> Self {
        TlsStream {
            io,
            conn,
            rbuf: Some(Vec::with_capacity(READ_BUF)),
            rpos: 0,
            wbuf: Some(Vec::with_capacity(READ_BUF)),
        }
    }

    /// The rustls session.
    pub(crate) fn session(&self) -> &C {
        &self.conn
    }

    /// The TCP socket underneath.
    pub(crate) fn tcp(&self) -> &TcpStream {
        &self.io
    }

    /// Runs the handshake to its end. A fatal alert rustls wants to send (a protocol
    /// version the client cannot have, say) goes out before the error returns.
    pub(crate) async fn handshake(&mut self) -> io::Result<()> {
        while self.conn.is_handshaking() {
            if self.conn.wants_write() {
                self.flush_tls().await?;
                continue;
            }
            match self.read_tls().await {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "peer closed during the TLS handshake",
                    ));
                }
                Ok(_) => {}
                Err(e) => {
                    // The alert describing the failure, best effort.
                    let _ = self.flush_tls().await;
                    return Err(e);
                }
            }
        }
        // Session tickets and the last flight.
        self.flush_tls().await
    }

    /// Feeds buffered ciphertext to rustls, processing each piece.
    fn feed(&mut self) -> io::Result<()> {
        let Some(buf) = self.rbuf.as_ref() else {
            return Ok(());
        };
        while self.rpos < buf.len() {
            match self.conn.read_tls(&mut &buf[self.rpos..]) {
                Ok(0) => break,
                Ok(n) => self.rpos += n,
                // Plaintext not read yet fills rustls' buffer: feed the rest later.
                Err(e) if e.kind() == io::ErrorKind::Other => break,
                Err(e) => return Err(e),
            }
            if let Err(e) = self.conn.process_new_packets() {
                log::debug!(
                    "TLS record refused: {e} (rpos {} of {})",
                    self.rpos,
                    buf.len()
                );
                return Err(invalid(e));
            }
        }
        Ok(())
    }

    /// Gets more ciphertext into rustls: buffered bytes first, else one socket read.
    /// `Ok(0)`: the peer closed the TCP connection.
    async fn read_tls(&mut self) -> io::Result<usize> {
        if self.rbuf.as_ref().is_some_and(|b| self.rpos < b.len()) {
            let before = self.rpos;
            self.feed()?;
            if self.rpos > before {
                return Ok(self.rpos - before);
            }
            // Callers come here only once rustls has no plaintext left to hand out, so
            // it always takes more; refusing beats reading over unfed bytes.
            return Err(io::Error::other(
                "TLS input stalled with unprocessed records",
            ));
        }
        // Nothing is buffered, so a dropped read loses no byte already received.
        let mut buf = self
            .rbuf
            .take()
            .unwrap_or_else(|| Vec::with_capacity(READ_BUF));
        buf.clear();
        self.rpos = 0;
        let (res, buf) = self.io.read(buf).await;
        self.rbuf = Some(buf);
        let n = res?;
        if n == 0 {
            // Tells rustls the transport ended (its reader then says whether the peer
            // closed cleanly with close_notify).
            let _ = self.conn.read_tls(&mut &[][..]);
            self.conn.process_new_packets().map_err(invalid)?;
            return Ok(0);
        }
        self.feed()?;
        Ok(n)
    }

    /// Sends every record rustls has ready.
    async fn flush_tls(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            let mut out = self
                .wbuf
                .take()
                .unwrap_or_else(|| Vec::with_capacity(READ_BUF));
            out.clear();
            while self.conn.wants_write() {
                self.conn.write_tls(&mut out)?;
            }
            let (res, out) = self.io.write_all(out).await;
            self.wbuf = Some(out);
            res?;
        }
        Ok(())
    }

    /// Plaintext into `dst`: `Ok(0)` at the end of the stream (close_notify, or the
    /// peer closing the TCP connection without one, which HTTP framing detects anyway).
    async fn read_plain(&mut self, dst: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(dst) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            if self.read_tls().await? == 0 {
                // rustls now knows of the end; its reader reports it next turn.
                match self.conn.reader().read(dst) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                    Err(e) => return Err(e),
                }
            }
        }
    }

    /// Encrypts what rustls takes of `src` and sends it.
    async fn write_plain(&mut self, src: &[u8]) -> io::Result<usize> {
        let n = self.conn.writer().write(src)?;
        self.flush_tls().await?;
        Ok(n)
    }
}

impl<C, S> TlsStream<C>
where
    C: std::ops::DerefMut<Target = ConnectionCommon<S>>,
    S: SideData,
{
    /// True when bytes are already here: ciphertext not fed to rustls yet, or plaintext
    /// rustls has not handed out (or a record it refuses, for the next read to report).
    fn buffered(&mut self) -> bool {
        self.rbuf.as_ref().is_some_and(|b| self.rpos < b.len())
            || self
                .conn
                .process_new_packets()
                .map_or(true, |s| s.plaintext_bytes_to_read() > 0)
    }
}

impl Park for TlsStream<rustls::ServerConnection> {
    async fn next_bytes(
        &mut self,
        _buf: &mut InBuf,
        wait: Duration,
        _cancel: &mut Canceller,
    ) -> Woke {
        // A readiness wait, not a read: the next read goes through rustls, which cannot
        // be undone, and a TLS request costs far more than one more wait anyway.
        if self.buffered() {
            return Woke::Data;
        }
        match monoio::time::timeout(wait, self.io.readable(false)).await {
            Ok(Ok(())) => Woke::Data,
            Ok(Err(_)) => Woke::Closed,
            Err(_) => Woke::Quiet,
        }
    }

    fn shed(&mut self) {
        if self.rbuf.as_ref().is_some_and(|b| self.rpos >= b.len()) {
            self.rbuf = None;
            self.rpos = 0;
        }
        // Between requests no write is in flight: what it holds went out.
        self.wbuf = None;
    }

    async fn readable(&self) -> io::Result<()> {
        self.io.readable(false).await
    }

    async fn close(mut self) {
        // TLS closes with close_notify (RFC 8446 §6.1), so the client can tell the end
        // of the connection from a truncation.
        let _ = monoio::time::timeout(CLOSE_NOTIFY_TIME, self.shutdown()).await;
    }
}

/// Longest a TLS connection's `close_notify` may take to go out.
const CLOSE_NOTIFY_TIME: Duration = Duration::from_secs(1);

// SAFETY: `Split` lets a read half and a write half of one stream be used by two
// futures of the same thread (the tunnel of an upgraded connection). Neither path holds
// a borrow of the rustls session across an await: the read half awaits only the socket
// read into its own buffer (`rbuf`), the write half only the socket write of its own
// buffer (`wbuf`); the session is touched between awaits, never concurrently (one
// thread). The socket itself is `Split`.
unsafe impl<C> Split for TlsStream<C> {}

impl<C, S> AsyncReadRent for TlsStream<C>
where
    C: std::ops::DerefMut<Target = ConnectionCommon<S>>,
    S: SideData,
{
    async fn read<T: IoBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        // SAFETY: `write_ptr` and `bytes_total` describe the buffer's writable memory,
        // which `buf` owns for this call; `set_init` below marks only what was written.
        let dst = unsafe { std::slice::from_raw_parts_mut(buf.write_ptr(), buf.bytes_total()) };
        let res = self.read_plain(dst).await;
        if let Ok(n) = res {
            // SAFETY: `read_plain` initialised the first `n` bytes of `dst`.
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

impl<C, S> AsyncWriteRent for TlsStream<C>
where
    C: std::ops::DerefMut<Target = ConnectionCommon<S>>,
    S: SideData,
{
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        // SAFETY: `read_ptr` and `bytes_init` describe the buffer's initialised bytes,
        // owned by `buf` for this call.
        let src = unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) };
        let res = self.write_plain(src).await;
        (res, buf)
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        // SAFETY: the raw buffer views the first iovec of `buf`, which outlives it. A
        // short write (that iovec only) is what `writev` may return.
        let res = match unsafe { RawBuf::new_from_iovec(&buf) } {
            Some(raw) => self.write(raw).await.0,
            None => Ok(0),
        };
        (res, buf)
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.flush_tls().await
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.conn.send_close_notify();
        self.flush_tls().await?;
        self.io.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};
    use std::sync::Arc;
    use std::time::Duration;

    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

    use super::*;

    fn configs() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
        let c = rcgen::generate_simple_self_signed(vec!["a.test".to_owned()]).unwrap();
        let cert = CertificateDer::from(c.cert.der().to_vec());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(c.signing_key.serialize_der()));
        let provider = crate::tls::provider();
        let server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (Arc::new(server), Arc::new(client))
    }

    /// A blocking rustls client on its own thread: handshake, then (after `pause`)
    /// `hello` in two records, then it reads the echo and closes with close_notify.
    fn client(
        addr: std::net::SocketAddr,
        config: Arc<rustls::ClientConfig>,
        pause: Duration,
    ) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let tcp = std::net::TcpStream::connect(addr).unwrap();
            let name = ServerName::try_from("a.test").unwrap();
            let conn = rustls::ClientConnection::new(config, name).unwrap();
            let mut s = rustls::StreamOwned::new(conn, tcp);
            while s.conn.is_handshaking() {
                s.conn.complete_io(&mut s.sock).unwrap();
            }
            std::thread::sleep(pause);
            s.write_all(b"hel").unwrap();
            s.flush().unwrap();
            std::thread::sleep(Duration::from_millis(20));
            s.write_all(b"lo").unwrap();
            s.flush().unwrap();
            let mut echo = [0u8; 5];
            s.read_exact(&mut echo).unwrap();
            s.conn.send_close_notify();
            let _ = s.flush();
            echo.to_vec()
        })
    }

    async fn serve(server: Arc<rustls::ServerConfig>, client: Arc<rustls::ClientConfig>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = client_thread(&l, client);
        let (tcp, _) = l.accept().unwrap();
        tcp.set_nonblocking(true).unwrap();
        let tcp = TcpStream::from_std(tcp).unwrap();
        let mut s = TlsStream::new(tcp, rustls::ServerConnection::new(server).unwrap());
        s.handshake().await.unwrap();
        // A read the timeout drops, as the session's header timeout does...
        let dropped = monoio::time::timeout(Duration::from_millis(50), s.read(vec![0u8; 64])).await;
        assert!(dropped.is_err(), "nothing was sent yet");
        // ...and the stream still reads every byte after it, in order.
        let mut got = Vec::new();
        while got.len() < 5 {
            let (n, buf) = s.read(Vec::with_capacity(64)).await;
            let n = n.unwrap();
            assert!(n > 0, "closed early after {got:?}");
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, b"hello");
        let (res, _) = s.write_all(got).await;
        res.unwrap();
        // close_notify from the client: a clean end of stream.
        let (n, _) = s.read(vec![0u8; 8]).await;
        assert_eq!(n.unwrap(), 0);
        assert_eq!(peer.join().unwrap(), b"hello");
    }

    fn client_thread(
        l: &std::net::TcpListener,
        config: Arc<rustls::ClientConfig>,
    ) -> std::thread::JoinHandle<Vec<u8>> {
        client(l.local_addr().unwrap(), config, Duration::from_millis(300))
    }

    #[test]
    fn a_read_dropped_by_a_timeout_loses_nothing_on_io_uring_and_epoll() {
        let (server, client) = configs();
        if let Ok(mut rt) = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .enable_timer()
            .build()
        {
            rt.block_on(serve(Arc::clone(&server), Arc::clone(&client)));
        }
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
            .block_on(serve(server, client));
    }
}
