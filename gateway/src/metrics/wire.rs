//! Statistics on the wire, for fleet mode: each gateway publishes its cumulative figures
//! per route and variant (and the kernel's) as JSON under its etcd lease, and the leader
//! reads every member's, sums them and judges the fleet's totals.
//!
//! A [`VariantStats`] becomes an object with one member per field; a histogram becomes a
//! compact list of `[value, count]` pairs, one per recorded bucket (the value a bucket
//! iterates to, so recording it back lands in the same bucket and the histogram comes back
//! identical). Decoding builds every histogram with [`new_histogram`], the configuration
//! every reader uses, so decoded figures add to local ones without failing.
//!
//! What comes back from etcd was written by another process and is untrusted: a missing
//! member, a wrong type, a value outside the histogram's range or counts that overflow
//! give an `Err` naming the field, never a panic. Members this version does not know are
//! ignored, so a newer gateway can add figures without breaking an older leader. Sums
//! saturate rather than wrap or panic.

use gateway_common::{ClassCounters, VARIANT_COUNT};
use serde_json::{Map, Value, json};

use super::{Histogram, VariantStats, new_histogram};
use crate::kernel::{ClassStats, KernelStats};

/// `v` as JSON: every counter, and both latency histograms as `[value, count]` pairs.
pub(crate) fn variant_json(v: &VariantStats) -> Value {
    json!({
        "requests": v.requests,
        "h2_requests": v.h2_requests,
        "responses": v.responses,
        "grpc": v.grpc,
        "grpc_errors": v.grpc_errors,
        "upstream_failures": v.upstream_failures,
        "retries": v.retries,
        "stale_retries": v.stale_retries,
        "upstream_connects": v.upstream_connects,
        "upstream_reuses": v.upstream_reuses,
        "bytes_in": v.bytes_in,
        "bytes_out": v.bytes_out,
        "upstream_latency": histogram_json(&v.upstream_latency),
        "total_latency": histogram_json(&v.total_latency),
        "in_flight": v.in_flight,
        "ejections": v.ejections,
    })
}

/// The [`VariantStats`] that [`variant_json`] wrote; `Err` names the first bad field.
pub(crate) fn variant_from_json(v: &Value) -> Result<VariantStats, String> {
    let o = Obj::new(v, "")?;
    Ok(VariantStats {
        requests: o.u64("requests")?,
        // Absent from gateways older than HTTP/2 support.
        h2_requests: match v.get("h2_requests") {
            None => 0,
            Some(_) => o.u64("h2_requests")?,
        },
        responses: o.u64_array("responses")?,
        // Absent from gateways older than gRPC proxying.
        grpc: match v.get("grpc") {
            None => [0; super::GRPC_CODES],
            Some(_) => o.u64_array("grpc")?,
        },
        grpc_errors: match v.get("grpc_errors") {
            None => 0,
            Some(_) => o.u64("grpc_errors")?,
        },
        upstream_failures: o.u64_array("upstream_failures")?,
        retries: o.u64("retries")?,
        stale_retries: o.u64("stale_retries")?,
        upstream_connects: o.u64("upstream_connects")?,
        upstream_reuses: o.u64("upstream_reuses")?,
        bytes_in: o.u64("bytes_in")?,
        bytes_out: o.u64("bytes_out")?,
        upstream_latency: o.histogram("upstream_latency")?,
        total_latency: o.histogram("total_latency")?,
        in_flight: o.u64("in_flight")?,
        ejections: o.u64("ejections")?,
    })
}

/// Adds every counter and histogram of `other` into `into`, saturating.
pub(crate) fn add_variant(into: &mut VariantStats, other: &VariantStats) {
    let VariantStats {
        requests,
        h2_requests,
        responses,
        grpc,
        grpc_errors,
        upstream_failures,
        retries,
        stale_retries,
        upstream_connects,
        upstream_reuses,
        bytes_in,
        bytes_out,
        upstream_latency,
        total_latency,
        in_flight,
        ejections,
    } = other;
    sat(&mut into.requests, *requests);
    sat(&mut into.h2_requests, *h2_requests);
    sat_all(&mut into.responses, responses);
    sat_all(&mut into.grpc, grpc);
    sat(&mut into.grpc_errors, *grpc_errors);
    sat_all(&mut into.upstream_failures, upstream_failures);
    sat(&mut into.retries, *retries);
    sat(&mut into.stale_retries, *stale_retries);
    sat(&mut into.upstream_connects, *upstream_connects);
    sat(&mut into.upstream_reuses, *upstream_reuses);
    sat(&mut into.bytes_in, *bytes_in);
    sat(&mut into.bytes_out, *bytes_out);
    add_histogram(&mut into.upstream_latency, upstream_latency);
    add_histogram(&mut into.total_latency, total_latency);
    sat(&mut into.in_flight, *in_flight);
    sat(&mut into.ejections, *ejections);
}

/// `k` as JSON: each class (`variants` in [`gateway_common::Variant::index`] order, then
/// `downstream`) with its counters and RTT histogram, and `tag_failures`.
pub(crate) fn kernel_json(k: &KernelStats) -> Value {
    json!({
        "variants": k.variants.iter().map(class_json).collect::<Vec<_>>(),
        "downstream": class_json(&k.downstream),
        "tag_failures": k.tag_failures,
    })
}

/// The [`KernelStats`] that [`kernel_json`] wrote; `Err` names the first bad field.
pub(crate) fn kernel_from_json(v: &Value) -> Result<KernelStats, String> {
    let o = Obj::new(v, "")?;
    let list = o.array("variants", VARIANT_COUNT)?;
    let mut variants: [ClassStats; VARIANT_COUNT] = Default::default();
    for (i, (slot, item)) in variants.iter_mut().zip(list).enumerate() {
        *slot = class_from_json(item, &o.path(&format!("variants[{i}]")))?;
    }
    Ok(KernelStats {
        variants,
        downstream: class_from_json(o.get("downstream")?, &o.path("downstream"))?,
        tag_failures: o.u64("tag_failures")?,
    })
}

/// Adds every counter and RTT histogram of `other` into `into`, saturating.
pub(crate) fn add_kernel(into: &mut KernelStats, other: &KernelStats) {
    for (a, b) in into.variants.iter_mut().zip(&other.variants) {
        add_class(a, b);
    }
    add_class(&mut into.downstream, &other.downstream);
    sat(&mut into.tag_failures, other.tag_failures);
}

fn class_json(c: &ClassStats) -> Value {
    let ClassCounters {
        conns_opened,
        conns_closed,
        bytes_acked,
        bytes_received,
        segs_in,
        segs_out,
        retrans,
        rtt_samples,
        rtt_dropped,
    } = c.counters;
    json!({
        "counters": {
            "conns_opened": conns_opened,
            "conns_closed": conns_closed,
            "bytes_acked": bytes_acked,
            "bytes_received": bytes_received,
            "segs_in": segs_in,
            "segs_out": segs_out,
            "retrans": retrans,
            "rtt_samples": rtt_samples,
            "rtt_dropped": rtt_dropped,
        },
        "rtt": histogram_json(&c.rtt),
    })
}

fn class_from_json(v: &Value, path: &str) -> Result<ClassStats, String> {
    let o = Obj::new(v, path)?;
    let counters_path = o.path("counters");
    let c = Obj::new(o.get("counters")?, &counters_path)?;
    Ok(ClassStats {
        counters: ClassCounters {
            conns_opened: c.u64("conns_opened")?,
            conns_closed: c.u64("conns_closed")?,
            bytes_acked: c.u64("bytes_acked")?,
            bytes_received: c.u64("bytes_received")?,
            segs_in: c.u64("segs_in")?,
            segs_out: c.u64("segs_out")?,
            retrans: c.u64("retrans")?,
            rtt_samples: c.u64("rtt_samples")?,
            rtt_dropped: c.u64("rtt_dropped")?,
        },
        rtt: o.histogram("rtt")?,
    })
}

fn add_class(into: &mut ClassStats, other: &ClassStats) {
    let ClassCounters {
        conns_opened,
        conns_closed,
        bytes_acked,
        bytes_received,
        segs_in,
        segs_out,
        retrans,
        rtt_samples,
        rtt_dropped,
    } = other.counters;
    let c = &mut into.counters;
    sat(&mut c.conns_opened, conns_opened);
    sat(&mut c.conns_closed, conns_closed);
    sat(&mut c.bytes_acked, bytes_acked);
    sat(&mut c.bytes_received, bytes_received);
    sat(&mut c.segs_in, segs_in);
    sat(&mut c.segs_out, segs_out);
    sat(&mut c.retrans, retrans);
    sat(&mut c.rtt_samples, rtt_samples);
    sat(&mut c.rtt_dropped, rtt_dropped);
    add_histogram(&mut into.rtt, &other.rtt);
}

fn sat(into: &mut u64, n: u64) {
    *into = into.saturating_add(n);
}

fn sat_all(into: &mut [u64], other: &[u64]) {
    for (a, &b) in into.iter_mut().zip(other) {
        sat(a, b);
    }
}

/// Adds `other` into `into`; hdrhistogram saturates each bucket and the total.
fn add_histogram(into: &mut Histogram<u64>, other: &Histogram<u64>) {
    if into.add(other).is_err() {
        // Only a histogram with a lower top refuses, and every one here (decoded ones
        // too) comes from `new_histogram`; should one ever not, clamp rather than drop.
        for b in other.iter_recorded() {
            into.saturating_record_n(b.value_iterated_to(), b.count_at_value());
        }
    }
}

/// One `[value, count]` pair per recorded bucket, lowest value first.
fn histogram_json(h: &Histogram<u64>) -> Value {
    Value::Array(
        h.iter_recorded()
            .map(|b| json!([b.value_iterated_to(), b.count_at_value()]))
            .collect(),
    )
}

/// A JSON object being decoded, with the path of its fields for error messages.
struct Obj<'a> {
    map: &'a Map<String, Value>,
    path: &'a str,
}

impl<'a> Obj<'a> {
    fn new(v: &'a Value, path: &'a str) -> Result<Self, String> {
        let map = v.as_object().ok_or_else(|| {
            let at = if path.is_empty() { "statistics" } else { path };
            format!("{at}: expected an object, found {}", kind(v))
        })?;
        Ok(Self { map, path })
    }

    /// The path of member `name`.
    fn path(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.path)
        }
    }

    fn get(&self, name: &str) -> Result<&'a Value, String> {
        self.map
            .get(name)
            .ok_or_else(|| format!("{}: missing", self.path(name)))
    }

    fn u64(&self, name: &str) -> Result<u64, String> {
        as_u64(self.get(name)?, &self.path(name))
    }

    /// An array of exactly `len` items.
    fn array(&self, name: &str, len: usize) -> Result<&'a [Value], String> {
        let path = self.path(name);
        let v = self.get(name)?;
        let items = v
            .as_array()
            .ok_or_else(|| format!("{path}: expected an array, found {}", kind(v)))?;
        if items.len() != len {
            return Err(format!(
                "{path}: expected {len} items, found {}",
                items.len()
            ));
        }
        Ok(items)
    }

    fn u64_array<const N: usize>(&self, name: &str) -> Result<[u64; N], String> {
        let items = self.array(name, N)?;
        let mut out = [0; N];
        for (i, (slot, item)) in out.iter_mut().zip(items).enumerate() {
            *slot = as_u64(item, &format!("{}[{i}]", self.path(name)))?;
        }
        Ok(out)
    }

    /// A histogram from `[value, count]` pairs, in the configuration of [`new_histogram`].
    fn histogram(&self, name: &str) -> Result<Histogram<u64>, String> {
        let path = self.path(name);
        let v = self.get(name)?;
        let pairs = v.as_array().ok_or_else(|| {
            format!(
                "{path}: expected an array of [value, count], found {}",
                kind(v)
            )
        })?;
        let mut h = new_histogram();
        // One pair per bucket at most: bounds the work before any is done.
        if pairs.len() > h.distinct_values() {
            return Err(format!(
                "{path}: {} pairs, more than the histogram's {} buckets",
                pairs.len(),
                h.distinct_values()
            ));
        }
        let mut total: u64 = 0;
        for (i, pair) in pairs.iter().enumerate() {
            let at = format!("{path}[{i}]");
            let (value, count) = match pair.as_array().map(Vec::as_slice) {
                Some([value, count]) => (
                    as_u64(value, &format!("{at}[0]"))?,
                    as_u64(count, &format!("{at}[1]"))?,
                ),
                _ => return Err(format!("{at}: expected [value, count], found {pair}")),
            };
            total = total
                .checked_add(count)
                .ok_or_else(|| format!("{at}: counts add up to more than {}", u64::MAX))?;
            h.record_n(value, count).map_err(|_| {
                format!(
                    "{at}: value {value} is beyond the histogram's highest trackable value {}",
                    h.high()
                )
            })?;
        }
        Ok(h)
    }
}

fn as_u64(v: &Value, path: &str) -> Result<u64, String> {
    v.as_u64()
        .ok_or_else(|| format!("{path}: expected an unsigned 64-bit integer, found {v}"))
}

/// What kind of JSON value `v` is, for error messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests;
