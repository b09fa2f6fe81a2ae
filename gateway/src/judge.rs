//! The canary judge: compares what the canary and the stable deployment did during one
//! window (a rollout step) and returns a verdict with the statistics behind it.
//!
//! Runs on the control plane only ([`crate::rollout`] calls it at the end of each step),
//! never on the data path. Everything here is a pure function of two [`Sample`]s and the
//! [`Criteria`], so it is tested without sockets or clocks.
//!
//! - **Latency**: Mann-Whitney U on the two latency histograms (the buckets are the tied
//!   values), one-sided "canary slower". It fails the canary only when the difference is
//!   significant at the configured confidence (Kayenta's default 0.95) *and* the canary's
//!   median is worse than the stable median by more than the tolerance (relative and
//!   absolute), so a tiny but significant difference is only `Marginal`.
//! - **Errors**: 5xx responses over all responses, compared with a two-proportion z-test,
//!   or Fisher's exact test when an expected count is below 5; same significance plus
//!   tolerance rule.
//! - **Absolute bounds** (optional): canary p99 latency and error rate.
//! - **Kernel signals** (when kernel accounting runs): retransmit rates and RTT, reported,
//!   and an optional bound on the canary's retransmit rate.

pub(crate) mod sequential;
pub(crate) mod stats;
mod verdict;

#[cfg(test)]
mod simulation;
#[cfg(test)]
mod tests;

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

use crate::metrics::{Histogram, VariantStats, new_histogram};
pub(crate) use verdict::judge;

/// What the judge can say about a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Verdict {
    /// No significant difference, or better.
    Pass,
    /// A significant difference within the tolerance: the rollout goes on, flagged.
    Marginal,
    /// Too few samples to say anything: the step is held.
    Inconclusive,
    /// Significantly and materially worse, or an absolute bound broken: roll back.
    Fail,
}

impl Verdict {
    /// Lower-case name used in replies, logs and metrics.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Marginal => "marginal",
            Verdict::Inconclusive => "inconclusive",
            Verdict::Fail => "fail",
        }
    }

    /// Every verdict, for metrics.
    pub(crate) const ALL: [Verdict; 4] = [
        Verdict::Pass,
        Verdict::Marginal,
        Verdict::Inconclusive,
        Verdict::Fail,
    ];

    /// The verdict named `name` (the inverse of [`Verdict::as_str`]).
    pub(crate) fn parse(name: &str) -> Option<Verdict> {
        Verdict::ALL.into_iter().find(|v| v.as_str() == name)
    }
}

/// How the judge decides. Defaults follow Kayenta: confidence 0.95.
#[derive(Clone, Debug, PartialEq)]
pub struct Criteria {
    /// Confidence level of the tests (p-value threshold is `1 - confidence`).
    pub confidence: f64,
    /// Requests each variant needs in the window before the judge says anything.
    pub min_requests: u64,
    /// Allowed relative increase of the canary's median latency (0.1 = 10 %).
    pub latency_tolerance: f64,
    /// Allowed absolute increase of the canary's median latency.
    pub latency_tolerance_abs: Duration,
    /// Allowed absolute increase of the canary's error rate (0.01 = one percentage point).
    pub error_tolerance: f64,
    /// Canary p99 latency above this fails the step, whatever stable does.
    pub max_p99: Option<Duration>,
    /// Canary error rate above this fails the step, whatever stable does.
    pub max_error_rate: Option<f64>,
    /// Canary TCP retransmit rate (retransmitted / sent segments) above this fails the
    /// step; needs kernel accounting.
    pub max_retransmit_rate: Option<f64>,
    /// More passive outlier ejections of canary endpoints than this in the step's
    /// window fail it (0: no canary endpoint may be ejected); needs `outlier` settings.
    pub max_canary_ejections: Option<u64>,
}

impl Eq for Criteria {}

impl Default for Criteria {
    fn default() -> Self {
        Criteria {
            confidence: 0.95,
            min_requests: 100,
            latency_tolerance: 0.1,
            latency_tolerance_abs: Duration::from_millis(1),
            error_tolerance: 0.01,
            max_p99: None,
            max_error_rate: None,
            max_retransmit_rate: None,
            max_canary_ejections: None,
        }
    }
}

/// What one variant did during a window.
#[derive(Clone, Debug)]
pub(crate) struct Sample {
    /// Requests routed to the variant.
    pub requests: u64,
    /// Responses sent (any status).
    pub responses: u64,
    /// 5xx responses, including the gateway's own 502/504 for upstream failures.
    pub errors: u64,
    /// Latency (µs) from request head to response sent.
    pub latency: Histogram<u64>,
    /// Passive outlier ejections of the variant's endpoints.
    pub ejections: u64,
}

impl Default for Sample {
    fn default() -> Self {
        Sample {
            requests: 0,
            responses: 0,
            errors: 0,
            latency: new_histogram(),
            ejections: 0,
        }
    }
}

impl Sample {
    /// `n` responses, `errors` of them 5xx, all with latency `latency_us` (for tests).
    #[cfg(test)]
    pub(crate) fn uniform(n: u64, errors: u64, latency_us: u64) -> Sample {
        let mut s = Sample {
            requests: n,
            responses: n,
            errors,
            ..Sample::default()
        };
        s.latency
            .record_n(latency_us, n)
            .expect("latency within the histogram's range");
        s
    }

    /// What happened between two snapshots of the same variant's counters.
    pub(crate) fn between(before: &VariantStats, after: &VariantStats) -> Sample {
        let responses = |v: &VariantStats| v.responses.iter().sum::<u64>();
        let mut latency = after.total_latency.clone();
        // Counters only grow, so `before` is contained in `after`; if not (a counter was
        // reset), the window is the later snapshot alone.
        if latency.subtract(&before.total_latency).is_err() {
            latency = after.total_latency.clone();
        }
        Sample {
            requests: after.requests.saturating_sub(before.requests),
            responses: responses(after).saturating_sub(responses(before)),
            // A gRPC error comes in an HTTP 200, so the two never count one call twice.
            errors: after.responses[4].saturating_sub(before.responses[4])
                + after.grpc_errors.saturating_sub(before.grpc_errors),
            latency,
            ejections: after.ejections.saturating_sub(before.ejections),
        }
    }

    /// The latency histogram as a weighted sample `(µs, count)`.
    pub(crate) fn latency_sample(&self) -> Vec<(u64, u64)> {
        histogram_sample(&self.latency)
    }

    /// Share of responses that were 5xx or gRPC errors (0 without responses).
    pub(crate) fn error_rate(&self) -> f64 {
        if self.responses == 0 {
            0.0
        } else {
            self.errors as f64 / self.responses as f64
        }
    }

    fn quantile(&self, q: f64) -> Option<u64> {
        (!self.latency.is_empty()).then(|| self.latency.value_at_quantile(q))
    }

    fn json(&self) -> Value {
        json!({
            "requests": self.requests,
            "responses": self.responses,
            "errors": self.errors,
            "error_rate": self.error_rate(),
            "ejections": self.ejections,
            "p50_us": self.quantile(0.5),
            "p99_us": self.quantile(0.99),
        })
    }
}

/// A histogram's recorded buckets as a weighted sample, in value order.
pub(crate) fn histogram_sample(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

/// Kernel figures of one window, per variant (process-wide: the kernel does not know
/// routes).
#[derive(Clone, Debug, Default)]
pub(crate) struct KernelWindow {
    /// Segments sent by the variant's upstream sockets.
    pub segs_out: [u64; 2],
    /// Segments retransmitted.
    pub retrans: [u64; 2],
    /// RTT samples (µs) as weighted samples.
    pub rtt: [Vec<(u64, u64)>; 2],
}

/// The latency comparison of a window.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct LatencyTest {
    /// The Mann-Whitney test of canary against stable.
    pub test: stats::MannWhitney,
    /// Canary median (µs).
    pub canary_median_us: f64,
    /// Stable median (µs).
    pub stable_median_us: f64,
}

impl LatencyTest {
    /// Canary median over stable median.
    pub(crate) fn median_ratio(&self) -> f64 {
        if self.stable_median_us > 0.0 {
            self.canary_median_us / self.stable_median_us
        } else {
            f64::INFINITY
        }
    }
}

/// A verdict with everything it was based on.
#[derive(Clone, Debug)]
pub(crate) struct Judgement {
    /// The verdict.
    pub verdict: Verdict,
    /// Why, one phrase per finding (empty for a clean pass).
    pub reasons: Vec<String>,
    /// The stable deployment's window.
    pub stable: Sample,
    /// The canary's window.
    pub canary: Sample,
    /// Latency comparison, when both variants have samples.
    pub latency: Option<LatencyTest>,
    /// Error-rate comparison, when both variants have responses.
    pub errors: Option<stats::Proportions>,
    /// Kernel signals: retransmit-rate comparison and RTT comparison.
    pub kernel: Option<(Option<stats::Proportions>, Option<stats::MannWhitney>)>,
    /// The sequential judge's figures (when it gave the verdict).
    pub sequential: Option<sequential::Assessment>,
}

impl Judgement {
    /// One line: verdict, reasons and the key figures.
    pub(crate) fn summary(&self) -> String {
        let mut s = format!(
            "{} (canary {} req, {:.2}% 5xx; stable {} req, {:.2}% 5xx",
            self.verdict.as_str(),
            self.canary.requests,
            100.0 * self.canary.error_rate(),
            self.stable.requests,
            100.0 * self.stable.error_rate()
        );
        if self.canary.ejections > 0 {
            let _ = write!(s, "; {} canary ejections", self.canary.ejections);
        }
        if let Some(l) = &self.latency {
            let _ = write!(
                s,
                "; median {:.0}us vs {:.0}us, U={:.1}, p={:.3e}, delta={:.3}",
                l.canary_median_us,
                l.stable_median_us,
                l.test.u,
                l.test.p_greater,
                l.test.cliffs_delta
            );
        }
        if let Some(e) = &self.errors {
            let _ = write!(s, "; errors {} p={:.3e}", e.test.as_str(), e.p_greater);
        }
        if let Some(a) = &self.sequential {
            let _ = write!(s, "; {}", a.summary());
        }
        s.push(')');
        if !self.reasons.is_empty() {
            s.push_str(": ");
            s.push_str(&self.reasons.join("; "));
        }
        s
    }

    /// Everything, as JSON (for `show rollout json`).
    pub(crate) fn json(&self) -> Value {
        let latency = self.latency.as_ref().map(|l| {
            json!({
                "test": "mann-whitney-u",
                "u": l.test.u,
                "n_canary": l.test.n_x,
                "n_stable": l.test.n_y,
                "p_two_sided": l.test.p_two_sided,
                "p_canary_slower": l.test.p_greater,
                "cliffs_delta": l.test.cliffs_delta,
                "canary_median_us": l.canary_median_us,
                "stable_median_us": l.stable_median_us,
                "median_ratio": finite(l.median_ratio()),
            })
        });
        let errors = self.errors.as_ref().map(proportions_json);
        let kernel = self.kernel.as_ref().map(|(retrans, rtt)| {
            json!({
                "retransmits": retrans.as_ref().map(proportions_json),
                "rtt": rtt.as_ref().map(|t| json!({"u": t.u, "p_two_sided": t.p_two_sided, "p_canary_slower": t.p_greater, "cliffs_delta": t.cliffs_delta})),
            })
        });
        json!({
            "verdict": self.verdict.as_str(),
            "reasons": self.reasons,
            "canary": self.canary.json(),
            "stable": self.stable.json(),
            "latency": latency,
            "errors": errors,
            "kernel": kernel,
            "sequential": self.sequential.as_ref().map(sequential::Assessment::json),
        })
    }
}

fn proportions_json(p: &stats::Proportions) -> Value {
    json!({
        "test": p.test.as_str(),
        "canary_rate": p.rate_x,
        "stable_rate": p.rate_y,
        "z": p.z,
        "p_two_sided": p.p_two_sided,
        "p_canary_worse": p.p_greater,
    })
}

fn finite(x: f64) -> Value {
    if x.is_finite() { json!(x) } else { Value::Null }
}
