//! The HTTP/2 request to HTTP/1.1 head translation on arbitrary fields, as the h2 crate
//! would hand them over (names and values `http` accepts): the head written is exactly
//! one complete HTTP/1.1 head that the gateway's own parser either refuses or reads back
//! whole, nothing after it (no second request smuggled in) and framed as translated.
//!
//! Input: a flags byte (bit 0: HEADERS ended the stream), then NUL-separated method,
//! authority, path and query, and name/value pairs.
#![no_main]

use gateway::dataplane::h1::head::{BodyKind, MAX_HEADERS, parse};
use gateway::{H2Framing, h2_request_framing, h2_request_head};
use http::header::{HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut fields = rest.split(|&b| b == 0);
    let (Some(method), Some(authority), Some(path)) = (fields.next(), fields.next(), fields.next())
    else {
        return;
    };
    let Ok(method) = http::Method::from_bytes(method) else {
        return;
    };
    let mut uri = http::Uri::builder().scheme("https");
    if !authority.is_empty() {
        let Ok(authority) = http::uri::Authority::try_from(authority) else {
            return;
        };
        uri = uri.authority(authority);
    }
    let Ok(path) = http::uri::PathAndQuery::try_from(if path.is_empty() { b"/" } else { path })
    else {
        return;
    };
    let Ok(uri) = uri.path_and_query(path).build() else {
        return;
    };
    let Ok(req) = http::Request::builder().method(method).uri(uri).body(()) else {
        return;
    };
    let (mut parts, ()) = req.into_parts();
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            parts.headers.append(name, value);
        }
    }
    let framing = h2_request_framing(&parts.headers, flags & 1 != 0);
    let mut out = Vec::new();
    h2_request_head(&parts, framing, &mut out);
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    match parse(&out, 64 * 1024, &mut headers) {
        Ok(Some(r)) => {
            assert_eq!(
                r.head.head_len,
                out.len(),
                "more than one head in {:?}",
                String::from_utf8_lossy(&out)
            );
            let want = match framing {
                // `content-length: 0` is no body to the parser.
                H2Framing::None | H2Framing::Length(0) => BodyKind::None,
                H2Framing::Length(n) => BodyKind::Length(n),
                H2Framing::Chunked => BodyKind::Chunked,
            };
            assert_eq!(r.head.body, want, "{:?}", String::from_utf8_lossy(&out));
        }
        Ok(None) => panic!("incomplete head: {:?}", String::from_utf8_lossy(&out)),
        // Refused by the strict parser: the client gets a 400, which is safe.
        Err(_) => {}
    }
});
