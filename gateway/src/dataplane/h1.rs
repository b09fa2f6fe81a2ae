//! HTTP/1.x codecs: the bottom of the data plane, pure functions over `&[u8]`.
//!
//! [`head`] parses and checks request heads and writes the upstream's version of them;
//! [`response`] does the same for response heads toward the client and writes the
//! gateway's own answers; [`chunked`] decodes and re-frames chunked bodies; [`translate`] maps HTTP/2 messages to
//! HTTP/1.1 bytes and back. Nothing here
//! touches a socket, a clock or shared state, so everything is unit-tested and fuzzed
//! without a network (`fuzz/`), and benchmarked as the server calls it (`benches/`).

pub mod chunked;
pub mod head;
pub mod response;
pub mod translate;

/// A head the gateway will not relay, and why. The session turns it into the client's
/// answer (400, 414, 417, 431, 501, 505, or a 502 for an upstream's response head).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// 400: the request is malformed or ambiguous.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// 414: the request line is over the head limit.
    #[error("request line too long")]
    UriTooLong,
    /// 431: the head is over the limit.
    #[error("request header section too large")]
    HeadTooLarge,
    /// 417: an `Expect` value other than `100-continue`.
    #[error("unsupported expectation")]
    ExpectationFailed,
    /// 501: a method or coding the gateway does not relay.
    #[error("not implemented: {0}")]
    NotImplemented(&'static str),
    /// 505: an HTTP version other than 1.0 or 1.1.
    #[error("HTTP version not supported")]
    VersionNotSupported,
    /// 502: an upstream's response head is not valid HTTP/1.x.
    #[error("invalid upstream response: {0}")]
    BadResponse(&'static str),
}
