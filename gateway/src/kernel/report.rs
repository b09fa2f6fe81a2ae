//! The kernel figures for the admin socket's `show stats`: a JSON object and a text table
//! shown after the per-route user-space table. Kernel accounting is per process (all
//! routes share the gateway's sockets), so the figures are per variant, not per route.

use std::fmt::Write as _;

use gateway_common::Variant;
use serde_json::{Value, json};

use super::{ClassStats, KernelStats};

/// `{"enabled": bool, "stable": {...}, "canary": {...}, "downstream": {...}}`.
pub(crate) fn json(stats: Option<&KernelStats>) -> Value {
    let Some(stats) = stats else {
        return json!({ "enabled": false });
    };
    let mut out = serde_json::Map::new();
    out.insert("enabled".into(), json!(true));
    for v in Variant::ALL {
        out.insert(v.as_str().into(), class_json(stats.variant(v)));
    }
    out.insert("downstream".into(), class_json(&stats.downstream));
    out.insert("tag_failures".into(), json!(stats.tag_failures));
    Value::Object(out)
}

fn class_json(s: &ClassStats) -> Value {
    let c = &s.counters;
    let q = |p: f64| {
        if s.rtt.is_empty() {
            Value::Null
        } else {
            json!(s.rtt.value_at_quantile(p))
        }
    };
    json!({
        "connections_opened": c.conns_opened,
        "connections_closed": c.conns_closed,
        "bytes_acked": c.bytes_acked,
        "bytes_received": c.bytes_received,
        "segments_in": c.segs_in,
        "segments_out": c.segs_out,
        "retransmits": c.retrans,
        "rtt_samples": s.rtt.len(),
        "rtt_us": { "p50": q(0.5), "p90": q(0.9), "p99": q(0.99) },
    })
}

/// A text table, one line per class, or one line saying accounting is off.
pub(crate) fn text(stats: Option<&KernelStats>) -> String {
    let Some(stats) = stats else {
        return "kernel accounting off".into();
    };
    let mut out = String::from(
        "kernel       conns  closed  bytes_acked   bytes_recv    segs_in   segs_out  retrans  rtt_p50_us  rtt_p99_us",
    );
    let rows = Variant::ALL
        .iter()
        .map(|v| (v.as_str(), stats.variant(*v)))
        .chain(std::iter::once(("downstream", &stats.downstream)));
    for (name, s) in rows {
        let c = &s.counters;
        let p = |q: f64| {
            if s.rtt.is_empty() {
                "-".to_owned()
            } else {
                s.rtt.value_at_quantile(q).to_string()
            }
        };
        let _ = write!(
            out,
            "\n{name:<12} {:<6} {:<7} {:<13} {:<13} {:<9} {:<9} {:<8} {:<11} {}",
            c.conns_opened,
            c.conns_closed,
            c.bytes_acked,
            c.bytes_received,
            c.segs_in,
            c.segs_out,
            c.retrans,
            p(0.5),
            p(0.99)
        );
    }
    out
}
