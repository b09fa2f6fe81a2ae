//! Unit tests of [`super`].

use super::*;
use crate::judge::Sample;

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

fn rollout(t0: Instant) -> Rollout {
    let plan = Plan::new(
        vec![50_000, 250_000, 500_000, PPM_MAX],
        Duration::from_secs(10),
    )
    .unwrap();
    let mut plan = plan;
    plan.judge = JudgeKind::Fixed;
    Rollout::new(plan, "v2", "test", t0, Default::default(), None)
}

#[test]
fn passes_walk_the_steps_then_promote() {
    let t0 = Instant::now();
    let mut r = rollout(t0);
    assert_eq!(r.step_ppm(), 50_000);
    assert!(!r.due(t0 + Duration::from_secs(9)));
    let t = t0 + Duration::from_secs(10);
    assert!(r.due(t));
    assert_eq!(
        r.conclude(t, &judgement(Verdict::Pass)),
        Action::SetPercent(250_000)
    );
    assert!(!r.due(t + Duration::from_secs(5)));
    assert_eq!(
        r.conclude(t, &judgement(Verdict::Marginal)),
        Action::SetPercent(500_000)
    );
    // The final 100 % step is the promotion itself.
    assert_eq!(r.conclude(t, &judgement(Verdict::Pass)), Action::Promote);
    assert_eq!(r.phase, Phase::Promoted);
    assert_eq!(r.history.len(), 3);
    assert_eq!(r.verdicts, [2, 1, 0, 0]);
}

#[test]
fn inconclusive_holds_and_fail_rolls_back() {
    let t0 = Instant::now();
    let mut r = rollout(t0);
    let t = t0 + Duration::from_secs(10);
    assert_eq!(
        r.conclude(t, &judgement(Verdict::Inconclusive)),
        Action::None
    );
    assert_eq!((r.step, r.phase.clone()), (0, Phase::Running));
    assert!(!r.due(t + Duration::from_secs(9)) && r.due(t + Duration::from_secs(10)));
    assert_eq!(r.conclude(t, &judgement(Verdict::Fail)), Action::Rollback);
    assert!(
        r.phase.reason().unwrap().contains("step 1 failed: fail"),
        "{:?}",
        r.phase
    );
    assert_eq!(
        r.conclude(t, &judgement(Verdict::Pass)),
        Action::None,
        "finished rollouts ignore verdicts"
    );
}

#[test]
fn inconclusive_limit_pauses_for_the_operator() {
    let t0 = Instant::now();
    let mut r = rollout(t0);
    r.plan.max_inconclusive = 3;
    for i in 1..=2 {
        assert_eq!(
            r.conclude(t0, &judgement(Verdict::Inconclusive)),
            Action::None
        );
        assert_eq!(r.phase, Phase::Running, "after {i}");
    }
    // A pass in between starts the count again (on the next step).
    assert_eq!(
        r.conclude(t0, &judgement(Verdict::Pass)),
        Action::SetPercent(250_000)
    );
    for _ in 0..2 {
        r.conclude(t0, &judgement(Verdict::Inconclusive));
    }
    assert_eq!(r.phase, Phase::Running);
    assert_eq!(
        r.conclude(t0, &judgement(Verdict::Inconclusive)),
        Action::None
    );
    let reason = r.phase.reason().unwrap_or_default().to_owned();
    assert!(
        r.phase.as_str() == "paused" && reason.contains("step 2 was inconclusive 3 times in a row"),
        "{:?}",
        r.phase
    );
    assert_eq!(r.resume().unwrap(), Action::SetPercent(250_000));
    assert_eq!(r.inconclusive, 0);
    // 0: hold for ever.
    let mut h = rollout(t0);
    for _ in 0..50 {
        h.conclude(t0, &judgement(Verdict::Inconclusive));
    }
    assert_eq!(h.phase, Phase::Running);
}

#[test]
fn pause_resume_abort() {
    let t0 = Instant::now();
    let mut r = rollout(t0);
    r.pause("by hand".into()).unwrap();
    assert!(r.pause("again".into()).is_err());
    assert!(
        !r.due(t0 + Duration::from_secs(60)),
        "a paused rollout is never judged"
    );
    assert_eq!(r.resume().unwrap(), Action::SetPercent(50_000));
    assert!(r.resume().is_err());
    r.restart_window(t0 + Duration::from_secs(60), Default::default(), None);
    assert!(!r.due(t0 + Duration::from_secs(65)) && r.due(t0 + Duration::from_secs(70)));
    assert_eq!(r.abort("stop".into()).unwrap(), Action::Rollback);
    assert_eq!(r.phase.as_str(), "aborted");
    assert!(r.abort("again".into()).is_err());
    assert!(r.resume().is_err());
    let mut k = rollout(t0);
    assert_eq!(k.kill_switch("tripped".into()), Action::Rollback);
    assert_eq!(k.phase.as_str(), "rolled_back");
}

mod sequential_tests {
    use super::*;
    use crate::judge::Sample;

    fn sample(n: u64, errors: u64, latency_us: u64) -> Sample {
        Sample::uniform(n, errors, latency_us)
    }

    fn rollout(t0: Instant, on_timeout: OnTimeout) -> Rollout {
        let mut plan = Plan::new(vec![100_000, 500_000, PPM_MAX], Duration::from_secs(2)).unwrap();
        plan.max_interval = Some(Duration::from_secs(4));
        plan.on_timeout = on_timeout;
        Rollout::new(plan, "v2", "test", t0, Default::default(), None)
    }

    #[test]
    fn a_failing_canary_fails_at_the_first_look() {
        let t0 = Instant::now();
        let mut ro = rollout(t0, OnTimeout::Pause);
        assert!(!ro.due(t0) && ro.due(t0 + BATCH));
        let (stable, canary) = (sample(90, 0, 300), sample(10, 10, 100));
        let t = t0 + BATCH;
        let j = ro
            .look(
                t,
                (&stable, &canary, None),
                (&stable, &canary, None),
                Default::default(),
                None,
            )
            .expect("decided");
        assert_eq!(j.verdict, Verdict::Fail);
        assert_eq!(ro.conclude(t, &j), Action::Rollback);
        assert!(
            ro.phase.reason().unwrap().contains("error rate"),
            "{:?}",
            ro.phase
        );
        assert_eq!(ro.series.len(), 1);
    }

    #[test]
    fn a_clean_step_passes_after_its_interval_and_an_undecided_one_times_out() {
        let t0 = Instant::now();
        let mut ro = rollout(t0, OnTimeout::Pause);
        let (stable, canary) = (sample(90_000, 0, 300), sample(10_000, 0, 300));
        // Conclusive but too early: the minimum duration is the interval.
        let early = t0 + Duration::from_secs(1);
        assert!(
            ro.look(
                early,
                (&stable, &canary, None),
                (&stable, &canary, None),
                Default::default(),
                None
            )
            .is_none()
        );
        assert!(ro.assessment.as_ref().is_some_and(|a| a.pending.is_empty()));
        let t = t0 + Duration::from_secs(2);
        let j = ro
            .look(
                t,
                (&stable, &canary, None),
                (&stable, &canary, None),
                Default::default(),
                None,
            )
            .unwrap();
        assert_eq!(j.verdict, Verdict::Pass);
        assert_eq!(ro.conclude(t, &j), Action::SetPercent(500_000));
        // Too little traffic to rule anything out: held until the limit, then paused.
        let (stable, canary) = (sample(50, 0, 300), sample(50, 0, 300));
        let t = t + Duration::from_secs(3);
        assert!(
            ro.look(
                t,
                (&stable, &canary, None),
                (&stable, &canary, None),
                Default::default(),
                None
            )
            .is_none()
        );
        let t = t + Duration::from_secs(1);
        let j = ro
            .look(
                t,
                (&stable, &canary, None),
                (&stable, &canary, None),
                Default::default(),
                None,
            )
            .unwrap();
        assert_eq!(j.verdict, Verdict::Inconclusive);
        assert_eq!(ro.conclude(t, &j), Action::None);
        assert!(
            matches!(&ro.phase, Phase::Paused { reason } if reason.contains("not decided in time")),
            "{:?}",
            ro.phase
        );
        // `on-timeout pass` moves on instead.
        let mut ro = rollout(t0, OnTimeout::Pass);
        let t = t0 + Duration::from_secs(4);
        let j = ro
            .look(
                t,
                (&stable, &canary, None),
                (&stable, &canary, None),
                Default::default(),
                None,
            )
            .unwrap();
        assert_eq!(ro.conclude(t, &j), Action::SetPercent(500_000));
    }
}
