//! The live dashboard in a real browser: headless Chromium loads `/dashboard` from a
//! running gateway during a load, runs the page's script (which polls
//! `/dashboard/data` and draws with uPlot), and every figure the page shows that
//! `/metrics` also exports (it names the series in `data-metric` / `data-labels`) is
//! checked against scrapes taken just before and just after. A screenshot is kept under
//! `target/tmp/dashboard/` for review.

use std::collections::BTreeMap;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use tests::{
    BackgroundLoad, Client, ConfigFile, Expect, GatewayProc, PromText, TempDir, TunableUpstream,
    run_cli, run_program,
};

const CHROMIUM: &str = "/usr/bin/chromium";
const CONNS: usize = 4;

/// Runs headless Chromium on `url` with `what` (`--dump-dom` or `--screenshot=..`),
/// giving the page's timers `budget_ms` of virtual time; returns stdout.
fn chromium(url: &str, what: &[&str], budget_ms: u32) -> String {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: `cargo xtask test` installs Debian's chromium"
    );
    let profile = TempDir::new("chromium");
    let budget = format!("--virtual-time-budget={budget_ms}");
    let user_dir = format!("--user-data-dir={}", profile.path().display());
    let mut args = vec![
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--hide-scrollbars",
        &budget,
        &user_dir,
    ];
    args.extend_from_slice(what);
    args.push(url);
    let out = run_program(CHROMIUM.as_ref(), &args, Duration::from_secs(90));
    assert!(
        out.status.is_some_and(|s| s.success()),
        "chromium {args:?} failed ({:?}): {}",
        out.status,
        out.stderr
    );
    out.stdout
}

/// One figure of the page: the series it names and the value it shows.
#[derive(Debug)]
struct Shown {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The value of attribute `name` in the tag text `tag`.
fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    let len = tag[start..].find('"')?;
    Some(&tag[start..start + len])
}

/// Every element with `data-metric` in the serialised DOM.
fn shown(dom: &str) -> Vec<Shown> {
    dom.split('<')
        .filter_map(|tag| {
            let tag = tag.split('>').next()?;
            let name = attr(tag, "data-metric")?;
            let labels = unescape(attr(tag, "data-labels")?);
            let value = attr(tag, "data-value")?.parse().ok()?;
            let labels = labels
                .split(',')
                .filter(|l| !l.is_empty())
                .map(|l| {
                    let (k, v) = l.split_once('=').expect("label k=\"v\"");
                    (k.to_owned(), v.trim_matches('"').to_owned())
                })
                .collect();
            Some(Shown {
                name: name.to_owned(),
                labels,
                value,
            })
        })
        .collect()
}

fn sample(p: &PromText, s: &Shown) -> f64 {
    let labels: Vec<(&str, &str)> = s
        .labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    p.value(&s.name, &labels)
}

/// Route `api` (stable v1, canary v2) with a running rollout, a kill switch, health
/// checks, and the dashboard on.
fn start() -> (TunableUpstream, TunableUpstream, ConfigFile, GatewayProc) {
    let stable = TunableUpstream::start("stable");
    let canary = TunableUpstream::start("canary");
    let file = ConfigFile::new("");
    file.write(&format!(
        r#"[server]
workers = 2
admin_socket = "{sock}"
metrics_listen = "127.0.0.1:0"
dashboard = true

[[stage]]
name = "prod"
listen = "127.0.0.1:0"

[[stage.route]]
name = "api"
stable = {{ id = "v1", endpoints = ["{s}"] }}
canary = {{ id = "v2", endpoints = ["{c}"], percent = 0 }}
kill_switch = {{ window = 50, max_error_rate = 0.5 }}
rollout = {{ steps = [20, 50, 100], interval = "120s" }}
health_check = {{ path = "/", interval = "500ms" }}
"#,
        sock = file.sibling("admin.sock").display(),
        s = stable.addr_str(),
        c = canary.addr_str(),
    ));
    let gw = GatewayProc::start_config(
        file.path(),
        &Expect::stages(1).with_admin().with_metrics(),
        &["--kernel-accounting", "auto"],
    );
    (stable, canary, file, gw)
}

#[test]
fn chromium_shows_the_figures_of_metrics_during_a_load() {
    let (_stable, _canary, _file, gw) = start();
    let url = format!("http://{}/dashboard", gw.metrics_addr());
    let load = BackgroundLoad::start(gw.addr(), "/", CONNS, 1, Duration::from_secs(120));
    // A few seconds of history for the charts.
    thread::sleep(Duration::from_secs(3));
    let before = gw.scrape();
    let dom = chromium(&url, &["--dump-dom"], 4000);
    let after = gw.scrape();
    let figures = shown(&dom);
    let renders: u32 = dom
        .split("data-renders=\"")
        .nth(1)
        .and_then(|r| r.split('"').next()?.parse().ok())
        .unwrap_or(0);
    assert!(renders >= 2, "the page rendered {renders} times: {dom}");
    let names: Vec<&str> = figures.iter().map(|f| f.name.as_str()).collect();
    for want in [
        "canarygate_requests_total",
        "canarygate_responses_total",
        "canarygate_canary_ratio",
        "canarygate_rollout_step",
        "canarygate_kill_switch_trips_total",
    ] {
        assert!(names.contains(&want), "the page shows no {want}: {names:?}");
    }
    let mut checked = 0;
    for f in &figures {
        let (lo, hi) = (sample(&before, f), sample(&after, f));
        if f.name.ends_with("_total") {
            assert!(
                lo <= f.value && f.value <= hi,
                "{} {:?}: page {} not between the scrapes {lo} and {hi}",
                f.name,
                f.labels,
                f.value
            );
        } else if f.name == "canarygate_in_flight_requests" {
            assert!(f.value <= CONNS as f64, "{f:?}");
        } else {
            assert!(
                (f.value - lo).abs() < 1e-9 && (f.value - hi).abs() < 1e-9,
                "{} {:?}: page {} but /metrics {lo} then {hi}",
                f.name,
                f.labels,
                f.value
            );
        }
        checked += 1;
    }
    // Under load both variants were served (the rollout's first step is 20 %).
    for v in ["stable", "canary"] {
        let f = figures
            .iter()
            .find(|f| {
                f.name == "canarygate_requests_total"
                    && f.labels.get("variant").map(String::as_str) == Some(v)
            })
            .unwrap();
        assert!(f.value > 0.0, "the page shows no {v} requests: {f:?}");
    }
    let ratio = figures
        .iter()
        .find(|f| f.name == "canarygate_canary_ratio")
        .unwrap();
    assert!((sample(&after, ratio) - 0.2).abs() < 1e-9, "{ratio:?}");
    assert!(dom.contains("data-rollout-state=\"running\""), "{dom}");
    assert!(dom.contains("data-kill-switch=\"armed\""), "{dom}");
    assert_eq!(
        dom.matches("data-endpoint-state=\"up\"").count(),
        2,
        "both endpoints shown up: {dom}"
    );
    // The charts were drawn by uPlot (one per chart).
    assert!(dom.matches("class=\"uplot").count() >= 4, "{dom}");
    eprintln!("dashboard: {checked} figures matched /metrics after {renders} renders");

    // A picture for review.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    let png = dir.join("dashboard.png");
    let _ = std::fs::remove_file(&png);
    let shot = format!("--screenshot={}", png.display());
    chromium(&url, &[&shot, "--window-size=1400,2000"], 4000);
    let bytes = std::fs::read(&png).expect("chromium wrote the screenshot");
    assert!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 20_000,
        "{} bytes",
        bytes.len()
    );
    let report = load.finish();
    assert!(
        report.errors.is_empty() && report.other_status.is_empty(),
        "{report:?}"
    );
    eprintln!("dashboard: screenshot at {}", png.display());
}

#[test]
fn data_endpoint_has_the_history_and_assets_are_embedded() {
    let (_stable, _canary, _file, gw) = start();
    let load = BackgroundLoad::start(gw.addr(), "/", 2, 1, Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(10);
    let data = loop {
        let r = Client::connect(gw.metrics_addr())
            .and_then(|mut c| c.get("/dashboard/data"))
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.describe());
        let v: serde_json::Value = serde_json::from_str(&r.text()).unwrap();
        if v["series"]["t"].as_array().unwrap().len() >= 3 {
            break v;
        }
        assert!(Instant::now() < deadline, "no history after 10 s: {v:#}");
        thread::sleep(Duration::from_millis(200));
    };
    load.finish();
    let api = &data["series"]["routes"][0];
    assert_eq!(api["route"], "api");
    let rps: f64 = api["stable"]["rps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(serde_json::Value::as_f64)
        .sum();
    assert!(rps > 0.0, "{api:#}");
    assert_eq!(data["routes"][0]["rollout"]["state"], "running");
    for (path, kind) in [
        ("/dashboard", "text/html"),
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/uPlot.iife.min.js", "text/javascript"),
        ("/dashboard/uPlot.min.css", "text/css"),
    ] {
        let r = Client::connect(gw.metrics_addr())
            .and_then(|mut c| c.get(path))
            .unwrap();
        assert_eq!(r.status, 200, "{path}");
        assert!(
            r.header("content-type")
                .is_some_and(|t| t.starts_with(kind)),
            "{path}: {}",
            r.describe()
        );
        // Nothing on the page comes from the network.
        assert!(!r.text().contains("https://cdn"), "{path}");
    }
    let r = Client::connect(gw.metrics_addr())
        .and_then(|mut c| c.get("/dashboard/nothing"))
        .unwrap();
    assert_eq!(r.status, 404);
}

#[test]
fn dashboard_is_off_unless_asked_and_needs_the_metrics_listener() {
    let up = TunableUpstream::start("s");
    let gw = GatewayProc::start(&[
        "--stable",
        &up.addr_str(),
        "--metrics-listen",
        "127.0.0.1:0",
        "--kernel-accounting",
        "off",
    ]);
    let r = Client::connect(gw.metrics_addr())
        .and_then(|mut c| c.get("/dashboard"))
        .unwrap();
    assert_eq!(r.status, 404, "{}", r.describe());
    let out = run_cli(
        &[
            "run",
            "--listen",
            "127.0.0.1:0",
            "--stable",
            &up.addr_str(),
            "--dashboard",
        ],
        Duration::from_secs(10),
    );
    assert_eq!(out.status.and_then(|s| s.code()), Some(2), "{out:?}");
    assert!(
        out.stderr.contains("--dashboard") && out.stderr.contains("--metrics-listen"),
        "{}",
        out.stderr
    );
    let file = ConfigFile::new(&format!(
        "[server]\ndashboard = true\n\n[[stage]]\nname = \"s\"\nlisten = \"127.0.0.1:0\"\n\n[[stage.route]]\nname = \"r\"\nstable = {{ id = \"v1\", endpoints = [\"{}\"] }}\n",
        up.addr_str()
    ));
    let out = run_cli(
        &["check-config", &file.path().to_string_lossy()],
        Duration::from_secs(10),
    );
    assert_ne!(out.status.and_then(|s| s.code()), Some(0), "{out:?}");
    assert!(
        out.stderr.contains(".toml:2:") && out.stderr.contains("metrics_listen"),
        "{}",
        out.stderr
    );
}
