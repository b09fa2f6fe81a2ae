//! Prometheus text exposition (format 0.0.4) of a [`Stats`] snapshot: per route and
//! variant counters, in-flight gauges, canary shares, and latency histograms whose
//! buckets are read from the HDR histograms.

use std::fmt::Write as _;

use gateway_common::Variant;

use super::{H2Failure, Histogram, Reject, Stats, TlsFailure, UpstreamFailure, VariantStats};

/// Upper bounds (seconds) of the latency histogram buckets.
pub(crate) const BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Renders `stats` in the Prometheus text format.
pub(crate) fn render(stats: &Stats) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let per_variant =
        |out: &mut String, name: &str, help: &str, kind: &str, f: &dyn Fn(&VariantStats) -> u64| {
            header(out, name, help, kind);
            for r in &stats.routes {
                for v in Variant::ALL {
                    let _ = writeln!(
                        out,
                        "{name}{{route=\"{}\",variant=\"{}\"}} {}",
                        esc(&r.name),
                        v.as_str(),
                        f(&r.variants[v.index()])
                    );
                }
            }
        };
    per_variant(
        &mut out,
        "canarygate_requests_total",
        "Requests routed to a variant.",
        "counter",
        &|s| s.requests,
    );
    header(
        &mut out,
        "canarygate_requests_by_protocol_total",
        "Requests routed to a variant, by the client's protocol (http1, h2).",
        "counter",
    );
    for r in &stats.routes {
        for v in Variant::ALL {
            let s = &r.variants[v.index()];
            for (protocol, n) in [
                ("http1", s.requests.saturating_sub(s.h2_requests)),
                ("h2", s.h2_requests),
            ] {
                let _ = writeln!(
                    out,
                    "canarygate_requests_by_protocol_total{{route=\"{}\",variant=\"{}\",protocol=\"{protocol}\"}} {n}",
                    esc(&r.name),
                    v.as_str(),
                );
            }
        }
    }
    per_variant(
        &mut out,
        "canarygate_in_flight_requests",
        "Requests being served.",
        "gauge",
        &|s| s.in_flight,
    );
    per_variant(
        &mut out,
        "canarygate_retries_total",
        "Requests retried on another endpoint after an upstream failure.",
        "counter",
        &|s| s.retries,
    );
    per_variant(
        &mut out,
        "canarygate_upstream_stale_total",
        "Requests sent again on a new upstream connection because a reused one had been closed by the upstream before any response byte.",
        "counter",
        &|s| s.stale_retries,
    );
    per_variant(
        &mut out,
        "canarygate_upstream_connects_total",
        "New upstream connections opened.",
        "counter",
        &|s| s.upstream_connects,
    );
    per_variant(
        &mut out,
        "canarygate_upstream_reuses_total",
        "Requests sent on a pooled upstream connection.",
        "counter",
        &|s| s.upstream_reuses,
    );
    per_variant(
        &mut out,
        "canarygate_received_bytes_total",
        "Bytes received from clients.",
        "counter",
        &|s| s.bytes_in,
    );
    per_variant(
        &mut out,
        "canarygate_sent_bytes_total",
        "Bytes sent to clients.",
        "counter",
        &|s| s.bytes_out,
    );

    header(
        &mut out,
        "canarygate_responses_total",
        "Responses sent to clients, by status class.",
        "counter",
    );
    for r in &stats.routes {
        for v in Variant::ALL {
            for (i, n) in r.variants[v.index()].responses.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "canarygate_responses_total{{route=\"{}\",variant=\"{}\",class=\"{}xx\"}} {n}",
                    esc(&r.name),
                    v.as_str(),
                    i + 1
                );
            }
        }
    }
    header(
        &mut out,
        "canarygate_grpc_responses_total",
        "gRPC calls answered, by grpc-status (codes seen only).",
        "counter",
    );
    for r in &stats.routes {
        for v in Variant::ALL {
            for (code, n) in r.variants[v.index()].grpc.iter().enumerate() {
                if *n > 0 {
                    let _ = writeln!(
                        out,
                        "canarygate_grpc_responses_total{{route=\"{}\",variant=\"{}\",code=\"{}\"}} {n}",
                        esc(&r.name),
                        v.as_str(),
                        crate::config::GRPC_CODE_NAMES[code]
                    );
                }
            }
        }
    }
    per_variant(
        &mut out,
        "canarygate_grpc_errors_total",
        "gRPC calls whose grpc-status is one of grpc_error_codes (judged and kill-switched like a 5xx).",
        "counter",
        &|s| s.grpc_errors,
    );
    header(
        &mut out,
        "canarygate_upstream_errors_total",
        "Upstream failures, by kind.",
        "counter",
    );
    for r in &stats.routes {
        for v in Variant::ALL {
            for kind in UpstreamFailure::ALL {
                let n = r.variants[v.index()].upstream_failures[kind as usize];
                let _ = writeln!(
                    out,
                    "canarygate_upstream_errors_total{{route=\"{}\",variant=\"{}\",kind=\"{}\"}} {n}",
                    esc(&r.name),
                    v.as_str(),
                    kind.as_str()
                );
            }
        }
    }
    header(
        &mut out,
        "canarygate_canary_ratio",
        "Configured canary share (0..1).",
        "gauge",
    );
    for r in &stats.routes {
        let _ = writeln!(
            out,
            "canarygate_canary_ratio{{route=\"{}\"}} {}",
            esc(&r.name),
            f64::from(r.canary_ppm) / 1e6
        );
    }
    for (name, help, pick) in [
        (
            "canarygate_request_duration_seconds",
            "Time from request head to response fully sent.",
            0,
        ),
        (
            "canarygate_upstream_response_seconds",
            "Time from request head to upstream response head.",
            1,
        ),
    ] {
        header(&mut out, name, help, "histogram");
        for r in &stats.routes {
            for v in Variant::ALL {
                let s = &r.variants[v.index()];
                let h = if pick == 0 {
                    &s.total_latency
                } else {
                    &s.upstream_latency
                };
                histogram(
                    &mut out,
                    name,
                    &format!("route=\"{}\",variant=\"{}\"", esc(&r.name), v.as_str()),
                    h,
                );
            }
        }
    }
    header(
        &mut out,
        "canarygate_rejected_requests_total",
        "Requests answered by the gateway before routing, by reason.",
        "counter",
    );
    let rejected = stats.rejected();
    for kind in Reject::ALL {
        let _ = writeln!(
            out,
            "canarygate_rejected_requests_total{{reason=\"{}\"}} {}",
            kind.as_str(),
            rejected[kind as usize]
        );
    }
    let sum = |f: fn(&super::WorkerStats) -> u64| stats.workers.iter().map(f).sum::<u64>();
    header(
        &mut out,
        "canarygate_connections_accepted_total",
        "Client connections accepted.",
        "counter",
    );
    let _ = writeln!(
        out,
        "canarygate_connections_accepted_total {}",
        sum(|w| w.accepted)
    );
    header(
        &mut out,
        "canarygate_connections_open",
        "Client connections open.",
        "gauge",
    );
    let _ = writeln!(out, "canarygate_connections_open {}", sum(|w| w.open));
    header(
        &mut out,
        "canarygate_connections_parked",
        "Open client connections quiet between requests and parked: no buffer or request state held, only a readiness wait.",
        "gauge",
    );
    let _ = writeln!(out, "canarygate_connections_parked {}", sum(|w| w.parked));
    header(
        &mut out,
        "canarygate_connection_parks_total",
        "Times a client connection was parked after a quiet spell between requests.",
        "counter",
    );
    let _ = writeln!(
        out,
        "canarygate_connection_parks_total {}",
        sum(|w| w.parks)
    );
    header(
        &mut out,
        "canarygate_access_log_dropped_total",
        "Access-log records dropped because the writer fell behind.",
        "counter",
    );
    let _ = writeln!(
        out,
        "canarygate_access_log_dropped_total {}",
        sum(|w| w.log_dropped)
    );
    header(
        &mut out,
        "canarygate_tls_handshakes_total",
        "Client TLS handshakes completed, by kind: full, or resumed from a ticket or session.",
        "counter",
    );
    let resumed = sum(|w| w.tls_resumed);
    let _ = writeln!(
        out,
        "canarygate_tls_handshakes_total{{kind=\"full\"}} {}\n\
         canarygate_tls_handshakes_total{{kind=\"resumed\"}} {resumed}",
        sum(|w| w.tls_handshakes).saturating_sub(resumed)
    );
    header(
        &mut out,
        "canarygate_tls_handshakes_in_progress",
        "Client TLS handshakes in progress.",
        "gauge",
    );
    let _ = writeln!(
        out,
        "canarygate_tls_handshakes_in_progress {}",
        sum(|w| w.tls_handshaking)
    );
    header(
        &mut out,
        "canarygate_tls_handshake_failures_total",
        "Client TLS handshakes that failed, by reason.",
        "counter",
    );
    for kind in TlsFailure::ALL {
        let _ = writeln!(
            out,
            "canarygate_tls_handshake_failures_total{{reason=\"{}\"}} {}",
            kind.as_str(),
            stats
                .workers
                .iter()
                .map(|w| w.tls_failures[kind as usize])
                .sum::<u64>()
        );
    }
    header(
        &mut out,
        "canarygate_h2_connections_total",
        "HTTP/2 client connections served (ALPN h2 or h2c with prior knowledge).",
        "counter",
    );
    let _ = writeln!(
        out,
        "canarygate_h2_connections_total {}",
        sum(|w| w.h2_connections)
    );
    header(
        &mut out,
        "canarygate_h2_streams_total",
        "HTTP/2 streams (requests) accepted; divided by the connections: streams per connection.",
        "counter",
    );
    let _ = writeln!(out, "canarygate_h2_streams_total {}", sum(|w| w.h2_streams));
    header(
        &mut out,
        "canarygate_h2_client_resets_total",
        "HTTP/2 streams the client reset (RST_STREAM) before their response was complete.",
        "counter",
    );
    let _ = writeln!(
        out,
        "canarygate_h2_client_resets_total {}",
        sum(|w| w.h2_client_resets)
    );
    header(
        &mut out,
        "canarygate_h2_connection_errors_total",
        "HTTP/2 client connections ended by an error, by reason (abuse: rapid reset, CONTINUATION flood and the like, answered with GOAWAY ENHANCE_YOUR_CALM).",
        "counter",
    );
    for kind in H2Failure::ALL {
        let _ = writeln!(
            out,
            "canarygate_h2_connection_errors_total{{reason=\"{}\"}} {}",
            kind.as_str(),
            stats
                .workers
                .iter()
                .map(|w| w.h2_failures[kind as usize])
                .sum::<u64>()
        );
    }
    out
}

/// `# HELP` and `# TYPE` lines of one metric family.
pub(crate) fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn histogram(out: &mut String, name: &str, labels: &str, h: &Histogram<u64>) {
    let mut counts = [0u64; BUCKETS.len()];
    let mut sum_us: f64 = 0.0;
    for v in h.iter_recorded() {
        let us = v.value_iterated_to();
        let n = v.count_at_value();
        sum_us += us as f64 * n as f64;
        let secs = us as f64 / 1e6;
        for (c, le) in counts.iter_mut().zip(BUCKETS) {
            if secs <= le {
                *c += n;
            }
        }
    }
    for (c, le) in counts.iter().zip(BUCKETS) {
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {c}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", h.len());
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", sum_us / 1e6);
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.len());
}

/// Escapes a label value.
pub(crate) fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
