//! A small closed-loop load driver for the split tests: several keep-alive connections,
//! each in its own thread, writing a few pipelined `GET /` per write and reading the same
//! number of responses back, tallying bodies (the upstream names) and failures.
//!
//! It is bounded in requests and in time: a stuck gateway turns into recorded errors
//! (socket timeouts), never a hung test.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::thread;

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
        let part = h.join().expect("load thread panicked");
        for (k, v) in part.bodies {
            *report.bodies.entry(k).or_default() += v;
        }
        for (k, v) in part.other_status {
            *report.other_status.entry(k).or_default() += v;
        }
        report.errors.extend(part.errors);
    }
    report
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
    let mut buf = Vec::with_capacity(one.len() * batch);
    while left > 0 {
        let k = left.min(batch as u64);
        buf.clear();
        for _ in 0..k {
            buf.extend_from_slice(one);
        }
        if let Err(e) = client.send(&buf) {
            report
                .errors
                .push(format!("send after {} responses: {e}", n - left));
            return report;
        }
        for _ in 0..k {
            match client.read_response(false) {
                Ok(r) if r.status == 200 => {
                    *report.bodies.entry(r.text()).or_default() += 1;
                }
                Ok(r) => *report.other_status.entry(r.status).or_default() += 1,
                Err(e) => {
                    report
                        .errors
                        .push(format!("read after {} responses: {e}", n - left));
                    return report;
                }
            }
        }
        left -= k;
    }
    report
}
