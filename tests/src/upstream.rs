//! The test upstream: a plain `std::net` HTTP/1.1 server, one thread per connection, that
//! sits behind the gateway in end-to-end tests.
//!
//! It keeps connections alive, reads every request body completely (Content-Length or
//! chunked, decoded), counts accepted connections and requests with atomics, remembers the
//! last request it saw and which of its connections were closed, and answers by path:
//!
//! | path | answer |
//! | --- | --- |
//! | `/` | 200, body = the upstream's name |
//! | `/echo` | 200, the request body; chunked when the request has `x-resp-chunked: 1` |
//! | `/big?n=BYTES[&chunked=1[&trailer=1]]` | 200, `n` bytes of [`crate::pattern`], streamed (chunked ending in [`TRAILER`]) |
//! | `/slow?ms=N` | sleeps `N` ms, then 200 `slow` |
//! | `/headers` | 200, body = the request head exactly as received |
//! | `/status?code=N` | status `N` (no body for 204/304) |
//! | `/close` | 200 with `Connection: close`, then closes |
//! | `/extra` | 200 `hello`, followed at once by an unrequested response ([`POISON`]) |
//! | `/until-close?n=N` | 200 without Content-Length or chunking: `N` pattern bytes, then close |
//! | `/stall?cl=T&n=N&ms=M` | Content-Length `T`, the first `N` bytes, a pause of `M` ms, the rest |
//!
//! On any path, `delay_body_ms=N` makes it wait `N` ms before reading the request body
//! (a slow consumer, to see whether the gateway buffers what it cannot forward).
//! Every answer carries `x-upstream: NAME`, `x-body-len` / `x-body-hash` (the request body's
//! [`Digest`]) and echoes a query parameter `id` as `x-id`. HEAD gets the GET headers and no
//! body. [`Behavior`] selects the fault modes (malformed answer, close, reset).

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::wire::{BufConn, Digest, MAX_HEAD, invalid};

mod routes;

pub use routes::{POISON, RESPONSE_CHUNK_SIZES, TRAILER};

/// How the upstream answers once it has read a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behavior {
    /// Path-driven answers (see the module docs).
    Normal,
    /// Writes a response whose status line is not HTTP, then closes.
    Malformed,
    /// Closes the connection (FIN) without answering.
    CloseBeforeResponse,
    /// Resets the connection (RST, `SO_LINGER` 0) without answering.
    ResetBeforeResponse,
}

/// One request as the upstream received it.
#[derive(Clone, Debug)]
pub struct SeenRequest {
    /// Which accepted connection (numbered from 1) carried it.
    pub conn_id: u64,
    /// Request method.
    pub method: String,
    /// Request target as sent.
    pub target: String,
    /// `1` for HTTP/1.1, `0` for HTTP/1.0.
    pub minor_version: u8,
    /// Header fields in order, names as received.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The raw head, request line through the blank line.
    pub head: Vec<u8>,
    /// Digest of the decoded body.
    pub body: Digest,
    /// Whether the body came chunked.
    pub chunked: bool,
}

impl SeenRequest {
    /// Values of every field named `name` (case-insensitive), lossily decoded.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    /// First value of the field named `name`, if any.
    pub fn header(&self, name: &str) -> Option<String> {
        self.header_values(name).into_iter().next()
    }
}

/// State shared by the acceptor, the connection threads and the handle.
#[derive(Debug)]
struct Shared {
    name: String,
    behavior: Behavior,
    accepted: AtomicU64,
    requests: AtomicU64,
    incomplete_responses: AtomicU64,
    last: Mutex<Option<SeenRequest>>,
    open: Mutex<HashMap<u64, TcpStream>>,
    closed: Mutex<HashSet<u64>>,
    stop: AtomicBool,
}

/// A running test upstream on an ephemeral loopback port; stops on drop.
#[derive(Debug)]
pub struct TestUpstream {
    shared: Arc<Shared>,
    addr: SocketAddr,
    acceptor: Option<JoinHandle<()>>,
}

impl TestUpstream {
    /// Starts a normal upstream whose `/` answers `name`.
    pub fn start(name: &str) -> Self {
        Self::with_behavior(name, Behavior::Normal)
    }

    /// Starts an upstream with the given fault behaviour.
    pub fn with_behavior(name: &str, behavior: Behavior) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind test upstream");
        let addr = listener.local_addr().expect("upstream local addr");
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            behavior,
            accepted: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            incomplete_responses: AtomicU64::new(0),
            last: Mutex::new(None),
            open: Mutex::new(HashMap::new()),
            closed: Mutex::new(HashSet::new()),
            stop: AtomicBool::new(false),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("upstream-{name}"))
                .spawn(move || accept_loop(&listener, &shared))
                .expect("spawn upstream acceptor")
        };
        Self {
            shared,
            addr,
            acceptor: Some(acceptor),
        }
    }

    /// Listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `addr()` as the string the CLI takes.
    pub fn addr_str(&self) -> String {
        self.addr.to_string()
    }

    /// The name `/` answers with.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Requests whose head and body were read completely so far.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Responses whose writing failed part-way (the peer went away).
    pub fn incomplete_responses(&self) -> u64 {
        self.shared.incomplete_responses.load(Ordering::SeqCst)
    }

    /// The most recent complete request.
    pub fn last_request(&self) -> Option<SeenRequest> {
        self.shared
            .last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Connections currently open (accepted and not yet ended).
    pub fn open_connections(&self) -> usize {
        self.shared
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether connection `id` has ended (peer closed, reset, or error).
    pub fn is_closed(&self, id: u64) -> bool {
        self.shared
            .closed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&id)
    }

    /// Waits up to `within` for connection `id` to end; returns whether it did.
    pub fn wait_closed(&self, id: u64, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.is_closed(id) {
                return true;
            }
            thread::sleep(Duration::from_millis(10));
        }
        self.is_closed(id)
    }
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept; it sees `stop` and returns.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
        let open = std::mem::take(
            &mut *self
                .shared
                .open
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for stream in open.values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        // The connection is registered as open before it is counted as accepted, so
        // `accepted() > 0 && open_connections() == 0` always means "it has ended" (the
        // other order let a test see an accepted connection that was not open yet).
        let id = {
            let mut open = shared.open.lock().unwrap_or_else(PoisonError::into_inner);
            let id = shared.accepted.load(Ordering::SeqCst) + 1;
            if let Ok(clone) = stream.try_clone() {
                open.insert(id, clone);
            }
            shared.accepted.store(id, Ordering::SeqCst);
            id
        };
        let shared = Arc::clone(shared);
        let spawned = thread::Builder::new()
            .name(format!("upstream-conn-{id}"))
            .spawn(move || {
                serve(&shared, stream, id);
                shared
                    .open
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&id);
                shared
                    .closed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(id);
            });
        if spawned.is_err() {
            return;
        }
    }
}

/// A parsed request head, borrowed from nothing (owned strings).
struct Head {
    method: String,
    target: String,
    minor: u8,
    headers: Vec<(String, Vec<u8>)>,
}

impl Head {
    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// Comma-separated tokens of every field named `name`, lower-cased.
    fn tokens(&self, name: &str) -> Vec<String> {
        self.values(name)
            .flat_map(|v| {
                String::from_utf8_lossy(v)
                    .split(',')
                    .map(|t| t.trim().to_ascii_lowercase())
                    .filter(|t| !t.is_empty())
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

fn parse_head(raw: &[u8]) -> io::Result<Head> {
    let mut headers = [httparse::EMPTY_HEADER; 512];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(raw) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(invalid("partial head")),
        Err(e) => return Err(invalid(format!("bad request head: {e}"))),
    }
    Ok(Head {
        method: req.method.unwrap_or_default().to_owned(),
        target: req.path.unwrap_or_default().to_owned(),
        minor: req.version.unwrap_or(1),
        headers: req
            .headers
            .iter()
            .map(|h| (h.name.to_owned(), h.value.to_vec()))
            .collect(),
    })
}

/// Splits `target` into path and `(key, value)` query pairs.
fn split_target(target: &str) -> (&str, Vec<(&str, &str)>) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let params = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect();
    (path, params)
}

fn param<'a>(params: &[(&'a str, &'a str)], key: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

fn serve(shared: &Shared, stream: TcpStream, id: u64) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(Duration::from_mins(2)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
    let mut conn = BufConn::new(stream);
    loop {
        let Ok(Some(raw)) = conn.read_head(MAX_HEAD) else {
            return;
        };
        let Ok(head) = parse_head(&raw) else {
            let _ = conn.write_all(
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
            return;
        };
        let (path, params) = split_target(&head.target);
        let keep_body = path == "/echo";
        if let Some(ms) = param(&params, "delay_body_ms").and_then(|v| v.parse().ok()) {
            thread::sleep(Duration::from_millis(ms));
        }
        let mut digest = Digest::new();
        let mut body = Vec::new();
        let mut sink = |d: &[u8]| {
            digest.update(d);
            if keep_body {
                body.extend_from_slice(d);
            }
        };
        let te = head.tokens("transfer-encoding");
        let chunked = te.last().is_some_and(|t| t == "chunked");
        let read = if !te.is_empty() {
            if chunked {
                conn.read_chunked(&mut sink).map(|_| ())
            } else {
                Err(invalid("transfer-encoding without chunked"))
            }
        } else if let Some(cl) = head.values("content-length").next() {
            match std::str::from_utf8(cl)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                Some(len) => conn.read_exact_body(len, &mut sink),
                None => Err(invalid("bad content-length")),
            }
        } else {
            Ok(())
        };
        if read.is_err() {
            return;
        }
        shared.requests.fetch_add(1, Ordering::SeqCst);
        *shared.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(SeenRequest {
            conn_id: id,
            method: head.method.clone(),
            target: head.target.clone(),
            minor_version: head.minor,
            headers: head.headers.clone(),
            head: raw.clone(),
            body: digest,
            chunked,
        });
        match shared.behavior {
            Behavior::Normal => {}
            Behavior::Malformed => {
                let _ = conn.write_all(b"HTTP/1.1 abc Broken\r\nGarbage\r\n\r\n");
                return;
            }
            Behavior::CloseBeforeResponse => return,
            Behavior::ResetBeforeResponse => {
                let _ = socket2::SockRef::from(conn.stream()).set_linger(Some(Duration::ZERO));
                return;
            }
        }
        match routes::respond(shared, &conn, &head, &raw, &body, digest) {
            Ok(true) => {}
            Ok(false) => return,
            Err(_) => {
                shared.incomplete_responses.fetch_add(1, Ordering::SeqCst);
                return;
            }
        }
    }
}
