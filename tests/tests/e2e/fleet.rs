//! Fleet mode through real processes: a real etcd (Debian's `etcd-server`, on loopback
//! ports) and three gateways sharing one configuration under a prefix. A change made on
//! any member reaches all three, the split and sticky keys agree across them, an
//! operator race on `expect` has exactly one winner, an etcd outage stops no request and
//! refuses changes with the reason (a member starts from its local copy meanwhile, a
//! kill-switch trip is stored once etcd is back), and a kill-switch trip on one member
//! zeroes the canary on all three within a stated bound.

use std::path::{Path, PathBuf};

use serde_json::Value;
use std::time::{Duration, Instant};

use tests::etcd::Etcd;
use tests::{
    AdminConn, BackgroundLoad, Client, ConfigFile, Expect, GatewayProc, TempDir, TestUpstream,
    TunableUpstream, get_with, pipelined_gets, run_cli, within_binomial_bound,
};

/// A kill-switch trip on one member reaches the others within this, counted from the
/// first failing request: the window fills (at most 2 workers x 6 failures at 50 %), the
/// controller's tick (100 ms) records the trip, one etcd transaction stores it, and the
/// others' watch delivers it (milliseconds on loopback); the rest is margin for a loaded
/// CI machine.
const KILL_BOUND: Duration = Duration::from_millis(1500);

/// The fleet's configuration: a sticky route on `/h` (header `x-user`) and a random
/// catch-all route with a kill switch, both with their canary at 0 %.
fn fleet_toml(s: &str, c: &str) -> String {
    format!(
        "[[stage]]\nname = \"edge\"\nlisten = \"127.0.0.1:0\"\n\n\
         [[stage.route]]\nname = \"sticky\"\npath_prefix = \"/h\"\nassignment = \"sticky\"\n\
         sticky_key = \"header:x-user\"\n\
         stable = {{ id = \"v1\", endpoints = [\"{s}\"] }}\n\
         canary = {{ id = \"v2\", endpoints = [\"{c}\"], percent = 0 }}\n\n\
         [[stage.route]]\nname = \"split\"\npath_prefix = \"/\"\n\
         kill_switch = {{ window = 20, max_error_rate = 0.25 }}\n\
         stable = {{ id = \"v1\", endpoints = [\"{s}\"] }}\n\
         canary = {{ id = \"v2\", endpoints = [\"{c}\"], percent = 0 }}\n"
    )
}

/// etcd, two upstreams, and the fleet's configuration imported under a fresh prefix.
struct Fleet {
    etcd: Etcd,
    _upstreams: Vec<Box<dyn std::any::Any>>,
    dir: TempDir,
    prefix: String,
}

impl Fleet {
    fn new(tag: &str) -> Fleet {
        let (stable, canary) = (TestUpstream::start("stable"), TestUpstream::start("canary"));
        let (s, c) = (stable.addr_str(), canary.addr_str());
        Fleet::with(tag, &s, &c, vec![Box::new(stable), Box::new(canary)])
    }

    fn with(
        tag: &str,
        stable: &str,
        canary: &str,
        upstreams: Vec<Box<dyn std::any::Any>>,
    ) -> Fleet {
        let etcd = Etcd::start();
        let file = ConfigFile::new(&fleet_toml(stable, canary));
        let prefix = format!("/canarygate/test-{tag}");
        let out = run_cli(
            &[
                "fleet",
                "import",
                &file.path().to_string_lossy(),
                "--etcd",
                &etcd.url(),
                "--fleet-prefix",
                &prefix,
            ],
            Duration::from_secs(20),
        );
        assert!(out.success(), "fleet import: {}", out.describe());
        assert!(out.stdout.contains("imported"), "{}", out.describe());
        Fleet {
            etcd,
            _upstreams: upstreams,
            dir: TempDir::new("fleet"),
            prefix,
        }
    }

    fn cache(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.cache.toml"))
    }

    /// Starts member `name` with no stages of its own: they come from etcd.
    fn member_with_cache(&self, name: &str, cache: &Path) -> Result<GatewayProc, String> {
        let socket = self.dir.path().join(format!("{name}.sock"));
        let (url, socket, cache) = (
            self.etcd.url(),
            socket.to_string_lossy().into_owned(),
            cache.to_string_lossy().into_owned(),
        );
        let args = [
            "run",
            "--etcd",
            &url,
            "--fleet-prefix",
            &self.prefix,
            "--fleet-member",
            name,
            "--fleet-cache",
            &cache,
            "--fleet-lease",
            "2s",
            "--admin-socket",
            &socket,
            "--metrics-listen",
            "127.0.0.1:0",
        ];
        GatewayProc::spawn(&args, &Expect::stages(1).with_admin().with_metrics())
    }

    fn member(&self, name: &str) -> GatewayProc {
        self.member_with_cache(name, &self.cache(name))
            .unwrap_or_else(|e| panic!("member {name}: {e}"))
    }

    /// gw1, gw2, gw3, started in that order (gw1 is the first to campaign, so it leads).
    fn three(&self) -> Vec<GatewayProc> {
        let members: Vec<GatewayProc> = ["gw1", "gw2", "gw3"].map(|n| self.member(n)).into();
        wait_leader(&members, &[0]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !members.iter().all(|g| {
            admin(g).cmd("show fleet json").json()["members"]
                .as_array()
                .is_some_and(|m| m.len() == 3)
        }) {
            assert!(Instant::now() < deadline, "members do not list each other");
            std::thread::sleep(Duration::from_millis(100));
        }
        members
    }
}

/// Waits until every member names the same leader, one of `among` (indices), and
/// returns its index.
fn wait_leader(members: &[GatewayProc], among: &[usize]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let views: Vec<Value> = members
            .iter()
            .map(|g| admin(g).cmd("show fleet json").json())
            .collect();
        let leader = views[0]["leader"].as_str().unwrap_or("").to_owned();
        let agreed = views.iter().all(|v| v["leader"] == leader.as_str());
        let found = among
            .iter()
            .find(|&&i| views[i]["member"] == leader.as_str() && views[i]["is_leader"] == true);
        if let (true, Some(&i)) = (agreed, found) {
            return i;
        }
        assert!(
            Instant::now() < deadline,
            "no agreed leader among {among:?}: {:?}",
            views
                .iter()
                .map(|v| v["leader"].clone())
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn admin(gw: &GatewayProc) -> AdminConn {
    AdminConn::connect(gw.admin_socket()).expect("admin socket")
}

/// Route `route`'s canary share (ppm) as member `gw` applies it.
fn share(gw: &GatewayProc, route: &str) -> u64 {
    let v = admin(gw).cmd("show canary json").json();
    v["routes"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["route"] == route))
        .map_or(u64::MAX, |r| {
            r["canary"]["ppm"].as_u64().unwrap_or(u64::MAX)
        })
}

/// Waits until every member serves `route` at `ppm` and one configuration version;
/// returns that version.
fn converge(members: &[GatewayProc], route: &str, ppm: u64, within: Duration) -> u64 {
    let deadline = Instant::now() + within;
    loop {
        let versions: Vec<u64> = members.iter().map(|g| admin(g).version()).collect();
        let shares: Vec<u64> = members.iter().map(|g| share(g, route)).collect();
        if shares.iter().all(|&s| s == ppm) && versions.iter().all(|&v| v == versions[0]) {
            return versions[0];
        }
        assert!(
            Instant::now() < deadline,
            "members did not converge on {route} at {ppm} ppm: versions {versions:?}, shares {shares:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Which variant answered each of `keys` on the sticky route.
fn sticky_variants(gw: &GatewayProc, keys: &[String]) -> Vec<String> {
    let mut client = Client::connect(gw.addr()).unwrap();
    keys.iter()
        .map(|k| {
            let r = client
                .request(&get_with("/h", "fleet.test", &format!("x-user: {k}\r\n")))
                .expect("sticky request");
            r.header("x-upstream").unwrap_or("?").to_owned()
        })
        .collect()
}

#[test]
fn a_change_on_one_member_splits_all_three_and_sticky_keys_agree() {
    let fleet = Fleet::new("split");
    let members = fleet.three();
    let reply = admin(&members[1]).ok("set canary split percent 10");
    assert!(
        reply.contains("stored in fleet") && reply.contains("3 member(s)"),
        "{reply}"
    );
    admin(&members[2]).ok("set canary sticky percent 10");
    converge(&members, "split", 100_000, Duration::from_secs(5));
    converge(&members, "sticky", 100_000, Duration::from_secs(5));
    let n = 10_000;
    for (i, gw) in members.iter().enumerate() {
        let report = pipelined_gets(gw.addr(), "/", 4, n, 100);
        assert!(report.all_ok(), "gw{}: {report:?}", i + 1);
        let canary = report.count("canary");
        let (ok, mean, bound) = within_binomial_bound(canary, n, 0.1);
        assert!(
            ok,
            "gw{}: {canary} of {n} on the canary, expected {mean} +- {bound:.0}",
            i + 1
        );
    }
    let keys: Vec<String> = (0..600).map(|i| format!("user-{i:04}")).collect();
    let seen: Vec<Vec<String>> = members.iter().map(|g| sticky_variants(g, &keys)).collect();
    for (i, s) in seen.iter().enumerate().skip(1) {
        let differ: Vec<&String> = keys
            .iter()
            .zip(s.iter().zip(&seen[0]))
            .filter(|(_, (a, b))| a != b)
            .map(|(k, _)| k)
            .collect();
        assert!(
            differ.is_empty(),
            "gw{} assigns {} key(s) differently from gw1: {:?}",
            i + 1,
            differ.len(),
            &differ[..differ.len().min(10)]
        );
    }
    let on_canary = seen[0].iter().filter(|v| *v == "canary").count() as u64;
    let (ok, mean, bound) = within_binomial_bound(on_canary, keys.len() as u64, 0.1);
    assert!(
        ok,
        "{on_canary} sticky keys on the canary, expected {mean} +- {bound:.0}"
    );
    // The fleet's figures (what the leader judges) add up every member's requests.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = admin(&members[1]).cmd("show fleet stats split json").json();
        let route = &v["routes"][0];
        let total = route["stable"]["requests"].as_u64().unwrap_or(0)
            + route["canary"]["requests"].as_u64().unwrap_or(0);
        if total == 3 * n {
            assert_eq!(
                v["members"]["contributed"],
                serde_json::json!(["gw1", "gw2", "gw3"]),
                "{v:#}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "fleet stats count {total} split requests, the members served {}: {v:#}",
            3 * n
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Every member lists the other two, each serving the same version.
    let fleet_view = admin(&members[0]).cmd("show fleet json").json();
    let names: Vec<&str> = fleet_view["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert_eq!(names, ["gw1", "gw2", "gw3"], "{fleet_view:#}");
    let m = members[2].scrape();
    let fleet_label = [("fleet", fleet.prefix.as_str())];
    assert_eq!(m.int("canarygate_fleet_etcd_up", &fleet_label), 1);
    assert_eq!(m.int("canarygate_fleet_members", &fleet_label), 3);
}

#[test]
fn operators_racing_expect_on_two_members_exactly_one_wins() {
    let fleet = Fleet::new("race");
    let members = fleet.three();
    for round in 0..5 {
        let version = admin(&members[0]).version();
        let (a, b) = (members[0].admin_socket(), members[2].admin_socket());
        let go = std::sync::Arc::new(std::sync::Barrier::new(2));
        let race = |socket: &std::path::Path, percent: u32| {
            let go = std::sync::Arc::clone(&go);
            let socket = socket.to_path_buf();
            std::thread::spawn(move || {
                let mut conn = AdminConn::connect(&socket).unwrap();
                go.wait();
                conn.cmd(&format!(
                    "expect {version} set canary split percent {percent}"
                ))
            })
        };
        let (ra, rb) = (race(a, 20 + round), race(b, 40 + round));
        let (ra, rb) = (ra.join().unwrap(), rb.join().unwrap());
        assert!(
            ra.ok != rb.ok,
            "round {round}: exactly one must win: gw1 {:?}, gw3 {:?}",
            ra.text,
            rb.text
        );
        let loser = if ra.ok { &rb } else { &ra };
        assert!(
            loser.text.contains("version mismatch"),
            "round {round}: {}",
            loser.text
        );
        let winner = if ra.ok { 20 + round } else { 40 + round };
        converge(
            &members,
            "split",
            u64::from(winner) * 10_000,
            Duration::from_secs(5),
        );
    }
}

#[test]
fn an_etcd_outage_stops_no_request_refuses_changes_and_is_caught_up() {
    let mut fleet = Fleet::new("outage");
    let members = fleet.three();
    admin(&members[0]).ok("set canary split percent 20");
    converge(&members, "split", 200_000, Duration::from_secs(5));
    let loads: Vec<BackgroundLoad> = members
        .iter()
        .map(|g| BackgroundLoad::start(g.addr(), "/", 2, 20, Duration::from_secs(60)))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    fleet.etcd.stop();
    // Every member notices (its heartbeat or watch fails) and says so.
    let deadline = Instant::now() + Duration::from_secs(10);
    for (i, gw) in members.iter().enumerate() {
        loop {
            let text = admin(gw).cmd("show fleet").text;
            if text.contains("UNREACHABLE") {
                break;
            }
            assert!(Instant::now() < deadline, "gw{}: {text}", i + 1);
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let refused = admin(&members[1]).cmd("set canary split percent 50");
    assert!(!refused.ok, "{}", refused.text);
    assert!(
        refused.text.contains("etcd is unreachable") && refused.text.contains("refused"),
        "{}",
        refused.text
    );
    assert_eq!(share(&members[1], "split"), 200_000, "nothing changed");
    let m = members[1].scrape();
    let fleet_label = [("fleet", fleet.prefix.as_str())];
    assert_eq!(m.int("canarygate_fleet_etcd_up", &fleet_label), 0);
    assert!(m.int("canarygate_fleet_changes_refused_total", &fleet_label) >= 1);
    // A member started now starts from its local copy; one without a copy refuses.
    let from_copy = fleet.cache("gw4");
    std::fs::copy(fleet.cache("gw1"), &from_copy).expect("gw1 keeps a local copy");
    let gw4 = fleet
        .member_with_cache("gw4", &from_copy)
        .expect("gw4 starts from the copy");
    assert_eq!(share(&gw4, "split"), 200_000);
    let refusal = fleet
        .member_with_cache("gw5", &fleet.cache("gw5"))
        .expect_err("gw5 has no copy and no etcd");
    assert!(
        refusal.contains("unreachable") && refusal.contains("no usable local copy"),
        "{refusal}"
    );
    // gw1's canary fails now: its workers drop the share to 0 at once, but the fleet
    // cannot be told until etcd is back.
    let mut client = Client::connect(members[0].addr()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while share(&members[0], "split") != 0 {
        for _ in 0..20 {
            let _ = client.request(&get_with("/status?code=500", "fleet.test", ""));
        }
        assert!(Instant::now() < deadline, "gw1's kill switch did not trip");
    }
    assert_eq!(
        share(&members[1], "split"),
        200_000,
        "no fleet while etcd is down"
    );
    std::thread::sleep(Duration::from_millis(500));
    fleet.etcd.start_again();
    let mut all = members;
    all.push(gw4);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let up = all
            .iter()
            .all(|g| admin(g).cmd("show fleet").text.contains("etcd: up"));
        if up {
            break;
        }
        assert!(Instant::now() < deadline, "members did not see etcd again");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The trip gw1 could not store is stored now: the whole fleet is at 0.
    converge(&all, "split", 0, Duration::from_secs(5));
    admin(&all[2]).ok("set canary split percent 30");
    converge(&all, "split", 300_000, Duration::from_secs(5));
    for (i, load) in loads.into_iter().enumerate() {
        let report = load.finish();
        assert!(report.responses() > 100, "gw{}: {report:?}", i + 1);
        assert!(report.all_ok(), "gw{}: {report:?}", i + 1);
    }
}

#[test]
fn a_kill_switch_trip_on_one_member_zeroes_the_canary_on_all_three() {
    let fleet = Fleet::new("kill");
    let members = fleet.three();
    admin(&members[0]).ok("set canary split percent 50");
    converge(&members, "split", 500_000, Duration::from_secs(5));
    // Only gw1's clients get errors: its canary fails every request, its workers trip,
    // and its control plane stores the trip. Nobody asks gw1's admin socket meanwhile
    // (a command would record the trip itself), so this measures the unprompted path.
    let mut client = Client::connect(members[0].addr()).unwrap();
    let others = &members[1..];
    let started = Instant::now();
    let mut sent = 0;
    loop {
        for _ in 0..20 {
            let _ = client.request(&get_with("/status?code=500", "fleet.test", ""));
        }
        sent += 20;
        if others.iter().all(|g| share(g, "split") == 0) {
            break;
        }
        let waited = started.elapsed();
        assert!(
            waited < KILL_BOUND,
            "gw2/gw3 still send to the canary {waited:?} after gw1's canary started failing ({sent} requests)"
        );
    }
    let reached = started.elapsed();
    eprintln!(
        "kill switch: the fleet's share was 0 everywhere {reached:?} after gw1's canary started failing ({sent} requests sent)"
    );
    let gw1 = admin(&members[0]).cmd("show canary json").json();
    let split = gw1["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == "split")
        .unwrap()
        .clone();
    assert_eq!(split["kill_switch"]["tripped"], true, "{split:#}");
    let v = converge(&members, "split", 0, Duration::from_secs(2));
    let text = fleet
        .etcd
        .get(&format!("{}/config", fleet.prefix))
        .expect("config in etcd");
    assert!(text.contains("percent = 0"), "{text}");
    assert!(v > 0);
}

#[test]
fn fleet_export_prints_what_import_stored() {
    let fleet = Fleet::new("export");
    let out = run_cli(
        &[
            "fleet",
            "export",
            "--etcd",
            &fleet.etcd.url(),
            "--fleet-prefix",
            &fleet.prefix,
        ],
        Duration::from_secs(20),
    );
    assert!(out.success(), "{}", out.describe());
    assert!(
        out.stdout
            .starts_with("# fleet /canarygate/test-export, version ")
    );
    let exported = ConfigFile::new(&out.stdout);
    let check = run_cli(
        &["check-config", &exported.path().to_string_lossy()],
        Duration::from_secs(20),
    );
    assert!(check.success(), "{}", check.describe());
    assert!(
        out.stdout.contains("sticky_key = \"header:x-user\""),
        "{}",
        out.stdout
    );
    let missing = run_cli(
        &[
            "fleet",
            "export",
            "--etcd",
            &fleet.etcd.url(),
            "--fleet-prefix",
            "/canarygate/nothing-here",
        ],
        Duration::from_secs(20),
    );
    assert!(!missing.success());
    assert!(
        missing.stderr.contains("has no configuration"),
        "{}",
        missing.describe()
    );
}

/// `show rollout split json` as member `gw` sees it.
fn rollout(gw: &GatewayProc) -> Value {
    admin(gw).cmd("show rollout split json").json()["rollouts"][0].clone()
}

/// Polls member `gw`'s view of the rollout until `done` holds.
fn wait_rollout(gw: &GatewayProc, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = rollout(gw);
        if done(&r) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "rollout never got to {what}: {r:#}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The requests route `split`'s canary got on member `gw` alone.
fn own_canary_requests(gw: &GatewayProc) -> u64 {
    gw.scrape().int(
        "canarygate_requests_total",
        &[("route", "split"), ("variant", "canary")],
    )
}

#[test]
fn a_rollout_judges_the_fleets_traffic_and_survives_its_leader() {
    let (stable, canary) = (
        TunableUpstream::start("stable"),
        TunableUpstream::start("canary"),
    );
    let (s, c) = (stable.addr_str(), canary.addr_str());
    let fleet = Fleet::with("leader", &s, &c, vec![Box::new(stable), Box::new(canary)]);
    let mut members = fleet.three();
    // The leader (gw1) gets no traffic at all: only the fleet's figures can pass a step.
    let loads: Vec<BackgroundLoad> = members[1..]
        .iter()
        .map(|g| BackgroundLoad::start(g.addr(), "/", 3, 1, Duration::from_secs(90)))
        .collect();
    let reply = admin(&members[2])
        .ok("rollout start split steps 10,30,60,100 interval 2s min-requests 30 judge fixed");
    assert!(reply.contains("started"), "{reply}");
    let first = wait_rollout(&members[1], "a first verdict", |r| {
        r["history"].as_array().is_some_and(|h| !h.is_empty())
    });
    let verdict = &first["history"][0];
    // Marginal: a significant but tolerated difference (microseconds); it steps on too.
    assert!(
        verdict["verdict"] == "pass" || verdict["verdict"] == "marginal",
        "{first:#}"
    );
    let contributed = &verdict["detail"]["fleet"]["contributed"];
    assert_eq!(
        contributed,
        &serde_json::json!(["gw1", "gw2", "gw3"]),
        "{first:#}"
    );
    assert!(
        verdict["summary"]
            .as_str()
            .unwrap()
            .contains("3 member(s) contributed"),
        "{first:#}"
    );
    assert_eq!(
        own_canary_requests(&members[0]),
        0,
        "the leader served no canary request"
    );
    let canary_requests = verdict["detail"]["canary"]["requests"]
        .as_u64()
        .unwrap_or(0);
    assert!(canary_requests >= 30, "{first:#}");
    // The leader dies in the middle; another member continues from the stored step.
    let step_at_kill = rollout(&members[1])["step"].as_u64().unwrap();
    let verdicts_at_kill = rollout(&members[1])["history"].as_array().unwrap().len();
    members[0].signal("KILL");
    let killed = Instant::now();
    let survivors = members.split_off(1);
    let new_leader = wait_leader(&survivors, &[0, 1]);
    let took = killed.elapsed();
    assert!(
        took < Duration::from_secs(2) + Duration::from_secs(3),
        "took {took:?} to elect a new leader (lease 2s)"
    );
    eprintln!(
        "fleet: gw{} leads {took:?} after the leader was killed",
        new_leader + 2
    );
    let done = wait_rollout(&survivors[0], "its end", |r| {
        r["state"] != "running" && r["state"] != "none"
    });
    assert_eq!(done["state"], "promoted", "{done:#}");
    let history = done["history"].as_array().unwrap();
    assert!(
        history.len() > verdicts_at_kill,
        "no verdict after the takeover: {done:#}"
    );
    assert!(
        history
            .iter()
            .all(|h| h["verdict"] == "pass" || h["verdict"] == "marginal"),
        "{done:#}"
    );
    assert!(
        step_at_kill < 4,
        "the leader was killed before the last step"
    );
    for gw in &survivors {
        let routes = admin(gw).cmd("show canary json").json();
        let split = routes["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["route"] == "split")
            .unwrap()
            .clone();
        assert_eq!(split["stable"]["id"], "v2", "{split:#}");
        assert!(split["canary"].is_null(), "{split:#}");
    }
    for load in loads {
        let report = load.finish();
        assert!(report.errors.is_empty(), "{report:?}");
    }
}

#[test]
fn a_canary_slow_only_on_one_members_traffic_is_judged_on_the_fleets_data() {
    // Every answer takes 30 ms (stable: a tunable upstream's delay; canary: /slow?ms=30),
    // except the canary's to gw3's clients, who ask for /slow?ms=60: the canary is 30 ms
    // slower on gw3's traffic only. The leader, gw1, sees no difference in its own.
    let (stable, canary) = (
        TunableUpstream::start("stable"),
        TestUpstream::start("canary"),
    );
    stable.set_delay(Duration::from_millis(30));
    let (s, c) = (stable.addr_str(), canary.addr_str());
    let fleet = Fleet::with("slow", &s, &c, vec![Box::new(stable), Box::new(canary)]);
    let members = fleet.three();
    let limit = Duration::from_secs(60);
    let loads = vec![
        BackgroundLoad::start(members[0].addr(), "/slow?ms=30", 1, 1, limit),
        BackgroundLoad::start(members[1].addr(), "/slow?ms=30", 1, 1, limit),
        BackgroundLoad::start(members[2].addr(), "/slow?ms=60", 4, 1, limit),
    ];
    admin(&members[1])
        .ok("rollout start split steps 10,50,100 interval 3s min-requests 20 judge fixed");
    let done = wait_rollout(&members[0], "its end", |r| {
        r["state"] != "running" && r["state"] != "none"
    });
    for load in loads {
        drop(load.finish());
    }
    assert_eq!(done["state"], "rolled_back", "{done:#}");
    assert!(
        done["reason"].as_str().unwrap_or("").contains("latency"),
        "{done:#}"
    );
    let last = done["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        last["detail"]["fleet"]["contributed"],
        serde_json::json!(["gw1", "gw2", "gw3"]),
        "{last:#}"
    );
    converge(&members, "split", 0, Duration::from_secs(5));
}
