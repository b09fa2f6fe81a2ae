//! The kernel figures in the Prometheus text format, appended to `/metrics` beside the
//! user-space series: `canarygate_kernel_*{side="upstream",variant="stable|canary"}` for
//! the sockets to each deployment and `{side="downstream"}` for the client sockets.

use std::fmt::Write as _;

use gateway_common::{ClassCounters, Variant};
use hdrhistogram::Histogram;

use super::KernelStats;
use crate::metrics::prometheus::header;

/// Upper bounds (seconds) of the RTT histogram buckets: 10 µs to 1 s.
const RTT_BUCKETS: [f64; 14] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 1.0,
];

/// One counter series: name, help, and the field it shows.
type Series = (&'static str, &'static str, fn(&ClassCounters) -> u64);

/// The counter series, in output order.
const COUNTERS: [Series; 8] = [
    (
        "canarygate_kernel_connections_opened_total",
        "Tagged TCP connections the kernel saw established.",
        |c| c.conns_opened,
    ),
    (
        "canarygate_kernel_connections_closed_total",
        "Tagged TCP connections that reached TCP_CLOSE.",
        |c| c.conns_closed,
    ),
    (
        "canarygate_kernel_bytes_acked_total",
        "Bytes sent and acknowledged by the peer (tcp bytes_acked; +1 per SYN and FIN).",
        |c| c.bytes_acked,
    ),
    (
        "canarygate_kernel_bytes_received_total",
        "Bytes received in order (tcp bytes_received; +1 per FIN).",
        |c| c.bytes_received,
    ),
    (
        "canarygate_kernel_segments_in_total",
        "TCP segments received, pure ACKs included.",
        |c| c.segs_in,
    ),
    (
        "canarygate_kernel_segments_out_total",
        "TCP segments sent, pure ACKs and retransmits included.",
        |c| c.segs_out,
    ),
    (
        "canarygate_kernel_retransmits_total",
        "TCP segments retransmitted.",
        |c| c.retrans,
    ),
    (
        "canarygate_kernel_rtt_samples_dropped_total",
        "RTT samples lost because the ring buffer was full.",
        |c| c.rtt_dropped,
    ),
];

/// Appends the kernel series for `stats` (`None`: accounting is off) to `out`.
pub(crate) fn render(out: &mut String, stats: Option<&KernelStats>) {
    header(
        out,
        "canarygate_kernel_accounting_enabled",
        "1 when per-variant kernel TCP accounting (eBPF) runs.",
        "gauge",
    );
    let _ = writeln!(
        out,
        "canarygate_kernel_accounting_enabled {}",
        u8::from(stats.is_some())
    );
    let Some(stats) = stats else {
        return;
    };
    let classes: Vec<(String, &super::ClassStats)> = Variant::ALL
        .iter()
        .map(|v| {
            (
                format!("side=\"upstream\",variant=\"{}\"", v.as_str()),
                stats.variant(*v),
            )
        })
        .chain(std::iter::once((
            "side=\"downstream\"".to_owned(),
            &stats.downstream,
        )))
        .collect();
    for (name, help, field) in COUNTERS {
        header(out, name, help, "counter");
        for (labels, class) in &classes {
            let _ = writeln!(out, "{name}{{{labels}}} {}", field(&class.counters));
        }
    }
    let name = "canarygate_kernel_rtt_seconds";
    header(
        out,
        name,
        "TCP round-trip times measured by the kernel.",
        "histogram",
    );
    for (labels, class) in &classes {
        histogram(out, name, labels, &class.rtt);
    }
    header(
        out,
        "canarygate_kernel_tag_failures_total",
        "Sockets that could not be tagged (not accounted).",
        "counter",
    );
    let _ = writeln!(
        out,
        "canarygate_kernel_tag_failures_total {}",
        stats.tag_failures
    );
}

/// A Prometheus histogram from an HDR histogram of microseconds.
fn histogram(out: &mut String, name: &str, labels: &str, h: &Histogram<u64>) {
    for le in RTT_BUCKETS {
        let us = (le * 1e6) as u64;
        let n = h.count_between(0, us);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", h.len());
    let sum: f64 = h
        .iter_recorded()
        .map(|v| v.value_iterated_to() as f64 * v.count_at_value() as f64)
        .sum::<f64>()
        / 1e6;
    let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.len());
}
