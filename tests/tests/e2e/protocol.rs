//! HTTP/1.1 protocol behaviour through the real binary: upstream keep-alive pooling,
//! pipelining, HEAD/204/304, `Expect: 100-continue`, HTTP/1.0, WebSocket upgrade, the
//! forwarding headers, the variant header and the idle timeout.

use std::thread;
use std::time::{Duration, Instant};

use tests::{
    Client, Framing, HOST, TestUpstream, WsEchoUpstream, first_pattern_mismatch, get_request,
    pattern_bytes, post_request, ws_connect,
};
use tungstenite::Message;

use crate::{CLOSE_WITHIN, start_gw};

#[test]
fn keepalive_reuses_upstream_connections() {
    let up = TestUpstream::start("stable");
    let gw = start_gw(&up.addr_str(), &[]);
    let mut c = Client::connect(gw.addr()).unwrap();
    for i in 0..200 {
        let r = c.get("/").unwrap();
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "stable"),
            "request {i}"
        );
    }
    // Fresh client connections, one after the other, still share the upstream pool.
    for i in 0..50 {
        let mut c = Client::connect(gw.addr()).unwrap();
        for j in 0..2 {
            let r = c.get("/").unwrap();
            assert_eq!(r.status, 200, "client conn {i} request {j}");
        }
    }
    assert_eq!(up.requests(), 300);
    let accepted = up.accepted();
    eprintln!("300 requests used {accepted} upstream connections");
    assert!(
        accepted <= 4,
        "300 sequential requests opened {accepted} upstream connections: no keep-alive reuse"
    );
}

#[test]
fn pipelined_requests_answered_in_order() {
    let up = TestUpstream::start("stable");
    let gw = start_gw(&up.addr_str(), &[]);
    let mut c = Client::connect(gw.addr()).unwrap();
    let mut batch = Vec::new();
    let mut expect = Vec::new();
    for i in 0..10 {
        match i % 3 {
            // Earlier requests are slower, so answering out of order would show.
            0 => {
                batch.extend(get_request(&format!("/slow?ms={}&id={i}", (10 - i) * 20)));
                expect.push("slow".to_owned());
            }
            1 => {
                let body = format!("body-{i}");
                batch.extend(post_request(
                    &format!("/echo?id={i}"),
                    body.as_bytes(),
                    if i % 2 == 0 {
                        Framing::Length
                    } else {
                        Framing::Chunked
                    },
                    "",
                ));
                expect.push(body);
            }
            _ => {
                batch.extend(get_request(&format!("/?id={i}")));
                expect.push("stable".to_owned());
            }
        }
    }
    c.send(&batch).unwrap();
    for (i, want) in expect.iter().enumerate() {
        let r = c
            .read_response(false)
            .unwrap_or_else(|e| panic!("response {i}: {e}"));
        assert_eq!(r.status, 200, "response {i}: {}", r.describe());
        assert_eq!(
            r.header("x-id"),
            Some(i.to_string().as_str()),
            "response {i} out of order"
        );
        assert_eq!(&r.text(), want, "response {i} body");
    }
    assert_eq!(c.get("/").unwrap().text(), "stable");
}

#[test]
fn head_has_no_body_and_connection_stays_usable() {
    let up = TestUpstream::start("stable");
    let gw = start_gw(&up.addr_str(), &[]);
    let mut c = Client::connect(gw.addr()).unwrap();
    for path in ["/", "/big?n=100000", "/big?n=100000&chunked=1"] {
        c.send(format!("HEAD {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
            .unwrap();
        let r = c.read_response(true).unwrap();
        assert_eq!(r.status, 200, "HEAD {path}: {}", r.describe());
        assert_eq!(up.last_request().unwrap().method, "HEAD");
        // Any body bytes the gateway wrongly sent would be parsed as the next response.
        let g = c.get("/").unwrap();
        assert_eq!(
            (g.status, g.text().as_str()),
            (200, "stable"),
            "GET after HEAD {path}: {}",
            g.describe()
        );
    }
    c.send(format!("HEAD /big?n=100000 HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
        .unwrap();
    let r = c.read_response(true).unwrap();
    assert_eq!(r.header("content-length"), Some("100000"));
}

#[test]
fn status_204_and_304_have_no_body() {
    let up = TestUpstream::start("stable");
    let gw = start_gw(&up.addr_str(), &[]);
    let mut c = Client::connect(gw.addr()).unwrap();
    for code in [204_u16, 304, 204] {
        let r = c.get(&format!("/status?code={code}")).unwrap();
        assert_eq!(r.status, code, "{}", r.describe());
        let g = c.get("/").unwrap();
        assert_eq!(
            (g.status, g.text().as_str()),
            (200, "stable"),
            "GET after {code}: {}",
            g.describe()
        );
    }
    let r = c.get("/status?code=503").unwrap();
    assert_eq!((r.status, r.text().as_str()), (503, "status 503"));
}

#[test]
fn expect_100_continue_answered_by_gateway() {
    let up = TestUpstream::start("stable");
    let gw = start_gw(&up.addr_str(), &[]);
    let mut c = Client::connect(gw.addr()).unwrap();
    let body = pattern_bytes(100_000);
    for _ in 0..2 {
        c.send(
            format!(
                "POST /echo HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {}\r\n\
                 Expect: 100-continue\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .unwrap();
        // The body is not sent until the interim response arrives.
        let interim = c
            .read_response(false)
            .expect("no `100 Continue` before the body was sent");
        assert_eq!(
            (interim.minor_version, interim.status),
            (1, 100),
            "{}",
            interim.describe()
        );
        c.send(&body).unwrap();
        let r = c.read_response(false).unwrap();
        assert_eq!(r.status, 200, "{}", r.describe());
        assert_eq!(first_pattern_mismatch(&r.body), None);
        assert_eq!(r.body.len(), body.len());
        let seen = up.last_request().unwrap();
        assert!(
            seen.header("expect").is_none(),
            "Expect was forwarded upstream:\n{}",
            String::from_utf8_lossy(&seen.head)
        );
    }
}

#[test]
fn other_expectation_gets_417() {
    let up = TestUpstream::start("stable");
    let gw = start_gw(&up.addr_str(), &[]);
    let mut c = Client::connect(gw.addr()).unwrap();
    let r = c
        .request(
            format!(
                "POST /echo HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 2\r\n\
                 Expect: something-else\r\n\r\nhi"
            )
            .as_bytes(),
        )
        .unwrap();
    assert_eq!(r.status, 417, "{}", r.describe());
    assert_eq!(up.requests(), 0, "a 417 request reached the upstream");
}

#[test]
fn http10_closes_after_response() {
    let up = TestUpstream::start("stable");
    let gw = start_gw(&up.addr_str(), &[]);
    for req in [
        format!("GET / HTTP/1.0\r\nHost: {HOST}\r\n\r\n"),
        "GET / HTTP/1.0\r\n\r\n".to_owned(),
    ] {
        let mut c = Client::connect(gw.addr()).unwrap();
        let r = c.request(req.as_bytes()).unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "stable"), "{req:?}");
        let extra = c
            .wait_closed(CLOSE_WITHIN)
            .expect("HTTP/1.0 connection without keep-alive must close");
        assert!(extra.is_empty(), "bytes after the response: {extra:?}");
    }
}

#[test]
fn http10_keepalive_stays_open() {
    let up = TestUpstream::start("stable");
    let gw = start_gw(&up.addr_str(), &[]);
    let mut c = Client::connect(gw.addr()).unwrap();
    for i in 0..3 {
        let r = c
            .request(
                format!("GET / HTTP/1.0\r\nHost: {HOST}\r\nConnection: keep-alive\r\n\r\n")
                    .as_bytes(),
            )
            .unwrap_or_else(|e| panic!("request {i} on an HTTP/1.0 keep-alive connection: {e}"));
        assert_eq!((r.status, r.text().as_str()), (200, "stable"));
        assert!(
            r.header("content-length").is_some(),
            "keep-alive response to HTTP/1.0 needs a Content-Length: {}",
            r.describe()
        );
    }
    assert!(c.is_open(Duration::from_millis(300)));
}

#[test]
fn http10_client_gets_chunked_upstream_body_dechunked() {
    let up = TestUpstream::start("stable");
    let gw = start_gw(&up.addr_str(), &[]);
    let mut c = Client::connect(gw.addr()).unwrap();
    let n = 300_000;
    let r = c
        .request(format!("GET /big?n={n}&chunked=1 HTTP/1.0\r\nHost: {HOST}\r\n\r\n").as_bytes())
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(
        r.header_all("transfer-encoding").is_empty(),
        "chunked sent to an HTTP/1.0 client: {}",
        r.describe()
    );
    assert_eq!(r.body.len(), n);
    assert_eq!(first_pattern_mismatch(&r.body), None);
    c.wait_closed(CLOSE_WITHIN)
        .expect("connection must close after a de-chunked HTTP/1.0 response");
}

#[test]
fn websocket_echo_through_upgrade() {
    let ws_up = WsEchoUpstream::start();
    let gw = start_gw(&ws_up.addr().to_string(), &[]);
    let mut ws = ws_connect(gw.addr(), "/ws").unwrap();
    ws.send(Message::Text("hello canary".into())).unwrap();
    match ws.read().unwrap() {
        Message::Text(t) => assert_eq!(t.as_str(), "hello canary"),
        other => panic!("expected text echo, got {other:?}"),
    }
    let blob = pattern_bytes(200_000);
    for _ in 0..3 {
        ws.send(Message::Binary(blob.clone())).unwrap();
        match ws.read().unwrap() {
            Message::Binary(b) => assert_eq!(first_pattern_mismatch(&b), None),
            other => panic!("expected binary echo, got {other:?}"),
        }
    }
    ws.close(None).unwrap();
    assert_eq!(ws_up.handshakes(), 1);
}

#[test]
fn forwarding_headers_added_and_hop_by_hop_removed() {
    let up = TestUpstream::start("stable");
    let gw = start_gw(&up.addr_str(), &[]);
    let mut c = Client::connect(gw.addr()).unwrap();
    let r = c
        .request(
            format!(
                "GET /headers HTTP/1.1\r\nHost: {HOST}\r\nConnection: keep-alive, x-hop\r\n\
                 x-hop: secret\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nTrailer: x-t\r\n\
                 Proxy-Authorization: Basic Zm9vOmJhcg==\r\nProxy-Connection: keep-alive\r\n\
                 X-Forwarded-For: 192.0.2.7\r\nForwarded: for=192.0.2.7\r\nx-end-to-end: kept\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
    assert_eq!(r.status, 200);
    let seen = up.last_request().unwrap();
    let head = String::from_utf8_lossy(&seen.head).into_owned();
    assert_eq!(seen.minor_version, 1, "forwarded as HTTP/1.1:\n{head}");
    for hop in [
        "x-hop",
        "keep-alive",
        "te",
        "trailer",
        "proxy-authorization",
        "proxy-connection",
    ] {
        assert!(
            seen.header(hop).is_none(),
            "hop-by-hop {hop} forwarded:\n{head}"
        );
    }
    for conn in seen.header_values("connection") {
        assert!(
            !conn.to_ascii_lowercase().contains("x-hop"),
            "Connection still lists x-hop:\n{head}"
        );
    }
    assert_eq!(seen.header("x-end-to-end").as_deref(), Some("kept"));
    assert_eq!(seen.header("host").as_deref(), Some(HOST));
    let xff = seen.header_values("x-forwarded-for").join(", ");
    let hops: Vec<&str> = xff.split(',').map(str::trim).collect();
    assert_eq!(
        hops,
        ["192.0.2.7", "127.0.0.1"],
        "X-Forwarded-For must get the client IP appended:\n{head}"
    );
    // The scheme the client used: `https` when the harness runs over TLS.
    let scheme = if tests::tls::over_tls() {
        "https"
    } else {
        "http"
    };
    assert_eq!(
        seen.header("x-forwarded-proto").as_deref(),
        Some(scheme),
        "{head}"
    );
    assert_eq!(
        seen.header("forwarded").as_deref(),
        Some("for=192.0.2.7"),
        "{head}"
    );
}

#[test]
fn variant_header_names_the_variant() {
    let stable = TestUpstream::start("stable");
    let canary = TestUpstream::start("canary");
    for (percent, want) in [("100", "canary"), ("0", "stable")] {
        let gw = start_gw(
            &stable.addr_str(),
            &[
                "--canary",
                &canary.addr_str(),
                "--canary-percent",
                percent,
                "--variant-header",
                "x-canarygate-variant",
            ],
        );
        let mut c = Client::connect(gw.addr()).unwrap();
        for _ in 0..5 {
            let r = c.get("/").unwrap();
            assert_eq!(r.text(), want);
            assert_eq!(
                r.header_all("x-canarygate-variant"),
                [want],
                "{}",
                r.describe()
            );
        }
    }
    // Off by default.
    let gw = start_gw(&stable.addr_str(), &[]);
    let r = Client::connect(gw.addr()).unwrap().get("/").unwrap();
    assert!(r.header("x-canarygate-variant").is_none());
}

#[test]
fn idle_keepalive_connection_closed_silently() {
    let up = TestUpstream::start("stable");
    let gw = start_gw(&up.addr_str(), &["--keepalive-timeout", "1s"]);
    let mut c = Client::connect(gw.addr()).unwrap();
    assert_eq!(c.get("/").unwrap().status, 200);
    let started = Instant::now();
    let extra = c
        .wait_closed(Duration::from_secs(8))
        .expect("idle connection not closed after --keepalive-timeout 1s");
    assert!(
        extra.is_empty(),
        "idle close must be silent, got {:?}",
        String::from_utf8_lossy(&extra)
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed after {:?}, before the 1s keep-alive timeout",
        started.elapsed()
    );
}

#[test]
fn upstream_pool_keeps_at_most_max_idle() {
    let up = TestUpstream::start("stable");
    let gw = start_gw(
        &up.addr_str(),
        &[
            "--workers",
            "1",
            "--pool-max-idle",
            "1",
            "--pool-idle-timeout",
            "30s",
        ],
    );
    let addr = gw.addr();
    // Four requests in flight at once need four upstream connections.
    let handles: Vec<_> = (0..4)
        .map(|_| thread::spawn(move || Client::connect(addr).unwrap().get("/slow?ms=500").unwrap()))
        .collect();
    for h in handles {
        let r = h.join().unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "slow"));
    }
    assert_eq!(up.accepted(), 4, "4 concurrent requests");
    // Only one may stay pooled; the other three must be closed, not kept.
    let deadline = Instant::now() + Duration::from_secs(5);
    while up.open_connections() > 1 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        up.open_connections(),
        1,
        "upstream connections still open with --pool-max-idle 1"
    );
    // And the pooled one is reused.
    assert_eq!(
        Client::connect(addr).unwrap().get("/").unwrap().text(),
        "stable"
    );
    assert_eq!(
        up.accepted(),
        4,
        "the idle pooled connection was not reused"
    );
}

#[test]
fn upstream_pool_idle_timeout_retires_connections() {
    let up = TestUpstream::start("stable");
    let gw = start_gw(
        &up.addr_str(),
        &["--workers", "1", "--pool-idle-timeout", "1s"],
    );
    let mut c = Client::connect(gw.addr()).unwrap();
    assert_eq!(c.get("/").unwrap().status, 200);
    let first = up.last_request().unwrap().conn_id;
    assert_eq!(c.get("/").unwrap().status, 200);
    assert_eq!(
        up.last_request().unwrap().conn_id,
        first,
        "pooled connection not reused"
    );
    thread::sleep(Duration::from_millis(2500));
    assert_eq!(c.get("/").unwrap().status, 200);
    assert_ne!(
        up.last_request().unwrap().conn_id,
        first,
        "a connection idle 2.5s was reused despite --pool-idle-timeout 1s"
    );
    assert!(
        up.wait_closed(first, Duration::from_secs(5)),
        "the expired pooled connection was never closed"
    );
}

#[test]
fn upstream_connection_close_is_not_pooled() {
    let up = TestUpstream::start("stable");
    let gw = start_gw(&up.addr_str(), &["--workers", "1"]);
    let mut c = Client::connect(gw.addr()).unwrap();
    for i in 0..5 {
        let r = c.get("/close").unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "stable"), "round {i}");
        // A POST is not retried: it fails if it is sent on the connection the upstream closed.
        let body = format!("after-close-{i}");
        let r = c
            .request(&post_request("/echo", body.as_bytes(), Framing::Length, ""))
            .unwrap_or_else(|e| {
                panic!("round {i}: POST after an upstream `Connection: close`: {e}")
            });
        assert_eq!(
            (r.status, r.text()),
            (200, body),
            "round {i}: POST after an upstream `Connection: close`"
        );
    }
}

#[test]
fn close_delimited_upstream_body_reaches_client_whole() {
    let up = TestUpstream::start("stable");
    let gw = start_gw(&up.addr_str(), &[]);
    for n in [0, 1, 300_000] {
        let mut c = Client::connect(gw.addr()).unwrap();
        let r = c.get(&format!("/until-close?n={n}")).unwrap();
        assert_eq!(r.status, 200, "{}", r.describe());
        assert_eq!(r.body.len(), n, "close-delimited body of {n} bytes");
        assert_eq!(first_pattern_mismatch(&r.body), None);
        let framed = r.chunk_sizes.is_some() || r.header("content-length").is_some();
        if framed {
            // Re-framed for the client: the connection may stay usable.
            assert_eq!(c.get("/").unwrap().text(), "stable");
        } else {
            // Close-delimited for the client too: it must end with a close (which is how
            // the body above was read), never hang.
            c.wait_closed(CLOSE_WITHIN).unwrap();
        }
    }
}

#[test]
fn client_connection_close_is_honoured() {
    let up = TestUpstream::start("stable");
    let gw = start_gw(&up.addr_str(), &[]);
    let mut c = Client::connect(gw.addr()).unwrap();
    let r = c
        .request(format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "stable"));
    let extra = c
        .wait_closed(CLOSE_WITHIN)
        .expect("`Connection: close` from the client must close the connection");
    assert!(extra.is_empty());
}

#[test]
fn many_concurrent_connections() {
    let up = TestUpstream::start("stable");
    let gw = start_gw(&up.addr_str(), &[]);
    let addr = gw.addr();
    let conns = 150;
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(conns));
    let handles: Vec<_> = (0..conns)
        .map(|i| {
            let barrier = barrier.clone();
            thread::spawn(move || {
                let mut c = Client::connect(addr).unwrap();
                // Every connection is open before any request is sent.
                barrier.wait();
                for j in 0..3 {
                    let r = c
                        .get(&format!("/?id={i}"))
                        .unwrap_or_else(|e| panic!("conn {i} request {j}: {e}"));
                    assert_eq!(r.status, 200);
                    assert_eq!(r.header("x-id"), Some(i.to_string().as_str()));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(up.requests(), 3 * conns as u64);
}

/// Request-target forms (RFC 9112 §3.2) as the upstream sees them: absolute-form is sent
/// in origin-form with its authority as `Host` (the client's Host ignored); an HTTP/1.0
/// request without Host gets the upstream's address as Host on the HTTP/1.1 hop;
/// `OPTIONS *` reaches the upstream as is; a Host with userinfo is refused.
#[test]
fn request_target_forms_reach_the_upstream_correctly() {
    let up = TestUpstream::start("stable");
    let gw = start_gw(&up.addr_str(), &[]);
    let seen = |raw: &str| {
        let r = Client::connect(gw.addr())
            .unwrap()
            .request(raw.as_bytes())
            .unwrap();
        assert_eq!(r.status, 200, "{raw:?}: {}", r.describe());
        up.last_request().expect("the upstream saw the request")
    };

    let s = seen("GET http://api.example:8080/?q=1 HTTP/1.1\r\nHost: other.example\r\n\r\n");
    assert_eq!(s.target, "/?q=1");
    assert_eq!(s.header_values("host"), ["api.example:8080"]);

    let s = seen("GET /?old HTTP/1.0\r\n\r\n");
    assert_eq!(s.target, "/?old");
    assert_eq!(s.minor_version, 1);
    assert_eq!(s.header_values("host"), [up.addr_str()]);

    // The test upstream answers 404 to `*`; what matters is that it got the request.
    let r = Client::connect(gw.addr())
        .unwrap()
        .request(format!("OPTIONS * HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
        .unwrap();
    assert_eq!(r.header("x-upstream"), Some("stable"), "{}", r.describe());
    let s = up.last_request().expect("the upstream saw OPTIONS *");
    assert_eq!((s.method.as_str(), s.target.as_str()), ("OPTIONS", "*"));

    let before = up.requests();
    for bad in [
        "GET / HTTP/1.1\r\nHost: user@a.example\r\n\r\n",
        "GET http://user@a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n",
    ] {
        let r = Client::connect(gw.addr())
            .unwrap()
            .request(bad.as_bytes())
            .unwrap();
        assert_eq!(r.status, 400, "{bad:?}: {}", r.describe());
    }
    assert_eq!(up.requests(), before);
}

/// A keep-alive connection quiet between requests is parked (its buffers and request
/// state freed, only a readiness wait left): the gauge counts it, the next request on it
/// (whole, split over two writes, pipelined, with a body) is served as before, and the
/// keep-alive timeout still closes it.
#[test]
fn quiet_keepalive_connections_park_and_come_back() {
    const N: usize = 300;
    // Long enough that the last of the N connections, woken one after the other (2.25 s
    // of deliberate pauses among them, and more on a loaded machine), is still open when
    // its turn comes: at 4 s it was sometimes closed first.
    const KEEPALIVE: Duration = Duration::from_secs(10);
    let up = TestUpstream::start("stable");
    let gw = start_gw(
        &up.addr_str(),
        &[
            "--metrics-listen",
            "127.0.0.1:0",
            "--keepalive-timeout",
            "10s",
            "--workers",
            "1",
        ],
    );
    let parked = |gw: &tests::GatewayProc| gw.scrape().int("canarygate_connections_parked", &[]);
    let wait_parked = |gw: &tests::GatewayProc, want: u64| {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let now = parked(gw);
            if now == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{now} connections parked, want {want}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    };
    // Warm: the baseline is a serving gateway.
    let mut warm = Client::connect(gw.addr()).unwrap();
    for _ in 0..50 {
        assert_eq!(warm.get("/").unwrap().status, 200);
    }
    drop(warm);
    let rss_before = gw.rss_kib();
    let mut conns: Vec<Client> = (0..N)
        .map(|_| Client::connect(gw.addr()).unwrap())
        .collect();
    for c in &mut conns {
        assert_eq!(c.get("/").unwrap().text(), "stable");
    }
    wait_parked(&gw, N as u64);
    let rss = gw.rss_kib();
    // Heap growth from the burst of busy connections is in it too: `cargo xtask compare
    // --scale` measures per connection at 10,000.
    eprintln!("{N} parked connections: VmRSS {rss_before} -> {rss} KiB");
    // Each comes back: a whole request, one split over two writes (the first half wakes
    // it), two pipelined, and a POST with its body.
    let get = get_request("/");
    for (i, c) in conns.iter_mut().enumerate() {
        match i % 4 {
            0 => assert_eq!(c.get("/").unwrap().text(), "stable", "conn {i}"),
            1 => {
                c.send(&get[..7]).unwrap();
                thread::sleep(Duration::from_millis(30));
                c.send(&get[7..]).unwrap();
                assert_eq!(c.read_response(false).unwrap().status, 200, "conn {i}");
            }
            2 => {
                c.send(&[get.as_slice(), get.as_slice()].concat()).unwrap();
                for _ in 0..2 {
                    assert_eq!(c.read_response(false).unwrap().status, 200, "conn {i}");
                }
            }
            _ => {
                let r = c
                    .request(&post_request("/", &[b'p'; 3000], Framing::Length, ""))
                    .unwrap();
                assert_eq!(r.status, 200, "conn {i}: {}", r.describe());
            }
        }
    }
    wait_parked(&gw, N as u64);
    let m = gw.scrape();
    let parks = m.int("canarygate_connection_parks_total", &[]);
    assert!(
        parks >= 2 * N as u64,
        "{parks} parks for {N} connections twice quiet"
    );
    assert_eq!(m.int("canarygate_connections_open", &[]), N as u64);
    // The keep-alive timeout closes parked connections, silently.
    for (i, c) in conns.iter_mut().enumerate().step_by(37) {
        let extra = c.wait_closed(KEEPALIVE + CLOSE_WITHIN).unwrap_or_else(|e| {
            panic!("parked conn {i} not closed by the keep-alive timeout: {e}")
        });
        assert!(
            extra.is_empty(),
            "conn {i} got {:?}",
            String::from_utf8_lossy(&extra)
        );
    }
    let deadline = Instant::now() + CLOSE_WITHIN;
    while gw.scrape().int("canarygate_connections_open", &[]) > 0 {
        assert!(
            Instant::now() < deadline,
            "connections still open after the timeout"
        );
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(parked(&gw), 0);
    // Warm-up, the first round, then per four connections 1 + 1 + 2 + 1 requests.
    assert_eq!(up.requests(), 50 + N as u64 + 5 * N as u64 / 4);
}
