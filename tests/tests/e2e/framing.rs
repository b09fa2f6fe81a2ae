//! Framing the gateway forwards is framing it wrote itself: whatever the client or the
//! upstream sent (length lists, odd chunk sizes, extensions, trailers), the other side
//! receives one plain `content-length` or clean `chunked` framing, byte for byte as
//! listed in the README; what cannot be normalised is refused (400 toward clients, 502 for
//! upstream responses) and never relayed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use tests::{GatewayProc, TestUpstream};

use crate::start_gw;

/// An upstream that records the raw bytes of each connection (read until the gateway has
/// been quiet for 300 ms), then writes `response` and closes.
struct RawUpstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl RawUpstream {
    fn start(response: &'static [u8]) -> Self {
        Self::start_paced(response, b"")
    }

    /// Writes `first`, then `rest` 200 ms later.
    fn start_paced(first: &'static [u8], rest: &'static [u8]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { return };
                let record = Arc::clone(&record);
                thread::spawn(move || {
                    let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
                    let mut raw = Vec::new();
                    let mut buf = [0u8; 8192];
                    while let Ok(n @ 1..) = s.read(&mut buf) {
                        raw.extend_from_slice(&buf[..n]);
                    }
                    record
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(raw);
                    let _ = s.write_all(first);
                    if !rest.is_empty() {
                        thread::sleep(Duration::from_millis(200));
                        let _ = s.write_all(rest);
                    }
                });
            }
        });
        RawUpstream { addr, seen }
    }

    /// Everything received so far, connection after connection.
    fn received(&self) -> String {
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect::<Vec<_>>()
            .join("\n---\n")
    }
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";

/// Sends `raw`, returns everything the gateway answered until it closed.
fn exchange(gw: &GatewayProc, raw: &[u8]) -> String {
    let mut c = tests::tls::connect(gw.addr()).unwrap();
    c.tcp()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    c.write_all(raw).unwrap();
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The request body as the upstream received it (after the head).
fn body_of(received: &str) -> &str {
    received.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

#[test]
fn request_framing_reaches_the_upstream_normalised() {
    let cases: [(&str, &str, &str, &str); 5] = [
        ("length list", "Content-Length: 5, 5\r\n", "hello", "hello"),
        (
            "repeated length with leading zeros",
            "Content-Length: 05\r\nContent-Length: 5\r\n",
            "hello",
            "hello",
        ),
        (
            "upper-case hex, leading zeros, extensions",
            "Transfer-Encoding: chunked\r\n",
            "000A;name=\"v\"\r\n0123456789\r\n3 ;x\r\nabc\r\n0;last\r\n\r\n",
            "a\r\n0123456789\r\n3\r\nabc\r\n0\r\n\r\n",
        ),
        (
            "trailers: allowed kept, framing/routing/auth dropped",
            "Transfer-Encoding: chunked\r\n",
            "2\r\nhi\r\n0\r\nX-Checksum:  abc \r\nContent-Length: 99\r\nHost: evil\r\nAuthorization: Basic eA==\r\n\r\n",
            "2\r\nhi\r\n0\r\nX-Checksum: abc\r\n\r\n",
        ),
        (
            "TE spelled oddly",
            "Transfer-Encoding: CHUNKED\r\n",
            "2\r\nhi\r\n0\r\n\r\n",
            "2\r\nhi\r\n0\r\n\r\n",
        ),
    ];
    for (name, framing, body, want) in cases {
        let up = RawUpstream::start(OK);
        let gw = start_gw(&up.addr.to_string(), &[]);
        let raw =
            format!("POST /f HTTP/1.1\r\nHost: a\r\n{framing}Connection: close\r\n\r\n{body}");
        let answer = exchange(&gw, raw.as_bytes());
        assert!(answer.starts_with("HTTP/1.1 200"), "{name}: {answer}");
        let got = up.received();
        let head = got
            .split("\r\n\r\n")
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let framing_lines: Vec<&str> = head
            .lines()
            .filter(|l| l.starts_with("content-length") || l.starts_with("transfer-encoding"))
            .collect();
        let want_framing = if framing.starts_with("Transfer") {
            vec!["transfer-encoding: chunked"]
        } else {
            vec!["content-length: 5"]
        };
        assert_eq!(framing_lines, want_framing, "{name}: upstream got {got:?}");
        assert_eq!(body_of(&got), want, "{name}: upstream got {got:?}");
    }
}

#[test]
fn framing_that_cannot_be_normalised_is_refused() {
    let cases = [
        ("whitespace after a chunk size", "5 \r\nhello\r\n0\r\n\r\n"),
        ("tab after a chunk size", "5\t\r\nhello\r\n0\r\n\r\n"),
        // The last chunk lacks its final CRLF; what follows is the next request, which an
        // upstream reading the chunked body differently would take as a request.
        (
            "last chunk without its final CRLF, then a request",
            "0\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
        ),
        ("folded trailer", "0\r\nX-A: 1\r\n continued\r\n\r\n"),
        ("bare LF after the size", "5\nhello\r\n0\r\n\r\n"),
    ];
    for (name, body) in cases {
        let up = TestUpstream::start("stable");
        let gw = start_gw(&up.addr_str(), &[]);
        let raw =
            format!("POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{body}");
        let answer = exchange(&gw, raw.as_bytes());
        assert!(answer.starts_with("HTTP/1.1 400"), "{name}: {answer}");
        assert_eq!(up.requests(), 0, "{name}: the upstream took a request");
        assert!(!answer.contains("smuggled"), "{name}: {answer}");
    }
}

#[test]
fn response_framing_reaches_the_client_normalised() {
    let cases: [(&str, &'static [u8], &str); 3] = [
        (
            "length list",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\nConnection: close\r\n\r\nok",
            "content-length: 2\r\n",
        ),
        (
            "chunked with extensions and leading zeros",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\nConnection: close\r\n\r\n0002;a=b\r\nok\r\n0\r\nX-T: 1\r\nSet-Cookie: a=b\r\n\r\n",
            "transfer-encoding: chunked\r\n",
        ),
        (
            "HEAD-like 304 keeps its length",
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 0010\r\nConnection: close\r\n\r\n",
            "content-length: 10\r\n",
        ),
    ];
    let want_bodies = ["ok", "2\r\nok\r\n0\r\nX-T: 1\r\n\r\n", ""];
    for ((name, response, framing), want_body) in cases.into_iter().zip(want_bodies) {
        let up = RawUpstream::start(response);
        let gw = start_gw(&up.addr.to_string(), &[]);
        let answer = exchange(&gw, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        let lower = format!("{}\r\n", head.to_ascii_lowercase());
        let framing_lines: String = lower
            .split_inclusive("\r\n")
            .filter(|l| l.starts_with("content-length") || l.starts_with("transfer-encoding"))
            .collect();
        assert_eq!(framing_lines, framing, "{name}: {answer:?}");
        assert_eq!(body, want_body, "{name}: {answer:?}");
    }
}

#[test]
fn ambiguous_upstream_responses_are_502_never_relayed() {
    let cases: [(&str, &'static [u8]); 5] = [
        (
            "both lengths",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nSMUGG\r\n0\r\n\r\n",
        ),
        (
            "differing lengths",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nSMUGGL",
        ),
        (
            "unsupported coding",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nSMUGG\r\n0\r\n\r\n",
        ),
        (
            "chunked twice",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nSMUGG\r\n0\r\n\r\n",
        ),
        (
            "signed length",
            b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nSMUGG",
        ),
    ];
    for (name, response) in cases {
        let up = RawUpstream::start(response);
        let gw = start_gw(&up.addr.to_string(), &[]);
        let answer = exchange(
            &gw,
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        );
        assert!(answer.starts_with("HTTP/1.1 502"), "{name}: {answer:?}");
        assert!(!answer.contains("SMUGG"), "{name}: {answer:?}");
    }
    // A bad chunk line before anything was sent to the client: a 502 instead.
    let up = RawUpstream::start(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n5 x\r\nSMUGG\r\n0\r\n\r\n",
    );
    let gw = start_gw(&up.addr.to_string(), &[]);
    let answer = exchange(
        &gw,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer:?}");
    assert!(!answer.contains("SMUGG"), "{answer:?}");
    // A bad chunk line after part of the body went out: the client's connection ends
    // without a last chunk (so it knows the body is incomplete); the bad bytes never
    // reach it.
    let up = RawUpstream::start_paced(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n",
        b"5 x\r\nSMUGG\r\n0\r\n\r\n",
    );
    let gw = start_gw(&up.addr.to_string(), &[]);
    let answer = exchange(
        &gw,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(answer.ends_with("2\r\nok\r\n"), "{answer:?}");
}
