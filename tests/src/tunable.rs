//! An upstream whose health can be changed while a test runs: an added delay and a share
//! of failing (500, or the status set) answers, both atomics read on every request. The rollout tests put one
//! behind the canary to make it slow, flaky, or dead in the middle of a rollout.
//!
//! Every `GET` on any path is answered `200` with the upstream's name as the body, unless
//! it is one of the failing ones: with a failure share of `f` per mille, request `k`
//! (counted from 0 across all connections) fails when `floor((k + 1) f / 1000)` exceeds
//! `floor(k f / 1000)`, so failures are spread evenly and exactly `f` of every 1000
//! requests fail. Connections are kept alive, one thread each; request bodies are not
//! expected (the rollout tests only send `GET`).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::wire::{BufConn, MAX_HEAD};

#[derive(Debug)]
struct Shared {
    name: String,
    delay_us: AtomicU64,
    fail_per_mille: AtomicU32,
    fail_status: AtomicU32,
    requests: AtomicU64,
    failed: AtomicU64,
    stop: AtomicBool,
}

/// A running tunable upstream on an ephemeral loopback port; stops on drop.
#[derive(Debug)]
pub struct TunableUpstream {
    shared: Arc<Shared>,
    addr: SocketAddr,
    acceptor: Option<JoinHandle<()>>,
}

impl TunableUpstream {
    /// Starts a healthy upstream answering `name`.
    pub fn start(name: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind tunable upstream");
        let addr = listener.local_addr().expect("tunable upstream addr");
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            delay_us: AtomicU64::new(0),
            fail_per_mille: AtomicU32::new(0),
            fail_status: AtomicU32::new(500),
            requests: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("tunable-{name}"))
                .spawn(move || {
                    for stream in listener.incoming() {
                        if shared.stop.load(Ordering::SeqCst) {
                            return;
                        }
                        let Ok(stream) = stream else { continue };
                        let shared = Arc::clone(&shared);
                        let _ = thread::Builder::new()
                            .name("tunable-conn".into())
                            .spawn(move || serve(&shared, stream));
                    }
                })
                .expect("spawn tunable acceptor")
        };
        Self {
            shared,
            addr,
            acceptor: Some(acceptor),
        }
    }

    /// Listening address as the configuration takes it.
    pub fn addr_str(&self) -> String {
        self.addr.to_string()
    }

    /// Adds `delay` before every answer from now on.
    pub fn set_delay(&self, delay: Duration) {
        let us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.shared.delay_us.store(us, Ordering::SeqCst);
    }

    /// Makes `per_mille` of every 1000 requests from now on fail with 500 (1000: all).
    pub fn set_fail_per_mille(&self, per_mille: u32) {
        self.shared
            .fail_per_mille
            .store(per_mille.min(1000), Ordering::SeqCst);
    }

    /// Makes failing answers carry `status` (500 until set).
    pub fn set_fail_status(&self, status: u16) {
        self.shared
            .fail_status
            .store(u32::from(status), Ordering::SeqCst);
    }

    /// Requests answered so far.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Requests answered with 500 so far.
    pub fn failed(&self) -> u64 {
        self.shared.failed.load(Ordering::SeqCst)
    }
}

impl Drop for TunableUpstream {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
    }
}

fn serve(shared: &Shared, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    let mut conn = BufConn::new(stream);
    while !shared.stop.load(Ordering::SeqCst) {
        let Ok(Some(_head)) = conn.read_head(MAX_HEAD) else {
            return;
        };
        let delay = shared.delay_us.load(Ordering::SeqCst);
        if delay > 0 {
            thread::sleep(Duration::from_micros(delay));
        }
        let k = shared.requests.fetch_add(1, Ordering::SeqCst);
        let f = u64::from(shared.fail_per_mille.load(Ordering::SeqCst));
        let fails = (k + 1) * f / 1000 > k * f / 1000;
        let (status, body) = if fails {
            shared.failed.fetch_add(1, Ordering::SeqCst);
            let code = shared.fail_status.load(Ordering::SeqCst);
            (format!("{code} Failing"), "failed")
        } else {
            ("200 OK".to_owned(), shared.name.as_str())
        };
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nx-upstream: {}\r\n\r\n{body}",
            body.len(),
            shared.name
        );
        if conn.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}
