//! The verdict rules: sample sizes first, then absolute bounds, then the statistical
//! comparisons, each giving Pass, Marginal or Fail; the worst one wins.

use super::stats::{compare_proportions, mann_whitney, median, two_proportion_z};
use super::{Criteria, Judgement, KernelWindow, LatencyTest, Sample, Verdict};

/// Judges one window: `canary` against `stable` under `criteria`, with the kernel's
/// figures when kernel accounting runs.
pub(crate) fn judge(
    criteria: &Criteria,
    stable: &Sample,
    canary: &Sample,
    kernel: Option<&KernelWindow>,
) -> Judgement {
    let alpha = 1.0 - criteria.confidence;
    let mut verdict = Verdict::Pass;
    let mut reasons = Vec::new();
    let mut worse = |v: Verdict, why: String, reasons: &mut Vec<String>| {
        verdict = verdict.max(v);
        reasons.push(why);
    };

    let (cl, sl) = (canary.latency_sample(), stable.latency_sample());
    let latency = mann_whitney(&cl, &sl).map(|test| LatencyTest {
        test,
        canary_median_us: median(&cl).unwrap_or(0.0),
        stable_median_us: median(&sl).unwrap_or(0.0),
    });
    let errors = compare_proportions(
        canary.errors,
        canary.responses,
        stable.errors,
        stable.responses,
    );
    let kernel = kernel.map(|k| {
        let retrans = two_proportion_z(k.retrans[1], k.segs_out[1], k.retrans[0], k.segs_out[0]);
        (retrans, mann_whitney(&k.rtt[1], &k.rtt[0]))
    });
    let mut judgement = Judgement {
        verdict: Verdict::Pass,
        reasons: Vec::new(),
        stable: stable.clone(),
        canary: canary.clone(),
        latency,
        errors,
        kernel,
        sequential: None,
    };

    // An ejection is a decision already made on live traffic: it fails the step even
    // before the judge has enough requests for a comparison.
    if let Some(max) = criteria.max_canary_ejections
        && canary.ejections > max
    {
        judgement.verdict = Verdict::Fail;
        judgement.reasons = vec![ejection_reason(canary.ejections, max)];
        return judgement;
    }

    let short: Vec<String> = [("canary", canary), ("stable", stable)]
        .iter()
        .filter(|(_, s)| s.requests < criteria.min_requests || s.responses == 0)
        .map(|(name, s)| {
            format!(
                "{name} has {} of the {} requests needed",
                s.requests, criteria.min_requests
            )
        })
        .collect();
    if !short.is_empty() {
        judgement.verdict = Verdict::Inconclusive;
        judgement.reasons = short;
        return judgement;
    }

    if let Some(max) = criteria.max_error_rate
        && canary.error_rate() > max
    {
        worse(
            Verdict::Fail,
            format!(
                "canary error rate {:.2}% is above the bound {:.2}%",
                100.0 * canary.error_rate(),
                100.0 * max
            ),
            &mut reasons,
        );
    }
    if let Some(max) = criteria.max_p99
        && let Some(p99) = canary.quantile(0.99)
        && p99 > max.as_micros() as u64
    {
        worse(
            Verdict::Fail,
            format!(
                "canary p99 {}us is above the bound {}us",
                p99,
                max.as_micros()
            ),
            &mut reasons,
        );
    }
    if let Some(l) = &judgement.latency {
        let diff = l.canary_median_us - l.stable_median_us;
        let allowed = (criteria.latency_tolerance * l.stable_median_us)
            .max(criteria.latency_tolerance_abs.as_micros() as f64);
        if l.test.p_greater < alpha {
            let what = format!(
                "canary latency is higher (p={:.3e}, median {:.0}us vs {:.0}us, {:+.0}us, allowed {:.0}us)",
                l.test.p_greater, l.canary_median_us, l.stable_median_us, diff, allowed
            );
            worse(
                if diff > allowed {
                    Verdict::Fail
                } else {
                    Verdict::Marginal
                },
                what,
                &mut reasons,
            );
        }
    }
    if let Some(e) = &judgement.errors
        && e.p_greater < alpha
    {
        let excess = e.rate_x - e.rate_y;
        let what = format!(
            "canary error rate is higher ({:.2}% vs {:.2}%, {} test p={:.3e}, allowed +{:.2} points)",
            100.0 * e.rate_x,
            100.0 * e.rate_y,
            e.test.as_str(),
            e.p_greater,
            100.0 * criteria.error_tolerance
        );
        worse(
            if excess > criteria.error_tolerance {
                Verdict::Fail
            } else {
                Verdict::Marginal
            },
            what,
            &mut reasons,
        );
    }
    if let (Some(max), Some((Some(r), _))) = (criteria.max_retransmit_rate, &judgement.kernel)
        && r.rate_x > max
    {
        worse(
            Verdict::Fail,
            format!(
                "canary retransmit rate {:.3}% is above the bound {:.3}%",
                100.0 * r.rate_x,
                100.0 * max
            ),
            &mut reasons,
        );
    }
    judgement.verdict = verdict;
    judgement.reasons = reasons;
    judgement
}

/// Why too many canary ejections fail a step.
pub(crate) fn ejection_reason(ejections: u64, max: u64) -> String {
    format!("canary endpoints were ejected {ejections} time(s) in the window (allowed {max})")
}
