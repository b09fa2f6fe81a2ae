//! HTTP/2 from clients, with real clients: curl over TLS (ALPN `h2`) and on cleartext with
//! prior knowledge, h2load for a split under load, and a raw-frame client for the
//! attacks (rapid reset, a CONTINUATION flood). Upstreams are real HTTP/1.1 servers
//! (nginx, Node), so every stream is also translated both ways.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tests::tls::KeyKind;
use tests::{GatewayProc, Nginx, ServerProc, TempDir, curl, pattern_bytes, within_binomial_bound};

/// curl's output; panics with its stderr when it failed.
fn curl_ok(args: &[&str]) -> String {
    let out = curl(args);
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn h2c_url(gw: &GatewayProc, path: &str) -> String {
    format!("http://{}{path}", gw.addr())
}

/// A plain gateway with `--http2` in front of `stable` (and `extra` flags).
fn h2c_gateway(stable: SocketAddr, extra: &[&str]) -> GatewayProc {
    let stable = stable.to_string();
    let mut args = vec![
        "--stable",
        &stable,
        "--http2",
        "--metrics-listen",
        "127.0.0.1:0",
        "--kernel-accounting",
        "off",
    ];
    args.extend_from_slice(extra);
    GatewayProc::start(&args)
}

#[test]
fn curl_gets_h2_by_alpn_over_tls_and_with_prior_knowledge_on_cleartext() {
    if tests::tls::plain_only("HTTP/2 stages of their own") {
        return;
    }
    let node = ServerProc::node();
    let dir = TempDir::new("h2-tls");
    let ca = tests::tls::ca();
    ca.issue(dir.path(), "a", &["a.test"], KeyKind::Ecdsa, 0x2a);
    let ca_pem = ca.write_pem(dir.path(), "ca.pem");
    let cert = dir.path().join("a.crt").display().to_string();
    let key = dir.path().join("a.key").display().to_string();
    let upstream = node.addr().to_string();
    let tls = |http2: bool| {
        let mut args = vec![
            "--stable",
            &upstream,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--kernel-accounting",
            "off",
            "--metrics-listen",
            "127.0.0.1:0",
        ];
        if http2 {
            args.push("--http2");
        }
        GatewayProc::start(&args)
    };
    let ca_arg = ca_pem.display().to_string();
    let version = |gw: &GatewayProc, extra: &[&str]| {
        let port = gw.addr().port();
        let resolve = format!("a.test:{port}:127.0.0.1");
        let url = format!("https://a.test:{port}/headers");
        let mut args = vec![
            "--cacert",
            &ca_arg,
            "--resolve",
            &resolve,
            "-w",
            "\n%{http_version} %{http_code}",
        ];
        args.extend_from_slice(extra);
        args.push(&url);
        curl_ok(&args)
    };
    let on = tls(true);
    let out = version(&on, &["--http2"]);
    assert!(out.ends_with("\n2 200"), "{out}");
    // The request reached Node as HTTP/1.1 with the authority as its Host.
    assert!(
        out.contains(&format!("\"host\":\"a.test:{}\"", on.addr().port())),
        "{out}"
    );
    assert!(out.contains("\"x-forwarded-proto\":\"https\""), "{out}");
    let out = version(&on, &["--http1.1"]);
    assert!(
        out.ends_with("\n1.1 200"),
        "ALPN http/1.1 still works: {out}"
    );
    let m = on.scrape();
    assert_eq!(m.int("canarygate_h2_connections_total", &[]), 1);
    assert_eq!(m.int("canarygate_h2_streams_total", &[]), 1);
    // Without `--http2` the listener offers only http/1.1: curl falls back.
    let off = tls(false);
    let out = version(&off, &["--http2"]);
    assert!(out.ends_with("\n1.1 200"), "{out}");

    // Cleartext: prior knowledge is HTTP/2; curl's `Upgrade: h2c` is answered over
    // HTTP/1.1 and the upgrade never reaches the upstream.
    let gw = h2c_gateway(node.addr(), &[]);
    let out = curl_ok(&[
        "--http2-prior-knowledge",
        "-w",
        "\n%{http_version} %{http_code}",
        "-H",
        "cookie: a=1",
        "-H",
        "cookie: b=2",
        &h2c_url(&gw, "/headers"),
    ]);
    assert!(out.ends_with("\n2 200"), "{out}");
    assert!(
        out.contains("\"cookie\":\"a=1; b=2\""),
        "cookie crumbs joined: {out}"
    );
    let out = curl_ok(&[
        "--http2",
        "-w",
        "\n%{http_version} %{http_code}",
        &h2c_url(&gw, "/headers"),
    ]);
    assert!(out.ends_with("\n1.1 200"), "{out}");
    assert!(
        !out.contains("h2c") && !out.contains("http2-settings"),
        "{out}"
    );
    // A gateway without `--http2` refuses the preface as a bad HTTP/1 request.
    let plain = GatewayProc::start(&["--stable", &upstream, "--kernel-accounting", "off"]);
    let out = curl(&["--http2-prior-knowledge", &h2c_url(&plain, "/")]);
    assert!(!out.status.success(), "h2c needs --http2");
}

#[test]
fn h2load_100k_requests_on_10_connections_split_within_the_binomial_bound() {
    let Some(h2load) = which("h2load") else {
        panic!("h2load not found: install Debian's nghttp2-client");
    };
    let stable = Nginx::start();
    let canary = Nginx::start();
    let canary_addr = canary.addr().to_string();
    let gw = h2c_gateway(
        stable.addr(),
        &["--canary", &canary_addr, "--canary-percent", "10"],
    );
    let out = Command::new(h2load)
        .args(["-n", "100000", "-c", "10", "-m", "10"])
        .arg(h2c_url(&gw, "/"))
        .stdin(Stdio::null())
        .output()
        .expect("run h2load");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("100000 succeeded, 0 failed, 0 errored, 0 timeout")
            && text.contains("100000 2xx"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = gw.scrape();
    let count = |variant: &str| {
        m.int(
            "canarygate_requests_total",
            &[("route", "default"), ("variant", variant)],
        )
    };
    let (s, c) = (count("stable"), count("canary"));
    assert_eq!(s + c, 100_000);
    let (ok, np, bound) = within_binomial_bound(c, 100_000, 0.10);
    assert!(ok, "canary {c} of 100000, expected {np} ± {bound}");
    assert_eq!(m.int("canarygate_h2_connections_total", &[]), 10);
    assert_eq!(m.int("canarygate_h2_streams_total", &[]), 100_000);
    let by_protocol = |protocol: &str| -> u64 {
        m.find(
            "canarygate_requests_by_protocol_total",
            &[("route", "default"), ("protocol", protocol)],
        )
        .map(|s| s.value as u64)
        .sum()
    };
    assert_eq!((by_protocol("h2"), by_protocol("http1")), (100_000, 0));
}

fn which(name: &str) -> Option<String> {
    ["/usr/bin/", "/usr/local/bin/"]
        .iter()
        .map(|d| format!("{d}{name}"))
        .find(|p| std::path::Path::new(p).exists())
}

#[test]
fn bodies_of_10_mib_stream_both_ways_and_trailers_come_back_as_http2_trailers() {
    let node = ServerProc::node();
    let gw = h2c_gateway(node.addr(), &[]);
    let dir = TempDir::new("h2-bodies");
    let data = pattern_bytes(10 * 1024 * 1024);
    let file = dir.path().join("up.bin");
    std::fs::write(&file, &data).unwrap();
    // Up, with a content-length (curl --data-binary) ...
    let got = curl_ok(&[
        "--http2-prior-knowledge",
        "--data-binary",
        &format!("@{}", file.display()),
        "-w",
        " %{http_version} %{http_code}",
        &h2c_url(&gw, "/upload"),
    ]);
    assert_eq!(got, "node POST 10485760\n 2 200");
    // ... and without one (curl -T - from a pipe): the upstream gets it chunked.
    let mut child = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "20",
            "--http2-prior-knowledge",
            "-T",
            "-",
        ])
        .arg(h2c_url(&gw, "/upload"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run curl");
    let mut stdin = child.stdin.take().unwrap();
    let sent = data.clone();
    let writer = thread::spawn(move || {
        for piece in sent.chunks(64 * 1024) {
            stdin.write_all(piece).unwrap();
        }
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "node PUT 10485760\n");
    // Down: 10 MiB that Node streams chunked, as DATA frames.
    let back = dir.path().join("back.bin");
    let got = curl_ok(&[
        "--http2-prior-knowledge",
        "-o",
        &back.display().to_string(),
        "-w",
        "%{http_version} %{http_code} %{size_download}",
        &h2c_url(&gw, "/zeros?n=10485760"),
    ]);
    assert_eq!(got, "2 200 10485760");
    let back = std::fs::read(&back).unwrap();
    assert!(back.iter().all(|&b| b == b'z'), "downloaded body differs");

    // Trailers: curl prints them after the body with -D; nghttp (same package as
    // h2load) shows the trailing HEADERS frame.
    let headers = dir.path().join("headers.txt");
    let body = curl_ok(&[
        "--http2-prior-knowledge",
        "-D",
        &headers.display().to_string(),
        &h2c_url(&gw, "/trailers"),
    ]);
    assert_eq!(body, "part one\npart two\n");
    let h = std::fs::read_to_string(&headers).unwrap();
    assert!(
        h.contains("x-checksum: c0ffee") && h.contains("x-status: 0"),
        "{h}"
    );
    assert!(!h.to_ascii_lowercase().contains("transfer-encoding"), "{h}");
}

#[test]
fn headers_near_the_limit_pass_and_over_it_get_431() {
    let node = ServerProc::node();
    let gw = h2c_gateway(node.addr(), &["--max-header-bytes", "8192"]);
    let near = format!("x-big: {}", "a".repeat(7000));
    let out = curl_ok(&[
        "--http2-prior-knowledge",
        "-H",
        &near,
        "-w",
        "\n%{http_code}",
        &h2c_url(&gw, "/headers"),
    ]);
    assert!(
        out.ends_with("\n200") && out.contains(&"a".repeat(7000)),
        "{out}"
    );
    let over = format!("x-big: {}", "a".repeat(9000));
    let out = curl_ok(&[
        "--http2-prior-knowledge",
        "-H",
        &over,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &h2c_url(&gw, "/headers"),
    ]);
    assert_eq!(out, "431");
    // The connection limit is the one the gateway announced.
    let out = curl_ok(&[
        "--http2-prior-knowledge",
        "-w",
        "%{http_code}",
        "-o",
        "/dev/null",
        &h2c_url(&gw, "/"),
    ]);
    assert_eq!(out, "200");
}

/// One HTTP/2 frame.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 1;
const END_HEADERS: u8 = 4;
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// A GET of `/` as an HPACK block without Huffman: `:method GET`, `:scheme http`,
/// `:path /` from the static table, `:authority a` as a literal.
const GET_BLOCK: &[u8] = &[0x82, 0x86, 0x84, 0x01, 0x01, b'a'];

/// Reads frames until a GOAWAY (its error code) or the end of the connection (`None`),
/// for at most `within`.
fn goaway_within(s: &mut TcpStream, within: Duration) -> Option<u32> {
    let deadline = Instant::now() + within;
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    while Instant::now() < deadline {
        match s.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return None,
        }
        while buf.len() >= 9 {
            let len =
                (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            if buf[3] == GOAWAY && len >= 8 {
                return Some(u32::from_be_bytes(buf[13..17].try_into().unwrap()));
            }
            buf.drain(..9 + len);
        }
    }
    panic!("the gateway neither sent GOAWAY nor closed within {within:?}");
}

/// Opens an h2c connection: preface and empty SETTINGS.
fn raw_h2c(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(PREFACE).unwrap();
    s.write_all(&frame(SETTINGS, 0, 0, &[])).unwrap();
    s
}

/// Writes `bytes` from another thread (the gateway may stop reading and close), and
/// gives the stream back for reading.
fn write_all_async(s: &TcpStream, bytes: Vec<u8>) -> thread::JoinHandle<()> {
    let mut w = s.try_clone().unwrap();
    thread::spawn(move || {
        let _ = w.write_all(&bytes);
    })
}

/// Sends `bytes` on a new h2c connection while reading what comes back; the GOAWAY code
/// the gateway answered with, or `None` if it just closed.
fn goaway_after(gw: &GatewayProc, bytes: Vec<u8>) -> Option<u32> {
    let mut s = raw_h2c(gw.addr());
    let writer = write_all_async(&s, bytes);
    let code = goaway_within(&mut s, Duration::from_secs(10));
    writer.join().unwrap();
    code
}

#[test]
fn rapid_reset_and_continuation_floods_end_the_connection_and_others_are_served() {
    let nginx = Nginx::start();
    let gw = h2c_gateway(nginx.addr(), &[]);
    let rss_before = gw.rss_kib();
    // Rapid reset (CVE-2023-44487): 20,000 streams opened and cancelled at once.
    let mut burst = Vec::new();
    for i in 0..20_000u32 {
        let id = 2 * i + 1;
        burst.extend(frame(HEADERS, END_STREAM | END_HEADERS, id, GET_BLOCK));
        burst.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
    }
    assert_eq!(
        goaway_after(&gw, burst),
        Some(ENHANCE_YOUR_CALM),
        "rapid reset"
    );

    // CONTINUATION flood (2024): one header block that never ends.
    let mut flood = frame(HEADERS, END_STREAM, 1, GET_BLOCK);
    // A literal field without indexing, new name: `x-f: vvvv`.
    let piece = [0x00, 0x03, b'x', b'-', b'f', 0x04, b'v', b'v', b'v', b'v'];
    for _ in 0..100_000 {
        flood.extend(frame(CONTINUATION, 0, 1, &piece));
    }
    let code = goaway_after(&gw, flood);
    assert!(
        matches!(code, Some(ENHANCE_YOUR_CALM | 0x1) | None),
        "CONTINUATION flood: GOAWAY {code:?}"
    );

    // Meanwhile and after, other clients are served.
    let out = curl_ok(&[
        "--http2-prior-knowledge",
        "-w",
        " %{http_code}",
        &h2c_url(&gw, "/"),
    ]);
    assert_eq!(out, "nginx\n 200");
    let m = gw.scrape();
    assert!(
        m.int(
            "canarygate_h2_connection_errors_total",
            &[("reason", "abuse")]
        ) >= 1
    );
    let grown = gw.rss_kib().saturating_sub(rss_before);
    eprintln!("RSS grew by {grown} KiB over both attacks");
    assert!(grown < 64 * 1024, "RSS grew by {grown} KiB");
}

/// Control-frame floods (CVE-2019-9512 pings, CVE-2019-9515 SETTINGS, CVE-2019-9518
/// empty DATA frames), from a client that reads every acknowledgement: each gets GOAWAY
/// ENHANCE_YOUR_CALM and is counted as abuse; a few pings and settings between requests
/// are fine, and others are served throughout.
#[test]
fn ping_settings_and_empty_data_floods_get_goaway_and_others_are_served() {
    let nginx = Nginx::start();
    let gw = h2c_gateway(nginx.addr(), &[]);
    let rss_before = gw.rss_kib();
    let ping = frame(PING, 0, 0, &[7; 8]);
    let settings = frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]);
    let floods: [(&str, Vec<u8>); 3] = [
        ("ping", ping.repeat(100_000)),
        ("settings", settings.repeat(100_000)),
        ("empty data", {
            // A stream left open (no END_STREAM), then empty DATA frames on it.
            let mut f = frame(HEADERS, END_HEADERS, 1, GET_BLOCK);
            f.extend(frame(0, 0, 1, &[]).repeat(100_000));
            f
        }),
    ];
    for (what, flood) in floods {
        assert_eq!(
            goaway_after(&gw, flood),
            Some(ENHANCE_YOUR_CALM),
            "{what} flood"
        );
    }
    // The GOAWAY goes out before the connection's task ends and counts the failure.
    let abuse = |m: &tests::PromText| {
        m.int(
            "canarygate_h2_connection_errors_total",
            &[("reason", "abuse")],
        )
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut m = gw.scrape();
    while abuse(&m) < 3 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
        m = gw.scrape();
    }
    assert_eq!(
        m.int(
            "canarygate_h2_connection_errors_total",
            &[("reason", "abuse")]
        ),
        3
    );
    // A client pinging and re-sending SETTINGS a few hundred times between its requests
    // is no flood: every request is answered.
    let mut polite = Vec::new();
    for i in 0..20u32 {
        polite.extend(ping.repeat(300));
        polite.extend(settings.repeat(100));
        polite.extend(frame(
            HEADERS,
            END_STREAM | END_HEADERS,
            2 * i + 1,
            GET_BLOCK,
        ));
    }
    polite.extend(frame(GOAWAY, 0, 0, &[0; 8]));
    let code = goaway_after(&gw, polite);
    assert_ne!(code, Some(ENHANCE_YOUR_CALM), "polite client sent away");
    let out = curl_ok(&[
        "--http2-prior-knowledge",
        "-w",
        " %{http_code}",
        &h2c_url(&gw, "/"),
    ]);
    assert_eq!(out, "nginx\n 200");
    let m = gw.scrape();
    assert_eq!(
        m.int(
            "canarygate_h2_connection_errors_total",
            &[("reason", "abuse")]
        ),
        3
    );
    assert!(m.int("canarygate_h2_streams_total", &[]) >= 21);
    let grown = gw.rss_kib().saturating_sub(rss_before);
    eprintln!("RSS grew by {grown} KiB over the floods");
    assert!(grown < 64 * 1024, "RSS grew by {grown} KiB");
}

/// A gRPC client (Python `grpcio`) through an h2c stage to an HTTP/1.1 upstream: unary and
/// bidirectional-streaming calls get UNIMPLEMENTED with a message naming the reason, as
/// a trailers-only response the client understands; nothing reaches the upstream. gRPC-Web
/// (ordinary HTTP) still passes, and an HTTP/1.1 client sending `application/grpc` gets
/// the same refusal.
#[test]
fn grpc_to_an_http1_upstream_is_refused_with_unimplemented() {
    let up = tests::TestUpstream::start("stable");
    let gw = h2c_gateway(up.addr(), &[]);
    let script = r"
import sys, grpc
ch = grpc.insecure_channel(sys.argv[1])
try:
    ch.unary_unary('/canary.Echo/Say')(b'hello', timeout=10)
    print('unary OK')
except grpc.RpcError as e:
    print('unary', e.code().name, e.details())
try:
    for _ in ch.stream_stream('/canary.Echo/Chat')(iter([b'a', b'b']), timeout=10):
        pass
    print('stream OK')
except grpc.RpcError as e:
    print('stream', e.code().name, e.details())
";
    let out = Command::new("python3")
        .args(["-c", script, &gw.addr().to_string()])
        .output()
        .expect("python3 with grpcio (cargo xtask test installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "grpc client failed: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    for call in ["unary", "stream"] {
        let line = text
            .lines()
            .find(|l| l.starts_with(call))
            .unwrap_or_else(|| panic!("no {call} line in {text}"));
        assert!(
            line.starts_with(&format!("{call} UNIMPLEMENTED "))
                && line.contains("gRPC needs an HTTP/2 upstream"),
            "{line}"
        );
    }
    // HTTP/1.1 with a gRPC content type: the same answer, in headers.
    let h1 = curl_ok(&[
        "-s",
        "-i",
        "--http1.1",
        "-H",
        "content-type: application/grpc",
        "--data-binary",
        "x",
        &h2c_url(&gw, "/canary.Echo/Say"),
    ]);
    assert!(h1.starts_with("HTTP/1.1 200"), "{h1}");
    assert!(h1.contains("grpc-status: 12\r\n"), "{h1}");
    // gRPC-Web is ordinary HTTP for the gateway.
    let web = curl_ok(&[
        "-s",
        "--http2-prior-knowledge",
        "-H",
        "content-type: application/grpc-web+proto",
        "--data-binary",
        "x",
        &h2c_url(&gw, "/"),
    ]);
    assert_eq!(web, "stable");
    assert_eq!(
        up.requests(),
        1,
        "only the gRPC-Web request reached the upstream"
    );
    let m = gw.scrape();
    assert_eq!(
        m.int(
            "canarygate_rejected_requests_total",
            &[("reason", "unsupported")]
        ),
        3
    );
}
