//! Round trips of [`super::stages_toml`] through [`crate::config::file::parse`]: a file
//! with every setting away from its default, the configuration files committed in the
//! repository, configurations built in code, and the value encoders on their own.

use std::path::{Path, PathBuf};

use super::*;
use crate::config::file::parse;

/// Every setting of a stage and a route, each away from its default somewhere.
const FULL: &str = r#"
[server]
workers = 3

[[stage]]
name = "edge"
listen = "[::1]:0"
tls_min_version = "1.3"
tls = [
  { cert = "certs/api.pem", key = "/abs/api.key", server_names = ["API.example.com", "*.example.com"] },
  { cert = "other.pem", key = "other.key", default = true },
]

[[stage.route]]
name = "api.v1"
host = "API.Example.com"
path_prefix = "/api"
strip_path_prefix = true
retry_on_stable = true
upstream_path_prefix = "/${stageVariables.version}"
request_headers = { "X-B" = "b", "a" = "${stageVariables.version}", "x-b" = "second" }
assignment = "sticky"
sticky_key = "header:X-User"
sticky_salt = "pepper"
force_header = ""
force_cookie = "force-me"
health_check = { path = "/healthz", host = "api.internal", interval = "500ms", timeout = "200ms", rise = 4, fall = 7, expect = "200,204,500-503" }
outlier = { consecutive_5xx = 0, statuses = "4xx,503", consecutive_gateway_failures = 9, count_connect_failures = false, count_resets = true, count_timeouts = false, base_ejection_time = "1500ms", max_ejection_time = "10m", max_ejection_percent = 100 }
stable = { id = "v1", endpoints = ["https://127.0.0.1:9443", "https://[::1]:9444/"], variables = { version = "v1", "odd key" = "quote \" and \\ back" }, tls = { server_name = "API.internal", ca_file = "ca.pem", client_cert = "/etc/c.pem", client_key = "c.key" } }
canary = { id = "v2", endpoints = ["http://127.0.0.1:9002"], percent = 12.3456, variables = { version = "v2" }, health_check = { interval = "3s" }, outlier = { base_ejection_time = "1h" } }
rollout = { steps = [0.0001, "2.5", 25, 99.9999, 100], interval = "90s", min_requests = 7, confidence = 0.975, latency_tolerance = 0.15, latency_tolerance_abs = "3ms", error_tolerance = 0.005, max_p99 = "250ms", max_error_rate = 0.1, max_retransmit_rate = 0.02, max_canary_ejections = 0, max_inconclusive = 3, judge = "fixed", max_interval = "10m", on_timeout = "pass", kill_switch = false }
kill_switch = { window = 64, max_error_rate = 0.3, count_5xx = false, count_connect_failures = true }

[[stage.route]]
name = "cookie"
assignment = "sticky"
sticky_key = "cookie:uid:x"
force_header = "X-Force"
force_cookie = ""
stable = { id = "c1", endpoints = ["127.0.0.1:9004"], health_check = { path = "/" } }
canary = { id = "c2", endpoints = ["https://127.0.0.1:9005"], percent = "7.5%" }
rollout = { steps = [50] }
kill_switch = { window = 2, max_error_rate = 0.9999 }

[[stage]]
name = "plain"
listen = "127.0.0.1:8080"

[[stage.route]]
name = "ip"
assignment = "sticky"
sticky_key = "ip"
stable = { id = "p1", endpoints = ["localhost:9006"] }
canary = { id = "p2", endpoints = ["127.0.0.1:9007"] }

[[stage.route]]
name = "whole"
host = "b.example"
stable = { id = "w1", endpoints = ["127.0.0.1:9008"] }
canary = { id = "w2", endpoints = ["127.0.0.1:9009"], percent = 100 }
rollout = { steps = [1, 2, 3], judge = "sequential", on_timeout = "fail", max_inconclusive = 0 }
"#;

fn parsed(text: &str, path: &Path) -> Config {
    parse(text, path).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// Renders `c`, parses it back with `path`, and checks the stages and a second render.
fn round_trip(c: &Config, path: &Path) -> String {
    let text = stages_toml(c);
    let back = parsed(&text, path);
    assert_eq!(back.stages, c.stages, "{text}");
    assert_eq!(stages_toml(&back), text, "rendering is not stable");
    text
}

#[test]
fn every_setting_round_trips() {
    let path = Path::new("/etc/cg/cg.toml");
    let c = parsed(FULL, path);
    // The file above really sets what it claims to.
    let api = &c.stages[0].routes[0];
    assert_eq!(api.force_header, None);
    assert_eq!(api.request_headers.len(), 3);
    assert_eq!(api.request_headers[0], ("x-b".into(), "b".into()));
    assert!(api.stable.tls.as_ref().unwrap().client_cert.is_some());
    assert_eq!(api.canary.as_ref().unwrap().ppm, 123_456);
    assert_eq!(api.rollout.as_ref().unwrap().steps[0], 1);
    assert_eq!(c.stages[0].routes[1].force_cookie, None);
    assert!(c.stages[0].listen.is_ipv6());
    let text = round_trip(&c, path);
    assert!(!text.contains("[server]"), "{text}");
    assert!(text.contains("percent = 12.3456"), "{text}");
    assert!(text.contains("interval = \"500ms\""), "{text}");
    assert!(text.contains("expect = \"200,204,500-503\""), "{text}");
    assert!(text.contains("statuses = \"4xx,503\""), "{text}");
}

#[test]
fn relative_tls_paths_come_back_when_the_path_has_no_directory() {
    let c = parsed(FULL, Path::new("cg.toml"));
    let tls = c.stages[0].tls.as_ref().unwrap();
    assert_eq!(tls.certs[0].cert, Path::new("certs/api.pem"));
    round_trip(&c, Path::new("cg.toml"));
}

/// Gateway configuration files committed in the repository (`*.toml` with a
/// `[[stage]]`, outside `target` and hidden folders).
fn repository_configs() -> Vec<PathBuf> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || name == "target" {
                continue;
            }
            if path.is_dir() {
                walk(&path, found);
            } else if path.extension().is_some_and(|e| e == "toml")
                && name != "Cargo.toml"
                && std::fs::read_to_string(&path).is_ok_and(|t| t.contains("[[stage]]"))
            {
                found.push(path);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut found = Vec::new();
    walk(&root, &mut found);
    found
}

#[test]
fn committed_configs_round_trip() {
    let files = repository_configs();
    assert!(
        files
            .iter()
            .any(|f| f.ends_with("deploy/debian/canarygate.toml")),
        "{files:?}"
    );
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        round_trip(&parsed(&text, &file), &file);
    }
}

#[test]
fn configs_built_in_code_round_trip() {
    let addr = |s: &str| s.parse().unwrap();
    let mut c = Config::single_route(
        addr("0.0.0.0:0"),
        vec![addr("127.0.0.1:1")],
        vec![addr("[::1]:2")],
        1,
    );
    // Built in code: force header and cookie off, which the file writes as "".
    assert_eq!(c.stages[0].routes[0].force_header, None);
    round_trip(&c, Path::new("x.toml"));
    c.stages[0].routes[0].canary = None;
    c.stages[0].routes[0].force_header = Some("x-canary".into());
    c.stages[0].routes[0].stable.health.outlier = Some(Outlier::default());
    c.stages[0].routes[0].stable.health.check = Some(HealthCheck::tcp());
    let text = round_trip(&c, Path::new("x.toml"));
    assert!(!text.contains("force_header"), "{text}");
}

#[test]
fn every_percent_reads_back_exactly() {
    use crate::config::value::parse_percent;
    for ppm in 0..=1_000_000 {
        let text = match percent(ppm) {
            Value::Integer(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            other => panic!("{other:?}"),
        };
        assert_eq!(parse_percent(&text), Ok(ppm), "{text}");
    }
    // And through TOML text, as the file's `Percent` reads it.
    for ppm in (1..=1_000_000)
        .step_by(997)
        .chain([1, 9_999, 10_001, 999_999])
    {
        let mut t = Table::new();
        t.insert("p".into(), percent(ppm));
        let back: Table = toml::from_str(&t.to_string()).unwrap();
        let text = match &back["p"] {
            Value::Integer(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            other => panic!("{other:?}"),
        };
        assert_eq!(parse_percent(&text), Ok(ppm), "{t}");
    }
}

#[test]
fn status_sets_read_back() {
    for text in [
        "2xx",
        "200,204",
        "500-503",
        "1xx,2xx,3xx,4xx,5xx",
        "199-201,599",
    ] {
        let set = StatusSet::parse(text).unwrap();
        assert_eq!(StatusSet::parse(&status_set(set)), Ok(set), "{text}");
    }
    let set = StatusSet::parse("100-599").unwrap();
    assert_eq!(status_set(set), "1xx,2xx,3xx,4xx,5xx");
    let set = StatusSet::parse("250-450").unwrap();
    assert_eq!(status_set(set), "250-299,3xx,400-450");
}

#[test]
fn header_keys_sort_in_the_route_order() {
    assert_eq!(header_keys(&["a", "b"]), ["a", "b"]);
    let sorted = |keys: &[String]| keys.windows(2).all(|w| w[0] < w[1]);
    for names in [
        &["x-b", "a"][..],
        &["x-a", "x-a", "x-a"],
        &["b", "a"],
        &["a", "a"],
        &["ab", "a"],
        &["a-b", "a-b", "ab"],
    ] {
        let keys = header_keys(names);
        assert!(sorted(&keys), "{names:?} -> {keys:?}");
        for (k, n) in keys.iter().zip(names) {
            assert_eq!(k.to_ascii_lowercase(), *n);
        }
    }
    // No casing of `a` sorts after `b` or `a`: the file cannot give `b, a, a`.
    assert_eq!(casing_after("a", "b"), None);
    assert_eq!(casing_after("a", "a"), None);
    assert_eq!(casing_after("ab", "Ab"), Some("aB".into()));
}
