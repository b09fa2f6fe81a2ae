//! The rollout controller on a real `Control` with synthetic traffic written straight into
//! the route's counters, and time passed in: every transition the controller makes,
//! without sockets.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway_common::Variant;

use super::Rollouts;
use crate::config::killswitch::KillSwitchConfig;
use crate::config::{Canary, Config, Deployment, RouteConfig, StageConfig};
use crate::control::Control;
use crate::metrics::WorkerMetrics;
use crate::rollout::plan::PlanArgs;
use crate::rollout::{Plan, RolloutCommand};

const SECOND: Duration = Duration::from_secs(1);

fn route(canary_id: &str, plan: Option<Plan>, kill: Option<KillSwitchConfig>) -> RouteConfig {
    let mut r = RouteConfig::catch_all("api", vec!["127.0.0.1:1".parse().unwrap()]);
    r.stable.id = "v1".into();
    r.canary = Some(Canary {
        deployment: Deployment {
            id: canary_id.into(),
            endpoints: vec!["127.0.0.1:2".parse().unwrap()],
            variables: std::collections::BTreeMap::new(),
            health: crate::config::health::HealthConfig::default(),
            tls: None,
            protocol: crate::config::UpstreamProtocol::Http1,
        },
        ppm: 10_000,
    });
    r.rollout = plan;
    r.kill_switch = kill;
    r
}

fn config(r: RouteConfig) -> Config {
    Config {
        stages: vec![StageConfig {
            name: "s".into(),
            listen: "127.0.0.1:0".parse().unwrap(),
            tls: None,
            http2: false,
            routes: vec![r],
        }],
        ..Config::default()
    }
}

fn control(r: RouteConfig) -> Rollouts {
    let control = Control::new(
        config(r),
        vec![Arc::new(WorkerMetrics::default())],
        crate::kernel::Kernel::default(),
    )
    .unwrap();
    Rollouts::new(Arc::new(control), Instant::now(), None)
}

/// Records `n` requests of `variant`: latency `us` (+ a little spread), `errors` 5xx.
fn traffic(c: &Rollouts, variant: Variant, n: u64, us: u64, errors: u64) {
    let snap = c.control().shared().load();
    let slot = snap.stages[0].routes[0].metrics.slot(0, variant);
    for i in 0..n {
        slot.requests.inc();
        slot.responses[if i < errors { 4 } else { 1 }].inc();
        slot.total_latency.record(us + i % 40);
    }
}

fn start(c: &Rollouts, words: &[&str]) -> String {
    let args = PlanArgs::parse(words).unwrap();
    c.rollout(
        None,
        &RolloutCommand::Start {
            route: "api".into(),
            args: Box::new(args),
        },
        "test",
    )
    .unwrap()
}

fn state(c: &Rollouts) -> serde_json::Value {
    crate::admin::show::rollout::report(c, Some("api"), Instant::now())
        .unwrap()
        .remove(0)
}

fn ppm(c: &Rollouts) -> u32 {
    c.control().split("api").unwrap().ppm()
}

#[test]
fn healthy_canary_walks_every_step_and_is_promoted() {
    let c = control(route("v2", None, None));
    let t0 = Instant::now();
    let reply = start(
        &c,
        &[
            "steps",
            "10,50,100",
            "interval",
            "1s",
            "min-requests",
            "50",
            "judge",
            "fixed",
        ],
    );
    assert!(reply.contains("rollout of v2 started by test"), "{reply}");
    assert_eq!(ppm(&c), 100_000);
    c.tick(t0 + SECOND / 2);
    assert_eq!(state(&c)["step"], 1, "not due yet");
    traffic(&c, Variant::Stable, 500, 200, 0);
    traffic(&c, Variant::Canary, 60, 200, 0);
    c.tick(t0 + 2 * SECOND);
    assert_eq!(
        (state(&c)["step"].as_u64(), ppm(&c)),
        (Some(2), 500_000),
        "{}",
        state(&c)
    );
    // The next window starts from the counters at the step change.
    traffic(&c, Variant::Stable, 300, 200, 0);
    traffic(&c, Variant::Canary, 300, 200, 0);
    c.tick(t0 + 4 * SECOND);
    let s = state(&c);
    assert_eq!(s["state"], "promoted", "{s}");
    assert_eq!(s["history"][1]["detail"]["canary"]["requests"], 300);
    let cfg = c.control().config();
    assert!(cfg.stages[0].routes[0].canary.is_none());
    assert_eq!(cfg.stages[0].routes[0].stable.id, "v2");
    assert_eq!(s["verdicts"]["pass"], 2);
}

#[test]
fn slow_canary_is_rolled_back_and_too_few_samples_hold_the_step() {
    let c = control(route("v2", None, None));
    let t0 = Instant::now();
    start(
        &c,
        &[
            "steps",
            "5,50",
            "interval",
            "1s",
            "min-requests",
            "50",
            "judge",
            "fixed",
        ],
    );
    traffic(&c, Variant::Stable, 1000, 200, 0);
    traffic(&c, Variant::Canary, 20, 30_200, 0);
    c.tick(t0 + 2 * SECOND);
    let s = state(&c);
    assert_eq!(
        (s["state"].as_str(), s["step"].as_u64()),
        (Some("running"), Some(1))
    );
    assert_eq!(s["last"]["verdict"], "inconclusive");
    assert!(
        s["last"]["summary"]
            .as_str()
            .unwrap()
            .contains("canary has 20 of the 50 requests needed"),
        "{s}"
    );
    traffic(&c, Variant::Canary, 40, 30_200, 0);
    c.tick(t0 + 3 * SECOND);
    let s = state(&c);
    assert_eq!(s["state"], "rolled_back", "{s}");
    assert!(
        s["reason"]
            .as_str()
            .unwrap()
            .contains("canary latency is higher"),
        "{s}"
    );
    assert_eq!(ppm(&c), 0);
    let cfg = c.control().config();
    assert_eq!(
        cfg.stages[0].routes[0].canary.as_ref().unwrap().ppm,
        0,
        "the canary is kept at 0 %"
    );
}

#[test]
fn kill_switch_trip_fails_the_rollout() {
    let kill = KillSwitchConfig {
        window: 10,
        max_error_rate: 0.5,
        count_5xx: true,
        count_connect_failures: true,
    };
    let c = control(route("v2", None, Some(kill)));
    start(&c, &["steps", "20,50", "interval", "60s"]);
    let snap = c.control().shared().load();
    let r = &snap.stages[0].routes[0];
    for _ in 0..6 {
        r.kill.record(
            0,
            "api",
            crate::dataplane::route::killswitch::Answer::http(503, false),
            &r.split,
        );
    }
    assert_eq!(ppm(&c), 0, "the worker itself set the share to 0");
    c.tick(Instant::now());
    let s = state(&c);
    assert_eq!(s["state"], "rolled_back");
    assert!(
        s["reason"]
            .as_str()
            .unwrap()
            .contains("kill switch tripped (worker 0: 6 of the last 10"),
        "{s}"
    );
    assert_eq!(
        c.control().config().stages[0].routes[0]
            .canary
            .as_ref()
            .unwrap()
            .ppm,
        0
    );
    let (k, _) = c.control().kill_switch("api").unwrap();
    assert!(k.is_tripped());
    c.control().set_percent(None, "api", 10_000).unwrap();
    assert!(!k.is_tripped(), "setting a share re-arms the switch");
}

#[test]
fn pause_resume_abort_and_changes_by_hand() {
    let c = control(route("v2", None, None));
    let t0 = Instant::now();
    start(
        &c,
        &[
            "steps",
            "5,50",
            "interval",
            "1s",
            "min-requests",
            "10",
            "judge",
            "fixed",
        ],
    );
    let cmd = |w: RolloutCommand| c.rollout(None, &w, "op");
    let api = || "api".to_owned();
    assert!(
        cmd(RolloutCommand::Pause { route: api() })
            .unwrap()
            .contains("paused at step 1 (5%)")
    );
    traffic(&c, Variant::Stable, 100, 200, 0);
    traffic(&c, Variant::Canary, 100, 200, 0);
    c.tick(t0 + 5 * SECOND);
    assert_eq!(
        state(&c)["history"].as_array().unwrap().len(),
        0,
        "paused rollouts are not judged"
    );
    assert!(
        cmd(RolloutCommand::Resume { route: api() })
            .unwrap()
            .contains("resumed at step 1")
    );
    // A share set by hand pauses the rollout; resume puts the step's share back.
    c.control().set_percent(None, "api", 300_000).unwrap();
    c.tick(t0 + 5 * SECOND);
    let s = state(&c);
    assert_eq!(s["state"], "paused");
    assert!(
        s["reason"]
            .as_str()
            .unwrap()
            .contains("changed by hand to 30"),
        "{s}"
    );
    cmd(RolloutCommand::Resume { route: api() }).unwrap();
    assert_eq!(ppm(&c), 50_000);
    assert!(
        cmd(RolloutCommand::Start {
            route: api(),
            args: Box::default()
        })
        .unwrap_err()
        .to_string()
        .contains("already running")
    );
    assert!(
        cmd(RolloutCommand::Abort { route: api() })
            .unwrap()
            .contains("rolled back")
    );
    assert_eq!((state(&c)["state"].as_str(), ppm(&c)), (Some("aborted"), 0));
    assert!(cmd(RolloutCommand::Resume { route: api() }).is_err());
    assert!(
        cmd(RolloutCommand::Pause {
            route: "nope".into()
        })
        .is_err()
    );
}

#[test]
fn reload_keeps_a_rollout_and_a_new_canary_with_a_plan_starts_one() {
    let plan = Plan::new(vec![10_000, 500_000], Duration::from_secs(60)).unwrap();
    let c = control(route("v2", Some(plan.clone()), None));
    let s = state(&c);
    assert_eq!(
        (s["state"].as_str(), s["origin"].as_str(), ppm(&c)),
        (Some("running"), Some("config file"), 10_000),
        "start-up starts the file's plan"
    );
    c.rollout(
        None,
        &RolloutCommand::Abort {
            route: "api".into(),
        },
        "op",
    )
    .unwrap();
    start(&c, &["steps", "20,50", "interval", "60s"]);
    let lines = c
        .reload(&config(route("v2", Some(plan.clone()), None)))
        .unwrap();
    assert_eq!(ppm(&c), 200_000, "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("keeps canary percent 20 (the file says 1)")),
        "{lines:?}"
    );
    assert_eq!(state(&c)["state"], "running");
    // A new canary deployment with a plan: the old rollout ends, a new one starts.
    let lines = c.reload(&config(route("v3", Some(plan), None))).unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("rollout ended: reload changed the canary deployment (v2 -> v3)")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("rollout of v3 started by config file")),
        "{lines:?}"
    );
    assert_eq!(
        (state(&c)["deployment"].as_str(), ppm(&c)),
        (Some("v3"), 10_000)
    );
    // Without a plan, a changed canary just ends the rollout and takes the file's share.
    let lines = c.reload(&config(route("v4", None, None))).unwrap();
    assert!(
        lines.iter().any(|l| l.contains("rollout ended")),
        "{lines:?}"
    );
    assert_eq!(
        (state(&c)["state"].as_str(), ppm(&c)),
        (Some("ended"), 10_000)
    );
}
