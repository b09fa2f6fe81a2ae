//! The live dashboard (`--dashboard`, `[server] dashboard = true`): one page served on the
//! metrics listener beside `/metrics`, its script, styles and charting library (uPlot,
//! MIT) embedded in the binary, so it needs no network access. The page polls
//! `/dashboard/data`, a JSON document built here from the same figures as `/metrics` and
//! `show ...`: per route and variant the share, totals and latency histograms, the
//! endpoints, the rollout with every verdict, the kill switch, the kernel's figures, and
//! the last five minutes as one point per second (request rate, error rate, latency
//! percentiles of that second, kernel RTT and retransmits), sampled by [`run`] on the
//! control plane so every viewer sees the same history.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gateway_common::Variant;
use serde_json::{Value, json};

use crate::kernel::KernelStats;
use crate::metrics::{Histogram, Stats};
use crate::rollout::controller::Rollouts;

/// Time between two points of the history.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Points kept (five minutes).
const POINTS: usize = 300;

/// One asset of the page: path, content type, bytes.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: [Asset; 4] = [
    Asset {
        path: "/dashboard",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("dashboard/index.html"),
    },
    Asset {
        path: "/dashboard/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("dashboard/app.js"),
    },
    Asset {
        path: "/dashboard/uPlot.iife.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("dashboard/uPlot.iife.min.js"),
    },
    Asset {
        path: "/dashboard/uPlot.min.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("dashboard/uPlot.min.css"),
    },
];

/// An embedded asset by path (`/dashboard/` is the page too); `None` for other paths.
pub(crate) fn asset(path: &str) -> Option<(&'static str, &'static [u8])> {
    let path = if path == "/dashboard/" {
        "/dashboard"
    } else {
        path
    };
    ASSETS
        .iter()
        .find(|a| a.path == path)
        .map(|a| (a.content_type, a.body))
}

/// What one variant did during one sample interval.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct VariantPoint {
    /// Responses per second.
    rps: f64,
    /// Share of responses that were 5xx (`None` without responses).
    error_rate: Option<f64>,
    /// Latency percentiles of the interval's requests, µs.
    p50: Option<u64>,
    p90: Option<u64>,
    p99: Option<u64>,
}

/// The kernel's figures of one variant during one interval.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct KernelPoint {
    rtt_p50: Option<u64>,
    rtt_p99: Option<u64>,
    retransmits_per_s: f64,
}

#[derive(Clone, Debug)]
struct RoutePoint {
    stage: String,
    route: String,
    canary_ppm: u32,
    variants: [VariantPoint; 2],
}

#[derive(Clone, Debug)]
struct Point {
    unix_ms: u64,
    routes: Vec<RoutePoint>,
    kernel: Option<[KernelPoint; 2]>,
}

/// The sampled history and the snapshot the next point is measured from.
#[derive(Debug, Default)]
struct History {
    last: Option<(Instant, Stats, Option<KernelStats>)>,
    points: VecDeque<Point>,
}

/// The dashboard's state on the control plane.
#[derive(Debug, Default)]
pub(crate) struct Dashboard {
    history: Mutex<History>,
}

impl Dashboard {
    /// Takes one point: what happened since the previous call.
    pub(crate) fn sample(&self, stats: Stats, kernel: Option<KernelStats>) {
        let now = Instant::now();
        let mut h = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((at, before, kernel_before)) = &h.last {
            let secs = now.duration_since(*at).as_secs_f64().max(1e-3);
            let point = Point {
                unix_ms: unix_ms(),
                routes: stats
                    .routes
                    .iter()
                    .map(|r| {
                        let prev = before
                            .routes
                            .iter()
                            .find(|p| p.stage == r.stage && p.name == r.name);
                        RoutePoint {
                            stage: r.stage.clone(),
                            route: r.name.clone(),
                            canary_ppm: r.canary_ppm,
                            variants: Variant::ALL.map(|v| {
                                let now = &r.variants[v.index()];
                                variant_point(now, prev.map(|p| &p.variants[v.index()]), secs)
                            }),
                        }
                    })
                    .collect(),
                kernel: kernel.as_ref().map(|k| {
                    Variant::ALL.map(|v| {
                        kernel_point(
                            k.variant(v),
                            kernel_before.as_ref().map(|b| b.variant(v)),
                            secs,
                        )
                    })
                }),
            };
            if h.points.len() == POINTS {
                h.points.pop_front();
            }
            h.points.push_back(point);
        }
        h.last = Some((now, stats, kernel));
    }

    /// The history as JSON: `t` (unix ms) and, per route, aligned arrays per variant.
    fn series(&self) -> Value {
        let h = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        let t: Vec<u64> = h.points.iter().map(|p| p.unix_ms).collect();
        // Routes in the order of the newest point (a reload may add or remove some).
        let routes: Vec<(String, String)> = h
            .points
            .back()
            .map(|p| {
                p.routes
                    .iter()
                    .map(|r| (r.stage.clone(), r.route.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let routes: Vec<Value> = routes
            .iter()
            .map(|(stage, route)| {
                let at = |p: &Point| {
                    p.routes
                        .iter()
                        .find(|r| &r.stage == stage && &r.route == route)
                        .cloned()
                };
                let per: Vec<Option<RoutePoint>> = h.points.iter().map(at).collect();
                let share: Vec<Option<f64>> = per
                    .iter()
                    .map(|r| r.as_ref().map(|r| f64::from(r.canary_ppm) / 1e4))
                    .collect();
                let variant = |v: Variant| {
                    let pick = |f: &dyn Fn(&VariantPoint) -> Value| -> Vec<Value> {
                        per.iter()
                            .map(|r| {
                                r.as_ref()
                                    .map_or(Value::Null, |r| f(&r.variants[v.index()]))
                            })
                            .collect()
                    };
                    json!({
                        "rps": pick(&|p| json!(round3(p.rps))),
                        "error_rate": pick(&|p| json!(p.error_rate.map(round3))),
                        "p50_us": pick(&|p| json!(p.p50)),
                        "p90_us": pick(&|p| json!(p.p90)),
                        "p99_us": pick(&|p| json!(p.p99)),
                    })
                };
                json!({
                    "stage": stage,
                    "route": route,
                    "canary_percent": share,
                    "stable": variant(Variant::Stable),
                    "canary": variant(Variant::Canary),
                })
            })
            .collect();
        let kernel = |v: Variant| {
            let pick = |f: &dyn Fn(&KernelPoint) -> Value| -> Vec<Value> {
                h.points
                    .iter()
                    .map(|p| p.kernel.as_ref().map_or(Value::Null, |k| f(&k[v.index()])))
                    .collect()
            };
            json!({
                "rtt_p50_us": pick(&|k| json!(k.rtt_p50)),
                "rtt_p99_us": pick(&|k| json!(k.rtt_p99)),
                "retransmits_per_s": pick(&|k| json!(round3(k.retransmits_per_s))),
            })
        };
        json!({
            "interval_ms": SAMPLE_EVERY.as_millis() as u64,
            "t": t,
            "routes": routes,
            "kernel": { "stable": kernel(Variant::Stable), "canary": kernel(Variant::Canary) },
        })
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `now - before` of a histogram that only grows; `now` itself when there is no
/// `before` or it does not fit (the route was rebuilt by a reload).
fn delta(now: &Histogram<u64>, before: Option<&Histogram<u64>>) -> Histogram<u64> {
    let mut d = now.clone();
    if let Some(b) = before
        && d.subtract(b).is_err()
    {
        d = now.clone();
    }
    d
}

fn quantile(h: &Histogram<u64>, q: f64) -> Option<u64> {
    (!h.is_empty()).then(|| h.value_at_quantile(q))
}

fn variant_point(
    now: &crate::metrics::VariantStats,
    before: Option<&crate::metrics::VariantStats>,
    secs: f64,
) -> VariantPoint {
    let responses = |s: &crate::metrics::VariantStats| s.responses.iter().sum::<u64>();
    let (answered, errors) = match before {
        // Counters restarted (a reload rebuilt the route): the interval is what they say.
        Some(b) if responses(b) <= responses(now) => (
            responses(now) - responses(b),
            now.responses[4].saturating_sub(b.responses[4]),
        ),
        _ => (responses(now), now.responses[4]),
    };
    let latency = delta(&now.total_latency, before.map(|b| &b.total_latency));
    VariantPoint {
        rps: answered as f64 / secs,
        error_rate: (answered > 0).then(|| errors as f64 / answered as f64),
        p50: quantile(&latency, 0.5),
        p90: quantile(&latency, 0.9),
        p99: quantile(&latency, 0.99),
    }
}

fn kernel_point(
    now: &crate::kernel::ClassStats,
    before: Option<&crate::kernel::ClassStats>,
    secs: f64,
) -> KernelPoint {
    let rtt = delta(&now.rtt, before.map(|b| &b.rtt));
    let retrans = now
        .counters
        .retrans
        .saturating_sub(before.map_or(0, |b| b.counters.retrans));
    KernelPoint {
        rtt_p50: quantile(&rtt, 0.5),
        rtt_p99: quantile(&rtt, 0.99),
        retransmits_per_s: retrans as f64 / secs,
    }
}

/// Latency histogram of one variant as counts per bucket (not cumulative), on the
/// bucket bounds of `/metrics`, so the page can draw stable and canary side by side.
fn histogram_json(h: &Histogram<u64>) -> Value {
    let bounds = crate::metrics::prometheus::BUCKETS;
    let mut counts = vec![0u64; bounds.len() + 1];
    for v in h.iter_recorded() {
        let secs = v.value_iterated_to() as f64 / 1e6;
        let i = bounds
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(bounds.len());
        counts[i] += v.count_at_value();
    }
    json!({ "le": bounds, "counts": counts })
}

/// `GET /dashboard/data`: the current figures and the history.
pub(crate) fn data(rollouts: &Rollouts, dashboard: &Dashboard) -> String {
    rollouts.record_kill_switch_trips();
    let control = rollouts.control();
    let stats = control.stats();
    let kernel = control.kernel_stats();
    let rollout = super::show::rollout::report(rollouts, None, Instant::now()).unwrap_or_default();
    let endpoints = super::show::endpoints::report(control, None).unwrap_or_default();
    let routes: Vec<Value> = stats
        .routes
        .iter()
        .map(|r| {
            let variant = |v: Variant| {
                let s = &r.variants[v.index()];
                let mut j = super::show::stats::variant_json(s);
                j["deployment"] = json!(r.deployments[v.index()]);
                j["latency_histogram"] = histogram_json(&s.total_latency);
                j
            };
            json!({
                "stage": r.stage,
                "route": r.name,
                "canary_percent": f64::from(r.canary_ppm) / 1e4,
                "stable": variant(Variant::Stable),
                "canary": variant(Variant::Canary),
                "endpoints": endpoints.iter().filter(|e| e["route"] == r.name.as_str()).collect::<Vec<_>>(),
                "rollout": rollout.iter().find(|x| x["route"] == r.name.as_str()),
                "kill_switch": super::show::killswitch::kill_switch_json(control, &r.name),
            })
        })
        .collect();
    json!({
        "now_unix_ms": unix_ms(),
        "version": control.version(),
        "routes": routes,
        "kernel": crate::kernel::report::json(kernel.as_ref()),
        "series": dashboard.series(),
    })
    .to_string()
}

/// Samples the figures every [`SAMPLE_EVERY`] for the history (control-plane task).
pub(crate) async fn run(rollouts: Arc<Rollouts>, dashboard: Arc<Dashboard>) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let control = rollouts.control();
        dashboard.sample(control.stats(), control.kernel_stats());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{RouteStats, VariantStats, new_histogram};

    fn route(requests: u64, e5xx: u64, latencies: &[u64]) -> RouteStats {
        let mut v = VariantStats {
            requests,
            responses: [0, requests - e5xx, 0, 0, e5xx],
            ..VariantStats::default()
        };
        for &l in latencies {
            v.total_latency.record(l).unwrap();
        }
        RouteStats {
            stage: "s".into(),
            name: "api".into(),
            canary_ppm: 50_000,
            deployments: [Some("v1".into()), Some("v2".into())],
            variants: [v.clone(), VariantStats::default()],
        }
    }

    fn stats(r: RouteStats) -> Stats {
        Stats {
            workers: Vec::new(),
            routes: vec![r],
        }
    }

    #[test]
    fn a_point_holds_what_happened_in_its_interval_only() {
        let d = Dashboard::default();
        d.sample(stats(route(100, 0, &[1000; 100])), None);
        assert_eq!(
            d.series()["t"].as_array().unwrap().len(),
            0,
            "first call only sets the base"
        );
        // 50 more requests, 10 of them 5xx, all at 9 ms.
        let mut lat = vec![1000; 100];
        lat.extend([9000; 50]);
        d.sample(stats(route(150, 10, &lat)), None);
        let s = d.series();
        let api = &s["routes"][0];
        assert_eq!(api["route"], "api");
        assert_eq!(api["canary_percent"][0], 5.0);
        let p50 = api["stable"]["p50_us"][0].as_u64().unwrap();
        assert!(
            (8950..=9050).contains(&p50),
            "interval p50 {p50} (the 1 ms requests are not in it)"
        );
        assert_eq!(api["stable"]["error_rate"][0], 0.2);
        assert!(api["stable"]["rps"][0].as_f64().unwrap() > 0.0);
        assert_eq!(api["canary"]["rps"][0], 0.0);
        assert_eq!(api["canary"]["error_rate"][0], Value::Null);
        assert_eq!(api["canary"]["p50_us"][0], Value::Null);
    }

    #[test]
    fn counters_that_restart_count_from_zero() {
        let d = Dashboard::default();
        d.sample(stats(route(100, 50, &[1000; 100])), None);
        d.sample(stats(route(10, 1, &[2000; 10])), None);
        let s = d.series();
        assert_eq!(s["routes"][0]["stable"]["error_rate"][0], 0.1);
        assert_eq!(
            s["routes"][0]["stable"]["p50_us"][0]
                .as_u64()
                .map(|p| p / 100),
            Some(20)
        );
    }

    #[test]
    fn history_keeps_the_last_five_minutes() {
        let d = Dashboard::default();
        for _ in 0..POINTS + 10 {
            d.sample(stats(route(1, 0, &[1])), None);
        }
        assert_eq!(d.series()["t"].as_array().unwrap().len(), POINTS);
    }

    #[test]
    fn histogram_counts_per_bucket_on_the_metrics_bounds() {
        let mut h = new_histogram();
        h.record(50).unwrap(); // 0.05 ms: first bucket
        h.record(3000).unwrap(); // 3 ms: le 0.005
        h.record(20_000_000).unwrap(); // 20 s: +Inf
        let j = histogram_json(&h);
        let counts: Vec<u64> = j["counts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_u64().unwrap())
            .collect();
        assert_eq!(counts.iter().sum::<u64>(), 3);
        assert_eq!(counts[0], 1);
        assert_eq!(counts[5], 1);
        assert_eq!(counts[counts.len() - 1], 1);
    }

    #[test]
    fn every_asset_is_served_and_nothing_else() {
        assert!(asset("/dashboard").unwrap().0.starts_with("text/html"));
        assert_eq!(
            asset("/dashboard/").unwrap().1,
            asset("/dashboard").unwrap().1
        );
        let page = std::str::from_utf8(asset("/dashboard").unwrap().1).unwrap();
        for a in &ASSETS[1..] {
            assert!(page.contains(a.path), "the page loads {}", a.path);
        }
        assert!(asset("/dashboard/../metrics").is_none());
        assert!(asset("/dashboard/data").is_none());
    }
}
