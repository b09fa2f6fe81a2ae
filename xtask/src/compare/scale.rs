//! `cargo xtask compare --scale`: 10,000 (by default) mostly idle keep-alive client
//! connections with a trickle of requests, held through each proxy in turn (canarygate,
//! nginx, HAProxy and, when `target/release/cg-floor` exists, the minimal byte relay
//! `floor`), with the largest `--workers`; each proxy's resident memory per idle
//! connection and its CPU while it holds them.
//!
//! This process first raises its own RLIMIT_NOFILE (`prlimit --pid`) to the hard limit
//! capped at 65,536 (raising the hard limit itself needs CAP_SYS_RESOURCE, which a
//! container may not have), so every proxy and load generator it starts inherits it.
//! HAProxy gets `maxconn` = connections + 4,096, capped at half the descriptor limit (it
//! will not start unless two descriptors per connection fit); nginx has `worker_rlimit_nofile 65536`
//! and `worker_connections 16384` (clients and upstream connections of a worker).
//!
//! Per proxy: 1 s of load warms its pools and allocator, so the baseline is a serving
//! proxy, not a fresh one; then the VmRSS of its process tree (the PID and its direct
//! children: nginx's master and workers) is read from /proc. `cg-load
//! --idle-connections N` opens the connections, one request each; once it says it holds
//! them (after its 0.5 s settle) the tree's VmRSS is read again, and for `--hold` a
//! trickle runs over 16 other connections (`cg-load -c 16 -R 1000`, open loop) while the
//! proxy tree's CPU (user + system, /proc/PID/stat) is counted. cg-load holds the idle
//! connections [`HOLD_MARGIN`] longer than the trickle runs, then checks each answers
//! again. The table (figures, and ratios to the best of nginx/HAProxy and to the floor)
//! is printed and written to `target/compare/scale.md`, everything to
//! `target/compare/scale.json`.

use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;

use super::procs::{self, Proc, Upstreams};
use super::{CompareArgs, HAPROXY, NGINX, clock_ticks, driver_args, setup};
use crate::step::{Plan, display};

/// Descriptor limit wanted for every process.
const NOFILE_WANTED: u64 = 65_536;
/// Descriptors each side needs beyond the connections themselves.
const NOFILE_SPARE: u64 = 1_024;
/// HAProxy's `maxconn` beyond the idle connections (trickle, warm-up, upstreams).
const HAPROXY_MAXCONN_SPARE: usize = 4_096;
/// The idle connections are held this much longer than the trickle runs, so the
/// trickle ends before cg-load probes them all again.
const HOLD_MARGIN: Duration = Duration::from_secs(1);
/// Longest wait for cg-load to have opened every idle connection.
const OPEN_TIMEOUT: Duration = Duration::from_secs(120);
/// What cg-load prints on stderr once every connection is open and the hold begins.
const HOLDING_LINE: &str = "holding them idle";
/// Trickle: connections, and requests per second (open loop).
const TRICKLE_CONNECTIONS: usize = 16;
/// Trickle: requests per second over all its connections.
const TRICKLE_RATE: u32 = 1_000;

/// A proxy the scale test runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proxy {
    Canarygate,
    Nginx,
    Haproxy,
    /// `cg-floor`: a minimal byte relay, one upstream connection per client connection.
    Floor,
}

impl Proxy {
    /// Every proxy, in the order they run.
    const ALL: [Proxy; 4] = [
        Proxy::Canarygate,
        Proxy::Nginx,
        Proxy::Haproxy,
        Proxy::Floor,
    ];

    /// Name in tables and JSON.
    fn name(self) -> &'static str {
        match self {
            Proxy::Canarygate => "canarygate",
            Proxy::Nginx => "nginx",
            Proxy::Haproxy => "haproxy",
            Proxy::Floor => "floor",
        }
    }

    /// nginx and HAProxy: the ones the others are compared with.
    fn is_reference(self) -> bool {
        matches!(self, Proxy::Nginx | Proxy::Haproxy)
    }
}

/// One proxy's figures.
#[derive(Clone, Debug, Serialize)]
struct Row {
    proxy: &'static str,
    workers: usize,
    /// Processes in the measured tree (nginx: master + workers).
    processes: usize,
    /// Idle connections asked for.
    connections: usize,
    /// Idle connections that opened and answered their first request.
    opened: u64,
    /// Idle connections that answered again after the hold.
    alive_after_hold: u64,
    /// Seconds cg-load held them (trickle time + [`HOLD_MARGIN`]).
    hold_s: f64,
    /// VmRSS of the tree after the warm-up, KiB.
    rss_before_kib: u64,
    /// With every idle connection open, KiB.
    rss_open_kib: u64,
    /// At the end of the trickle, KiB.
    rss_held_kib: u64,
    /// `(rss_open - rss_before) / opened`, bytes.
    rss_per_connection_bytes: f64,
    /// Trickle responses.
    trickle_requests: u64,
    /// Trickle requests per second achieved.
    trickle_rps: f64,
    /// Trickle latency, µs (open loop: from each request's intended send time).
    trickle_p50_us: f64,
    trickle_p99_us: f64,
    /// Trickle failures (error statuses, timeouts, resets).
    trickle_errors: u64,
    /// Proxy tree CPU (user + system) during the trickle per trickle request, µs.
    cpu_us_per_request: f64,
    /// Proxy tree CPU during the trickle, percent of one core.
    cpu_pct_of_core: f64,
}

/// A row's metrics over the same metrics of a reference (`None` without one).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
struct Ratio {
    rss_per_connection: Option<f64>,
    cpu_per_request: Option<f64>,
    p99: Option<f64>,
}

/// One proxy's ratios: to the best of nginx/HAProxy (each metric's lowest), to the floor.
#[derive(Clone, Debug, PartialEq, Serialize)]
struct Ratios {
    proxy: &'static str,
    vs_best_of_nginx_haproxy: Ratio,
    vs_floor: Ratio,
}

/// `scale.json`.
#[derive(Debug, Serialize)]
struct Report<'a> {
    connections: usize,
    workers: usize,
    trickle_s: f64,
    trickle_connections: usize,
    trickle_rate: u32,
    nofile: u64,
    rows: &'a [Row],
    ratios: Vec<Ratios>,
}

/// The hard RLIMIT_NOFILE of this process, from /proc/self/limits.
fn hard_nofile() -> Option<u64> {
    let limits = fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let hard = line.split_whitespace().nth(4)?;
    if hard == "unlimited" {
        Some(u64::MAX)
    } else {
        hard.parse().ok()
    }
}

/// VmRSS in KiB from the text of a `/proc/PID/status`.
fn vm_rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Sum of the VmRSS of several `/proc/PID/status` texts and how many had one; `None`
/// when none had.
fn sum_rss<'a>(statuses: impl IntoIterator<Item = &'a str>) -> Option<(u64, usize)> {
    let (kib, n) = statuses
        .into_iter()
        .filter_map(vm_rss_kib)
        .fold((0, 0), |(k, n), v| (k + v, n + 1));
    (n > 0).then_some((kib, n))
}

/// VmRSS of `pid` and its direct children, KiB, and the number of processes counted.
fn tree_rss_kib(pid: u32) -> Result<(u64, usize)> {
    let texts: Vec<String> = std::iter::once(pid)
        .chain(procs::children(pid))
        .filter_map(|p| fs::read_to_string(format!("/proc/{p}/status")).ok())
        .collect();
    sum_rss(texts.iter().map(String::as_str))
        .with_context(|| format!("no VmRSS in /proc/{pid}/status (process gone?)"))
}

/// `a / b` when both are finite and `b` is positive.
fn ratio(a: f64, b: f64) -> Option<f64> {
    (a.is_finite() && b.is_finite() && b > 0.0).then(|| a / b)
}

/// The ratios of every row: to the lowest nginx/HAProxy figure of each metric, and to
/// the floor's.
fn ratios(rows: &[Row]) -> Vec<Ratios> {
    let metrics = |r: &Row| {
        [
            r.rss_per_connection_bytes,
            r.cpu_us_per_request,
            r.trickle_p99_us,
        ]
    };
    let best = |pick: &dyn Fn(&Row) -> bool| -> Option<[f64; 3]> {
        rows.iter()
            .filter(|r| pick(r))
            .map(metrics)
            .reduce(|a, b| [a[0].min(b[0]), a[1].min(b[1]), a[2].min(b[2])])
    };
    let reference = best(&|r| {
        Proxy::ALL
            .iter()
            .any(|p| p.is_reference() && p.name() == r.proxy)
    });
    let floor = best(&|r| r.proxy == Proxy::Floor.name());
    let against = |m: [f64; 3], by: Option<[f64; 3]>| {
        by.map_or_else(Ratio::default, |b| Ratio {
            rss_per_connection: ratio(m[0], b[0]),
            cpu_per_request: ratio(m[1], b[1]),
            p99: ratio(m[2], b[2]),
        })
    };
    rows.iter()
        .map(|r| Ratios {
            proxy: r.proxy,
            vs_best_of_nginx_haproxy: against(metrics(r), reference),
            vs_floor: against(metrics(r), floor),
        })
        .collect()
}

/// `1.23x`, or `-`.
fn times(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}x"))
}

/// The markdown of `scale.md`: one table of figures, one of ratios.
fn markdown(rows: &[Row], ratios: &[Ratios], trickle: Duration) -> String {
    let mut s = String::new();
    let connections = rows.first().map_or(0, |r| r.connections);
    let workers = rows.first().map_or(0, |r| r.workers);
    let _ = writeln!(
        s,
        "# Scale: {connections} idle keep-alive connections, trickle of {TRICKLE_RATE} req/s over \
         {TRICKLE_CONNECTIONS} connections for {:.1} s, {workers} workers\n",
        trickle.as_secs_f64()
    );
    s.push_str(
        "| proxy | opened | alive after hold | RSS before (KiB) | RSS with conns (KiB) | bytes / idle conn \
         | CPU µs / trickle req | CPU % of a core | trickle p50 (µs) | trickle p99 (µs) | trickle errors |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} / {} | {} | {} | {} | {:.0} | {:.1} | {:.1} | {:.0} | {:.0} | {} |",
            r.proxy,
            r.opened,
            r.connections,
            r.alive_after_hold,
            r.rss_before_kib,
            r.rss_open_kib,
            r.rss_per_connection_bytes,
            r.cpu_us_per_request,
            r.cpu_pct_of_core,
            r.trickle_p50_us,
            r.trickle_p99_us,
            r.trickle_errors
        );
    }
    s.push_str(
        "\nRatios (lower is better for all three): to the best of nginx/HAProxy (each metric's \
         lowest) and to the floor.\n\n\
         | proxy | RSS/conn vs best | CPU/req vs best | p99 vs best | RSS/conn vs floor | CPU/req vs floor | p99 vs floor |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in ratios {
        let (b, f) = (&r.vs_best_of_nginx_haproxy, &r.vs_floor);
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.proxy,
            times(b.rss_per_connection),
            times(b.cpu_per_request),
            times(b.p99),
            times(f.rss_per_connection),
            times(f.cpu_per_request),
            times(f.p99)
        );
    }
    s
}

/// Raises this process's RLIMIT_NOFILE (soft and hard) to `n`, with `prlimit --pid`, so
/// every process started from here on inherits it.
fn raise_own_nofile(n: u64) -> Result<()> {
    crate::step::run(
        Command::new("prlimit")
            .arg("--pid")
            .arg(std::process::id().to_string())
            .arg(format!("--nofile={n}:{n}")),
    )
    .context("raising this process's descriptor limit")
}

/// A field of a JSON object as f64 (nested with `/`), NaN when missing.
fn json_f64(v: &serde_json::Value, path: &str) -> f64 {
    v.pointer(path)
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(f64::NAN)
}

/// A count field of a JSON object, 0 when missing.
fn json_u64(v: &serde_json::Value, path: &str) -> u64 {
    v.pointer(path)
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0)
}

/// Kills and reaps a cg-load this run started (by its handle, so by its PID).
fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs the scale test.
pub(crate) fn run(root: &Path, args: &CompareArgs) -> Result<()> {
    let workers = args.workers.iter().copied().max().unwrap_or(1).max(1);
    let trickle = args.hold;
    if trickle.is_zero() {
        bail!("--hold must be longer than 0");
    }
    eprintln!(
        "xtask: compare --scale: {} idle connections and a trickle of {TRICKLE_RATE} req/s for {:.1} s \
         through canarygate, nginx, HAProxy and the floor ({workers} workers)",
        args.idle_connections,
        trickle.as_secs_f64()
    );
    let hard = hard_nofile().unwrap_or(NOFILE_WANTED);
    let nofile = hard.min(NOFILE_WANTED);
    let needed = args.idle_connections as u64 + NOFILE_SPARE;
    if nofile < needed {
        bail!(
            "{} connections need a descriptor limit of at least {needed}, and the hard limit \
             here is {hard}; raise it (ulimit -Hn, as root with CAP_SYS_RESOURCE) or ask for \
             fewer with --idle-connections",
            args.idle_connections,
        );
    }
    raise_own_nofile(nofile)?;
    let proxies = Proxy::ALL;
    if proxies.contains(&Proxy::Floor) && nofile < 2 * args.idle_connections as u64 + NOFILE_SPARE {
        eprintln!(
            "xtask: compare --scale: note: the floor holds an upstream connection per client \
             connection and needs about {} descriptors; the limit is {nofile}",
            2 * args.idle_connections as u64 + NOFILE_SPARE
        );
    }
    let hz = clock_ticks();
    let mut plan = Plan::new(4 + proxies.len());
    let setup = setup(root, args, &mut plan, &[NGINX, HAPROXY])?;
    let mut upstreams = None;
    plan.step("upstreams", "two nginx, 1 worker each", || {
        upstreams = Some(Upstreams::start(&setup.run)?);
        Ok(())
    })?;
    let up = upstreams.context("upstreams did not start")?;
    let mut rows = Vec::new();
    for proxy in proxies {
        plan.step(
            proxy.name(),
            &format!(
                "warm-up, {} idle connections held {:.1} s with the trickle",
                args.idle_connections,
                (trickle + HOLD_MARGIN).as_secs_f64()
            ),
            || {
                let (p, port) = match proxy {
                    Proxy::Canarygate => procs::canarygate(
                        &setup.run,
                        &setup.canarygate,
                        workers,
                        &up,
                        &[],
                        &driver_args(args),
                        Duration::from_secs(10),
                    )?,
                    Proxy::Nginx => procs::nginx_proxy(&setup.run, workers, &up, args.pool, None)?,
                    Proxy::Haproxy => procs::haproxy(
                        &setup.run,
                        workers,
                        &up,
                        None,
                        // HAProxy refuses to start unless 2 x maxconn descriptors fit
                        // the limit (it counts a server-side socket per connection).
                        (args.idle_connections + HAPROXY_MAXCONN_SPARE)
                            .min((nofile as usize).saturating_sub(64) / 2),
                    )?,
                    Proxy::Floor => procs::floor(&setup.run, &setup.cg_floor, workers, &up)?,
                };
                let mut p = p;
                let row = measure(&setup.cg_load, proxy, &mut p, port, workers, args, hz)?;
                eprintln!(
                    "xtask:   {}: {} of {} open, {} alive; {:.0} bytes per idle connection; \
                     {:.1} µs CPU per trickle request; trickle p99 {:.0} µs, {} errors",
                    row.proxy,
                    row.opened,
                    row.connections,
                    row.alive_after_hold,
                    row.rss_per_connection_bytes,
                    row.cpu_us_per_request,
                    row.trickle_p99_us,
                    row.trickle_errors
                );
                rows.push(row);
                Ok(())
            },
        )?;
    }
    plan.step(
        "report",
        "target/compare/scale.md, target/compare/scale.json",
        || {
            let ratios = ratios(&rows);
            let md = markdown(&rows, &ratios, trickle);
            let report = Report {
                connections: args.idle_connections,
                workers,
                trickle_s: trickle.as_secs_f64(),
                trickle_connections: TRICKLE_CONNECTIONS,
                trickle_rate: TRICKLE_RATE,
                nofile,
                rows: &rows,
                ratios,
            };
            let md_path = setup.out.join("scale.md");
            fs::write(&md_path, &md).with_context(|| format!("writing {}", md_path.display()))?;
            let json_path = setup.out.join("scale.json");
            fs::write(&json_path, serde_json::to_string_pretty(&report)?)
                .with_context(|| format!("writing {}", json_path.display()))?;
            println!("{md}");
            Ok(())
        },
    )?;
    drop(up);
    plan.finish();
    Ok(())
}

/// Warms `proc` up, opens the idle connections, runs the trickle while they are held,
/// and returns the figures; fails if the proxy died or cg-load failed.
fn measure(
    cg_load: &Path,
    proxy: Proxy,
    proc: &mut Proc,
    port: u16,
    workers: usize,
    args: &CompareArgs,
    hz: f64,
) -> Result<Row> {
    let url = format!("http://127.0.0.1:{port}/");
    let mut warm = Command::new(cg_load);
    warm.args(["-q", "-c", "64", "-d", "1s"]).arg(&url);
    crate::step::run(warm.stdout(Stdio::null())).context("warm-up")?;
    proc.check_alive()?;
    let (rss_before, processes) = tree_rss_kib(proc.pid())?;

    let hold = args.hold + HOLD_MARGIN;
    let mut idle = Command::new(cg_load);
    idle.arg(&url)
        .args(["--idle-connections", &args.idle_connections.to_string()])
        .args(["-t", &workers.to_string(), "--json"])
        .arg("--hold")
        .arg(format!("{}ms", hold.as_millis()));
    let shown = display(&idle);
    eprintln!("xtask:   {shown}");
    let mut child = idle
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start `{shown}`"))?;
    let Some(stderr) = child.stderr.take() else {
        kill(&mut child);
        bail!("`{shown}`: stderr was not piped");
    };
    let (tx, rx) = mpsc::channel();
    let forward = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{line}");
            if line.contains(HOLDING_LINE) {
                let _ = tx.send(());
            }
        }
    });
    if rx.recv_timeout(OPEN_TIMEOUT).is_err() {
        kill(&mut child);
        let _ = forward.join();
        proc.check_alive()?;
        bail!("`{shown}` did not report holding its connections within {OPEN_TIMEOUT:?}");
    }
    let held = trickle(cg_load, &url, args.hold, proc, hz);
    let held = match held {
        Ok(h) => h,
        Err(e) => {
            kill(&mut child);
            let _ = forward.join();
            return Err(e);
        }
    };
    let out = child
        .wait_with_output()
        .with_context(|| format!("waiting for `{shown}`"))?;
    let _ = forward.join();
    proc.check_alive()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("`{shown}` ({}) printed no JSON report:\n{text}", out.status))?;
    let opened = json_u64(&v, "/opened");
    let rss_open = held.rss_open_kib;
    Ok(Row {
        proxy: proxy.name(),
        workers,
        processes,
        connections: args.idle_connections,
        opened,
        alive_after_hold: json_u64(&v, "/alive_after_hold"),
        hold_s: json_f64(&v, "/hold_s"),
        rss_before_kib: rss_before,
        rss_open_kib: rss_open,
        rss_held_kib: held.rss_held_kib,
        rss_per_connection_bytes: (rss_open as f64 - rss_before as f64) * 1024.0
            / opened.max(1) as f64,
        trickle_requests: held.requests,
        trickle_rps: json_f64(&held.report, "/rps"),
        trickle_p50_us: json_f64(&held.report, "/latency_us/p50"),
        trickle_p99_us: json_f64(&held.report, "/latency_us/p99"),
        trickle_errors: json_u64(&held.report, "/errors_total"),
        cpu_us_per_request: held.cpu_ticks as f64 * 1e6 / hz / held.requests.max(1) as f64,
        cpu_pct_of_core: held.cpu_ticks as f64 / hz / held.elapsed_s * 100.0,
    })
}

/// What the trickle saw, with the proxy's memory around it.
struct Trickle {
    /// cg-load's JSON report.
    report: serde_json::Value,
    /// Its responses.
    requests: u64,
    /// Proxy tree CPU during it, clock ticks.
    cpu_ticks: u64,
    /// Wall time it took, seconds.
    elapsed_s: f64,
    /// Proxy tree VmRSS just before it, KiB.
    rss_open_kib: u64,
    /// And just after, KiB.
    rss_held_kib: u64,
}

/// Runs the trickle (`cg-load -c 16 -R 1000 -d DUR --json -q`) against `url`, counting
/// the proxy tree's CPU and reading its memory before and after.
fn trickle(cg_load: &Path, url: &str, d: Duration, proc: &Proc, hz: f64) -> Result<Trickle> {
    let (rss_open_kib, _) = tree_rss_kib(proc.pid())?;
    let mut cmd = Command::new(cg_load);
    cmd.args(["-c", &TRICKLE_CONNECTIONS.to_string()])
        .args(["-R", &TRICKLE_RATE.to_string()])
        .arg("-d")
        .arg(format!("{}ms", d.as_millis()))
        .args(["--json", "-q"])
        .arg(url);
    let shown = display(&cmd);
    eprintln!("xtask:   {shown}");
    let cpu0 = proc.cpu_ticks();
    let t0 = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("could not start `{shown}`"))?;
    let elapsed_s = t0.elapsed().as_secs_f64();
    let cpu_ticks = proc.cpu_ticks().saturating_sub(cpu0);
    let (rss_held_kib, _) = tree_rss_kib(proc.pid())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("`{shown}` ({}) printed no JSON report:\n{text}", out.status))?;
    let requests = json_u64(&report, "/requests");
    eprintln!(
        "xtask:   trickle: {requests} responses in {elapsed_s:.2} s, proxy CPU {:.2} s",
        cpu_ticks as f64 / hz
    );
    Ok(Trickle {
        report,
        requests,
        cpu_ticks,
        elapsed_s,
        rss_open_kib,
        rss_held_kib,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tnginx\nVmPeak:\t   20000 kB\nVmRSS:\t    5120 kB\nThreads:\t1\n";

    fn row(proxy: &'static str, rss: f64, cpu: f64, p99: f64) -> Row {
        Row {
            proxy,
            workers: 1,
            processes: 1,
            connections: 10,
            opened: 10,
            alive_after_hold: 10,
            hold_s: 1.0,
            rss_before_kib: 0,
            rss_open_kib: 0,
            rss_held_kib: 0,
            rss_per_connection_bytes: rss,
            trickle_requests: 100,
            trickle_rps: 100.0,
            trickle_p50_us: 1.0,
            trickle_p99_us: p99,
            trickle_errors: 0,
            cpu_us_per_request: cpu,
            cpu_pct_of_core: 1.0,
        }
    }

    #[test]
    fn reads_vm_rss() {
        assert_eq!(vm_rss_kib(STATUS), Some(5120));
        assert_eq!(vm_rss_kib("Name:\tx\n"), None);
        assert_eq!(vm_rss_kib("VmRSS:\tlots kB\n"), None);
    }

    #[test]
    fn sums_a_tree() {
        let worker = "Name:\tnginx\nVmRSS:\t2048 kB\n";
        let gone = "";
        assert_eq!(sum_rss([STATUS, worker, worker, gone]), Some((9216, 3)));
        assert_eq!(sum_rss([gone]), None);
        let (kib, n) = tree_rss_kib(std::process::id()).expect("own status");
        assert!(kib > 0 && n >= 1);
    }

    #[test]
    fn ratios_to_best_reference_and_floor() {
        let rows = [
            row("canarygate", 4000.0, 30.0, 900.0),
            row("nginx", 2000.0, 20.0, 1000.0),
            row("haproxy", 8000.0, 10.0, 600.0),
            row("floor", 1000.0, 5.0, 300.0),
        ];
        let r = ratios(&rows);
        assert_eq!(r.len(), 4);
        let cg = &r[0];
        assert_eq!(cg.proxy, "canarygate");
        // Best of nginx/HAProxy per metric: RSS nginx's 2000, CPU HAProxy's 10, p99 600.
        assert_eq!(
            cg.vs_best_of_nginx_haproxy,
            Ratio {
                rss_per_connection: Some(2.0),
                cpu_per_request: Some(3.0),
                p99: Some(1.5)
            }
        );
        assert_eq!(
            cg.vs_floor,
            Ratio {
                rss_per_connection: Some(4.0),
                cpu_per_request: Some(6.0),
                p99: Some(3.0)
            }
        );
        assert_eq!(r[3].vs_floor.p99, Some(1.0));
        let md = markdown(&rows, &r, Duration::from_secs(3));
        assert!(md.contains("| canarygate | 2.00x | 3.00x | 1.50x | 4.00x | 6.00x | 3.00x |"));
        assert!(md.contains("| nginx | 10 / 10 | 10 |"));
    }

    #[test]
    fn ratios_without_floor_or_with_nothing_to_divide_by() {
        let rows = [
            row("canarygate", 4000.0, 30.0, 900.0),
            row("nginx", 0.0, f64::NAN, 1000.0),
        ];
        let r = ratios(&rows);
        assert_eq!(r[0].vs_floor, Ratio::default());
        assert_eq!(
            r[0].vs_best_of_nginx_haproxy,
            Ratio {
                rss_per_connection: None,
                cpu_per_request: None,
                p99: Some(0.9)
            }
        );
        let md = markdown(&rows, &r, Duration::from_secs(3));
        assert!(md.contains("| canarygate | - | - | 0.90x | - | - | - |"));
    }
}
