//! Unit tests of [`super`]: round trips through JSON and malformed records.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One way to break a stored rollout.
type Edit<'a> = &'a dyn Fn(&mut Value);

use gateway_common::PPM_MAX;
use serde_json::Value;

use super::{from_json, to_json};
use crate::judge::{Judgement, Sample, Verdict};
use crate::rollout::machine::{Action, Rollout};
use crate::rollout::plan::{JudgeKind, Plan};

fn judgement(verdict: Verdict) -> Judgement {
    Judgement {
        verdict,
        reasons: vec![format!("because {}", verdict.as_str())],
        stable: Sample::default(),
        canary: Sample::default(),
        latency: None,
        errors: None,
        kernel: None,
        sequential: None,
    }
}

fn plan(judge: JudgeKind) -> Plan {
    let mut plan = Plan::new(
        vec![50_000, 250_000, 500_000, PPM_MAX],
        Duration::from_secs(10),
    )
    .expect("a valid plan");
    plan.judge = judge;
    plan
}

/// A rollout that has seen an inconclusive verdict, a pass (a step change) and a pause.
fn driven(judge: JudgeKind, t0: Instant) -> Rollout {
    let mut r = Rollout::new(plan(judge), "v2", "admin", t0, Default::default(), None);
    let t = t0 + Duration::from_secs(10);
    assert_eq!(
        r.conclude(t, &judgement(Verdict::Inconclusive)),
        Action::None
    );
    let t = t + Duration::from_secs(10);
    assert_eq!(
        r.conclude(t, &judgement(Verdict::Pass)),
        Action::SetPercent(250_000)
    );
    r.pause("by hand".into()).expect("running");
    r
}

fn wall() -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(1_800_000_000_123)
}

fn round_trip(judge: JudgeKind) {
    let t0 = Instant::now();
    let now = t0 + Duration::from_secs(25);
    let r = driven(judge, t0);
    let first = to_json(&r, now, wall());
    let back = from_json(&first, now, wall(), Default::default(), None).expect("valid record");
    assert_eq!(to_json(&back, now, wall()), first);
    assert_eq!(back.phase, r.phase);
    assert_eq!(
        (back.step, back.inconclusive, back.verdicts),
        (1, 0, [1, 0, 1, 0])
    );
    assert_eq!(back.history.len(), 2);
    for (a, b) in back.history.iter().zip(&r.history) {
        assert_eq!(
            (a.step, a.ppm, a.at, a.verdict),
            (b.step, b.ppm, b.at, b.verdict)
        );
        assert_eq!((&a.summary, &a.detail), (&b.summary, &b.detail));
    }
    assert_eq!(back.plan.describe(), r.plan.describe());
    assert_eq!(back.sequential.is_some(), judge == JudgeKind::Sequential);
    assert!(back.series.is_empty() && back.assessment.is_none());
    // Taken over one minute later by a gateway whose clock is elsewhere.
    let later = Instant::now() + Duration::from_secs(3600);
    let elsewhere = from_json(&first, later, wall(), Default::default(), None).expect("valid");
    let again = to_json(&elsewhere, later, wall());
    for key in ["started_ms", "window_started_ms", "next_judgement_ms"] {
        let (a, b) = (first[key].as_u64(), again[key].as_u64());
        let (a, b) = (a.expect("a time"), b.expect("a time"));
        assert!(a.abs_diff(b) <= 1, "{key}: {a} vs {b}");
    }
    assert_eq!(
        first["started_ms"].as_u64(),
        Some(1_800_000_000_123 - 25_000)
    );
    assert_eq!(
        first["window_started_ms"].as_u64(),
        Some(1_800_000_000_123 - 5_000)
    );
}

#[test]
fn fixed_rollout_round_trips() {
    round_trip(JudgeKind::Fixed);
}

#[test]
fn sequential_rollout_round_trips() {
    round_trip(JudgeKind::Sequential);
}

#[test]
fn times_in_the_past_and_future_keep_due_consistent() {
    let t0 = Instant::now();
    let r = Rollout::new(
        plan(JudgeKind::Fixed),
        "v2",
        "admin",
        t0,
        Default::default(),
        None,
    );
    let mut v = to_json(&r, t0, wall());
    let wall_ms = 1_800_000_000_123_u64;
    v["next_judgement_ms"] = (wall_ms - 1000).into();
    let now = Instant::now();
    let past = from_json(&v, now, wall(), Default::default(), None).expect("valid");
    assert!(past.due(now), "a judgement 1 s overdue is due at once");
    v["next_judgement_ms"] = (wall_ms + 5000).into();
    let future = from_json(&v, now, wall(), Default::default(), None).expect("valid");
    assert!(!future.due(now + Duration::from_secs(4)));
    assert!(future.due(now + Duration::from_secs(5)));
    assert_eq!(future.timing(now).1, Duration::from_secs(5));
    // Far-off times saturate instead of panicking.
    v["started_ms"] = 0.into();
    v["next_judgement_ms"] = u64::MAX.into();
    let far = from_json(&v, now, wall(), Default::default(), None).expect("valid");
    assert!(!far.due(now + Duration::from_secs(86_400 * 365)));
}

#[test]
fn sequential_rollout_looks_after_one_batch() {
    let t0 = Instant::now();
    let r = driven(JudgeKind::Sequential, t0);
    let v = to_json(&r, t0, wall());
    let now = Instant::now();
    let mut back = from_json(&v, now, wall(), Default::default(), None).expect("valid");
    assert!(!back.due(now), "paused");
    back.resume().expect("paused");
    assert!(!back.due(now) && back.due(now + super::BATCH));
}

#[test]
fn malformed_records_are_errors() {
    let t0 = Instant::now();
    let good = to_json(&driven(JudgeKind::Fixed, t0), t0, wall());
    let broken = |f: &dyn Fn(&mut Value)| {
        let mut v = good.clone();
        f(&mut v);
        from_json(&v, t0, wall(), Default::default(), None).map(|_| ())
    };
    let cases: [(&str, Edit<'_>); 10] = [
        ("plan", &|v| {
            v.as_object_mut().map(|o| o.remove("plan"));
        }),
        ("plan", &|v| v["plan"] = "steps banana".into()),
        ("step", &|v| v["step"] = 99.into()),
        ("phase.name", &|v| v["phase"]["name"] = "exploded".into()),
        ("phase.reason", &|v| v["phase"]["reason"] = Value::Null),
        ("history", &|v| v["history"] = "none".into()),
        ("history[0]", &|v| {
            v["history"][0]["verdict"] = "great".into();
        }),
        ("history[1]", &|v| v["history"][1]["step"] = 7.into()),
        ("verdicts", &|v| v["verdicts"] = serde_json::json!([1, 2])),
        ("next_judgement_ms", &|v| {
            v["next_judgement_ms"] = (-5).into();
        }),
    ];
    for (field, f) in cases {
        let e = broken(f).expect_err(field);
        assert!(e.contains(field), "{field}: {e}");
    }
    for v in [Value::Null, serde_json::json!([]), serde_json::json!({})] {
        assert!(from_json(&v, t0, wall(), Default::default(), None).is_err());
    }
}
