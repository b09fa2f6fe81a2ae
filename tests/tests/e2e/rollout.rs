//! Progressive delivery end to end, with one-second steps. The sequential judge (the
//! default): a healthy canary is promoted through every step; a canary failing every
//! request is rolled back by the judge alone before its first interval is over, or by
//! the kill switch a rollout turns on by default within that switch's bound; a canary
//! 30 ms slower is rolled back at the first step. The fixed-sample judge (`judge fixed`):
//! a healthy canary is promoted after every step passed; a canary 30 ms slower is rolled
//! back at the first step where it has enough samples; a canary with 3 % errors is rolled
//! back; a canary that starts
//! failing every request trips the data-plane kill switch within its window (and the
//! failed client requests stay within the bound the window implies); pause, resume,
//! abort and a reload in the middle of a rollout; and what a restart does.
//!
//! Traffic comes from [`BackgroundLoad`] (4 keep-alive connections, one request at a time
//! each); the canary is a [`TunableUpstream`] whose delay and failure share change
//! mid-test.

use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::{
    AdminConn, BackgroundLoad, Client, ConfigFile, Expect, GatewayProc, TunableUpstream, ctl,
};

/// Longest a rollout may take to reach what a test waits for.
const WAIT: Duration = Duration::from_secs(45);
/// Client connections of the background load (each has one request in flight at most).
const CONNS: usize = 4;
/// Workers of every gateway here; the kill switch's bound is per worker.
const WORKERS: u64 = 2;

struct Setup {
    stable: TunableUpstream,
    canary: TunableUpstream,
    file: ConfigFile,
    gw: GatewayProc,
    admin: AdminConn,
}

/// A gateway with route `api` (stable `v1`, canary `v2` at `percent`), with `extra` lines
/// added to the route (a `rollout` plan, a `kill_switch`).
fn config(file: &ConfigFile, stable: &str, canary: &str, percent: &str, extra: &str) -> String {
    format!(
        r#"[server]
workers = {WORKERS}
admin_socket = "{sock}"
metrics_listen = "127.0.0.1:0"

[[stage]]
name = "prod"
listen = "127.0.0.1:0"

[[stage.route]]
name = "api"
stable = {{ id = "v1", endpoints = ["{stable}"] }}
canary = {{ id = "v2", endpoints = ["{canary}"], percent = {percent} }}
{extra}
"#,
        sock = file.sibling("admin.sock").display()
    )
}

fn setup(percent: &str, extra: &str) -> Setup {
    let stable = TunableUpstream::start("stable");
    let canary = TunableUpstream::start("canary");
    let file = ConfigFile::new("");
    file.write(&config(
        &file,
        &stable.addr_str(),
        &canary.addr_str(),
        percent,
        extra,
    ));
    let gw = GatewayProc::start_config(
        file.path(),
        &Expect::stages(1).with_admin().with_metrics(),
        &[],
    );
    let admin = AdminConn::connect(gw.admin_socket()).unwrap();
    Setup {
        stable,
        canary,
        file,
        gw,
        admin,
    }
}

fn load(gw: &GatewayProc) -> BackgroundLoad {
    BackgroundLoad::start(gw.addr(), "/", CONNS, 1, Duration::from_secs(120))
}

/// `show rollout ROUTE json` of one route.
fn rollout(admin: &mut AdminConn, route: &str) -> Value {
    admin.cmd(&format!("show rollout {route} json")).json()["rollouts"][0].clone()
}

/// `show canary api json` of route `api`.
fn canary_route(admin: &mut AdminConn) -> Value {
    admin.cmd("show canary api json").json()["routes"][0].clone()
}

/// Polls `show rollout api json` until `done` holds; panics with the last state after
/// [`WAIT`].
fn wait_rollout(admin: &mut AdminConn, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let r = rollout(admin, "api");
        if done(&r) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "rollout never got to {what}: {r:#}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

fn verdicts(r: &Value) -> Vec<(u64, String)> {
    r["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["step"].as_u64().unwrap(),
                h["verdict"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Asserts the canary upstream gets no new request for a while (its share is 0).
fn assert_canary_idle(canary: &TunableUpstream) {
    thread::sleep(Duration::from_millis(200));
    let before = canary.requests();
    thread::sleep(Duration::from_millis(500));
    assert_eq!(canary.requests(), before, "the canary still gets requests");
}

#[test]
fn sequential_judge_promotes_a_healthy_canary_through_every_step() {
    let mut s = setup("0", "");
    let traffic = load(&s.gw);
    let reply = s.admin.ok(
        "rollout start api steps 10,50,100 interval 1s max-interval 30s error-tolerance 0.05 latency-tolerance-abs 5ms",
    );
    assert!(
        reply.contains("judge sequential max-interval 30s on-timeout pause"),
        "{reply}"
    );
    let r = wait_rollout(&mut s.admin, "its end", |r| r["state"] != "running");
    let report = traffic.finish();
    assert_eq!(r["state"], "promoted", "{r:#}");
    assert_eq!(
        verdicts(&r),
        vec![(1, "pass".to_owned()), (2, "pass".to_owned())],
        "{r:#}"
    );
    for h in r["history"].as_array().unwrap() {
        let seq = &h["detail"]["sequential"];
        // Passed because the confidence sequences ruled a regression out, after the
        // minimum duration.
        assert!(h["summary"].as_str().unwrap().starts_with("pass"), "{h:#}");
        assert!(
            seq["error_difference"][1].as_f64().unwrap() <= 0.05
                && seq["p_errors"].as_f64().unwrap() > 0.025
                && seq["pending"].as_array().unwrap().is_empty(),
            "{h:#}"
        );
        assert!(
            seq["quantiles"][0]["difference_us"][1].as_f64().unwrap() <= 5_000.0,
            "{h:#}"
        );
    }
    let history = r["history"].as_array().unwrap();
    assert!(
        history[0]["at_ms"].as_u64().unwrap() >= 1_000,
        "a step lasts its interval at least: {r:#}"
    );
    let series = r["series"].as_array().unwrap();
    assert!(
        series.len() >= 2 && series.iter().all(|p| p["p_latency"].is_number()),
        "{r:#}"
    );
    assert!(
        report.errors.is_empty() && report.other_status.is_empty(),
        "{report:?}"
    );
    let m = s.gw.scrape();
    let p = m.value(
        "canarygate_rollout_p_value",
        &[("route", "api"), ("test", "errors")],
    );
    assert!(p > 0.025 && p <= 1.0, "{p}");
    let upper = m.value(
        "canarygate_rollout_confidence_bound",
        &[
            ("route", "api"),
            ("quantity", "error_rate"),
            ("side", "upper"),
        ],
    );
    assert!(upper <= 0.05, "{upper}");
    let out = ctl(s.gw.admin_socket(), &["show", "rollout", "api"]);
    assert!(
        out.stdout
            .contains("sequential judge now: always-valid p latency"),
        "{}",
        out.stdout
    );
}

/// The issue's case (`steps 10,50,100` over a canary that answers 500 to everything),
/// with the default kill switch off so that the judge alone is measured, and a 5 s
/// interval: the fixed judge could not say anything before it is over.
#[test]
fn sequential_judge_rolls_back_a_canary_failing_every_request_before_its_interval_ends() {
    let mut s = setup("0", "");
    s.canary.set_fail_per_mille(1000);
    let traffic = load(&s.gw);
    s.admin
        .ok("rollout start api steps 10,50,100 interval 5s kill-switch off");
    let r = wait_rollout(&mut s.admin, "its end", |r| r["state"] != "running");
    let report = traffic.finish();
    assert_eq!(r["state"], "rolled_back", "{r:#}");
    assert_eq!(verdicts(&r), vec![(1, "fail".to_owned())], "{r:#}");
    let failed = &r["history"][0];
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .contains("canary error rate is higher"),
        "{r:#}"
    );
    // The bound: no minimum sample and no minimum duration to fail, the judge looks every
    // 500 ms, so the failure comes at the first look at which the canary has served a
    // handful of failed requests (10 suffice against a clean stable): here the first or
    // second look, well before the interval is over.
    assert!(failed["at_ms"].as_u64().unwrap() < 5_000, "{failed:#}");
    let canary_requests = failed["detail"]["canary"]["requests"].as_u64().unwrap();
    assert!(canary_requests >= 1, "{failed:#}");
    assert!(
        failed["detail"]["sequential"]["p_errors"].as_f64().unwrap() < 0.025,
        "{failed:#}"
    );
    assert!(
        canary_route(&mut s.admin)["kill_switch"].is_null(),
        "kill-switch off leaves the route without one"
    );
    assert_eq!(canary_route(&mut s.admin)["canary"]["percent"], "0");
    assert_canary_idle(&s.canary);
    assert!(
        report.other_status.keys().all(|&status| status == 500),
        "{report:?}"
    );
}

/// With the kill switch a rollout turns on by default (20 requests per worker, trips
/// above 50 % failed), a canary failing every request is stopped after at most 11 failed
/// requests per worker, plus the requests already in flight, whether the switch or the
/// judge acts first.
#[test]
fn default_kill_switch_bounds_a_failing_canary_during_a_rollout() {
    let mut s = setup("0", "");
    s.canary.set_fail_per_mille(1000);
    let traffic = load(&s.gw);
    s.admin.ok("rollout start api steps 10,50,100 interval 2s");
    let running = canary_route(&mut s.admin);
    let r = wait_rollout(&mut s.admin, "its end", |r| r["state"] != "running");
    thread::sleep(Duration::from_millis(300));
    let report = traffic.finish();
    assert_eq!(r["state"], "rolled_back", "{r:#}");
    let reason = r["reason"].as_str().unwrap();
    assert!(
        reason.contains("kill switch tripped") || reason.contains("canary error rate is higher"),
        "{reason}"
    );
    let failed = report.other_status.get(&500).copied().unwrap_or(0);
    assert!(
        failed <= 11 * WORKERS + CONNS as u64,
        "{failed} failed requests reached clients: {report:?}
{running:#}"
    );
    assert_canary_idle(&s.canary);
}

#[test]
fn sequential_judge_rolls_back_a_canary_30ms_slower() {
    let mut s = setup("0", "");
    s.canary.set_delay(Duration::from_millis(30));
    let traffic = load(&s.gw);
    s.admin
        .ok("rollout start api steps 5,25,50,100 interval 1s");
    let r = wait_rollout(&mut s.admin, "its end", |r| r["state"] != "running");
    drop(traffic.finish());
    assert_eq!(r["state"], "rolled_back", "{r:#}");
    assert_eq!(verdicts(&r), vec![(1, "fail".to_owned())], "{r:#}");
    let seq = &r["history"][0]["detail"]["sequential"];
    assert!(seq["p_latency"].as_f64().unwrap() < 0.025, "{seq:#}");
    assert!(
        seq["quantiles"][0]["difference_us"][0]
            .as_f64()
            .unwrap_or(0.0)
            > 20_000.0
            || seq["quantiles"][0]["difference_us"][0].is_null(),
        "{seq:#}"
    );
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .contains("canary latency is higher"),
        "{r:#}"
    );
    assert_eq!(canary_route(&mut s.admin)["canary"]["percent"], "0");
    assert_canary_idle(&s.canary);
}

#[test]
fn healthy_canary_goes_through_every_step_and_is_promoted() {
    let mut s = setup("0", "");
    let traffic = load(&s.gw);
    let reply = s
        .admin
        .ok("rollout start api steps 5,25,50,100 interval 1s min-requests 30 judge fixed");
    assert!(
        reply.contains("judge fixed")
            && reply.contains("rollout of v2 started by uid")
            && reply.contains("canary percent 0 -> 5"),
        "{reply}"
    );
    let r = wait_rollout(&mut s.admin, "its end", |r| r["state"] != "running");
    let report = traffic.finish();
    assert_eq!(r["state"], "promoted", "{r:#}");
    // Steps 1..3 were judged (5, 25, 50 %); 100 % is the promotion itself. Each step
    // ends with a passing verdict, held only while it lacked samples.
    let v = verdicts(&r);
    for step in 1..=3 {
        let last = v
            .iter()
            .rfind(|(s, _)| *s == step)
            .unwrap_or_else(|| panic!("step {step} never judged: {v:?}"));
        assert!(
            last.1 == "pass" || last.1 == "marginal",
            "step {step}: {v:?}"
        );
    }
    assert!(v.iter().all(|(_, verdict)| verdict != "fail"), "{v:?}");
    for h in r["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["verdict"] != "inconclusive")
    {
        assert!(
            h["detail"]["canary"]["requests"].as_u64().unwrap() >= 30,
            "{h:#}"
        );
        assert!(
            h["detail"]["latency"]["u"].is_number()
                && h["detail"]["latency"]["p_canary_slower"].is_number(),
            "{h:#}"
        );
    }
    assert!(
        report.errors.is_empty() && report.other_status.is_empty(),
        "{report:?}"
    );
    assert!(
        report.count("canary") > 100 && report.count("stable") > 100,
        "{report:?}"
    );
    // Promoted: v2 is the stable deployment and serves everything.
    let route = canary_route(&mut s.admin);
    assert_eq!(
        (route["stable"]["id"].as_str(), route["canary"].is_null()),
        (Some("v2"), true),
        "{route:#}"
    );
    let before = s.stable.requests();
    let mut client = Client::connect(s.gw.addr()).unwrap();
    for _ in 0..20 {
        assert_eq!(client.get("/").unwrap().text(), "canary");
    }
    assert_eq!(s.stable.requests(), before);
    let m = s.gw.scrape();
    assert_eq!(
        m.int(
            "canarygate_rollout_state",
            &[("route", "api"), ("state", "promoted")]
        ),
        1
    );
    let judged = m.int(
        "canarygate_rollout_verdicts_total",
        &[("route", "api"), ("verdict", "pass")],
    ) + m.int(
        "canarygate_rollout_verdicts_total",
        &[("route", "api"), ("verdict", "marginal")],
    );
    assert_eq!(judged, 3);
    let log = s.gw.stderr();
    assert!(
        log.contains("rollout step 1 (5%) verdict: ")
            && log.contains("promoted canary v2 to stable"),
        "{log}"
    );
}

#[test]
fn canary_30ms_slower_is_rolled_back_at_the_first_step_with_enough_samples() {
    let mut s = setup("0", "");
    s.canary.set_delay(Duration::from_millis(30));
    let traffic = load(&s.gw);
    s.admin
        .ok("rollout start api steps 5,25,50,100 interval 1s min-requests 30 judge fixed");
    let r = wait_rollout(&mut s.admin, "its end", |r| r["state"] != "running");
    drop(traffic.finish());
    assert_eq!(r["state"], "rolled_back", "{r:#}");
    // Failed at step 1: every verdict before the failure said "too few samples".
    let v = verdicts(&r);
    let (last, earlier) = v.split_last().unwrap();
    assert_eq!(*last, (1, "fail".to_owned()), "{v:?}");
    assert!(
        earlier
            .iter()
            .all(|(step, verdict)| *step == 1 && verdict == "inconclusive"),
        "{v:?}"
    );
    let failed = &r["history"].as_array().unwrap().last().unwrap()["detail"];
    assert!(
        failed["canary"]["requests"].as_u64().unwrap() >= 30,
        "{failed:#}"
    );
    let latency = &failed["latency"];
    assert!(
        latency["p_canary_slower"].as_f64().unwrap() < 0.05,
        "{latency:#}"
    );
    assert!(
        latency["canary_median_us"].as_f64().unwrap()
            > latency["stable_median_us"].as_f64().unwrap() + 25_000.0,
        "{latency:#}"
    );
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .contains("canary latency is higher"),
        "{r:#}"
    );
    assert_eq!(canary_route(&mut s.admin)["canary"]["percent"], "0");
    assert_canary_idle(&s.canary);
    assert!(
        s.gw.stderr().contains("rolled back, canary percent 5 -> 0"),
        "{}",
        s.gw.stderr()
    );
}

#[test]
fn canary_with_3_percent_errors_is_rolled_back() {
    let mut s = setup("0", "");
    s.canary.set_fail_per_mille(30);
    let traffic = load(&s.gw);
    s.admin
        .ok("rollout start api steps 5,25,50,100 interval 1s min-requests 100 judge fixed");
    let r = wait_rollout(&mut s.admin, "its end", |r| r["state"] != "running");
    drop(traffic.finish());
    assert_eq!(r["state"], "rolled_back", "{r:#}");
    let reason = r["reason"].as_str().unwrap();
    assert!(reason.contains("canary error rate is higher"), "{reason}");
    let errors = &r["last"]["detail"]["errors"];
    assert!(
        errors["p_canary_worse"].as_f64().unwrap() < 0.05,
        "{errors:#}"
    );
    assert!(
        (0.02..0.045).contains(&errors["canary_rate"].as_f64().unwrap()),
        "{errors:#}"
    );
    assert_eq!(errors["stable_rate"].as_f64(), Some(0.0));
    assert_eq!(canary_route(&mut s.admin)["canary"]["percent"], "0");
    assert_canary_idle(&s.canary);
}

/// Failures of one worker's window (20 requests, more than 25 % failed) that trip it.
const KILL: &str = "kill_switch = { window = 20, max_error_rate = 0.25 }";
const THRESHOLD: u64 = 6;

/// Waits until the kill switch of `api` has tripped `trips` times.
fn wait_trips(admin: &mut AdminConn, trips: u64) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let route = canary_route(admin);
        if route["kill_switch"]["trips"].as_u64() == Some(trips) {
            return route;
        }
        assert!(
            Instant::now() < deadline,
            "kill switch did not trip: {route:#}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn kill_switch_drops_a_failing_canary_within_its_window() {
    let mut s = setup(
        "0",
        &format!("{KILL}\nrollout = {{ steps = [50, 100], interval = \"60s\" }}"),
    );
    // Every worker may see up to THRESHOLD failures before it trips, and each connection
    // may have one more canary request in flight at that moment.
    let bound = WORKERS * THRESHOLD + CONNS as u64;
    let r = rollout(&mut s.admin, "api");
    assert_eq!(
        (r["state"].as_str(), r["canary_percent"].as_str()),
        (Some("running"), Some("50")),
        "{r:#}"
    );
    let traffic = load(&s.gw);
    thread::sleep(Duration::from_millis(500));
    assert!(
        s.canary.requests() > 50,
        "the canary serves before it fails"
    );
    s.canary.set_fail_per_mille(1000);
    let route = wait_trips(&mut s.admin, 1);
    assert_eq!(route["canary"]["percent"], "0", "{route:#}");
    assert_eq!(route["kill_switch"]["tripped"], true, "{route:#}");
    assert_canary_idle(&s.canary);
    let report = traffic.finish();
    let failed = s.canary.failed();
    assert!(
        (THRESHOLD..=bound).contains(&failed),
        "{failed} canary requests failed; bound {bound}"
    );
    assert_eq!(
        report.other_status.get(&500).copied().unwrap_or(0),
        failed,
        "{report:?}"
    );
    let r = wait_rollout(&mut s.admin, "rollback", |r| r["state"] != "running");
    assert_eq!(r["state"], "rolled_back");
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .contains("kill switch tripped (worker "),
        "{r:#}"
    );
    let text = s.admin.ok("show canary api");
    assert!(text.contains("kill switch: TRIPPED ("), "{text}");
    let m = s.gw.scrape();
    assert_eq!(
        m.int("canarygate_kill_switch_tripped", &[("route", "api")]),
        1
    );
    assert_eq!(
        m.int("canarygate_kill_switch_trips_total", &[("route", "api")]),
        1
    );
    assert!(
        s.gw.stderr().contains("kill switch tripped on worker"),
        "{}",
        s.gw.stderr()
    );

    // Setting a share again re-arms it; a canary that refuses connections (502) trips it
    // again within the same bound.
    s.admin.ok("set canary api percent 50");
    assert_eq!(canary_route(&mut s.admin)["kill_switch"]["tripped"], false);
    drop(s.canary);
    let traffic = load(&s.gw);
    wait_trips(&mut s.admin, 2);
    thread::sleep(Duration::from_millis(300));
    let report = traffic.finish();
    // Connections the canary kept open may still answer one 500 before they close.
    let refused = report.other_status.get(&502).copied().unwrap_or(0);
    let failed = refused + report.other_status.get(&500).copied().unwrap_or(0);
    assert!(
        refused > 0 && (THRESHOLD..=bound).contains(&failed),
        "{failed} canary requests failed ({refused} with 502); bound {bound}: {report:?}"
    );
    assert!(report.count("stable") > 100, "{report:?}");
    assert!(s.stable.requests() > 0);
}

#[test]
fn pause_resume_abort_and_reload_in_the_middle_of_a_rollout() {
    let mut s = setup("0", "");
    let traffic = load(&s.gw);
    s.admin
        .ok("rollout start api steps 10,20,30,40 interval 1s min-requests 20 judge fixed");
    wait_rollout(&mut s.admin, "step 2", |r| r["step"].as_u64() >= Some(2));
    let reply = s.admin.ok("rollout pause api");
    assert!(reply.contains("rollout paused at step"), "{reply}");
    let paused = rollout(&mut s.admin, "api");
    assert_eq!(paused["state"], "paused");
    thread::sleep(Duration::from_millis(2500));
    let r = rollout(&mut s.admin, "api");
    assert_eq!(
        (&r["state"], &r["step"], &r["history"]),
        (&paused["state"], &paused["step"], &paused["history"]),
        "a paused rollout stands still"
    );

    // A reload keeps the rollout and its share, whatever the file's percent says.
    let text = config(&s.file, &s.stable.addr_str(), &s.canary.addr_str(), "1", "");
    s.file.write(&text.replace(
        "127.0.0.1:0\"\n\n[[stage.route]]",
        &format!("{}\"\n\n[[stage.route]]", s.gw.addr()),
    ));
    let reply = s.admin.ok("reload");
    assert!(
        reply.contains(&format!(
            "keeps canary percent {} (the file says 1)",
            paused["step_percent"].as_str().unwrap()
        )),
        "{reply}"
    );
    let r = rollout(&mut s.admin, "api");
    assert_eq!(
        (&r["state"], &r["step"], &r["canary_percent"]),
        (&paused["state"], &paused["step"], &paused["step_percent"]),
        "{r:#}"
    );

    // Resume through `canarygate ctl`: the rollout moves on.
    let out = ctl(s.gw.admin_socket(), &["rollout", "resume", "api"]);
    assert!(
        out.status.is_some_and(|st| st.success()) && out.stdout.contains("rollout resumed at step"),
        "{out:?}"
    );
    let step = paused["step"].as_u64().unwrap();
    wait_rollout(&mut s.admin, "the next step", |r| {
        r["step"].as_u64() > Some(step)
    });
    let out = ctl(s.gw.admin_socket(), &["show", "rollout", "api"]);
    assert!(out.stdout.contains("route api: running at step"), "{out:?}");

    let reply = s.admin.ok("rollout abort api");
    assert!(
        reply.contains("rollout aborted at step") && reply.contains("rolled back"),
        "{reply}"
    );
    let r = rollout(&mut s.admin, "api");
    assert_eq!(
        (r["state"].as_str(), r["canary_percent"].as_str()),
        (Some("aborted"), Some("0")),
        "{r:#}"
    );
    assert!(
        r["reason"].as_str().unwrap().starts_with("aborted by uid"),
        "{r:#}"
    );
    drop(traffic.finish());
    assert_canary_idle(&s.canary);
    let e = s.admin.cmd("rollout resume api");
    assert!(!e.ok && e.text.contains("aborted"), "{e:?}");
    let out = ctl(s.gw.admin_socket(), &["rollout", "pause", "api"]);
    assert_eq!(out.status.and_then(|st| st.code()), Some(1), "{out:?}");
    assert!(
        s.gw.stderr().contains("'rollout abort api' ok"),
        "audit log"
    );
}

#[test]
fn restart_restarts_file_plans_from_the_first_step_and_forgets_the_rest() {
    let stable = TunableUpstream::start("stable");
    let canary = TunableUpstream::start("canary");
    let file = ConfigFile::new("");
    let web = format!(
        "rollout = {{ steps = [10, 50], interval = \"60s\" }}\n\n[[stage.route]]\nname = \"web\"\npath_prefix = \"/web\"\nstable = {{ id = \"w1\", endpoints = [\"{}\"] }}\ncanary = {{ id = \"w2\", endpoints = [\"{}\"], percent = 5 }}",
        stable.addr_str(),
        canary.addr_str()
    );
    file.write(&config(
        &file,
        &stable.addr_str(),
        &canary.addr_str(),
        "2",
        &web,
    ));
    let expect = Expect::stages(1).with_admin().with_metrics();
    let gw = GatewayProc::start_config(file.path(), &expect, &[]);
    let mut admin = AdminConn::connect(gw.admin_socket()).unwrap();
    let api = rollout(&mut admin, "api");
    assert_eq!(
        (
            api["state"].as_str(),
            api["origin"].as_str(),
            api["canary_percent"].as_str()
        ),
        (Some("running"), Some("config file"), Some("10")),
        "{api:#}"
    );
    admin.ok("rollout pause api");
    admin.ok("rollout start web steps 20,40 interval 60s");
    assert_eq!(rollout(&mut admin, "web")["canary_percent"], "20");
    drop(admin);
    drop(gw);

    let gw = GatewayProc::start_config(file.path(), &expect, &[]);
    let mut admin = AdminConn::connect(gw.admin_socket()).unwrap();
    let api = rollout(&mut admin, "api");
    assert_eq!(
        (
            api["state"].as_str(),
            api["step"].as_u64(),
            api["canary_percent"].as_str()
        ),
        (Some("running"), Some(1), Some("10")),
        "{api:#}"
    );
    assert_eq!(api["history"].as_array().map(Vec::len), Some(0));
    let web = rollout(&mut admin, "web");
    assert_eq!(
        (web["state"].as_str(), web["canary_percent"].as_str()),
        (Some("none"), Some("5")),
        "{web:#}"
    );
    let text = admin.ok("show rollout");
    assert!(
        text.contains("route web: no rollout, canary 5% (no plan in the configuration file)"),
        "{text}"
    );
}

/// A step that cannot get enough samples is judged inconclusive again and again; with
/// `max-inconclusive N` the rollout pauses after N of them, says why, and keeps the
/// share where it was (the operator resumes or aborts).
#[test]
fn inconclusive_steps_pause_the_rollout_after_max_inconclusive() {
    let mut s = setup("0", "");
    let traffic = load(&s.gw);
    s.admin.ok(
        "rollout start api steps 10,50 interval 300ms min-requests 100000000 max-inconclusive 2 judge fixed",
    );
    let r = wait_rollout(&mut s.admin, "a pause", |r| r["state"] == "paused");
    let reason = r["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("step 1 was inconclusive 2 times in a row"),
        "{r:#}"
    );
    assert_eq!(
        (r["step"].as_u64(), r["canary_percent"].as_str()),
        (Some(1), Some("10")),
        "{r:#}"
    );
    assert_eq!(
        verdicts(&r),
        [
            (1, "inconclusive".to_owned()),
            (1, "inconclusive".to_owned())
        ],
        "{r:#}"
    );
    assert!(
        r["plan"]
            .as_str()
            .unwrap_or_default()
            .contains("max-inconclusive 2"),
        "{r:#}"
    );
    assert!(
        s.gw.stderr()
            .contains("rollout paused: step 1 was inconclusive"),
        "{}",
        s.gw.stderr()
    );
    let reply = s.admin.ok("rollout abort api");
    assert!(reply.contains("rolled back"), "{reply}");
    traffic.finish();
}
