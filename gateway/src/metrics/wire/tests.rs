//! Round trips, sums and malformed input for the wire format of [`super`].

use serde_json::{Value, json};

use super::*;
use crate::metrics::AtomicHistogram;
use crate::metrics::histogram::MAX_VALUE;

/// Figures with every counter distinct and latencies spread over the whole range, recorded
/// the way a snapshot records them (through a worker's atomic histogram) and directly.
fn sample_variant(seed: u64) -> VariantStats {
    let mut v = VariantStats {
        requests: 1000 + seed,
        responses: [1 + seed, 2, 3, 4, 5 + seed],
        upstream_failures: [6, 7, 8 + seed, 9, 10],
        retries: 11,
        stale_retries: 12 + seed,
        upstream_connects: 13,
        upstream_reuses: 14,
        bytes_in: 15_000_000_000 + seed,
        bytes_out: 16,
        in_flight: 17,
        ejections: 18 + seed,
        ..VariantStats::default()
    };
    let worker = AtomicHistogram::default();
    for us in (1..200_000).step_by(97) {
        worker.record(us + seed);
    }
    worker.merge_into(&mut v.upstream_latency);
    for (value, count) in [(1, 3), (127, 1), (5_000, 40_000 + seed), (MAX_VALUE, 2)] {
        v.total_latency.record_n(value, count).unwrap();
    }
    v
}

fn sample_kernel(seed: u64) -> KernelStats {
    let mut k = KernelStats {
        tag_failures: 3 + seed,
        ..KernelStats::default()
    };
    for (i, class) in k.variants.iter_mut().chain([&mut k.downstream]).enumerate() {
        let n = i as u64 * 100 + seed;
        class.counters = ClassCounters {
            conns_opened: n + 1,
            conns_closed: n + 2,
            bytes_acked: n + 3,
            bytes_received: n + 4,
            segs_in: n + 5,
            segs_out: n + 6,
            retrans: n + 7,
            rtt_samples: n + 8,
            rtt_dropped: n + 9,
        };
        for us in [40, 41, 900, 12_345 + n, 3_000_000] {
            class.rtt.record_n(us, n + 1).unwrap();
        }
    }
    k
}

/// Every counter of `v`, in declaration order.
fn counters(v: &VariantStats) -> Vec<u64> {
    let mut out = vec![v.requests];
    out.extend(v.responses);
    out.extend(v.upstream_failures);
    out.extend([
        v.retries,
        v.stale_retries,
        v.upstream_connects,
        v.upstream_reuses,
        v.bytes_in,
        v.bytes_out,
        v.in_flight,
        v.ejections,
    ]);
    out
}

fn assert_same_histogram(a: &Histogram<u64>, b: &Histogram<u64>) {
    assert_eq!(a, b);
    assert_eq!(a.len(), b.len());
    assert_eq!((a.min(), a.max()), (b.min(), b.max()));
    for q in [0.0, 0.5, 0.9, 0.99, 0.999, 1.0] {
        assert_eq!(
            a.value_at_quantile(q),
            b.value_at_quantile(q),
            "quantile {q}"
        );
    }
    let (la, lb): (Vec<_>, Vec<_>) = (
        a.iter_recorded()
            .map(|x| (x.value_iterated_to(), x.count_at_value()))
            .collect(),
        b.iter_recorded()
            .map(|x| (x.value_iterated_to(), x.count_at_value()))
            .collect(),
    );
    assert_eq!(la, lb);
    assert_eq!(
        (a.low(), a.high(), a.sigfig()),
        (b.low(), b.high(), b.sigfig())
    );
}

/// Through a string too, as etcd stores it.
fn through_text(v: &Value) -> Value {
    serde_json::from_str(&v.to_string()).unwrap()
}

#[test]
fn variant_round_trip_is_exact() {
    let original = sample_variant(0);
    assert!(original.upstream_latency.len() > 2_000);
    let back = variant_from_json(&through_text(&variant_json(&original))).unwrap();
    assert_eq!(counters(&back), counters(&original));
    assert_same_histogram(&back.upstream_latency, &original.upstream_latency);
    assert_same_histogram(&back.total_latency, &original.total_latency);
    assert_eq!(back.total_latency.max(), original.total_latency.max());
    assert_eq!(variant_json(&back), variant_json(&original));
}

#[test]
fn empty_variant_round_trips() {
    let empty = VariantStats::default();
    let j = variant_json(&empty);
    assert_eq!(j["upstream_latency"], json!([]));
    let back = variant_from_json(&j).unwrap();
    assert_eq!(counters(&back), counters(&empty));
    assert_same_histogram(&back.total_latency, &VariantStats::default().total_latency);
}

#[test]
fn histograms_are_compact_pairs() {
    let mut v = VariantStats::default();
    v.total_latency.record_n(250, 7).unwrap();
    v.total_latency.record_n(1_000_000, 1).unwrap();
    let j = variant_json(&v);
    let pairs = j["total_latency"].as_array().unwrap();
    assert_eq!(pairs.len(), 2);
    assert_eq!(pairs[0][1], json!(7));
    assert_eq!(pairs[1][1], json!(1));
}

#[test]
fn kernel_round_trip_is_exact() {
    let original = sample_kernel(5);
    let back = kernel_from_json(&through_text(&kernel_json(&original))).unwrap();
    assert_eq!(back.tag_failures, original.tag_failures);
    for (a, b) in back
        .variants
        .iter()
        .chain([&back.downstream])
        .zip(original.variants.iter().chain([&original.downstream]))
    {
        assert_eq!(a.counters, b.counters);
        assert_same_histogram(&a.rtt, &b.rtt);
    }
    assert_eq!(kernel_json(&back), kernel_json(&original));
}

#[test]
fn add_variant_sums_every_figure() {
    let (a, b) = (sample_variant(1), sample_variant(2));
    let mut sum = a.clone();
    add_variant(&mut sum, &b);
    let want: Vec<u64> = counters(&a)
        .iter()
        .zip(counters(&b))
        .map(|(x, y)| x + y)
        .collect();
    assert_eq!(counters(&sum), want);
    for (s, x, y) in [
        (
            &sum.upstream_latency,
            &a.upstream_latency,
            &b.upstream_latency,
        ),
        (&sum.total_latency, &a.total_latency, &b.total_latency),
    ] {
        assert_eq!(s.len(), x.len() + y.len());
        let mut merged = x.clone();
        merged.add(y).unwrap();
        assert_same_histogram(s, &merged);
    }
    // Summing decoded copies gives the same as summing the originals.
    let mut from_wire = variant_from_json(&variant_json(&a)).unwrap();
    add_variant(
        &mut from_wire,
        &variant_from_json(&variant_json(&b)).unwrap(),
    );
    assert_eq!(variant_json(&from_wire), variant_json(&sum));
}

#[test]
fn add_variant_saturates() {
    let mut a = VariantStats {
        requests: u64::MAX - 1,
        responses: [u64::MAX; 5],
        ..VariantStats::default()
    };
    a.total_latency.record_n(100, u64::MAX - 1).unwrap();
    let b = sample_variant(0);
    add_variant(&mut a, &b);
    assert_eq!(a.requests, u64::MAX);
    assert_eq!(a.responses, [u64::MAX; 5]);
    assert_eq!(a.retries, b.retries);
    assert_eq!(a.total_latency.len(), u64::MAX);
}

#[test]
fn add_kernel_sums_every_figure() {
    let (a, b) = (sample_kernel(1), sample_kernel(20));
    let mut sum = a.clone();
    add_kernel(&mut sum, &b);
    assert_eq!(sum.tag_failures, a.tag_failures + b.tag_failures);
    for ((s, x), y) in sum
        .variants
        .iter()
        .chain([&sum.downstream])
        .zip(a.variants.iter().chain([&a.downstream]))
        .zip(b.variants.iter().chain([&b.downstream]))
    {
        let mut want = x.counters;
        want.add(&y.counters);
        assert_eq!(s.counters, want);
        assert_eq!(s.rtt.len(), x.rtt.len() + y.rtt.len());
    }
    let mut max = KernelStats {
        tag_failures: u64::MAX,
        ..KernelStats::default()
    };
    max.downstream.counters.retrans = u64::MAX;
    add_kernel(&mut max, &b);
    assert_eq!(
        (max.tag_failures, max.downstream.counters.retrans),
        (u64::MAX, u64::MAX)
    );
}

/// A change that breaks one field of an encoded value.
type Edit = Box<dyn FnOnce(&mut Value)>;

/// `variant_json(sample)` with `edit` applied; the error message of decoding it.
fn variant_error(edit: impl FnOnce(&mut Value)) -> String {
    let mut j = variant_json(&sample_variant(0));
    edit(&mut j);
    variant_from_json(&j).expect_err("malformed input decoded")
}

fn kernel_error(edit: impl FnOnce(&mut Value)) -> String {
    let mut j = kernel_json(&sample_kernel(0));
    edit(&mut j);
    kernel_from_json(&j).expect_err("malformed input decoded")
}

fn assert_names(err: &str, field: &str) {
    assert!(
        err.starts_with(&format!("{field}:")),
        "{err:?} should name {field}"
    );
}

#[test]
fn malformed_variant_names_the_field() {
    assert!(
        variant_from_json(&json!([1, 2]))
            .unwrap_err()
            .contains("expected an object")
    );
    assert!(variant_from_json(&Value::Null).is_err());
    let cases: Vec<(&str, Edit)> = vec![
        (
            "retries",
            Box::new(|j| drop(j.as_object_mut().unwrap().remove("retries"))),
        ),
        ("requests", Box::new(|j| j["requests"] = json!("12"))),
        ("bytes_in", Box::new(|j| j["bytes_in"] = json!(-1))),
        ("bytes_out", Box::new(|j| j["bytes_out"] = json!(1.5))),
        ("in_flight", Box::new(|j| j["in_flight"] = json!(null))),
        ("ejections", Box::new(|j| j["ejections"] = json!(1e30))),
        ("responses", Box::new(|j| j["responses"] = json!([1, 2, 3]))),
        ("responses", Box::new(|j| j["responses"] = json!({"0": 1}))),
        (
            "upstream_failures[2]",
            Box::new(|j| j["upstream_failures"][2] = json!(true)),
        ),
        (
            "total_latency",
            Box::new(|j| j["total_latency"] = json!({"1": 2})),
        ),
        (
            "total_latency[0]",
            Box::new(|j| j["total_latency"][0] = json!([1])),
        ),
        (
            "total_latency[1]",
            Box::new(|j| j["total_latency"][1] = json!(5)),
        ),
        (
            "total_latency[0][0]",
            Box::new(|j| j["total_latency"][0] = json!([-3, 1])),
        ),
        (
            "total_latency[0][1]",
            Box::new(|j| j["total_latency"][0] = json!([3, "1"])),
        ),
        // Beyond what the histogram can track: an error, not a clamp or a panic.
        (
            "upstream_latency[0]",
            Box::new(|j| j["upstream_latency"][0] = json!([u64::MAX, 1])),
        ),
        // Counts whose sum overflows u64.
        (
            "total_latency[1]",
            Box::new(|j| {
                j["total_latency"] = json!([[10, u64::MAX], [20, 1]]);
            }),
        ),
        // More pairs than the histogram has buckets: refused before recording any.
        (
            "upstream_latency",
            Box::new(|j| {
                j["upstream_latency"] = Value::Array(vec![json!([1, 1]); 100_000]);
            }),
        ),
    ];
    for (field, edit) in cases {
        assert_names(&variant_error(edit), field);
    }
}

#[test]
fn numbers_beyond_u64_are_refused() {
    let mut text = variant_json(&sample_variant(0)).to_string();
    text = text.replacen("\"retries\":11", "\"retries\":18446744073709551616", 1);
    let j: Value = serde_json::from_str(&text).unwrap();
    assert_names(&variant_from_json(&j).unwrap_err(), "retries");
}

#[test]
fn unknown_members_are_ignored() {
    let mut j = variant_json(&sample_variant(3));
    j["added_by_a_newer_gateway"] = json!({"x": 1});
    let back = variant_from_json(&j).unwrap();
    assert_eq!(counters(&back), counters(&sample_variant(3)));
}

#[test]
fn malformed_kernel_names_the_field() {
    assert!(kernel_from_json(&json!("x")).is_err());
    let cases: Vec<(&str, Edit)> = vec![
        ("variants", Box::new(|j| j["variants"] = json!([]))),
        ("variants", Box::new(|j| j["variants"] = json!(7))),
        (
            "variants[1]",
            Box::new(|j| j["variants"][1] = json!("class")),
        ),
        (
            "variants[1].counters",
            Box::new(|j| {
                drop(j["variants"][1].as_object_mut().unwrap().remove("counters"));
            }),
        ),
        (
            "variants[0].counters.retrans",
            Box::new(|j| {
                j["variants"][0]["counters"]["retrans"] = json!(-2);
            }),
        ),
        (
            "downstream.rtt[0]",
            Box::new(|j| j["downstream"]["rtt"][0][0] = json!(u64::MAX)),
        ),
        (
            "downstream",
            Box::new(|j| drop(j.as_object_mut().unwrap().remove("downstream"))),
        ),
        ("tag_failures", Box::new(|j| j["tag_failures"] = json!([]))),
    ];
    for (field, edit) in cases {
        assert_names(&kernel_error(edit), field);
    }
}
