//! Request heads: parsed with `httparse` straight from the connection's read buffer,
//! checked against the framing rules of RFC 9112 (§6.1, §6.3, §11.2), and rewritten for
//! the upstream into a reused output buffer. Pure functions over `&[u8]`: no sockets, no
//! allocation, no per-header `String`.

use std::io::Write as _;
use std::net::IpAddr;

use super::ParseError;

/// Most header lines accepted in one head (431 above).
pub const MAX_HEADERS: usize = 128;

/// How a message body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    /// No body.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the sender closes the connection (responses only).
    UntilClose,
}

/// HTTP version of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0.
    Http10,
    /// HTTP/1.1.
    Http11,
}

/// What the proxy needs to know about a request once its head is parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHead {
    /// Bytes of the head, including the final empty line.
    pub head_len: usize,
    /// Client's HTTP version.
    pub version: Version,
    /// How the request body is delimited.
    pub body: BodyKind,
    /// The request is HEAD (its response has no body).
    pub is_head: bool,
    /// The method is idempotent (RFC 9110 §9.2.2), so it may be retried.
    pub idempotent: bool,
    /// The client wants the connection kept open after this exchange.
    pub keep_alive: bool,
    /// The client sent `Expect: 100-continue`.
    pub expect_continue: bool,
    /// The client asks to switch protocols (`Connection: upgrade` + `Upgrade`).
    pub upgrade: bool,
}

/// Whom the gateway serves, for the forwarding headers: the client's address, formatted
/// once per connection (formatting it per request cost ~1,000 instructions, 6% of the
/// user-space work of a small request, in a callgrind profile).
#[derive(Clone, Copy, Debug)]
pub struct Forwarding {
    /// The client's address as text, appended to `X-Forwarded-For`.
    ip: [u8; Self::MAX_IP],
    ip_len: u8,
    /// The client connection is TLS: `X-Forwarded-Proto: https`.
    https: bool,
}

impl Forwarding {
    /// Longest textual IP address (`ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255`).
    const MAX_IP: usize = 45;

    /// Formats `client_ip`; `https` when the client connection is TLS.
    pub fn new(client_ip: IpAddr, https: bool) -> Self {
        let mut ip = [0u8; Self::MAX_IP];
        let mut cursor = std::io::Cursor::new(&mut ip[..]);
        // Every address fits in MAX_IP bytes.
        let _ = write!(cursor, "{client_ip}");
        let ip_len = u8::try_from(cursor.position()).unwrap_or(0);
        Forwarding { ip, ip_len, https }
    }

    /// The client's address as text.
    pub fn client_ip(&self) -> &[u8] {
        &self.ip[..usize::from(self.ip_len)]
    }
}

/// A parsed, checked request head borrowing the read buffer.
#[derive(Debug)]
pub struct Request<'h, 'b> {
    /// Method token.
    pub method: &'b str,
    /// Origin-form path and query (absolute-form targets are reduced to it).
    pub path: &'b str,
    /// Host to route on, without port: the target's authority, else the Host header.
    pub host: Option<&'b [u8]>,
    /// The authority of an absolute-form target (`http://authority/path`), which
    /// replaces the Host header on the way upstream (RFC 9112 §3.2.2).
    pub authority: Option<&'b [u8]>,
    /// Every header line, as received.
    pub headers: &'h [httparse::Header<'b>],
    /// Framing and connection facts.
    pub head: RequestHead,
    facts: RequestFacts<'b>,
}

/// How the route and variant change the request on its way upstream.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rewrite<'a> {
    /// Put before the (stripped) path.
    pub path_prefix: &'a [u8],
    /// Bytes removed from the start of the path (the route's prefix when stripping).
    pub strip: usize,
    /// Headers added (replacing client headers of the same names).
    pub headers: &'a [(Vec<u8>, Vec<u8>)],
    /// `Host` sent upstream when the client sent none (HTTP/1.0 allows that; the
    /// upstream request is HTTP/1.1, which requires one): the first endpoint's address.
    pub fallback_host: Option<std::net::SocketAddr>,
}

/// Parses and checks the request head at the start of `buf`; `Ok(None)` while incomplete.
pub fn parse<'h, 'b>(
    buf: &'b [u8],
    max_head: usize,
    headers: &'h mut [httparse::Header<'b>; MAX_HEADERS],
) -> Result<Option<Request<'h, 'b>>, ParseError> {
    let mut req = httparse::Request::new(headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() >= max_head {
                return Err(if memchr_nl(buf) {
                    ParseError::HeadTooLarge
                } else {
                    ParseError::UriTooLong
                });
            }
            return Ok(None);
        }
        Err(e) => return Err(map_parse_error(e, buf)),
    };
    if head_len > max_head {
        return Err(ParseError::HeadTooLarge);
    }
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(ParseError::BadRequest("incomplete request line"));
    };
    let headers: &'h [httparse::Header<'b>] = req.headers;
    let version = if minor == 1 {
        Version::Http11
    } else {
        Version::Http10
    };
    if method == "CONNECT" {
        return Err(ParseError::NotImplemented("CONNECT is not supported"));
    }
    let (path, authority) = if target.starts_with('/') || (target == "*" && method == "OPTIONS") {
        (target, None)
    } else if let Some(rest) = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
    {
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        if end == 0 || !valid_host(&rest.as_bytes()[..end]) {
            return Err(ParseError::BadRequest("invalid request target"));
        }
        let path = &rest[end..];
        (
            if path.is_empty() { "/" } else { path },
            Some(&rest.as_bytes()[..end]),
        )
    } else {
        return Err(ParseError::BadRequest("invalid request target"));
    };

    let facts = RequestFacts::gather(headers, version)?;
    let body = facts.body()?;
    let keep_alive = match version {
        Version::Http11 => !facts.conn_close,
        Version::Http10 => facts.conn_keep_alive && !facts.conn_close,
    };
    // `Upgrade: h2c` (RFC 7540 §3.2, removed by RFC 9113) is not taken: the request is
    // answered over HTTP/1.1, as a server may ignore an upgrade (RFC 9110 §7.8); a stage
    // with `http2` takes h2c with prior knowledge instead.
    let upgrade = facts
        .upgrade
        .is_some_and(|u| !u.trim_ascii().eq_ignore_ascii_case(b"h2c"))
        && facts.conn_upgrade
        && version == Version::Http11;
    let host = authority.or(facts.host).map(strip_port);
    Ok(Some(Request {
        method,
        path,
        host,
        authority,
        headers,
        head: RequestHead {
            head_len,
            version,
            body,
            is_head: method == "HEAD",
            idempotent: matches!(
                method,
                "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
            ),
            keep_alive,
            expect_continue: facts.expect_continue,
            upgrade,
        },
        facts,
    }))
}

/// Writes the head to send upstream for `req` into `out` (cleared first): HTTP/1.1,
/// hop-by-hop headers removed, forwarding headers and the route's headers added.
pub fn write_upstream(
    req: &Request<'_, '_>,
    rw: &Rewrite<'_>,
    fwd: &Forwarding,
    out: &mut Vec<u8>,
) {
    out.clear();
    out.extend_from_slice(req.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(rw.path_prefix);
    let path = req.path.as_bytes().get(rw.strip..).unwrap_or_default();
    if !(path.starts_with(b"/") || path == b"*" && rw.path_prefix.is_empty()) {
        out.push(b'/');
    }
    out.extend_from_slice(path);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let connection = &req.facts.connection[..req.facts.connections];
    for h in req.headers {
        if is_hop_by_hop(h.name, connection)
            || is_rewritten(h.name)
            || (req.authority.is_some() && h.name.eq_ignore_ascii_case("host"))
            || rw
                .headers
                .iter()
                .any(|(n, _)| h.name.as_bytes().eq_ignore_ascii_case(n))
        {
            continue;
        }
        write_header(out, h.name.as_bytes(), h.value);
    }
    match (req.authority, req.facts.host, rw.fallback_host) {
        (Some(authority), _, _) => write_header(out, b"host", authority),
        (None, None, Some(addr)) => {
            // Writes into a Vec cannot fail; only HTTP/1.0 requests without Host get here.
            let _ = write!(out, "host: {addr}\r\n");
        }
        _ => {}
    }
    write_framing(out, req.facts.chunked, req.facts.content_length);
    out.extend_from_slice(b"x-forwarded-for: ");
    let mut any = false;
    for h in req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("x-forwarded-for"))
    {
        if any {
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(h.value);
        any = true;
    }
    if any {
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(fwd.client_ip());
    out.extend_from_slice(if fwd.https {
        b"\r\nx-forwarded-proto: https\r\n".as_slice()
    } else {
        b"\r\nx-forwarded-proto: http\r\n".as_slice()
    });
    for (name, value) in rw.headers {
        write_header(out, name, value);
    }
    if let (true, Some(proto)) = (req.head.upgrade, req.facts.upgrade) {
        out.extend_from_slice(b"connection: upgrade\r\n");
        write_header(out, b"upgrade", proto);
    }
    out.extend_from_slice(b"\r\n");
}

/// `host[:port]` or `[v6]:port` without the port.
fn strip_port(host: &[u8]) -> &[u8] {
    let host = host.trim_ascii();
    if host.starts_with(b"[") {
        return host
            .iter()
            .position(|&b| b == b']')
            .map_or(host, |i| &host[..=i]);
    }
    host.iter()
        .rposition(|&b| b == b':')
        .map_or(host, |i| &host[..i])
}

/// Facts collected from the header lines in one pass, before anything is written.
#[derive(Debug)]
struct RequestFacts<'h> {
    content_length: Option<u64>,
    chunked: bool,
    transfer_encoding: bool,
    /// A transfer coding other than chunked (the gateway relays only chunked).
    other_coding: bool,
    conn_close: bool,
    conn_keep_alive: bool,
    conn_upgrade: bool,
    upgrade: Option<&'h [u8]>,
    expect_continue: bool,
    /// `Connection` header values (their tokens name more hop-by-hop headers).
    connection: [&'h [u8]; 8],
    connections: usize,
    host: Option<&'h [u8]>,
}

impl<'h> RequestFacts<'h> {
    fn gather(headers: &[httparse::Header<'h>], version: Version) -> Result<Self, ParseError> {
        let mut f = RequestFacts {
            content_length: None,
            chunked: false,
            transfer_encoding: false,
            other_coding: false,
            conn_close: false,
            conn_keep_alive: false,
            conn_upgrade: false,
            upgrade: None,
            expect_continue: false,
            connection: [&[]; 8],
            connections: 0,
            host: None,
        };
        let mut hosts = 0;
        let mut connections = 0;
        for h in headers {
            let name = h.name;
            if name.eq_ignore_ascii_case("content-length") {
                let n = parse_content_length(h.value)
                    .ok_or(ParseError::BadRequest("invalid Content-Length"))?;
                if f.content_length.is_some_and(|prev| prev != n) {
                    return Err(ParseError::BadRequest("conflicting Content-Length headers"));
                }
                f.content_length = Some(n);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                if version == Version::Http10 {
                    return Err(ParseError::BadRequest(
                        "Transfer-Encoding in an HTTP/1.0 request",
                    ));
                }
                f.transfer_encoding = true;
                for coding in tokens(h.value) {
                    if f.chunked {
                        return Err(ParseError::BadRequest("chunked is not the final coding"));
                    }
                    f.chunked = coding.eq_ignore_ascii_case(b"chunked");
                    f.other_coding |= !f.chunked;
                }
            } else if name.eq_ignore_ascii_case("host") {
                hosts += 1;
                if !valid_host(h.value) {
                    return Err(ParseError::BadRequest("invalid Host header"));
                }
                f.host = Some(h.value);
            } else if name.eq_ignore_ascii_case("connection") {
                if connections == f.connection.len() {
                    return Err(ParseError::BadRequest("too many Connection headers"));
                }
                f.connection[connections] = h.value;
                connections += 1;
                for t in tokens(h.value) {
                    f.conn_close |= t.eq_ignore_ascii_case(b"close");
                    f.conn_keep_alive |= t.eq_ignore_ascii_case(b"keep-alive");
                    f.conn_upgrade |= t.eq_ignore_ascii_case(b"upgrade");
                }
            } else if name.eq_ignore_ascii_case("upgrade") {
                f.upgrade = Some(h.value);
            } else if name.eq_ignore_ascii_case("expect") {
                if h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue") {
                    f.expect_continue = version == Version::Http11;
                } else {
                    return Err(ParseError::ExpectationFailed);
                }
            }
        }
        f.connections = connections;
        if hosts > 1 {
            return Err(ParseError::BadRequest("more than one Host header"));
        }
        if hosts == 0 && version == Version::Http11 {
            return Err(ParseError::BadRequest("missing Host header"));
        }
        Ok(f)
    }

    fn body(&self) -> Result<BodyKind, ParseError> {
        match (self.transfer_encoding, self.content_length) {
            (true, Some(_)) => Err(ParseError::BadRequest(
                "both Content-Length and Transfer-Encoding",
            )),
            (true, None) if self.chunked && self.other_coding => Err(ParseError::NotImplemented(
                "transfer codings other than chunked are not supported",
            )),
            (true, None) if self.chunked => Ok(BodyKind::Chunked),
            (true, None) => Err(ParseError::BadRequest(
                "final transfer coding is not chunked",
            )),
            (false, Some(0) | None) => Ok(BodyKind::None),
            (false, Some(n)) => Ok(BodyKind::Length(n)),
        }
    }
}

/// True when the request is a gRPC call: its content type is `application/grpc`, alone or
/// with a `+format` or parameters (gRPC over HTTP/2, `PROTOCOL-HTTP2.md`). gRPC-Web
/// (`application/grpc-web...`) is ordinary HTTP and is not one.
pub fn is_grpc(headers: &[httparse::Header<'_>]) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("content-type")
            && h.value.len() >= GRPC.len()
            && h.value[..GRPC.len()].eq_ignore_ascii_case(GRPC)
            && matches!(
                h.value.get(GRPC.len()),
                None | Some(b'+' | b';' | b' ' | b'\t')
            )
    })
}

/// Headers the gateway never forwards as received: hop-by-hop ones (RFC 9110 §7.6.1)
/// and every header named by a `Connection` header.
pub fn is_hop_by_hop(name: &str, connection: &[&[u8]]) -> bool {
    const FIXED: [&str; 6] = [
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "proxy-connection",
    ];
    if FIXED.iter().any(|h| name.eq_ignore_ascii_case(h))
        || name.len() > 6 && name.as_bytes()[..6].eq_ignore_ascii_case(b"proxy-")
    {
        return true;
    }
    connection
        .iter()
        .flat_map(|v| tokens(v))
        .any(|t| t.eq_ignore_ascii_case(name.as_bytes()))
}

/// Headers the gateway writes itself.
/// `uri-host [ ":" port ]` (RFC 9110 §7.2, RFC 3986 §3.2.2), possibly empty, with
/// optional whitespace around it: no userinfo, path, query, fragment or spaces inside.
fn valid_host(value: &[u8]) -> bool {
    value.trim_ascii().iter().all(|&b| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'%'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'['
                    | b']'
            )
    })
}

fn is_rewritten(name: &str) -> bool {
    name.eq_ignore_ascii_case("x-forwarded-for")
        || name.eq_ignore_ascii_case("x-forwarded-proto")
        || name.eq_ignore_ascii_case("expect")
        || name.eq_ignore_ascii_case("content-length")
        || name.eq_ignore_ascii_case("transfer-encoding")
}

/// Writes the body framing the gateway itself sends: `transfer-encoding: chunked`, or
/// `content-length` as one plain decimal (RFC 9112 §6.2-6.3), or nothing.
pub fn write_framing(out: &mut Vec<u8>, chunked: bool, content_length: Option<u64>) {
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    } else if let Some(n) = content_length {
        out.extend_from_slice(b"content-length: ");
        write_decimal(out, n);
        out.extend_from_slice(b"\r\n");
    }
}

/// `n` in decimal, without allocating.
pub fn write_decimal(out: &mut Vec<u8>, n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Writes `name: value\r\n`.
#[inline]
pub fn write_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Comma-separated list elements, trimmed, empty ones skipped (RFC 9110 §5.6.1).
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// A Content-Length value: digits only, or a list of identical digit strings.
pub fn parse_content_length(value: &[u8]) -> Option<u64> {
    let mut result = None;
    for part in value.split(|&b| b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = part
            .iter()
            .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
        if result.is_some_and(|r| r != n) {
            return None;
        }
        result = Some(n);
    }
    result
}

fn map_parse_error(e: httparse::Error, buf: &[u8]) -> ParseError {
    match e {
        httparse::Error::TooManyHeaders => ParseError::HeadTooLarge,
        httparse::Error::Version if is_other_http_version(buf) => ParseError::VersionNotSupported,
        httparse::Error::HeaderName => ParseError::BadRequest("invalid header name"),
        httparse::Error::HeaderValue => ParseError::BadRequest("invalid header value"),
        httparse::Error::NewLine => ParseError::BadRequest("invalid line ending"),
        httparse::Error::Token | httparse::Error::Version => {
            ParseError::BadRequest("invalid request line")
        }
        httparse::Error::Status => ParseError::BadRequest("malformed request"),
    }
}

/// True when the request line is three well-formed parts ending in `HTTP/d.d`, so the
/// only problem is the version number (505 rather than 400).
fn is_other_http_version(buf: &[u8]) -> bool {
    let line = buf
        .split(|&b| b == b'\n')
        .next()
        .unwrap_or_default()
        .trim_ascii_end();
    let mut parts = line.split(|&b| b == b' ');
    let (Some(_), Some(_), Some(v), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    matches!(v, [b'H', b'T', b'T', b'P', b'/', a, b'.', b] if a.is_ascii_digit() && b.is_ascii_digit())
}

fn memchr_nl(buf: &[u8]) -> bool {
    buf.contains(&b'\n')
}

#[cfg(test)]
mod tests;
