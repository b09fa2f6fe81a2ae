//! What to do when an attempt fails before the upstream answered: a decision, not code
//! woven through the exchange. Pure, so every case is a unit test.
//!
//! - [`Retry::Again`]: a pooled connection turned out closed by the upstream while idle
//!   (its keep-alive timeout, a restart). Sending again on a new connection to the same
//!   endpoint is safe when the request never reached it, or when it is idempotent (RFC
//!   9110 §9.2.2); either way only without a body, which is not kept. Once per request.
//! - [`Retry::Stable`]: `retry_on_stable` — a canary request that may fail over (the
//!   session wrote stable's head beside it) goes to stable instead.
//! - [`Retry::Next`]: an idempotent request without a body goes to the next endpoint,
//!   once; so does any request whose connect failed (nothing of it was sent, its body
//!   is still unread).
//! - [`Retry::Fail`]: anything else; the client gets the error.

use gateway_common::Variant;

use crate::dataplane::error::ProxyError;
use crate::dataplane::h1::head::{BodyKind, RequestHead};

/// The decision after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Retry {
    /// The same endpoint, on a new connection.
    Again,
    /// The next endpoint of the same deployment.
    Next,
    /// The stable deployment, with the head written for it.
    Stable,
    /// No more attempts.
    Fail,
}

/// The attempts a request has used so far.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Attempts {
    /// A stale pooled connection was already retried ([`Retry::Again`]).
    pub(crate) resent: bool,
    /// The request already went to a next endpoint ([`Retry::Next`]).
    pub(crate) retried: bool,
}

/// Decides what follows the failure `e` of a request with `head`, served now by
/// `variant`; `can_fail_over`: stable's head is ready for this canary request.
pub(crate) fn decide(
    e: &ProxyError,
    head: &RequestHead,
    variant: Variant,
    can_fail_over: bool,
    used: Attempts,
) -> Retry {
    let no_body = head.body == BodyKind::None;
    if let ProxyError::Stale { sent } = *e
        && !used.resent
        && no_body
        && (!sent || head.idempotent)
    {
        return Retry::Again;
    }
    if e.upstream_failure().is_none() || matches!(e, ProxyError::NoEndpoint) {
        // No endpoint may take it: the canary's health never moves its traffic to stable.
        return Retry::Fail;
    }
    if variant == Variant::Canary && can_fail_over {
        return Retry::Stable;
    }
    let connect_failed = matches!(e, ProxyError::Connect(_) | ProxyError::ConnectTimeout);
    if (connect_failed || head.idempotent && no_body) && !used.retried {
        return Retry::Next;
    }
    Retry::Fail
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::h1::head::Version;

    fn head(idempotent: bool, body: BodyKind) -> RequestHead {
        RequestHead {
            head_len: 0,
            version: Version::Http11,
            body,
            is_head: false,
            idempotent,
            keep_alive: true,
            expect_continue: false,
            upgrade: false,
        }
    }

    const GET: fn() -> RequestHead = || head(true, BodyKind::None);
    const POST: fn() -> RequestHead = || head(false, BodyKind::None);
    const UPLOAD: fn() -> RequestHead = || head(false, BodyKind::Length(10));
    const FRESH: Attempts = Attempts {
        resent: false,
        retried: false,
    };

    #[test]
    fn stale_connections_are_resent_once_when_safe() {
        let unsent = ProxyError::Stale { sent: false };
        let sent = ProxyError::Stale { sent: true };
        assert_eq!(
            decide(&unsent, &POST(), Variant::Stable, false, FRESH),
            Retry::Again
        );
        assert_eq!(
            decide(&sent, &GET(), Variant::Stable, false, FRESH),
            Retry::Again
        );
        // A POST that may have reached the upstream is not sent twice.
        assert_eq!(
            decide(&sent, &POST(), Variant::Stable, false, FRESH),
            Retry::Fail
        );
        // A body is not kept, so it cannot be sent again.
        assert_eq!(
            decide(&unsent, &UPLOAD(), Variant::Stable, false, FRESH),
            Retry::Fail
        );
        let resent = Attempts {
            resent: true,
            ..FRESH
        };
        // The second stale failure of a GET falls back to the next endpoint.
        assert_eq!(
            decide(&unsent, &GET(), Variant::Stable, false, resent),
            Retry::Next
        );
    }

    #[test]
    fn canary_failures_fail_over_when_the_stable_head_is_ready() {
        let e = ProxyError::ConnectTimeout;
        assert_eq!(
            decide(&e, &GET(), Variant::Canary, true, FRESH),
            Retry::Stable
        );
        assert_eq!(
            decide(&e, &GET(), Variant::Canary, false, FRESH),
            Retry::Next
        );
        assert_eq!(
            decide(&e, &GET(), Variant::Stable, true, FRESH),
            Retry::Next
        );
    }

    #[test]
    fn only_idempotent_requests_without_a_body_go_to_the_next_endpoint_once() {
        let e = ProxyError::UpstreamClosed("test");
        assert_eq!(
            decide(&e, &GET(), Variant::Stable, false, FRESH),
            Retry::Next
        );
        assert_eq!(
            decide(&e, &POST(), Variant::Stable, false, FRESH),
            Retry::Fail
        );
        let retried = Attempts {
            retried: true,
            ..FRESH
        };
        assert_eq!(
            decide(&e, &GET(), Variant::Stable, false, retried),
            Retry::Fail
        );
    }

    #[test]
    fn a_failed_connect_goes_to_the_next_endpoint_whatever_the_request() {
        for e in [
            ProxyError::Connect(std::io::ErrorKind::ConnectionRefused.into()),
            ProxyError::ConnectTimeout,
        ] {
            for h in [GET(), POST(), UPLOAD()] {
                assert_eq!(decide(&e, &h, Variant::Stable, false, FRESH), Retry::Next);
            }
            let retried = Attempts {
                retried: true,
                ..FRESH
            };
            assert_eq!(
                decide(&e, &UPLOAD(), Variant::Stable, false, retried),
                Retry::Fail
            );
        }
        // No endpoint may take it: not retried, and a canary request stays canary.
        assert_eq!(
            decide(
                &ProxyError::NoEndpoint,
                &GET(),
                Variant::Canary,
                true,
                FRESH
            ),
            Retry::Fail
        );
    }

    #[test]
    fn client_side_errors_are_never_retried() {
        for e in [
            ProxyError::ClientBodyTimeout,
            ProxyError::BodyTooLarge,
            ProxyError::bad_request("test"),
        ] {
            assert_eq!(
                decide(&e, &GET(), Variant::Canary, true, FRESH),
                Retry::Fail
            );
        }
    }
}
