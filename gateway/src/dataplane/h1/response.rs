//! Upstream response heads: parsed with `httparse`, framed per RFC 9112 §6.3, and
//! rewritten for the client (hop-by-hop headers removed, connection management and the
//! optional variant header added) into a reused output buffer.

use super::ParseError;
use super::head::{BodyKind, MAX_HEADERS, RequestHead, Version, is_hop_by_hop, tokens};
use super::head::{parse_content_length, write_framing, write_header};

/// What the proxy needs to know about an upstream response once its head is parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    /// Bytes of the head, including the final empty line.
    pub head_len: usize,
    /// Status code.
    pub status: u16,
    /// How the body is delimited on the upstream connection.
    pub body: BodyKind,
    /// Chunked body must be decoded for an HTTP/1.0 client.
    pub dechunk: bool,
    /// The client connection closes after this response.
    pub close_client: bool,
    /// The upstream connection may be reused after this response.
    pub reusable: bool,
    /// 101 Switching Protocols after an upgrade request: tunnel from here.
    pub upgraded: bool,
    /// The upstream's `Keep-Alive: timeout=N`: it closes the connection after N idle
    /// seconds.
    pub idle_timeout_s: Option<u32>,
}

/// Parses the upstream response head at the start of `buf`; `Ok(None)` while incomplete
/// (the caller's read buffer bounds the head: a full buffer without a head is a 502).
/// Interim (1xx) responses other than 101 are returned too; the caller skips them.
/// When complete and final, the head for the client is written into `out` (cleared first).
pub fn parse_response(
    buf: &[u8],
    req: &RequestHead,
    variant_header: Option<(&str, &str)>,
    out: &mut Vec<u8>,
) -> Result<Option<ResponseHead>, ParseError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(ParseError::BadResponse("malformed response head")),
    };
    let (Some(status), Some(minor)) = (resp.code, resp.version) else {
        return Err(ParseError::BadResponse("incomplete status line"));
    };
    if status < 100 {
        return Err(ParseError::BadResponse("invalid status code"));
    }
    let facts = ResponseFacts::gather(resp.headers, minor)?;
    let ResponseFacts {
        content_length,
        chunked,
        conn_close,
        idle_timeout_s,
        ..
    } = facts;
    if chunked && content_length.is_some() {
        return Err(ParseError::BadResponse(
            "both Content-Length and Transfer-Encoding",
        ));
    }
    let interim = (100..200).contains(&status);
    let upgraded = status == 101 && req.upgrade;
    if status == 101 && !req.upgrade {
        return Err(ParseError::BadResponse("101 without an upgrade request"));
    }
    let body = if interim || req.is_head || status == 204 || status == 304 {
        BodyKind::None
    } else if chunked {
        BodyKind::Chunked
    } else if let Some(n) = content_length {
        BodyKind::Length(n)
    } else {
        BodyKind::UntilClose
    };
    let dechunk = body == BodyKind::Chunked && req.version == Version::Http10;
    let close_client = !upgraded && (!req.keep_alive || body == BodyKind::UntilClose || dechunk);
    let reusable = !conn_close && !upgraded && body != BodyKind::UntilClose;
    let head = ResponseHead {
        head_len,
        status,
        body,
        dechunk,
        close_client,
        reusable,
        upgraded,
        idle_timeout_s,
    };
    if interim && !upgraded {
        return Ok(Some(head));
    }

    write_client_head(out, &resp, &head, &facts, req, variant_header);
    Ok(Some(head))
}

/// What the response's headers say about its framing and connection.
#[derive(Default)]
struct ResponseFacts<'b> {
    content_length: Option<u64>,
    chunked: bool,
    conn_close: bool,
    /// The `Connection` header values (their tokens name more hop-by-hop headers).
    connection: [&'b [u8]; 8],
    connections: usize,
    idle_timeout_s: Option<u32>,
}

impl<'b> ResponseFacts<'b> {
    /// Reads the framing and connection headers of an HTTP/1.`minor` response, refusing
    /// ambiguous framing (conflicting lengths, codings other than one `chunked`).
    fn gather(headers: &[httparse::Header<'b>], minor: u8) -> Result<Self, ParseError> {
        let mut f = ResponseFacts {
            conn_close: minor == 0,
            ..ResponseFacts::default()
        };
        let mut te = false;
        for h in headers {
            if h.name.eq_ignore_ascii_case("content-length") {
                let n = parse_content_length(h.value)
                    .ok_or(ParseError::BadResponse("invalid Content-Length"))?;
                if f.content_length.is_some_and(|p| p != n) {
                    return Err(ParseError::BadResponse(
                        "conflicting Content-Length headers",
                    ));
                }
                f.content_length = Some(n);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                // Like nginx: only `chunked`, once. Other codings (and `chunked` twice) are
                // framing this gateway does not relay, and ambiguous to anything downstream.
                let mut codings = tokens(h.value);
                f.chunked = !te
                    && codings
                        .next()
                        .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"))
                    && codings.next().is_none();
                if !f.chunked {
                    return Err(ParseError::BadResponse("unsupported Transfer-Encoding"));
                }
                te = true;
            } else if h.name.eq_ignore_ascii_case("keep-alive") {
                f.idle_timeout_s = keep_alive_timeout(h.value).or(f.idle_timeout_s);
            } else if h.name.eq_ignore_ascii_case("connection") {
                if f.connections < f.connection.len() {
                    f.connection[f.connections] = h.value;
                    f.connections += 1;
                }
                for t in tokens(h.value) {
                    if t.eq_ignore_ascii_case(b"close") {
                        f.conn_close = true;
                    } else if t.eq_ignore_ascii_case(b"keep-alive") && minor == 0 {
                        f.conn_close = false;
                    }
                }
            }
        }
        Ok(f)
    }

    fn connection(&self) -> &[&'b [u8]] {
        &self.connection[..self.connections]
    }
}

/// Writes the head the client gets: the upstream's status line and end-to-end headers,
/// the gateway's own framing (RFC 9110 §8.6, §6.4.1) and connection management, and the
/// optional variant header.
fn write_client_head(
    out: &mut Vec<u8>,
    resp: &httparse::Response<'_, '_>,
    head: &ResponseHead,
    facts: &ResponseFacts<'_>,
    req: &RequestHead,
    variant_header: Option<(&str, &str)>,
) {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    let status = head.status;
    let mut code = [0u8; 3];
    code[0] = b'0' + (status / 100 % 10) as u8;
    code[1] = b'0' + (status / 10 % 10) as u8;
    code[2] = b'0' + (status % 10) as u8;
    out.extend_from_slice(&code);
    out.push(b' ');
    out.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in resp.headers.iter() {
        if head.upgraded && h.name.eq_ignore_ascii_case("upgrade") {
            write_header(out, h.name.as_bytes(), h.value);
            continue;
        }
        if is_hop_by_hop(h.name, facts.connection())
            || h.name.eq_ignore_ascii_case("transfer-encoding")
            || h.name.eq_ignore_ascii_case("content-length")
        {
            continue;
        }
        write_header(out, h.name.as_bytes(), h.value);
    }
    // The framing is the gateway's own (RFC 9110 §8.6, §6.4.1): none for 1xx and 204 and
    // for a de-chunked (close-delimited) body; `chunked` only toward HTTP/1.1 clients;
    // else the upstream's length as one plain decimal (kept for HEAD and 304, where it
    // describes the representation).
    if !(head.upgraded || status == 204 || head.dechunk) {
        write_framing(
            out,
            facts.chunked && req.version == Version::Http11,
            facts.content_length,
        );
    }
    if let Some((name, value)) = variant_header {
        write_header(out, name.as_bytes(), value.as_bytes());
    }
    if head.upgraded {
        out.extend_from_slice(b"connection: upgrade\r\n");
    } else if head.close_client {
        out.extend_from_slice(b"connection: close\r\n");
    } else if req.version == Version::Http10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The `timeout` parameter of a `Keep-Alive` header value (`timeout=5, max=100`).
fn keep_alive_timeout(value: &[u8]) -> Option<u32> {
    tokens(value).find_map(|param| {
        let (name, v) = param.split_at(param.iter().position(|&b| b == b'=')?);
        if !name.trim_ascii().eq_ignore_ascii_case(b"timeout") {
            return None;
        }
        let v = v[1..].trim_ascii();
        if v.is_empty() || v.len() > 9 || !v.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(v.iter().fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0')))
    })
}

/// Appends a complete gateway-generated response for `err` to `out`.
pub fn write_error_response(
    out: &mut Vec<u8>,
    status: u16,
    reason: &str,
    detail: &str,
    close: bool,
    variant_header: Option<(&str, &str)>,
) {
    use std::io::Write as _;
    // Writes into a Vec cannot fail.
    let body_len = 3 + 1 + reason.len() + 2 + detail.len() + 1;
    let _ = write!(
        out,
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {body_len}\r\n"
    );
    if let Some((name, value)) = variant_header {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    let _ = write!(out, "\r\n{status} {reason}: {detail}\n");
}

/// Appends the gateway's own answer to a gRPC call it cannot serve: a trailers-only
/// response (HTTP 200, `content-type: application/grpc`, `grpc-status` and
/// `grpc-message`, no body), which is how gRPC says a call failed. `message` must be
/// printable ASCII without `%` (sent as is, which its percent-encoding allows).
pub fn write_grpc_error(
    out: &mut Vec<u8>,
    code: u8,
    message: &str,
    close: bool,
    variant_header: Option<(&str, &str)>,
) {
    use std::io::Write as _;
    debug_assert!(
        message
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'%')
    );
    let _ = write!(
        out,
        "HTTP/1.1 200 OK\r\ncontent-type: application/grpc\r\ngrpc-status: {code}\r\n\
         grpc-message: {message}\r\ncontent-length: 0\r\n"
    );
    if let Some((name, value)) = variant_header {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_error_is_a_trailers_only_response() {
        let mut out = Vec::new();
        write_grpc_error(
            &mut out,
            12,
            "no HTTP/2 upstream",
            true,
            Some(("x-v", "stable")),
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\ncontent-type: application/grpc\r\ngrpc-status: 12\r\n\
             grpc-message: no HTTP/2 upstream\r\ncontent-length: 0\r\nx-v: stable\r\n\
             connection: close\r\n\r\n"
        );
    }

    fn req(version: Version, keep_alive: bool, is_head: bool) -> RequestHead {
        RequestHead {
            head_len: 0,
            version,
            body: BodyKind::None,
            is_head,
            idempotent: true,
            keep_alive,
            expect_continue: false,
            upgrade: false,
        }
    }

    fn parse(raw: &[u8], r: &RequestHead) -> Result<(ResponseHead, String), ParseError> {
        let mut out = Vec::new();
        let h = parse_response(raw, r, Some(("x-variant", "canary")), &mut out)?.unwrap();
        Ok((h, String::from_utf8(out).unwrap()))
    }

    #[test]
    fn rewrites_and_frames() {
        let r11 = req(Version::Http11, true, false);
        let (h, out) = parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nServer: s\r\n\r\nok",
            &r11,
        )
        .unwrap();
        assert_eq!(h.body, BodyKind::Length(2));
        assert!(h.reusable && !h.close_client);
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nServer: s\r\ncontent-length: 2\r\nx-variant: canary\r\n\r\n"
        );
        assert_eq!(h.idle_timeout_s, Some(5));

        let (h, _) = parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            &r11,
        )
        .unwrap();
        assert_eq!(h.body, BodyKind::Chunked);
        let (h, out) = parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            &req(Version::Http10, false, false),
        )
        .unwrap();
        assert!(h.dechunk && h.close_client);
        assert!(!out.contains("chunked") && out.contains("connection: close"));
        let (h, _) = parse(b"HTTP/1.1 200 OK\r\n\r\n", &r11).unwrap();
        assert_eq!(h.body, BodyKind::UntilClose);
        assert!(h.close_client && !h.reusable);
        let (h, _) = parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
            &req(Version::Http11, true, true),
        )
        .unwrap();
        assert_eq!(h.body, BodyKind::None);
        for s in [204, 304] {
            let raw = format!("HTTP/1.1 {s} X\r\nContent-Length: 10\r\n\r\n");
            assert_eq!(parse(raw.as_bytes(), &r11).unwrap().0.body, BodyKind::None);
        }
        let (h, _) = parse(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", &r11).unwrap();
        assert!(!h.reusable);
        let (h, out) = parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
            &req(Version::Http10, true, false),
        )
        .unwrap();
        assert!(!h.close_client && out.contains("connection: keep-alive"));
    }

    /// The framing a client sees is the gateway's own, whatever the upstream wrote.
    #[test]
    fn framing_is_normalised() {
        let r11 = req(Version::Http11, true, false);
        let head = req(Version::Http11, true, true);
        let r10 = req(Version::Http10, true, false);
        for (raw, r, want) in [
            (
                "200 OK\r\nContent-Length: 5, 5",
                &r11,
                "content-length: 5\r\n",
            ),
            (
                "200 OK\r\nContent-Length: 5\r\ncontent-length: 05",
                &r11,
                "content-length: 5\r\n",
            ),
            (
                "200 OK\r\nTransfer-Encoding: Chunked",
                &r11,
                "transfer-encoding: chunked\r\n",
            ),
            ("200 OK\r\nTransfer-Encoding: chunked", &r10, ""),
            (
                "200 OK\r\nContent-Length: 9",
                &head,
                "content-length: 9\r\n",
            ),
            (
                "304 Not Modified\r\nContent-Length: 9",
                &r11,
                "content-length: 9\r\n",
            ),
            ("204 No Content\r\nContent-Length: 9", &r11, ""),
            ("200 OK", &r11, ""),
        ] {
            let raw = format!("HTTP/1.1 {raw}\r\n\r\n");
            let (_, out) = parse(raw.as_bytes(), r).unwrap_or_else(|e| panic!("{raw:?}: {e}"));
            let framing: String = out
                .split_inclusive("\r\n")
                .filter(|l| {
                    let l = l.to_ascii_lowercase();
                    l.starts_with("content-length") || l.starts_with("transfer-encoding")
                })
                .collect();
            assert_eq!(framing, want, "{raw:?} -> {out:?}");
        }
    }

    #[test]
    fn keep_alive_timeout_is_read() {
        let r11 = req(Version::Http11, true, false);
        for (value, want) in [
            ("timeout=5, max=100", Some(5)),
            ("max=3,timeout=1", Some(1)),
            ("Timeout = 2", Some(2)),
            ("timeout=abc", None),
            ("max=5", None),
        ] {
            let raw =
                format!("HTTP/1.1 200 OK\r\nKeep-Alive: {value}\r\nContent-Length: 0\r\n\r\n");
            let (h, out) = parse(raw.as_bytes(), &r11).unwrap();
            assert_eq!(h.idle_timeout_s, want, "{value}");
            assert!(!out.to_ascii_lowercase().contains("keep-alive"), "{out}");
        }
    }

    #[test]
    fn rejects_bad_responses() {
        let r11 = req(Version::Http11, true, false);
        for raw in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"garbage\r\n\r\n",
            b"HTTP/1.1 101 Switching\r\nUpgrade: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5 5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunked\r\n\r\n",
        ] {
            assert!(
                parse(raw, &r11).is_err(),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn error_response_is_well_formed() {
        let mut out = Vec::new();
        write_error_response(&mut out, 502, "Bad Gateway", "upstream refused", true, None);
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 502 Bad Gateway\r\n"));
        assert!(head.contains("connection: close"));
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(body.len(), len);
    }
}
