//! `cg-handshake`, the TLS handshake load generator: C client threads, each in a closed
//! loop of connect, TLS 1.3 handshake ([`client`] says what is offered), one
//! `GET path` with `Connection: close`, the whole response, `close_notify`, close. Every
//! connection is a full handshake, or with `resume` a resumed one from the ticket the
//! server sent on the connection before (the first connection of each thread is full).
//!
//! The report counts completed connections (the handshake and a whole response), how
//! each handshake went (full or resumed, as rustls on the client saw it), what was
//! negotiated (protocol, suite, group, each distinct combination once), and the time
//! from connect to the last byte of the response. Plain blocking sockets: a thread per
//! connection is cheap next to the handshake, and nothing here shares a lock.

pub mod client;

use std::io::{self, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs as _};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use serde::Serialize;

use crate::load::report::Latency;
use crate::load::response::{Body, parse_head};
use crate::load::tally::{ErrorKind, Errors, Tally};
use client::ClientSettings;

/// Largest response read before it is called malformed.
const MAX_RESPONSE: usize = 64 * 1024;

/// A handshake run.
#[derive(Clone, Debug)]
pub struct HandshakeConfig {
    /// Where to connect.
    pub addr: SocketAddr,
    /// SNI and `Host` header.
    pub server_name: String,
    /// Path requested on each connection.
    pub path: String,
    /// Concurrent clients, one thread each.
    pub clients: usize,
    /// Stop starting connections after this long.
    pub duration: Duration,
    /// Time each socket operation may take.
    pub timeout: Duration,
    /// What the client offers.
    pub settings: ClientSettings,
}

/// What one negotiated connection agreed on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Negotiated {
    /// `TLSv1_3`.
    pub protocol: String,
    /// `TLS13_AES_128_GCM_SHA256`.
    pub suite: String,
    /// `X25519`; `none` when the handshake used no key exchange.
    pub group: String,
}

/// Everything a run measured.
#[derive(Clone, Debug, Serialize)]
pub struct HandshakeReport {
    /// Concurrent clients.
    pub clients: usize,
    /// Whether sessions were resumed.
    pub resume: bool,
    /// Seconds from the start to the last connection's end.
    pub elapsed_s: f64,
    /// Connections that completed a handshake and read a whole response.
    pub connections: u64,
    /// `connections / elapsed_s`.
    pub rate: f64,
    /// Completed connections whose handshake was a full one.
    pub full: u64,
    /// Completed connections whose handshake resumed a session.
    pub resumed: u64,
    /// Connect to last response byte, microseconds.
    pub latency_us: Latency,
    /// Failures by kind (error statuses included), as cg-load counts them.
    pub errors: Errors,
    /// Handshakes the server or the client refused (a TLS alert or error).
    pub tls_errors: u64,
    /// Sum of `errors` and `tls_errors`.
    pub errors_total: u64,
    /// Each distinct protocol, suite and group seen.
    pub negotiated: Vec<Negotiated>,
}

impl HandshakeReport {
    /// The report as a few lines for a person.
    pub fn human(&self) -> String {
        let negotiated: Vec<String> = self
            .negotiated
            .iter()
            .map(|n| format!("{} {} {}", n.protocol, n.suite, n.group))
            .collect();
        format!(
            "{} connections in {:.2} s: {:.0} handshakes/s ({} full, {} resumed), {} clients\n\
             latency p50 {} µs, p99 {} µs, max {} µs\n\
             errors: {} ({} TLS)\n\
             negotiated: {}\n",
            self.connections,
            self.elapsed_s,
            self.rate,
            self.full,
            self.resumed,
            self.clients,
            self.latency_us.p50,
            self.latency_us.p99,
            self.latency_us.max,
            self.errors_total,
            self.tls_errors,
            negotiated.join("; ")
        )
    }
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// Nothing to run.
    #[error("{0}")]
    Invalid(String),
    /// A client thread could not start.
    #[error("cannot start a client thread: {0}")]
    Thread(io::Error),
    /// A client thread panicked.
    #[error("a client thread panicked")]
    Panicked,
}

/// One thread's counts.
struct Counts {
    tally: Tally,
    full: u64,
    resumed: u64,
    tls_errors: u64,
    negotiated: Vec<Negotiated>,
}

/// Why one connection failed.
enum Failure {
    Kind(ErrorKind),
    Tls,
}

/// Runs the clients for `cfg.duration` and merges what they saw.
pub fn run(cfg: &HandshakeConfig) -> Result<HandshakeReport, HandshakeError> {
    if cfg.clients == 0 {
        return Err(HandshakeError::Invalid(
            "--clients must be at least 1".into(),
        ));
    }
    let name = ServerName::try_from(cfg.server_name.clone())
        .map_err(|e| HandshakeError::Invalid(format!("server name: {e}")))?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        cfg.path, cfg.server_name
    )
    .into_bytes();
    let configs = (0..cfg.clients)
        .map(|_| client::config(&cfg.settings))
        .collect::<Result<Vec<_>, _>>()
        .map_err(HandshakeError::Invalid)?;
    let started = Instant::now();
    let deadline = started + cfg.duration;
    let mut handles = Vec::with_capacity(cfg.clients);
    for (i, tls) in configs.into_iter().enumerate() {
        let (name, request, cfg) = (name.clone(), request.clone(), cfg.clone());
        let h = std::thread::Builder::new()
            .name(format!("cg-handshake-{i}"))
            .spawn(move || client_loop(&cfg, &tls, &name, &request, deadline))
            .map_err(HandshakeError::Thread)?;
        handles.push(h);
    }
    let mut total = Counts::new();
    for h in handles {
        total.merge(h.join().map_err(|_| HandshakeError::Panicked)?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let h = &total.tally.latency;
    let latency_us = if h.is_empty() {
        Latency::default()
    } else {
        Latency {
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    };
    let connections = total.full + total.resumed;
    let errors = total.tally.errors;
    Ok(HandshakeReport {
        clients: cfg.clients,
        resume: cfg.settings.resume,
        elapsed_s: elapsed,
        connections,
        rate: connections as f64 / elapsed.max(1e-9),
        full: total.full,
        resumed: total.resumed,
        latency_us,
        errors,
        tls_errors: total.tls_errors,
        errors_total: errors.total() + total.tls_errors,
        negotiated: total.negotiated,
    })
}

impl Counts {
    fn new() -> Counts {
        Counts {
            tally: Tally::default(),
            full: 0,
            resumed: 0,
            tls_errors: 0,
            negotiated: Vec::new(),
        }
    }

    fn merge(&mut self, o: Counts) {
        self.tally.merge(&o.tally);
        self.full += o.full;
        self.resumed += o.resumed;
        self.tls_errors += o.tls_errors;
        for n in o.negotiated {
            if !self.negotiated.contains(&n) {
                self.negotiated.push(n);
            }
        }
    }
}

/// One client: connections one after another until `deadline`.
fn client_loop(
    cfg: &HandshakeConfig,
    tls: &Arc<rustls::ClientConfig>,
    name: &ServerName<'static>,
    request: &[u8],
    deadline: Instant,
) -> Counts {
    let mut counts = Counts::new();
    let mut buf = vec![0u8; MAX_RESPONSE];
    while Instant::now() < deadline {
        let t0 = Instant::now();
        match connection(cfg, tls, name, request, &mut buf) {
            Ok((conn, head)) => {
                counts.tally.response(&head, t0.elapsed());
                if head.status >= 400 {
                    continue;
                }
                if conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
                    counts.resumed += 1;
                } else {
                    counts.full += 1;
                }
                let n = negotiated(&conn);
                if !counts.negotiated.contains(&n) {
                    counts.negotiated.push(n);
                }
            }
            Err(Failure::Kind(k)) => counts.tally.errors.add(k),
            Err(Failure::Tls) => counts.tls_errors += 1,
        }
    }
    counts
}

fn negotiated(conn: &rustls::ClientConnection) -> Negotiated {
    Negotiated {
        protocol: conn
            .protocol_version()
            .map_or_else(|| "none".into(), |v| format!("{v:?}")),
        suite: conn
            .negotiated_cipher_suite()
            .map_or_else(|| "none".into(), |s| format!("{:?}", s.suite())),
        group: conn
            .negotiated_key_exchange_group()
            .map_or_else(|| "none".into(), |g| format!("{:?}", g.name())),
    }
}

/// Classifies an I/O error from a TLS stream.
fn failure(e: &io::Error, default: ErrorKind) -> Failure {
    if e.get_ref()
        .is_some_and(<dyn std::error::Error + Send + Sync>::is::<rustls::Error>)
    {
        return Failure::Tls;
    }
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Failure::Kind(ErrorKind::Timeout),
        _ => Failure::Kind(default),
    }
}

/// One connection: connect, handshake, request, response, close.
fn connection(
    cfg: &HandshakeConfig,
    tls: &Arc<rustls::ClientConfig>,
    name: &ServerName<'static>,
    request: &[u8],
    buf: &mut [u8],
) -> Result<(rustls::ClientConnection, crate::load::response::Head), Failure> {
    let tcp = TcpStream::connect_timeout(&cfg.addr, cfg.timeout).map_err(|e| {
        Failure::Kind(if e.kind() == io::ErrorKind::TimedOut {
            ErrorKind::Timeout
        } else {
            ErrorKind::Connect
        })
    })?;
    let _ = tcp.set_nodelay(true);
    let _ = tcp.set_read_timeout(Some(cfg.timeout));
    let _ = tcp.set_write_timeout(Some(cfg.timeout));
    let conn =
        rustls::ClientConnection::new(Arc::clone(tls), name.clone()).map_err(|_| Failure::Tls)?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    // The first write drives the whole handshake.
    s.write_all(request)
        .and_then(|()| s.flush())
        .map_err(|e| failure(&e, ErrorKind::Write))?;
    let mut have = 0;
    let head = loop {
        let n = s
            .read(&mut buf[have..])
            .map_err(|e| failure(&e, ErrorKind::Read))?;
        if n == 0 {
            return Err(Failure::Kind(ErrorKind::Read));
        }
        have += n;
        let Some(head) =
            parse_head(&buf[..have], None).map_err(|_| Failure::Kind(ErrorKind::Parse))?
        else {
            if have == buf.len() {
                return Err(Failure::Kind(ErrorKind::Parse));
            }
            continue;
        };
        let end = match head.body {
            Body::Empty => Some(head.len),
            Body::Length(n) => usize::try_from(n).ok().map(|n| head.len.saturating_add(n)),
            // The request said `Connection: close`: the body ends with the connection.
            Body::Chunked | Body::UntilClose => None,
        };
        if end.is_some_and(|end| end > buf.len()) {
            return Err(Failure::Kind(ErrorKind::Parse));
        }
        while end.is_none_or(|end| have < end) {
            let limit = end.unwrap_or(buf.len());
            if have == limit {
                return Err(Failure::Kind(ErrorKind::Parse));
            }
            match s.read(&mut buf[have..limit]) {
                Ok(0) if end.is_none() => break,
                Ok(0) => return Err(Failure::Kind(ErrorKind::Read)),
                Ok(n) => have += n,
                Err(e) if end.is_none() && e.kind() == io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(failure(&e, ErrorKind::Read)),
            }
        }
        break head;
    };
    s.conn.send_close_notify();
    let _ = s.flush();
    Ok((s.conn, head))
}

/// Resolves `https://host[:port][/path]` into an address, the host name and the path.
pub fn parse_url(url: &str) -> Result<(SocketAddr, String, String), String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| format!("{url:?}: only https:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, with_port) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            (h, authority.to_owned())
        }
        _ => (authority, format!("{authority}:443")),
    };
    if host.is_empty() {
        return Err(format!("{url:?}: no host"));
    }
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {with_port}: {e}"))?
        .next()
        .ok_or_else(|| format!("{with_port} has no address"))?;
    Ok((addr, host.to_owned(), path.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::parse_url;

    #[test]
    fn urls() {
        let (addr, host, path) = parse_url("https://127.0.0.1:8443/x?y").expect("valid");
        assert_eq!(addr.port(), 8443);
        assert_eq!((host.as_str(), path.as_str()), ("127.0.0.1", "/x?y"));
        let (addr, _, path) = parse_url("https://127.0.0.1").expect("valid");
        assert_eq!((addr.port(), path.as_str()), (443, "/"));
        assert!(parse_url("http://127.0.0.1:80/").is_err());
        assert!(parse_url("https://:80/").is_err());
    }
}
