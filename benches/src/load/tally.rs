//! What a thread of the load generator counts: a latency histogram, status classes,
//! errors by kind and the variants seen. Each thread fills its own [`Tally`] without
//! sharing; they are merged once at the end. [`Counters`] are the few atomics the
//! progress line reads while the run goes on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::response::{Head, Seen};

/// Largest latency the histogram tracks, in microseconds (one hour); larger values are
/// clamped to it.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// Kinds of failed requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The TCP connect failed or timed out.
    Connect,
    /// Reading the response failed, or the server closed before it was complete.
    Read,
    /// Writing the request failed.
    Write,
    /// No complete response within `--timeout`.
    Timeout,
    /// A response that breaks HTTP/1.1 framing.
    Parse,
}

/// Failed requests by kind, and responses with an error status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Errors {
    /// TCP connect failed or timed out.
    pub connect: u64,
    /// Read failed or the connection closed mid-response.
    pub read: u64,
    /// Write failed.
    pub write: u64,
    /// No complete response within the timeout.
    pub timeout: u64,
    /// Responses with a 4xx status.
    pub status_4xx: u64,
    /// Responses with a 5xx status.
    pub status_5xx: u64,
    /// Malformed responses.
    pub parse: u64,
}

impl Errors {
    /// Counts one failed request.
    pub fn add(&mut self, kind: ErrorKind) {
        *match kind {
            ErrorKind::Connect => &mut self.connect,
            ErrorKind::Read => &mut self.read,
            ErrorKind::Write => &mut self.write,
            ErrorKind::Timeout => &mut self.timeout,
            ErrorKind::Parse => &mut self.parse,
        } += 1;
    }

    /// Everything that went wrong, error statuses included.
    pub fn total(&self) -> u64 {
        self.connect
            + self.read
            + self.write
            + self.timeout
            + self.status_4xx
            + self.status_5xx
            + self.parse
    }

    fn merge(&mut self, o: &Errors) {
        self.connect += o.connect;
        self.read += o.read;
        self.write += o.write;
        self.timeout += o.timeout;
        self.status_4xx += o.status_4xx;
        self.status_5xx += o.status_5xx;
        self.parse += o.parse;
    }
}

/// One thread's results.
#[derive(Clone, Debug)]
pub struct Tally {
    /// Latency of every complete response, in microseconds.
    pub latency: Histogram<u64>,
    /// Complete responses by status class: 1xx (unexpected final) .. 5xx.
    pub status: [u64; 5],
    /// Failures.
    pub errors: Errors,
    /// Responses by variant: stable, canary, other value, header missing.
    pub seen: [u64; 4],
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            latency: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .expect("constant histogram bounds are valid"),
            status: [0; 5],
            errors: Errors::default(),
            seen: [0; 4],
        }
    }
}

impl Tally {
    /// Counts a complete response that took `latency`.
    pub fn response(&mut self, head: &Head, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency.saturating_record(us.clamp(1, MAX_LATENCY_US));
        let class = usize::from(head.status / 100).clamp(1, 5) - 1;
        self.status[class] += 1;
        match class {
            3 => self.errors.status_4xx += 1,
            4 => self.errors.status_5xx += 1,
            _ => {}
        }
        self.seen[match head.seen {
            Seen::Stable => 0,
            Seen::Canary => 1,
            Seen::Other => 2,
            Seen::Missing => 3,
        }] += 1;
    }

    /// Complete responses of any status.
    pub fn responses(&self) -> u64 {
        self.status.iter().sum()
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Tally) {
        // Both histograms share bounds, so adding cannot fail; clamp if it ever would.
        if self.latency.add(&other.latency).is_err() {
            for v in other.latency.iter_recorded() {
                self.latency
                    .saturating_record_n(v.value_iterated_to(), v.count_at_value());
            }
        }
        for (a, b) in self.status.iter_mut().zip(other.status) {
            *a += b;
        }
        for (a, b) in self.seen.iter_mut().zip(other.seen) {
            *a += b;
        }
        self.errors.merge(&other.errors);
    }
}

/// Live counters of one thread, read by the progress line. Aligned so two threads never
/// write the same cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Counters {
    responses: AtomicU64,
    errors: AtomicU64,
}

impl Counters {
    /// Counts a complete response (error statuses also count as errors).
    pub fn response(&self, status: u16) {
        self.responses.fetch_add(1, Ordering::Relaxed);
        if status >= 400 {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a failed request.
    pub fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Responses and errors so far.
    pub fn read(&self) -> (u64, u64) {
        (
            self.responses.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
        )
    }
}
