//! HTTP/2 toward upstreams and gRPC canaries, with real peers: deployments with
//! `protocol = "h2c"` in front of a Node `http2` server and of Python `grpcio` servers,
//! called by curl (HTTP/1.1 and HTTP/2), nghttp2's h2load and a Python `grpcio` client.
//! Every request is one stream on a pooled, multiplexed upstream connection; bodies
//! stream both ways at once (a full-duplex echo, a ping-pong bidirectional call), and
//! `grpc-status` is counted per variant as an error class of its own that the kill
//! switch sees.

use std::process::Command;
use std::time::Duration;

use tests::thirdparty::write_file;
use tests::{ConfigFile, Expect, GatewayProc, ServerProc, TempDir, curl};

/// A gateway with one HTTP/2-capable plain stage and one route whose deployments speak
/// h2c: `stable`, and `canary` at `percent` when given; `extra` goes into the route.
fn h2c_gateway(
    stable: &ServerProc,
    canary: Option<(&ServerProc, f64)>,
    server: &str,
    extra: &str,
) -> (ConfigFile, GatewayProc) {
    let canary = canary.map_or(String::new(), |(c, p)| {
        format!(
            "canary = {{ id = \"v2\", endpoints = [\"{}\"], percent = {p}, protocol = \"h2c\" }}\n",
            c.addr()
        )
    });
    let file = ConfigFile::new("");
    file.write(&format!(
        r#"[server]
metrics_listen = "127.0.0.1:0"
{server}

[[stage]]
name = "grpc"
listen = "127.0.0.1:0"
http2 = true

[[stage.route]]
name = "svc"
stable = {{ id = "v1", endpoints = ["{s}"], protocol = "h2c" }}
{canary}{extra}
"#,
        s = stable.addr(),
    ));
    let gw = GatewayProc::start_config(
        file.path(),
        &Expect::stages(1).with_metrics(),
        &["--kernel-accounting", "off"],
    );
    (file, gw)
}

/// Runs the Python `script` (grpcio) with the gateway's address as its argument; its
/// stdout.
fn python(script: &str, gw: &GatewayProc) -> String {
    let out = Command::new("timeout")
        .args(["120", "python3", "-c", script, &gw.addr().to_string()])
        .output()
        .expect("python3 with grpcio (cargo xtask test installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python client failed: {}\n{text}\ngateway: {}",
        String::from_utf8_lossy(&out.stderr),
        gw.stderr()
    );
    text
}

/// The value after `key=` on the line starting with `key=`.
fn field(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {text}"))
        .to_owned()
}

/// curl against an h2c upstream through the gateway, over HTTP/1.1 and HTTP/2: requests
/// are translated both ways, bodies of 10 MiB stream both ways through a full-duplex
/// echo (the upstream answers while the upload is still coming, so nothing may wait for
/// the whole body), trailers come back (as chunked trailers on HTTP/1.1), and all of it
/// rides a few multiplexed upstream connections. h2load's 20,000 requests over 10
/// connections x 10 streams all succeed.
#[test]
fn h2c_upstreams_carry_http1_and_http2_clients_with_bodies_both_ways_and_trailers() {
    let up = ServerProc::node_h2c("h2up");
    let (_file, gw) = h2c_gateway(&up, None, "", "");
    let url = |path: &str| format!("http://{}{path}", gw.addr());
    let run = |args: &[&str]| {
        let out = curl(args);
        assert!(
            out.status.success(),
            "curl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for version in ["--http1.1", "--http2-prior-knowledge"] {
        let text = run(&["-s", version, "-H", "x-test: yes", &url("/a?b=c")]);
        assert!(text.starts_with("h2up GET /a?b=c yes"), "{version}: {text}");
    }
    let dir = TempDir::new("h2-up-bodies");
    let body: Vec<u8> = (0..10 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let path = write_file(&dir, "body", &body);
    let upload = format!("@{}", path.display());
    for version in ["--http1.1", "--http2-prior-knowledge"] {
        let got = dir.path().join("got");
        let head = run(&[
            "-s",
            version,
            "-D",
            "-",
            "-o",
            &got.to_string_lossy(),
            "--data-binary",
            &upload,
            "-H",
            "content-type: application/octet-stream",
            &url("/echo"),
        ]);
        let echoed = std::fs::read(&got).unwrap();
        assert!(
            echoed == body,
            "{version}: {} bytes came back",
            echoed.len()
        );
        // curl prints trailers after the head with -D (HTTP/1.1 chunked and HTTP/2 alike).
        assert!(
            head.contains("x-bytes: 10485760") && head.contains("x-served-by: h2up"),
            "{version}: {head}"
        );
    }
    // A long streamed download (chunked to HTTP/1.1, DATA to HTTP/2), well past every
    // window.
    for version in ["--http1.1", "--http2-prior-knowledge"] {
        let zeros = run(&[
            "-s",
            version,
            "-o",
            "/dev/null",
            "-w",
            "%{size_download}",
            &url("/zeros?n=16777216"),
        ]);
        assert_eq!(zeros, "16777216", "{version}");
    }
    let out = Command::new("h2load")
        .args(["-n", "20000", "-c", "10", "-m", "10", &url("/")])
        .output()
        .expect("h2load (nghttp2-client)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("20000 succeeded, 0 failed, 0 errored"),
        "h2load: {text}"
    );
    let m = gw.scrape();
    let labels = [("route", "svc"), ("variant", "stable")];
    let connects = m.int("canarygate_upstream_connects_total", &labels);
    let reuses = m.int("canarygate_upstream_reuses_total", &labels);
    // One connection per worker carries everything unless streams outnumber the
    // upstream's limit (Node allows 100 streams per connection; up to 16
    // connections per endpoint).
    assert!(
        (1..=40).contains(&connects),
        "{connects} upstream connections"
    );
    assert!(
        reuses >= 20_000 - connects,
        "{reuses} streams on pooled connections"
    );
    assert_eq!(
        m.int(
            "canarygate_responses_total",
            &[("route", "svc"), ("variant", "stable"), ("class", "5xx")]
        ),
        0
    );
}

/// A gRPC canary: real grpcio servers for stable and canary behind h2c deployments, a
/// real grpcio client through the gateway. Unary calls split within the binomial
/// bound; bidirectional calls go message by message (the client waits for each answer
/// before it sends the next, so the exchange must relay both directions at once), each
/// call on one variant; status codes are counted per variant, and only those in
/// `grpc_error_codes` count as errors.
#[test]
fn grpc_canary_splits_unary_and_bidi_calls_and_counts_statuses_per_variant() {
    let stable = ServerProc::grpc("stable", None);
    let canary = ServerProc::grpc("canary", None);
    let (_file, gw) = h2c_gateway(&stable, Some((&canary, 25.0)), "", "");
    let script = r"
import sys, grpc, queue
ch = grpc.insecure_channel(sys.argv[1])
say = ch.unary_unary('/canary.Echo/Say')
counts = {'stable': 0, 'canary': 0}
for i in range(400):
    r, call = say.with_call(b'%d' % i, timeout=10)
    name, _, echoed = r.partition(b':')
    assert echoed == b'%d' % i, r
    assert dict(call.trailing_metadata())['x-served-by'] == name.decode()
    counts[name.decode()] += 1
print('unary_stable=%d' % counts['stable'])
print('unary_canary=%d' % counts['canary'])
chat = ch.stream_stream('/canary.Echo/Chat')
mixed = 0
per = {'stable': 0, 'canary': 0}
for c in range(20):
    q = queue.Queue()
    def gen():
        for i in range(5):
            yield b'c%d-m%d' % (c, i)
            q.get(timeout=10)
    names = set()
    got = 0
    for m in chat(gen(), timeout=20):
        name, _, body = m.partition(b':')
        assert body == b'c%d-m%d' % (c, got), m
        names.add(name)
        got += 1
        q.put(1)
    assert got == 5, got
    mixed += len(names) != 1
    per[names.pop().decode()] += 1
print('bidi_mixed=%d' % mixed)
print('bidi_canary=%d' % per['canary'])
fail = ch.unary_unary('/canary.Echo/Fail')
for code in ['UNAVAILABLE'] * 3 + ['NOT_FOUND'] * 2 + ['INTERNAL']:
    try:
        fail(code.encode(), timeout=10, metadata=(('x-canary', 'always'),))
        print('unexpected success')
    except grpc.RpcError as e:
        assert e.code().name == code, (e.code(), code)
print('fail_done=1')
";
    let text = python(script, &gw);
    let s: u64 = field(&text, "unary_stable").parse().unwrap();
    let c: u64 = field(&text, "unary_canary").parse().unwrap();
    assert_eq!(s + c, 400);
    let (ok, lo, hi) = tests::within_binomial_bound(c, 400, 0.25);
    assert!(
        ok,
        "{c} of 400 unary calls on the canary, outside [{lo}, {hi}]"
    );
    assert_eq!(
        field(&text, "bidi_mixed"),
        "0",
        "a bidi call's messages went to both"
    );
    assert_eq!(field(&text, "fail_done"), "1");
    let bidi_canary: u64 = field(&text, "bidi_canary").parse().unwrap();
    let m = gw.scrape();
    let grpc = |variant: &str, code: &str| {
        m.int(
            "canarygate_grpc_responses_total",
            &[("route", "svc"), ("variant", variant), ("code", code)],
        )
    };
    assert_eq!(grpc("stable", "OK") + grpc("canary", "OK"), 420);
    assert_eq!(grpc("canary", "OK"), c + bidi_canary);
    assert_eq!(grpc("canary", "UNAVAILABLE"), 3);
    assert_eq!(grpc("canary", "NOT_FOUND"), 2);
    assert_eq!(grpc("canary", "INTERNAL"), 1);
    let errors = |variant: &str| {
        m.int(
            "canarygate_grpc_errors_total",
            &[("route", "svc"), ("variant", variant)],
        )
    };
    // UNAVAILABLE and INTERNAL are server failures; NOT_FOUND is the caller's.
    assert_eq!(errors("canary"), 4);
    assert_eq!(errors("stable"), 0);
    let requests = |variant: &str| {
        m.int(
            "canarygate_requests_total",
            &[("route", "svc"), ("variant", variant)],
        )
    };
    assert_eq!(requests("stable") + requests("canary"), 426);
}

/// A canary whose every unary call fails with `grpc-status: 14` (UNAVAILABLE) in an
/// HTTP 200 trips the kill switch like a 5xx-failing one: its share goes to 0 and the
/// client's later calls all reach stable. With `grpc_error_codes = ["INTERNAL"]` the
/// same canary is not an error and keeps its share.
#[test]
fn grpc_status_errors_trip_the_kill_switch_and_the_counted_codes_are_configurable() {
    let stable = ServerProc::grpc("stable", None);
    let canary = ServerProc::grpc("canary", Some("UNAVAILABLE"));
    let script = r"
import sys, grpc
ch = grpc.insecure_channel(sys.argv[1])
say = ch.unary_unary('/canary.Echo/Say')
failed = []
for i in range(300):
    try:
        say(b'x', timeout=10)
        failed.append(0)
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.UNAVAILABLE, e.code()
        failed.append(1)
print('failed=%d' % sum(failed))
print('failed_last_100=%d' % sum(failed[-100:]))
";
    let kill = "kill_switch = { window = 20, max_error_rate = 0.5 }";
    let (_file, gw) = h2c_gateway(&stable, Some((&canary, 50.0)), "workers = 1", kill);
    let text = python(script, &gw);
    let failed: u64 = field(&text, "failed").parse().unwrap();
    assert!(
        (10..=40).contains(&failed),
        "{failed} calls failed before the switch tripped"
    );
    assert_eq!(field(&text, "failed_last_100"), "0");
    // The control plane notes the trip at its next look.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut m = gw.scrape();
    while m.int("canarygate_kill_switch_trips_total", &[("route", "svc")]) == 0
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
        m = gw.scrape();
    }
    assert_eq!(
        m.int("canarygate_kill_switch_trips_total", &[("route", "svc")]),
        1
    );
    assert_eq!(
        m.int("canarygate_kill_switch_tripped", &[("route", "svc")]),
        1
    );
    assert_eq!(
        m.int(
            "canarygate_grpc_errors_total",
            &[("route", "svc"), ("variant", "canary")]
        ),
        failed
    );
    drop(gw);
    // Only INTERNAL counts: UNAVAILABLE is no error, the switch never trips.
    let (_file, gw) = h2c_gateway(
        &stable,
        Some((&canary, 50.0)),
        "workers = 1\ngrpc_error_codes = [\"INTERNAL\"]",
        kill,
    );
    let text = python(script, &gw);
    let failed: u64 = field(&text, "failed").parse().unwrap();
    assert!(failed > 100, "only {failed} calls reached the canary");
    let m = gw.scrape();
    assert_eq!(
        m.int("canarygate_kill_switch_trips_total", &[("route", "svc")]),
        0
    );
    assert_eq!(
        m.int(
            "canarygate_grpc_errors_total",
            &[("route", "svc"), ("variant", "canary")]
        ),
        0
    );
}
