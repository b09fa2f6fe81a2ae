//! `cargo xtask compare`: canarygate side by side with nginx and HAProxy on this machine.
//!
//! Two identical nginx upstreams (1 worker each, `return 200 "ok\n"`, each adding an
//! `x-upstream` header naming itself) stand behind every proxy, split 95/5. For each
//! worker count, canarygate, nginx (upstream weights + keepalive) and HAProxy (weights +
//! `http-reuse always`) run side by side with the same pinning; for each round and
//! connection count the same load (wrk -t1 by default) goes to each of them in turn, in
//! an order that rotates between rounds, and once to the upstream directly (the
//! ceiling). Before each run the harness waits for a quiet machine; a run that other
//! processes disturbed is redone. Medians, ratios and the targets go to the
//! terminal and to `target/compare/results.{json,md}`.
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
    /// Client connection counts [default: 16,64,256; with --tls, of the keep-alive runs: 64].
    #[arg(long, value_delimiter = ',')]
    connections: Option<Vec<usize>>,
    /// Proxies to compare [default: canarygate,canarygate-nokernel,nginx,haproxy; with
    /// --tls: canarygate-nokernel,nginx,haproxy].
    #[arg(long, value_delimiter = ',', value_enum)]
    proxies: Option<Vec<ProxyKind>>,
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

    /// `--proxies`, or the mode's default.
    fn proxies(&self) -> Vec<ProxyKind> {
        self.proxies.clone().unwrap_or_else(|| {
            let mut p = vec![
                ProxyKind::CanarygateNokernel,
                ProxyKind::Nginx,
                ProxyKind::Haproxy,
            ];
            if !self.tls {
                p.insert(0, ProxyKind::Canarygate);
            }
            p
        })
    }
}

/// A proxy the comparison can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum ProxyKind {
    /// canarygate as deployed: `--kernel-accounting auto` (on when run as root).
    Canarygate,
    /// canarygate with `--kernel-accounting off`, to price the eBPF accounting.
    CanarygateNokernel,
    Nginx,
    Haproxy,
}

impl ProxyKind {
    fn name(self) -> &'static str {
        match self {
            ProxyKind::Canarygate => "canarygate",
            ProxyKind::CanarygateNokernel => "canarygate-nokernel",
            ProxyKind::Nginx => "nginx",
            ProxyKind::Haproxy => "haproxy",
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
    let canarygate = if let Some(path) = &args.canarygate {
        plan.command(
            "build",
            cargo(root).args([
                "build",
                "--release",
                "-p",
                "benches",
                "--bin",
                "cg-load",
                "--bin",
                "cg-handshake",
            ]),
        )?;
        if !path.is_file() {
            bail!("--canarygate {}: no such file", path.display());
        }
        path.canonicalize()?
    } else {
        plan.command(
            "build",
            cargo(root).args([
                "build",
                "--release",
                "-p",
                "gateway",
                "-p",
                "benches",
                "--bin",
                "canarygate",
                "--bin",
                "cg-load",
                "--bin",
                "cg-handshake",
            ]),
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
    Ok(())
}

fn compare(root: &Path, args: &CompareArgs) -> Result<()> {
    check_counts(args)?;
    let (proxies, connections) = (args.proxies(), args.connections());
    let runs_per_round: usize = args.workers.len() * proxies.len() + usize::from(!args.no_direct);
    let runs = runs_per_round * args.rounds * connections.len();
    let warmups = args.workers.len() * proxies.len() + usize::from(!args.no_direct);
    let secs = runs as f64 * (args.duration.as_secs_f64() + RUN_OVERHEAD_S)
        + warmups as f64 * WARMUP.as_secs_f64();
    eprintln!(
        "xtask: compare: {runs} measured runs of {:.1} s ({} rounds x {} connection counts x {} proxy configurations), \
         expected about {:.1} min after the build (longer if the machine is busy)",
        args.duration.as_secs_f64(),
        args.rounds,
        connections.len(),
        runs_per_round,
        secs / 60.0
    );

    let mut plan = Plan::new(4 + args.workers.len());
    let setup = setup(root, args, &mut plan, &[NGINX, HAPROXY, WRK])?;
    let loadgen = Loadgen {
        kind: args.loadgen,
        cg_load: setup.cg_load.clone(),
        openssl_conf: None,
    };
    let mut upstreams = None;
    plan.step("upstreams", "two nginx, 1 worker each", || {
        upstreams = Some(Upstreams::start(&setup.run)?);
        Ok(())
    })?;
    let up = upstreams.context("upstreams did not start")?;
    let hz = clock_ticks();
    let mut samples = Vec::new();
    for (i, &w) in args.workers.iter().enumerate() {
        let detail = format!(
            "{} with {w} worker{} at {connections:?} connections, {} rounds",
            proxies
                .iter()
                .map(|p| p.name())
                .collect::<Vec<_>>()
                .join(", "),
            if w == 1 { "" } else { "s" },
            args.rounds
        );
        plan.step(&format!("measure w{w}"), &detail, || {
            let direct = !args.no_direct && i == 0;
            samples.extend(measure_workers(args, &setup, &up, &loadgen, hz, w, direct)?);
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

/// Starts the proxies with `w` workers, warms them up, and measures every round.
fn measure_workers(
    args: &CompareArgs,
    setup: &Setup,
    up: &Upstreams,
    loadgen: &Loadgen,
    hz: f64,
    w: usize,
    direct: bool,
) -> Result<Vec<bench::Sample>> {
    let mut procs: Vec<(ProxyKind, Proc, u16)> = Vec::new();
    for kind in args.proxies() {
        let (p, port) = start_proxy(kind, args, setup, up, w, None)?;
        procs.push((kind, p, port));
    }
    let mut targets: Vec<Target<'_>> = procs
        .iter()
        .map(|(kind, p, port)| Target {
            proxy: kind.name(),
            workers: w,
            url: format!("http://127.0.0.1:{port}/"),
            proc: Some(p),
        })
        .collect();
    if direct {
        targets.push(Target {
            proxy: "direct",
            workers: 0,
            url: format!("http://127.0.0.1:{}/", up.stable.1),
            proc: None,
        });
    }
    let mut ours: Vec<&Proc> = procs.iter().map(|(_, p, _)| p).collect();
    ours.extend(up.procs());
    let bench = Bench {
        loadgen,
        duration: args.duration,
        ours,
        idle_wait: Duration::from_secs(args.idle_wait),
        hz,
        retries: args.retries,
    };
    for t in &targets {
        loadgen
            .run(&t.url, 64, WARMUP)
            .with_context(|| format!("warming up {}", t.proxy))?;
    }
    let connections = args.connections();
    let total = args.rounds * connections.len() * targets.len();
    let mut samples = Vec::with_capacity(total);
    for round in 0..args.rounds {
        for (ci, &c) in connections.iter().enumerate() {
            let n = targets.len();
            for k in 0..n {
                let t = &targets[(k + round + ci) % n];
                let s = bench.measure(t, c, round + 1)?;
                eprintln!(
                    "xtask:   [{:>3}/{total}] w{w} c{c:<3} round {} {:<10} {:>9.0} req/s  p50 {:>6.0} µs  p99 {:>6.0} µs  CPU {} µs/req  (loadgen {:.1} µs/req, other {:.1}%{})",
                    samples.len() + 1,
                    round + 1,
                    t.proxy,
                    s.rps,
                    s.p50_us,
                    s.p99_us,
                    s.proxy_cpu_us_per_req
                        .map_or_else(|| "-".into(), |v| format!("{v:.1}")),
                    s.loadgen_cpu_us_per_req,
                    s.other_cpu_pct,
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
    // A proxy that died mid-run would have produced errors, not figures: say so.
    drop(bench);
    drop(targets);
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
