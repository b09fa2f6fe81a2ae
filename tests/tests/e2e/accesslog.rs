//! Access logs: every routed request is one JSON line in the access log with the
//! documented fields, and the canary log holds exactly the canary requests — checked
//! against what each client saw and what each upstream served, with the `run` flags and
//! with the `[server]` keys of a config file.

use std::collections::BTreeMap;
use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::{Client, ConfigFile, Expect, GatewayProc, TestUpstream, get_with};

/// Sends `GET path` for every path over 4 connections (pipelined) and returns what each
/// got: path -> (status, upstream that answered).
fn send_all(addr: SocketAddr, paths: &[String]) -> BTreeMap<String, (u16, String)> {
    let chunks: Vec<Vec<String>> = paths
        .chunks(paths.len().div_ceil(4))
        .map(<[String]>::to_vec)
        .collect();
    let threads: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            thread::spawn(move || {
                let mut c = Client::connect(addr).unwrap();
                let mut got = Vec::new();
                for batch in chunk.chunks(16) {
                    let raw: Vec<u8> = batch
                        .iter()
                        .flat_map(|p| get_with(p, "canarygate.test", ""))
                        .collect();
                    c.send(&raw).unwrap();
                    for p in batch {
                        let r = c.read_response(false).unwrap();
                        let who = r.header("x-upstream").unwrap_or_default().to_owned();
                        got.push((p.clone(), (r.status, who)));
                    }
                }
                got
            })
        })
        .collect();
    threads
        .into_iter()
        .flat_map(|t| t.join().expect("client thread"))
        .collect()
}

/// The log's lines once it holds `want` of them (waiting up to 2 s for the writer).
fn lines_when(path: &Path, want: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let text = fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= want || Instant::now() > deadline {
            // A moment more, so a line written after the count was reached shows up too.
            thread::sleep(Duration::from_millis(100));
            let text = fs::read_to_string(path).unwrap_or_default();
            assert!(
                text.is_empty() || text.ends_with('\n'),
                "{} ends mid-line",
                path.display()
            );
            return text.lines().map(str::to_owned).collect();
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
fn is_rfc3339_micros(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() == 27
        && b.iter().enumerate().all(|(i, &c)| match i {
            4 | 7 => c == b'-',
            10 => c == b'T',
            13 | 16 => c == b':',
            19 => c == b'.',
            26 => c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// What the line for one request must say besides its variant.
struct Want<'a> {
    stage: &'a str,
    route: &'a str,
    /// (deployment id, upstream address) of the stable and the canary variant.
    deployments: [(&'a str, String); 2],
}

/// Parses and checks every line of a log; returns path -> (variant, status).
fn check_log(
    path: &Path,
    lines: &[String],
    want: &dyn Fn(&str) -> Want<'static>,
) -> BTreeMap<String, (String, u64)> {
    let mut out = BTreeMap::new();
    for line in lines {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {line}", path.display()));
        let req_path = v["path"]
            .as_str()
            .unwrap_or_else(|| panic!("no path: {line}"));
        let w = want(req_path);
        let variant = v["variant"].as_str().unwrap_or_default();
        let (deployment, upstream) = match variant {
            "stable" => &w.deployments[0],
            "canary" => &w.deployments[1],
            _ => panic!("variant {variant:?}: {line}"),
        };
        let problems: Vec<&str> = [
            (
                is_rfc3339_micros(v["time"].as_str().unwrap_or_default()),
                "time",
            ),
            (v["stage"] == w.stage, "stage"),
            (v["route"] == w.route, "route"),
            (v["deployment"] == *deployment, "deployment"),
            (v["method"] == "GET", "method"),
            (v["status"].is_u64(), "status"),
            (v["upstream"] == upstream.as_str(), "upstream"),
            (v["latency_us"].is_u64(), "latency_us"),
            (
                v["upstream_latency_us"].is_u64() || v["upstream_latency_us"].is_null(),
                "upstream_latency_us",
            ),
            (v["bytes_in"].as_u64().is_some_and(|n| n > 0), "bytes_in"),
            (v["bytes_out"].as_u64().is_some_and(|n| n > 0), "bytes_out"),
        ]
        .into_iter()
        .filter_map(|(ok, field)| (!ok).then_some(field))
        .collect();
        assert!(
            problems.is_empty(),
            "{}: wrong {problems:?} in {line}",
            path.display()
        );
        let status = v["status"].as_u64().unwrap_or_default();
        let dup = out.insert(req_path.to_owned(), (variant.to_owned(), status));
        assert!(dup.is_none(), "{}: {req_path} logged twice", path.display());
    }
    out
}

/// What the clients saw, as the logs should: path -> (variant, status).
fn as_logged(
    sent: &BTreeMap<String, (u16, String)>,
    canary_name: &str,
    only_canary: bool,
) -> BTreeMap<String, (String, u64)> {
    sent.iter()
        .map(|(p, (status, who))| {
            let variant = if who == canary_name {
                "canary"
            } else {
                "stable"
            };
            (p.clone(), (variant.to_owned(), u64::from(*status)))
        })
        .filter(|(_, (v, _))| !only_canary || v == "canary")
        .collect()
}

#[test]
fn access_logs_from_run_flags_hold_every_request_and_the_canary_ones() {
    let stable = TestUpstream::start("stable");
    let canary = TestUpstream::start("canary");
    let dir = tests::TempDir::new("logs");
    let (all, can) = (dir.path().join("access.log"), dir.path().join("canary.log"));
    let gw = GatewayProc::start(&[
        "--workers",
        "2",
        "--stable",
        &stable.addr_str(),
        "--canary",
        &canary.addr_str(),
        "--canary-percent",
        "40",
        "--access-log",
        &all.to_string_lossy(),
        "--canary-access-log",
        &can.to_string_lossy(),
    ]);
    let n = 1000;
    let paths: Vec<String> = (0..n).map(|i| format!("/?id={i}")).collect();
    let sent = send_all(gw.addr(), &paths);
    assert!(sent.values().all(|(s, _)| *s == 200), "non-200 answers");
    let canaries = canary.requests() as usize;
    assert!(
        canaries > 0 && canaries < n,
        "canary served {canaries} of {n}"
    );

    let want = |_: &str| Want {
        stage: "default",
        route: "default",
        deployments: [("stable", stable.addr_str()), ("canary", canary.addr_str())],
    };
    let lines = lines_when(&all, n);
    assert_eq!(lines.len(), n, "access log lines vs requests");
    assert_eq!(
        check_log(&all, &lines, &want),
        as_logged(&sent, "canary", false)
    );
    let lines = lines_when(&can, canaries);
    assert_eq!(
        lines.len(),
        canaries,
        "canary log lines vs canary upstream's requests"
    );
    assert_eq!(
        check_log(&can, &lines, &want),
        as_logged(&sent, "canary", true)
    );
}

#[test]
fn access_logs_from_server_keys_name_routes_and_deployments() {
    let stable = TestUpstream::start("stable");
    let canary = TestUpstream::start("canary");
    let web = TestUpstream::start("web");
    let file = ConfigFile::new("");
    let (all, can) = (file.sibling("access.log"), file.sibling("canary.log"));
    file.write(&format!(
        r#"[server]
workers = 2
access_log = "{}"
canary_access_log = "{}"

[[stage]]
name = "edge"
listen = "127.0.0.1:0"

[[stage.route]]
name = "api"
path_prefix = "/api"
stable = {{ id = "a1", endpoints = ["{}"] }}
canary = {{ id = "a2", endpoints = ["{}"], percent = 50 }}

[[stage.route]]
name = "web"
path_prefix = "/web"
stable = {{ id = "w1", endpoints = ["{}"] }}
"#,
        all.display(),
        can.display(),
        stable.addr_str(),
        canary.addr_str(),
        web.addr_str()
    ));
    let gw = GatewayProc::start_config(file.path(), &Expect::stages(1), &[]);
    // The upstreams answer 404 for these paths: the logged status must say so too.
    let mut paths: Vec<String> = (0..300).map(|i| format!("/api/x?id={i}")).collect();
    paths.extend((0..100).map(|i| format!("/web/y?id={i}")));
    let sent = send_all(gw.addr(), &paths);
    let canaries = canary.requests() as usize;
    assert!(
        canaries > 50 && canaries < 250,
        "canary served {canaries} of 300"
    );

    let (s, c, w) = (stable.addr_str(), canary.addr_str(), web.addr_str());
    let want = move |p: &str| {
        if p.starts_with("/web") {
            Want {
                stage: "edge",
                route: "web",
                deployments: [("w1", w.clone()), ("-", String::new())],
            }
        } else {
            Want {
                stage: "edge",
                route: "api",
                deployments: [("a1", s.clone()), ("a2", c.clone())],
            }
        }
    };
    let lines = lines_when(&all, paths.len());
    assert_eq!(lines.len(), paths.len(), "access log lines vs requests");
    assert_eq!(
        check_log(&all, &lines, &want),
        as_logged(&sent, "canary", false)
    );
    let lines = lines_when(&can, canaries);
    assert_eq!(
        lines.len(),
        canaries,
        "canary log lines vs canary upstream's requests"
    );
    assert_eq!(
        check_log(&can, &lines, &want),
        as_logged(&sent, "canary", true)
    );
}

/// A log device that refuses every write (`/dev/full`, like a full disk) costs no request
/// anything: all are answered, every lost record is counted in
/// `canarygate_access_log_dropped_total`, and the failure is logged once, not per line.
#[test]
fn a_full_log_device_drops_and_counts_records_without_failing_requests() {
    let stable = TestUpstream::start("stable");
    let gw = GatewayProc::start(&[
        "--stable",
        &stable.addr_str(),
        "--access-log",
        "/dev/full",
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    let n = 300;
    let paths: Vec<String> = (0..n).map(|i| format!("/?id={i}")).collect();
    let sent = send_all(gw.addr(), &paths);
    assert_eq!(sent.len(), n);
    assert!(sent.values().all(|(s, _)| *s == 200), "non-200 answers");
    let dropped = || {
        let r = Client::connect(gw.metrics_addr())
            .and_then(|mut c| c.get("/metrics"))
            .expect("GET /metrics");
        let p = tests::parse_prometheus(&r.text()).expect("valid exposition");
        p.int("canarygate_access_log_dropped_total", &[])
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = dropped();
    while seen < n as u64 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
        seen = dropped();
    }
    assert_eq!(seen, n as u64, "records dropped vs requests logged");
    let warnings = gw.stderr().matches("write failed").count();
    assert_eq!(warnings, 1, "{}", gw.stderr());
}
