//! `cargo xtask compare`: canarygate side by side with nginx and HAProxy on this machine.
//!
//! Two identical nginx upstreams (1 worker each, each adding an `x-upstream` header
//! naming itself; `ok\n` at `/`, 1 MiB and 16 MiB files at `/1m` and `/16m`, `POST
//! /upload` answered `ok\n`) stand behind every proxy, split 95/5. For each worker count,
//! canarygate, nginx (upstream weights + keepalive), HAProxy (weights + `http-reuse
//! always`) and the floor (`cg-floor`, a byte relay to the stable upstream that parses
//! nothing) run side by side with the same pinning. For each round, traffic shape
//! (`--shapes`, [`shape`]: keep-alive small responses at 16/64/256 connections, a new
//! connection per request, 1 MiB and 16 MiB downloads and uploads, slow and fast
//! clients at once) and connection count the same load (wrk -t1 by default, under
//! `taskset -c` with `--loadgen-cpus`) goes to each of them in turn, in an order that
//! rotates between rounds, and, keep-alive only, once to the upstream directly (the
//! ceiling). Before each run the harness waits for a quiet machine; a run that other
//! processes disturbed is redone. Medians, ratios to nginx, HAProxy, the floor and the
//! best peer, and the targets go to the terminal and to
//! `target/compare/results.{json,md}`.
//!
//! `--tls` compares the three terminating TLS with one certificate made for the run:
//! full and resumed handshakes per second and keep-alive requests over TLS ([`tls`]).
//! `--scale` instead holds 10,000 idle keep-alive connections through canarygate and
//! reports its RSS per connection ([`scale`]); `--callgrind` profiles canarygate under
//! load with valgrind ([`profile`]).
//!
//! Only processes started here are stopped, by PID; everything listens on loopback
//! ports picked free at start.

mod bench;
mod loadgen;
mod procs;
mod profile;
mod report;
mod scale;
mod shape;
mod tls;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::{Args, ValueEnum};

use crate::step::Plan;
use crate::tools::{Package, ensure_packages};
use crate::{cargo, target_dir};
use bench::{Bench, Target};
use loadgen::{Load as _, Loadgen, LoadgenKind};
use procs::{Proc, TlsFiles, Upstreams};
use report::{Machine, Results};
use shape::Shape;

/// Warm-up before each proxy's first measured run of a worker count.
const WARMUP: Duration = Duration::from_secs(1);
/// Estimated fixed cost per run (quiet check, process snapshots), for the time estimate.
const RUN_OVERHEAD_S: f64 = 0.6;

/// Flags of `cargo xtask compare`.
#[derive(Debug, Args)]
pub(crate) struct CompareArgs {
    /// Measured rounds per configuration (medians are reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Length of each measured run (500ms, 5s, 1m; whole seconds for wrk).
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    duration: Duration,
    /// Worker counts to compare (canarygate --workers, nginx worker_processes, HAProxy nbthread).
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    workers: Vec<usize>,
    /// Client connection counts of the keep-alive shape [default: 16,64,256; with --tls,
    /// of the keep-alive runs: 64]. The other shapes run at 16.
    #[arg(long, value_delimiter = ',')]
    connections: Option<Vec<usize>>,
    /// Traffic shapes of the plain comparison [default: all of them].
    #[arg(long, value_delimiter = ',', value_enum)]
    shapes: Option<Vec<Shape>>,
    /// Proxies to compare [default: canarygate,canarygate-nokernel,nginx,haproxy,floor,
    /// canarygate-nokernel in the keep-alive shape only; with --tls:
    /// canarygate-nokernel,nginx,haproxy].
    #[arg(long, value_delimiter = ',', value_enum)]
    proxies: Option<Vec<ProxyKind>>,
    /// Run every load generator under `taskset -c LIST` (e.g. `1`); the proxies pin
    /// themselves as always.
    #[arg(long, value_name = "LIST")]
    loadgen_cpus: Option<String>,
    /// Do not measure the upstream directly.
    #[arg(long)]
    no_direct: bool,
    /// Load generator.
    #[arg(long, value_enum, default_value_t = LoadgenKind::Wrk)]
    loadgen: LoadgenKind,
    /// Use this canarygate binary instead of building target/release/canarygate.
    #[arg(long, value_name = "PATH")]
    canarygate: Option<PathBuf>,
    /// Idle upstream connections kept per endpoint and worker: canarygate
    /// `--pool-max-idle`, nginx `keepalive` (HAProxy keeps all of them).
    #[arg(long, default_value_t = 256)]
    pool: usize,
    /// canarygate's I/O driver (auto, io-uring, epoll); its default when not given.
    #[arg(long, value_name = "DRIVER")]
    io_driver: Option<String>,
    /// Longest wait, in seconds, for a quiet machine before each run.
    #[arg(long, default_value_t = 30)]
    idle_wait: u64,
    /// Times a run is redone when other processes used more than 5% of the machine.
    #[arg(long, default_value_t = 3)]
    retries: u32,
    /// Instead of comparing: hold idle keep-alive connections through canarygate and
    /// report its RSS per connection.
    #[arg(long)]
    scale: bool,
    /// Scale test: connections to hold.
    #[arg(long, default_value_t = 10_000)]
    idle_connections: usize,
    /// Scale test: how long to hold them.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    hold: Duration,
    /// Instead of comparing: profile canarygate (1 worker) with valgrind's callgrind
    /// under a fixed number of requests.
    #[arg(long)]
    callgrind: bool,
    /// Callgrind: requests measured.
    #[arg(long, default_value_t = 20_000)]
    profile_requests: u64,
    /// Instead of plain HTTP: the proxies terminate TLS (one ECDSA P-256 certificate made
    /// for the run); full handshakes/s, resumed handshakes/s and keep-alive req/s over
    /// TLS, each with the proxy's CPU per handshake or request.
    #[arg(long)]
    tls: bool,
    /// TLS: concurrent clients of the handshake runs (cg-handshake threads).
    #[arg(long, default_value_t = 16)]
    handshake_clients: usize,
    /// TLS: the one TLS 1.3 cipher suite every client offers (X25519 is the only group).
    #[arg(long, default_value = "TLS_AES_128_GCM_SHA256", value_parser = ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"])]
    tls_suite: String,
}

impl CompareArgs {
    /// `--connections`, or the mode's default.
    fn connections(&self) -> Vec<usize> {
        self.connections.clone().unwrap_or_else(|| {
            if self.tls {
                vec![64]
            } else {
                vec![16, 64, 256]
            }
        })
    }

    /// `--proxies`, or the mode's default (every proxy any shape runs).
    fn proxies(&self) -> Vec<ProxyKind> {
        self.proxies.clone().unwrap_or_else(|| {
            let mut p = vec![
                ProxyKind::CanarygateNokernel,
                ProxyKind::Nginx,
                ProxyKind::Haproxy,
            ];
            if !self.tls {
                p.insert(0, ProxyKind::Canarygate);
                p.push(ProxyKind::Floor);
            }
            p
        })
    }

    /// The proxies `shape` runs against: `--proxies`, or by default all of them in the
    /// keep-alive shape and all but canarygate-nokernel in the others.
    fn proxies_of(&self, shape: Shape) -> Vec<ProxyKind> {
        let all = self.proxies();
        if self.proxies.is_some() || shape == Shape::Keepalive {
            return all;
        }
        all.into_iter()
            .filter(|p| *p != ProxyKind::CanarygateNokernel)
            .collect()
    }

    /// `--shapes`, or all of them.
    fn shapes(&self) -> Vec<Shape> {
        self.shapes.clone().unwrap_or_else(|| Shape::ALL.to_vec())
    }
}

/// A proxy the comparison can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum ProxyKind {
    /// canarygate as deployed: `--kernel-accounting auto` (on when run as root).
    Canarygate,
    /// canarygate with `--kernel-accounting off`, to price the eBPF accounting.
    CanarygateNokernel,
    /// nginx as a proxy: upstream weights 95/5, keepalive.
    Nginx,
    /// HAProxy: weights 95/5, `http-reuse always`.
    Haproxy,
    /// cg-floor: bytes relayed to the stable upstream, one upstream connection per client
    /// connection, nothing parsed (plain comparison only).
    Floor,
}

impl ProxyKind {
    /// The name `--proxies` takes and the results use.
    fn name(self) -> &'static str {
        match self {
            ProxyKind::Canarygate => "canarygate",
            ProxyKind::CanarygateNokernel => "canarygate-nokernel",
            ProxyKind::Nginx => "nginx",
            ProxyKind::Haproxy => "haproxy",
            ProxyKind::Floor => "floor",
        }
    }
}

/// Parses `500ms`, `5s`, `1m` or bare seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    n.parse::<f64>()
        .ok()
        .and_then(|v| Duration::try_from_secs_f64(v * scale).ok())
        .ok_or_else(|| format!("{s:?} is not a duration (500ms, 5s, 1m)"))
}

const NGINX: Package = Package {
    name: "nginx-light",
    program: "/usr/sbin/nginx",
};
const HAPROXY: Package = Package {
    name: "haproxy",
    program: "/usr/sbin/haproxy",
};
const WRK: Package = Package {
    name: "wrk",
    program: "/usr/bin/wrk",
};
const VALGRIND: Package = Package {
    name: "valgrind",
    program: "/usr/bin/valgrind",
};

/// Binaries under test and the directories results and logs go to.
pub(crate) struct Setup {
    pub(crate) canarygate: PathBuf,
    pub(crate) cg_load: PathBuf,
    pub(crate) cg_handshake: PathBuf,
    /// cg-floor, the byte relay (built only when the floor is compared).
    pub(crate) cg_floor: PathBuf,
    /// `target/compare`: results.
    pub(crate) out: PathBuf,
    /// `target/compare/run`: configs and logs of the processes.
    pub(crate) run: PathBuf,
}

/// Runs the comparison (plain or TLS), the scale test or the profile, as the flags say.
pub(crate) fn run(root: &Path, args: &CompareArgs) -> Result<()> {
    if args.scale {
        return scale::run(root, args);
    }
    if args.callgrind {
        return profile::run(root, args);
    }
    if args.tls {
        return tls::run(root, args);
    }
    compare(root, args)
}

/// Installs missing tools, builds the binaries, prepares the output directories.
fn setup(root: &Path, args: &CompareArgs, plan: &mut Plan, packages: &[Package]) -> Result<Setup> {
    let mut names = vec!["protobuf-compiler"];
    names.extend(packages.iter().map(|p| p.name));
    // The builds below compile the gateway (cg-load links it too), which needs protoc.
    plan.step("tools", &names.join(", "), || {
        crate::tools::ensure_build()?;
        ensure_packages(packages)
    })?;
    let release = target_dir(root).join("release");
    let bins = [
        "--bin",
        "cg-load",
        "--bin",
        "cg-handshake",
        "--bin",
        "cg-floor",
    ];
    let canarygate = if let Some(path) = &args.canarygate {
        plan.command(
            "build",
            cargo(root)
                .args(["build", "--release", "-p", "benches"])
                .args(bins),
        )?;
        if !path.is_file() {
            bail!("--canarygate {}: no such file", path.display());
        }
        path.canonicalize()?
    } else {
        plan.command(
            "build",
            cargo(root)
                .args([
                    "build",
                    "--release",
                    "-p",
                    "gateway",
                    "-p",
                    "benches",
                    "--bin",
                    "canarygate",
                ])
                .args(bins),
        )?;
        release.join("canarygate")
    };
    let out = target_dir(root).join("compare");
    let run = out.join("run");
    fs::create_dir_all(&run).with_context(|| format!("creating {}", run.display()))?;
    Ok(Setup {
        canarygate,
        cg_load: release.join("cg-load"),
        cg_handshake: release.join("cg-handshake"),
        cg_floor: release.join("cg-floor"),
        out,
        run,
    })
}

/// `--io-driver` for canarygate, when asked for.
pub(crate) fn driver_args(args: &CompareArgs) -> Vec<&str> {
    args.io_driver
        .as_deref()
        .map(|d| vec!["--io-driver", d])
        .unwrap_or_default()
}

/// Refuses counts that leave nothing to measure.
fn check_counts(args: &CompareArgs) -> Result<()> {
    if args.rounds == 0
        || args.workers.is_empty()
        || args.connections().is_empty()
        || args.proxies().is_empty()
    {
        bail!("--rounds, --workers, --connections and --proxies must not be empty");
    }
    if args.workers.contains(&0) || args.connections().contains(&0) {
        bail!("--workers and --connections: counts start at 1");
    }
    if args.shapes.as_ref().is_some_and(Vec::is_empty) {
        bail!("--shapes must not be empty");
    }
    if (args.tls || args.scale || args.callgrind) && args.proxies().contains(&ProxyKind::Floor) {
        bail!("--proxies floor: the floor runs in the plain comparison only");
    }
    Ok(())
}

/// One shape of the plain comparison, as it runs: its load, connection counts and proxies.
struct ShapeRun {
    shape: Shape,
    /// The load generator set up for the shape.
    load: Loadgen,
    connections: Vec<usize>,
    proxies: Vec<ProxyKind>,
}

/// Measured runs per round of worker count `first` (the first one also measures the
/// upstream directly, keep-alive only, unless `--no-direct`), and the shapes' names.
fn runs_per_round(args: &CompareArgs, first: bool) -> usize {
    let connections = args.connections();
    args.shapes()
        .into_iter()
        .map(|shape| {
            let direct = first && !args.no_direct && shape == Shape::Keepalive;
            shape.connections(&connections).len()
                * (args.proxies_of(shape).len() + usize::from(direct))
        })
        .sum()
}

/// Runs the plain comparison: every shape, worker count and round.
fn compare(root: &Path, args: &CompareArgs) -> Result<()> {
    check_counts(args)?;
    let (proxies, connections, shapes) = (args.proxies(), args.connections(), args.shapes());
    let per_round: usize = (0..args.workers.len())
        .map(|i| runs_per_round(args, i == 0))
        .sum();
    let runs = per_round * args.rounds;
    let warmups = args.workers.len() * proxies.len() + usize::from(!args.no_direct);
    let secs = runs as f64 * (args.duration.as_secs_f64() + RUN_OVERHEAD_S)
        + warmups as f64 * WARMUP.as_secs_f64();
    let names: Vec<&str> = shapes.iter().map(|s| s.name()).collect();
    eprintln!(
        "xtask: compare: {runs} measured runs of {:.1} s ({} rounds x {per_round} runs per round: \
         shapes {} over {} worker counts, keep-alive at {connections:?} connections, the others \
         at {}), expected about {:.1} min after the build (longer if the machine is busy)",
        args.duration.as_secs_f64(),
        args.rounds,
        names.join(", "),
        args.workers.len(),
        shape::SHAPE_CONNECTIONS,
        secs / 60.0
    );

    let mut plan = Plan::new(4 + args.workers.len());
    let setup = setup(root, args, &mut plan, &[NGINX, HAPROXY, WRK])?;
    let loadgen = Loadgen::new(
        args.loadgen,
        setup.cg_load.clone(),
        args.loadgen_cpus.clone(),
    );
    let runs = shapes
        .iter()
        .map(|&shape| {
            Ok(ShapeRun {
                shape,
                load: loadgen.for_shape(shape, &setup.run)?,
                connections: shape.connections(&connections),
                proxies: args.proxies_of(shape),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut upstreams = None;
    plan.step(
        "upstreams",
        "two nginx, 1 worker each (and the 1 MiB / 16 MiB bodies they serve)",
        || {
            upstreams = Some(Upstreams::start(&setup.run)?);
            Ok(())
        },
    )?;
    let up = upstreams.context("upstreams did not start")?;
    let hz = clock_ticks();
    let mut samples = Vec::new();
    for (i, &w) in args.workers.iter().enumerate() {
        let detail = format!(
            "{} with {w} worker{}: {}, {} rounds",
            proxies
                .iter()
                .map(|p| p.name())
                .collect::<Vec<_>>()
                .join(", "),
            if w == 1 { "" } else { "s" },
            names.join(", "),
            args.rounds
        );
        plan.step(&format!("measure w{w}"), &detail, || {
            let ctx = Ctx {
                args,
                setup: &setup,
                up: &up,
                warm: &loadgen,
                runs: &runs,
                hz,
            };
            let direct = !args.no_direct && i == 0;
            samples.extend(measure_workers(&ctx, w, direct)?);
            Ok(())
        })?;
    }
    let machine = machine(args, &setup.canarygate);
    let results = Results::new(machine, samples);
    plan.step(
        "report",
        "target/compare/results.json and results.md",
        || {
            let md = results.markdown();
            fs::write(setup.out.join("results.md"), &md)?;
            fs::write(
                setup.out.join("results.json"),
                serde_json::to_string_pretty(&results)?,
            )?;
            println!("{md}");
            Ok(())
        },
    )?;
    drop(up);
    plan.finish();
    Ok(())
}

/// What every worker count's measurement shares.
struct Ctx<'a> {
    args: &'a CompareArgs,
    setup: &'a Setup,
    up: &'a Upstreams,
    /// Plain keep-alive load, for the warm-up.
    warm: &'a Loadgen,
    runs: &'a [ShapeRun],
    hz: f64,
}

/// Starts the proxies with `w` workers, warms them up, and measures every round of
/// every shape, the proxies of each taking turns in an order that rotates.
fn measure_workers(ctx: &Ctx<'_>, w: usize, direct: bool) -> Result<Vec<bench::Sample>> {
    let (args, up) = (ctx.args, ctx.up);
    let mut procs: Vec<(ProxyKind, Proc, u16)> = Vec::new();
    for kind in args.proxies() {
        let (p, port) = start_proxy(kind, args, ctx.setup, up, w, None)?;
        procs.push((kind, p, port));
    }
    // Each shape's targets: its proxies (and, keep-alive only, the upstream directly).
    let targets_of = |run: &ShapeRun| -> Vec<Target<'_>> {
        let mut t: Vec<Target<'_>> = procs
            .iter()
            .filter(|(kind, _, _)| run.proxies.contains(kind))
            .map(|(kind, p, port)| Target {
                proxy: kind.name(),
                workers: w,
                url: format!("http://127.0.0.1:{port}{}", run.shape.path()),
                proc: Some(p),
            })
            .collect();
        if direct && run.shape == Shape::Keepalive {
            t.push(Target {
                proxy: "direct",
                workers: 0,
                url: format!("http://127.0.0.1:{}{}", up.stable.1, run.shape.path()),
                proc: None,
            });
        }
        t
    };
    let mut ours: Vec<&Proc> = procs.iter().map(|(_, p, _)| p).collect();
    ours.extend(up.procs());
    let mut warm: Vec<String> = procs
        .iter()
        .map(|(_, _, port)| format!("http://127.0.0.1:{port}/"))
        .collect();
    if direct {
        warm.push(format!("http://127.0.0.1:{}/", up.stable.1));
    }
    for url in &warm {
        ctx.warm
            .run(url, 64, WARMUP)
            .with_context(|| format!("warming up {url}"))?;
    }
    let shapes: Vec<(&ShapeRun, Vec<Target<'_>>)> =
        ctx.runs.iter().map(|r| (r, targets_of(r))).collect();
    let total: usize = args.rounds
        * shapes
            .iter()
            .map(|(r, t)| r.connections.len() * t.len())
            .sum::<usize>();
    let mut samples = Vec::with_capacity(total);
    for round in 0..args.rounds {
        for (si, (run, targets)) in shapes.iter().enumerate() {
            let bench = Bench {
                shape: run.shape,
                loadgen: &run.load,
                duration: args.duration,
                ours: ours.clone(),
                idle_wait: Duration::from_secs(args.idle_wait),
                hz: ctx.hz,
                retries: args.retries,
            };
            for (ci, &c) in run.connections.iter().enumerate() {
                let n = targets.len();
                for k in 0..n {
                    let t = &targets[(k + round + si + ci) % n];
                    let s = bench.measure(t, c, round + 1)?;
                    eprintln!(
                        "xtask:   [{:>3}/{total}] w{w} {:<12} c{c:<3} round {} {:<10} {:>9.0} req/s  p50 {:>6.0} µs  p99 {:>6.0} µs  CPU {} µs/req  (loadgen {:.1} µs/req, other {:.1}%{}{})",
                        samples.len() + 1,
                        run.shape.name(),
                        round + 1,
                        t.proxy,
                        s.rps,
                        s.p50_us,
                        s.p99_us,
                        s.proxy_cpu_us_per_req
                            .map_or_else(|| "-".into(), |v| format!("{v:.1}")),
                        s.loadgen_cpu_us_per_req,
                        s.other_cpu_pct,
                        s.slow_p99_us.map_or_else(String::new, |p| format!(
                            ", slow clients p99 {p:.0} µs, {} errors",
                            s.slow_errors.unwrap_or(0)
                        )),
                        if s.errors > 0 {
                            format!(", {} errors", s.errors)
                        } else {
                            String::new()
                        }
                    );
                    samples.push(s);
                }
            }
        }
    }
    // A proxy that died mid-run would have produced errors, not figures: say so.
    drop(shapes);
    for (_, p, _) in &mut procs {
        p.check_alive()?;
    }
    Ok(samples)
}

/// Starts `kind` with `w` workers in front of `up`, terminating TLS with `tls` when
/// given; returns the process and the port it listens on.
fn start_proxy(
    kind: ProxyKind,
    args: &CompareArgs,
    setup: &Setup,
    up: &Upstreams,
    w: usize,
    tls: Option<&TlsFiles>,
) -> Result<(Proc, u16)> {
    match kind {
        ProxyKind::Canarygate | ProxyKind::CanarygateNokernel => {
            let pool = args.pool.to_string();
            let mut extra = driver_args(args);
            extra.extend(["--pool-max-idle", &pool]);
            // canarygate's default (1 GiB) already passes the upload shapes' bodies; the
            // same limit as the other proxies is set for parity.
            let max_body = (procs::MAX_BODY_MIB << 20).to_string();
            extra.extend(["--max-body-bytes", &max_body]);
            let accounting = if kind == ProxyKind::Canarygate {
                "auto"
            } else {
                "off"
            };
            extra.extend(["--kernel-accounting", accounting]);
            let (cert, key);
            if let Some(t) = tls {
                cert = t.cert.to_string_lossy();
                key = t.key.to_string_lossy();
                extra.extend(["--tls-cert", &cert, "--tls-key", &key]);
            }
            procs::canarygate(
                &setup.run,
                &setup.canarygate,
                w,
                up,
                &[],
                &extra,
                Duration::from_secs(10),
            )
        }
        ProxyKind::Nginx => procs::nginx_proxy(&setup.run, w, up, args.pool, tls),
        ProxyKind::Haproxy => procs::haproxy(&setup.run, w, up, tls, procs::HAPROXY_MAXCONN),
        ProxyKind::Floor => {
            if tls.is_some() {
                bail!("the floor does not terminate TLS");
            }
            procs::floor(&setup.run, &setup.cg_floor, w, up)
        }
    }
}

/// `getconf CLK_TCK`, 100 when unknown.
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// First line of a command's output (stdout, else stderr), or `?`.
fn first_line(program: &str, args: &[&str]) -> String {
    let Ok(out) = Command::new(program).args(args).output() else {
        return "?".into();
    };
    let text = if out.stdout.is_empty() {
        out.stderr
    } else {
        out.stdout
    };
    String::from_utf8_lossy(&text)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// The machine and versions, for the results.
fn machine(args: &CompareArgs, canarygate: &Path) -> Machine {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split(':').nth(1))
        })
        .map_or_else(|| "?".into(), |s| s.trim().to_owned());
    let commit = first_line("git", &["rev-parse", "--short", "HEAD"]);
    let dirty = !first_line("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty();
    Machine {
        date: first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        nproc: std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        cpu,
        canarygate: format!(
            "{} ({})",
            first_line(&canarygate.to_string_lossy(), &["--version"]),
            if args.canarygate.is_some() {
                format!("binary {}", canarygate.display())
            } else if dirty {
                format!("built from git {commit} + local changes")
            } else {
                format!("built from git {commit}")
            }
        ),
        nginx: first_line("/usr/sbin/nginx", &["-v"]).replace("nginx version: ", ""),
        haproxy: first_line("/usr/sbin/haproxy", &["-v"])
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
            .replace(" version ", " "),
        loadgen: args.loadgen.name().to_owned(),
        loadgen_cpus: args.loadgen_cpus.clone(),
        pool: args.pool,
        rounds: args.rounds,
        duration_s: args.duration.as_secs_f64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("x").is_err());
    }
}
