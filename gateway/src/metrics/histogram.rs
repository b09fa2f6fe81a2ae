//! A latency histogram one worker records into and any thread reads, without locks.
//!
//! Log-linear buckets (64 per power of two, under 1.6 % relative error) of relaxed atomic
//! counters. Recording is a load and a store on one counter: each histogram has exactly one
//! writer (its worker), so no read-modify-write instruction is needed. Readers convert the
//! buckets into an [`hdrhistogram::Histogram`] for percentiles and merging across workers.

use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;

const SUB_BITS: u32 = 6;
const SUB: usize = 1 << SUB_BITS;
/// Largest recordable value (µs): about 19 hours; larger values are clamped.
pub(crate) const MAX_VALUE: u64 = (1 << 36) - 1;
const BUCKETS: usize = bucket_index(MAX_VALUE) + 1;

/// Bucket of `v`: exact below 128, then 64 buckets per power of two.
#[inline]
const fn bucket_index(v: u64) -> usize {
    if v < (2 * SUB) as u64 {
        return v as usize;
    }
    let e = v.ilog2();
    let shift = e - SUB_BITS;
    (shift as usize) * SUB + (v >> shift) as usize
}

/// Midpoint of the values that fall in bucket `idx`.
const fn bucket_value(idx: usize) -> u64 {
    if idx < 2 * SUB {
        return idx as u64;
    }
    let shift = idx / SUB - 1;
    let sub = (idx - shift * SUB) as u64;
    (sub << shift) + ((1u64 << shift) >> 1)
}

/// Single-writer, many-reader latency histogram in microseconds.
pub struct AtomicHistogram {
    buckets: Box<[AtomicU64]>,
}

impl Default for AtomicHistogram {
    fn default() -> Self {
        AtomicHistogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl std::fmt::Debug for AtomicHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AtomicHistogram")
            .field("buckets", &self.buckets.len())
            .finish()
    }
}

impl AtomicHistogram {
    /// Records one value. Only the owning worker may call this (single writer).
    #[inline]
    pub fn record(&self, micros: u64) {
        let cell = &self.buckets[bucket_index(micros.min(MAX_VALUE))];
        cell.store(cell.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// Adds every recorded value into `into`.
    pub fn merge_into(&self, into: &mut Histogram<u64>) {
        for (idx, cell) in self.buckets.iter().enumerate() {
            let n = cell.load(Ordering::Relaxed);
            if n > 0 {
                // Bounds are set by `new_histogram`; values never exceed them.
                let _ = into.record_n(bucket_value(idx).max(1), n);
            }
        }
    }
}

/// An empty histogram with the bounds every reader uses (1 µs .. ~19 h, 2 digits).
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_VALUE, 2).expect("static histogram bounds are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotone_and_tight() {
        let mut last = 0;
        for v in (0..2_000_000u64).step_by(7).chain([MAX_VALUE]) {
            let idx = bucket_index(v);
            assert!(idx >= last, "index went down at {v}");
            last = idx;
            let mid = bucket_value(idx);
            let err = mid.abs_diff(v) as f64 / v.max(1) as f64;
            assert!(err <= 0.016, "value {v} -> bucket value {mid}");
        }
        assert!(bucket_index(MAX_VALUE) < BUCKETS);
    }

    #[test]
    fn percentiles_survive_merge() {
        let h = AtomicHistogram::default();
        for v in 1..=10_000 {
            h.record(v);
        }
        let mut out = new_histogram();
        h.merge_into(&mut out);
        assert_eq!(out.len(), 10_000);
        let p50 = out.value_at_quantile(0.5) as f64;
        let p99 = out.value_at_quantile(0.99) as f64;
        assert!((p50 - 5_000.0).abs() / 5_000.0 < 0.03, "p50 {p50}");
        assert!((p99 - 9_900.0).abs() / 9_900.0 < 0.03, "p99 {p99}");
    }
}
