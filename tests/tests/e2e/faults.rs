//! Upstream faults through the real binary, each with the status the README documents: 502 for
//! refusing, resetting, closing or malformed upstreams (GET retried on the next endpoint,
//! POST never), 504 for connect and response timeouts; plus the ways a broken exchange
//! could poison the upstream pool: a client that leaves mid-response, an upstream that
//! sends an unrequested response, an upstream that stalls mid-body.

use std::thread;
use std::time::{Duration, Instant};

use tests::{
    Behavior, Blackhole, Client, Framing, HOST, TestUpstream, first_pattern_mismatch,
    pattern_bytes, post_request, refused_addr,
};

use crate::{CLOSE_WITHIN, start_gw};

#[test]
fn refused_upstream_gets_502_and_connection_kept() {
    let dead = refused_addr().to_string();
    let gw = start_gw(&dead, &[]);
    let mut c = Client::connect(gw.addr()).unwrap();
    for i in 0..3 {
        let r = c
            .get("/")
            .unwrap_or_else(|e| panic!("request {i} on the same connection: {e}"));
        assert_eq!(r.status, 502, "{}", r.describe());
        assert!(
            r.header("content-type")
                .unwrap_or("")
                .starts_with("text/plain")
        );
    }
    // A request with a body may be answered before the body was read; then the gateway
    // may close, but must say so.
    let body = pattern_bytes(5000);
    for framing in [Framing::Length, Framing::Chunked] {
        let r = c
            .request(&post_request("/echo", &body, framing, ""))
            .unwrap_or_else(|e| panic!("{framing:?} POST on a kept connection: {e}"));
        assert_eq!(
            r.status,
            502,
            "{framing:?} POST to a refused endpoint: {}",
            r.describe()
        );
        if r.connection_has("close") {
            c.wait_closed(CLOSE_WITHIN)
                .expect("502 with `Connection: close` must close");
            c = Client::connect(gw.addr()).unwrap();
        } else {
            assert_eq!(c.get("/").unwrap().status, 502, "after {framing:?} POST");
        }
    }
}

#[test]
fn get_retried_on_next_endpoint_when_first_refuses() {
    let good = TestUpstream::start("stable");
    let endpoints = format!("{},{}", refused_addr(), good.addr());
    let gw = start_gw(&endpoints, &[]);
    let mut c = Client::connect(gw.addr()).unwrap();
    for i in 0..30 {
        let r = c.get("/").unwrap();
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "stable"),
            "keep-alive GET {i}: {}",
            r.describe()
        );
    }
    for i in 0..20 {
        let mut c = Client::connect(gw.addr()).unwrap();
        let method = if i % 2 == 0 { "GET" } else { "HEAD" };
        c.send(format!("{method} / HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
            .unwrap();
        let r = c.read_response(method == "HEAD").unwrap();
        assert_eq!(r.status, 200, "fresh {method} {i}: {}", r.describe());
    }
    assert_eq!(good.requests(), 50);
}

#[test]
fn post_not_retried_when_endpoint_refuses() {
    let good = TestUpstream::start("stable");
    let endpoints = format!("{},{}", refused_addr(), good.addr());
    let gw = start_gw(&endpoints, &[]);
    let mut ok = 0;
    let mut bad_gateway = 0;
    for i in 0..20 {
        let mut c = Client::connect(gw.addr()).unwrap();
        let body = format!("post-{i}");
        let r = c
            .request(&post_request("/echo", body.as_bytes(), Framing::Length, ""))
            .unwrap();
        match r.status {
            200 => {
                assert_eq!(r.text(), body);
                ok += 1;
            }
            502 => bad_gateway += 1,
            _ => panic!("POST {i}: {}", r.describe()),
        }
    }
    eprintln!("POST over [refused, good]: {ok} x 200, {bad_gateway} x 502");
    assert_eq!(
        good.requests(),
        ok,
        "a POST reached the good endpoint but got no 200"
    );
}

#[test]
fn upstream_closing_or_resetting_before_response_gets_502() {
    for behavior in [
        Behavior::CloseBeforeResponse,
        Behavior::ResetBeforeResponse,
        Behavior::Malformed,
    ] {
        let up = TestUpstream::with_behavior("broken", behavior);
        let gw = start_gw(&up.addr_str(), &[]);
        let mut c = Client::connect(gw.addr()).unwrap();
        let r = c
            .get("/")
            .unwrap_or_else(|e| panic!("{behavior:?} GET: {e}"));
        assert_eq!(r.status, 502, "{behavior:?} GET: {}", r.describe());
        let r = c
            .request(&post_request("/echo", b"payload", Framing::Length, ""))
            .unwrap_or_else(|e| panic!("{behavior:?} POST on the kept connection: {e}"));
        assert_eq!(r.status, 502, "{behavior:?} POST: {}", r.describe());
    }
}

#[test]
fn slow_upstream_gets_504_and_late_answer_is_not_reused() {
    let up = TestUpstream::start("stable");
    let gw = start_gw(
        &up.addr_str(),
        &["--response-timeout", "500ms", "--workers", "1"],
    );
    let mut c = Client::connect(gw.addr()).unwrap();
    let started = Instant::now();
    let r = c.get("/slow?ms=3000").unwrap();
    let elapsed = started.elapsed();
    assert_eq!(r.status, 504, "{}", r.describe());
    assert!(
        elapsed < Duration::from_millis(2900),
        "504 came after {elapsed:?}: the upstream answer (3s) came first"
    );
    // Same connection, the late "slow" answer must never show up as a response.
    for i in 0..5 {
        let r = c.get("/").unwrap();
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "stable"),
            "request {i} after the 504"
        );
    }
    thread::sleep(Duration::from_secs(3));
    for i in 0..5 {
        let r = c.get("/").unwrap();
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "stable"),
            "request {i} after the slow upstream answered"
        );
    }
    assert_eq!(c.get("/slow?ms=50").unwrap().text(), "slow");
}

#[test]
fn client_gone_mid_response_does_not_poison_the_pool() {
    let up = TestUpstream::start("stable");
    let gw = start_gw(&up.addr_str(), &["--workers", "1"]);
    for round in 0..3 {
        let mut c = Client::connect(gw.addr()).unwrap();
        let chunked = if round == 1 { "&chunked=1" } else { "" };
        c.send(format!("GET /big?n=67108864{chunked} HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
            .unwrap();
        let mut got = 0;
        let mut buf = vec![0_u8; 65536];
        while got < 256 * 1024 {
            let n = std::io::Read::read(&mut c.stream(), &mut buf).unwrap();
            assert!(n > 0, "gateway closed early");
            got += n;
        }
        let big_conn = up.last_request().unwrap().conn_id;
        drop(c);
        assert!(
            up.wait_closed(big_conn, Duration::from_secs(10)),
            "round {round}: upstream connection {big_conn} still open 10s after the client left \
             in the middle of a 64 MiB response"
        );
        let mut c = Client::connect(gw.addr()).unwrap();
        let r = c.get("/big?n=1000000").unwrap();
        assert_eq!(r.status, 200, "round {round}: {}", r.describe());
        assert_eq!(r.body.len(), 1_000_000, "round {round}");
        assert_eq!(first_pattern_mismatch(&r.body), None, "round {round}");
        assert_eq!(c.get("/").unwrap().text(), "stable", "round {round}");
    }
}

#[test]
fn connect_timeout_gets_504_and_connection_kept() {
    let hole = Blackhole::start();
    let gw = start_gw(&hole.addr().to_string(), &["--connect-timeout", "500ms"]);
    let mut c = Client::connect(gw.addr()).unwrap();
    for i in 0..2 {
        let started = Instant::now();
        let r = c
            .get("/")
            .unwrap_or_else(|e| panic!("request {i} (kept connection): {e}"));
        let elapsed = started.elapsed();
        assert_eq!(r.status, 504, "{}", r.describe());
        assert!(
            elapsed >= Duration::from_millis(450),
            "504 after {elapsed:?}, before the 500ms connect timeout"
        );
    }
}

#[test]
fn unsolicited_upstream_bytes_never_reach_a_client() {
    let up = TestUpstream::start("stable");
    let gw = start_gw(&up.addr_str(), &["--workers", "1"]);
    let mut c = Client::connect(gw.addr()).unwrap();
    for round in 0..3 {
        let r = c.get("/extra").unwrap();
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "hello"),
            "round {round}"
        );
        // Give the extra bytes time to arrive on the pooled upstream connection.
        thread::sleep(Duration::from_millis(100));
        for who in 0..4 {
            let r = if who % 2 == 0 {
                c.get("/").unwrap()
            } else {
                Client::connect(gw.addr()).unwrap().get("/").unwrap()
            };
            assert_eq!(
                (r.status, r.text().as_str()),
                (200, "stable"),
                "round {round}, request {who}: got the upstream's unsolicited response:\n{}",
                r.describe()
            );
        }
    }
}

#[test]
fn upstream_stalling_mid_body_is_cut_off() {
    let up = TestUpstream::start("stable");
    let gw = start_gw(&up.addr_str(), &["--response-timeout", "500ms"]);
    let mut c = Client::connect(gw.addr()).unwrap();
    let started = Instant::now();
    let result = c.get("/stall?cl=100000&n=1000&ms=3000");
    let elapsed = started.elapsed();
    match result {
        Ok(r) if r.status == 504 => {}
        Ok(r) => panic!(
            "a body stalled for 3s under --response-timeout 500ms arrived complete after \
             {elapsed:?}: {}",
            r.describe()
        ),
        Err(e) => assert!(
            elapsed < Duration::from_millis(2900),
            "cut off only after {elapsed:?} ({e})"
        ),
    }
    assert_eq!(
        Client::connect(gw.addr()).unwrap().get("/").unwrap().text(),
        "stable"
    );
}

/// An upstream that answers an upload before reading it, then closes without reading
/// the rest (so its kernel resets the connection): the client gets that answer, marked
/// `Connection: close`, not a 502, and the next client is served normally.
#[test]
fn upstream_answering_before_reading_the_body_reaches_the_client() {
    if tests::tls::plain_only("upstream_answering_before_reading_the_body_reaches_the_client") {
        return;
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    // A small receive buffer (inherited by accepted sockets, and it stops autotuning,
    // which here may grow to 32 MiB) and an upload far larger than every buffer on the
    // way: the gateway can never hand the whole body over, so the upstream's refusal is
    // always seen as one (before, a 4 MiB upload sometimes fit in the buffers, was
    // "sent", and the client connection rightly stayed open: a flaky test).
    socket2::SockRef::from(&listener)
        .set_recv_buffer_size(64 * 1024)
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let server = thread::spawn(move || {
        for _ in 0..3 {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if std::io::Read::read(&mut s, &mut byte).unwrap_or(0) == 0 {
                    break;
                }
                head.push(byte[0]);
            }
            let reply = if head.starts_with(b"POST") {
                "HTTP/1.1 401 Unauthorized\r\ncontent-length: 5\r\nconnection: close\r\n\r\nnope\n"
            } else {
                "HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n"
            };
            let _ = std::io::Write::write_all(&mut s, reply.as_bytes());
            // Give the gateway time to fill the socket with body bytes nobody reads,
            // then drop it: the close with unread data is a reset.
            thread::sleep(Duration::from_millis(100));
        }
    });
    let gw = start_gw(&addr.to_string(), &[]);
    for round in 0..2 {
        let mut c = Client::connect(gw.addr()).unwrap();
        let body = vec![b'b'; 32 << 20];
        let mut raw = format!(
            "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        raw.extend_from_slice(&body);
        let mut writer = c.stream().try_clone().unwrap();
        let uploader = thread::spawn(move || {
            let _ = std::io::Write::write_all(&mut writer, &raw);
        });
        let r = c
            .read_response(false)
            .unwrap_or_else(|e| panic!("round {round}: no answer: {e}"));
        assert_eq!(
            (r.status, r.text().as_str()),
            (401, "nope\n"),
            "round {round}: {}",
            r.describe()
        );
        assert!(r.connection_has("close"), "round {round}: {}", r.describe());
        let _ = c.wait_closed(CLOSE_WITHIN);
        uploader.join().unwrap();
    }
    let r = Client::connect(gw.addr()).unwrap().get("/after").unwrap();
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "ok\n"),
        "{}",
        r.describe()
    );
    server.join().unwrap();
}

/// `--canary-retry-on-stable`: with a canary that refuses every connection, idempotent
/// requests without a body are all answered by stable, while the canary is still charged
/// with each failure (a 5xx and a connect error in its metrics); a POST is never resent.
#[test]
fn failed_idempotent_canary_requests_are_answered_by_stable() {
    let stable = TestUpstream::start("stable");
    let dead = refused_addr();
    let gw = tests::GatewayProc::start(&[
        "--stable",
        &stable.addr_str(),
        "--canary",
        &dead.to_string(),
        "--canary-percent",
        "50",
        "--canary-retry-on-stable",
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    let mut c = Client::connect(gw.addr()).unwrap();
    let n = 200;
    for i in 0..n {
        let r = c.get(&format!("/?id={i}")).unwrap();
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "stable"),
            "{}",
            r.describe()
        );
    }
    assert_eq!(stable.requests(), n);
    let r = Client::connect(gw.metrics_addr())
        .unwrap()
        .get("/metrics")
        .unwrap();
    let p = tests::parse_prometheus(&r.text()).unwrap();
    let canary_5xx = p.int(
        "canarygate_responses_total",
        &[
            ("route", "default"),
            ("variant", "canary"),
            ("class", "5xx"),
        ],
    );
    let stable_2xx = p.int(
        "canarygate_responses_total",
        &[
            ("route", "default"),
            ("variant", "stable"),
            ("class", "2xx"),
        ],
    );
    let canary_requests = p.int(
        "canarygate_requests_total",
        &[("route", "default"), ("variant", "canary")],
    );
    assert!(
        (50..150).contains(&canary_5xx),
        "canary picks charged as failures: {canary_5xx} of {n}"
    );
    assert_eq!(canary_requests, canary_5xx);
    assert_eq!(stable_2xx, n);

    // A request with a body is not resent: the canary's failure reaches its client.
    let mut statuses = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let r = Client::connect(gw.addr())
            .unwrap()
            .request(&post_request("/echo", b"x", Framing::Length, ""))
            .unwrap();
        statuses.insert(r.status);
    }
    assert_eq!(
        statuses,
        [200, 502].into(),
        "POST statuses at 50% to a dead canary"
    );
}

/// A client that asks for a large response and then stops reading (a slow-read attack)
/// is cut off after `--send-timeout`, and the upstream connection behind it is closed
/// rather than held: the upstream's connection count goes back to zero.
#[test]
fn client_that_stops_reading_is_cut_off_after_the_send_timeout() {
    let up = TestUpstream::start("stable");
    let gw = start_gw(&up.addr_str(), &["--send-timeout", "1s"]);
    let mut c = Client::connect(gw.addr()).unwrap();
    // Far more than the socket buffers on both sides of the gateway hold.
    c.send(format!("GET /big?n={} HTTP/1.1\r\nHost: {HOST}\r\n\r\n", 256 << 20).as_bytes())
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    // Connection 1 is the gateway's upstream connection for this request; it ends when
    // the gateway gives up on the client.
    while !up.is_closed(1) {
        assert!(
            Instant::now() < deadline,
            "the upstream connection is still held 20 s after the client stopped reading"
        );
        thread::sleep(Duration::from_millis(100));
    }
    // The client's connection was aborted (reset), not left open.
    c.set_read_timeout(Duration::from_secs(5)).unwrap();
    let mut sink = vec![0u8; 1 << 20];
    let mut got = 0usize;
    let ended = loop {
        match std::io::Read::read(&mut c.stream().try_clone().unwrap(), &mut sink) {
            Ok(0) | Err(_) => break true,
            Ok(n) => got += n,
        }
        if got > 256 << 20 {
            break false;
        }
    };
    assert!(
        ended && got < 256 << 20,
        "the whole response still arrived ({got} bytes)"
    );
    // And the gateway serves the next client.
    let r = Client::connect(gw.addr()).unwrap().get("/").unwrap();
    assert_eq!(r.status, 200, "{}", r.describe());
}

/// An upstream whose first connection answers one request with keep-alive, then reads the
/// next request and closes without a byte (its idle close crossing the request); later
/// connections answer every request. Returns its address and a count of requests answered.
fn closes_second_request_on_first_connection() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    use std::io::{Read as _, Write as _};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let answered = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&answered);
    thread::spawn(move || {
        for (i, stream) in listener.incoming().enumerate() {
            let Ok(mut s) = stream else { return };
            let count = Arc::clone(&count);
            thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let mut buf = [0u8; 8192];
                let mut pending = Vec::new();
                let mut served = 0;
                loop {
                    while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        pending.drain(..end + 4);
                        if i == 0 && served == 1 {
                            return; // closes with the request unanswered
                        }
                        // Counted before the answer goes out, so a client that has it
                        // finds it counted.
                        count.fetch_add(1, Ordering::SeqCst);
                        let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
                        served += 1;
                    }
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => pending.extend_from_slice(&buf[..n]),
                    }
                }
            });
        }
    });
    (addr, answered)
}

/// A reused connection that the upstream closes as the request crosses it: an idempotent
/// request is sent again on a new connection (and counted as stale); a POST is not (502).
#[test]
fn stale_pooled_connection_resends_only_safe_requests() {
    let (addr, answered) = closes_second_request_on_first_connection();
    let gw = start_gw(&addr.to_string(), &["--metrics-listen", "127.0.0.1:0"]);
    let mut c = Client::connect(gw.addr()).unwrap();
    assert_eq!(c.get("/one").unwrap().status, 200);
    let r = c.get("/two").unwrap();
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "ok"),
        "{}",
        r.describe()
    );
    assert_eq!(answered.load(std::sync::atomic::Ordering::SeqCst), 2);
    let scrape = |gw: &tests::GatewayProc| {
        let r = Client::connect(gw.metrics_addr())
            .unwrap()
            .get("/metrics")
            .unwrap();
        tests::parse_prometheus(&r.text()).unwrap()
    };
    let stale = |p: &tests::PromText| {
        p.int(
            "canarygate_upstream_stale_total",
            &[("route", "default"), ("variant", "stable")],
        )
    };
    assert_eq!(stale(&scrape(&gw)), 1);

    let (addr, answered) = closes_second_request_on_first_connection();
    let gw = start_gw(&addr.to_string(), &["--metrics-listen", "127.0.0.1:0"]);
    let mut c = Client::connect(gw.addr()).unwrap();
    assert_eq!(c.get("/one").unwrap().status, 200);
    let r = c
        .request(&post_request("/two", b"data", Framing::Length, ""))
        .unwrap();
    assert_eq!(r.status, 502, "{}", r.describe());
    assert_eq!(answered.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(stale(&scrape(&gw)), 0);
}
