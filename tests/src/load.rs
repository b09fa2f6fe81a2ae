//! A small closed-loop load driver for the split and hitless tests: several keep-alive
//! connections, each in its own thread, writing a few pipelined `GET /` per write and
//! reading the same number of responses back, tallying bodies (the upstream names) and
//! failures.
//!
//! It is bounded in requests ([`pipelined_gets`]) or by a stop flag and a time limit
//! ([`BackgroundLoad`]): a stuck gateway turns into recorded errors (socket timeouts),
//! never a hung test. A connection is never re-opened: a connection the gateway drops is
//! an error.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::client::{Client, get_request};

/// Outcome of one load run.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Responses with status 200, by body.
    pub bodies: BTreeMap<String, u64>,
    /// Responses with another status, by status.
    pub other_status: BTreeMap<u16, u64>,
    /// Transport or framing errors (one entry per failed connection).
    pub errors: Vec<String>,
}

impl LoadReport {
    /// Adds `other`'s tallies to this one.
    pub fn merge(&mut self, other: LoadReport) {
        for (k, v) in other.bodies {
            *self.bodies.entry(k).or_default() += v;
        }
        for (k, v) in other.other_status {
            *self.other_status.entry(k).or_default() += v;
        }
        self.errors.extend(other.errors);
    }

    /// 200 responses whose body was `name`.
    pub fn count(&self, name: &str) -> u64 {
        self.bodies.get(name).copied().unwrap_or(0)
    }

    /// All responses received.
    pub fn responses(&self) -> u64 {
        self.bodies.values().sum::<u64>() + self.other_status.values().sum::<u64>()
    }

    /// Whether every request got a 200.
    pub fn all_ok(&self) -> bool {
        self.other_status.is_empty() && self.errors.is_empty()
    }
}

/// Sends `total` `GET path` requests over `conns` keep-alive connections, `batch` requests
/// per write (pipelined), and reads every response.
pub fn pipelined_gets(
    addr: SocketAddr,
    path: &str,
    conns: usize,
    total: u64,
    batch: usize,
) -> LoadReport {
    let per_conn = total / conns as u64;
    let extra = total % conns as u64;
    let one = get_request(path);
    let handles: Vec<_> = (0..conns)
        .map(|i| {
            let n = per_conn + u64::from((i as u64) < extra);
            let one = one.clone();
            thread::spawn(move || drive(addr, &one, n, batch))
        })
        .collect();
    let mut report = LoadReport::default();
    for h in handles {
        report.merge(h.join().expect("load thread panicked"));
    }
    report
}

/// Load that runs in background threads until [`BackgroundLoad::finish`] (or its time
/// limit), each thread on one keep-alive connection for its whole life.
#[derive(Debug)]
pub struct BackgroundLoad {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<LoadReport>>,
}

impl BackgroundLoad {
    /// Starts `conns` threads that each connect once and then send `GET path` in
    /// pipelined batches of `batch` until stopped or until `limit` has passed.
    pub fn start(
        addr: SocketAddr,
        path: &str,
        conns: usize,
        batch: usize,
        limit: Duration,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let one = get_request(path);
        let deadline = Instant::now() + limit;
        let threads = (0..conns)
            .map(|_| {
                let (stop, one) = (Arc::clone(&stop), one.clone());
                thread::spawn(move || {
                    let mut report = LoadReport::default();
                    let mut client = match Client::connect(addr) {
                        Ok(c) => c,
                        Err(e) => {
                            report.errors.push(format!("connect: {e}"));
                            return report;
                        }
                    };
                    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                        if !batch_on(&mut client, &one, batch, &mut report) {
                            break;
                        }
                    }
                    report
                })
            })
            .collect();
        Self { stop, threads }
    }

    /// Stops the threads and adds up what they saw.
    pub fn finish(self) -> LoadReport {
        self.stop.store(true, Ordering::SeqCst);
        let mut report = LoadReport::default();
        for t in self.threads {
            report.merge(t.join().expect("load thread panicked"));
        }
        report
    }
}

fn drive(addr: SocketAddr, one: &[u8], n: u64, batch: usize) -> LoadReport {
    let mut report = LoadReport::default();
    let mut client = match Client::connect(addr) {
        Ok(c) => c,
        Err(e) => {
            report.errors.push(format!("connect: {e}"));
            return report;
        }
    };
    let mut left = n;
    while left > 0 {
        let k = left.min(batch as u64);
        if !batch_on(&mut client, one, k as usize, &mut report) {
            return report;
        }
        left -= k;
    }
    report
}

/// Writes `k` copies of `one` at once and reads `k` responses, tallying them; false after
/// a transport error (recorded in `report`).
fn batch_on(client: &mut Client, one: &[u8], k: usize, report: &mut LoadReport) -> bool {
    let done = report.responses();
    if let Err(e) = client.send(&one.repeat(k)) {
        report
            .errors
            .push(format!("send after {done} responses: {e}"));
        return false;
    }
    for _ in 0..k {
        match client.read_response(false) {
            Ok(r) if r.status == 200 => *report.bodies.entry(r.text()).or_default() += 1,
            Ok(r) => *report.other_status.entry(r.status).or_default() += 1,
            Err(e) => {
                let done = report.responses();
                report
                    .errors
                    .push(format!("read after {done} responses: {e}"));
                return false;
            }
        }
    }
    true
}
