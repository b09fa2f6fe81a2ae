//! Upstreams and clients nobody here wrote: gunicorn, Node's `http` server and nginx
//! closing idle keep-alive connections on their own schedules, with POSTs paced across
//! their idle timeouts (none may fail); server-sent events from Node and httpbin-style drip
//! from gunicorn, each byte reaching the client when the upstream wrote it; Node's fetch
//! as the streaming client.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tests::tls::Sock;
use tests::{Client, Framing, GatewayProc, Nginx, ServerProc, node_sse_client, post_request};

use crate::start_gw;

/// Sends one POST per pause in `pauses` (after sleeping it) on one client connection and
/// checks each answer with `check`. Returns the failures, described.
fn paced_posts(
    gw: &GatewayProc,
    path: &str,
    pauses: &[f64],
    check: &dyn Fn(&str) -> bool,
) -> Vec<String> {
    let mut c = Client::connect(gw.addr()).unwrap();
    let mut failures = Vec::new();
    for (i, pause) in pauses.iter().enumerate() {
        thread::sleep(Duration::from_secs_f64(*pause));
        let body = format!("post number {i}");
        match c.request(&post_request(path, body.as_bytes(), Framing::Length, "")) {
            Ok(r) if r.status == 200 && check(&r.text()) => {}
            Ok(r) => failures.push(format!("POST {i} after {pause} s idle: {}", r.describe())),
            Err(e) => {
                failures.push(format!("POST {i} after {pause} s idle: {e}"));
                c = Client::connect(gw.addr()).unwrap();
            }
        }
    }
    failures
}

/// gunicorn's threaded worker closes connections idle for 2 s (its default keep-alive),
/// checked about once a second.
#[test]
fn gunicorn_default_keepalive_never_fails_a_post() {
    let up = ServerProc::gunicorn();
    let gw = start_gw(&up.addr().to_string(), &[]);
    let failures = paced_posts(&gw, "/post", &[0.0, 0.3, 3.5, 0.2, 3.5, 3.5], &|t| {
        t.starts_with("gunicorn POST 13")
    });
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Node's default `keepAliveTimeout` is 5 s, announced as `Keep-Alive: timeout=5` (Node
/// closes about a second later): the gateway retires connections before the announced
/// time, and notices the close after it. Then the same with `keepAliveTimeout` 1 s.
#[test]
fn node_keepalive_never_fails_a_post() {
    let up = ServerProc::node();
    let gw = start_gw(&up.addr().to_string(), &[]);
    let failures = paced_posts(&gw, "/post", &[0.0, 4.6, 0.2, 6.5, 0.2, 5.5], &|t| {
        t == "node POST 13\n"
    });
    assert!(
        failures.is_empty(),
        "default keepAliveTimeout: {failures:#?}"
    );
    let up = ServerProc::node_with_keepalive(1000);
    let gw = start_gw(&up.addr().to_string(), &[]);
    let failures = paced_posts(&gw, "/post", &[0.0, 0.9, 1.3, 2.5, 1.3, 2.5], &|t| {
        t == "node POST 13\n"
    });
    assert!(failures.is_empty(), "keepAliveTimeout 1 s: {failures:#?}");
}

/// nginx with `keepalive_timeout 1s` (no `Keep-Alive` header): one POST every 1.3 s, the
/// pattern that failed 4 of 8 before the pool watched its idle connections.
#[test]
fn nginx_short_keepalive_never_fails_a_post() {
    let nginx = Nginx::start_with("keepalive_timeout 1s;");
    let gw = start_gw(
        &nginx.addr().to_string(),
        &["--metrics-listen", "127.0.0.1:0"],
    );
    let failures = paced_posts(
        &gw,
        "/upload",
        &[0.0, 1.3, 1.3, 1.3, 1.3, 1.3, 1.3, 1.3],
        &|t| t == "got\n",
    );
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Well under the 300 ms between events; a held-back event is late by 300 ms or more.
const LATE_MS: i64 = 120;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Reads `stream` until it closes, calling `seen(bytes so far, arrival ms)` after each read.
fn read_timed(mut stream: Sock, mut seen: impl FnMut(&[u8], i64)) {
    stream
        .tcp()
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                all.extend_from_slice(&buf[..n]);
                seen(&all, now_ms());
            }
        }
    }
}

/// How late each event `data: <ms>` arrived, from raw bytes read as they came (chunk
/// framing between events does not matter: an event is never split by it here).
fn sse_lags(addr: SocketAddr, version: &str) -> (Vec<i64>, String) {
    let mut s = tests::tls::connect(addr).unwrap();
    s.write_all(
        format!("GET /events?n=6&gap_ms=300 HTTP/{version}\r\nHost: sse.test\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    let mut lags = Vec::new();
    let mut head = String::new();
    let mut found = 0;
    read_timed(s, |all, now| {
        let text = String::from_utf8_lossy(all);
        if head.is_empty()
            && let Some(end) = text.find("\r\n\r\n")
        {
            text[..end].clone_into(&mut head);
        }
        let events: Vec<&str> = text.split("data: ").skip(1).collect();
        for e in events.iter().skip(found) {
            if let Some((ts, _)) = e.split_once("\n\n") {
                lags.push(now - ts.parse::<i64>().unwrap_or(0));
                found += 1;
            }
        }
    });
    (lags, head)
}

/// Six events 300 ms apart from Node: each reaches the client when it was written, through
/// HTTP/1.1 (chunked, re-framed) and HTTP/1.0 (de-chunked), with a raw client and with
/// Node's fetch.
#[test]
fn server_sent_events_arrive_as_they_are_written() {
    let up = ServerProc::node();
    let gw = start_gw(&up.addr().to_string(), &[]);
    let (direct, _) = sse_lags(up.addr(), "1.1");
    for version in ["1.1", "1.0"] {
        let (lags, head) = sse_lags(gw.addr(), version);
        assert_eq!(lags.len(), 6, "HTTP/{version}: {head}\n{lags:?}");
        assert!(
            lags.iter().all(|&l| l < LATE_MS),
            "HTTP/{version}: events arrived late (ms after written): {lags:?}; direct: {direct:?}"
        );
        if version == "1.0" {
            assert!(
                !head.to_ascii_lowercase().contains("transfer-encoding"),
                "{head}"
            );
        }
    }
    let (status, lags) = node_sse_client(&format!(
        "{}/events?n=6&gap_ms=300",
        tests::tls::base_url(gw.addr())
    ));
    assert_eq!((status, lags.len()), (200, 6), "{lags:?}");
    assert!(
        lags.iter().all(|&l| l < LATE_MS),
        "fetch saw events late (ms): {lags:?}; direct: {direct:?}"
    );
    eprintln!("SSE lag ms: direct {direct:?}, through the gateway (fetch) {lags:?}");
}

/// httpbin's drip served by gunicorn: 5 bytes over one second, with Content-Length. The
/// first byte must not wait for the second.
#[test]
fn drip_bytes_arrive_as_they_are_written() {
    let up = ServerProc::gunicorn();
    let gw = start_gw(&up.addr().to_string(), &[]);
    for addr in [up.addr(), gw.addr()] {
        let mut s = tests::tls::connect(addr).unwrap();
        let start = Instant::now();
        s.write_all(b"GET /drip?numbytes=5&duration=1 HTTP/1.1\r\nHost: drip.test\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut arrivals = Vec::new();
        let mut seen_body = 0;
        read_timed(s, |all, _| {
            let Some(end) = all.windows(4).position(|w| w == b"\r\n\r\n") else {
                return;
            };
            let body = all.len() - end - 4;
            if body > seen_body {
                arrivals.push((body, start.elapsed().as_millis()));
                seen_body = body;
            }
        });
        assert_eq!(seen_body, 5, "{addr}: {arrivals:?}");
        let (_, first) = arrivals[0];
        let (_, last) = arrivals[arrivals.len() - 1];
        assert!(
            first < 150 && last - first >= 600,
            "{addr}: bytes (count, ms after request): {arrivals:?}"
        );
    }
}

/// A request body sent in three pieces 300 ms apart reaches Node piece by piece.
#[test]
fn request_body_pieces_reach_the_upstream_as_they_are_sent() {
    let up = ServerProc::node();
    let gw = start_gw(&up.addr().to_string(), &[]);
    for chunked in [false, true] {
        let mut s = tests::tls::connect(gw.addr()).unwrap();
        let framing = if chunked {
            "Transfer-Encoding: chunked"
        } else {
            "Content-Length: 15"
        };
        s.write_all(
            format!("POST /upload-times HTTP/1.1\r\nHost: up.test\r\n{framing}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
        let mut sent = Vec::new();
        for i in 0..3 {
            if i > 0 {
                thread::sleep(Duration::from_millis(300));
            }
            sent.push(now_ms());
            let piece = format!("piece{i}");
            let piece = piece.as_bytes();
            if chunked {
                s.write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                    .unwrap();
                s.write_all(piece).unwrap();
                s.write_all(b"\r\n").unwrap();
            } else {
                s.write_all(piece).unwrap();
            }
        }
        if chunked {
            s.write_all(b"0\r\n\r\n").unwrap();
        }
        let mut answer = String::new();
        s.tcp()
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let _ = s.read_to_string(&mut answer);
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
        let times: Vec<i64> = serde_json::from_str(body.trim())
            .unwrap_or_else(|e| panic!("chunked={chunked}: {answer:?}: {e}"));
        assert!(
            times.len() >= 3,
            "chunked={chunked}: arrivals {times:?}, sent {sent:?}"
        );
        // Each piece arrived before the next was sent.
        for (i, s) in sent.iter().enumerate().skip(1) {
            assert!(
                times.iter().filter(|&&t| t < *s).count() >= i,
                "chunked={chunked}: arrivals {times:?}, sent {sent:?}"
            );
        }
    }
}
