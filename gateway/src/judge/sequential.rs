//! The sequential, anytime-valid judge (the default): it looks at a rollout after every
//! batch of traffic (every [`crate::rollout::machine::BATCH`]) and fails the canary the
//! moment a regression beyond the tolerance is significant, with no minimum sample;
//! it passes a step once the step's minimum duration is over and its confidence sequences
//! rule out a regression beyond the tolerance.
//!
//! Three tests, each an e-process over the *whole rollout* (one sequence across steps, so
//! the number of steps and of looks costs nothing; see [`math`] for the derivations):
//! - latency: [`math::LabelTest`], canary values shifted down by the tolerance first;
//! - errors (5xx, the gateway's own 502/504 included): [`math::RateTest`] on the two error
//!   counts with the requests as exposures, and the confidence sequences of the two error
//!   rates for the size of the difference;
//! - TCP retransmits, when kernel accounting runs: [`math::RateTest`] with segments sent as
//!   exposures.
//!
//! **Error budget.** The chance that a canary that is as good as stable fails anywhere in
//! the rollout is at most `alpha = 1 - confidence`: `alpha` is split evenly between the
//! tests (latency, errors, retransmits when on, and the absolute bounds when any is set);
//! each test's share is its Ville threshold for the whole rollout. Only the absolute
//! bounds are judged per window (one-sample questions on the step's window, which starts
//! again at each step and each resume): their share is split between the bounds set, and
//! the `j`-th window gets `6 / (π² j²)` of it, a schedule that sums to the whole.

pub(crate) mod math;

#[cfg(test)]
mod tests;

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::{Criteria, KernelWindow, Sample};
use math::{Band, LabelTest, RateTest, proportion_cs, quantile_interval};

/// Quantiles reported with confidence bounds.
pub(crate) const QUANTILES: [f64; 3] = [0.5, 0.9, 0.99];

/// How the error budget is split.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Budget {
    /// Latency test's share of alpha.
    pub latency: f64,
    /// Error test's share.
    pub errors: f64,
    /// Retransmit test's share (kernel accounting on at the start).
    pub retransmits: Option<f64>,
    /// Each absolute bound's share over the whole rollout (when any is set).
    pub per_bound: Option<f64>,
}

impl Budget {
    /// Each absolute bound's share in the `window`-th window (from 1).
    pub(crate) fn bound_in_window(&self, window: u32) -> Option<f64> {
        let j = f64::from(window.max(1));
        self.per_bound
            .map(|share| share * 6.0 / (std::f64::consts::PI * std::f64::consts::PI * j * j))
    }
}

impl Budget {
    /// `alpha` split between the tests a rollout runs.
    pub(crate) fn new(criteria: &Criteria, kernel: bool) -> Budget {
        let alpha = 1.0 - criteria.confidence;
        let bounds = u8::from(criteria.max_p99.is_some())
            + u8::from(criteria.max_error_rate.is_some())
            + u8::from(kernel && criteria.max_retransmit_rate.is_some());
        let parts = 2.0 + f64::from(u8::from(kernel)) + f64::from(u8::from(bounds > 0));
        let share = alpha / parts;
        Budget {
            latency: share,
            errors: share,
            retransmits: kernel.then_some(share),
            per_bound: (bounds > 0).then(|| share / f64::from(bounds)),
        }
    }
}

/// One rollout's sequential tests.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SequentialJudge {
    budget: Budget,
    /// Quantile bands: at `alpha / 2` per variant, and at the bounds' share in the
    /// current window.
    band: Band,
    bounds_band: Option<Band>,
    /// Windows opened so far (the first is 1).
    window: u32,
    latency: LabelTest,
    errors: RateTest,
    retransmits: RateTest,
}

/// A confidence interval; `None` ends are unbounded (too little data).
pub(crate) type Interval = (Option<f64>, Option<f64>);

/// What the sequential judge says about the current step's window.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Assessment {
    /// Findings that fail the canary now (empty: no failure).
    pub fail: Vec<String>,
    /// What still keeps the step from passing (empty: it may pass once its minimum
    /// duration is over).
    pub pending: Vec<String>,
    /// Always-valid p-values: latency, errors, retransmits.
    pub p_latency: f64,
    /// See `p_latency`.
    pub p_errors: f64,
    /// See `p_latency`.
    pub p_retransmits: Option<f64>,
    /// Canary error rate over stable's, best fitting factor of the error test.
    pub error_ratio: f64,
    /// Confidence sequences of the two error rates and of their difference (canary -
    /// stable), at level `1 - alpha`, over the step's window.
    pub error_rate: [(f64, f64); 2],
    /// See `error_rate`.
    pub error_diff: (f64, f64),
    /// Per [`QUANTILES`]: canary and stable bounds (µs) and canary - stable.
    pub quantiles: Vec<[Interval; 3]>,
    /// The budget in use.
    pub budget: Budget,
}

impl SequentialJudge {
    /// A judge for a rollout; `kernel` when kernel accounting runs.
    pub(crate) fn new(criteria: &Criteria, kernel: bool) -> SequentialJudge {
        let budget = Budget::new(criteria, kernel);
        SequentialJudge {
            budget,
            band: Band::new((1.0 - criteria.confidence) / 2.0),
            bounds_band: budget.bound_in_window(1).map(Band::new),
            window: 1,
            latency: LabelTest::default(),
            errors: RateTest::default(),
            retransmits: RateTest::default(),
        }
    }

    /// A new window starts (a step, or a resume): the absolute bounds get the next part
    /// of their share.
    pub(crate) fn new_window(&mut self) {
        self.window += 1;
        self.bounds_band = self.budget.bound_in_window(self.window).map(Band::new);
    }

    /// Feeds one batch: what each variant did since the previous batch, at canary share
    /// `share` (a fraction).
    pub(crate) fn observe(
        &mut self,
        criteria: &Criteria,
        share: f64,
        stable: &Sample,
        canary: &Sample,
        kernel: Option<&KernelWindow>,
    ) {
        let shifted = shift_by_tolerance(&canary.latency_sample(), criteria);
        self.latency
            .update(share, &shifted, &stable.latency_sample());
        self.errors.update(
            [canary.errors, stable.errors],
            [canary.responses, stable.responses],
        );
        if let Some(k) = kernel {
            self.retransmits
                .update([k.retrans[1], k.retrans[0]], [k.segs_out[1], k.segs_out[0]]);
        }
    }

    /// Judges the step's window (`stable`, `canary`: since the step started) with the
    /// evidence of the whole rollout.
    pub(crate) fn assess(
        &self,
        criteria: &Criteria,
        stable: &Sample,
        canary: &Sample,
        kernel: Option<&KernelWindow>,
    ) -> Assessment {
        let alpha = 1.0 - criteria.confidence;
        let b = self.budget;
        let mut fail = Vec::new();
        let mut pending = Vec::new();
        if let Some(max) = criteria.max_canary_ejections
            && canary.ejections > max
        {
            fail.push(super::verdict::ejection_reason(canary.ejections, max));
        }

        // Errors: the rate test says whether canary is worse; the confidence sequences
        // say by how much.
        let rate = |s: &Sample| proportion_cs(s.errors, s.responses, alpha / 2.0);
        let (c_err, s_err) = (rate(canary), rate(stable));
        let error_diff = (c_err.0 - s_err.1, c_err.1 - s_err.0);
        let p_errors = self.errors.p_value();
        if p_errors < b.errors
            && (criteria.error_tolerance <= 0.0 || error_diff.0 > criteria.error_tolerance)
        {
            fail.push(format!(
                "canary error rate is higher ({:.2}% vs {:.2}%, always-valid p={:.2e} < {:.2e}, difference >= {:+.2} points, allowed +{:.2})",
                100.0 * canary.error_rate(),
                100.0 * stable.error_rate(),
                p_errors,
                b.errors,
                100.0 * error_diff.0.max(0.0),
                100.0 * criteria.error_tolerance
            ));
        } else if error_diff.1 > criteria.error_tolerance {
            pending.push(format!(
                "error-rate difference may still be up to {:+.2} points (allowed +{:.2})",
                100.0 * error_diff.1,
                100.0 * criteria.error_tolerance
            ));
        }

        // Latency: the label test on tolerance-shifted values; the quantile bounds for
        // passing and for the report.
        let (cs, ss) = (canary.latency_sample(), stable.latency_sample());
        let (ce, se) = (
            self.band.eps(canary.latency.len()),
            self.band.eps(stable.latency.len()),
        );
        let quantiles: Vec<[Interval; 3]> = QUANTILES
            .iter()
            .map(|&q| {
                let c = floats(quantile_interval(&cs, q, ce));
                let s = floats(quantile_interval(&ss, q, se));
                let diff = (
                    c.0.zip(s.1).map(|(a, b)| a - b),
                    c.1.zip(s.0).map(|(a, b)| a - b),
                );
                [c, s, diff]
            })
            .collect();
        let p_latency = self.latency.p_value();
        if p_latency < b.latency {
            fail.push(format!(
                "canary latency is higher beyond the tolerance (always-valid p={:.2e} < {:.2e}; median {} vs {})",
                p_latency,
                b.latency,
                us(canary.quantile(0.5)),
                us(stable.quantile(0.5)),
            ));
        } else {
            let [c, s, _] = quantiles[0];
            match (c.1, s.0) {
                (Some(c_hi), Some(s_lo)) => {
                    let allowed = (criteria.latency_tolerance * s_lo)
                        .max(criteria.latency_tolerance_abs.as_micros() as f64);
                    if c_hi > s_lo + allowed {
                        pending.push(format!(
                            "canary median may still be up to {:.0}us above stable's {:.0}us (allowed +{:.0}us)",
                            c_hi - s_lo,
                            s_lo,
                            allowed
                        ));
                    }
                }
                _ => pending.push("too few latency samples to bound the medians".into()),
            }
        }

        // Retransmits.
        let p_retransmits = kernel.is_some().then(|| self.retransmits.p_value());
        if let (Some(p), Some(share)) = (p_retransmits, b.retransmits)
            && p < share
        {
            fail.push(format!(
                "canary retransmits more (always-valid p={p:.2e} < {share:.2e}, about {:.1}x stable's rate)",
                self.retransmits.best_ratio()
            ));
        }

        // Absolute bounds: one-sample questions on the step's window.
        if let Some(share) = b.bound_in_window(self.window) {
            if let Some(max) = criteria.max_error_rate {
                rate_bound(
                    "error rate",
                    proportion_cs(canary.errors, canary.responses, share),
                    max,
                    (&mut fail, &mut pending),
                );
            }
            if let (Some(max), Some(band)) = (criteria.max_p99, self.bounds_band) {
                let eps = band.eps(canary.latency.len());
                let (lo, hi) = quantile_interval(&cs, 0.99, eps);
                // A histogram value is its bucket's highest; the lower end takes the
                // bucket's lowest, so the bound is never judged broken by rounding.
                let lo = lo.map(|v| canary.latency.lowest_equivalent(v));
                let max_us = max.as_micros() as u64;
                if lo.is_some_and(|lo| lo > max_us) {
                    fail.push(format!(
                        "canary p99 is above the bound {max_us}us (at least {}us)",
                        lo.unwrap_or(0)
                    ));
                } else if hi.is_none_or(|hi| hi > max_us) {
                    pending.push(format!("canary p99 is not yet shown below {max_us}us"));
                }
            }
            if let (Some(max), Some(k)) = (criteria.max_retransmit_rate, kernel) {
                rate_bound(
                    "retransmit rate",
                    proportion_cs(k.retrans[1], k.segs_out[1], share),
                    max,
                    (&mut fail, &mut pending),
                );
            }
        }

        for (name, s) in [("canary", canary), ("stable", stable)] {
            if s.responses < criteria.min_requests {
                pending.push(format!(
                    "{name} has {} of the {} responses needed to pass",
                    s.responses, criteria.min_requests
                ));
            }
        }

        Assessment {
            fail,
            pending,
            p_latency,
            p_errors,
            p_retransmits,
            error_ratio: self.errors.best_ratio(),
            error_rate: [c_err, s_err],
            error_diff,
            quantiles,
            budget: b,
        }
    }
}

/// An absolute bound on a canary rate, judged by its confidence interval `(lo, hi)`:
/// failed when even `lo` is above `max`, still open while `hi` is.
fn rate_bound(
    what: &str,
    (lo, hi): (f64, f64),
    max: f64,
    (fail, pending): (&mut Vec<String>, &mut Vec<String>),
) {
    if lo > max {
        fail.push(format!(
            "canary {what} is above the bound {:.3}% (at least {:.3}%)",
            100.0 * max,
            100.0 * lo
        ));
    } else if hi > max {
        pending.push(format!(
            "canary {what} may still be up to {:.3}% (bound {:.3}%)",
            100.0 * hi,
            100.0 * max
        ));
    }
}

/// Canary latencies minus the tolerance: each value `v` becomes
/// `min(v / (1 + relative), v - absolute)`, so a canary only counts as slower where it is
/// slower by more than both the relative and the absolute tolerance (the fixed judge's
/// `allowed = max(relative x median, absolute)`, applied value by value).
pub(crate) fn shift_by_tolerance(sample: &[(u64, u64)], criteria: &Criteria) -> Vec<(u64, u64)> {
    let abs = criteria.latency_tolerance_abs.as_micros() as u64;
    let rel = 1.0 + criteria.latency_tolerance;
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(sample.len());
    for &(v, c) in sample {
        let shifted = ((v as f64 / rel) as u64).min(v.saturating_sub(abs));
        match out.last_mut() {
            Some(last) if last.0 == shifted => last.1 += c,
            _ => out.push((shifted, c)),
        }
    }
    out
}

fn floats((lo, hi): (Option<u64>, Option<u64>)) -> Interval {
    (lo.map(|v| v as f64), hi.map(|v| v as f64))
}

fn us(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v}us"))
}

fn bound(v: Option<f64>) -> Value {
    v.filter(|v| v.is_finite())
        .map_or(Value::Null, |v| json!(v))
}

impl Assessment {
    /// One phrase with the key figures.
    pub(crate) fn summary(&self) -> String {
        let mut s = format!(
            "p(latency)={:.2e}, p(errors)={:.2e}",
            self.p_latency, self.p_errors
        );
        if let Some(p) = self.p_retransmits {
            let _ = write!(s, ", p(retransmits)={p:.2e}");
        }
        let _ = write!(
            s,
            ", error difference [{:+.2}, {:+.2}] points",
            100.0 * self.error_diff.0,
            100.0 * self.error_diff.1
        );
        if let Some([_, _, (lo, hi)]) = self.quantiles.first() {
            let f = |v: Option<f64>| v.map_or_else(|| "?".to_owned(), |v| format!("{v:+.0}"));
            let _ = write!(s, ", median difference [{}, {}]us", f(*lo), f(*hi));
        }
        s
    }

    /// Everything, as JSON.
    pub(crate) fn json(&self) -> Value {
        let quantiles: Vec<Value> = QUANTILES
            .iter()
            .zip(&self.quantiles)
            .map(|(q, [c, s, d])| {
                json!({
                    "quantile": q,
                    "canary_us": [bound(c.0), bound(c.1)],
                    "stable_us": [bound(s.0), bound(s.1)],
                    "difference_us": [bound(d.0), bound(d.1)],
                })
            })
            .collect();
        json!({
            "judge": "sequential",
            "p_latency": self.p_latency,
            "p_errors": self.p_errors,
            "p_retransmits": self.p_retransmits,
            "error_ratio": self.error_ratio,
            "canary_error_rate": [self.error_rate[0].0, self.error_rate[0].1],
            "stable_error_rate": [self.error_rate[1].0, self.error_rate[1].1],
            "error_difference": [self.error_diff.0, self.error_diff.1],
            "quantiles": quantiles,
            "alpha": {
                "latency": self.budget.latency,
                "errors": self.budget.errors,
                "retransmits": self.budget.retransmits,
                "per_bound": self.budget.per_bound,
            },
            "fail": self.fail,
            "pending": self.pending,
        })
    }
}
