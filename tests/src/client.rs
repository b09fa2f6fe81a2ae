//! The raw test client: HTTP/1.x over a plain `TcpStream`, so tests control every byte the
//! gateway receives (pipelining, malformed heads, slow senders) and see every byte it
//! answers (status, headers, chunk sizes, whether the connection stays open).
//!
//! Every socket gets read and write timeouts ([`IO_TIMEOUT`]), so a gateway that hangs makes
//! a test fail instead of stalling the suite.

use std::fmt::Write as _;
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use crate::tls::Sock;
use crate::wire::{BufConn, MAX_HEAD, invalid};

/// Host header value the helpers send.
pub const HOST: &str = "canarygate.test";

/// Default read/write timeout on client sockets.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// One response as the client received it.
#[derive(Clone, Debug)]
pub struct Response {
    /// `1` for HTTP/1.1, `0` for HTTP/1.0.
    pub minor_version: u8,
    /// Status code.
    pub status: u16,
    /// Reason phrase.
    pub reason: String,
    /// Header fields in order (values lossily decoded).
    pub headers: Vec<(String, String)>,
    /// The decoded body.
    pub body: Vec<u8>,
    /// Sizes of the data chunks when the body came chunked.
    pub chunk_sizes: Option<Vec<u64>>,
    /// Raw trailer section of a chunked body (each field ending in CRLF), if any.
    pub trailers: Vec<u8>,
    /// The raw head.
    pub raw_head: Vec<u8>,
}

impl Response {
    /// First value of the field `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of the field `name`.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Whether the `Connection` field lists `token`.
    pub fn connection_has(&self, token: &str) -> bool {
        self.header_all("connection")
            .iter()
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    }

    /// The body as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Status line and headers, for assertion messages.
    pub fn describe(&self) -> String {
        let mut s = String::from_utf8_lossy(&self.raw_head).into_owned();
        let shown = self.body.len().min(300);
        s.push_str(&String::from_utf8_lossy(&self.body[..shown]));
        if self.body.len() > shown {
            let _ = write!(s, "... ({} bytes)", self.body.len());
        }
        s
    }
}

/// A client connection to the gateway (or any HTTP/1.x server).
#[derive(Debug)]
pub struct Client {
    conn: BufConn,
}

impl Client {
    /// Connects with [`IO_TIMEOUT`] on reads and writes and `TCP_NODELAY`.
    pub fn connect(addr: SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(Self {
            conn: BufConn::over(Sock::harness(stream, addr)?),
        })
    }

    /// Connects from the local address `from` (port chosen by the kernel), e.g. another
    /// loopback address such as `127.0.0.7`, so the gateway sees a different client IP.
    pub fn connect_from(addr: SocketAddr, from: IpAddr) -> io::Result<Self> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.bind(&SocketAddr::new(from, 0).into())?;
        socket.connect_timeout(&addr.into(), IO_TIMEOUT)?;
        let stream: TcpStream = socket.into();
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(Self {
            conn: BufConn::over(Sock::harness(stream, addr)?),
        })
    }

    /// Connects over TLS with `config`, asking for `name` (SNI and verification), with
    /// the timeouts of [`Client::connect`].
    pub fn connect_tls(
        addr: SocketAddr,
        config: std::sync::Arc<rustls::ClientConfig>,
        name: &str,
    ) -> io::Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        let tls = crate::tls::handshake(stream, config, name)?;
        Ok(Self {
            conn: BufConn::over(Sock::Tls(Box::new(tls))),
        })
    }

    /// The serial number of the certificate the server presented (TLS connections).
    pub fn peer_serial(&self) -> Option<String> {
        match self.conn.sock() {
            Sock::Tls(s) => crate::tls::peer_serial(&s.conn),
            Sock::Plain(_) => None,
        }
    }

    /// How the TLS handshake went (full or resumed); `None` on plain connections.
    pub fn handshake_kind(&self) -> Option<rustls::HandshakeKind> {
        match self.conn.sock() {
            Sock::Tls(s) => s.conn.handshake_kind(),
            Sock::Plain(_) => None,
        }
    }

    /// The socket, e.g. to change timeouts or shut down one direction.
    pub fn stream(&self) -> &TcpStream {
        self.conn.stream()
    }

    /// Sets the read timeout for the following reads.
    pub fn set_read_timeout(&self, t: Duration) -> io::Result<()> {
        self.conn.stream().set_read_timeout(Some(t))
    }

    /// Writes raw bytes.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.conn.write_all(bytes)
    }

    /// Reads one response (interim 1xx responses included: they are returned as such).
    /// `to_head` says the request was HEAD, so the response has no body.
    pub fn read_response(&mut self, to_head: bool) -> io::Result<Response> {
        let raw_head = self.conn.read_head(MAX_HEAD)?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before a response",
            )
        })?;
        let mut headers = [httparse::EMPTY_HEADER; 256];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&raw_head) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => return Err(invalid("partial response head")),
            Err(e) => {
                return Err(invalid(format!(
                    "malformed response head ({e}): {:?}",
                    String::from_utf8_lossy(&raw_head)
                )));
            }
        }
        let status = resp.code.unwrap_or(0);
        let mut out = Response {
            minor_version: resp.version.unwrap_or(1),
            status,
            reason: resp.reason.unwrap_or_default().to_owned(),
            headers: resp
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_owned(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect(),
            body: Vec::new(),
            chunk_sizes: None,
            trailers: Vec::new(),
            raw_head: raw_head.clone(),
        };
        if to_head || (100..200).contains(&status) || status == 204 || status == 304 {
            return Ok(out);
        }
        let te_chunked = out
            .header_all("transfer-encoding")
            .iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .rfind(|t| !t.is_empty())
            .is_some_and(|t| t.eq_ignore_ascii_case("chunked"));
        let mut body = Vec::new();
        if te_chunked {
            let info = self.conn.read_chunked(&mut |d| body.extend_from_slice(d))?;
            out.chunk_sizes = Some(info.sizes);
            out.trailers = info.trailers;
        } else if let Some(cl) = out.header("content-length") {
            let len: u64 = cl
                .trim()
                .parse()
                .map_err(|_| invalid(format!("bad content-length {cl:?}")))?;
            self.conn
                .read_exact_body(len, &mut |d| body.extend_from_slice(d))?;
        } else {
            self.conn
                .read_to_close(&mut |d| body.extend_from_slice(d))?;
        }
        out.body = body;
        Ok(out)
    }

    /// Sends `raw` and reads its final response, skipping interim 1xx other than 101.
    pub fn request(&mut self, raw: &[u8]) -> io::Result<Response> {
        self.send(raw)?;
        let to_head = raw.starts_with(b"HEAD ");
        loop {
            let resp = self.read_response(to_head)?;
            if !(100..200).contains(&resp.status) || resp.status == 101 {
                return Ok(resp);
            }
        }
    }

    /// `GET path` with the default Host.
    pub fn get(&mut self, path: &str) -> io::Result<Response> {
        self.request(&get_request(path))
    }

    /// Waits up to `within` for the peer to close the connection. Returns the bytes that
    /// arrived before the close (expected empty) or an error if it stayed open.
    pub fn wait_closed(&mut self, within: Duration) -> io::Result<Vec<u8>> {
        if self.conn.is_tls() {
            return self.wait_closed_tls(within);
        }
        let deadline = Instant::now() + within;
        let mut extra = self.conn.buffered().to_vec();
        let stream = self.conn.stream();
        let mut buf = [0_u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connection still open after {within:?}"),
                ));
            }
            stream.set_read_timeout(Some(left))?;
            match (&*stream).read(&mut buf) {
                Ok(0) => return Ok(extra),
                Ok(n) => extra.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(extra),
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::TimedOut =>
                {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("connection still open after {within:?}"),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// [`Client::wait_closed`] over TLS: plaintext after the last response is "extra";
    /// `close_notify`, a FIN or a reset is the close.
    fn wait_closed_tls(&mut self, within: Duration) -> io::Result<Vec<u8>> {
        let deadline = Instant::now() + within;
        let mut extra = Vec::new();
        loop {
            extra.extend_from_slice(self.conn.buffered());
            self.conn.take_buffered();
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            self.conn.stream().set_read_timeout(Some(left))?;
            match self.conn.read_more() {
                Ok(0) => return Ok(extra),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(extra),
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::TimedOut =>
                {
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connection still open after {within:?}"),
        ))
    }

    /// Whether the connection is still open: nothing arrives and no close within `probe`.
    pub fn is_open(&mut self, probe: Duration) -> bool {
        if !self.conn.buffered().is_empty() {
            return true;
        }
        if self.conn.is_tls() {
            if self.conn.stream().set_read_timeout(Some(probe)).is_err() {
                return false;
            }
            let open = match self.conn.read_more() {
                Ok(n) => n > 0,
                Err(e) => matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ),
            };
            let _ = self.conn.stream().set_read_timeout(Some(IO_TIMEOUT));
            return open;
        }
        let stream = self.conn.stream();
        let mut buf = [0_u8; 1];
        if stream.set_read_timeout(Some(probe)).is_err() {
            return false;
        }
        let open = match stream.peek(&mut buf) {
            Ok(n) => n > 0,
            Err(e) => matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
        };
        let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
        open
    }
}

/// `GET path HTTP/1.1` with the default Host.
pub fn get_request(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n").into_bytes()
}

/// `GET path HTTP/1.1` with Host `host` and `extra` header lines (each ending in CRLF).
pub fn get_with(path: &str, host: &str, extra: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n").into_bytes()
}

/// How a request body is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length`.
    Length,
    /// `Transfer-Encoding: chunked`, chunk sizes cycling through [`REQUEST_CHUNK_SIZES`].
    Chunked,
}

/// Chunk sizes (cycled) of chunked request bodies built by [`post_request`].
pub const REQUEST_CHUNK_SIZES: [usize; 4] = [1000, 1, 65_536, 333];

/// `POST path HTTP/1.1` carrying `body` with the given framing and extra header lines
/// (each ending in CRLF).
pub fn post_request(path: &str, body: &[u8], framing: Framing, extra: &str) -> Vec<u8> {
    let mut out = match framing {
        Framing::Length => format!(
            "POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {}\r\n{extra}\r\n",
            body.len()
        )
        .into_bytes(),
        Framing::Chunked => format!(
            "POST {path} HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n{extra}\r\n"
        )
        .into_bytes(),
    };
    match framing {
        Framing::Length => out.extend_from_slice(body),
        Framing::Chunked => {
            out.extend_from_slice(&crate::wire::encode_chunked(body, &REQUEST_CHUNK_SIZES));
        }
    }
    out
}

/// Opens a connection, sends `raw`, reads one final response.
pub fn one_shot(addr: SocketAddr, raw: &[u8]) -> io::Result<Response> {
    Client::connect(addr)?.request(raw)
}
