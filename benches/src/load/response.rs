//! Reading HTTP/1.1 responses as a client: the head (through `httparse`), then the body's
//! framing, so the connection can be reused for the next request. Pure functions over
//! buffered bytes; the connection loop feeds them.

use thiserror::Error;

/// Headers a response may carry before it is called malformed.
const MAX_HEADERS: usize = 64;

/// A response that broke HTTP/1.1 framing.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ParseError {
    /// `httparse` rejected the head.
    #[error("malformed response head: {0}")]
    Head(httparse::Error),
    /// Content-Length that is not a number, or two that differ.
    #[error("invalid Content-Length")]
    ContentLength,
    /// A chunk size line or chunk terminator that is not valid.
    #[error("invalid chunked framing")]
    Chunked,
    /// `101 Switching Protocols`: the load generator never asks for an upgrade.
    #[error("unexpected 101 Switching Protocols")]
    Upgrade,
}

/// How the body of a response is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    /// No body (1xx, 204, 304, or Content-Length: 0).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the server closes the connection.
    UntilClose,
}

/// Which deployment answered, by the variant header's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// `stable`.
    Stable,
    /// `canary`.
    Canary,
    /// Any other value.
    Other,
    /// The header was absent (or no header was asked for).
    Missing,
}

/// A parsed response head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// Status code.
    pub status: u16,
    /// Bytes of the head, blank line included.
    pub len: usize,
    /// Framing of the body that follows.
    pub body: Body,
    /// The server will close the connection after this response.
    pub close: bool,
    /// The variant header's value.
    pub seen: Seen,
}

/// Parses a response head at the start of `buf`. `Ok(None)`: more bytes are needed.
pub fn parse_head(buf: &[u8], variant_header: Option<&str>) -> Result<Option<Head>, ParseError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf).map_err(ParseError::Head)? {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial => return Ok(None),
    };
    let status = resp.code.unwrap_or(0);
    if status == 101 {
        return Err(ParseError::Upgrade);
    }
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut close = resp.version == Some(0);
    let mut seen = Seen::Missing;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or(ParseError::ContentLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(ParseError::ContentLength);
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = last_token(h.value).eq_ignore_ascii_case(b"chunked");
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|b| *b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    close = false;
                }
            }
        } else if variant_header.is_some_and(|v| h.name.eq_ignore_ascii_case(v)) {
            let value = h.value.trim_ascii();
            seen = if value.eq_ignore_ascii_case(b"stable") {
                Seen::Stable
            } else if value.eq_ignore_ascii_case(b"canary") {
                Seen::Canary
            } else {
                Seen::Other
            };
        }
    }
    let body = if (100..200).contains(&status) || status == 204 || status == 304 {
        Body::Empty
    } else if chunked {
        Body::Chunked
    } else {
        match length {
            Some(0) => Body::Empty,
            Some(n) => Body::Length(n),
            None => Body::UntilClose,
        }
    };
    Ok(Some(Head {
        status,
        len,
        body,
        close: close || body == Body::UntilClose,
        seen,
    }))
}

fn last_token(value: &[u8]) -> &[u8] {
    value
        .rsplit(|b| *b == b',')
        .next()
        .unwrap_or_default()
        .trim_ascii()
}

/// Skips over a chunked body as its bytes arrive; the data itself is discarded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Chunked {
    state: State,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum State {
    /// Expecting the first hex digit of a chunk size.
    #[default]
    Size,
    /// Inside the hex size: its value and number of digits so far.
    SizeDigits {
        value: u64,
        digits: u32,
    },
    /// Chunk extension: skipped until CR.
    Extension {
        value: u64,
    },
    SizeLf {
        value: u64,
    },
    Data {
        left: u64,
    },
    DataCr,
    DataLf,
    /// Start of a trailer line, or of the final CRLF.
    TrailerStart,
    TrailerLine,
    TrailerLf,
    FinalLf,
    Done,
}

impl Chunked {
    /// Consumes what it can of `data`; returns the bytes consumed and whether the body
    /// ended (the final CRLF included).
    pub fn feed(&mut self, data: &[u8]) -> Result<(usize, bool), ParseError> {
        let mut i = 0;
        while i < data.len() {
            if let State::Data { left } = self.state {
                let take = left.min((data.len() - i) as u64);
                i += take as usize;
                self.state = if take == left {
                    State::DataCr
                } else {
                    State::Data { left: left - take }
                };
                continue;
            }
            let b = data[i];
            i += 1;
            self.state = match (self.state, b) {
                (State::Size, _) => State::SizeDigits {
                    value: u64::from(hex(b).ok_or(ParseError::Chunked)?),
                    digits: 1,
                },
                (State::SizeDigits { value, .. } | State::Extension { value }, b'\r') => {
                    State::SizeLf { value }
                }
                (State::SizeDigits { value, .. }, b';' | b' ' | b'\t')
                | (State::Extension { value }, _) => State::Extension { value },
                (State::SizeDigits { value, digits }, _) => {
                    let d = hex(b).ok_or(ParseError::Chunked)?;
                    if digits >= 15 {
                        return Err(ParseError::Chunked);
                    }
                    State::SizeDigits {
                        value: value << 4 | u64::from(d),
                        digits: digits + 1,
                    }
                }
                (State::SizeLf { value: 0 } | State::TrailerLf, b'\n') => State::TrailerStart,
                (State::SizeLf { value }, b'\n') => State::Data { left: value },
                (State::DataCr, b'\r') => State::DataLf,
                (State::DataLf, b'\n') => State::Size,
                (State::TrailerStart, b'\r') => State::FinalLf,
                (State::TrailerLine, b'\r') => State::TrailerLf,
                (State::TrailerStart | State::TrailerLine, _) => State::TrailerLine,
                (State::FinalLf, b'\n') => {
                    self.state = State::Done;
                    return Ok((i, true));
                }
                _ => return Err(ParseError::Chunked),
            };
        }
        Ok((i, self.state == State::Done))
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VH: Option<&str> = Some("x-canarygate-variant");

    #[test]
    fn content_length_and_variant() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-Canarygate-Variant: canary\r\n\r\nok\n";
        let h = parse_head(r, VH).expect("valid").expect("complete");
        assert_eq!(h.status, 200);
        assert_eq!(h.len, r.len() - 3);
        assert_eq!(h.body, Body::Length(3));
        assert!(!h.close);
        assert_eq!(h.seen, Seen::Canary);
        let h = parse_head(r, None).expect("valid").expect("complete");
        assert_eq!(h.seen, Seen::Missing);
    }

    #[test]
    fn partial_and_errors() {
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Le", VH), Ok(None));
        assert!(parse_head(b"HTTP/1.1 2x0 OK\r\n\r\n", VH).is_err());
        assert_eq!(
            parse_head(
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
                VH
            ),
            Err(ParseError::ContentLength)
        );
        assert_eq!(
            parse_head(b"HTTP/1.1 101 Switching\r\n\r\n", VH),
            Err(ParseError::Upgrade)
        );
    }

    #[test]
    fn framing_rules() {
        let body = |r: &[u8]| parse_head(r, VH).expect("valid").expect("complete");
        assert_eq!(
            body(b"HTTP/1.1 204 No\r\nContent-Length: 9\r\n\r\n").body,
            Body::Empty
        );
        let h = body(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert_eq!(h.body, Body::Chunked);
        let h = body(b"HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!((h.body, h.close), (Body::UntilClose, true));
        let h = body(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n");
        assert!(h.close);
        let h = body(b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\n");
        assert!(!h.close);
        let h = body(b"HTTP/1.1 503 Busy\r\nConnection: close\r\nContent-Length: 1\r\nx-canarygate-variant: blue\r\n\r\n");
        assert_eq!((h.status, h.close, h.seen), (503, true, Seen::Other));
    }

    #[test]
    fn chunked_in_one_piece_and_byte_by_byte() {
        let body = b"3;ext=1\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        let mut c = Chunked::default();
        assert_eq!(c.feed(body), Ok((body.len() - 4, true)));
        let mut c = Chunked::default();
        let mut done_at = None;
        for (i, b) in body.iter().enumerate() {
            let (n, done) = c.feed(std::slice::from_ref(b)).expect("valid");
            assert_eq!(n, 1);
            if done {
                done_at = Some(i + 1);
                break;
            }
        }
        assert_eq!(done_at, Some(body.len() - 4));
    }

    #[test]
    fn chunked_errors() {
        for bad in [
            &b"x\r\n"[..],
            b"3\r\nabcX",
            b"3\n",
            b"11111111111111111\r\n",
        ] {
            assert_eq!(
                Chunked::default().feed(bad),
                Err(ParseError::Chunked),
                "{bad:?}"
            );
        }
        let mut c = Chunked::default();
        assert_eq!(c.feed(b"0\r\n"), Ok((3, false)));
        assert_eq!(c.feed(b"\r\n"), Ok((2, true)));
    }
}
