//! Per-route, per-variant accounting, recorded per worker without locks and merged on read.
//!
//! Each worker owns one [`WorkerMetrics`] (connection-level figures) and one slot in every
//! route's [`RouteMetrics`] (shared with readers through an `Arc`). Every field has a single
//! writer, so recording is a relaxed load and store; readers sum workers into a [`Stats`]
//! snapshot whenever they ask.

pub(crate) mod histogram;
pub(crate) mod prometheus;
pub(crate) mod wire;

use std::sync::atomic::{AtomicU64, Ordering};

use gateway_common::{VARIANT_COUNT, Variant};
pub(crate) use hdrhistogram::Histogram;
pub(crate) use histogram::{AtomicHistogram, new_histogram};

/// A counter with one writer (its worker) and any number of readers.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning worker may call this.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Subtracts one (for gauges).
    #[inline]
    pub fn dec(&self) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_sub(1),
            Ordering::Relaxed,
        );
    }

    /// Current value.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Why a request was answered by the gateway itself instead of an upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub(crate) enum Reject {
    /// 400: malformed or ambiguous request.
    BadRequest,
    /// 408: head not received in time.
    Timeout,
    /// 413: body over the limit.
    BodyTooLarge,
    /// 414 / 431: request line or head over the limit.
    HeadTooLarge,
    /// 417 / 501 / 505: something the gateway does not do.
    Unsupported,
    /// 404: no route of the stage matches the request.
    NoRoute,
}

/// Number of [`Reject`] kinds.
pub(crate) const REJECT_KINDS: usize = 6;

impl Reject {
    /// Every kind, in index order.
    pub(crate) const ALL: [Reject; REJECT_KINDS] = [
        Reject::BadRequest,
        Reject::Timeout,
        Reject::BodyTooLarge,
        Reject::HeadTooLarge,
        Reject::Unsupported,
        Reject::NoRoute,
    ];

    /// Label used in metrics.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Reject::BadRequest => "bad_request",
            Reject::Timeout => "timeout",
            Reject::BodyTooLarge => "body_too_large",
            Reject::HeadTooLarge => "head_too_large",
            Reject::Unsupported => "unsupported",
            Reject::NoRoute => "no_route",
        }
    }
}

/// Why a client's TLS handshake failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub(crate) enum TlsFailure {
    /// Not finished within `tls_handshake_timeout` (a slow or stalled client).
    Timeout,
    /// The worker already had `max_tls_handshakes` in progress.
    Overload,
    /// The client closed or reset the connection mid-handshake.
    Closed,
    /// What arrived was not a TLS handshake (plain HTTP, garbage, a malformed record).
    Protocol,
    /// No protocol version in common (e.g. TLS 1.1 or older, or 1.2 below the minimum).
    Version,
    /// No cipher suite, key-exchange group or signature scheme in common.
    NoCommonParams,
    /// The client aborted with an alert (for example it rejected the certificate).
    Alert,
    /// Anything else (an I/O error, an internal error).
    Other,
}

/// Why an HTTP/2 client connection ended with an error of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub(crate) enum H2Failure {
    /// The connection preface or the first SETTINGS did not arrive in time or was wrong.
    Handshake,
    /// The client broke the protocol (a PROTOCOL_ERROR, FRAME_SIZE_ERROR, COMPRESSION_ERROR
    /// or flow-control violation of its own); GOAWAY sent.
    Protocol,
    /// The client was abusive: rapid resets (CVE-2023-44487), a CONTINUATION flood, too
    /// many streams it made the gateway reset; GOAWAY with ENHANCE_YOUR_CALM sent.
    Abuse,
    /// The client went away or the socket failed.
    Io,
}

/// Number of [`H2Failure`] kinds.
pub(crate) const H2_FAILURE_KINDS: usize = 4;

impl H2Failure {
    /// Every kind, in index order.
    pub(crate) const ALL: [H2Failure; H2_FAILURE_KINDS] = [
        H2Failure::Handshake,
        H2Failure::Protocol,
        H2Failure::Abuse,
        H2Failure::Io,
    ];

    /// Label used in metrics.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            H2Failure::Handshake => "handshake",
            H2Failure::Protocol => "protocol",
            H2Failure::Abuse => "abuse",
            H2Failure::Io => "io",
        }
    }
}

/// Number of [`TlsFailure`] kinds.
pub(crate) const TLS_FAILURE_KINDS: usize = 8;

impl TlsFailure {
    /// Every kind, in index order.
    pub(crate) const ALL: [TlsFailure; TLS_FAILURE_KINDS] = [
        TlsFailure::Timeout,
        TlsFailure::Overload,
        TlsFailure::Closed,
        TlsFailure::Protocol,
        TlsFailure::Version,
        TlsFailure::NoCommonParams,
        TlsFailure::Alert,
        TlsFailure::Other,
    ];

    /// Label used in metrics.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TlsFailure::Timeout => "timeout",
            TlsFailure::Overload => "overload",
            TlsFailure::Closed => "closed",
            TlsFailure::Protocol => "protocol",
            TlsFailure::Version => "version",
            TlsFailure::NoCommonParams => "no_common_params",
            TlsFailure::Alert => "alert",
            TlsFailure::Other => "other",
        }
    }
}

/// How an upstream exchange failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub(crate) enum UpstreamFailure {
    /// Connect refused or failed.
    Connect,
    /// Connect did not finish in time.
    ConnectTimeout,
    /// Connection closed or reset before a complete response.
    Closed,
    /// No answer in time.
    ResponseTimeout,
    /// The response was not valid HTTP/1.x.
    BadResponse,
}

/// Number of [`UpstreamFailure`] kinds.
pub(crate) const UPSTREAM_FAILURE_KINDS: usize = 5;

impl UpstreamFailure {
    /// Every kind, in index order.
    pub(crate) const ALL: [UpstreamFailure; UPSTREAM_FAILURE_KINDS] = [
        UpstreamFailure::Connect,
        UpstreamFailure::ConnectTimeout,
        UpstreamFailure::Closed,
        UpstreamFailure::ResponseTimeout,
        UpstreamFailure::BadResponse,
    ];

    /// Label used in metrics.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            UpstreamFailure::Connect => "connect",
            UpstreamFailure::ConnectTimeout => "connect_timeout",
            UpstreamFailure::Closed => "closed",
            UpstreamFailure::ResponseTimeout => "response_timeout",
            UpstreamFailure::BadResponse => "bad_response",
        }
    }
}

/// gRPC status codes counted (0 OK ..= 16 UNAUTHENTICATED).
pub(crate) const GRPC_CODES: usize = 17;

/// One worker's figures for one variant.
#[derive(Debug, Default)]
pub struct VariantMetrics {
    /// Requests routed to this variant.
    pub requests: Counter,
    /// Those of them that came as HTTP/2 streams.
    pub h2_requests: Counter,
    /// Responses sent to clients by status class (1xx..5xx).
    pub responses: [Counter; 5],
    /// gRPC calls answered, by `grpc-status` (0 OK ..= 16), and those whose status is
    /// one of `grpc_error_codes` (an error class of its own: judged and kill-switched
    /// like a 5xx).
    pub grpc: [Counter; GRPC_CODES],
    pub grpc_errors: Counter,
    /// Upstream failures by kind.
    pub upstream_failures: [Counter; UPSTREAM_FAILURE_KINDS],
    /// Retries made after an upstream failure.
    pub retries: Counter,
    /// Requests sent again on a new connection after a reused one turned out to be
    /// closed by the upstream (no response byte had arrived).
    pub stale_retries: Counter,
    /// New upstream connections opened.
    pub upstream_connects: Counter,
    /// Requests sent on a pooled (reused) upstream connection.
    pub upstream_reuses: Counter,
    /// Bytes received from clients (heads and bodies).
    pub bytes_in: Counter,
    /// Bytes sent to clients (heads and bodies).
    pub bytes_out: Counter,
    /// Time from request head received to upstream response head received (µs).
    pub upstream_latency: AtomicHistogram,
    /// Time from request head received to response fully sent (µs).
    pub total_latency: AtomicHistogram,
    /// Requests being served right now (gauge).
    pub in_flight: Counter,
}

/// Connection-level figures of one worker.
#[derive(Debug, Default)]
pub struct WorkerMetrics {
    /// Requests rejected before or without routing, by kind.
    pub rejected: [Counter; REJECT_KINDS],
    /// Client connections accepted.
    pub accepted: Counter,
    /// Client connections currently open (gauge).
    pub open: Counter,
    /// Open client connections parked between requests, holding no buffers (gauge), and
    /// how many times a connection was parked.
    pub parked: Counter,
    pub parks: Counter,
    /// Requests being served right now, and upgraded connections being tunnelled
    /// (gauge; a graceful stop waits for it to reach 0).
    pub busy: Counter,
    /// Access-log records dropped because the log writer fell behind.
    pub log_dropped: Counter,
    /// Client TLS handshakes completed, and how many of them resumed a session.
    pub tls_handshakes: Counter,
    pub tls_resumed: Counter,
    /// Client TLS handshakes in progress (gauge; `max_tls_handshakes` bounds it).
    pub tls_handshaking: Counter,
    /// Client TLS handshakes failed, by [`TlsFailure`] kind.
    pub(crate) tls_failures: [Counter; TLS_FAILURE_KINDS],
    /// HTTP/2 client connections served, and streams (requests) on them.
    pub h2_connections: Counter,
    pub h2_streams: Counter,
    /// HTTP/2 streams the client reset before their response was complete.
    pub h2_client_resets: Counter,
    /// HTTP/2 connections ended by an error, by [`H2Failure`] kind.
    pub(crate) h2_failures: [Counter; H2_FAILURE_KINDS],
}

/// One route's figures: one slot per worker, each written by its worker only.
#[derive(Debug)]
pub struct RouteMetrics {
    per_worker: Box<[[VariantMetrics; VARIANT_COUNT]]>,
}

impl RouteMetrics {
    /// Slots for `workers` workers.
    pub fn new(workers: usize) -> Self {
        RouteMetrics {
            per_worker: (0..workers.max(1)).map(|_| Default::default()).collect(),
        }
    }

    /// Worker `worker`'s figures for `variant`.
    #[inline]
    pub fn slot(&self, worker: usize, variant: Variant) -> &VariantMetrics {
        &self.per_worker[worker % self.per_worker.len()][variant.index()]
    }

    /// One worker's figures, both variants.
    pub fn worker_snapshot(&self, worker: usize) -> [VariantStats; VARIANT_COUNT] {
        let w = &self.per_worker[worker % self.per_worker.len()];
        [w[0].snapshot(), w[1].snapshot()]
    }

    /// Figures summed over workers, both variants.
    pub fn snapshot(&self) -> [VariantStats; VARIANT_COUNT] {
        let mut out = [VariantStats::default(), VariantStats::default()];
        for i in 0..self.per_worker.len() {
            for (total, one) in out.iter_mut().zip(self.worker_snapshot(i)) {
                total.add(&one);
            }
        }
        out
    }
}

impl WorkerMetrics {
    /// Reads the connection-level figures; `variants` are filled by the caller from the
    /// routes.
    pub fn snapshot(&self) -> WorkerStats {
        WorkerStats {
            variants: [VariantStats::default(), VariantStats::default()],
            rejected: self.rejected.each_ref().map(Counter::get),
            accepted: self.accepted.get(),
            open: self.open.get(),
            parked: self.parked.get(),
            parks: self.parks.get(),
            log_dropped: self.log_dropped.get(),
            tls_handshakes: self.tls_handshakes.get(),
            tls_resumed: self.tls_resumed.get(),
            tls_handshaking: self.tls_handshaking.get(),
            tls_failures: self.tls_failures.each_ref().map(Counter::get),
            h2_connections: self.h2_connections.get(),
            h2_streams: self.h2_streams.get(),
            h2_client_resets: self.h2_client_resets.get(),
            h2_failures: self.h2_failures.each_ref().map(Counter::get),
        }
    }
}

impl VariantMetrics {
    fn snapshot(&self) -> VariantStats {
        let mut s = VariantStats {
            requests: self.requests.get(),
            h2_requests: self.h2_requests.get(),
            responses: self.responses.each_ref().map(Counter::get),
            grpc: self.grpc.each_ref().map(Counter::get),
            grpc_errors: self.grpc_errors.get(),
            upstream_failures: self.upstream_failures.each_ref().map(Counter::get),
            retries: self.retries.get(),
            stale_retries: self.stale_retries.get(),
            upstream_connects: self.upstream_connects.get(),
            upstream_reuses: self.upstream_reuses.get(),
            bytes_in: self.bytes_in.get(),
            bytes_out: self.bytes_out.get(),
            upstream_latency: new_histogram(),
            total_latency: new_histogram(),
            in_flight: self.in_flight.get(),
            ejections: 0,
        };
        self.upstream_latency.merge_into(&mut s.upstream_latency);
        self.total_latency.merge_into(&mut s.total_latency);
        s
    }
}

/// A point-in-time copy of one variant's figures.
#[derive(Clone, Debug)]
pub struct VariantStats {
    /// Requests routed to the variant.
    pub requests: u64,
    /// Those of them that came as HTTP/2 streams.
    pub h2_requests: u64,
    /// Responses by status class: index 0 is 1xx, 4 is 5xx.
    pub responses: [u64; 5],
    /// gRPC calls by `grpc-status` code.
    pub grpc: [u64; GRPC_CODES],
    /// gRPC calls whose status counts as an error (`grpc_error_codes`).
    pub grpc_errors: u64,
    /// Upstream failures by [`UpstreamFailure`] kind.
    pub upstream_failures: [u64; UPSTREAM_FAILURE_KINDS],
    /// Retries after an upstream failure.
    pub retries: u64,
    /// Requests resent on a new connection after a stale reused one.
    pub stale_retries: u64,
    /// New upstream connections.
    pub upstream_connects: u64,
    /// Requests on reused upstream connections.
    pub upstream_reuses: u64,
    /// Bytes from clients.
    pub bytes_in: u64,
    /// Bytes to clients.
    pub bytes_out: u64,
    /// Time to upstream response head, µs.
    pub upstream_latency: Histogram<u64>,
    /// Time to response fully sent, µs.
    pub total_latency: Histogram<u64>,
    /// Requests being served.
    pub in_flight: u64,
    /// Passive outlier ejections of the variant's endpoints so far (the control plane's
    /// count, filled in when the route's figures are read).
    pub ejections: u64,
}

impl Default for VariantStats {
    fn default() -> Self {
        VariantStats {
            requests: 0,
            h2_requests: 0,
            responses: [0; 5],
            grpc: [0; GRPC_CODES],
            grpc_errors: 0,
            upstream_failures: [0; UPSTREAM_FAILURE_KINDS],
            retries: 0,
            stale_retries: 0,
            upstream_connects: 0,
            upstream_reuses: 0,
            bytes_in: 0,
            bytes_out: 0,
            upstream_latency: new_histogram(),
            total_latency: new_histogram(),
            in_flight: 0,
            ejections: 0,
        }
    }
}

impl VariantStats {
    /// Total upstream failures of every kind.
    pub fn upstream_errors(&self) -> u64 {
        self.upstream_failures.iter().sum()
    }

    /// Adds `other`'s figures to these.
    pub fn add(&mut self, other: &VariantStats) {
        self.requests += other.requests;
        self.h2_requests += other.h2_requests;
        self.in_flight += other.in_flight;
        self.ejections += other.ejections;
        for (a, b) in self.responses.iter_mut().zip(other.responses) {
            *a += b;
        }
        for (a, b) in self.grpc.iter_mut().zip(other.grpc) {
            *a += b;
        }
        self.grpc_errors += other.grpc_errors;
        for (a, b) in self
            .upstream_failures
            .iter_mut()
            .zip(other.upstream_failures)
        {
            *a += b;
        }
        self.retries += other.retries;
        self.stale_retries += other.stale_retries;
        self.upstream_connects += other.upstream_connects;
        self.upstream_reuses += other.upstream_reuses;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.upstream_latency.add(&other.upstream_latency);
        let _ = self.total_latency.add(&other.total_latency);
    }
}

/// A point-in-time copy of one worker's figures.
#[derive(Clone, Debug, Default)]
pub struct WorkerStats {
    /// Per-variant figures, indexed by [`Variant::index`].
    pub variants: [VariantStats; VARIANT_COUNT],
    /// Requests rejected before routing, by [`Reject`] kind.
    pub rejected: [u64; REJECT_KINDS],
    /// Client connections accepted.
    pub accepted: u64,
    /// Client connections open, and how many of them are parked between requests.
    pub open: u64,
    pub parked: u64,
    pub parks: u64,
    /// Access-log records dropped.
    pub log_dropped: u64,
    /// Client TLS handshakes completed (resumed ones among them), and in progress.
    pub tls_handshakes: u64,
    pub tls_resumed: u64,
    pub tls_handshaking: u64,
    /// Client TLS handshakes failed, by [`TlsFailure`] kind.
    pub tls_failures: [u64; TLS_FAILURE_KINDS],
    /// HTTP/2 connections, streams, streams reset by the client, connection errors.
    pub h2_connections: u64,
    pub h2_streams: u64,
    pub h2_client_resets: u64,
    pub h2_failures: [u64; H2_FAILURE_KINDS],
}

/// One route's figures and settings, as read at one moment.
#[derive(Clone, Debug)]
pub struct RouteStats {
    /// Stage name.
    pub stage: String,
    /// Route name.
    pub name: String,
    /// Canary share in ppm.
    pub canary_ppm: u32,
    /// Deployment ids by variant (`None`: no canary).
    pub deployments: [Option<String>; VARIANT_COUNT],
    /// Figures by variant.
    pub variants: [VariantStats; VARIANT_COUNT],
}

/// Figures of every worker and route, as read at one moment.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// One entry per worker, in worker order; `variants` summed over routes.
    pub workers: Vec<WorkerStats>,
    /// One entry per route of the current configuration.
    pub routes: Vec<RouteStats>,
}

impl Stats {
    /// The figures of route `name`.
    pub fn route(&self, name: &str) -> Option<&RouteStats> {
        self.routes.iter().find(|r| r.name == name)
    }

    /// `variant`'s figures summed over all workers.
    pub fn variant(&self, variant: Variant) -> VariantStats {
        let mut total = VariantStats::default();
        for w in &self.workers {
            total.add(&w.variants[variant.index()]);
        }
        total
    }

    /// Rejected requests of every kind, summed over workers.
    pub fn rejected(&self) -> [u64; REJECT_KINDS] {
        let mut out = [0; REJECT_KINDS];
        for w in &self.workers {
            for (a, b) in out.iter_mut().zip(w.rejected) {
                *a += b;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_sums_workers() {
        let route = RouteMetrics::new(2);
        route.slot(0, Variant::Canary).requests.add(3);
        route.slot(1, Variant::Canary).requests.add(4);
        route.slot(1, Variant::Canary).total_latency.record(250);
        let a = WorkerMetrics::default();
        a.rejected[Reject::Timeout as usize].inc();
        let [stable, canary] = route.snapshot();
        assert_eq!(canary.requests, 7);
        assert_eq!(canary.total_latency.len(), 1);
        assert_eq!(stable.requests, 0);
        let mut w0 = a.snapshot();
        w0.variants = route.worker_snapshot(0);
        let stats = Stats {
            workers: vec![w0],
            routes: Vec::new(),
        };
        assert_eq!(stats.variant(Variant::Canary).requests, 3);
        assert_eq!(stats.rejected()[Reject::Timeout as usize], 1);
    }
}
