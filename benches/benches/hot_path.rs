//! Criterion benchmarks of the per-request hot path: variant pick, request-head parse and
//! rewrite, upstream response-head parse, histogram record.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use gateway::AtomicHistogram;
use gateway::dataplane::h1::head::{self, Forwarding, MAX_HEADERS, Rewrite, write_upstream};
use gateway::dataplane::h1::response::parse_response;
use gateway::{Picker, Split};

/// Parses a head and writes its upstream version as the session's route phase does:
/// `parse` over the read buffer, then `write_upstream` with the route's rewrite (a stage
/// variable in the path prefix and one added header, as a typical canary route has).
fn parse_rewrite(
    bytes: &[u8],
    fwd: &Forwarding,
    out: &mut Vec<u8>,
) -> Option<gateway::dataplane::h1::head::RequestHead> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let req = head::parse(bytes, 16 * 1024, &mut headers).ok()??;
    let added = [(b"x-stage".to_vec(), b"prod".to_vec())];
    let rewrite = Rewrite {
        path_prefix: b"/v2",
        strip: 0,
        headers: &added,
        fallback_host: None,
    };
    write_upstream(&req, &rewrite, fwd, out);
    Some(req.head)
}

fn pick(c: &mut Criterion) {
    let split = Split::new(50_000);
    let mut picker = Picker::new(42);
    c.bench_function("pick_random_5pct", |b| {
        b.iter(|| black_box(picker.pick(black_box(&split))));
    });
}

fn parse(c: &mut Criterion) {
    let fwd = Forwarding::new("10.1.2.3".parse().expect("valid ip"), false);
    let mut out = Vec::with_capacity(8192);
    for extra in [0, 16, 60] {
        let head = benches::request_head(extra);
        c.bench_function(
            &format!("parse_rewrite_request_{}_headers", extra + 5),
            |b| {
                b.iter(|| black_box(parse_rewrite(black_box(&head), &fwd, &mut out).is_some()));
            },
        );
    }
    let mut out2 = Vec::with_capacity(8192);
    let head = benches::request_head(0);
    let Some(req) = parse_rewrite(&head, &fwd, &mut out) else {
        panic!("benchmark head must parse")
    };
    let resp = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nok\n";
    c.bench_function("parse_rewrite_response", |b| {
        b.iter(|| {
            black_box(
                parse_response(
                    black_box(resp),
                    &req,
                    Some(("x-variant", "stable")),
                    &mut out2,
                )
                .is_ok(),
            )
        });
    });
}

fn histogram(c: &mut Criterion) {
    let h = AtomicHistogram::default();
    let mut v = 1u64;
    c.bench_function("histogram_record", |b| {
        b.iter(|| {
            v = v.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1) % 100_000;
            h.record(black_box(v));
        });
    });
}

fn sticky(c: &mut Criterion) {
    let salt = b"api";
    let key = b"user-4242";
    c.bench_function("sticky_bucket", |b| {
        b.iter(|| black_box(gateway::bucket(black_box(salt), black_box(key))));
    });
}

/// Publishing a routing snapshot while readers on other threads keep loading it: the
/// reader's per-request cost (a generation load plus, rarely, a pointer reload) under
/// concurrent swaps.
fn snapshot_swap(c: &mut Criterion) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let cfg = gateway::Config::single_route(
        "127.0.0.1:0".parse().expect("addr"),
        vec!["127.0.0.1:1".parse().expect("addr")],
        vec!["127.0.0.1:2".parse().expect("addr")],
        0,
    );
    let control = Arc::new(
        gateway::Control::new(
            cfg,
            vec![Arc::new(gateway::WorkerMetrics::default())],
            gateway::Kernel::default(),
        )
        .expect("no TLS files to load"),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (control, stop) = (Arc::clone(&control), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut p = 0;
            while !stop.load(Ordering::Relaxed) {
                p = (p + 1) % 100;
                let _ = control.set_percent(None, "default", p * 10_000);
                std::thread::sleep(std::time::Duration::from_micros(100));
            }
        })
    };
    let shared = Arc::clone(control.shared());
    let mut cached = (shared.generation(), shared.load());
    c.bench_function("snapshot_read_under_swaps", |b| {
        b.iter(|| {
            let g = shared.generation();
            if g != cached.0 {
                cached = (g, shared.load());
            }
            black_box(cached.1.version)
        });
    });
    c.bench_function("snapshot_publish", |b| {
        b.iter(|| black_box(control.set_percent(None, "default", 50_000).is_ok()));
    });
    stop.store(true, Ordering::Relaxed);
    let _ = writer.join();
}

criterion_group!(benches, pick, sticky, parse, histogram, snapshot_swap);
criterion_main!(benches);
