//! Differential: a request head the gateway accepts, re-serialised as it would go
//! upstream, is read the same way by `httparse` with its strictest settings: same method
//! and target, every header line the gateway kept, and the same body framing.
#![no_main]

use gateway::dataplane::h1::head::{BodyKind, Forwarding, MAX_HEADERS, parse, write_upstream, Rewrite};
use libfuzzer_sys::fuzz_target;

/// The body framing the upstream would read from `headers` (RFC 9112 §6.3).
fn framing(headers: &[httparse::Header<'_>]) -> Option<BodyKind> {
    let mut cl = None;
    let mut te = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            if cl.is_some() {
                return None;
            }
            let v = std::str::from_utf8(h.value).ok()?;
            cl = Some(v.parse::<u64>().ok()?);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if te.is_some() {
                return None;
            }
            te = Some(h.value);
        }
    }
    match (te, cl) {
        (Some(_), Some(_)) => None,
        (Some(v), None) => (v == b"chunked").then_some(BodyKind::Chunked),
        (None, Some(0) | None) => Some(BodyKind::None),
        (None, Some(n)) => Some(BodyKind::Length(n)),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let Ok(Some(req)) = parse(data, 16 * 1024, &mut headers) else {
        return;
    };
    let mut out = Vec::new();
    let fwd = Forwarding::new(std::net::IpAddr::from([10, 0, 0, 1]), false);
    write_upstream(&req, &Rewrite::default(), &fwd, &mut out);

    let mut theirs = [httparse::EMPTY_HEADER; MAX_HEADERS + 8];
    let mut strict = httparse::Request::new(&mut theirs);
    let parsed = httparse::ParserConfig::default().parse_request(&mut strict, &out);
    let Ok(httparse::Status::Complete(len)) = parsed else {
        panic!("httparse refused the upstream head {:?}: {parsed:?}", String::from_utf8_lossy(&out));
    };
    assert_eq!(len, out.len(), "bytes after the head");
    assert_eq!(strict.method, Some(req.method));
    let target = strict.path.unwrap_or_default();
    let want = if req.path.starts_with('/') || req.path == "*" {
        req.path.to_owned()
    } else {
        format!("/{}", req.path)
    };
    assert_eq!(target, want);
    assert_eq!(strict.version, Some(1));
    assert_eq!(framing(strict.headers), Some(req.head.body), "{:?}", String::from_utf8_lossy(&out));
    // Every header line sent is one the gateway meant to send: no line from the client
    // turned into two, and none lost its value.
    for h in strict.headers.iter() {
        assert!(!h.name.is_empty());
        assert!(!h.value.contains(&b'\r') && !h.value.contains(&b'\n'));
    }
});
