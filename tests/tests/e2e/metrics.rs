//! The Prometheus endpoint: `GET /metrics` parses with Prometheus's own Python client
//! parser, every documented family is there with its type, and the per-route,
//! per-variant counters and histogram counts equal what the upstreams served (and what
//! `show stats` says).

use std::thread;
use std::time::{Duration, Instant};

use tests::{
    AdminConn, Client, ConfigFile, Expect, GatewayProc, PromText, TestUpstream, parse_prometheus,
    pipelined_gets,
};

/// Documented families (name as the parser reports it, `_total` dropped for counters)
/// and their types.
const FAMILIES: [(&str, &str); 17] = [
    ("canarygate_requests", "counter"),
    ("canarygate_in_flight_requests", "gauge"),
    ("canarygate_responses", "counter"),
    ("canarygate_upstream_errors", "counter"),
    ("canarygate_retries", "counter"),
    ("canarygate_upstream_stale", "counter"),
    ("canarygate_upstream_connects", "counter"),
    ("canarygate_upstream_reuses", "counter"),
    ("canarygate_received_bytes", "counter"),
    ("canarygate_sent_bytes", "counter"),
    ("canarygate_canary_ratio", "gauge"),
    ("canarygate_request_duration_seconds", "histogram"),
    ("canarygate_upstream_response_seconds", "histogram"),
    ("canarygate_rejected_requests", "counter"),
    ("canarygate_connections_accepted", "counter"),
    ("canarygate_connections_open", "gauge"),
    ("canarygate_access_log_dropped", "counter"),
];

fn scrape(gw: &GatewayProc) -> (String, PromText) {
    let r = Client::connect(gw.metrics_addr())
        .and_then(|mut c| c.get("/metrics"))
        .expect("GET /metrics");
    assert_eq!(r.status, 200, "{}", r.describe());
    let ct = r.header("content-type").unwrap_or_default();
    assert!(
        ct.starts_with("text/plain") && ct.contains("version=0.0.4"),
        "content-type {ct:?}"
    );
    let text = r.text();
    let parsed =
        parse_prometheus(&text).unwrap_or_else(|e| panic!("{e}\n--- exposition ---\n{text}"));
    (text, parsed)
}

/// `canarygate_requests_total` of `route`/`variant`.
fn requests(p: &PromText, route: &str, variant: &str) -> u64 {
    p.int(
        "canarygate_requests_total",
        &[("route", route), ("variant", variant)],
    )
}

/// The sum of every sample `name` with these labels (whole numbers).
fn sum_of(p: &PromText, name: &str, labels: &[(&str, &str)]) -> u64 {
    p.find(name, labels).map(|s| s.value as u64).sum()
}

/// Whether a gauge reads `want` (within rounding).
fn near(v: f64, want: f64) -> bool {
    (v - want).abs() < 1e-9
}

/// Checks one histogram series: buckets never decrease, `+Inf` equals `_count`, which
/// equals `want`.
fn check_histogram(p: &PromText, name: &str, route: &str, variant: &str, want: u64) {
    let labels = [("route", route), ("variant", variant)];
    let mut buckets: Vec<(f64, u64)> = p
        .find(&format!("{name}_bucket"), &labels)
        .map(|s| {
            let le = &s.labels["le"];
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or(f64::NAN)
            };
            (le, s.value as u64)
        })
        .collect();
    assert!(buckets.len() >= 2, "{name}{labels:?}: buckets {buckets:?}");
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(
        buckets.windows(2).all(|w| w[0].1 <= w[1].1),
        "{name}{labels:?}: bucket counts decrease: {buckets:?}"
    );
    let count = p.int(&format!("{name}_count"), &labels);
    let last = buckets.last().copied().unwrap_or_default();
    assert!(
        last.0.is_infinite() && last.1 == count,
        "{name}{labels:?}: +Inf bucket {last:?}, _count {count}"
    );
    assert_eq!(count, want, "{name}_count{labels:?}");
    let sum = p.value(&format!("{name}_sum"), &labels);
    assert!(
        sum >= 0.0 && (want == 0 || sum > 0.0),
        "{name}_sum{labels:?} = {sum}"
    );
}

#[test]
fn metrics_parse_and_count_what_the_upstreams_served() {
    let stable = TestUpstream::start("stable");
    let canary = TestUpstream::start("canary");
    let web = TestUpstream::start("web");
    let file = ConfigFile::new("");
    file.write(&format!(
        r#"[server]
workers = 2
metrics_listen = "127.0.0.1:0"
admin_socket = "{}"

[[stage]]
name = "prod"
listen = "127.0.0.1:0"

[[stage.route]]
name = "api"
stable = {{ id = "v1", endpoints = ["{}"] }}
canary = {{ id = "v2", endpoints = ["{}"], percent = 30 }}

[[stage.route]]
name = "web"
path_prefix = "/web"
stable = {{ id = "w1", endpoints = ["{}"] }}
"#,
        file.sibling("admin.sock").display(),
        stable.addr_str(),
        canary.addr_str(),
        web.addr_str()
    ));
    let gw = GatewayProc::start_config(
        file.path(),
        &Expect::stages(1).with_admin().with_metrics(),
        &[],
    );
    // Before any traffic the exposition already parses.
    let (_, empty) = scrape(&gw);
    assert_eq!(requests(&empty, "api", "stable"), 0);

    let report = pipelined_gets(gw.addr(), "/", 4, 3000, 8);
    assert!(
        report.all_ok(),
        "{:?} {:?}",
        report.other_status,
        report.errors
    );
    // The web upstream answers 404 for /web: those count as 4xx of route web.
    let report = pipelined_gets(gw.addr(), "/web", 2, 500, 8);
    assert_eq!(report.other_status.get(&404), Some(&500), "{report:?}");
    let (s, c) = (stable.requests(), canary.requests());
    assert_eq!(s + c, 3000);
    assert!(s > 0 && c > 0, "stable {s}, canary {c}");

    // Counters are written when a request ends, which may be just after the client
    // has its response: wait (bounded) for them to settle.
    let deadline = Instant::now() + Duration::from_secs(3);
    let (text, p) = loop {
        let (text, p) = scrape(&gw);
        let total = requests(&p, "api", "stable") + requests(&p, "api", "canary");
        if total >= 3000 || Instant::now() > deadline {
            break (text, p);
        }
        thread::sleep(Duration::from_millis(50));
    };

    let mut missing = Vec::new();
    for (name, kind) in FAMILIES {
        match p.families.get(name) {
            Some(k) if k == kind => {}
            other => missing.push(format!("{name}: want {kind}, got {other:?}")),
        }
    }
    assert!(
        missing.is_empty(),
        "{}\n--- exposition ---\n{text}",
        missing.join("\n")
    );

    let expected = [
        ("api", "stable", s, "2xx"),
        ("api", "canary", c, "2xx"),
        ("web", "stable", 500, "4xx"),
        ("web", "canary", 0, "4xx"),
    ];
    for (route, variant, n, class) in expected {
        let labels = [("route", route), ("variant", variant)];
        assert_eq!(requests(&p, route, variant), n, "requests_total {labels:?}");
        let with_class = [("route", route), ("variant", variant), ("class", class)];
        assert_eq!(
            p.int("canarygate_responses_total", &with_class),
            n,
            "{with_class:?}"
        );
        assert_eq!(
            sum_of(&p, "canarygate_responses_total", &labels),
            n,
            "responses of any class for {labels:?}"
        );
        assert_eq!(
            p.int("canarygate_in_flight_requests", &labels),
            0,
            "{labels:?}"
        );
        assert_eq!(
            sum_of(&p, "canarygate_upstream_errors_total", &labels),
            0,
            "upstream errors {labels:?}"
        );
        for name in [
            "canarygate_received_bytes_total",
            "canarygate_sent_bytes_total",
        ] {
            let v = p.int(name, &labels);
            assert_eq!(v > 0, n > 0, "{name}{labels:?} = {v} after {n} requests");
        }
        let used = p.int("canarygate_upstream_connects_total", &labels)
            + p.int("canarygate_upstream_reuses_total", &labels);
        assert_eq!(used, n, "upstream connects + reuses {labels:?}");
        for name in [
            "canarygate_request_duration_seconds",
            "canarygate_upstream_response_seconds",
        ] {
            check_histogram(&p, name, route, variant, n);
        }
    }
    let ratio = |p: &PromText, route| p.value("canarygate_canary_ratio", &[("route", route)]);
    assert!(
        near(ratio(&p, "api"), 0.3),
        "api ratio {}",
        ratio(&p, "api")
    );
    assert!(
        near(ratio(&p, "web"), 0.0),
        "web ratio {}",
        ratio(&p, "web")
    );
    assert!(p.int("canarygate_connections_accepted_total", &[]) >= 6);

    // `show stats` tells the same story.
    let mut admin = AdminConn::connect(gw.admin_socket()).unwrap();
    let stats = admin.cmd("show stats api json").json();
    let r = &stats["routes"][0];
    assert_eq!(
        (
            r["stable"]["stats"]["requests"].as_u64(),
            r["canary"]["stats"]["requests"].as_u64()
        ),
        (Some(s), Some(c)),
        "{stats}"
    );
    // A share change shows in the ratio gauge at once.
    admin.ok("set canary api percent 12.5");
    let (_, p) = scrape(&gw);
    assert!(
        near(ratio(&p, "api"), 0.125),
        "api ratio {}",
        ratio(&p, "api")
    );
}

#[test]
fn flag_shortcut_has_admin_socket_and_metrics_on_route_default() {
    let stable = TestUpstream::start("stable");
    let canary = TestUpstream::start("canary");
    let dir = tests::TempDir::new("shortcut");
    let sock = dir.path().join("admin.sock");
    let gw = GatewayProc::start(&[
        "--stable",
        &stable.addr_str(),
        "--canary",
        &canary.addr_str(),
        "--canary-percent",
        "5",
        "--admin-socket",
        &sock.to_string_lossy(),
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(gw.admin_socket(), sock);
    let mut admin = AdminConn::connect(&sock).unwrap();
    let shown = admin.cmd("show canary json").json();
    let r = &shown["routes"][0];
    assert_eq!(
        (
            &r["stage"],
            &r["route"],
            &r["stable"]["id"],
            &r["canary"]["id"],
            &r["canary"]["percent"]
        ),
        (
            &serde_json::json!("default"),
            &serde_json::json!("default"),
            &serde_json::json!("stable"),
            &serde_json::json!("canary"),
            &serde_json::json!("5")
        ),
        "{shown}"
    );
    admin.ok("set canary default percent 100");
    let report = pipelined_gets(gw.addr(), "/", 2, 200, 4);
    assert_eq!(report.count("canary"), 200, "{report:?}");
    // Without --config there is no file to re-read.
    let r = admin.cmd("reload");
    assert!(!r.ok, "reload without --config: {r:?}");
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut counted = requests(&scrape(&gw).1, "default", "canary");
    while counted < 200 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
        counted = requests(&scrape(&gw).1, "default", "canary");
    }
    assert_eq!(
        counted, 200,
        "requests_total{{route=default,variant=canary}}"
    );
}
