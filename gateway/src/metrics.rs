//! Per-variant accounting, recorded per worker without locks and merged on read.
//!
//! Each worker owns one [`WorkerMetrics`] (shared with readers through an `Arc`). Every
//! field has a single writer, so recording is a relaxed load and store; readers sum
//! workers into a [`Stats`] snapshot whenever they ask.

mod histogram;

use std::sync::atomic::{AtomicU64, Ordering};

use gateway_common::{VARIANT_COUNT, Variant};
pub use hdrhistogram::Histogram;
pub use histogram::{AtomicHistogram, new_histogram};

/// A counter with one writer (its worker) and any number of readers.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning worker may call this.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Subtracts one (for gauges).
    #[inline]
    pub fn dec(&self) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_sub(1),
            Ordering::Relaxed,
        );
    }

    /// Current value.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Why a request was answered by the gateway itself instead of an upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Reject {
    /// 400: malformed or ambiguous request.
    BadRequest,
    /// 408: head not received in time.
    Timeout,
    /// 413: body over the limit.
    BodyTooLarge,
    /// 414 / 431: request line or head over the limit.
    HeadTooLarge,
    /// 417 / 501 / 505: something the gateway does not do.
    Unsupported,
}

/// Number of [`Reject`] kinds.
pub const REJECT_KINDS: usize = 5;

/// How an upstream exchange failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum UpstreamFailure {
    /// Connect refused or failed.
    Connect,
    /// Connect did not finish in time.
    ConnectTimeout,
    /// Connection closed or reset before a complete response.
    Closed,
    /// No answer in time.
    ResponseTimeout,
    /// The response was not valid HTTP/1.x.
    BadResponse,
}

/// Number of [`UpstreamFailure`] kinds.
pub const UPSTREAM_FAILURE_KINDS: usize = 5;

/// One worker's figures for one variant.
#[derive(Debug, Default)]
pub struct VariantMetrics {
    /// Requests routed to this variant.
    pub requests: Counter,
    /// Responses sent to clients by status class (1xx..5xx).
    pub responses: [Counter; 5],
    /// Upstream failures by kind.
    pub upstream_failures: [Counter; UPSTREAM_FAILURE_KINDS],
    /// Retries made after an upstream failure.
    pub retries: Counter,
    /// New upstream connections opened.
    pub upstream_connects: Counter,
    /// Requests sent on a pooled (reused) upstream connection.
    pub upstream_reuses: Counter,
    /// Bytes received from clients (heads and bodies).
    pub bytes_in: Counter,
    /// Bytes sent to clients (heads and bodies).
    pub bytes_out: Counter,
    /// Time from request head received to upstream response head received (µs).
    pub upstream_latency: AtomicHistogram,
    /// Time from request head received to response fully sent (µs).
    pub total_latency: AtomicHistogram,
}

/// Everything one worker records.
#[derive(Debug, Default)]
pub struct WorkerMetrics {
    /// Per-variant figures, indexed by [`Variant::index`].
    pub variants: [VariantMetrics; VARIANT_COUNT],
    /// Requests rejected before routing, by kind.
    pub rejected: [Counter; REJECT_KINDS],
    /// Client connections accepted.
    pub accepted: Counter,
    /// Client connections currently open (gauge).
    pub open: Counter,
}

impl WorkerMetrics {
    /// This worker's figures for `variant`.
    #[inline]
    pub fn variant(&self, variant: Variant) -> &VariantMetrics {
        &self.variants[variant.index()]
    }

    /// Reads a snapshot.
    pub fn snapshot(&self) -> WorkerStats {
        WorkerStats {
            variants: [self.variants[0].snapshot(), self.variants[1].snapshot()],
            rejected: self.rejected.each_ref().map(Counter::get),
            accepted: self.accepted.get(),
            open: self.open.get(),
        }
    }
}

impl VariantMetrics {
    fn snapshot(&self) -> VariantStats {
        let mut s = VariantStats {
            requests: self.requests.get(),
            responses: self.responses.each_ref().map(Counter::get),
            upstream_failures: self.upstream_failures.each_ref().map(Counter::get),
            retries: self.retries.get(),
            upstream_connects: self.upstream_connects.get(),
            upstream_reuses: self.upstream_reuses.get(),
            bytes_in: self.bytes_in.get(),
            bytes_out: self.bytes_out.get(),
            upstream_latency: new_histogram(),
            total_latency: new_histogram(),
        };
        self.upstream_latency.merge_into(&mut s.upstream_latency);
        self.total_latency.merge_into(&mut s.total_latency);
        s
    }
}

/// A point-in-time copy of one variant's figures.
#[derive(Clone, Debug)]
pub struct VariantStats {
    /// Requests routed to the variant.
    pub requests: u64,
    /// Responses by status class: index 0 is 1xx, 4 is 5xx.
    pub responses: [u64; 5],
    /// Upstream failures by [`UpstreamFailure`] kind.
    pub upstream_failures: [u64; UPSTREAM_FAILURE_KINDS],
    /// Retries after an upstream failure.
    pub retries: u64,
    /// New upstream connections.
    pub upstream_connects: u64,
    /// Requests on reused upstream connections.
    pub upstream_reuses: u64,
    /// Bytes from clients.
    pub bytes_in: u64,
    /// Bytes to clients.
    pub bytes_out: u64,
    /// Time to upstream response head, µs.
    pub upstream_latency: Histogram<u64>,
    /// Time to response fully sent, µs.
    pub total_latency: Histogram<u64>,
}

impl Default for VariantStats {
    fn default() -> Self {
        VariantStats {
            requests: 0,
            responses: [0; 5],
            upstream_failures: [0; UPSTREAM_FAILURE_KINDS],
            retries: 0,
            upstream_connects: 0,
            upstream_reuses: 0,
            bytes_in: 0,
            bytes_out: 0,
            upstream_latency: new_histogram(),
            total_latency: new_histogram(),
        }
    }
}

impl VariantStats {
    /// Total upstream failures of every kind.
    pub fn upstream_errors(&self) -> u64 {
        self.upstream_failures.iter().sum()
    }

    fn add(&mut self, other: &VariantStats) {
        self.requests += other.requests;
        for (a, b) in self.responses.iter_mut().zip(other.responses) {
            *a += b;
        }
        for (a, b) in self
            .upstream_failures
            .iter_mut()
            .zip(other.upstream_failures)
        {
            *a += b;
        }
        self.retries += other.retries;
        self.upstream_connects += other.upstream_connects;
        self.upstream_reuses += other.upstream_reuses;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.upstream_latency.add(&other.upstream_latency);
        let _ = self.total_latency.add(&other.total_latency);
    }
}

/// A point-in-time copy of one worker's figures.
#[derive(Clone, Debug, Default)]
pub struct WorkerStats {
    /// Per-variant figures, indexed by [`Variant::index`].
    pub variants: [VariantStats; VARIANT_COUNT],
    /// Requests rejected before routing, by [`Reject`] kind.
    pub rejected: [u64; REJECT_KINDS],
    /// Client connections accepted.
    pub accepted: u64,
    /// Client connections open.
    pub open: u64,
}

/// Figures of every worker, as read at one moment.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// One entry per worker, in worker order.
    pub workers: Vec<WorkerStats>,
}

impl Stats {
    /// `variant`'s figures summed over all workers.
    pub fn variant(&self, variant: Variant) -> VariantStats {
        let mut total = VariantStats::default();
        for w in &self.workers {
            total.add(&w.variants[variant.index()]);
        }
        total
    }

    /// Rejected requests of every kind, summed over workers.
    pub fn rejected(&self) -> [u64; REJECT_KINDS] {
        let mut out = [0; REJECT_KINDS];
        for w in &self.workers {
            for (a, b) in out.iter_mut().zip(w.rejected) {
                *a += b;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_sums_workers() {
        let a = WorkerMetrics::default();
        let b = WorkerMetrics::default();
        a.variant(Variant::Canary).requests.add(3);
        b.variant(Variant::Canary).requests.add(4);
        b.variant(Variant::Canary).total_latency.record(250);
        a.rejected[Reject::Timeout as usize].inc();
        let stats = Stats {
            workers: vec![a.snapshot(), b.snapshot()],
        };
        let canary = stats.variant(Variant::Canary);
        assert_eq!(canary.requests, 7);
        assert_eq!(canary.total_latency.len(), 1);
        assert_eq!(stats.variant(Variant::Stable).requests, 0);
        assert_eq!(stats.rejected()[Reject::Timeout as usize], 1);
    }
}
