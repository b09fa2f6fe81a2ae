//! The files in `deploy/` against a real gateway: every metric and label that an
//! expression of the Grafana dashboard or of the Prometheus alert rules uses is in a
//! scrape of `/metrics` from a gateway that has every family on (a canary, a rollout with
//! its kill switch, health checks, a TLS stage, kernel accounting, an access log), and the
//! rules pass `promtool check rules` and their own unit tests (`promtool test rules`).
//!
//! The PromQL is read roughly, by tokens: an identifier starting with `canarygate_` is a
//! series name (`_bucket`, `_sum` and `_count` only on a histogram family); the labels
//! of its `{...}` matchers must be on it, and a literal value (`="x"`, `=~"a|b"`) must be
//! one it has; the labels of `by (...)` / `without (...)` must be on every series of the
//! aggregated expression (written `sum by (..) (..)`), those of `on (...)` on every series
//! of the expression; a legend's `{{label}}` must be a label of one of them.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tests::tls::KeyKind;
use tests::{
    AdminConn, Client, ConfigFile, Expect, GatewayProc, TestUpstream, free_port, parse_prometheus,
    pipelined_gets, run_program, workspace_root,
};

/// Where Debian's `prometheus` package puts promtool (`cargo xtask tools` installs it).
const PROMTOOL: &str = "/usr/bin/promtool";
/// Labels Prometheus adds to every series it scrapes (the gateway never exports them).
const TARGET_LABELS: [&str; 2] = ["instance", "job"];

/// One scrape: family types from the `# TYPE` lines, and per sample name the label sets
/// of its samples (from Prometheus's own client parser).
struct Scrape {
    kinds: BTreeMap<String, String>,
    samples: BTreeMap<String, Vec<BTreeMap<String, String>>>,
}

impl Scrape {
    fn new(text: &str) -> Scrape {
        let parsed =
            parse_prometheus(text).unwrap_or_else(|e| panic!("{e}\n--- exposition ---\n{text}"));
        let kinds = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' '))
            .map(|(n, k)| (n.to_owned(), k.trim().to_owned()))
            .collect();
        let mut samples: BTreeMap<String, Vec<BTreeMap<String, String>>> = BTreeMap::new();
        for s in parsed.samples {
            samples.entry(s.name).or_default().push(s.labels);
        }
        Scrape { kinds, samples }
    }

    /// The label sets of series `name`, or why it is not a series of this scrape.
    fn series(&self, name: &str) -> Result<&[BTreeMap<String, String>], String> {
        match self.kinds.get(name).map(String::as_str) {
            Some("histogram") => {
                return Err(format!(
                    "{name} is a histogram: use {name}_bucket, _sum or _count"
                ));
            }
            Some(_) => {}
            None => {
                let histogram = ["_bucket", "_sum", "_count"].iter().any(|suffix| {
                    name.strip_suffix(suffix)
                        .is_some_and(|base| self.kinds.get(base).is_some_and(|k| k == "histogram"))
                });
                if !histogram {
                    return Err(format!("{name} is not a metric the gateway exports"));
                }
            }
        }
        match self.samples.get(name) {
            Some(s) if !s.is_empty() => Ok(s),
            _ => Err(format!("{name} has no sample in the scrape")),
        }
    }

    fn labels(&self, name: &str) -> BTreeSet<&str> {
        self.series(name)
            .unwrap_or_default()
            .iter()
            .flat_map(|l| l.keys().map(String::as_str))
            .chain(TARGET_LABELS)
            .collect()
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Op(String),
    Open(char),
    Close(char),
    Comma,
    Num,
}

/// PromQL as tokens; strings unquoted, range and subquery brackets (`[5m]`,
/// `[$__rate_interval]`) and comments left out.
fn tokens(expr: &str) -> Vec<Tok> {
    let c: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let word = |i: &mut usize, ok: &dyn Fn(char) -> bool| {
        let start = *i;
        while *i < c.len() && ok(c[*i]) {
            *i += 1;
        }
        c[start..*i].iter().collect::<String>()
    };
    while i < c.len() {
        let ch = c[i];
        match ch {
            _ if ch.is_whitespace() => i += 1,
            '#' => {
                while i < c.len() && c[i] != '\n' {
                    i += 1;
                }
            }
            '[' => {
                while i < c.len() && c[i] != ']' {
                    i += 1;
                }
                i += 1;
            }
            '"' | '\'' | '`' => {
                let mut s = String::new();
                i += 1;
                while i < c.len() && c[i] != ch {
                    if c[i] == '\\' && ch != '`' {
                        i += 1;
                    }
                    if let Some(&x) = c.get(i) {
                        s.push(x);
                    }
                    i += 1;
                }
                i += 1;
                out.push(Tok::Str(s));
            }
            '(' | '{' => {
                out.push(Tok::Open(ch));
                i += 1;
            }
            ')' | '}' => {
                out.push(Tok::Close(ch));
                i += 1;
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1;
            }
            _ if ch.is_ascii_alphabetic() || ch == '_' || ch == ':' => {
                let w = word(&mut i, &|x| {
                    x.is_ascii_alphanumeric() || x == '_' || x == ':'
                });
                out.push(Tok::Ident(w));
            }
            _ if ch.is_ascii_digit() || ch == '.' => {
                word(&mut i, &|x| x.is_ascii_alphanumeric() || x == '.');
                out.push(Tok::Num);
            }
            _ => {
                let w = word(&mut i, &|x| "=!~<>+-*/^%".contains(x));
                out.push(Tok::Op(if w.is_empty() {
                    i += 1;
                    ch.to_string()
                } else {
                    w
                }));
            }
        }
    }
    out
}

/// The series names (`canarygate_*`) in `toks`.
fn series_in(toks: &[Tok]) -> Vec<&str> {
    toks.iter()
        .filter_map(|t| match t {
            Tok::Ident(n) if n.starts_with("canarygate_") => Some(n.as_str()),
            _ => None,
        })
        .collect()
}

/// Index of the token closing the group opened at `open`.
fn closing(toks: &[Tok], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (k, t) in toks.iter().enumerate().skip(open) {
        match t {
            Tok::Open(_) => depth += 1,
            Tok::Close(_) => {
                depth -= 1;
                if depth == 0 {
                    return Some(k);
                }
            }
            _ => {}
        }
    }
    None
}

/// Identifiers of the `( a, b )` list opened at `open`, and the index of its `)`.
fn label_list(toks: &[Tok], open: usize) -> (Vec<&str>, usize) {
    let end = closing(toks, open).unwrap_or(toks.len() - 1);
    let labels = toks[open + 1..end]
        .iter()
        .filter_map(|t| match t {
            Tok::Ident(l) => Some(l.as_str()),
            _ => None,
        })
        .collect();
    (labels, end)
}

/// What is wrong with `expr` (and its `legend`) against `scrape`, one line each.
fn problems(expr: &str, legend: &str, scrape: &Scrape) -> Vec<String> {
    let toks = tokens(expr);
    let mut out = Vec::new();
    let all = series_in(&toks);
    if all.is_empty() {
        out.push("uses no canarygate_ series".to_owned());
    }
    let need = |out: &mut Vec<String>, label: &str, on: &[&str], why: &str| {
        for s in on {
            if scrape.series(s).is_ok() && !scrape.labels(s).contains(label) {
                out.push(format!("{why}: {s} has no label {label}"));
            }
        }
    };
    let mut i = 0;
    while i < toks.len() {
        let next_open = matches!(toks.get(i + 1), Some(Tok::Open(_)));
        match &toks[i] {
            Tok::Ident(n) if n.starts_with("canarygate_") => {
                if let Err(e) = scrape.series(n) {
                    out.push(e);
                }
                if toks.get(i + 1) == Some(&Tok::Open('{')) {
                    let end = closing(&toks, i + 1).unwrap_or(toks.len() - 1);
                    for m in toks[i + 2..end].split(|t| *t == Tok::Comma) {
                        let [Tok::Ident(label), Tok::Op(op), Tok::Str(value)] = m else {
                            out.push(format!("{n}: unreadable matcher {m:?}"));
                            continue;
                        };
                        need(&mut out, label, &[n], "matcher");
                        let literal = |v: &str| {
                            !v.is_empty()
                                && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                        };
                        let wanted: Vec<&str> = match op.as_str() {
                            "=" if literal(value) => vec![value.as_str()],
                            "=~" if value.split('|').all(literal) => value.split('|').collect(),
                            _ => Vec::new(),
                        };
                        for v in wanted {
                            let has = scrape
                                .series(n)
                                .unwrap_or_default()
                                .iter()
                                .any(|l| l.get(label.as_str()).map(String::as_str) == Some(v));
                            if !has {
                                out.push(format!("{n}: no series has {label}=\"{v}\""));
                            }
                        }
                    }
                    i = end;
                }
            }
            Tok::Ident(kw) if (kw == "by" || kw == "without") && next_open => {
                let (labels, end) = label_list(&toks, i + 1);
                if toks.get(end + 1) == Some(&Tok::Open('(')) {
                    let body = closing(&toks, end + 1).unwrap_or(toks.len() - 1);
                    let scope = series_in(&toks[end + 1..=body]);
                    for l in labels {
                        need(&mut out, l, &scope, kw);
                    }
                } else {
                    out.push(format!(
                        "write `sum {kw} (..) (..)`: {kw} after its arguments"
                    ));
                }
                i = end;
            }
            Tok::Ident(kw)
                if ["on", "ignoring", "group_left", "group_right"].contains(&kw.as_str())
                    && next_open =>
            {
                let (labels, end) = label_list(&toks, i + 1);
                for l in labels {
                    need(&mut out, l, &all, kw);
                }
                i = end;
            }
            Tok::Ident(f) if f == "label_values" && next_open => {
                if let Some([Tok::Ident(s), Tok::Comma, Tok::Ident(l)]) = toks.get(i + 2..i + 5) {
                    need(&mut out, l, &[s.as_str()], "label_values");
                }
            }
            _ => {}
        }
        i += 1;
    }
    for part in legend.split("{{").skip(1) {
        let l = part.split("}}").next().unwrap_or("").trim();
        if !all.iter().any(|s| scrape.labels(s).contains(l)) {
            out.push(format!(
                "legend {{{{{l}}}}}: no series of the expression has it"
            ));
        }
    }
    out
}

/// Every (where, expression, legend) of the dashboard; checks its frame on the way:
/// schema version, the data-source and route variables, a target on every panel, each
/// through the data-source variable.
fn dashboard_exprs(path: &Path) -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(path).expect("read the dashboard");
    let d: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let version = d["schemaVersion"].as_u64().unwrap_or(0);
    assert!((36..=41).contains(&version), "schemaVersion {version}");
    let vars = d["templating"]["list"].as_array().expect("templating.list");
    let var = |name: &str| vars.iter().find(|v| v["name"] == name).cloned();
    let ds = var("DS_PROMETHEUS").expect("a DS_PROMETHEUS variable");
    assert_eq!(
        (&ds["type"], &ds["query"]),
        (&"datasource".into(), &"prometheus".into())
    );
    let route = var("route").expect("a route variable");
    let mut out = vec![(
        "variable route".to_owned(),
        route["query"].as_str().expect("route query").to_owned(),
        String::new(),
    )];
    let mut ids = BTreeSet::new();
    for p in d["panels"].as_array().expect("panels") {
        assert!(ids.insert(p["id"].as_u64()), "panel id {} twice", p["id"]);
        assert!(p["gridPos"]["w"].as_u64().is_some(), "gridPos of {p}");
        if p["type"] == "row" {
            continue;
        }
        let title = p["title"].as_str().unwrap_or("?");
        let targets = p["targets"].as_array().filter(|t| !t.is_empty());
        for t in targets.unwrap_or_else(|| panic!("panel {title:?} has no target")) {
            for holder in [p, t] {
                assert_eq!(
                    holder["datasource"]["uid"], "${DS_PROMETHEUS}",
                    "panel {title:?}: data source"
                );
            }
            out.push((
                format!("panel {title:?}"),
                t["expr"].as_str().expect("expr").to_owned(),
                t["legendFormat"].as_str().unwrap_or("").to_owned(),
            ));
        }
    }
    out
}

/// Every (alert, expression) of a rules file, read roughly: `expr:` on one line or as a
/// `|` block; as many as there are `- alert:` entries.
fn rule_exprs(path: &Path) -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(path).expect("read the rules");
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut alert = String::new();
    let indent = |l: &str| l.len() - l.trim_start().len();
    for (n, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        if let Some(name) = t.strip_prefix("- alert:") {
            name.trim().clone_into(&mut alert);
        } else if let Some(rest) = t.strip_prefix("expr:") {
            let rest = rest.trim();
            let expr = if rest.starts_with('|') || rest.starts_with('>') {
                lines[n + 1..]
                    .iter()
                    .take_while(|l| l.trim().is_empty() || indent(l) > indent(line))
                    .copied()
                    .collect::<Vec<_>>()
                    .join("\n")
            } else {
                rest.trim_matches(|c| c == '"' || c == '\'').to_owned()
            };
            out.push((format!("alert {alert}"), expr, String::new()));
        }
    }
    let alerts = lines
        .iter()
        .filter(|l| l.trim_start().starts_with("- alert:"))
        .count();
    assert!(
        alerts > 0 && out.len() == alerts,
        "{alerts} alerts, {} expressions",
        out.len()
    );
    out
}

fn promtool(args: &[&str]) -> String {
    assert!(
        Path::new(PROMTOOL).exists(),
        "{PROMTOOL} is missing: `cargo xtask tools` installs it (Debian package prometheus)"
    );
    let root = workspace_root();
    let abs: Vec<String> = args
        .iter()
        .map(|a| {
            if a.starts_with("deploy/") {
                root.join(a).to_string_lossy().into_owned()
            } else {
                (*a).to_owned()
            }
        })
        .collect();
    let abs: Vec<&str> = abs.iter().map(String::as_str).collect();
    let out = run_program(OsStr::new(PROMTOOL), &abs, Duration::from_secs(30));
    assert!(
        out.status.is_some_and(|s| s.success()),
        "promtool {args:?}: {:?}\n{}{}",
        out.status,
        out.stdout,
        out.stderr
    );
    out.stdout
}

fn deploy_file(rel: &str) -> PathBuf {
    workspace_root().join("deploy").join(rel)
}

/// A gateway with every metric family on, some traffic through it, and one scrape.
fn scrape_everything() -> String {
    let stable = TestUpstream::start("stable");
    let canary = TestUpstream::start("canary");
    let file = ConfigFile::new("");
    let cert = tests::tls::ca().issue(file.dir(), "edge", &["edge.test"], KeyKind::Ecdsa, 7);
    file.write(&format!(
        r#"[server]
workers = 2
admin_socket = "{sock}"
metrics_listen = "127.0.0.1:0"
access_log = "{log}"

[[stage]]
name = "prod"
listen = "127.0.0.1:0"

[[stage.route]]
name = "api"
health_check = {{ path = "/", interval = "100ms", timeout = "100ms" }}
outlier = {{ consecutive_5xx = 5 }}
stable = {{ id = "v1", endpoints = ["{stable}"] }}
canary = {{ id = "v2", endpoints = ["{canary}"], percent = 30 }}

[[stage]]
name = "edge"
listen = "127.0.0.1:{edge}"
tls = [{{ cert = "{cert}", key = "{key}", default = true }}]

[[stage.route]]
name = "secure"
stable = {{ id = "s1", endpoints = ["{stable}"] }}
"#,
        sock = file.sibling("admin.sock").display(),
        log = file.sibling("access.log").display(),
        stable = stable.addr_str(),
        canary = canary.addr_str(),
        cert = cert.cert.display(),
        key = cert.key.display(),
        edge = free_port(),
    ));
    let mut gw = GatewayProc::start_config(
        file.path(),
        &Expect::stages(2).with_admin().with_metrics(),
        &["--kernel-accounting", "on"],
    );
    let mut admin = AdminConn::connect(gw.admin_socket()).unwrap();
    admin.ok("rollout start api steps 50,100 interval 60s");
    let report = pipelined_gets(gw.addr(), "/", 2, 400, 8);
    assert!(report.all_ok(), "{report:?}");
    let r = Client::connect(gw.metrics_addr())
        .and_then(|mut c| c.get("/metrics"))
        .expect("GET /metrics");
    assert_eq!(r.status, 200, "{}", r.describe());
    // SIGTERM, so kernel accounting detaches and removes its cgroup.
    gw.signal("TERM");
    assert!(
        gw.wait_exit(Duration::from_secs(10)).is_some(),
        "no exit after SIGTERM"
    );
    r.text()
}

#[test]
fn dashboard_and_alert_rules_use_only_what_the_gateway_exports() {
    promtool(&["check", "rules", "deploy/prometheus/canarygate-alerts.yml"]);
    let tested = promtool(&[
        "test",
        "rules",
        "deploy/prometheus/tests/canarygate-alerts.test.yml",
    ]);
    assert!(tested.contains("SUCCESS"), "{tested}");
    let rules = rule_exprs(&deploy_file("prometheus/canarygate-alerts.yml"));
    let unit_tests =
        std::fs::read_to_string(deploy_file("prometheus/tests/canarygate-alerts.test.yml"))
            .unwrap();
    for (alert, _, _) in &rules {
        let name = alert.trim_start_matches("alert ");
        assert!(
            unit_tests.contains(&format!("alertname: {name}\n")),
            "{alert} has no unit test"
        );
    }

    let text = scrape_everything();
    let scrape = Scrape::new(&text);
    let mut exprs = dashboard_exprs(&deploy_file("grafana/canarygate.json"));
    exprs.extend(rules);
    let mut wrong = Vec::new();
    for (place, expr, legend) in &exprs {
        for p in problems(expr, legend, &scrape) {
            wrong.push(format!("{place}: {p}\n    {expr}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{}\n--- exposition ---\n{text}",
        wrong.join("\n")
    );

    // The check catches what it is there for: a misspelt name, label, label value,
    // aggregation label or legend, and a histogram read as a plain series.
    let (_, sample, _) = exprs
        .iter()
        .find(|(_, e, _)| {
            e.contains("canarygate_responses_total{variant=\"canary\",class=\"5xx\"}")
        })
        .expect("the canary error-rate alert");
    for (from, to) in [
        ("canarygate_responses_total", "canarygate_response_total"),
        ("class=\"5xx\"", "klass=\"5xx\""),
        ("class=\"5xx\"", "class=\"5XX\""),
        ("sum by (route)", "sum by (rout)"),
        (
            "canarygate_requests_total{variant=\"canary\"}",
            "canarygate_request_duration_seconds{variant=\"canary\"}",
        ),
    ] {
        let broken = sample.replacen(from, to, 1);
        assert_ne!(&broken, sample, "{from} not in the sample");
        assert!(
            !problems(&broken, "", &scrape).is_empty(),
            "{from} -> {to} went unnoticed"
        );
    }
    assert!(!problems(sample, "{{varient}}", &scrape).is_empty());
}
