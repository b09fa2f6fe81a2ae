//! Bad client input through the real binary, each case with the exact status the README documents:
//! 400 for malformed or ambiguous heads and framing, 431 for oversized heads, 413 for
//! oversized bodies, 408 for a head that never completes, 501/505/417 for what is not
//! supported. The 400/408/413/431 connections close, and nothing reaches the upstream.

use std::fmt::Write as _;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tests::{Client, Framing, HOST, Response, TestUpstream, pattern_bytes, post_request};

use crate::{CLOSE_WITHIN, start_gw};

/// Sends `raw` on a fresh connection and returns the response (or why there was none).
fn answer(addr: SocketAddr, raw: &[u8]) -> Result<(Response, Client), String> {
    let mut c = Client::connect(addr).map_err(|e| e.to_string())?;
    c.send(raw).map_err(|e| format!("send: {e}"))?;
    let r = c
        .read_response(false)
        .map_err(|e| format!("no response: {e}"))?;
    Ok((r, c))
}

/// Checks one bad request: exact status, a text/plain reason, and (if `closes`) the close.
/// Returns a description of what was wrong, if anything.
fn check_case(
    addr: SocketAddr,
    name: &str,
    raw: &[u8],
    status: u16,
    closes: bool,
) -> Option<String> {
    let shown = String::from_utf8_lossy(&raw[..raw.len().min(300)]);
    let (r, mut c) = match answer(addr, raw) {
        Ok(x) => x,
        Err(e) => return Some(format!("{name}: {shown:?}: expected {status}, {e}")),
    };
    if r.status != status {
        return Some(format!(
            "{name}: {shown:?}: expected {status}, got:\n{}",
            r.describe()
        ));
    }
    let ctype = r.header("content-type").unwrap_or("");
    if !ctype.starts_with("text/plain") || r.body.is_empty() {
        return Some(format!(
            "{name}: {status} should carry a text/plain body naming the reason, got:\n{}",
            r.describe()
        ));
    }
    if closes && let Err(e) = c.wait_closed(CLOSE_WITHIN) {
        return Some(format!("{name}: {status} must close the connection: {e}"));
    }
    None
}

/// Checks every case on its own connection, all at once, so a gateway that stays silent
/// costs one read timeout rather than one per case.
fn run_cases(addr: SocketAddr, cases: &[(&str, Vec<u8>, u16, bool)]) -> Vec<String> {
    thread::scope(|scope| {
        let runs: Vec<_> = cases
            .iter()
            .map(|(name, raw, status, closes)| {
                scope.spawn(move || check_case(addr, name, raw, *status, *closes))
            })
            .collect();
        runs.into_iter()
            .filter_map(|r| r.join().expect("case thread"))
            .collect()
    })
}

fn h(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

#[test]
fn malformed_requests_get_400_and_close() {
    let up = TestUpstream::start("stable");
    let gw = start_gw(&up.addr_str(), &[]);
    let g = "GET / HTTP/1.1\r\nHost: a\r\n";
    let p = "POST /echo HTTP/1.1\r\nHost: a\r\n";
    let cases: Vec<(&str, Vec<u8>, u16, bool)> = vec![
        (
            "bad method character",
            h("GE(T / HTTP/1.1\r\nHost: a\r\n\r\n"),
            400,
            true,
        ),
        (
            "leading space",
            h(" GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
            400,
            true,
        ),
        (
            "control char in target",
            h("GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n"),
            400,
            true,
        ),
        (
            "space in header name",
            h(&format!("{g}Bad Name: x\r\n\r\n")),
            400,
            true,
        ),
        (
            "separator in header name",
            h(&format!("{g}X(y): x\r\n\r\n")),
            400,
            true,
        ),
        (
            "header without colon",
            h(&format!("{g}NoColon\r\n\r\n")),
            400,
            true,
        ),
        (
            "space before colon",
            h(&format!("{g}X-A : x\r\n\r\n")),
            400,
            true,
        ),
        (
            "obs-fold",
            h(&format!("{g}X-A: one\r\n  two\r\n\r\n")),
            400,
            true,
        ),
        (
            "obs-fold with tab",
            h(&format!("{g}X-A: one\r\n\ttwo\r\n\r\n")),
            400,
            true,
        ),
        (
            "bare CR in value",
            h(&format!("{g}X-A: a\rb\r\n\r\n")),
            400,
            true,
        ),
        (
            "bare CR line end",
            h("GET / HTTP/1.1\rHost: a\r\n\r\n"),
            400,
            true,
        ),
        (
            "NUL in value",
            h(&format!("{g}X-A: a\0b\r\n\r\n")),
            400,
            true,
        ),
        (
            "CL and TE",
            h(&format!(
                "{p}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
            )),
            400,
            true,
        ),
        (
            "differing duplicate CL",
            h(&format!(
                "{p}Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"
            )),
            400,
            true,
        ),
        (
            "differing CL list",
            h(&format!("{p}Content-Length: 5, 6\r\n\r\nhello!")),
            400,
            true,
        ),
        (
            "non-numeric CL",
            h(&format!("{p}Content-Length: abc\r\n\r\n")),
            400,
            true,
        ),
        (
            "signed CL",
            h(&format!("{p}Content-Length: +5\r\n\r\nhello")),
            400,
            true,
        ),
        (
            "negative CL",
            h(&format!("{p}Content-Length: -1\r\n\r\n")),
            400,
            true,
        ),
        (
            "TE gzip only",
            h(&format!("{p}Transfer-Encoding: gzip\r\n\r\nxxxx")),
            400,
            true,
        ),
        (
            "TE chunked then gzip",
            h(&format!(
                "{p}Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"
            )),
            400,
            true,
        ),
        (
            "non-hex chunk size",
            h(&format!(
                "{p}Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
            )),
            400,
            true,
        ),
        (
            "overflowing chunk size",
            h(&format!(
                "{p}Transfer-Encoding: chunked\r\n\r\nfffffffffffffffffffff\r\nhello\r\n0\r\n\r\n"
            )),
            400,
            true,
        ),
        (
            "TE chunked twice",
            h(&format!(
                "{p}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            )),
            400,
            true,
        ),
        (
            "TE xchunked",
            h(&format!("{p}Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n")),
            400,
            true,
        ),
        (
            "0x-prefixed chunk size",
            h(&format!(
                "{p}Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n"
            )),
            400,
            true,
        ),
        (
            "chunk data without CRLF",
            h(&format!(
                "{p}Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n"
            )),
            400,
            true,
        ),
        (
            "missing Host on 1.1",
            h("GET / HTTP/1.1\r\nX-A: b\r\n\r\n"),
            400,
            true,
        ),
        (
            "two Host fields",
            h(&format!("{g}Host: b\r\n\r\n")),
            400,
            true,
        ),
    ];
    let failures = run_cases(gw.addr(), &cases);
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert_eq!(up.requests(), 0, "a malformed request reached the upstream");
    // The gateway is still healthy.
    assert_eq!(
        Client::connect(gw.addr()).unwrap().get("/").unwrap().text(),
        "stable"
    );
}

#[test]
fn acceptable_edge_cases_are_forwarded() {
    let up = TestUpstream::start("stable");
    let gw = start_gw(&up.addr_str(), &[]);
    let cases = [
        (
            "identical duplicate CL",
            "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
            "hello",
        ),
        ("HTTP/1.0 without Host", "GET / HTTP/1.0\r\n\r\n", "stable"),
        (
            "chunk extension",
            "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\n\r\n",
            "hello",
        ),
        (
            "TE case-insensitive",
            "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
            "hi",
        ),
    ];
    for (name, raw, body) in cases {
        let (r, _) = answer(gw.addr(), raw.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, body),
            "{name}: {}",
            r.describe()
        );
    }
}

#[test]
fn unsupported_requests_get_501_505_417() {
    let up = TestUpstream::start("stable");
    let gw = start_gw(&up.addr_str(), &[]);
    let cases: Vec<(&str, Vec<u8>, u16, bool)> = vec![
        (
            "CONNECT",
            h("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"),
            501,
            false,
        ),
        (
            "unknown transfer coding",
            h(
                "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: x-unknown, chunked\r\n\r\n0\r\n\r\n",
            ),
            501,
            false,
        ),
        (
            "HTTP/2.0",
            h("GET / HTTP/2.0\r\nHost: a\r\n\r\n"),
            505,
            false,
        ),
        (
            "HTTP/3.0",
            h("GET / HTTP/3.0\r\nHost: a\r\n\r\n"),
            505,
            false,
        ),
        (
            "unknown expectation",
            h("POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nExpect: 200-ok\r\n\r\nhi"),
            417,
            false,
        ),
    ];
    let failures = run_cases(gw.addr(), &cases);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        up.requests(),
        0,
        "an unsupported request reached the upstream"
    );
}

#[test]
fn oversized_heads_get_431() {
    let up = TestUpstream::start("stable");
    let gw = start_gw(&up.addr_str(), &[]);
    let long = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Long: {}\r\n\r\n",
        "v".repeat(20_000)
    );
    let many = {
        let mut s = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
        for i in 0..128 {
            let _ = write!(s, "X-H{i}: v\r\n");
        }
        s + "\r\n"
    };
    let cases: Vec<(&str, Vec<u8>, u16, bool)> = vec![
        ("head over 16384 bytes", h(&long), 431, true),
        ("129 header fields", h(&many), 431, true),
    ];
    let failures = run_cases(gw.addr(), &cases);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(up.requests(), 0);
    // Just under both limits is fine: 128 fields, about 15 KB.
    let mut ok = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
    for i in 0..127 {
        let _ = write!(ok, "X-H{i}: {}\r\n", "w".repeat(100));
    }
    ok.push_str("\r\n");
    let (r, _) = answer(gw.addr(), ok.as_bytes()).unwrap();
    assert_eq!(
        r.status,
        200,
        "128 fields / {} bytes: {}",
        ok.len(),
        r.describe()
    );
    // And --max-header-bytes moves the limit.
    let small = start_gw(&up.addr_str(), &["--max-header-bytes", "1024"]);
    let head = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Long: {}\r\n\r\n",
        "v".repeat(1100)
    );
    let failures = run_cases(small.addr(), &[("head over 1024", h(&head), 431, true)]);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn oversized_bodies_get_413() {
    let up = TestUpstream::start("stable");
    let gw = start_gw(&up.addr_str(), &["--max-body-bytes", "1000"]);
    // Content-Length is checked before the upstream is contacted: only the head is sent.
    let accepted_before = up.accepted();
    let failures = run_cases(
        gw.addr(),
        &[(
            "CL over limit",
            h("POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 1001\r\n\r\n"),
            413,
            true,
        )],
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        up.accepted(),
        accepted_before,
        "an over-limit Content-Length made the gateway contact the upstream"
    );
    let chunked = post_request("/echo", &pattern_bytes(2000), Framing::Chunked, "");
    let failures = run_cases(gw.addr(), &[("chunked over limit", chunked, 413, true)]);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        up.requests(),
        0,
        "an over-limit chunked body reached the upstream whole"
    );
    // At the limit both framings pass.
    for framing in [Framing::Length, Framing::Chunked] {
        let body = pattern_bytes(1000);
        let (r, _) = answer(gw.addr(), &post_request("/echo", &body, framing, "")).unwrap();
        assert_eq!(r.status, 200, "{framing:?} 1000 B: {}", r.describe());
        assert_eq!(r.body, body);
    }
}

#[test]
fn slowloris_head_gets_408_then_close() {
    if tests::tls::plain_only("slowloris_head_gets_408_then_close") {
        return;
    }
    let up = TestUpstream::start("stable");
    let gw = start_gw(&up.addr_str(), &["--header-timeout", "1s"]);
    let mut c = Client::connect(gw.addr()).unwrap();
    c.send(format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nX-Slow: ").as_bytes())
        .unwrap();
    let started = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let dripper = {
        let mut stream = c.stream().try_clone().unwrap();
        let done = Arc::clone(&done);
        thread::spawn(move || {
            // One byte every 200 ms, never finishing the head, for at most 8 s.
            while !done.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(8) {
                if stream.write_all(b"a").is_err() {
                    return;
                }
                thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let r = c.read_response(false);
    let elapsed = started.elapsed();
    done.store(true, Ordering::SeqCst);
    let r = r.expect("no 408 for a head dripped slower than --header-timeout 1s");
    dripper.join().unwrap();
    assert_eq!(r.status, 408, "{}", r.describe());
    assert!(
        elapsed >= Duration::from_millis(900),
        "408 after {elapsed:?}, before the 1s header timeout"
    );
    c.wait_closed(CLOSE_WITHIN)
        .expect("connection must close after 408");
    assert_eq!(up.requests(), 0);
}

#[test]
fn pipelined_valid_request_answered_before_malformed_one() {
    let up = TestUpstream::start("stable");
    let gw = start_gw(&up.addr_str(), &[]);
    let mut c = Client::connect(gw.addr()).unwrap();
    c.send(
        format!("GET /?id=1 HTTP/1.1\r\nHost: {HOST}\r\n\r\nGE(T / HTTP/1.1\r\nHost: a\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    let r = c.read_response(false).unwrap();
    assert_eq!(
        (r.status, r.header("x-id")),
        (200, Some("1")),
        "{}",
        r.describe()
    );
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 400, "{}", r.describe());
    c.wait_closed(CLOSE_WITHIN).unwrap();
    assert_eq!(up.requests(), 1);
}

#[test]
fn over_limit_body_with_expect_gets_413() {
    let up = TestUpstream::start("stable");
    let gw = start_gw(&up.addr_str(), &["--max-body-bytes", "1000"]);
    let mut c = Client::connect(gw.addr()).unwrap();
    let r = c
        .request(
            format!(
                "POST /echo HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 5000\r\n\
                 Expect: 100-continue\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
    assert_eq!(r.status, 413, "{}", r.describe());
    c.wait_closed(CLOSE_WITHIN).unwrap();
    assert_eq!(up.requests(), 0);
}

#[test]
fn slow_body_is_not_a_header_timeout() {
    let up = TestUpstream::start("stable");
    let gw = start_gw(&up.addr_str(), &["--header-timeout", "1s"]);
    let mut c = Client::connect(gw.addr()).unwrap();
    // The head is complete at once; the body then takes 2s, twice the header timeout.
    c.send(format!("POST /echo HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 10\r\n\r\n").as_bytes())
        .unwrap();
    for b in b"0123456789" {
        thread::sleep(Duration::from_millis(200));
        c.send(&[*b]).unwrap();
    }
    let r = c.read_response(false).unwrap();
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "0123456789"),
        "{}",
        r.describe()
    );
}

#[test]
fn request_line_over_limit_gets_414() {
    // RFC 9112 §3: a request-target longer than the server will parse gets 414; the rest of
    // an oversized head gets 431 (tested above).
    let up = TestUpstream::start("stable");
    let gw = start_gw(&up.addr_str(), &[]);
    let raw = h(&format!(
        "GET /{} HTTP/1.1\r\nHost: a\r\n\r\n",
        "p".repeat(20_000)
    ));
    let failures = run_cases(
        gw.addr(),
        &[("request line over 16384 bytes", raw, 414, true)],
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(up.requests(), 0);
}

/// A client still uploading when the gateway refuses its body must read the 413, not a
/// connection reset: the gateway stops writing, keeps reading (and discarding) the rest
/// for a while, and only then closes (a lingering close, as nginx and Apache do).
#[test]
fn refused_upload_reads_its_413_not_a_reset() {
    if tests::tls::plain_only("refused_upload_reads_its_413_not_a_reset") {
        return;
    }
    let up = TestUpstream::start("stable");
    let gw = start_gw(&up.addr_str(), &["--max-body-bytes", "1000"]);
    for round in 0..5 {
        let mut c = Client::connect(gw.addr()).unwrap();
        let total = 8 << 20;
        c.send(
            format!("POST /echo HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {total}\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
        let mut writer = c.stream().try_clone().unwrap();
        let uploader = thread::spawn(move || {
            let chunk = vec![b'u'; 64 * 1024];
            let mut sent = 0;
            while sent < total {
                if writer.write_all(&chunk).is_err() {
                    break;
                }
                sent += chunk.len();
            }
        });
        // Let the upload get going so unread bytes sit in the gateway's receive buffer.
        thread::sleep(Duration::from_millis(50));
        let r = c
            .read_response(false)
            .unwrap_or_else(|e| panic!("round {round}: no 413 while uploading: {e}"));
        assert_eq!(r.status, 413, "round {round}: {}", r.describe());
        c.wait_closed(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("round {round}: not closed after the 413: {e}"));
        uploader.join().unwrap();
    }
    assert_eq!(up.requests(), 0);
}

/// A simple client writes its whole request before it reads anything. When the gateway
/// refuses the body (413 on Content-Length), it must go on taking (and discarding) what
/// the client still sends for a while before it closes (a lingering close), or the
/// client's own write fails on a reset and it never reads the 413.
#[test]
fn client_that_writes_everything_first_still_reads_its_413() {
    let up = TestUpstream::start("stable");
    let gw = start_gw(&up.addr_str(), &["--max-body-bytes", "1000"]);
    for round in 0..3 {
        let mut c = Client::connect(gw.addr()).unwrap();
        let body = vec![b'u'; 8 << 20];
        let mut raw = format!(
            "POST /echo HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        raw.extend_from_slice(&body);
        c.send(&raw)
            .unwrap_or_else(|e| panic!("round {round}: the upload failed: {e}"));
        let r = c
            .read_response(false)
            .unwrap_or_else(|e| panic!("round {round}: no 413: {e}"));
        assert_eq!(r.status, 413, "round {round}: {}", r.describe());
    }
    assert_eq!(up.requests(), 0);
}
