//! The load generator's result: what a person reads (`print`) and what a script reads
//! (`--json`, the same struct serialized).

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::tally::{Errors, Tally};
use crate::stats::{ChiSquare, SPLIT_ALPHA, split_test};

/// Latency percentiles in microseconds, from the merged HDR histogram.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
    /// Mean.
    pub mean: f64,
}

/// Complete responses by status class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Status {
    /// 1xx as a final answer (never expected).
    #[serde(rename = "1xx")]
    pub s1xx: u64,
    /// 2xx.
    #[serde(rename = "2xx")]
    pub s2xx: u64,
    /// 3xx.
    #[serde(rename = "3xx")]
    pub s3xx: u64,
    /// 4xx.
    #[serde(rename = "4xx")]
    pub s4xx: u64,
    /// 5xx.
    #[serde(rename = "5xx")]
    pub s5xx: u64,
}

/// The split observed through the variant header, and its test.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Variants {
    /// Response header read.
    pub header: String,
    /// Responses saying `stable`.
    pub stable: u64,
    /// Responses saying `canary`.
    pub canary: u64,
    /// Responses with another value.
    pub other: u64,
    /// Responses without the header.
    pub missing: u64,
    /// `canary / (stable + canary)` in percent.
    pub canary_percent: f64,
    /// `--expect-canary-percent`.
    pub expected_canary_percent: Option<f64>,
    /// Chi-square test (1 dof) of stable/canary against the expected share.
    pub split_test: Option<ChiSquare>,
}

/// Everything one run measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// Target URL.
    pub url: String,
    /// `closed` (as fast as possible) or `open` (fixed rate, latency from intended time).
    pub mode: &'static str,
    /// Requests per second asked for in open loop.
    pub rate: Option<f64>,
    /// Connections.
    pub connections: usize,
    /// Threads (one monoio runtime each).
    pub threads: usize,
    /// Seconds from the first request to the last response.
    pub elapsed_s: f64,
    /// Complete responses, any status.
    pub requests: u64,
    /// `requests / elapsed_s`.
    pub rps: f64,
    /// Latency of complete responses, microseconds.
    pub latency_us: Latency,
    /// Responses by status class.
    pub status: Status,
    /// Failures by kind (error statuses included).
    pub errors: Errors,
    /// Sum of `errors`.
    pub errors_total: u64,
    /// Variant split, when `--variant-header` was given.
    pub variants: Option<Variants>,
}

/// How the run was set up, for the report.
#[derive(Clone, Debug)]
pub struct RunInfo {
    /// Target URL.
    pub url: String,
    /// Open-loop rate.
    pub rate: Option<f64>,
    /// Connections.
    pub connections: usize,
    /// Threads.
    pub threads: usize,
    /// Variant header read.
    pub variant_header: Option<String>,
    /// Expected canary share in percent.
    pub expect_canary_percent: Option<f64>,
}

impl Report {
    /// Builds the report from the merged tally and the measured wall time.
    pub fn new(info: &RunInfo, tally: &Tally, elapsed: Duration) -> Report {
        let h = &tally.latency;
        let latency = if h.is_empty() {
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
        let [s1xx, s2xx, s3xx, s4xx, s5xx] = tally.status;
        let requests = tally.responses();
        let secs = elapsed.as_secs_f64();
        let variants = info.variant_header.as_ref().map(|header| {
            let [stable, canary, other, missing] = tally.seen;
            let routed = stable + canary;
            Variants {
                header: header.clone(),
                stable,
                canary,
                other,
                missing,
                canary_percent: if routed == 0 {
                    0.0
                } else {
                    canary as f64 * 100.0 / routed as f64
                },
                expected_canary_percent: info.expect_canary_percent,
                split_test: info
                    .expect_canary_percent
                    .and_then(|p| split_test(stable, canary, p / 100.0)),
            }
        });
        Report {
            url: info.url.clone(),
            mode: if info.rate.is_some() {
                "open"
            } else {
                "closed"
            },
            rate: info.rate,
            connections: info.connections,
            threads: info.threads,
            elapsed_s: secs,
            requests,
            rps: if secs > 0.0 {
                requests as f64 / secs
            } else {
                0.0
            },
            latency_us: latency,
            status: Status {
                s1xx,
                s2xx,
                s3xx,
                s4xx,
                s5xx,
            },
            errors: tally.errors,
            errors_total: tally.errors.total(),
            variants,
        }
    }

    /// False when the split test failed or no request succeeded: the exit code says so.
    pub fn ok(&self) -> bool {
        let split_ok = self
            .variants
            .as_ref()
            .and_then(|v| v.split_test)
            .is_none_or(|t| t.pass);
        split_ok && self.status.s2xx + self.status.s3xx > 0
    }

    /// The report as text, one aspect per line.
    pub fn human(&self) -> String {
        let mut out = String::new();
        let mode = match self.rate {
            Some(r) => format!("open loop at {r} req/s (latency from intended send time)"),
            None => "closed loop".to_owned(),
        };
        let _ = writeln!(
            out,
            "cg-load {}: {} connections, {} threads, {mode}",
            self.url, self.connections, self.threads
        );
        let _ = writeln!(
            out,
            "  requests   {} in {:.2} s = {:.1} req/s",
            self.requests, self.elapsed_s, self.rps
        );
        let lat = &self.latency_us;
        let _ = writeln!(
            out,
            "  latency    p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (mean {})",
            us(lat.p50),
            us(lat.p90),
            us(lat.p99),
            us(lat.p999),
            us(lat.max),
            us(lat.mean.round() as u64)
        );
        let st = &self.status;
        let _ = writeln!(
            out,
            "  status     2xx {}  3xx {}  4xx {}  5xx {}  1xx {}",
            st.s2xx, st.s3xx, st.s4xx, st.s5xx, st.s1xx
        );
        let err = &self.errors;
        let _ = writeln!(
            out,
            "  errors     {} (connect {}, read {}, write {}, timeout {}, status 4xx {}, status 5xx {}, parse {})",
            self.errors_total,
            err.connect,
            err.read,
            err.write,
            err.timeout,
            err.status_4xx,
            err.status_5xx,
            err.parse
        );
        if let Some(var) = &self.variants {
            let _ = writeln!(
                out,
                "  variants   {}: stable {}, canary {} ({:.3}% canary), other {}, missing {}",
                var.header, var.stable, var.canary, var.canary_percent, var.other, var.missing
            );
            match (var.expected_canary_percent, var.split_test) {
                (Some(pct), Some(test)) => {
                    let _ = writeln!(
                        out,
                        "  split      expected {pct}% canary: chi-square {:.3} (1 dof), p = {:.4} -> {} at alpha {SPLIT_ALPHA}",
                        test.statistic,
                        test.p_value,
                        if test.pass { "pass" } else { "FAIL" }
                    );
                }
                (Some(pct), None) => {
                    let _ = writeln!(
                        out,
                        "  split      expected {pct}% canary: no stable or canary responses to test"
                    );
                }
                _ => {}
            }
        }
        out
    }
}

/// Microseconds, shown in the unit that keeps three significant digits readable.
pub fn us(v: u64) -> String {
    if v >= 10_000_000 {
        format!("{:.2}s", v as f64 / 1e6)
    } else if v >= 10_000 {
        format!("{:.2}ms", v as f64 / 1e3)
    } else {
        format!("{v}µs")
    }
}
