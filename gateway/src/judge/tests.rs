//! The statistics against SciPy's values (`fixtures/reference.json`, made by
//! `fixtures/make_reference.py`), then the verdict rules on synthetic windows.

use std::time::Duration;

use serde_json::Value;

use super::stats::{fisher_exact, mann_whitney, median, normal_sf, two_proportion_z, weighted};
use super::{Criteria, Sample, Verdict, judge};
use crate::metrics::new_histogram;

const REFERENCE: &str = include_str!("fixtures/reference.json");

fn reference() -> Value {
    serde_json::from_str(REFERENCE).expect("reference.json is valid JSON")
}

/// `a` and `b` agree to `rel` relative error (or both are below 1e-300).
fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()) || (a.abs() < 1e-300 && b.abs() < 1e-300)
}

fn pairs(v: &Value) -> Vec<(u64, u64)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_u64().unwrap(), p[1].as_u64().unwrap()))
        .collect()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap()
}

#[test]
fn normal_tail_matches_scipy() {
    for case in reference()["normal_sf"].as_array().unwrap() {
        let (z, want) = (f(&case["z"]), f(&case["sf"]));
        let got = normal_sf(z);
        assert!(close(got, want, 1e-12), "sf({z}) = {got}, scipy {want}");
    }
}

#[test]
fn mann_whitney_matches_scipy_with_ties() {
    let cases = reference();
    let cases = cases["mann_whitney"].as_array().unwrap();
    assert!(cases.len() >= 8);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let (x, y) = (pairs(&case["x"]), pairs(&case["y"]));
        let t = mann_whitney(&x, &y).unwrap();
        assert!(
            close(t.u, f(&case["u"]), 1e-12),
            "{name}: U {} vs {}",
            t.u,
            case["u"]
        );
        assert!(
            close(t.p_two_sided, f(&case["p_two_sided"]), 1e-9),
            "{name}: p {} vs {}",
            t.p_two_sided,
            case["p_two_sided"]
        );
        assert!(
            close(t.p_greater, f(&case["p_greater"]), 1e-9),
            "{name}: p> {} vs {}",
            t.p_greater,
            case["p_greater"]
        );
        assert!(
            (t.cliffs_delta - f(&case["cliffs_delta"])).abs() < 1e-12,
            "{name}: delta {}",
            t.cliffs_delta
        );
        assert_eq!(median(&x), Some(f(&case["median_x"])), "{name}: median x");
        assert_eq!(median(&y), Some(f(&case["median_y"])), "{name}: median y");
    }
    assert!(mann_whitney(&[], &[(1, 1)]).is_none());
}

#[test]
fn proportion_tests_match_scipy() {
    let r = reference();
    for case in r["two_proportion_z"].as_array().unwrap() {
        let k = |n: &str| case[n].as_u64().unwrap();
        let t = two_proportion_z(k("k_x"), k("n_x"), k("k_y"), k("n_y")).unwrap();
        assert!(
            close(t.z.unwrap(), f(&case["z"]), 1e-12),
            "{case}: z {:?}",
            t.z
        );
        assert!(
            close(t.p_two_sided, f(&case["p_two_sided"]), 1e-9),
            "{case}: p {}",
            t.p_two_sided
        );
        assert!(
            close(t.p_greater, f(&case["p_greater"]), 1e-9),
            "{case}: p> {}",
            t.p_greater
        );
    }
    for case in r["fisher_exact"].as_array().unwrap() {
        let k = |n: &str| case[n].as_u64().unwrap();
        let t = fisher_exact(k("k_x"), k("n_x"), k("k_y"), k("n_y")).unwrap();
        assert!(
            close(t.p_two_sided, f(&case["p_two_sided"]), 1e-9),
            "{case}: p {}",
            t.p_two_sided
        );
        assert!(
            close(t.p_greater, f(&case["p_greater"]), 1e-9),
            "{case}: p> {}",
            t.p_greater
        );
    }
}

#[test]
fn weighted_samples_count_repeats() {
    assert_eq!(weighted(&[3, 1, 3, 2, 3]), vec![(1, 1), (2, 1), (3, 3)]);
    assert_eq!(median(&weighted(&[1, 2, 3, 4])), Some(2.5));
    assert_eq!(median(&[]), None);
}

/// A window of `n` requests, `errors` of them 5xx, latencies spread evenly over
/// `base_us .. base_us + spread_us`.
fn sample(n: u64, errors: u64, base_us: u64, spread_us: u64) -> Sample {
    let mut latency = new_histogram();
    for i in 0..n {
        latency
            .record(base_us + (i * 7919) % spread_us.max(1))
            .unwrap();
    }
    Sample {
        requests: n,
        responses: n,
        errors,
        latency,
        ejections: 0,
    }
}

#[test]
fn canary_ejections_fail_a_step_when_the_plan_says_so_even_before_enough_requests() {
    let stable = sample(5000, 0, 200, 100);
    let mut canary = sample(40, 0, 200, 100);
    canary.ejections = 1;
    let mut c = Criteria::default();
    assert_eq!(
        judge(&c, &stable, &canary, None).verdict,
        Verdict::Inconclusive,
        "off by default"
    );
    c.max_canary_ejections = Some(0);
    let j = judge(&c, &stable, &canary, None);
    assert_eq!(j.verdict, Verdict::Fail);
    assert!(j.reasons[0].contains("ejected 1 time"), "{:?}", j.reasons);
    assert!(
        j.summary().contains("1 canary ejections"),
        "{}",
        j.summary()
    );
    canary.ejections = 0;
    assert_ne!(judge(&c, &stable, &canary, None).verdict, Verdict::Fail);
}

#[test]
fn too_few_samples_is_inconclusive_and_says_why() {
    let c = Criteria::default();
    let j = judge(
        &c,
        &sample(5000, 0, 200, 100),
        &sample(40, 0, 200, 100),
        None,
    );
    assert_eq!(j.verdict, Verdict::Inconclusive);
    assert!(
        j.reasons[0].contains("canary has 40 of the 100 requests needed"),
        "{:?}",
        j.reasons
    );
}

#[test]
fn slower_canary_fails_only_beyond_the_tolerance() {
    let c = Criteria::default();
    let stable = sample(5000, 0, 200, 100);
    let j = judge(&c, &stable, &sample(300, 0, 30_200, 100), None);
    assert_eq!(j.verdict, Verdict::Fail, "{}", j.summary());
    assert!(j.latency.as_ref().unwrap().test.p_greater < 1e-10);
    // 20 µs slower on a 250 µs median: significant, but within the 1 ms floor.
    let j = judge(&c, &stable, &sample(3000, 0, 220, 100), None);
    assert_eq!(j.verdict, Verdict::Marginal, "{}", j.summary());
    let j = judge(&c, &stable, &sample(3000, 0, 200, 100), None);
    assert_eq!(j.verdict, Verdict::Pass, "{}", j.summary());
    // Faster is never worse.
    let j = judge(&c, &stable, &sample(3000, 0, 50, 100), None);
    assert_eq!(j.verdict, Verdict::Pass, "{}", j.summary());
}

#[test]
fn error_rates_use_the_exact_test_for_small_counts() {
    let c = Criteria::default();
    let j = judge(
        &c,
        &sample(4000, 0, 200, 100),
        &sample(200, 6, 200, 100),
        None,
    );
    assert_eq!(j.verdict, Verdict::Fail, "{}", j.summary());
    assert_eq!(j.errors.unwrap().test.as_str(), "fisher");
    let j = judge(
        &c,
        &sample(20_000, 100, 200, 100),
        &sample(5000, 150, 200, 100),
        None,
    );
    assert_eq!(j.verdict, Verdict::Fail, "{}", j.summary());
    assert_eq!(j.errors.unwrap().test.as_str(), "z");
    // 0.5 points worse, significant, under the 1-point tolerance.
    let j = judge(
        &c,
        &sample(40_000, 0, 200, 100),
        &sample(10_000, 50, 200, 100),
        None,
    );
    assert_eq!(j.verdict, Verdict::Marginal, "{}", j.summary());
}

#[test]
fn absolute_bounds_fail_whatever_stable_does() {
    let c = Criteria {
        max_p99: Some(Duration::from_millis(1)),
        max_error_rate: Some(0.02),
        ..Criteria::default()
    };
    let j = judge(
        &c,
        &sample(1000, 0, 5000, 100),
        &sample(1000, 0, 5000, 100),
        None,
    );
    assert_eq!(j.verdict, Verdict::Fail);
    assert!(j.reasons[0].contains("p99"), "{:?}", j.reasons);
    let j = judge(
        &c,
        &sample(1000, 100, 200, 100),
        &sample(1000, 30, 200, 100),
        None,
    );
    assert_eq!(j.verdict, Verdict::Fail);
    assert!(
        j.reasons[0].contains("above the bound 2.00%"),
        "{:?}",
        j.reasons
    );
    let json = j.json();
    assert_eq!(json["verdict"], "fail");
    assert_eq!(json["canary"]["errors"], 30);
}
