//! One routed request as the phases see it: the [`RequestCtx`] made once its head is
//! routed and passed down every phase, and the [`Outcome`] the phases fill in, which
//! [`super::record`] alone turns into figures. Plain data, below both.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use gateway_common::{VARIANT_COUNT, Variant};

use super::accesslog::Inline;
use super::h1::head::RequestHead;
use super::route::snapshot::{Held, Plan, RouteSnap};
use super::upstream::health::Observed;
use crate::metrics::{Reject, UPSTREAM_FAILURE_KINDS, UpstreamFailure};

/// One routed request: made once its head is parsed and routed, passed down every phase.
pub(crate) struct RequestCtx {
    /// When the current variant's attempt began (the head was routed, or the request
    /// failed over to stable).
    pub(crate) start: Instant,
    /// The routing snapshot the request was routed with (kept for its whole life, so a
    /// reload mid-request changes nothing for it).
    pub(crate) snap: Rc<Held>,
    pub(crate) stage: usize,
    pub(crate) route: usize,
    /// The variant serving it now (stable after a failover).
    pub(crate) variant: Variant,
    /// The request's framing and connection facts.
    pub(crate) head: RequestHead,
    /// It came as an HTTP/2 stream.
    pub(crate) h2: bool,
    /// Method and path for the access log, when it is on.
    pub(crate) log: Option<(Inline<16>, Inline<256>)>,
}

impl RequestCtx {
    /// The route the request was routed to.
    #[inline]
    pub(crate) fn route(&self) -> &RouteSnap {
        &self.snap.stages[self.stage].routes[self.route]
    }

    /// The plan (endpoints, rewritten path and headers) of the variant serving it now.
    #[inline]
    pub(crate) fn plan(&self) -> &Plan {
        self.route().plan(self.variant).0
    }
}

/// What happened to one variant's attempts of a request, counted by `record`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Tally {
    pub(crate) connects: u32,
    pub(crate) reuses: u32,
    pub(crate) retries: u32,
    pub(crate) stale_retries: u32,
    /// Failures of attempts that were followed by another attempt, by kind.
    pub(crate) failures: [u32; UPSTREAM_FAILURE_KINDS],
    /// Any of `retries`, `stale_retries` or `failures` is above 0.
    pub(crate) eventful: bool,
}

/// The canary attempt of a request that then failed over to stable: it counts as a 502
/// of the canary (metrics, judge, kill switch).
#[derive(Clone, Copy, Debug)]
pub(crate) struct FailedOver {
    pub(crate) latency_us: u64,
    pub(crate) connect_failed: bool,
}

/// Everything the phases learned about one routed request.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Status sent to the client (0: none was).
    pub(crate) status: u16,
    /// The endpoint of the last attempt.
    pub(crate) upstream: Option<SocketAddr>,
    /// Time from routing to the upstream's response head.
    pub(crate) upstream_head: Option<Duration>,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    /// The request body has been read completely.
    pub(crate) request_done: bool,
    /// Bytes of the upstream's response have reached the client.
    pub(crate) response_started: bool,
    /// The final error's upstream failure, if it was one.
    pub(crate) failure: Option<UpstreamFailure>,
    /// The final error's rejection kind, if it was the client's fault.
    pub(crate) reject: Option<Reject>,
    /// The last attempt could not connect (the kill switch may count it).
    pub(crate) connect_failed: bool,
    /// The `grpc-status` of the call, when an HTTP/2 upstream answered one.
    pub(crate) grpc_status: Option<u16>,
    /// Per variant; only those whose bit is set in `touched` hold anything.
    tally: [Tally; VARIANT_COUNT],
    /// Bit `1 << variant.index()` for each variant whose tally changed.
    touched: u8,
    pub(crate) failed_over: Option<FailedOver>,
    /// What each attempt showed of its endpoint, for passive outlier detection.
    seen: [Seen; MAX_SEEN],
    seen_len: u8,
}

/// Attempts of one request whose endpoint outcome is kept (a request makes at most a
/// resend, a retry and a failover).
const MAX_SEEN: usize = 4;

/// What one attempt showed of endpoint `index` of `variant`'s plan.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Seen {
    pub(crate) variant: Variant,
    pub(crate) index: u32,
    pub(crate) what: Observed,
}

impl Default for Seen {
    fn default() -> Seen {
        Seen {
            variant: Variant::Stable,
            index: 0,
            what: Observed::Answered(0),
        }
    }
}

impl Outcome {
    /// Nothing has happened yet to a request with `head`: its head is read, its body
    /// (if any) is not.
    pub(crate) fn new(head: &RequestHead) -> Outcome {
        Outcome {
            bytes_in: head.head_len as u64,
            request_done: head.body == super::h1::head::BodyKind::None,
            ..Outcome::default()
        }
    }

    /// `variant`'s tally, to add to.
    #[inline]
    pub(crate) fn tally(&mut self, variant: Variant) -> &mut Tally {
        self.touched |= 1 << variant.index();
        &mut self.tally[variant.index()]
    }

    /// Notes what an attempt showed of endpoint `index` of `variant`.
    #[inline]
    pub(crate) fn saw(&mut self, variant: Variant, index: usize, what: Observed) {
        if let Some(slot) = self.seen.get_mut(usize::from(self.seen_len)) {
            *slot = Seen {
                variant,
                index: index as u32,
                what,
            };
            self.seen_len += 1;
        }
    }

    /// What the attempts showed, emptied.
    #[inline]
    pub(crate) fn take_seen(&mut self) -> impl Iterator<Item = Seen> + '_ {
        let n = usize::from(std::mem::take(&mut self.seen_len));
        self.seen[..n].iter().copied()
    }

    /// The tallies that hold anything, emptied.
    #[inline]
    pub(crate) fn take_tallies(&mut self) -> impl Iterator<Item = (Variant, Tally)> + '_ {
        let touched = std::mem::take(&mut self.touched);
        Variant::ALL
            .into_iter()
            .filter(move |v| touched & (1 << v.index()) != 0)
            .map(|v| (v, std::mem::take(&mut self.tally[v.index()])))
    }
}
