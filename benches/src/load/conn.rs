//! One keep-alive client connection of the load generator: send the request, read the
//! response to its last byte, repeat as the pacing says. Buffers are owned by the
//! connection and handed to the kernel and back (monoio's ownership model), so the steady
//! state allocates nothing.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::buf::IoBufMut as _;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use super::pacing::Pacing;
use super::response::{Body, Chunked, Head, parse_head};
use super::tally::{Counters, ErrorKind, Tally};

/// Receive buffer per connection: response heads must fit in it.
const RECV_CAPACITY: usize = 64 * 1024;
/// Pause after a failed connect, so a dead target is not hammered in a tight loop.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(10);

/// What every connection of a thread shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) addr: SocketAddr,
    pub(crate) request: Vec<u8>,
    pub(crate) timeout: Duration,
    pub(crate) variant_header: Option<String>,
    pub(crate) tally: RefCell<Tally>,
    pub(crate) counters: std::sync::Arc<Counters>,
}

/// Why an exchange failed.
#[derive(Debug)]
pub(crate) enum Failure {
    Write,
    Read,
    Parse,
}

impl Failure {
    fn kind(&self) -> ErrorKind {
        match self {
            Failure::Write => ErrorKind::Write,
            Failure::Read => ErrorKind::Read,
            Failure::Parse => ErrorKind::Parse,
        }
    }
}

/// An open connection with its buffers.
pub(crate) struct Conn {
    stream: TcpStream,
    request: Vec<u8>,
    buf: Vec<u8>,
    start: usize,
}

impl Conn {
    /// Connects to `addr` within `timeout`.
    pub(crate) async fn connect(
        addr: SocketAddr,
        request: &[u8],
        timeout: Duration,
    ) -> io::Result<Conn> {
        let stream = monoio::time::timeout(timeout, TcpStream::connect_addr(addr))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        // Small requests must not wait for Nagle; failure only costs latency.
        let _ = stream.set_nodelay(true);
        Ok(Conn {
            stream,
            request: request.to_vec(),
            buf: Vec::with_capacity(RECV_CAPACITY),
            start: 0,
        })
    }

    /// Sends the request and reads the whole response; returns its head.
    pub(crate) async fn exchange(&mut self, variant_header: Option<&str>) -> Result<Head, Failure> {
        let request = std::mem::take(&mut self.request);
        let (res, request) = self.stream.write_all(request).await;
        self.request = request;
        res.map_err(|_| Failure::Write)?;
        loop {
            let head = self.read_head(variant_header).await?;
            // Interim responses (100 Continue, 103 Early Hints) precede the real one.
            if !(100..200).contains(&head.status) {
                self.skip_body(head.body).await?;
                return Ok(head);
            }
        }
    }

    async fn read_head(&mut self, variant_header: Option<&str>) -> Result<Head, Failure> {
        loop {
            if let Some(head) =
                parse_head(&self.buf[self.start..], variant_header).map_err(|_| Failure::Parse)?
            {
                self.consume(head.len);
                return Ok(head);
            }
            if self.start == 0 && self.buf.len() == self.buf.capacity() {
                return Err(Failure::Parse);
            }
            if self.fill().await? == 0 {
                return Err(Failure::Read);
            }
        }
    }

    async fn skip_body(&mut self, body: Body) -> Result<(), Failure> {
        match body {
            Body::Empty => Ok(()),
            Body::Length(mut left) => loop {
                let take = left.min(self.buffered() as u64);
                self.consume(take as usize);
                left -= take;
                if left == 0 {
                    return Ok(());
                }
                if self.fill().await? == 0 {
                    return Err(Failure::Read);
                }
            },
            Body::Chunked => {
                let mut chunked = Chunked::default();
                loop {
                    let (n, done) = chunked
                        .feed(&self.buf[self.start..])
                        .map_err(|_| Failure::Parse)?;
                    self.consume(n);
                    if done {
                        return Ok(());
                    }
                    if self.fill().await? == 0 {
                        return Err(Failure::Read);
                    }
                }
            }
            Body::UntilClose => loop {
                self.consume(self.buffered());
                if self.fill().await? == 0 {
                    return Ok(());
                }
            },
        }
    }

    fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }

    /// Reads more bytes after the buffered ones; `Ok(0)` is end of stream.
    async fn fill(&mut self) -> Result<usize, Failure> {
        if self.buf.len() == self.buf.capacity() {
            self.buf.copy_within(self.start.., 0);
            self.buf.truncate(self.buf.len() - self.start);
            self.start = 0;
        }
        let len = self.buf.len();
        let buf = std::mem::take(&mut self.buf);
        let (res, slice) = self.stream.read(buf.slice_mut(len..)).await;
        self.buf = slice.into_inner();
        res.map_err(|_| Failure::Read)
    }
}

/// Runs one connection until its budget is spent or the deadline passes: plan, wait,
/// (re)connect if needed, exchange, record.
pub(crate) async fn drive(
    shared: Rc<Shared>,
    mut conn: Option<Conn>,
    mut pacing: Pacing,
    budget: Option<u64>,
    deadline: Option<Instant>,
) {
    let variant_header = shared.variant_header.as_deref();
    let mut sent = 0u64;
    loop {
        if budget.is_some_and(|b| sent >= b) {
            return;
        }
        let plan = pacing.plan(Instant::now());
        if deadline.is_some_and(|d| plan.send_at >= d) {
            return;
        }
        if plan.send_at > Instant::now() {
            monoio::time::sleep_until(monoio::time::Instant::from_std(plan.send_at)).await;
        }
        sent += 1;
        let sent_at = Instant::now();
        if conn.is_none() {
            let Ok(c) = Conn::connect(shared.addr, &shared.request, shared.timeout).await else {
                shared.fail(ErrorKind::Connect);
                monoio::time::sleep(RECONNECT_BACKOFF).await;
                continue;
            };
            conn = Some(c);
        }
        let Some(c) = conn.as_mut() else { continue };
        match monoio::time::timeout(shared.timeout, c.exchange(variant_header)).await {
            Ok(Ok(head)) => {
                let latency = plan.measure_from(sent_at).elapsed();
                shared.tally.borrow_mut().response(&head, latency);
                shared.counters.response(head.status);
                if head.close {
                    conn = None;
                }
            }
            Ok(Err(failure)) => {
                shared.fail(failure.kind());
                conn = None;
            }
            Err(_) => {
                shared.fail(ErrorKind::Timeout);
                conn = None;
            }
        }
    }
}

impl Shared {
    fn fail(&self, kind: ErrorKind) {
        self.tally.borrow_mut().errors.add(kind);
        self.counters.error();
    }
}
