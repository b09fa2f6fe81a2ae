use super::*;
use crate::dataplane::error::ProxyError;

/// Result of looking at the bytes received so far (what the tests check).
#[derive(Debug)]
enum Parsed {
    /// The head is not complete yet.
    Partial,
    /// The head is complete; `out` holds the head to send upstream.
    Complete(RequestHead),
}

/// Parses the request head at the start of `buf` and, when it is complete and valid,
/// writes the head to send upstream, unchanged by any route, into `out`.
fn parse_request(
    buf: &[u8],
    max_head: usize,
    fwd: Forwarding,
    out: &mut Vec<u8>,
) -> Result<Parsed, ParseError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    match super::parse(buf, max_head, &mut headers)? {
        None => Ok(Parsed::Partial),
        Some(req) => {
            write_upstream(&req, &Rewrite::default(), &fwd, out);
            Ok(Parsed::Complete(req.head))
        }
    }
}

fn parse(raw: &[u8]) -> Result<(RequestHead, String), ParseError> {
    let mut out = Vec::new();
    let fwd = Forwarding::new("10.0.0.7".parse().unwrap(), false);
    match parse_request(raw, 16 * 1024, fwd, &mut out)? {
        Parsed::Complete(h) => Ok((h, String::from_utf8(out).unwrap())),
        Parsed::Partial => panic!("partial"),
    }
}

fn status(raw: &[u8]) -> u16 {
    parse(raw)
        .err()
        .and_then(|e| ProxyError::from(e).status())
        .map_or(0, |s| s.0)
}

#[test]
fn strips_hop_by_hop_and_adds_forwarding() {
    let (h, out) = parse(
        b"GET /a?b HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\n\
          Keep-Alive: 5\r\nTE: trailers\r\nProxy-Authorization: p\r\nX-Forwarded-For: 1.2.3.4\r\n\
          X-Forwarded-Proto: https\r\nAccept: */*\r\n\r\n",
    )
    .unwrap();
    assert!(h.keep_alive && h.idempotent && !h.upgrade);
    assert_eq!(h.body, BodyKind::None);
    assert_eq!(
        out,
        "GET /a?b HTTP/1.1\r\nHost: x\r\nAccept: */*\r\nx-forwarded-for: 1.2.3.4, 10.0.0.7\r\n\
         x-forwarded-proto: http\r\n\r\n"
    );
}

#[test]
fn tls_connections_forward_https_whatever_the_client_claims() {
    let mut out = Vec::new();
    let fwd = Forwarding::new("10.0.0.7".parse().unwrap(), true);
    parse_request(
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-Proto: http\r\nForwarded: proto=http\r\n\r\n",
        16 * 1024,
        fwd,
        &mut out,
    )
    .unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains("\r\nx-forwarded-proto: https\r\n"), "{out}");
    assert!(!out.contains("X-Forwarded-Proto: http"), "{out}");
    // Forwarded is the client's business and passes untouched.
    assert!(out.contains("Forwarded: proto=http\r\n"), "{out}");
}

#[test]
fn framing_rules() {
    let (h, _) = parse(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n").unwrap();
    assert_eq!(h.body, BodyKind::Length(5));
    let (h, out) =
        parse(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
    assert_eq!(h.body, BodyKind::Chunked);
    assert!(out.contains("transfer-encoding: chunked\r\n"));
    assert_eq!(
        status(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
        501
    );
    let (h, _) = parse(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 7, 7\r\n\r\n").unwrap();
    assert_eq!(h.body, BodyKind::Length(7));
    assert_eq!(status(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"), 400);
    assert_eq!(
        status(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
        400
    );
    assert_eq!(
        status(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 2\r\n\r\n"),
        400
    );
    assert_eq!(
        status(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"),
        400
    );
    assert_eq!(
        status(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n"),
        400
    );
    assert_eq!(
        status(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"),
        400
    );
    assert_eq!(
        status(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
        400
    );
    assert_eq!(status(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"), 400);
    assert_eq!(
        status(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
        400
    );
}

/// Each framing header the client wrote is replaced by the gateway's own form.
#[test]
fn framing_is_normalised() {
    for (raw, want) in [
        // A list of identical lengths becomes one plain decimal.
        ("Content-Length: 5, 5\r\n", "content-length: 5\r\n"),
        (
            "Content-Length: 5\r\nContent-Length: 5\r\n",
            "content-length: 5\r\n",
        ),
        ("Content-Length:  007 \r\n", "content-length: 7\r\n"),
        ("content-length: 0\r\n", "content-length: 0\r\n"),
        // Any spelling of chunked becomes the one form.
        (
            "Transfer-Encoding: CHUNKED\r\n",
            "transfer-encoding: chunked\r\n",
        ),
        (
            "Transfer-Encoding: ,chunked, \r\n",
            "transfer-encoding: chunked\r\n",
        ),
        (
            "Transfer-Encoding:\tchunked\r\n",
            "transfer-encoding: chunked\r\n",
        ),
    ] {
        let (_, out) = parse(format!("POST / HTTP/1.1\r\nHost: x\r\n{raw}\r\n").as_bytes())
            .unwrap_or_else(|e| panic!("{raw:?}: {e}"));
        let framing: Vec<&str> = out
            .split("\r\n")
            .filter(|l| {
                let l = l.to_ascii_lowercase();
                l.starts_with("content-length") || l.starts_with("transfer-encoding")
            })
            .collect();
        assert_eq!(framing.join("\r\n") + "\r\n", want, "{raw:?} -> {out:?}");
    }
    // No body, no framing header.
    let (_, out) = parse(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(!out.contains("content-length") && !out.contains("transfer-encoding"));
}

#[test]
fn malformed_heads() {
    assert_eq!(status(b"GET / HTTP/1.1\r\n\r\n"), 400, "missing host");
    assert_eq!(status(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 400);
    assert_eq!(
        status(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n  folded\r\n\r\n"),
        400,
        "obs-fold"
    );
    assert_eq!(
        status(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n"),
        400,
        "bare CR"
    );
    assert_eq!(
        status(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n"),
        400,
        "NUL"
    );
    assert_eq!(
        status(b"GET / HTTP/1.1\r\nHost : a\r\n\r\n"),
        400,
        "space before colon"
    );
    assert_eq!(status(b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    assert_eq!(status(b"GET nopath HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    assert_eq!(status(b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    assert_eq!(status(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n"), 505);
    assert_eq!(status(b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n"), 501);
    assert_eq!(
        status(b"GET / HTTP/1.1\r\nHost: a\r\nExpect: magic\r\n\r\n"),
        417
    );
}

#[test]
fn versions_and_keep_alive() {
    let (h, _) = parse(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    assert!(!h.keep_alive);
    let (h, _) = parse(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").unwrap();
    assert!(h.keep_alive);
    let (h, _) = parse(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").unwrap();
    assert!(!h.keep_alive);
    let (h, _) = parse(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    assert!(h.is_head);
    let (h, _) = parse(b"POST / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    assert!(!h.idempotent);
}

#[test]
fn upgrade_and_expect() {
    let (h, out) = parse(
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Key: k\r\n\r\n",
    )
    .unwrap();
    assert!(h.upgrade);
    assert!(out.contains("connection: upgrade\r\nupgrade: websocket\r\n"));
    assert!(out.contains("Sec-WebSocket-Key: k\r\n"));
    // curl --http2 on cleartext: the h2c upgrade is ignored, the request stays HTTP/1.1.
    let (h, out) = parse(
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\n\
          Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n",
    )
    .unwrap();
    assert!(!h.upgrade);
    let lower = out.to_ascii_lowercase();
    assert!(
        !lower.contains("upgrade") && !lower.contains("http2-settings"),
        "{out}"
    );
    let (h, out) =
        parse(b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
            .unwrap();
    assert!(h.expect_continue);
    assert!(!out.to_ascii_lowercase().contains("expect"));
}

#[test]
fn limits() {
    let mut out = Vec::new();
    let fwd = Forwarding::new("::1".parse().unwrap(), false);
    let big = [b"GET / HTTP/1.1\r\nHost: a\r\nX: ".as_slice(), &[b'a'; 200]].concat();
    assert!(matches!(
        parse_request(&big, 100, fwd, &mut out),
        Err(ParseError::HeadTooLarge)
    ));
    let long_line = [b"GET /".as_slice(), &[b'a'; 200]].concat();
    assert!(matches!(
        parse_request(&long_line, 100, fwd, &mut out),
        Err(ParseError::UriTooLong)
    ));
    assert!(matches!(
        parse_request(b"GET / HT", 100, fwd, &mut out),
        Ok(Parsed::Partial)
    ));
    let mut many = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    for i in 0..MAX_HEADERS {
        many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert!(matches!(
        parse_request(&many, 1 << 20, fwd, &mut out),
        Err(ParseError::HeadTooLarge)
    ));
}

#[test]
fn forwarding_formats_every_address_in_full() {
    for ip in [
        "10.0.0.7",
        "255.255.255.255",
        "::1",
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        "::ffff:255.255.255.255",
    ] {
        let addr: IpAddr = ip.parse().unwrap();
        assert_eq!(
            Forwarding::new(addr, false).client_ip(),
            addr.to_string().as_bytes()
        );
    }
}

#[test]
fn absolute_form_replaces_host_and_is_sent_in_origin_form() {
    let (_, out) =
        parse(b"GET http://api.example:8080/v1?q HTTP/1.1\r\nHost: other\r\nA: b\r\n\r\n").unwrap();
    assert!(out.starts_with("GET /v1?q HTTP/1.1\r\n"), "{out}");
    assert!(out.contains("host: api.example:8080\r\n"), "{out}");
    assert!(!out.contains("other"), "{out}");
    assert_eq!(
        status(b"GET http://user@api.example/ HTTP/1.1\r\nHost: a\r\n\r\n"),
        400
    );
}

#[test]
fn host_must_be_a_host() {
    for ok in ["a", "a.example:80", "[::1]:8080", "10.0.0.1", ""] {
        let raw = format!("GET / HTTP/1.1\r\nHost: {ok}\r\n\r\n");
        assert!(parse(raw.as_bytes()).is_ok(), "{ok:?}");
    }
    for bad in ["u@a", "a b", "a/b", "a?b", "a#b"] {
        let raw = format!("GET / HTTP/1.1\r\nHost: {bad}\r\n\r\n");
        assert_eq!(status(raw.as_bytes()), 400, "{bad:?}");
    }
}

#[test]
fn http10_without_host_gets_the_upstream_as_host() {
    let raw = b"GET /x HTTP/1.0\r\nA: b\r\n\r\n";
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let req = super::parse(raw, 16 * 1024, &mut headers).unwrap().unwrap();
    let rw = Rewrite {
        fallback_host: Some("10.1.1.1:9000".parse().unwrap()),
        ..Rewrite::default()
    };
    let mut out = Vec::new();
    write_upstream(
        &req,
        &rw,
        &Forwarding::new("::1".parse().unwrap(), false),
        &mut out,
    );
    let out = String::from_utf8(out).unwrap();
    assert!(out.starts_with("GET /x HTTP/1.1\r\n"), "{out}");
    assert!(out.contains("host: 10.1.1.1:9000\r\n"), "{out}");
    // With a Host of its own, nothing is added.
    let raw = b"GET /x HTTP/1.0\r\nHost: mine\r\n\r\n";
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let req = super::parse(raw, 16 * 1024, &mut headers).unwrap().unwrap();
    let mut out = Vec::new();
    write_upstream(
        &req,
        &rw,
        &Forwarding::new("::1".parse().unwrap(), false),
        &mut out,
    );
    let out = String::from_utf8(out).unwrap();
    assert!(
        out.contains("Host: mine\r\n") && !out.contains("10.1.1.1"),
        "{out}"
    );
}

#[test]
fn grpc_is_told_by_its_content_type_and_grpc_web_is_not() {
    let is = |ct: &str| {
        is_grpc(&[
            httparse::Header {
                name: "te",
                value: b"trailers",
            },
            httparse::Header {
                name: "Content-Type",
                value: ct.as_bytes(),
            },
        ])
    };
    for yes in [
        "application/grpc",
        "application/grpc+proto",
        "Application/GRPC+json",
        "application/grpc; charset=utf-8",
    ] {
        assert!(is(yes), "{yes}");
    }
    for no in [
        "application/grpc-web",
        "application/grpc-web+proto",
        "application/grpcx",
        "application/json",
        "application/grp",
        "",
    ] {
        assert!(!is(no), "{no}");
    }
    assert!(!is_grpc(&[]));
}
