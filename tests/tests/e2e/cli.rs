//! The command line of the real binary: invalid flags exit with code 2 and one `error:`
//! line naming the flag, `--help` documents every flag of the README, valid edge values are
//! accepted, SIGTERM stops `run`, and `demo` serves its built-in upstreams.

use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tests::{
    Client, GatewayProc, TestUpstream, TunableUpstream, free_port, gateway_bin, get_request,
    run_cli,
};

/// Every `run` flag the README lists.
const RUN_FLAGS: [&str; 40] = [
    "--listen",
    "--stable",
    "--canary",
    "--canary-percent",
    "--workers",
    "--variant-header",
    "--header-timeout",
    "--keepalive-timeout",
    "--connect-timeout",
    "--response-timeout",
    "--pool-idle-timeout",
    "--pool-max-idle",
    "--max-header-bytes",
    "--max-body-bytes",
    "--drain-timeout",
    "--canary-retry-on-stable",
    "--send-timeout",
    "--health-check-path",
    "--health-check-tcp",
    "--health-check-interval",
    "--health-check-timeout",
    "--health-check-rise",
    "--health-check-fall",
    "--health-check-expect",
    "--health-check-host",
    "--outlier-consecutive-5xx",
    "--outlier-consecutive-gateway-failures",
    "--outlier-base-ejection-time",
    "--outlier-max-ejection-time",
    "--outlier-max-ejection-percent",
    "--tls-cert",
    "--tls-key",
    "--tls-min-version",
    "--tls-handshake-timeout",
    "--max-tls-handshakes",
    "--http2",
    "--h2-max-concurrent-streams",
    "--dashboard",
    "--log-format",
    "--takeover",
];

/// Whether `text` mentions `flag` as a whole flag (`--canary` does not count inside
/// `--canary-percent`).
fn mentions_flag(text: &str, flag: &str) -> bool {
    text.match_indices(flag).any(|(i, _)| {
        let next = text[i + flag.len()..].chars().next();
        !matches!(next, Some(c) if c.is_ascii_alphanumeric() || c == '-' || c == '_')
    })
}

#[test]
fn invalid_flags_exit_2_with_one_error_line_naming_the_flag() {
    let cases: [(&[&str], &str); 22] = [
        (
            &[
                "--stable",
                "127.0.0.1:1",
                "--canary",
                "127.0.0.1:2",
                "--canary-percent",
                "150",
            ],
            "--canary-percent",
        ),
        (
            &[
                "--stable",
                "127.0.0.1:1",
                "--canary",
                "127.0.0.1:2",
                "--canary-percent",
                "abc",
            ],
            "--canary-percent",
        ),
        (
            &[
                "--stable",
                "127.0.0.1:1",
                "--canary",
                "127.0.0.1:2",
                "--canary-percent=-1",
            ],
            "--canary-percent",
        ),
        (
            &[
                "--stable",
                "127.0.0.1:1",
                "--canary",
                "127.0.0.1:2",
                "--canary-percent",
                "12.34567",
            ],
            "--canary-percent",
        ),
        (&["--stable", "notanaddr"], "--stable"),
        (&["--stable", "127.0.0.1:1,nope"], "--stable"),
        (&[], "--stable"),
        (
            &["--stable", "127.0.0.1:1", "--canary", "127.0.0.1"],
            "--canary",
        ),
        (
            &["--stable", "127.0.0.1:1", "--header-timeout", "5parsecs"],
            "--header-timeout",
        ),
        (
            &["--stable", "127.0.0.1:1", "--max-body-bytes", "lots"],
            "--max-body-bytes",
        ),
        (
            &["--stable", "127.0.0.1:1", "--listen", "nowhere"],
            "--listen",
        ),
        (
            &["--stable", "127.0.0.1:1", "--health-check-interval", "1s"],
            "--health-check-interval",
        ),
        (
            &["--stable", "127.0.0.1:1", "--health-check-path", "healthz"],
            "--health-check-path",
        ),
        (
            &[
                "--stable",
                "127.0.0.1:1",
                "--health-check-path",
                "/",
                "--health-check-expect",
                "7xx",
            ],
            "--health-check-expect",
        ),
        (
            &[
                "--stable",
                "127.0.0.1:1",
                "--health-check-tcp",
                "--health-check-interval",
                "2s",
                "--health-check-timeout",
                "3s",
            ],
            "--health-check-timeout",
        ),
        (
            &[
                "--stable",
                "127.0.0.1:1",
                "--outlier-consecutive-5xx",
                "3",
                "--outlier-max-ejection-percent",
                "101",
            ],
            "--outlier-max-ejection-percent",
        ),
        (
            &[
                "--stable",
                "127.0.0.1:1",
                "--outlier-base-ejection-time",
                "5s",
            ],
            "--outlier-base-ejection-time",
        ),
        (
            &["--stable", "127.0.0.1:1", "--canary-percent", "5"],
            "--canary",
        ),
        (
            &[
                "--stable",
                "127.0.0.1:1",
                "--tls-cert",
                "/nonexistent/cert.pem",
                "--tls-key",
                "/nonexistent/key.pem",
            ],
            "--tls-cert",
        ),
        (
            &[
                "--stable",
                "127.0.0.1:1",
                "--tls-cert",
                "/nonexistent/cert.pem",
            ],
            "--tls-key",
        ),
        (
            &[
                "--stable",
                "127.0.0.1:1",
                "--tls-cert",
                "c.pem",
                "--tls-key",
                "k.pem",
                "--tls-min-version",
                "1.1",
            ],
            "--tls-min-version",
        ),
        (
            &["--stable", "127.0.0.1:1", "--max-tls-handshakes", "0"],
            "--max-tls-handshakes",
        ),
    ];
    // All cases at once: a flag that is wrongly accepted costs its timeout only once.
    let failures: Vec<String> = thread::scope(|scope| {
        let runs: Vec<_> = cases
            .iter()
            .map(|&(extra, flag)| scope.spawn(move || check_invalid(extra, flag)))
            .collect();
        runs.into_iter()
            .filter_map(|r| r.join().expect("cli case thread"))
            .collect()
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Runs `canarygate run` with `extra` and describes what is wrong with how it rejected the
/// value of `flag`, if anything.
fn check_invalid(extra: &[&str], flag: &str) -> Option<String> {
    let mut args = vec!["run"];
    if !extra.contains(&"--listen") {
        args.extend(["--listen", "127.0.0.1:0"]);
    }
    args.extend_from_slice(extra);
    let out = run_cli(&args, Duration::from_secs(10));
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    let problem = match out.status {
        None => "still running after 10s (the value was accepted)".to_owned(),
        Some(s) if s.code() != Some(2) => format!("exit status {s}, want code 2"),
        Some(_) if lines.len() != 1 => format!("{} stderr lines, want 1", lines.len()),
        Some(_) if !lines[0].starts_with("error:") => {
            "stderr does not start with `error:`".to_owned()
        }
        Some(_) if !mentions_flag(lines[0], flag) => format!("stderr does not name {flag}"),
        Some(_) => return None,
    };
    Some(format!(
        "canarygate {}: {problem}; stderr:\n{}",
        args.join(" "),
        out.stderr
    ))
}

#[test]
fn help_exits_0_and_mentions_every_flag() {
    let out = run_cli(&["run", "--help"], Duration::from_secs(10));
    assert_eq!(out.status.and_then(|s| s.code()), Some(0), "{}", out.stderr);
    let missing: Vec<_> = RUN_FLAGS
        .iter()
        .filter(|f| !mentions_flag(&out.stdout, f))
        .collect();
    assert!(
        missing.is_empty(),
        "`run --help` does not mention {missing:?}:\n{}",
        out.stdout
    );

    let out = run_cli(&["--help"], Duration::from_secs(10));
    assert_eq!(out.status.and_then(|s| s.code()), Some(0), "{}", out.stderr);
    for sub in ["run", "demo"] {
        assert!(
            out.stdout.contains(sub),
            "`--help` does not mention `{sub}`:\n{}",
            out.stdout
        );
    }

    let out = run_cli(&["demo", "--help"], Duration::from_secs(10));
    assert_eq!(out.status.and_then(|s| s.code()), Some(0), "{}", out.stderr);
    assert!(mentions_flag(&out.stdout, "--listen"), "{}", out.stdout);
}

#[test]
fn valid_edge_values_are_accepted() {
    let stable = TestUpstream::start("stable");
    let canary = TestUpstream::start("canary");
    let (s, c) = (stable.addr_str(), canary.addr_str());
    for extra in [
        ["--canary-percent", "0.0001"],
        ["--canary-percent", "100"],
        ["--header-timeout", "500ms"],
        ["--response-timeout", "2"],
        ["--keepalive-timeout", "1m"],
        ["--max-body-bytes", "0"],
    ] {
        let mut args = vec!["--stable", s.as_str(), "--canary", c.as_str()];
        args.extend(extra);
        let gw =
            GatewayProc::try_start(&args).unwrap_or_else(|e| panic!("{extra:?} rejected: {e}"));
        let r = Client::connect(gw.addr()).unwrap().get("/").unwrap();
        assert_eq!(r.status, 200, "{extra:?}: {}", r.describe());
    }
}

#[test]
fn sigterm_and_sigint_stop_the_gateway() {
    let up = TestUpstream::start("stable");
    for sig in ["TERM", "INT"] {
        let mut gw = GatewayProc::start(&["--stable", &up.addr_str()]);
        assert_eq!(
            Client::connect(gw.addr()).unwrap().get("/").unwrap().status,
            200
        );
        gw.signal(sig);
        let status = gw.wait_exit(Duration::from_secs(10));
        assert!(
            status.is_some(),
            "canarygate still running 10s after SIG{sig}"
        );
    }
}

/// SIGTERM with a request in flight: the listener stops accepting at once, the request
/// is answered in full with `Connection: close`, an idle keep-alive client does not hold
/// the stop up, and the process exits right after.
#[test]
fn sigterm_drains_requests_in_flight_then_stops() {
    let up = TunableUpstream::start("stable");
    up.set_delay(Duration::from_millis(1500));
    let mut gw = GatewayProc::start(&["--stable", &up.addr_str(), "--drain-timeout", "20s"]);
    let mut idle = Client::connect(gw.addr()).unwrap();
    idle.set_read_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(idle.get("/warm").unwrap().status, 200);

    let mut busy = Client::connect(gw.addr()).unwrap();
    busy.set_read_timeout(Duration::from_secs(10)).unwrap();
    busy.send(&get_request("/slow")).unwrap();
    thread::sleep(Duration::from_millis(300));
    let signalled = Instant::now();
    gw.signal("TERM");
    thread::sleep(Duration::from_millis(200));
    assert!(
        TcpStream::connect_timeout(&gw.addr(), Duration::from_secs(1)).is_err(),
        "the gateway still accepts connections while draining"
    );
    assert!(
        gw.try_wait().is_none(),
        "the gateway exited with a request in flight"
    );
    let r = busy.read_response(false).unwrap();
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(r.text(), "stable");
    assert!(r.connection_has("close"), "{}", r.describe());
    let status = gw.wait_exit(Duration::from_secs(5));
    assert!(
        status.is_some_and(|s| s.success()),
        "canarygate did not exit cleanly after draining: {status:?}"
    );
    assert!(
        signalled.elapsed() < Duration::from_secs(6),
        "the idle keep-alive client held the stop up"
    );
    assert!(gw.stderr().contains("drained"), "{}", gw.stderr());
}

/// A request slower than `--drain-timeout` does not hold the stop up for longer, and
/// `--drain-timeout 0s` stops at once.
#[test]
fn drain_timeout_bounds_a_graceful_stop() {
    let up = TunableUpstream::start("stable");
    up.set_delay(Duration::from_secs(8));
    let mut now = GatewayProc::start(&["--stable", &up.addr_str(), "--drain-timeout", "0s"]);
    let mut busy = Client::connect(now.addr()).unwrap();
    busy.send(&get_request("/slow")).unwrap();
    thread::sleep(Duration::from_millis(300));
    let signalled = Instant::now();
    now.signal("TERM");
    assert!(now.wait_exit(Duration::from_secs(5)).is_some());
    assert!(
        signalled.elapsed() < Duration::from_secs(2),
        "--drain-timeout 0s stopped only after {:?}",
        signalled.elapsed()
    );
    assert!(!now.stderr().contains("draining"), "{}", now.stderr());

    let mut gw = GatewayProc::start(&["--stable", &up.addr_str(), "--drain-timeout", "500ms"]);
    let mut busy = Client::connect(gw.addr()).unwrap();
    busy.send(&get_request("/slow")).unwrap();
    thread::sleep(Duration::from_millis(300));
    let signalled = Instant::now();
    gw.signal("TERM");
    let status = gw.wait_exit(Duration::from_secs(5));
    assert!(
        status.is_some(),
        "canarygate still running 5 s after SIGTERM"
    );
    assert!(
        signalled.elapsed() < Duration::from_secs(3),
        "stopped only after {:?}",
        signalled.elapsed()
    );
    assert!(gw.stderr().contains("--drain-timeout"), "{}", gw.stderr());
}

#[test]
fn demo_serves_builtin_upstreams() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = Command::new(gateway_bin())
        .args([
            "demo",
            "--listen",
            &listen,
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn canarygate demo");
    let addr: SocketAddr = listen.parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let result = loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            break Client::connect(addr)
                .and_then(|mut c| c.get("/"))
                .map_err(|e| e.to_string());
        }
        if let Ok(Some(s)) = child.try_wait() {
            break Err(format!("demo exited with {s}"));
        }
        if Instant::now() > deadline {
            break Err("demo did not listen within 10s".to_owned());
        }
        thread::sleep(Duration::from_millis(20));
    };
    let _ = child.kill();
    let _ = child.wait();
    let r = result.unwrap();
    assert_eq!(r.status, 200, "{}", r.describe());
    assert!(
        ["v1\n", "v2\n"].contains(&r.text().as_str()),
        "{}",
        r.describe()
    );
}

/// The demo end to end (`--exit`): the burst's split and the kernel's figures, a healthy
/// canary promoted through its steps with every verdict, a bad one rolled back by the
/// judge, then tripped by the kill switch; in under a minute, without a transport error.
#[test]
fn demo_shows_kernel_figures_a_promotion_and_a_rollback() {
    let dir = tests::TempDir::new("demo");
    let socket = dir.path().join("admin.sock");
    let out = run_cli(
        &[
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--admin-socket",
            &socket.to_string_lossy(),
            "--requests",
            "5000",
            "--exit",
        ],
        Duration::from_secs(120),
    );
    assert!(
        out.status.is_some_and(|s| s.success()),
        "demo failed ({:?}):\n{}\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
    let text = &out.stdout;
    for want in [
        "within the 99.9% binomial bound",
        "kernel  stable",
        "kernel  canary",
        "TCP RTT",
        "step 1 at 10%: PASS",
        "PROMOTED",
        "step 1 at 10%: FAIL",
        "ROLLED BACK by the judge",
        "KILL SWITCH TRIPPED",
        "0 transport errors",
        "/dashboard",
        "canarygate ctl --socket",
    ] {
        assert!(
            text.contains(want),
            "the demo did not show {want:?}:\n{text}"
        );
    }
    let took: f64 = text
        .split("the demo took ")
        .nth(1)
        .and_then(|t| t.split(' ').next()?.parse().ok())
        .expect("the demo says how long it took");
    assert!(took < 60.0, "the demo took {took} s:\n{text}");
}
