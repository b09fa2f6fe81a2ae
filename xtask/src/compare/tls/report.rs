//! From TLS samples to conclusions: medians per load shape (as the plain comparison
//! takes them, [`summarize`]), canarygate over the better of nginx and HAProxy on every
//! figure (handshakes/s or req/s higher is better, CPU per handshake or request lower
//! is better) and whether it is ahead of both, what each proxy negotiated, and the
//! Markdown and JSON written to `target/compare/tls.{md,json}`.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde::Serialize;

use super::certs::OpensslView;
use crate::compare::bench::{NOISE_PCT, Sample};
use crate::compare::report::{Machine, Summary, find, median, summarize, thousands};

/// The proxies canarygate is held against.
const PEERS: [&str; 2] = ["nginx", "haproxy"];
/// canarygate's configurations, in table order.
const OURS: [&str; 2] = ["canarygate", "canarygate-nokernel"];

/// What a load does with its connections (the discriminant indexes [`Shape::ALL`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Shape {
    /// A new connection and a full handshake per request.
    Full = 0,
    /// A new connection per request, resuming the session of the one before.
    Resumed = 1,
    /// Requests over open connections.
    KeepAlive = 2,
}

impl Shape {
    /// Measured in this order within each round.
    pub(crate) const ALL: [Shape; 3] = [Shape::Full, Shape::Resumed, Shape::KeepAlive];

    /// For progress lines.
    pub(crate) fn short(self) -> &'static str {
        match self {
            Shape::Full => "full",
            Shape::Resumed => "resumed",
            Shape::KeepAlive => "keep-alive",
        }
    }

    /// The rate and the CPU figure, for tables.
    fn figures(self) -> (&'static str, &'static str) {
        match self {
            Shape::Full => ("full handshakes/s", "CPU µs per full handshake"),
            Shape::Resumed => ("resumed handshakes/s", "CPU µs per resumed handshake"),
            Shape::KeepAlive => ("keep-alive req/s", "CPU µs per request"),
        }
    }
}

/// What one proxy negotiated with each client, read before measuring.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Negotiation {
    pub(crate) proxy: &'static str,
    pub(crate) workers: usize,
    /// cg-handshake (rustls): each distinct `protocol suite group`.
    pub(crate) rustls: Vec<String>,
    /// Connections of the short resumed check run, and how many of them resumed.
    pub(crate) check_connections: u64,
    pub(crate) check_resumed: u64,
    /// `openssl s_client` under the pin that wrk runs with.
    pub(crate) openssl: OpensslView,
}

/// One shape's medians and runs.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct ShapeResults {
    pub(crate) shape: Shape,
    pub(crate) summary: Vec<Summary>,
    pub(crate) samples: Vec<Sample>,
}

/// canarygate against its peers on one figure, same workers.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Versus {
    pub(crate) workers: usize,
    pub(crate) figure: String,
    /// Which canarygate configuration.
    pub(crate) canarygate: &'static str,
    pub(crate) value: f64,
    pub(crate) nginx: Option<f64>,
    pub(crate) haproxy: Option<f64>,
    /// canarygate over the better peer.
    pub(crate) ratio: f64,
    pub(crate) higher_is_better: bool,
    /// Better than every peer measured.
    pub(crate) ahead: bool,
}

/// Everything written to tls.json.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct TlsResults {
    pub(crate) machine: Machine,
    /// The one TLS 1.3 suite the clients offer.
    pub(crate) suite: String,
    pub(crate) handshake_clients: usize,
    pub(crate) negotiated: Vec<Negotiation>,
    pub(crate) shapes: Vec<ShapeResults>,
    pub(crate) versus: Vec<Versus>,
}

impl TlsResults {
    /// Summarizes the samples of every shape.
    pub(crate) fn new(
        machine: Machine,
        suite: String,
        handshake_clients: usize,
        negotiated: Vec<Negotiation>,
        samples: Vec<(Shape, Sample)>,
    ) -> TlsResults {
        let mut by_shape: [Vec<Sample>; 3] = Default::default();
        for (shape, x) in samples {
            by_shape[shape as usize].push(x);
        }
        let shapes: Vec<ShapeResults> = Shape::ALL
            .into_iter()
            .zip(by_shape)
            .map(|(shape, samples)| ShapeResults {
                shape,
                summary: summarize(&samples),
                samples,
            })
            .collect();
        let versus = versus(&shapes);
        TlsResults {
            machine,
            suite,
            handshake_clients,
            negotiated,
            shapes,
            versus,
        }
    }

    /// Median share of resumed handshakes of `proxy` with `w` workers, percent.
    fn resumed_pct(&self, proxy: &str, w: usize) -> Option<f64> {
        let s = self.shapes.iter().find(|s| s.shape == Shape::Resumed)?;
        median(
            s.samples
                .iter()
                .filter(|x| x.proxy == proxy && x.workers == w)
                .filter_map(|x| x.resumed_pct)
                .collect(),
        )
    }

    /// The results as Markdown: setup, medians per worker count, canarygate against its
    /// peers, what was negotiated.
    pub(crate) fn markdown(&self) -> String {
        let m = &self.machine;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Measured {} on {} CPUs ({}), kernel {}; {}, {}, {}. TLS terminated by each proxy \
             with one ECDSA P-256 certificate made for the run; every client offers TLS 1.3, \
             {} and X25519 only. Handshakes: cg-handshake (rustls), {} clients, each \
             connection = connect, handshake, one GET with `Connection: close`, close; \
             resumed = TLS 1.3 ticket from the connection before (PSK with (EC)DHE, so X25519 \
             still runs). Keep-alive: wrk -t1 on https:// (OpenSSL, pinned by OPENSSL_CONF). \
             {} rounds x {} s per configuration, proxies alternated; medians shown. CPU is the \
             proxy's own (user + system, all its processes) per handshake or request. Upstreams \
             as in the plain comparison: two nginx, split 95/5, plain HTTP keep-alive.\n",
            m.date,
            m.nproc,
            m.cpu,
            m.kernel,
            m.canarygate,
            m.nginx,
            m.haproxy,
            self.suite,
            self.handshake_clients,
            m.rounds,
            m.duration_s
        );
        let workers: BTreeSet<usize> = self
            .shapes
            .iter()
            .flat_map(|x| x.summary.iter().map(|y| y.workers))
            .collect();
        for &w in &workers {
            self.worker_table(&mut s, w);
        }
        if !self.versus.is_empty() {
            s.push_str(
                "### canarygate / best peer (same workers)\n\n\
                 | workers | figure | canarygate | nginx | HAProxy | canarygate / best peer | ahead of both |\n\
                 |---|---|---|---|---|---|---|\n",
            );
            let configs: BTreeSet<&str> = self.versus.iter().map(|v| v.canarygate).collect();
            for v in &self.versus {
                let label = if configs.len() == 1 {
                    v.figure.clone()
                } else {
                    format!("{} ({})", v.figure, v.canarygate)
                };
                let _ = writeln!(
                    s,
                    "| {} | {label} | {} | {} | {} | {:.2} | {} |",
                    v.workers,
                    figure(v.value),
                    v.nginx.map_or_else(|| "-".into(), figure),
                    v.haproxy.map_or_else(|| "-".into(), figure),
                    v.ratio,
                    if v.ahead { "yes" } else { "**no**" }
                );
            }
            s.push('\n');
        }
        if !self.negotiated.is_empty() {
            s.push_str(
                "### Negotiated (read back before measuring)\n\n\
                 | proxy | workers | rustls client (cg-handshake) | resumed in a short check | OpenSSL client (wrk's, via s_client) |\n\
                 |---|---|---|---|---|\n",
            );
            for n in &self.negotiated {
                let o = &n.openssl;
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} of {} | {} {} {}, {} signature |",
                    n.proxy,
                    n.workers,
                    n.rustls.join("; "),
                    n.check_resumed,
                    n.check_connections,
                    o.protocol,
                    o.suite,
                    o.group,
                    o.signature
                );
            }
            s.push('\n');
        }
        self.noise_notes(&mut s);
        s
    }

    /// One worker count's medians: a row per proxy, a rate and a CPU column per load.
    fn worker_table(&self, s: &mut String, w: usize) {
        let _ = writeln!(s, "### {w} worker{}\n", if w == 1 { "" } else { "s" });
        let mut header = String::from("| proxy |");
        let mut cols = 1;
        for x in &self.shapes {
            let (rate, cpu) = x.shape.figures();
            for c in conns(&x.summary) {
                let _ = write!(header, " {rate} c{c} | {cpu} |");
                cols += 2;
                if x.shape == Shape::Resumed {
                    header.push_str(" resumed share |");
                    cols += 1;
                }
                if x.shape == Shape::KeepAlive {
                    let _ = write!(header, " p99 µs c{c} |");
                    cols += 1;
                }
            }
        }
        let _ = writeln!(s, "{header}\n|{}", "---|".repeat(cols));
        let proxies: Vec<&str> = OURS.iter().chain(PEERS.iter()).copied().collect();
        for p in proxies {
            if !self
                .shapes
                .iter()
                .any(|x| x.summary.iter().any(|y| y.proxy == p && y.workers == w))
            {
                continue;
            }
            let mut row = format!("| {} |", label(p));
            for x in &self.shapes {
                for c in conns(&x.summary) {
                    let f = find(&x.summary, p, w, c);
                    let _ = write!(
                        row,
                        " {} | {} |",
                        f.map_or_else(|| "-".into(), |y| thousands(y.rps)),
                        f.and_then(|y| y.proxy_cpu_us_per_req)
                            .map_or_else(|| "-".into(), |v| format!("{v:.1}"))
                    );
                    if x.shape == Shape::Resumed {
                        let _ = write!(
                            row,
                            " {} |",
                            self.resumed_pct(p, w)
                                .map_or_else(|| "-".into(), |v| format!("{v:.1}%"))
                        );
                    }
                    if x.shape == Shape::KeepAlive {
                        let _ = write!(
                            row,
                            " {} |",
                            f.map_or_else(|| "-".into(), |y| thousands(y.p99_us))
                        );
                    }
                }
            }
            let _ = writeln!(s, "{row}");
        }
        s.push('\n');
    }

    /// Says which medians rest on disturbed runs.
    fn noise_notes(&self, s: &mut String) {
        let mut noisy = Vec::new();
        let mut partly = Vec::new();
        for x in &self.shapes {
            for y in &x.summary {
                let what = format!(
                    "{} {} w{} c{}",
                    x.shape.short(),
                    y.proxy,
                    y.workers,
                    y.connections
                );
                if y.max_other_cpu_pct > NOISE_PCT {
                    noisy.push(format!("{what} (up to {:.0}%)", y.max_other_cpu_pct));
                } else if y.disturbed_rounds > 0 {
                    partly.push(format!(
                        "{what} ({} of {})",
                        y.rounds,
                        y.rounds + y.disturbed_rounds
                    ));
                }
            }
        }
        if !partly.is_empty() {
            let _ = writeln!(
                s,
                "Medians over the quiet rounds only (other processes used more than {NOISE_PCT}% \
                 of the machine in the others, even after retries): {}.\n",
                partly.join(", ")
            );
        }
        if !noisy.is_empty() {
            let _ = writeln!(
                s,
                "**No quiet round** (medians over disturbed rounds; do not trust them): {}.\n",
                noisy.join(", ")
            );
        }
    }
}

/// Connection (client) counts in `summary`, ascending.
fn conns(summary: &[Summary]) -> Vec<usize> {
    let c: BTreeSet<usize> = summary.iter().map(|s| s.connections).collect();
    c.into_iter().collect()
}

fn label(p: &str) -> &'static str {
    match p {
        "canarygate" => "canarygate (kernel accounting auto)",
        "canarygate-nokernel" => "canarygate (kernel accounting off)",
        "nginx" => "nginx, ssl_session_tickets on",
        "haproxy" => "HAProxy, bind ssl crt",
        _ => "?",
    }
}

/// A rate with separators, a CPU figure with one decimal.
fn figure(v: f64) -> String {
    if v >= 1000.0 {
        thousands(v)
    } else {
        format!("{v:.1}")
    }
}

/// Reads one figure from a summary.
type Figure = fn(&Summary) -> Option<f64>;

/// Every canarygate configuration against nginx and HAProxy: for each shape, worker and
/// connection count, the rate and the CPU per handshake or request.
fn versus(shapes: &[ShapeResults]) -> Vec<Versus> {
    let mut out = Vec::new();
    let workers: BTreeSet<usize> = shapes
        .iter()
        .flat_map(|x| x.summary.iter().map(|y| y.workers))
        .collect();
    for w in workers {
        for ours in OURS {
            for x in shapes {
                let (rate, cpu) = x.shape.figures();
                for c in conns(&x.summary) {
                    let Some(cg) = find(&x.summary, ours, w, c) else {
                        continue;
                    };
                    let peer = |p: &str| find(&x.summary, p, w, c);
                    let figures: [(String, bool, Figure); 2] = [
                        (format!("{rate} c{c}"), true, |y| Some(y.rps)),
                        (format!("{cpu} c{c}"), false, |y| y.proxy_cpu_us_per_req),
                    ];
                    for (figure, higher, get) in figures {
                        let Some(value) = get(cg) else {
                            continue;
                        };
                        let [nginx, haproxy] = PEERS.map(|p| peer(p).and_then(get));
                        let peers: Vec<f64> = nginx.into_iter().chain(haproxy).collect();
                        let best = if higher {
                            peers.iter().copied().reduce(f64::max)
                        } else {
                            peers.iter().copied().reduce(f64::min)
                        };
                        let Some(best) = best else {
                            continue;
                        };
                        out.push(Versus {
                            workers: w,
                            figure,
                            canarygate: ours,
                            value,
                            nginx,
                            haproxy,
                            ratio: value / best,
                            higher_is_better: higher,
                            ahead: if higher { value > best } else { value < best },
                        });
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(proxy: &'static str, rps: f64, cpu: f64, resumed: Option<f64>) -> Sample {
        Sample {
            shape: crate::compare::shape::Shape::Keepalive,
            proxy,
            workers: 1,
            connections: 16,
            round: 1,
            requests: 1000,
            rps,
            p50_us: 500.0,
            p99_us: 900.0,
            errors: 0,
            proxy_cpu_us_per_req: Some(cpu),
            proxy_user_pct: Some(80.0),
            loadgen_cpu_us_per_req: 100.0,
            other_cpu_pct: 0.0,
            busy_before_pct: 0.0,
            retries: 0,
            resumed_pct: resumed,
            slow_requests: None,
            slow_p99_us: None,
            slow_errors: None,
        }
    }

    #[test]
    fn ratios_against_the_best_peer() {
        let machine = Machine {
            date: String::new(),
            nproc: 2,
            kernel: String::new(),
            cpu: String::new(),
            canarygate: String::new(),
            nginx: String::new(),
            haproxy: String::new(),
            loadgen: String::new(),
            loadgen_cpus: None,
            pool: 256,
            rounds: 1,
            duration_s: 3.0,
        };
        let samples = vec![
            (
                Shape::Full,
                sample("canarygate-nokernel", 3000.0, 200.0, None),
            ),
            (Shape::Full, sample("nginx", 2000.0, 300.0, None)),
            (Shape::Full, sample("haproxy", 2500.0, 250.0, None)),
            (
                Shape::Resumed,
                sample("canarygate-nokernel", 4000.0, 150.0, Some(99.5)),
            ),
            (Shape::Resumed, sample("nginx", 4400.0, 140.0, Some(99.0))),
        ];
        let r = TlsResults::new(
            machine,
            "TLS_AES_128_GCM_SHA256".into(),
            16,
            Vec::new(),
            samples,
        );
        assert_eq!(r.versus.len(), 4);
        let full = &r.versus[0];
        assert!((full.ratio - 1.2).abs() < 1e-9 && full.ahead);
        let cpu = &r.versus[1];
        assert!((cpu.ratio - 0.8).abs() < 1e-9 && cpu.ahead);
        // One peer measured: it alone is the best; nginx resumes faster here.
        let resumed = &r.versus[2];
        assert!(!resumed.ahead && resumed.haproxy.is_none());
        let md = r.markdown();
        assert!(
            md.contains(
                "| canarygate (kernel accounting off) | 3,000 | 200.0 | 4,000 | 150.0 | 99.5% |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| 1 | resumed handshakes/s c16 | 4,000 | 4,400 | - | 0.91 | **no** |"),
            "{md}"
        );
    }
}
