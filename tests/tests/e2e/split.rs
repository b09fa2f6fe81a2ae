//! Traffic split: the share of requests that reach the canary, measured at the upstreams
//! (each upstream's own request counter) through the real binary, and share changes at
//! runtime through the library API while load is running.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use gateway::Variant;
use tests::{Client, TestUpstream, get_request, pipelined_gets, within_binomial_bound};

use crate::{in_process_config, start_gw};

/// Keep-alive connections that drive the split load.
const CONNS: usize = 6;
/// Requests written per `write` on each connection.
const PIPELINE: usize = 8;

/// Sends `total` requests through a gateway started with `--canary-percent PERCENT` and
/// returns (stable, canary) as counted by the upstreams.
fn split_counts(percent: &str, total: u64) -> (u64, u64) {
    let stable = TestUpstream::start("stable");
    let canary = TestUpstream::start("canary");
    let gw = start_gw(
        &stable.addr_str(),
        &["--canary", &canary.addr_str(), "--canary-percent", percent],
    );
    let report = pipelined_gets(gw.addr(), "/", CONNS, total, PIPELINE);
    assert!(
        report.all_ok(),
        "--canary-percent {percent}: failures: statuses {:?}, errors {:?}",
        report.other_status,
        report.errors
    );
    let (s, c) = (stable.requests(), canary.requests());
    assert_eq!(
        s + c,
        total,
        "--canary-percent {percent}: upstreams counted stable {s} + canary {c}, sent {total}"
    );
    assert_eq!(
        (report.count("stable"), report.count("canary")),
        (s, c),
        "client-side tally differs from the upstreams' counters"
    );
    (s, c)
}

fn assert_split(percent: &str, p: f64, total: u64) {
    let (_, canary) = split_counts(percent, total);
    let (ok, np, bound) = within_binomial_bound(canary, total, p);
    eprintln!(
        "--canary-percent {percent}: canary {canary} of {total} (expected {np:.1} +- {bound:.1})"
    );
    assert!(
        ok,
        "--canary-percent {percent}: canary got {canary} of {total}, expected {np:.1} +- {bound:.1} \
         (99.9% binomial bound)"
    );
}

#[test]
fn split_5_percent_within_binomial_bound() {
    assert_split("5", 0.05, 100_000);
}

#[test]
fn split_half_percent_within_binomial_bound() {
    assert_split("0.5", 0.005, 100_000);
}

#[test]
fn split_50_percent_within_binomial_bound() {
    assert_split("50", 0.5, 100_000);
}

#[test]
fn split_0_percent_sends_nothing_to_canary() {
    let (stable, canary) = split_counts("0", 10_000);
    assert_eq!((stable, canary), (10_000, 0));
}

#[test]
fn split_100_percent_sends_nothing_to_stable() {
    let (stable, canary) = split_counts("100", 10_000);
    assert_eq!((stable, canary), (0, 10_000));
}

/// One request seen by a load thread: when it was written and answered, and by whom.
struct Sample {
    sent: Duration,
    answered: Duration,
    body: String,
}

#[test]
fn share_change_at_runtime_reaches_every_worker() {
    let stable = TestUpstream::start("stable");
    let canary = TestUpstream::start("canary");
    let mut cfg = in_process_config(vec![stable.addr()], vec![canary.addr()]);
    cfg.server.workers = 2;
    let gw = gateway::start(cfg).expect("start in-process gateway");
    let addr = gw.local_addr();
    assert_eq!(gw.stats().workers.len(), 2, "stats should list 2 workers");

    let epoch = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    // 16 connections: the chance that all of them land on one of the 2 workers is 2^-15.
    let loaders: Vec<_> = (0..16)
        .map(|_| {
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let mut samples = Vec::new();
                let mut failures = Vec::new();
                let mut client = Client::connect(addr).expect("connect to gateway");
                let req = get_request("/");
                while !stop.load(Ordering::SeqCst) {
                    let sent = epoch.elapsed();
                    match client.request(&req) {
                        Ok(r) if r.status == 200 => samples.push(Sample {
                            sent,
                            answered: epoch.elapsed(),
                            body: r.text(),
                        }),
                        Ok(r) => failures.push(r.describe()),
                        Err(e) => {
                            failures.push(e.to_string());
                            break;
                        }
                    }
                }
                (samples, failures)
            })
        })
        .collect();

    // (ppm, expected upstream, time set_ppm returned, time of the next change)
    let plan: [(u32, Variant); 5] = [
        (1_000_000, Variant::Canary),
        (0, Variant::Stable),
        (1_000_000, Variant::Canary),
        (0, Variant::Stable),
        (1_000_000, Variant::Canary),
    ];
    let mut windows = Vec::new();
    let mut worker_traffic = vec![0_u64; 2];
    let mut problems = Vec::new();
    thread::sleep(Duration::from_millis(200));
    for (ppm, expected) in plan {
        let changing = epoch.elapsed();
        gw.split().set_ppm(ppm);
        let set = epoch.elapsed();
        assert_eq!(gw.split().ppm(), ppm);
        // Requests picked before the change may still be finishing: let them.
        thread::sleep(Duration::from_millis(150));
        let before = gw.stats();
        thread::sleep(Duration::from_millis(400));
        let after = gw.stats();
        let unexpected = match expected {
            Variant::Stable => Variant::Canary,
            Variant::Canary => Variant::Stable,
        };
        for (i, (b, a)) in before.workers.iter().zip(&after.workers).enumerate() {
            let wrong =
                a.variants[unexpected.index()].requests - b.variants[unexpected.index()].requests;
            let right =
                a.variants[expected.index()].requests - b.variants[expected.index()].requests;
            worker_traffic[i] += right + wrong;
            if wrong != 0 {
                problems.push(format!(
                    "after set_ppm({ppm}): worker {i} still routed {wrong} requests to {} \
                     (and {right} to {})",
                    unexpected.as_str(),
                    expected.as_str()
                ));
            }
        }
        windows.push((ppm, expected, changing, set));
    }
    stop.store(true, Ordering::SeqCst);
    let mut samples = Vec::new();
    let mut failures = Vec::new();
    for l in loaders {
        let (s, f) = l.join().expect("load thread");
        samples.extend(s);
        failures.extend(f);
    }
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    // Every request the clients completed is in the stats, as a 2xx of one variant.
    thread::sleep(Duration::from_millis(200));
    let stats = gw.stats();
    let (st, ca) = (
        stats.variant(Variant::Stable),
        stats.variant(Variant::Canary),
    );
    assert_eq!(
        st.requests + ca.requests,
        samples.len() as u64,
        "stats count {} + {} requests, clients completed {}",
        st.requests,
        ca.requests,
        samples.len()
    );
    assert_eq!(
        st.responses[1] + ca.responses[1],
        samples.len() as u64,
        "2xx in stats"
    );
    assert_eq!(
        (st.requests, ca.requests),
        (stable.requests(), canary.requests()),
        "stats per variant differ from the upstreams' counters"
    );

    // Client side: a request written after set_ppm returned and answered before the next
    // change started must have gone to the new variant.
    let mut checked = 0;
    for (i, &(ppm, expected, _, set)) in windows.iter().enumerate() {
        let next = windows.get(i + 1).map_or(Duration::MAX, |w| w.2);
        for s in samples.iter().filter(|s| s.sent > set && s.answered < next) {
            checked += 1;
            if s.body != expected.as_str() {
                problems.push(format!(
                    "request sent {:?} after set_ppm({ppm}) returned was answered by {:?}",
                    s.sent.saturating_sub(set),
                    s.body
                ));
            }
        }
    }
    eprintln!(
        "runtime share change: {} requests, {checked} checked against their window, \
         per-worker traffic {worker_traffic:?}",
        samples.len()
    );
    problems.truncate(20);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(checked > 100, "too few requests checked ({checked})");
    assert!(
        worker_traffic.iter().all(|&t| t > 0),
        "a worker served no requests during the checks: {worker_traffic:?}"
    );
}
