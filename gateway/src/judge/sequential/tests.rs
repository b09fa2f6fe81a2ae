//! The sequential statistics against an independent computation with SciPy
//! (`../fixtures/sequential_reference.json`, made by
//! `../fixtures/make_sequential_reference.py`), then the judge's rules on synthetic windows.

use std::time::Duration;

use serde_json::Value;

use super::math::{Band, LabelTest, RateTest, ln_gamma, merge, proportion_cs, quantile_interval};
use super::{SequentialJudge, shift_by_tolerance};
use crate::judge::{Criteria, Sample};

const REFERENCE: &str = include_str!("../fixtures/sequential_reference.json");

fn reference() -> Value {
    serde_json::from_str(REFERENCE).expect("sequential_reference.json is valid JSON")
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()).max(1e-300)
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap()
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap()
}

fn pairs(v: &Value) -> Vec<(u64, u64)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| (u(&p[0]), u(&p[1])))
        .collect()
}

#[test]
fn ln_gamma_matches_scipy() {
    for c in reference()["ln_gamma"].as_array().unwrap() {
        let (x, want) = (f(&c["x"]), f(&c["value"]));
        let got = ln_gamma(x);
        assert!(
            (got - want).abs() <= 1e-12 * want.abs().max(1.0),
            "ln_gamma({x}) = {got}, scipy {want}"
        );
    }
}

#[test]
fn proportion_confidence_sequences_match_scipy() {
    let cases = reference();
    let cases = cases["proportion_cs"].as_array().unwrap();
    assert!(cases.len() >= 6);
    for c in cases {
        let (s, n, alpha) = (u(&c["s"]), u(&c["n"]), f(&c["alpha"]));
        let (lo, hi) = proportion_cs(s, n, alpha);
        assert!(
            (lo - f(&c["lo"])).abs() < 1e-9 && (hi - f(&c["hi"])).abs() < 1e-9,
            "{s}/{n} at {alpha}: [{lo}, {hi}], scipy [{}, {}]",
            c["lo"],
            c["hi"]
        );
    }
}

#[test]
fn quantile_band_matches_scipy_and_is_never_narrower() {
    for c in reference()["band"].as_array().unwrap() {
        let (t, alpha) = (u(&c["t"]), f(&c["alpha"]));
        let band = Band::new(alpha);
        // The gateway searches a coarser grid of stitching ratios, so its constant may be
        // a little larger (wider, still valid), never smaller.
        let (c_got, c_ref) = (band.constant(), f(&c["C"]));
        assert!(
            c_got >= c_ref - 1e-6 && c_got <= c_ref * 1.01,
            "C({alpha}) = {c_got}, scipy {c_ref}"
        );
        let (eps, want) = (band.eps(t), f(&c["eps"]));
        assert!(
            eps >= want - 1e-9 && eps <= want * 1.005,
            "eps({t}, {alpha}) = {eps}, scipy {want}"
        );
    }
}

#[test]
fn rate_test_matches_binomial_likelihood_ratios() {
    for c in reference()["rate_test"].as_array().unwrap() {
        let mut t = RateTest::default();
        for b in c["batches"].as_array().unwrap() {
            t.update([u(&b[0]), u(&b[1])], [u(&b[2]), u(&b[3])]);
        }
        let name = c["name"].as_str().unwrap();
        assert!(
            close(t.e_value(), f(&c["e"]), 1e-9),
            "{name}: e {} vs {}",
            t.e_value(),
            c["e"]
        );
        assert!(
            close(t.max_e, f(&c["max_e"]), 1e-9),
            "{name}: max e {} vs {}",
            t.max_e,
            c["max_e"]
        );
    }
}

#[test]
fn label_test_matches_a_per_observation_computation() {
    for c in reference()["label_test"].as_array().unwrap() {
        let mut t = LabelTest::default();
        for b in c["batches"].as_array().unwrap() {
            t.update(f(&c["rho"]), &pairs(&b[0]), &pairs(&b[1]));
        }
        let name = c["name"].as_str().unwrap();
        assert!(
            close(t.e_value(), f(&c["e"]), 1e-9) && close(t.max_e, f(&c["max_e"]), 1e-9),
            "{name}: e {} / max {} vs {} / {}",
            t.e_value(),
            t.max_e,
            c["e"],
            c["max_e"]
        );
    }
}

#[test]
fn merge_and_quantile_intervals() {
    assert_eq!(
        merge(&[(1, 2), (5, 1)], &[(1, 1), (3, 4), (9, 1)]),
        vec![(1, 3), (3, 4), (5, 1), (9, 1)]
    );
    let s: Vec<(u64, u64)> = (1..=100).map(|v| (v, 1)).collect();
    assert_eq!(quantile_interval(&s, 0.5, 0.1), (Some(40), Some(60)));
    assert_eq!(quantile_interval(&s, 0.5, 0.6), (None, None));
    assert_eq!(quantile_interval(&s, 0.99, 0.05), (Some(94), None));
}

#[test]
fn tolerance_shifts_canary_values_by_the_larger_allowance() {
    let c = Criteria {
        latency_tolerance: 0.1,
        latency_tolerance_abs: Duration::from_micros(100),
        ..Criteria::default()
    };
    // 550 us: 10% is 50 us, the absolute 100 us is larger; 11,000 us: 10% is 1,000 us.
    assert_eq!(
        shift_by_tolerance(&[(50, 1), (80, 2), (550, 1), (11_000, 3)], &c),
        vec![(0, 3), (450, 1), (10_000, 3)]
    );
}

fn window(n: u64, errors: u64, latency_us: u64) -> Sample {
    Sample::uniform(n, errors, latency_us)
}

#[test]
fn a_canary_failing_everything_fails_with_no_minimum_sample() {
    let c = Criteria::default();
    let mut j = SequentialJudge::new(&c, false);
    let (stable, canary) = (window(190, 0, 300), window(10, 10, 200));
    j.observe(&c, 0.05, &stable, &canary, None);
    let a = j.assess(&c, &stable, &canary, None);
    assert!(
        a.fail.iter().any(|f| f.contains("error rate")),
        "{:?}",
        a.fail
    );
    assert!(a.p_errors < 0.025, "{}", a.p_errors);
}

#[test]
fn the_same_behaviour_neither_fails_nor_passes_too_early() {
    let c = Criteria::default();
    let mut j = SequentialJudge::new(&c, false);
    let (stable, canary) = (window(190, 0, 300), window(10, 0, 300));
    j.observe(&c, 0.05, &stable, &canary, None);
    let a = j.assess(&c, &stable, &canary, None);
    assert!(a.fail.is_empty(), "{:?}", a.fail);
    assert!(
        a.pending
            .iter()
            .any(|p| p.contains("error-rate difference")),
        "ten requests cannot bound the error rate: {:?}",
        a.pending
    );
    // Plenty of clean traffic: the error difference is bounded and the medians are equal.
    let (stable, canary) = (window(40_000, 0, 300), window(4_000, 0, 300));
    j.observe(&c, 0.05, &stable, &canary, None);
    let a = j.assess(&c, &stable, &canary, None);
    assert!(a.fail.is_empty() && a.pending.is_empty(), "{a:?}");
}

#[test]
fn absolute_bounds_fail_with_confidence_and_share_the_budget() {
    let c = Criteria {
        max_p99: Some(Duration::from_millis(250)),
        max_error_rate: Some(0.05),
        ..Criteria::default()
    };
    let mut j = SequentialJudge::new(&c, false);
    let a = j.assess(&c, &window(1_000, 0, 300), &window(200, 0, 300_000), None);
    assert!(
        a.fail
            .iter()
            .any(|f| f.contains("canary p99 is above the bound 250000us")),
        "{:?}",
        a.fail
    );
    // Two bounds share a third of alpha (latency, errors, bounds), half each, and the
    // first window gets 6/pi^2 of that.
    let first = a.budget.bound_in_window(1).unwrap();
    assert!((first - 0.05 / 3.0 / 2.0 * 6.0 / std::f64::consts::PI.powi(2)).abs() < 1e-12);
    // Every window's part sums to at most the bounds' share.
    let total: f64 = (1..10_000)
        .map(|w| a.budget.bound_in_window(w).unwrap())
        .sum();
    assert!(
        total <= 0.05 / 3.0 / 2.0 && total > 0.05 / 3.0 / 2.0 * 0.999,
        "{total}"
    );
    j.new_window();
    let a = j.assess(&c, &window(1_000, 0, 300), &window(40, 10, 300), None);
    assert!(
        a.fail
            .iter()
            .any(|f| f.contains("canary error rate is above the bound")),
        "{:?}",
        a.fail
    );
}
