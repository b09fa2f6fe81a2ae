//! The process's own log lines (`--log-format`, `[server] log_format`): with `json`,
//! every line the gateway writes to stderr, from startup through admin commands, SIGHUP
//! and a graceful stop (or a fatal error), is one JSON object with `ts`, `level`,
//! `target` and `msg`; `text` stays the people's format; an unknown format is a flag
//! error that names the flag.

use std::time::Duration;

use serde_json::Value;
use tests::{AdminConn, ConfigFile, Expect, GatewayProc, TestUpstream, run_cli};

/// Parses every line of `stderr` as a log object; panics naming the first that is not.
fn json_lines(stderr: &str) -> Vec<Value> {
    assert!(!stderr.trim().is_empty(), "nothing on stderr");
    stderr
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}\n--- stderr ---\n{stderr}"));
            let obj = v
                .as_object()
                .unwrap_or_else(|| panic!("not an object: {line}"));
            let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
            let mut sorted = keys.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, ["level", "msg", "target", "ts"], "{line}");
            assert!(obj.values().all(Value::is_string), "{line}");
            let ts = v["ts"].as_str().unwrap_or_default();
            // 2026-01-02T03:04:05.678Z
            let b = ts.as_bytes();
            assert!(
                b.len() == 24
                    && b[4] == b'-'
                    && b[10] == b'T'
                    && b[19] == b'.'
                    && ts.ends_with('Z')
                    && b[..4].iter().all(u8::is_ascii_digit),
                "ts {ts:?} in {line}"
            );
            assert!(
                ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(&v["level"].as_str().unwrap()),
                "{line}"
            );
            v
        })
        .collect()
}

/// Whether some line of `lines` has `target` and a message containing `part`.
fn logged(lines: &[Value], target: &str, part: &str) -> bool {
    lines
        .iter()
        .any(|l| l["target"] == target && l["msg"].as_str().is_some_and(|m| m.contains(part)))
}

/// Stops `gw` with SIGTERM and returns its stderr.
fn stop(mut gw: GatewayProc) -> String {
    gw.signal("TERM");
    assert!(
        gw.wait_exit(Duration::from_secs(10)).is_some(),
        "no exit after SIGTERM"
    );
    gw.stderr()
}

#[test]
fn log_format_json_writes_one_object_per_line_from_start_to_stop() {
    let up = TestUpstream::start("stable");
    let dir = tests::TempDir::new("logs");
    let sock = dir.path().join("admin.sock");
    let gw = GatewayProc::start(&[
        "--stable",
        &up.addr_str(),
        "--admin-socket",
        &sock.to_string_lossy(),
        "--kernel-accounting",
        "off",
        "--log-format",
        "json",
    ]);
    let mut admin = AdminConn::connect(&sock).unwrap();
    // Refused (no canary endpoint): audited, with quotes in the message.
    assert!(!admin.cmd("set canary default percent 10").ok);
    gw.signal("HUP");
    std::thread::sleep(Duration::from_millis(300));
    let lines = json_lines(&stop(gw));
    assert!(logged(&lines, "gateway::cli", "workers on"), "{lines:#?}");
    assert!(
        logged(
            &lines,
            "canarygate::audit",
            "'set canary default percent 10' refused"
        ),
        "{lines:#?}"
    );
    assert!(logged(&lines, "gateway::admin", "SIGHUP"), "{lines:#?}");
    assert!(logged(&lines, "gateway::cli", "stopping"), "{lines:#?}");
}

#[test]
fn the_config_file_sets_json_and_the_flag_overrides_it() {
    let up = TestUpstream::start("stable");
    let file = ConfigFile::new("");
    let text = format!(
        r#"[server]
workers = 1
log_format = "json"
admin_socket = "{}"

[[stage]]
name = "prod"
listen = "127.0.0.1:0"

[[stage.route]]
name = "api"
stable = {{ id = "v1", endpoints = ["{}"] }}
"#,
        file.sibling("admin.sock").display(),
        up.addr_str()
    );
    file.write(&text);
    let gw = GatewayProc::start_config(
        file.path(),
        &Expect::stages(1).with_admin(),
        &["--kernel-accounting", "off"],
    );
    let mut admin = AdminConn::connect(gw.admin_socket()).unwrap();
    admin.ok("reload");
    let lines = json_lines(&stop(gw));
    assert!(
        logged(&lines, "canarygate::audit", "'reload' ok"),
        "{lines:#?}"
    );

    let gw = GatewayProc::start_config(
        file.path(),
        &Expect::stages(1).with_admin(),
        &["--log-format", "text", "--kernel-accounting", "off"],
    );
    let stderr = stop(gw);
    assert!(
        stderr.lines().all(|l| l.starts_with('[')) && stderr.contains(" INFO "),
        "{stderr}"
    );

    // A fatal error is a JSON line too.
    file.write(&text.replace("workers = 1", "workers = \"many\""));
    let out = run_cli(
        &[
            "run",
            "--config",
            &file.path().to_string_lossy(),
            "--log-format",
            "json",
        ],
        Duration::from_secs(20),
    );
    assert_eq!(out.status.and_then(|s| s.code()), Some(1), "{out:?}");
    let lines = json_lines(&out.stderr);
    assert!(
        lines.len() == 1
            && lines[0]["level"] == "ERROR"
            && logged(&lines, "gateway::cli", "--config"),
        "{lines:#?}"
    );
}

#[test]
fn an_unknown_log_format_is_a_flag_error() {
    let out = run_cli(
        &[
            "run",
            "--listen",
            "127.0.0.1:0",
            "--stable",
            "127.0.0.1:1",
            "--log-format",
            "xml",
        ],
        Duration::from_secs(20),
    );
    assert_eq!(out.status.and_then(|s| s.code()), Some(2), "{out:?}");
    let err = out.stderr.trim();
    assert!(
        !err.contains('\n') && err.contains("--log-format") && err.contains("xml"),
        "{err}"
    );
}
