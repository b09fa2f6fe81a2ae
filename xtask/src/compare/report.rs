//! From samples to conclusions: medians per (shape, proxy, workers, connections),
//! ratios of canarygate to nginx and to HAProxy, to the floor (cg-floor, a byte relay
//! that parses nothing) and to the best peer (the better of nginx and HAProxy, figure by
//! figure), the targets, and the Markdown and JSON written to `target/compare/`.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde::Serialize;

use super::bench::{NOISE_PCT, Sample};
use super::shape::{MIB, Shape, Unit};

/// The proxies the report holds to the floor and the peers.
const OURS: [&str; 2] = ["canarygate", "canarygate-nokernel"];
/// The peers: the best of them, figure by figure, is what canarygate is held to.
const PEERS: [&str; 2] = ["nginx", "haproxy"];
/// The floor: cg-floor, bytes relayed without parsing.
const FLOOR: &str = "floor";

/// The machine and settings a comparison ran with.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Machine {
    pub(crate) date: String,
    pub(crate) nproc: usize,
    pub(crate) kernel: String,
    pub(crate) cpu: String,
    pub(crate) canarygate: String,
    pub(crate) nginx: String,
    pub(crate) haproxy: String,
    pub(crate) loadgen: String,
    /// `--loadgen-cpus`: the CPUs every load generator was pinned to (`taskset -c`).
    pub(crate) loadgen_cpus: Option<String>,
    /// Idle upstream connections per endpoint and worker (canarygate, nginx).
    pub(crate) pool: usize,
    pub(crate) rounds: usize,
    pub(crate) duration_s: f64,
}

/// Medians of one configuration over its rounds.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Summary {
    pub(crate) shape: Shape,
    pub(crate) proxy: &'static str,
    pub(crate) workers: usize,
    pub(crate) connections: usize,
    /// Rounds the medians are taken over: the quiet ones, or all when none was quiet.
    pub(crate) rounds: usize,
    /// Rounds other processes disturbed (over [`NOISE_PCT`] of the machine).
    pub(crate) disturbed_rounds: usize,
    pub(crate) rps: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) proxy_cpu_us_per_req: Option<f64>,
    /// Proxy CPU per request over the load generator's: steadier than either.
    pub(crate) proxy_cpu_per_loadgen_cpu: Option<f64>,
    /// Share of the proxy's CPU in user space, percent.
    pub(crate) proxy_user_pct: Option<f64>,
    pub(crate) errors: u64,
    /// Highest share of the machine other processes used in the rounds used.
    pub(crate) max_other_cpu_pct: f64,
    /// Mixed shape: the slow clients' p99, µs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) slow_p99_us: Option<f64>,
    /// Mixed shape: the slow clients' errors over the rounds used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) slow_errors: Option<u64>,
}

/// One of our proxies against the floor and the best peer, same shape, workers and
/// connections. CPU ratios hold per request, per connection and per byte alike (the
/// same requests, of the same size); throughput per CPU second is their inverse.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Relative {
    pub(crate) shape: Shape,
    pub(crate) workers: usize,
    pub(crate) connections: usize,
    pub(crate) proxy: &'static str,
    /// req/s over the floor's (higher is better).
    pub(crate) floor_rps: Option<f64>,
    /// CPU per request over the floor's (lower is better; 1 is the floor itself).
    pub(crate) floor_cpu: Option<f64>,
    /// req/s over the best peer's (the higher of nginx and HAProxy).
    pub(crate) peer_rps: Option<f64>,
    /// CPU per request over the best peer's (the lower of the two).
    pub(crate) peer_cpu: Option<f64>,
    /// p99 over the best peer's (the lower of the two).
    pub(crate) peer_p99: Option<f64>,
    /// Mixed shape: the slow clients' p99 over the best peer's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) peer_slow_p99: Option<f64>,
}

/// canarygate over another proxy, same workers and connections.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Ratio {
    pub(crate) shape: Shape,
    pub(crate) workers: usize,
    pub(crate) connections: usize,
    pub(crate) versus: &'static str,
    /// Higher is better for canarygate.
    pub(crate) rps: f64,
    /// Lower is better.
    pub(crate) p99: f64,
    /// Lower is better.
    pub(crate) cpu: Option<f64>,
}

/// One of the targets, as measured.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct TargetCheck {
    pub(crate) target: String,
    pub(crate) measured: f64,
    pub(crate) limit: f64,
    /// The measure must be at most the limit (else at least).
    pub(crate) at_most: bool,
    pub(crate) met: bool,
}

/// Everything written to results.json.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Results {
    pub(crate) machine: Machine,
    pub(crate) summary: Vec<Summary>,
    pub(crate) ratios: Vec<Ratio>,
    /// canarygate against the floor and the best peer, every shape.
    pub(crate) relative: Vec<Relative>,
    pub(crate) targets: Vec<TargetCheck>,
    pub(crate) samples: Vec<Sample>,
}

/// The median of `v` (mean of the middle two for an even count); `None` when empty.
pub(crate) fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        f64::midpoint(v[n / 2 - 1], v[n / 2])
    })
}

/// Medians of `samples` per (shape, workers, connections, proxy), over the quiet runs
/// of each when there is at least one.
pub(crate) fn summarize(samples: &[Sample]) -> Vec<Summary> {
    let keys: BTreeSet<(Shape, usize, usize, &'static str)> = samples
        .iter()
        .map(|s| (s.shape, s.workers, s.connections, s.proxy))
        .collect();
    keys.into_iter()
        .filter_map(|(shape, workers, connections, proxy)| {
            let all: Vec<&Sample> = samples
                .iter()
                .filter(|s| {
                    (s.shape, s.workers, s.connections, s.proxy)
                        == (shape, workers, connections, proxy)
                })
                .collect();
            // A run other processes disturbed says more about them than about the
            // proxy: medians use the quiet runs when there is at least one.
            let quiet: Vec<&Sample> = all
                .iter()
                .copied()
                .filter(|s| s.other_cpu_pct <= NOISE_PCT)
                .collect();
            let runs = if quiet.is_empty() { &all } else { &quiet };
            let m = |f: &dyn Fn(&Sample) -> Option<f64>| {
                median(runs.iter().filter_map(|s| f(s)).collect())
            };
            Some(Summary {
                shape,
                proxy,
                workers,
                connections,
                rounds: runs.len(),
                disturbed_rounds: all.len() - quiet.len(),
                rps: m(&|s| Some(s.rps))?,
                p50_us: m(&|s| Some(s.p50_us))?,
                p99_us: m(&|s| Some(s.p99_us))?,
                proxy_cpu_us_per_req: m(&|s| s.proxy_cpu_us_per_req),
                proxy_cpu_per_loadgen_cpu: m(&|s| {
                    s.proxy_cpu_us_per_req
                        .filter(|_| s.loadgen_cpu_us_per_req > 0.0)
                        .map(|p| p / s.loadgen_cpu_us_per_req)
                }),
                proxy_user_pct: m(&|s| s.proxy_user_pct),
                errors: runs.iter().map(|s| s.errors).sum(),
                max_other_cpu_pct: runs.iter().map(|s| s.other_cpu_pct).fold(0.0, f64::max),
                slow_p99_us: m(&|s| s.slow_p99_us),
                slow_errors: runs
                    .iter()
                    .filter_map(|s| s.slow_errors)
                    .reduce(|a, b| a + b),
            })
        })
        .collect()
}

impl Results {
    /// Summarizes `samples`.
    pub(crate) fn new(machine: Machine, samples: Vec<Sample>) -> Results {
        let summary = summarize(&samples);
        let ratios = ratios(&summary);
        let relative = relative(&summary);
        let mut targets = kernel_targets(&summary);
        targets.extend(targets_of(&relative));
        Results {
            machine,
            summary,
            ratios,
            relative,
            targets,
            samples,
        }
    }

    /// The keep-alive medians of `proxy` at `workers` and `connections`.
    fn find(&self, proxy: &str, workers: usize, connections: usize) -> Option<&Summary> {
        at(&self.summary, Shape::Keepalive, proxy, workers, connections)
    }

    /// The results as Markdown: machine, medians, ratios, targets.
    pub(crate) fn markdown(&self) -> String {
        let m = &self.machine;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Measured {} on {} CPUs ({}), kernel {}; {}, {}, {}. Load: {}, {} rounds x {} s per \
             configuration, proxies alternated; medians shown. Upstreams: two nginx (1 worker each, \
             `return 200 \"ok\\n\"` at `/`, 1 MiB and 16 MiB files by sendfile at `/1m` and \
             `/16m`, `POST /upload` answered `ok\\n`), split 95/5 (the floor relays to the \
             stable one only), keep-alive on both sides; idle upstream \
             connections kept per endpoint and worker: {} (canarygate `--pool-max-idle`, nginx \
             `keepalive`; HAProxy keeps all).\n",
            m.date,
            m.nproc,
            m.cpu,
            m.kernel,
            m.canarygate,
            m.nginx,
            m.haproxy,
            m.loadgen,
            m.rounds,
            m.duration_s,
            m.pool
        );
        if let Some(cpus) = &m.loadgen_cpus {
            let _ = writeln!(
                s,
                "Every load generator ran under `taskset -c {cpus}`; the proxies pin \
                 themselves as usual.\n"
            );
        }
        let keepalive: Vec<&Summary> = self
            .summary
            .iter()
            .filter(|x| x.shape == Shape::Keepalive)
            .collect();
        let workers: BTreeSet<usize> = keepalive
            .iter()
            .map(|s| s.workers)
            .filter(|w| *w > 0)
            .collect();
        let conns: BTreeSet<usize> = keepalive.iter().map(|s| s.connections).collect();
        let conns: Vec<usize> = conns.into_iter().collect();
        if !keepalive.is_empty() {
            let _ = writeln!(s, "## keepalive: {}\n", Shape::Keepalive.describe());
        }
        let header = |title: &str| {
            let mut h = format!("| {title} |");
            for c in &conns {
                let _ = write!(h, " req/s c{c} |");
            }
            for c in &conns {
                let _ = write!(h, " p99 µs c{c} |");
            }
            for c in &conns {
                let _ = write!(h, " CPU µs/req c{c} |");
            }
            h.push_str(" proxy CPU / loadgen CPU c64 | user share of proxy CPU c64 |\n|---|");
            h.push_str(&"---|".repeat(conns.len() * 3 + 2));
            h.push('\n');
            h
        };
        let row = |label: String, proxy: &str, w: usize| {
            let mut r = format!("| {label} |");
            for c in &conns {
                let v = self.find(proxy, w, *c).map(|x| thousands(x.rps));
                let _ = write!(r, " {} |", v.unwrap_or_else(|| "-".into()));
            }
            for c in &conns {
                let v = self.find(proxy, w, *c).map(|x| thousands(x.p99_us));
                let _ = write!(r, " {} |", v.unwrap_or_else(|| "-".into()));
            }
            for c in &conns {
                let v = self.find(proxy, w, *c).and_then(|x| x.proxy_cpu_us_per_req);
                let _ = write!(
                    r,
                    " {} |",
                    v.map_or_else(|| "-".into(), |v| format!("{v:.1}"))
                );
            }
            let v = self
                .find(proxy, w, 64)
                .and_then(|x| x.proxy_cpu_per_loadgen_cpu);
            let _ = write!(
                r,
                " {} |",
                v.map_or_else(|| "-".into(), |v| format!("{v:.2}"))
            );
            let v = self.find(proxy, w, 64).and_then(|x| x.proxy_user_pct);
            let _ = writeln!(
                r,
                " {} |",
                v.map_or_else(|| "-".into(), |v| format!("{v:.0}%"))
            );
            r
        };
        for w in &workers {
            let _ = writeln!(s, "### {w} worker{}\n", if *w == 1 { "" } else { "s" });
            s.push_str(&header("proxy"));
            if *w == *workers.first().unwrap_or(&1)
                && self.summary.iter().any(|x| x.proxy == "direct")
            {
                s.push_str(&row("direct to upstream (ceiling)".into(), "direct", 0));
            }
            for p in PROXIES {
                if keepalive.iter().any(|x| x.proxy == p && x.workers == *w) {
                    s.push_str(&row(proxy_label(p).into(), p, *w));
                }
            }
            s.push('\n');
        }
        let ratios: Vec<&Ratio> = self
            .ratios
            .iter()
            .filter(|r| r.shape == Shape::Keepalive)
            .collect();
        if !ratios.is_empty() {
            s.push_str("### canarygate / other proxy (same workers and connections)\n\n");
            s.push_str("| workers | conns | vs | req/s ratio (higher better) | p99 ratio (lower better) | CPU/req ratio (lower better) |\n|---|---|---|---|---|---|\n");
            for r in ratios {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {:.2} | {:.2} | {} |",
                    r.workers,
                    r.connections,
                    r.versus,
                    r.rps,
                    r.p99,
                    r.cpu.map_or_else(|| "-".into(), |c| format!("{c:.2}"))
                );
            }
            s.push('\n');
        }
        let cost = kernel_cost(&self.summary);
        if !cost.is_empty() {
            s.push_str(
                "### Kernel accounting: `auto` (eBPF on) / `off`, same workers and connections\n\n\
                 | workers | conns | req/s ratio | CPU/req ratio |\n|---|---|---|---|\n",
            );
            for (w, c, rps, cpu) in &cost {
                let _ = writeln!(
                    s,
                    "| {w} | {c} | {rps:.3} | {} |",
                    cpu.map_or_else(|| "-".into(), |v| format!("{v:.3}"))
                );
            }
            s.push('\n');
        }
        for shape in Shape::ALL.into_iter().filter(|x| *x != Shape::Keepalive) {
            self.shape_table(&mut s, shape);
        }
        self.relative_table(&mut s);
        if !self.targets.is_empty() {
            s.push_str(
                "## Targets (1 worker each; floor: cg-floor; best peer: the better of nginx \
                 and HAProxy, figure by figure)\n\n| target | measured | limit | met |\n|---|---|---|---|\n",
            );
            for t in &self.targets {
                let _ = writeln!(
                    s,
                    "| {} | {:.2} | {} {:.2} | {} |",
                    t.target,
                    t.measured,
                    if t.at_most { "<=" } else { ">=" },
                    t.limit,
                    if t.met { "yes" } else { "**no**" }
                );
            }
            s.push('\n');
        }
        let partly: Vec<String> = self
            .summary
            .iter()
            .filter(|x| x.disturbed_rounds > 0 && x.max_other_cpu_pct <= NOISE_PCT)
            .map(|x| {
                format!(
                    "{} {} w{} c{} ({} of {})",
                    x.shape.name(),
                    x.proxy,
                    x.workers,
                    x.connections,
                    x.rounds,
                    x.rounds + x.disturbed_rounds
                )
            })
            .collect();
        if !partly.is_empty() {
            let _ = writeln!(
                s,
                "Medians over the quiet rounds only (other processes used more than {NOISE_PCT}% \
                 of the machine in the others, even after retries): {}.\n",
                partly.join(", ")
            );
        }
        let noisy: Vec<String> = self
            .summary
            .iter()
            .filter(|x| x.max_other_cpu_pct > NOISE_PCT)
            .map(|x| {
                format!(
                    "{} {} w{} c{} (up to {:.0}%)",
                    x.shape.name(),
                    x.proxy,
                    x.workers,
                    x.connections,
                    x.max_other_cpu_pct
                )
            })
            .collect();
        if !noisy.is_empty() {
            let _ = writeln!(
                s,
                "**No quiet round** (medians over disturbed rounds; do not trust them): {}.\n",
                noisy.join(", ")
            );
        }
        s
    }

    /// One shape other than keep-alive: a row per proxy and worker count, with its
    /// throughput, p99 and CPU in the shape's unit, and canarygate's ratios to the floor
    /// and the best peer.
    fn shape_table(&self, s: &mut String, shape: Shape) {
        let rows: Vec<&Summary> = PROXIES
            .iter()
            .flat_map(|p| {
                self.summary
                    .iter()
                    .filter(move |x| x.shape == shape && x.proxy == *p)
            })
            .collect();
        if rows.is_empty() {
            return;
        }
        let conns: BTreeSet<usize> = rows.iter().map(|x| x.connections).collect();
        let conns: Vec<String> = conns.iter().map(ToString::to_string).collect();
        let _ = writeln!(
            s,
            "## {}: {}, {} connections\n",
            shape.name(),
            shape.describe(),
            conns.join("/")
        );
        let unit = shape.unit();
        let (rate, cpu) = match unit {
            Unit::Request => ("req/s", "CPU µs/req"),
            Unit::Connection => ("new conn/s", "CPU µs/conn"),
            Unit::Body(_) => ("MiB/s", "CPU µs/MiB | MiB per CPU s"),
        };
        let slow = shape.slow_clients().is_some();
        let _ = write!(s, "| proxy | workers | conns | {rate} | p99 µs | {cpu} |");
        if slow {
            s.push_str(" slow p99 µs | slow errors |");
        }
        s.push_str(
            " errors | rate / floor | CPU / floor | rate / best peer | CPU / best peer | p99 / best peer |\n",
        );
        // proxy, workers, conns, rate, p99, CPU, errors and the five ratios.
        let cols = 12 + usize::from(matches!(unit, Unit::Body(_))) + 2 * usize::from(slow);
        let _ = writeln!(s, "|{}", "---|".repeat(cols));
        let opt = |v: Option<f64>, digits: usize| {
            v.map_or_else(|| "-".into(), |v| format!("{v:.digits$}"))
        };
        for x in rows {
            let _ = write!(
                s,
                "| {} | {} | {} |",
                proxy_label(x.proxy),
                x.workers,
                x.connections
            );
            match unit {
                Unit::Body(bytes) => {
                    let per_mib = x
                        .proxy_cpu_us_per_req
                        .map(|c| c * MIB as f64 / bytes as f64);
                    let _ = write!(
                        s,
                        " {:.1} | {} | {} | {} |",
                        x.rps * bytes as f64 / MIB as f64,
                        thousands(x.p99_us),
                        opt(per_mib, 0),
                        opt(per_mib.filter(|v| *v > 0.0).map(|v| 1e6 / v), 0)
                    );
                }
                Unit::Request | Unit::Connection => {
                    let _ = write!(
                        s,
                        " {} | {} | {} |",
                        thousands(x.rps),
                        thousands(x.p99_us),
                        opt(x.proxy_cpu_us_per_req, 1)
                    );
                }
            }
            if slow {
                let _ = write!(
                    s,
                    " {} | {} |",
                    x.slow_p99_us.map_or_else(|| "-".into(), thousands),
                    x.slow_errors.map_or_else(|| "-".into(), |e| e.to_string())
                );
            }
            let r = self.relative.iter().find(|r| {
                (r.shape, r.proxy, r.workers, r.connections)
                    == (x.shape, x.proxy, x.workers, x.connections)
            });
            let _ = writeln!(
                s,
                " {} | {} | {} | {} | {} | {} |",
                x.errors,
                opt(r.and_then(|r| r.floor_rps), 2),
                opt(r.and_then(|r| r.floor_cpu), 2),
                opt(r.and_then(|r| r.peer_rps), 2),
                opt(r.and_then(|r| r.peer_cpu), 2),
                opt(r.and_then(|r| r.peer_p99), 2)
            );
        }
        s.push('\n');
    }

    /// canarygate against the floor and the best peer in every shape.
    fn relative_table(&self, s: &mut String) {
        if self.relative.is_empty() {
            return;
        }
        s.push_str(
            "## Against the floor and the best peer (same shape, workers and connections)\n\n\
             CPU ratios are per request, per connection and per byte alike; throughput per CPU \
             second is their inverse. Best peer: the higher req/s, the lower CPU and the lower \
             p99 of nginx and HAProxy.\n\n\
             | shape | proxy | workers | conns | req/s / floor | CPU / floor | req/s / best peer | \
             CPU / best peer | p99 / best peer |\n|---|---|---|---|---|---|---|---|---|\n",
        );
        let opt = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.2}"));
        for r in &self.relative {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.shape.name(),
                r.proxy,
                r.workers,
                r.connections,
                opt(r.floor_rps),
                opt(r.floor_cpu),
                opt(r.peer_rps),
                opt(r.peer_cpu),
                opt(r.peer_p99)
            );
        }
        s.push('\n');
    }
}

/// Every proxy, in the order the tables list them.
const PROXIES: [&str; 5] = [
    "canarygate",
    "canarygate-nokernel",
    "nginx",
    "haproxy",
    FLOOR,
];

fn proxy_label(p: &str) -> &'static str {
    match p {
        "canarygate" => "canarygate (5% canary, variant header, kernel accounting auto)",
        "canarygate-nokernel" => "canarygate, kernel accounting off",
        "nginx" => "nginx, upstream weights 95/5, keepalive",
        "haproxy" => "HAProxy, weights 95/5, http-reuse always",
        FLOOR => "floor: cg-floor byte relay to the stable upstream, no parsing",
        _ => "direct to upstream",
    }
}

/// The medians of `proxy` at `workers` and `connections` (the first shape found: the
/// TLS report summarizes each of its shapes apart).
pub(crate) fn find<'a>(
    summary: &'a [Summary],
    proxy: &str,
    workers: usize,
    connections: usize,
) -> Option<&'a Summary> {
    summary
        .iter()
        .find(|s| s.proxy == proxy && s.workers == workers && s.connections == connections)
}

/// The medians of `proxy` in `shape` at `workers` and `connections`.
fn at<'a>(
    summary: &'a [Summary],
    shape: Shape,
    proxy: &str,
    workers: usize,
    connections: usize,
) -> Option<&'a Summary> {
    summary.iter().find(|s| {
        (s.shape, s.proxy, s.workers, s.connections) == (shape, proxy, workers, connections)
    })
}

/// canarygate over nginx and over HAProxy, every shape.
fn ratios(summary: &[Summary]) -> Vec<Ratio> {
    let mut out = Vec::new();
    for cg in summary.iter().filter(|s| s.proxy == "canarygate") {
        for versus in PEERS {
            if let Some(o) = at(summary, cg.shape, versus, cg.workers, cg.connections) {
                out.push(Ratio {
                    shape: cg.shape,
                    workers: cg.workers,
                    connections: cg.connections,
                    versus,
                    rps: cg.rps / o.rps,
                    p99: cg.p99_us / o.p99_us,
                    cpu: cg
                        .proxy_cpu_us_per_req
                        .zip(o.proxy_cpu_us_per_req)
                        .map(|(a, b)| a / b),
                });
            }
        }
    }
    out
}

/// `a / b`, when both are there and `b` is not 0.
fn div(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    a.zip(b).filter(|(_, b)| *b > 0.0).map(|(a, b)| a / b)
}

/// The best of the peers' figures (`better` picks between two).
fn best(
    peers: &[&Summary],
    f: fn(&Summary) -> Option<f64>,
    better: fn(f64, f64) -> f64,
) -> Option<f64> {
    peers.iter().filter_map(|p| f(p)).reduce(better)
}

/// Each of our proxies against the floor and the best peer, for every shape, worker
/// count and connection count measured with at least one of them.
fn relative(summary: &[Summary]) -> Vec<Relative> {
    summary
        .iter()
        .filter(|s| OURS.contains(&s.proxy))
        .filter_map(|ours| {
            let key = |p| at(summary, ours.shape, p, ours.workers, ours.connections);
            let floor = key(FLOOR);
            let peers: Vec<&Summary> = PEERS.iter().filter_map(|p| key(p)).collect();
            if floor.is_none() && peers.is_empty() {
                return None;
            }
            let rps = |s: &Summary| Some(s.rps);
            let cpu = |s: &Summary| s.proxy_cpu_us_per_req;
            let p99 = |s: &Summary| Some(s.p99_us);
            let slow = |s: &Summary| s.slow_p99_us;
            Some(Relative {
                shape: ours.shape,
                workers: ours.workers,
                connections: ours.connections,
                proxy: ours.proxy,
                floor_rps: div(Some(ours.rps), floor.map(|f| f.rps)),
                floor_cpu: div(ours.proxy_cpu_us_per_req, floor.and_then(cpu)),
                peer_rps: div(Some(ours.rps), best(&peers, rps, f64::max)),
                peer_cpu: div(ours.proxy_cpu_us_per_req, best(&peers, cpu, f64::min)),
                peer_p99: div(Some(ours.p99_us), best(&peers, p99, f64::min)),
                peer_slow_p99: div(ours.slow_p99_us, best(&peers, slow, f64::min)),
            })
        })
        .collect()
}

/// For each workers/connections pair of the keep-alive shape measured both ways:
/// canarygate's req/s and CPU per request with kernel accounting `auto` divided by the
/// same with it `off`.
fn kernel_cost(summary: &[Summary]) -> Vec<(usize, usize, f64, Option<f64>)> {
    summary
        .iter()
        .filter(|s| s.proxy == "canarygate" && s.shape == Shape::Keepalive)
        .filter_map(|on| {
            let off = at(
                summary,
                Shape::Keepalive,
                "canarygate-nokernel",
                on.workers,
                on.connections,
            )?;
            let cpu = div(on.proxy_cpu_us_per_req, off.proxy_cpu_us_per_req);
            Some((on.workers, on.connections, on.rps / off.rps, cpu))
        })
        .collect()
}

/// A target: `measured` at most (or at least) `limit`.
fn check(target: String, measured: f64, limit: f64, at_most: bool) -> TargetCheck {
    TargetCheck {
        target,
        measured,
        limit,
        at_most,
        met: if at_most {
            measured <= limit
        } else {
            measured >= limit
        },
    }
}

/// The kernel accounting's cost: under 3% in req/s and in CPU per request, 1 worker,
/// keep-alive c64.
fn kernel_targets(summary: &[Summary]) -> Vec<TargetCheck> {
    let mut out = Vec::new();
    for (w, c, rps, cpu) in kernel_cost(summary) {
        if (w, c) != (1, 64) {
            continue;
        }
        // Throughput lost: off/on - 1 (0.03 = accounting costs 3% of req/s).
        out.push(check(
            "kernel accounting req/s cost c64".into(),
            1.0 / rps - 1.0,
            0.03,
            true,
        ));
        if let Some(cpu) = cpu {
            out.push(check(
                "kernel accounting CPU/req cost c64".into(),
                cpu - 1.0,
                0.03,
                true,
            ));
        }
    }
    out
}

/// The goals, 1 worker each, for canarygate: keep-alive at 16, 64 and 256 connections
/// CPU/req <= 1.15x the floor's and <= 0.75x the best peer's, req/s >= 1.2x the best
/// peer's; churn: new connections/s >= 1.3x the best peer's; large bodies: MiB per CPU
/// second >= 1.5x the best peer's; p99 <= the best peer's in every shape (the slow
/// clients' too in the mixed one).
fn targets_of(relative: &[Relative]) -> Vec<TargetCheck> {
    let mut out = Vec::new();
    for r in relative
        .iter()
        .filter(|r| r.proxy == "canarygate" && r.workers == 1)
    {
        let at = format!("{} c{}", r.shape.name(), r.connections);
        let keepalive = r.shape == Shape::Keepalive && [16, 64, 256].contains(&r.connections);
        if keepalive {
            if let Some(v) = r.floor_cpu {
                out.push(check(format!("{at}: CPU/req / floor"), v, 1.15, true));
            }
            if let Some(v) = r.peer_cpu {
                out.push(check(format!("{at}: CPU/req / best peer"), v, 0.75, true));
            }
            if let Some(v) = r.peer_rps {
                out.push(check(format!("{at}: req/s / best peer"), v, 1.2, false));
            }
        }
        match r.shape.unit() {
            Unit::Connection => {
                if let Some(v) = r.peer_rps {
                    out.push(check(
                        format!("{at}: new conn/s / best peer"),
                        v,
                        1.3,
                        false,
                    ));
                }
            }
            Unit::Body(_) => {
                if let Some(v) = r.peer_cpu.filter(|v| *v > 0.0) {
                    out.push(check(
                        format!("{at}: MiB per CPU s / best peer"),
                        1.0 / v,
                        1.5,
                        false,
                    ));
                }
            }
            Unit::Request => {}
        }
        if keepalive || r.shape != Shape::Keepalive {
            if let Some(v) = r.peer_p99 {
                out.push(check(format!("{at}: p99 / best peer"), v, 1.0, true));
            }
            if let Some(v) = r.peer_slow_p99 {
                out.push(check(
                    format!("{at}: slow clients' p99 / best peer"),
                    v,
                    1.0,
                    true,
                ));
            }
        }
    }
    out
}

/// `51722.3` -> `51,722`.
pub(crate) fn thousands(v: f64) -> String {
    let n = v.round() as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(51_722.3), "51,722");
        assert_eq!(thousands(999.6), "1,000");
        assert_eq!(thousands(12.0), "12");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
    }

    fn sample(proxy: &'static str, round: usize, rps: f64, p99: f64, cpu: f64) -> Sample {
        shaped(Shape::Keepalive, 64, proxy, round, rps, p99, cpu)
    }

    fn shaped(
        shape: Shape,
        connections: usize,
        proxy: &'static str,
        round: usize,
        rps: f64,
        p99: f64,
        cpu: f64,
    ) -> Sample {
        Sample {
            shape,
            proxy,
            workers: 1,
            connections,
            round,
            requests: 1000,
            rps,
            p50_us: p99 / 2.0,
            p99_us: p99,
            errors: 0,
            proxy_cpu_us_per_req: Some(cpu),
            proxy_user_pct: Some(40.0),
            loadgen_cpu_us_per_req: 5.0,
            other_cpu_pct: 0.0,
            busy_before_pct: 0.0,
            retries: 0,
            resumed_pct: None,
            slow_requests: None,
            slow_p99_us: None,
            slow_errors: None,
        }
    }

    fn machine() -> Machine {
        Machine {
            date: String::new(),
            nproc: 2,
            kernel: String::new(),
            cpu: String::new(),
            canarygate: String::new(),
            nginx: String::new(),
            haproxy: String::new(),
            loadgen: String::new(),
            loadgen_cpus: Some("1".into()),
            pool: 64,
            rounds: 3,
            duration_s: 5.0,
        }
    }

    #[test]
    fn summary_ratios_and_targets() {
        let machine = machine();
        let mut samples = Vec::new();
        for r in 0..3 {
            let f = r as f64;
            samples.push(sample("canarygate", r, 90_000.0 + f, 1_000.0, 8.0));
            samples.push(sample("nginx", r, 50_000.0 + f, 2_000.0, 20.0));
            samples.push(sample("haproxy", r, 60_000.0 + f, 2_500.0, 16.0));
            // Kernel accounting off: 1% more req/s, and 8 / 7.6 = 5.3% less CPU.
            samples.push(sample("canarygate-nokernel", r, 90_901.0 + f, 1_000.0, 7.6));
        }
        let res = Results::new(machine, samples);
        assert_eq!(res.summary.len(), 4);
        let cg = res.find("canarygate", 1, 64).expect("summarized");
        assert!((cg.rps - 90_001.0).abs() < 1e-9);
        assert_eq!(cg.proxy_cpu_per_loadgen_cpu, Some(1.6));
        let vs_nginx = res
            .ratios
            .iter()
            .find(|r| r.versus == "nginx")
            .expect("ratio");
        assert!((vs_nginx.p99 - 0.5).abs() < 1e-9);
        assert_eq!(vs_nginx.cpu, Some(0.4));
        // 90,001 / 60,001 = 1.5 >= 1.3; 8 / 16 = 0.5 <= 0.6; 1000 / 2000 = 0.5 <= 1;
        // kernel accounting: ~1% of req/s (met), ~5% of CPU (missed).
        assert_eq!(res.targets.len(), 5);
        let missed: Vec<&str> = res
            .targets
            .iter()
            .filter(|t| !t.met)
            .map(|t| t.target.as_str())
            .collect();
        assert_eq!(missed, ["kernel accounting CPU/req cost c64"]);
        let md = res.markdown();
        assert!(
            md.contains(
                "| canarygate (5% canary, variant header, kernel accounting auto) | 90,001 |"
            ),
            "{md}"
        );
        assert!(md.contains("| 1 | 64 | 0.990 | 1.053 |"), "{md}");
    }

    /// Against the floor and the best peer, figure by figure, in every shape, and the
    /// goals on them.
    #[test]
    fn floor_best_peer_and_goals() {
        let mut samples = vec![
            // Keep-alive c16: canarygate 10 µs/req, floor 9 (1.11 <= 1.15), nginx 20 and
            // HAProxy 12 (best 12: 0.83, missed); req/s 100k over floor 110k and best peer
            // 80k (1.25, met); p99 900 over the best 1,000 (met).
            shaped(
                Shape::Keepalive,
                16,
                "canarygate",
                1,
                100_000.0,
                900.0,
                10.0,
            ),
            shaped(Shape::Keepalive, 16, "floor", 1, 110_000.0, 800.0, 9.0),
            shaped(Shape::Keepalive, 16, "nginx", 1, 80_000.0, 1_500.0, 20.0),
            shaped(Shape::Keepalive, 16, "haproxy", 1, 70_000.0, 1_000.0, 12.0),
            // Churn: 13k new conn/s over the best 10k (1.3, met), p99 2,000 over 1,800 (missed).
            shaped(Shape::Churn, 16, "canarygate", 1, 13_000.0, 2_000.0, 40.0),
            shaped(Shape::Churn, 16, "nginx", 1, 10_000.0, 1_800.0, 60.0),
            shaped(Shape::Churn, 16, "haproxy", 1, 9_000.0, 2_500.0, 50.0),
            // Upload 1 MiB: 200 µs/MiB over the best 400 (2x MiB per CPU s, met).
            shaped(
                Shape::Upload1m,
                16,
                "canarygate",
                1,
                2_000.0,
                9_000.0,
                200.0,
            ),
            shaped(Shape::Upload1m, 16, "nginx", 1, 1_500.0, 10_000.0, 400.0),
            shaped(Shape::Upload1m, 16, "floor", 1, 2_500.0, 8_000.0, 100.0),
        ];
        // Mixed: fast p99 met, slow clients' p99 missed (3,000 over the best 2,000).
        let mut mixed = |proxy, p99, slow| {
            let mut s = shaped(Shape::Mixed, 16, proxy, 1, 50_000.0, p99, 12.0);
            s.slow_p99_us = Some(slow);
            s.slow_errors = Some(0);
            s.slow_requests = Some(2_560);
            samples.push(s);
        };
        mixed("canarygate", 500.0, 3_000.0);
        mixed("nginx", 700.0, 2_000.0);
        mixed("haproxy", 600.0, 2_500.0);
        let res = Results::new(machine(), samples);
        let rel = |shape| {
            res.relative
                .iter()
                .find(|r| r.shape == shape && r.proxy == "canarygate")
                .expect("relative")
        };
        let ka = rel(Shape::Keepalive);
        assert_eq!(ka.peer_cpu, Some(10.0 / 12.0));
        assert_eq!(ka.floor_cpu, Some(10.0 / 9.0));
        assert_eq!(ka.floor_rps, Some(100_000.0 / 110_000.0));
        assert_eq!(ka.peer_rps, Some(1.25));
        assert_eq!(ka.peer_p99, Some(0.9));
        assert_eq!(rel(Shape::Churn).floor_cpu, None);
        assert_eq!(rel(Shape::Upload1m).peer_cpu, Some(0.5));
        assert_eq!(rel(Shape::Mixed).peer_slow_p99, Some(1.5));
        let verdicts: Vec<(&str, bool)> = res
            .targets
            .iter()
            .map(|t| (t.target.as_str(), t.met))
            .collect();
        assert_eq!(
            verdicts,
            [
                ("keepalive c16: CPU/req / floor", true),
                ("keepalive c16: CPU/req / best peer", false),
                ("keepalive c16: req/s / best peer", true),
                ("keepalive c16: p99 / best peer", true),
                ("churn c16: new conn/s / best peer", true),
                ("churn c16: p99 / best peer", false),
                ("upload-1m c16: MiB per CPU s / best peer", true),
                ("upload-1m c16: p99 / best peer", true),
                ("mixed c16: p99 / best peer", true),
                ("mixed c16: slow clients' p99 / best peer", false),
            ]
        );
        let md = res.markdown();
        // 2,000 req/s x 1 MiB; 200 µs/MiB = 5,000 MiB per CPU second; 0.80 of the floor's
        // rate at twice its CPU; 1.33 of the best peer's rate at half its CPU.
        assert!(
            md.contains(
                "| 1 | 16 | 2000.0 | 9,000 | 200 | 5000 | 0 | 0.80 | 2.00 | 1.33 | 0.50 | 0.90 |"
            ),
            "{md}"
        );
        assert!(md.contains("| 3,000 | 0 |"), "{md}");
        assert!(md.contains("taskset -c 1"), "{md}");
        assert!(
            md.contains("| churn c16: new conn/s / best peer | 1.30 | >= 1.30 | yes |"),
            "{md}"
        );
    }
}
