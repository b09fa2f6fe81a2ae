//! Unit tests of [`super`].

use super::*;

#[test]
fn admin_arguments_make_a_plan() {
    let a = PlanArgs::parse(&[
        "steps",
        "5,25,50,100",
        "interval",
        "2s",
        "min-requests",
        "50",
        "max-p99",
        "250ms",
    ])
    .unwrap();
    let p = a.apply(None).unwrap();
    assert_eq!(p.steps, vec![50_000, 250_000, 500_000, 1_000_000]);
    assert_eq!(p.interval, Duration::from_secs(2));
    assert_eq!(p.criteria.min_requests, 50);
    assert_eq!(p.criteria.max_p99, Some(Duration::from_millis(250)));
    assert_eq!(p.judged_steps(), 3);
    assert!(
        p.describe()
            .starts_with("steps 5,25,50,100 interval 2s min-requests 50"),
        "{}",
        p.describe()
    );
    // Overrides keep the rest of the base plan.
    let q = PlanArgs::parse(&["interval", "5s"])
        .unwrap()
        .apply(Some(&p))
        .unwrap();
    assert_eq!(
        (q.steps.len(), q.interval, q.criteria.min_requests),
        (4, Duration::from_secs(5), 50)
    );
}

#[test]
fn bad_plans_are_refused_with_a_reason() {
    for (words, want) in [
        (&["steps", "50,25"][..], "larger than the one before"),
        (&["steps", "100"], "below 100"),
        (&["steps", "5", "interval", "10ms"], "interval"),
        (&["steps", "5", "confidence", "2"], "confidence"),
        (&["steps", "5,101"], "steps"),
        (&["steps"], "needs a value"),
        (&["steps", "5", "bogus", "1"], "unknown setting"),
        (&["interval", "5s"], "no rollout plan"),
    ] {
        let e = PlanArgs::parse(words)
            .and_then(|a| a.apply(None))
            .unwrap_err();
        assert!(e.contains(want), "{words:?}: {e}");
    }
}

#[test]
fn config_file_routes_take_a_plan_and_a_kill_switch() {
    let text = r#"
[[stage]]
name = "s"
listen = "127.0.0.1:0"

[[stage.route]]
name = "api"
stable = { id = "v1", endpoints = ["127.0.0.1:1"] }
canary = { id = "v2", endpoints = ["127.0.0.1:2"] }
rollout = { steps = [5, 25, 100], interval = "2s", min_requests = 50 }
kill_switch = { window = 20, max_error_rate = 0.25 }
"#;
    let parse = |t: &str| crate::config::file::parse(t, std::path::Path::new("cg.toml"));
    let c = parse(text).unwrap();
    let r = &c.stages[0].routes[0];
    assert_eq!(
        r.rollout.as_ref().unwrap().steps,
        vec![50_000, 250_000, 1_000_000]
    );
    assert_eq!(r.rollout.as_ref().unwrap().criteria.min_requests, 50);
    assert_eq!(r.kill_switch.unwrap().threshold(), 6);
    let e = parse(&text.replace("[5, 25, 100]", "[25, 5]"))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("cg.toml:10:") && e.contains("rollout: steps"),
        "{e}"
    );
    let e = parse(&text.replace("max_error_rate = 0.25", "max_error_rate = 2"))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("cg.toml:11:") && e.contains("kill_switch: max_error_rate"),
        "{e}"
    );
    let e = parse(&text.replace("window = 20", "window = 20, bogus = 1"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("line 11") && e.contains("unknown field `bogus`"),
        "{e}"
    );
}

#[test]
fn judge_settings_parse_and_bad_values_are_named() {
    let p = PlanArgs::parse(&[
        "steps",
        "10,50",
        "interval",
        "2s",
        "judge",
        "fixed",
        "kill-switch",
        "off",
    ])
    .unwrap()
    .apply(None)
    .unwrap();
    assert_eq!((p.judge, p.kill_switch), (JudgeKind::Fixed, false));
    assert!(
        p.describe().ends_with("judge fixed kill-switch off"),
        "{}",
        p.describe()
    );
    let p = PlanArgs::parse(&["steps", "10", "interval", "2s", "on-timeout", "pass"])
        .unwrap()
        .apply(None)
        .unwrap();
    assert_eq!(p.judge, JudgeKind::Sequential, "the default");
    assert_eq!(p.step_limit(), Duration::from_secs(10), "5 intervals");
    assert!(
        p.describe()
            .contains("judge sequential max-interval 10s on-timeout pass"),
        "{}",
        p.describe()
    );
    for (words, want) in [
        (&["steps", "5", "judge", "bayes"][..], "judge: 'bayes'"),
        (
            &["steps", "5", "on-timeout", "later"],
            "on-timeout: 'later'",
        ),
        (
            &["steps", "5", "kill-switch", "maybe"],
            "kill-switch: 'maybe'",
        ),
        (
            &["steps", "5", "interval", "10s", "max-interval", "5s"],
            "max-interval must be at least the interval",
        ),
    ] {
        let e = PlanArgs::parse(words)
            .and_then(|a| a.apply(None))
            .unwrap_err();
        assert!(e.contains(want), "{words:?}: {e}");
    }
    let f: FilePlan = toml::from_str(
        "steps = [5, 50]\njudge = \"fixed\"\non_timeout = \"fail\"\nmax_interval = \"10m\"\nkill_switch = false",
    )
    .unwrap();
    let p = f.check().unwrap();
    assert_eq!(
        (p.judge, p.on_timeout, p.step_limit(), p.kill_switch),
        (
            JudgeKind::Fixed,
            OnTimeout::Fail,
            Duration::from_secs(600),
            false
        )
    );
    let f: FilePlan = toml::from_str("steps = [5]\non_timeout = \"never\"").unwrap();
    assert!(f.check().unwrap_err().contains("on_timeout: 'never'"));
}

#[test]
fn file_plans_use_the_same_rules() {
    let f: FilePlan = toml::from_str("steps = [1, 12.5, \"50\", 100]\ninterval = \"1s\"\nmin_requests = 20\nmax_error_rate = 0.05").unwrap();
    let p = f.check().unwrap();
    assert_eq!(p.steps, vec![10_000, 125_000, 500_000, 1_000_000]);
    assert_eq!(p.criteria.max_error_rate, Some(0.05));
    let f: FilePlan = toml::from_str("steps = [5]\nmin_requests = 0").unwrap();
    assert!(f.check().unwrap_err().contains("min_requests"));
}
