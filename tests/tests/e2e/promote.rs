//! Promote and rollback in the AWS API Gateway canary model, checked at the upstreams:
//! rollback sends every request to stable at once and keeps the canary (shown at 0 %);
//! promote sends every request to the former canary's endpoints, which become the stable
//! deployment (its id, and the stable variables with the canary overrides applied), and
//! removes the canary.

use serde_json::{Value, json};
use tests::{AdminConn, ConfigFile, Expect, GatewayProc, TestUpstream, pipelined_gets};

fn config(file: &ConfigFile, stable: &str, canary: &str) -> String {
    format!(
        r#"[server]
workers = 2
admin_socket = "{sock}"

[[stage]]
name = "prod"
listen = "127.0.0.1:0"

[[stage.route]]
name = "api"
request_headers = {{ "x-version" = "${{stageVariables.version}}", "x-tier" = "${{stageVariables.tier}}" }}
stable = {{ id = "v1", endpoints = ["{stable}"], variables = {{ version = "v1", tier = "gold" }} }}
canary = {{ id = "v2", endpoints = ["{canary}"], percent = 50, variables = {{ version = "v2", beta = "yes" }} }}
"#,
        sock = file.sibling("admin.sock").display()
    )
}

/// Sends `n` requests over 4 connections; returns (stable, canary) as the upstreams
/// counted them, asserting every request succeeded.
fn burst(gw: &GatewayProc, stable: &TestUpstream, canary: &TestUpstream, n: u64) -> (u64, u64) {
    let (s0, c0) = (stable.requests(), canary.requests());
    let report = pipelined_gets(gw.addr(), "/", 4, n, 4);
    assert!(
        report.all_ok(),
        "statuses {:?}, errors {:?}",
        report.other_status,
        report.errors
    );
    let (s, c) = (stable.requests() - s0, canary.requests() - c0);
    assert_eq!(s + c, n, "upstreams counted {s} + {c} of {n}");
    (s, c)
}

fn route(admin: &mut AdminConn) -> Value {
    let v = admin.cmd("show canary api json").json();
    v["routes"][0].clone()
}

#[test]
fn rollback_then_promote_follow_the_aws_model() {
    let stable = TestUpstream::start("stable");
    let canary = TestUpstream::start("canary");
    let file = ConfigFile::new("");
    file.write(&config(&file, &stable.addr_str(), &canary.addr_str()));
    let gw = GatewayProc::start_config(file.path(), &Expect::stages(1).with_admin(), &[]);
    let mut admin = AdminConn::connect(gw.admin_socket()).unwrap();

    let (s, c) = burst(&gw, &stable, &canary, 400);
    assert!(s > 100 && c > 100, "at 50 %: stable {s}, canary {c}");

    // Rollback: at once, everything stable; the canary deployment stays, at 0 %.
    admin.ok("rollback api");
    assert_eq!(
        burst(&gw, &stable, &canary, 500),
        (500, 0),
        "after rollback"
    );
    let r = route(&mut admin);
    assert_eq!(
        r["canary"],
        json!({"id": "v2", "endpoints": [canary.addr_str()], "percent": "0", "ppm": 0,
               "variables": {"version": "v2", "beta": "yes"}}),
        "show canary after rollback: {r}"
    );
    assert_eq!(r["stable"]["id"], "v1", "{r}");
    let seen = stable.last_request().unwrap();
    assert_eq!(
        (seen.header("x-version"), seen.header("x-tier")),
        (Some("v1".into()), Some("gold".into()))
    );
    let stats = admin.cmd("show stats api json").json();
    assert_eq!(stats["routes"][0]["canary_percent"], "0", "{stats}");

    // Back to 50 %, then promote: everything to the former canary's endpoints.
    admin.ok("set canary api percent 50");
    let (s, c) = burst(&gw, &stable, &canary, 400);
    assert!(s > 100 && c > 100, "at 50 % again: stable {s}, canary {c}");
    admin.ok("promote api");
    assert_eq!(burst(&gw, &stable, &canary, 500), (0, 500), "after promote");
    let r = route(&mut admin);
    assert_eq!(
        r["canary"],
        Value::Null,
        "canary must be gone after promote: {r}"
    );
    assert_eq!(
        r["stable"],
        json!({"id": "v2", "endpoints": [canary.addr_str()],
               "variables": {"version": "v2", "tier": "gold", "beta": "yes"}}),
        "stable after promote: {r}"
    );
    // The promoted deployment serves with the merged variables...
    let seen = canary.last_request().unwrap();
    assert_eq!(
        (seen.header("x-version"), seen.header("x-tier")),
        (Some("v2".into()), Some("gold".into()))
    );
    // ...and as the stable variant, under its new id.
    let stats = admin.cmd("show stats api json").json();
    assert_eq!(stats["routes"][0]["stable"]["deployment"], "v2", "{stats}");
    // Forcing the canary means nothing without one: still the promoted deployment.
    let r = tests::one_shot(
        gw.addr(),
        &tests::get_with("/", "canarygate.test", "x-canary: always\r\n"),
    )
    .unwrap();
    assert_eq!(r.header("x-upstream"), Some("canary"), "{}", r.describe());

    // With no canary left, promote and rollback are errors and change nothing.
    let v = admin.version();
    for cmd in ["promote api", "rollback api", "set canary api percent 5"] {
        let r = admin.cmd(cmd);
        assert!(!r.ok, "{cmd:?} without a canary: {r:?}");
    }
    assert_eq!(admin.version(), v);
}
