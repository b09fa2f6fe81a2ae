//! From samples to conclusions: medians per (proxy, workers, connections), ratios of
//! canarygate to nginx and to HAProxy, the targets, and the Markdown and JSON
//! written to `target/compare/`.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde::Serialize;

use super::bench::{NOISE_PCT, Sample};

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
    /// Idle upstream connections per endpoint and worker (canarygate, nginx).
    pub(crate) pool: usize,
    pub(crate) rounds: usize,
    pub(crate) duration_s: f64,
}

/// Medians of one configuration over its rounds.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Summary {
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
}

/// canarygate over another proxy, same workers and connections.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Ratio {
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
    pub(crate) met: bool,
}

/// Everything written to results.json.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Results {
    pub(crate) machine: Machine,
    pub(crate) summary: Vec<Summary>,
    pub(crate) ratios: Vec<Ratio>,
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

/// Medians of `samples` per (workers, connections, proxy), over the quiet runs of each
/// when there is at least one.
pub(crate) fn summarize(samples: &[Sample]) -> Vec<Summary> {
    let keys: BTreeSet<(usize, usize, &'static str)> = samples
        .iter()
        .map(|s| (s.workers, s.connections, s.proxy))
        .collect();
    keys.into_iter()
        .filter_map(|(workers, connections, proxy)| {
            let all: Vec<&Sample> = samples
                .iter()
                .filter(|s| (s.workers, s.connections, s.proxy) == (workers, connections, proxy))
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
            })
        })
        .collect()
}

impl Results {
    /// Summarizes `samples`.
    pub(crate) fn new(machine: Machine, samples: Vec<Sample>) -> Results {
        let summary = summarize(&samples);
        let ratios = ratios(&summary);
        let targets = targets(&summary);
        Results {
            machine,
            summary,
            ratios,
            targets,
            samples,
        }
    }

    fn find(&self, proxy: &str, workers: usize, connections: usize) -> Option<&Summary> {
        find(&self.summary, proxy, workers, connections)
    }

    /// The results as Markdown: machine, medians, ratios, targets.
    pub(crate) fn markdown(&self) -> String {
        let m = &self.machine;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Measured {} on {} CPUs ({}), kernel {}; {}, {}, {}. Load: {}, {} rounds x {} s per \
             configuration, proxies alternated; medians shown. Upstreams: two nginx (1 worker each, \
             `return 200 \"ok\\n\"`), split 95/5, keep-alive on both sides; idle upstream \
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
        let workers: BTreeSet<usize> = self
            .summary
            .iter()
            .map(|s| s.workers)
            .filter(|w| *w > 0)
            .collect();
        let conns: BTreeSet<usize> = self.summary.iter().map(|s| s.connections).collect();
        let conns: Vec<usize> = conns.into_iter().collect();
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
            for p in ["canarygate", "canarygate-nokernel", "nginx", "haproxy"] {
                if self.summary.iter().any(|x| x.proxy == p && x.workers == *w) {
                    s.push_str(&row(proxy_label(p).into(), p, *w));
                }
            }
            s.push('\n');
        }
        if !self.ratios.is_empty() {
            s.push_str("### canarygate / other proxy (same workers and connections)\n\n");
            s.push_str("| workers | conns | vs | req/s ratio (higher better) | p99 ratio (lower better) | CPU/req ratio (lower better) |\n|---|---|---|---|---|---|\n");
            for r in &self.ratios {
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
        if !self.targets.is_empty() {
            s.push_str("### Targets (1 worker each, against the better of nginx and HAProxy)\n\n| target | measured | limit | met |\n|---|---|---|---|\n");
            for t in &self.targets {
                let _ = writeln!(
                    s,
                    "| {} | {:.2} | {:.2} | {} |",
                    t.target,
                    t.measured,
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
                    "{} w{} c{} ({} of {})",
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
                    "{} w{} c{} (up to {:.0}%)",
                    x.proxy, x.workers, x.connections, x.max_other_cpu_pct
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
}

fn proxy_label(p: &str) -> &'static str {
    match p {
        "canarygate" => "canarygate (5% canary, variant header, kernel accounting auto)",
        "canarygate-nokernel" => "canarygate, kernel accounting off",
        "nginx" => "nginx, upstream weights 95/5, keepalive",
        "haproxy" => "HAProxy, weights 95/5, http-reuse always",
        _ => "direct to upstream",
    }
}

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

fn ratios(summary: &[Summary]) -> Vec<Ratio> {
    let mut out = Vec::new();
    for cg in summary.iter().filter(|s| s.proxy == "canarygate") {
        for versus in ["nginx", "haproxy"] {
            if let Some(o) = find(summary, versus, cg.workers, cg.connections) {
                out.push(Ratio {
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

/// For each workers/connections pair measured both ways: canarygate's req/s and CPU per
/// request with kernel accounting `auto` divided by the same with it `off`.
fn kernel_cost(summary: &[Summary]) -> Vec<(usize, usize, f64, Option<f64>)> {
    summary
        .iter()
        .filter(|s| s.proxy == "canarygate")
        .filter_map(|on| {
            let off = find(summary, "canarygate-nokernel", on.workers, on.connections)?;
            let cpu = on
                .proxy_cpu_us_per_req
                .zip(off.proxy_cpu_us_per_req)
                .map(|(a, b)| a / b);
            Some((on.workers, on.connections, on.rps / off.rps, cpu))
        })
        .collect()
}

/// The targets, for 1 worker, against the better of nginx and HAProxy, and the
/// kernel accounting's cost (under 3% in req/s and in CPU per request, 1 worker, c64).
fn targets(summary: &[Summary]) -> Vec<TargetCheck> {
    let mut out = Vec::new();
    for (w, c, rps, cpu) in kernel_cost(summary) {
        if (w, c) != (1, 64) {
            continue;
        }
        // Throughput lost: off/on - 1 (0.03 = accounting costs 3% of req/s).
        let lost = 1.0 / rps - 1.0;
        out.push(TargetCheck {
            target: "kernel accounting req/s cost c64".into(),
            measured: lost,
            limit: 0.03,
            met: lost <= 0.03,
        });
        if let Some(cpu) = cpu {
            let extra = cpu - 1.0;
            out.push(TargetCheck {
                target: "kernel accounting CPU/req cost c64".into(),
                measured: extra,
                limit: 0.03,
                met: extra <= 0.03,
            });
        }
    }
    let conns: BTreeSet<usize> = summary.iter().map(|s| s.connections).collect();
    for c in conns {
        let (Some(cg), Some(n), Some(h)) = (
            find(summary, "canarygate", 1, c),
            find(summary, "nginx", 1, c),
            find(summary, "haproxy", 1, c),
        ) else {
            continue;
        };
        if c == 64 {
            let measured = cg.rps / n.rps.max(h.rps);
            out.push(TargetCheck {
                target: "req/s c64 / best other".into(),
                measured,
                limit: 1.3,
                met: measured >= 1.3,
            });
        }
        if let (Some(a), Some(b), Some(d)) = (
            cg.proxy_cpu_us_per_req,
            n.proxy_cpu_us_per_req,
            h.proxy_cpu_us_per_req,
        ) {
            let measured = a / b.min(d);
            out.push(TargetCheck {
                target: format!("CPU/req c{c} / best other"),
                measured,
                limit: 0.6,
                met: measured <= 0.6,
            });
        }
        let measured = cg.p99_us / n.p99_us.min(h.p99_us);
        out.push(TargetCheck {
            target: format!("p99 c{c} / best other"),
            measured,
            limit: 1.0,
            met: measured <= 1.0,
        });
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
        Sample {
            proxy,
            workers: 1,
            connections: 64,
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
        }
    }

    #[test]
    fn summary_ratios_and_targets() {
        let machine = Machine {
            date: String::new(),
            nproc: 2,
            kernel: String::new(),
            cpu: String::new(),
            canarygate: String::new(),
            nginx: String::new(),
            haproxy: String::new(),
            loadgen: String::new(),
            pool: 64,
            rounds: 3,
            duration_s: 5.0,
        };
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
}
