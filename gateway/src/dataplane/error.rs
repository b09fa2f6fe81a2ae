//! Every way a request can fail, which side caused it, and what the client is told.
//! The lower layers' own errors ([`ParseError`] from the codecs, [`ConnectError`] from
//! the upstream layer) convert into [`ProxyError`]; the session decides with it.
//!
//! Each error knows its side (downstream client, upstream, internal), the status the
//! gateway answers with (if the response has not started yet) and the metric it counts in.

use std::io;

use super::h1::ParseError;
use super::upstream::ConnectError;
use crate::metrics::{Reject, UpstreamFailure};

/// Which party a failure is attributed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// The client sent something wrong, too slowly or went away.
    Downstream,
    /// The upstream endpoint failed.
    Upstream,
}

/// A failed request.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyError {
    /// A head the codecs refused: the client's (400, 414, 417, 431, 501, 505) or the
    /// upstream's response head (502).
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// 408: the head did not arrive in time.
    #[error("request head timeout")]
    HeadTimeout,
    /// 413: the body is over the limit.
    #[error("request body too large")]
    BodyTooLarge,
    /// 404: no route of the stage takes the request (connection kept).
    #[error("no route")]
    NoRoute,
    /// A gRPC call on a route whose deployments speak HTTP/1.1: gRPC needs HTTP/2 to
    /// the upstream (trailers, full-duplex streams), so it is answered by the gateway
    /// with `grpc-status` 12 (UNIMPLEMENTED) rather than sent where it cannot work.
    #[error("gRPC call to an HTTP/1.1 upstream")]
    GrpcNeedsHttp2,
    /// 404: no route, and the request has a body or asks to close (connection closed).
    #[error("no route")]
    NoRouteClose,
    /// The client closed or reset its connection; nobody to answer.
    #[error("client went away: {0}")]
    ClientGone(io::Error),
    /// The client stopped sending its body.
    #[error("client body timeout")]
    ClientBodyTimeout,
    /// 502: connecting to the upstream failed.
    #[error("upstream connect failed: {0}")]
    Connect(io::Error),
    /// 502: the TLS handshake with the upstream failed; the detail says why.
    #[error("upstream TLS handshake failed: {0}")]
    UpstreamTls(&'static str),
    /// 504: connecting to the upstream took too long.
    #[error("upstream connect timeout")]
    ConnectTimeout,
    /// 503: every endpoint of the deployment is draining or in maintenance.
    #[error("no endpoint available")]
    NoEndpoint,
    /// 502: the upstream closed or reset the connection before a complete response.
    #[error("upstream closed the connection: {0}")]
    UpstreamClosed(&'static str),
    /// A reused (pooled) connection turned out closed before any response byte came:
    /// the upstream closed it while idle. `sent`: the request head had been written.
    #[error("upstream closed the reused connection (request sent: {sent})")]
    Stale {
        /// Whether the request head was written before the close showed.
        sent: bool,
    },
    /// 504: the upstream did not answer in time.
    #[error("upstream response timeout")]
    ResponseTimeout,
}

impl ProxyError {
    /// 400 for a request the gateway will not relay as framed.
    pub(crate) fn bad_request(why: &'static str) -> ProxyError {
        ProxyError::Parse(ParseError::BadRequest(why))
    }

    /// 502 for an upstream response the gateway will not relay as framed.
    pub(crate) fn bad_response(why: &'static str) -> ProxyError {
        ProxyError::Parse(ParseError::BadResponse(why))
    }

    /// Who caused it.
    pub(crate) fn side(&self) -> Side {
        match self {
            ProxyError::Connect(_)
            | ProxyError::UpstreamTls(_)
            | ProxyError::ConnectTimeout
            | ProxyError::NoEndpoint
            | ProxyError::UpstreamClosed(_)
            | ProxyError::Stale { .. }
            | ProxyError::ResponseTimeout
            | ProxyError::Parse(ParseError::BadResponse(_)) => Side::Upstream,
            _ => Side::Downstream,
        }
    }

    /// Status and reason phrase to answer with, or `None` when nobody can be answered.
    pub(crate) fn status(&self) -> Option<(u16, &'static str)> {
        Some(match self {
            ProxyError::Parse(e) => match e {
                ParseError::BadRequest(_) => (400, "Bad Request"),
                ParseError::UriTooLong => (414, "URI Too Long"),
                ParseError::HeadTooLarge => (431, "Request Header Fields Too Large"),
                ParseError::ExpectationFailed => (417, "Expectation Failed"),
                ParseError::NotImplemented(_) => (501, "Not Implemented"),
                ParseError::VersionNotSupported => (505, "HTTP Version Not Supported"),
                ParseError::BadResponse(_) => (502, "Bad Gateway"),
            },
            ProxyError::NoRoute | ProxyError::NoRouteClose => (404, "Not Found"),
            // gRPC carries its failures in `grpc-status`, over HTTP 200.
            ProxyError::GrpcNeedsHttp2 => (200, "OK"),
            ProxyError::HeadTimeout | ProxyError::ClientBodyTimeout => (408, "Request Timeout"),
            ProxyError::BodyTooLarge => (413, "Content Too Large"),
            ProxyError::Connect(_)
            | ProxyError::UpstreamTls(_)
            | ProxyError::UpstreamClosed(_)
            | ProxyError::Stale { .. } => (502, "Bad Gateway"),
            ProxyError::ConnectTimeout | ProxyError::ResponseTimeout => (504, "Gateway Timeout"),
            ProxyError::NoEndpoint => (503, "Service Unavailable"),
            ProxyError::ClientGone(_) => return None,
        })
    }

    /// Short machine-friendly reason, sent in the error body and logs.
    pub(crate) fn detail(&self) -> &'static str {
        match self {
            ProxyError::Parse(e) => match e {
                ParseError::BadRequest(why)
                | ParseError::NotImplemented(why)
                | ParseError::BadResponse(why) => why,
                ParseError::UriTooLong => "request line exceeds the header size limit",
                ParseError::HeadTooLarge => "request header section exceeds the limit",
                ParseError::ExpectationFailed => "only 100-continue is supported in Expect",
                ParseError::VersionNotSupported => "only HTTP/1.0 and HTTP/1.1 are supported",
            },
            ProxyError::UpstreamClosed(why) | ProxyError::UpstreamTls(why) => why,
            ProxyError::HeadTimeout => "request head not received in time",
            ProxyError::NoRoute | ProxyError::NoRouteClose => "no route matches this host and path",
            ProxyError::GrpcNeedsHttp2 => {
                "canarygate: gRPC needs an HTTP/2 upstream, and this route's deployments speak HTTP/1.1"
            }
            ProxyError::ClientBodyTimeout => "request body not received in time",
            ProxyError::BodyTooLarge => "request body exceeds the configured limit",
            ProxyError::ClientGone(_) => "client closed the connection",
            ProxyError::Connect(_) => "upstream refused or failed the connection",
            ProxyError::ConnectTimeout => "upstream connect timed out",
            ProxyError::NoEndpoint => {
                "every endpoint of the deployment is draining or in maintenance"
            }
            ProxyError::ResponseTimeout => "upstream did not answer in time",
            ProxyError::Stale { .. } => "upstream closed a reused connection before responding",
        }
    }

    /// The rejection counter this error increments, for client-side errors.
    pub(crate) fn reject_kind(&self) -> Option<Reject> {
        Some(match self {
            ProxyError::Parse(e) => match e {
                ParseError::BadRequest(_) => Reject::BadRequest,
                ParseError::UriTooLong | ParseError::HeadTooLarge => Reject::HeadTooLarge,
                ParseError::ExpectationFailed
                | ParseError::NotImplemented(_)
                | ParseError::VersionNotSupported => Reject::Unsupported,
                ParseError::BadResponse(_) => return None,
            },
            ProxyError::NoRoute | ProxyError::NoRouteClose => Reject::NoRoute,
            ProxyError::GrpcNeedsHttp2 => Reject::Unsupported,
            ProxyError::HeadTimeout | ProxyError::ClientBodyTimeout => Reject::Timeout,
            ProxyError::BodyTooLarge => Reject::BodyTooLarge,
            _ => return None,
        })
    }

    /// The upstream failure counter this error increments.
    pub(crate) fn upstream_failure(&self) -> Option<UpstreamFailure> {
        Some(match self {
            ProxyError::Connect(_) | ProxyError::UpstreamTls(_) | ProxyError::NoEndpoint => {
                UpstreamFailure::Connect
            }
            ProxyError::ConnectTimeout => UpstreamFailure::ConnectTimeout,
            ProxyError::UpstreamClosed(_) | ProxyError::Stale { .. } => UpstreamFailure::Closed,
            ProxyError::ResponseTimeout => UpstreamFailure::ResponseTimeout,
            ProxyError::Parse(ParseError::BadResponse(_)) => UpstreamFailure::BadResponse,
            _ => return None,
        })
    }

    /// The upstream could not be connected to (in time): the kill switch may count it.
    pub(crate) fn is_connect_failure(&self) -> bool {
        matches!(
            self,
            ProxyError::Connect(_)
                | ProxyError::UpstreamTls(_)
                | ProxyError::ConnectTimeout
                | ProxyError::NoEndpoint
        )
    }

    /// Whether the client connection can stay open after answering with this error:
    /// only when the request was read completely, which the caller also checks.
    pub(crate) fn keeps_client(&self) -> bool {
        self.side() == Side::Upstream
    }
}

impl From<ConnectError> for ProxyError {
    fn from(e: ConnectError) -> ProxyError {
        match e {
            ConnectError::Failed(e) => ProxyError::Connect(e),
            ConnectError::Timeout => ProxyError::ConnectTimeout,
            ConnectError::Tls(e) => {
                log::warn!("upstream TLS handshake failed: {e}");
                ProxyError::UpstreamTls(tls_detail(&e))
            }
        }
    }
}

/// What a client is told about a failed upstream TLS handshake (the full error goes to
/// the log).
fn tls_detail(e: &io::Error) -> &'static str {
    use rustls::{CertificateError, Error};
    match super::tls::rustls_error(e) {
        Some(Error::InvalidCertificate(c)) => match c {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                "upstream TLS certificate is not signed by a trusted CA"
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "upstream TLS certificate does not name the endpoint"
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "upstream TLS certificate has expired"
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "upstream TLS certificate is not valid yet"
            }
            CertificateError::Revoked => "upstream TLS certificate is revoked",
            _ => "upstream TLS certificate was refused",
        },
        Some(Error::AlertReceived(_)) => {
            "upstream refused the TLS session with an alert (a client certificate it wants?)"
        }
        Some(Error::InvalidMessage(_)) => "upstream does not speak TLS on this port",
        Some(Error::PeerIncompatible(_)) => "upstream TLS has no version or cipher in common",
        _ => "upstream TLS handshake failed",
    }
}
