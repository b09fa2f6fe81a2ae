//! HTTP/2 messages to HTTP/1.1 bytes and back (RFC 9113 §8.2.2, §8.3.1), as pure
//! functions. From a client's HTTP/2 stream: the request head the session parses, the
//! chunk framing of a body of unknown length, and the response head's fields as an
//! HTTP/2 header map. Toward an HTTP/2 upstream, the other way: the HTTP/2 request of
//! the head the session wrote, and the HTTP/1.1 head of the upstream's response.

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, request, response};

use crate::dataplane::h1::head::{is_grpc, is_hop_by_hop, parse_content_length};

/// How a message body is framed on the HTTP/1.1 side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// `Content-Length` bytes.
    Length(u64),
    /// Chunked: the length is not known in advance.
    Chunked,
}

/// The request's framing: its `content-length` when it has one (the h2 crate checks
/// the DATA frames against it), none when HEADERS ended the stream, else chunked.
pub fn request_framing(headers: &HeaderMap, end_stream: bool) -> Framing {
    if let Some(n) = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| parse_content_length(v.as_bytes()))
    {
        return Framing::Length(n);
    }
    if end_stream {
        Framing::None
    } else {
        Framing::Chunked
    }
}

/// Fields of an HTTP/2 request that never reach the HTTP/1.1 head as they came:
/// connection-specific ones (the h2 crate refuses most of them already), `host`
/// (`:authority` wins), `cookie` (joined into one line), the framing the gateway writes
/// itself, and `expect` (the body comes as the client sends it; no interim response is
/// needed to start it).
fn skipped_request_field(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "upgrade"
            | "te"
            | "host"
            | "cookie"
            | "content-length"
            | "expect"
            | "http2-settings"
    )
}

/// Writes the HTTP/1.1 head of an HTTP/2 request into `out`.
pub fn write_request_head(parts: &request::Parts, framing: Framing, out: &mut Vec<u8>) {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(if target.is_empty() {
        b"/"
    } else {
        target.as_bytes()
    });
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let host = parts
        .uri
        .authority()
        .map(|a| a.as_str().as_bytes())
        .or_else(|| {
            parts
                .headers
                .get(http::header::HOST)
                .map(HeaderValue::as_bytes)
        });
    if let Some(host) = host {
        field(out, b"host", host);
    }
    let mut cookies = parts.headers.get_all(http::header::COOKIE).iter();
    if let Some(first) = cookies.next() {
        out.extend_from_slice(b"cookie: ");
        out.extend_from_slice(first.as_bytes());
        // RFC 9113 §8.2.3: crumbs are joined with "; " for an HTTP/1.1 hop.
        for c in cookies {
            out.extend_from_slice(b"; ");
            out.extend_from_slice(c.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in &parts.headers {
        if !skipped_request_field(name) {
            field(out, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    match framing {
        Framing::None => {}
        Framing::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(n.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Writes a chunk-size line.
pub(crate) fn write_chunk_size(out: &mut Vec<u8>, size: usize) {
    out.extend_from_slice(format!("{size:x}\r\n").as_bytes());
}

/// Writes trailer fields (after the last chunk's size line, before the final CRLF).
pub(crate) fn write_trailers(trailers: &HeaderMap, out: &mut Vec<u8>) {
    for (name, value) in trailers {
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
}

/// The HTTP/2 fields of an HTTP/1.1 response head (connection-specific ones and those
/// its `Connection` names dropped, names lower-cased, fields HTTP/2 cannot carry
/// skipped) and its body framing.
pub(crate) fn response_headers(headers: &[httparse::Header<'_>]) -> (HeaderMap, Framing) {
    let mut connection: [&[u8]; 8] = [b""; 8];
    let mut n = 0;
    for h in headers {
        if h.name.eq_ignore_ascii_case("connection") && n < connection.len() {
            connection[n] = h.value;
            n += 1;
        }
    }
    let mut map = HeaderMap::with_capacity(headers.len());
    let mut framing = Framing::None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            framing = Framing::Chunked;
            continue;
        }
        if h.name.eq_ignore_ascii_case("content-length")
            && let Some(len) = parse_content_length(h.value)
        {
            framing = Framing::Length(len);
        }
        if is_hop_by_hop(h.name, &connection[..n]) {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) {
            map.append(name, value);
        }
    }
    (map, framing)
}

/// The HTTP/2 request for an HTTP/1.1 request head the gateway wrote for an upstream
/// (`scheme`: `http` or `https`), and how that head frames its body. `host` becomes
/// `:authority`; connection-specific fields go (RFC 9113 §8.2.2), and a gRPC call
/// gets `te: trailers`, which gRPC servers ask for. `Err`: the head cannot be sent as
/// HTTP/2 (why).
pub(crate) fn request_to_h2(
    head: &httparse::Request<'_, '_>,
    scheme: &'static str,
) -> Result<(http::Request<()>, Framing), &'static str> {
    let method = http::Method::from_bytes(head.method.unwrap_or("GET").as_bytes())
        .map_err(|_| "a method HTTP/2 cannot carry")?;
    let path = head.path.unwrap_or("/");
    let mut connection: [&[u8]; 8] = [b""; 8];
    let mut n = 0;
    let mut host = None;
    let mut framing = Framing::None;
    for h in head.headers.iter() {
        if h.name.eq_ignore_ascii_case("connection") && n < connection.len() {
            connection[n] = h.value;
            n += 1;
        } else if h.name.eq_ignore_ascii_case("host") {
            host = Some(h.value);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            framing = Framing::Chunked;
        } else if h.name.eq_ignore_ascii_case("content-length")
            && framing == Framing::None
            && let Some(len) = parse_content_length(h.value)
        {
            framing = Framing::Length(len);
        }
    }
    let mut uri = http::Uri::builder().scheme(scheme);
    if let Some(h) = host.filter(|h| !h.is_empty()) {
        uri = uri.authority(h);
    }
    let uri = if path == "*" {
        // OPTIONS * (RFC 9113 §8.3.1): the path pseudo-field is "*".
        uri.path_and_query("*")
    } else {
        uri.path_and_query(path)
    }
    .build()
    .map_err(|_| "a host or target HTTP/2 cannot carry")?;
    let mut headers = HeaderMap::with_capacity(head.headers.len() + 1);
    for h in head.headers.iter() {
        if h.name.eq_ignore_ascii_case("host")
            || h.name.eq_ignore_ascii_case("transfer-encoding")
            || is_hop_by_hop(h.name, &connection[..n])
        {
            continue;
        }
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| "a field name HTTP/2 cannot carry")?;
        let value =
            HeaderValue::from_bytes(h.value).map_err(|_| "a field value HTTP/2 cannot carry")?;
        headers.append(name, value);
    }
    if is_grpc(head.headers) {
        headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
    }
    let mut req = http::Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    Ok((req, framing))
}

/// Writes the HTTP/1.1 head of an upstream's HTTP/2 response into `out`; returns how
/// the bytes after it frame the body: none when the response has none (`no_body`: the
/// request was HEAD, or the status allows none) or HEADERS ended the stream
/// (`content-length: 0` is then written when no length was given), its
/// `content-length` when it has one, else chunked (so trailers can follow).
pub(crate) fn write_response_head(
    parts: &response::Parts,
    no_body: bool,
    end_stream: bool,
    out: &mut Vec<u8>,
) -> Framing {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut length = None;
    for (name, value) in &parts.headers {
        if matches!(
            name.as_str(),
            "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "upgrade"
        ) {
            continue;
        }
        if name == http::header::CONTENT_LENGTH {
            match parse_content_length(value.as_bytes()) {
                Some(n) if length.is_none() => length = Some(n),
                // A second or unreadable length: the h1 side sees none of them.
                _ => continue,
            }
        }
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    let framing = if no_body || parts.status.is_informational() {
        Framing::None
    } else if let Some(n) = length {
        Framing::Length(n)
    } else if end_stream {
        out.extend_from_slice(b"content-length: 0\r\n");
        Framing::None
    } else {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        Framing::Chunked
    };
    out.extend_from_slice(b"\r\n");
    framing
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(req: http::Request<()>) -> request::Parts {
        req.into_parts().0
    }

    #[test]
    fn a_request_head_takes_the_authority_and_joins_cookies() {
        let req = http::Request::builder()
            .method("POST")
            .uri("https://example.test:8443/a/b?c=d")
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .header("host", "other.test")
            .header("x-one", "1")
            .header("te", "trailers")
            .body(())
            .unwrap();
        let mut out = Vec::new();
        write_request_head(&parts(req), Framing::Chunked, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /a/b?c=d HTTP/1.1\r\nhost: example.test:8443\r\ncookie: a=1; b=2\r\n\
             x-one: 1\r\ntransfer-encoding: chunked\r\n\r\n"
        );
    }

    #[test]
    fn framing_follows_content_length_then_end_of_stream() {
        let mut h = HeaderMap::new();
        assert_eq!(request_framing(&h, true), Framing::None);
        assert_eq!(request_framing(&h, false), Framing::Chunked);
        h.insert("content-length", HeaderValue::from_static("12"));
        assert_eq!(request_framing(&h, false), Framing::Length(12));
        let req = http::Request::builder()
            .uri("/up")
            .header("content-length", "12")
            .body(())
            .unwrap();
        let mut out = Vec::new();
        write_request_head(&parts(req), Framing::Length(12), &mut out);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches("content-length").count(), 1, "{text}");
    }

    #[test]
    fn response_fields_lose_connection_specific_ones() {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut r = httparse::Response::new(&mut headers);
        let raw = b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n\
            Keep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\nX-Kept: yes\r\n\
            Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n";
        r.parse(raw).unwrap();
        let (map, framing) = response_headers(r.headers);
        assert_eq!(framing, Framing::Chunked);
        assert_eq!(map.len(), 3, "{map:?}");
        assert_eq!(map["x-kept"], "yes");
        assert_eq!(map.get_all("set-cookie").iter().count(), 2);
    }

    fn h1_request(raw: &[u8], f: impl FnOnce(&httparse::Request<'_, '_>)) {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut r = httparse::Request::new(&mut headers);
        assert!(r.parse(raw).unwrap().is_complete());
        f(&r);
    }

    #[test]
    fn an_upstream_request_takes_host_as_authority_and_loses_hop_by_hop_fields() {
        h1_request(
            b"POST /svc/Method?x=1 HTTP/1.1\r\nHost: api.test:50051\r\n\
              Connection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: 5\r\n\
              Content-Type: application/grpc\r\nTransfer-Encoding: chunked\r\n\
              X-Kept: yes\r\n\r\n",
            |r| {
                let (req, framing) = request_to_h2(r, "http").unwrap();
                assert_eq!(framing, Framing::Chunked);
                assert_eq!(req.method(), http::Method::POST);
                assert_eq!(
                    req.uri().to_string(),
                    "http://api.test:50051/svc/Method?x=1"
                );
                let names: Vec<&str> = req.headers().keys().map(http::HeaderName::as_str).collect();
                assert_eq!(names, ["content-type", "x-kept", "te"], "{names:?}");
                assert_eq!(req.headers()["te"], "trailers");
            },
        );
        h1_request(
            b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 7\r\n\r\n",
            |r| {
                let (req, framing) = request_to_h2(r, "https").unwrap();
                assert_eq!(framing, Framing::Length(7));
                assert_eq!(req.headers()["content-length"], "7");
                assert!(req.headers().get("te").is_none());
            },
        );
        h1_request(b"GET / HTTP/1.1\r\nHost: bad host\r\n\r\n", |r| {
            assert!(request_to_h2(r, "http").is_err());
        });
    }

    #[test]
    fn an_upstream_response_head_is_framed_for_http1() {
        let head = |status: u16, fields: &[(&str, &str)], no_body: bool, end: bool| {
            let mut b = http::Response::builder().status(status);
            for (k, v) in fields {
                b = b.header(*k, *v);
            }
            let parts = b.body(()).unwrap().into_parts().0;
            let mut out = Vec::new();
            let framing = write_response_head(&parts, no_body, end, &mut out);
            (String::from_utf8(out).unwrap(), framing)
        };
        let (text, framing) = head(200, &[("content-type", "application/grpc")], false, false);
        assert_eq!(framing, Framing::Chunked);
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\ncontent-type: application/grpc\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        let (text, framing) = head(404, &[("content-length", "9")], false, false);
        assert_eq!(framing, Framing::Length(9));
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\ncontent-length: 9\r\n"));
        // Trailers-only (gRPC): HEADERS ended the stream.
        let (text, framing) = head(200, &[("grpc-status", "5")], false, true);
        assert_eq!(framing, Framing::None);
        assert!(
            text.ends_with("grpc-status: 5\r\ncontent-length: 0\r\n\r\n"),
            "{text}"
        );
        let (text, framing) = head(204, &[], true, false);
        assert_eq!(framing, Framing::None);
        assert_eq!(text, "HTTP/1.1 204 No Content\r\n\r\n");
        let (_, framing) = head(200, &[("content-length", "5")], true, false);
        assert_eq!(framing, Framing::None, "HEAD");
    }
}
