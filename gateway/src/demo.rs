//! `canarygate demo`: the whole product on one machine in one command, in under a minute.
//! Built-in upstreams answer "v1" (stable), "v2" (a healthy canary) and "v3" (a canary
//! that fails a third of its requests, then all of them). The gateway runs in front with
//! its admin socket, `/metrics` and the live dashboard, and the demo drives it the way an
//! operator would, through the admin socket:
//! 1. a burst at 5 % canary: the observed split, the gateway's latencies and the kernel's
//!    (eBPF) figures per variant;
//! 2. a rollout of v2 through its steps under a steady load, each verdict with its
//!    statistics, promoted;
//! 3. a rollout of v3, rolled back by the judge; then v3 fails every request and the
//!    kill switch takes it out of traffic within its window.
//!
//! Then it keeps serving (unless `--exit`) and prints the URLs and commands to try.

use std::io::{BufRead as _, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use gateway_common::Variant;
use indicatif::{ProgressBar, ProgressStyle};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use serde_json::Value;

use crate::cli::DemoArgs;
use crate::config::killswitch::KillSwitchConfig;
use crate::config::value::format_percent;
use crate::config::{CLI_KERNEL_ACCOUNTING, Config};
use crate::metrics::{Histogram, new_histogram};

/// Connections the demo's burst uses.
const BURST_CONNECTIONS: usize = 8;
/// Canary share of the demo, in ppm (5 %).
const DEMO_PPM: u32 = 50_000;
/// Route of the demo (the one-route shortcut's).
const ROUTE: &str = crate::config::DEFAULT_NAME;
/// Connections of the steady load during the rollouts. Each sends a request, then pauses
/// 1 ms: four of them give the healthy canary's first step (10 %) the ~800 requests the
/// judge needs to bound its error rate within 1 point in 2-4 s, and in the 12 s limit of
/// a step even on a machine running at a third of its speed (two connections ran out of
/// time there: MARGINAL after 8 s with 735 canary requests).
const LOAD_CONNECTIONS: usize = 4;
/// Longest a rollout of the demo may take before the demo gives up on it.
const ROLLOUT_LIMIT: Duration = Duration::from_secs(40);

/// Runs the demo.
pub(crate) fn run(args: &DemoArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let v1 =
        spawn_upstream("v1\n", Arc::default()).context("starting the built-in stable upstream")?;
    let v2 =
        spawn_upstream("v2\n", Arc::default()).context("starting the built-in canary upstream")?;
    let v3_failures = Arc::new(AtomicU32::new(333));
    let v3 = spawn_upstream("v3\n", Arc::clone(&v3_failures))
        .context("starting the built-in bad canary upstream")?;
    let socket = args.admin_socket.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("canarygate-demo-{}.sock", std::process::id()))
    });
    let mut config = Config::single_route(args.listen, vec![v1], vec![v2], DEMO_PPM);
    // The same server settings as `canarygate run` without flags, plus the control plane.
    config.server.kernel_accounting = CLI_KERNEL_ACCOUNTING;
    config.server.variant_header = Some("x-canarygate-variant".into());
    config.server.admin_socket = Some(socket.clone());
    config.server.metrics_listen = Some(args.metrics_listen);
    config.server.dashboard = true;
    config.stages[0].routes[0].kill_switch = Some(KillSwitchConfig {
        window: 50,
        max_error_rate: 0.5,
        count_5xx: true,
        count_connect_failures: true,
    });
    let gateway = crate::runtime::start(config).map_err(|e| anyhow::anyhow!("--listen: {e}"))?;
    let addr = gateway.local_addr();
    let metrics = gateway
        .control_plane()
        .and_then(crate::admin::ControlPlane::metrics_addr)
        .unwrap_or(args.metrics_listen);
    println!("canarygate demo");
    println!("  stable deployment  v1 at http://{v1}");
    println!(
        "  canary deployment  v2 at http://{v2} (healthy), v3 at http://{v3} (fails 1 request in 3)"
    );
    println!(
        "  gateway            http://{addr}  ({} workers, {}), canary share {}%",
        gateway.workers(),
        gateway.driver(),
        format_percent(gateway.split().ppm())
    );
    println!("  dashboard          http://{metrics}/dashboard  (open it now to watch)");
    println!();

    println!(
        "1. A burst of {} requests at {}% canary",
        args.requests,
        format_percent(DEMO_PPM)
    );
    let burst = burst(addr, args.requests)?;
    print_burst(&burst, &gateway);
    println!();

    let mut admin = Admin::connect(&socket)?;
    let load = Load::start(addr);
    println!("2. A rollout of the healthy canary v2 under a steady load");
    let plan = "steps 10,50,100 interval 2s max-interval 12s on-timeout pass min-requests 200";
    println!("   canarygate ctl rollout start {ROUTE} {plan}");
    admin.ok(&format!("rollout start {ROUTE} {plan}"))?;
    let r = follow_rollout(&mut admin)?;
    println!("   -> {}", outcome(&r));
    println!();

    println!("3. A bad canary: v3 fails one request in three");
    admin.ok(&format!("set canary {ROUTE} deployment v3 {v3}"))?;
    let plan = "steps 10,50,100 interval 2s max-interval 8s min-requests 200";
    println!("   canarygate ctl set canary {ROUTE} deployment v3 {v3}");
    println!("   canarygate ctl rollout start {ROUTE} {plan}");
    admin.ok(&format!("rollout start {ROUTE} {plan}"))?;
    let r = follow_rollout(&mut admin)?;
    println!("   -> {}", outcome(&r));
    println!("   now v3 fails every request; an operator puts it back at 5%:");
    v3_failures.store(1000, Ordering::Relaxed);
    println!("   canarygate ctl set canary {ROUTE} percent 5");
    admin.ok(&format!("set canary {ROUTE} percent 5"))?;
    let k = follow_kill_switch(&mut admin)?;
    println!("   -> {k}");
    let report = load.finish();
    println!(
        "   steady load: {} requests, {} answered 5xx (all by the bad canary), {} transport errors",
        report.requests, report.errors_5xx, report.transport_errors
    );
    println!();
    let stats = gateway.stats();
    if let Some(r) = stats.route(ROUTE) {
        println!(
            "   totals: stable {} requests, canary {} requests, canary 5xx {}",
            r.variants[0].requests, r.variants[1].requests, r.variants[1].responses[4]
        );
    }
    println!("the demo took {:.1} s", started.elapsed().as_secs_f64());
    println!();
    println!("try:");
    println!("  dashboard   http://{metrics}/dashboard");
    println!("  metrics     curl -s http://{metrics}/metrics | grep canarygate_requests_total");
    println!("  a request   curl -i http://{addr}/");
    let ctl = format!("canarygate ctl --socket {}", socket.display());
    println!("  {ctl} show canary");
    println!("  {ctl} show rollout");
    println!("  {ctl} show stats");
    println!("  {ctl} set canary {ROUTE} deployment v2 {v2}");
    println!("  {ctl} rollout start {ROUTE} steps 5,25,100 interval 10s");
    if args.exit {
        return Ok(());
    }
    println!("serving until Ctrl-C");
    let _ = crate::cli::wait_for_signal();
    Ok(())
}

/// Prints the burst's split, latencies and the kernel's figures beside the gateway's.
fn print_burst(burst: &Burst, gateway: &crate::runtime::Gateway) {
    let n = burst.stable + burst.canary;
    let secs = burst.elapsed.as_secs_f64();
    println!(
        "   {n} requests over {BURST_CONNECTIONS} keep-alive connections in {secs:.2} s ({:.0} req/s)",
        n as f64 / secs
    );
    let expected = f64::from(DEMO_PPM) / 1e6;
    let share = burst.canary as f64 / n.max(1) as f64;
    let sd = (n as f64 * expected * (1.0 - expected)).sqrt();
    let within = (burst.canary as f64 - n as f64 * expected).abs() <= 3.291 * sd + 1.0;
    println!(
        "   observed split: stable {} ({:.2}%), canary {} ({:.2}%); configured {}% -> {}",
        burst.stable,
        (1.0 - share) * 100.0,
        burst.canary,
        share * 100.0,
        format_percent(DEMO_PPM),
        if within {
            "within the 99.9% binomial bound"
        } else {
            "OUTSIDE the 99.9% binomial bound"
        }
    );
    print_latency("   client-observed latency (all)", &burst.latency);
    let stats = gateway.stats();
    let kernel = gateway.kernel_stats();
    for v in Variant::ALL {
        let s = stats.variant(v);
        print_latency(
            &format!("   gateway {:<6} upstream head", v.as_str()),
            &s.upstream_latency,
        );
        if let Some(k) = &kernel {
            println!("   kernel  {:<6} {}", v.as_str(), k.variant(v).summary());
            print_latency(
                &format!("   kernel  {:<6} TCP RTT", v.as_str()),
                &k.variant(v).rtt,
            );
        }
    }
    match (&kernel, gateway.kernel_status()) {
        (Some(k), _) => println!("   kernel  clients {}", k.downstream.summary()),
        (None, crate::kernel::KernelStatus::Off(why)) => {
            println!("   kernel accounting off: {why}");
        }
        (None, crate::kernel::KernelStatus::On(_)) => {}
    }
}

/// One connection to the admin socket, as `canarygate ctl` uses it.
struct Admin {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Admin {
    fn connect(path: &Path) -> anyhow::Result<Admin> {
        let s = UnixStream::connect(path)
            .with_context(|| format!("connecting to the admin socket {}", path.display()))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Admin {
            reader: BufReader::new(s.try_clone()?),
            writer: s,
        })
    }

    /// Sends `command`; its reply (up to the blank line).
    fn cmd(&mut self, command: &str) -> anyhow::Result<String> {
        self.writer.write_all(format!("{command}\n").as_bytes())?;
        let mut reply = String::new();
        loop {
            let mut line = String::new();
            anyhow::ensure!(
                self.reader.read_line(&mut line)? > 0,
                "the admin socket closed"
            );
            if line == "\n" {
                return Ok(reply.trim_end().to_owned());
            }
            reply.push_str(&line);
        }
    }

    /// [`Admin::cmd`], an error unless it succeeded.
    fn ok(&mut self, command: &str) -> anyhow::Result<String> {
        let reply = self.cmd(command)?;
        anyhow::ensure!(!reply.starts_with("error"), "`{command}`: {reply}");
        Ok(reply)
    }

    fn json(&mut self, command: &str) -> anyhow::Result<Value> {
        let reply = self.ok(command)?;
        serde_json::from_str(&reply).with_context(|| format!("`{command}` replied {reply}"))
    }

    fn rollout(&mut self) -> anyhow::Result<Value> {
        Ok(self.json(&format!("show rollout {ROUTE} json"))?["rollouts"][0].clone())
    }
}

/// A line above the bar, or plain on stdout when the bar is hidden (not a terminal).
fn say(pb: &ProgressBar, line: String) {
    if pb.is_hidden() {
        println!("{line}");
    } else {
        pb.println(line);
    }
}

fn bar(len: u64, template: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(template) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}

/// Shows the rollout's progress until it ends, printing each verdict; its last state.
fn follow_rollout(admin: &mut Admin) -> anyhow::Result<Value> {
    let steps = admin.rollout()?["steps"].as_array().map_or(1, Vec::len) as u64;
    let pb = bar(steps, "   {bar:30} step {pos}/{len} {msg}");
    let deadline = Instant::now() + ROLLOUT_LIMIT;
    let mut shown = 0;
    loop {
        let r = admin.rollout()?;
        let history = r["history"].as_array().cloned().unwrap_or_default();
        for h in &history[shown.min(history.len())..] {
            say(
                &pb,
                format!(
                    "   step {} at {}%: {} ({})",
                    h["step"],
                    h["percent"].as_str().unwrap_or("?"),
                    h["verdict"].as_str().unwrap_or("?").to_uppercase(),
                    h["summary"].as_str().unwrap_or("")
                ),
            );
            let stats = statistics(&h["detail"]);
            if !stats.is_empty() {
                say(&pb, format!("      {stats}"));
            }
        }
        shown = history.len();
        pb.set_position(r["step"].as_u64().unwrap_or(0));
        pb.set_message(format!(
            "at {}%  {}",
            r["canary_percent"].as_str().unwrap_or("?"),
            r["state"].as_str().unwrap_or("?")
        ));
        if r["state"] != "running" {
            pb.finish_and_clear();
            return Ok(r);
        }
        if Instant::now() > deadline {
            pb.finish_and_clear();
            anyhow::bail!("the rollout did not end within {ROLLOUT_LIMIT:?}: {r}");
        }
        pb.tick();
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The p-values, effect sizes and bounds of one verdict's detail, on one line.
fn statistics(detail: &Value) -> String {
    let mut out = Vec::new();
    collect(detail, "", &mut out);
    out.join(", ")
}

fn collect(v: &Value, path: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                collect(x, &p, out);
            }
        }
        Value::Number(n) => {
            let wanted = [
                "p_value", "effect", "bound", "rate", "p99", "requests", "log_e",
            ];
            if wanted.iter().any(|w| path.contains(w)) {
                let shown = n.as_f64().map_or_else(
                    || n.to_string(),
                    |f| {
                        if f.fract() == 0.0 {
                            format!("{f:.0}")
                        } else {
                            format!("{f:.4}")
                        }
                    },
                );
                out.push(format!("{path} {shown}"));
            }
        }
        _ => {}
    }
}

fn outcome(r: &Value) -> String {
    let state = r["state"].as_str().unwrap_or("?");
    let reason = r["reason"].as_str().unwrap_or("");
    let pct = r["canary_percent"].as_str().unwrap_or("?");
    match state {
        "promoted" => format!(
            "PROMOTED: deployment '{}' (v2) serves 100% as the new stable",
            r["deployment"].as_str().unwrap_or("?")
        ),
        "rolled_back" => format!("ROLLED BACK by the judge, canary share {pct}%: {reason}"),
        other => format!("{other} at {pct}%: {reason}"),
    }
}

/// Waits for the kill switch to trip; what it says then.
fn follow_kill_switch(admin: &mut Admin) -> anyhow::Result<String> {
    let started = Instant::now();
    let pb = bar(1, "   {spinner} waiting for the kill switch {msg}");
    loop {
        let c = admin.json(&format!("show canary {ROUTE} json"))?;
        let k = &c["routes"][0]["kill_switch"];
        pb.set_message(format!(
            "(canary {}%)",
            c["routes"][0]["canary"]["percent"].as_str().unwrap_or("?")
        ));
        if k["tripped"] == true {
            pb.finish_and_clear();
            return Ok(format!(
                "KILL SWITCH TRIPPED after {} ms: {}; canary share {}%",
                started.elapsed().as_millis(),
                k["last_trip"].as_str().unwrap_or(""),
                c["routes"][0]["canary"]["percent"].as_str().unwrap_or("?")
            ));
        }
        anyhow::ensure!(
            started.elapsed() < ROLLOUT_LIMIT,
            "the kill switch did not trip: {c}"
        );
        pb.tick();
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A steady load of GETs on keep-alive connections, about 1,000 per second each.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<LoadReport>>,
}

#[derive(Default)]
struct LoadReport {
    requests: u64,
    errors_5xx: u64,
    transport_errors: u64,
}

impl Load {
    fn start(addr: SocketAddr) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..LOAD_CONNECTIONS)
            .map(|_| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let mut report = LoadReport::default();
                    while !stop.load(Ordering::Relaxed) {
                        let Ok(mut s) = TcpStream::connect(addr) else {
                            report.transport_errors += 1;
                            std::thread::sleep(Duration::from_millis(10));
                            continue;
                        };
                        let _ = s.set_nodelay(true);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                        while !stop.load(Ordering::Relaxed) {
                            let Ok((status, _)) = get(&mut s) else {
                                report.transport_errors += 1;
                                break;
                            };
                            report.requests += 1;
                            if status >= 500 {
                                report.errors_5xx += 1;
                            }
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                    report
                })
            })
            .collect();
        Load { stop, threads }
    }

    fn finish(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = LoadReport::default();
        for t in self.threads {
            if let Ok(r) = t.join() {
                total.requests += r.requests;
                total.errors_5xx += r.errors_5xx;
                total.transport_errors += r.transport_errors;
            }
        }
        total
    }
}

fn print_latency(label: &str, h: &Histogram<u64>) {
    if h.is_empty() {
        println!("{label}: no samples");
        return;
    }
    println!(
        "{label}: p50 {} µs, p90 {} µs, p99 {} µs, p99.9 {} µs, max {} µs ({} samples)",
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.9),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max(),
        h.len()
    );
}

struct Burst {
    stable: u64,
    canary: u64,
    latency: Histogram<u64>,
    elapsed: Duration,
}

/// Sends `total` GETs over a few keep-alive connections and tallies the answers, with a
/// progress bar.
fn burst(addr: SocketAddr, total: u64) -> anyhow::Result<Burst> {
    let start = Instant::now();
    let per = total.div_ceil(BURST_CONNECTIONS as u64);
    let done = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..BURST_CONNECTIONS)
        .map(|_| {
            let done = Arc::clone(&done);
            std::thread::spawn(move || client_loop(addr, per, &done))
        })
        .collect();
    let pb = bar(
        per * BURST_CONNECTIONS as u64,
        "   {bar:30} {pos}/{len} requests {per_sec}",
    );
    while !handles.iter().all(std::thread::JoinHandle::is_finished) {
        pb.set_position(done.load(Ordering::Relaxed));
        std::thread::sleep(Duration::from_millis(50));
    }
    pb.finish_and_clear();
    let mut out = Burst {
        stable: 0,
        canary: 0,
        latency: new_histogram(),
        elapsed: Duration::ZERO,
    };
    for h in handles {
        let (s, c, lat) = h
            .join()
            .map_err(|_| anyhow::anyhow!("burst client panicked"))??;
        out.stable += s;
        out.canary += c;
        out.latency.add(&lat).context("merging latency")?;
    }
    out.elapsed = start.elapsed();
    Ok(out)
}

fn client_loop(
    addr: SocketAddr,
    n: u64,
    done: &AtomicU64,
) -> anyhow::Result<(u64, u64, Histogram<u64>)> {
    let mut s = TcpStream::connect(addr).context("connecting to the demo gateway")?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut lat = new_histogram();
    let (mut stable, mut canary) = (0, 0);
    for _ in 0..n {
        let t = Instant::now();
        let (status, body) = get(&mut s)?;
        anyhow::ensure!(status == 200, "unexpected status {status}");
        match &body[..] {
            b"v1\n" => stable += 1,
            b"v2\n" => canary += 1,
            other => anyhow::bail!("unexpected body {:?}", String::from_utf8_lossy(other)),
        }
        let _ = lat.record(t.elapsed().as_micros().max(1) as u64);
        done.fetch_add(1, Ordering::Relaxed);
    }
    Ok((stable, canary, lat))
}

/// One `GET /` on a keep-alive connection: status and body.
fn get(s: &mut TcpStream) -> anyhow::Result<(u16, Vec<u8>)> {
    s.write_all(b"GET / HTTP/1.1\r\nHost: demo\r\n\r\n")?;
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    loop {
        let r = s.read(&mut buf[len..])?;
        anyhow::ensure!(r > 0, "gateway closed the connection");
        len += r;
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut resp = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(h) = resp.parse(&buf[..len])? {
            let cl = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.parse::<usize>().ok())
                .context("response without Content-Length")?;
            let status = resp.code.unwrap_or(0);
            if len >= h + cl {
                return Ok((status, buf[h..h + cl].to_vec()));
            }
            anyhow::ensure!(h + cl <= buf.len(), "response larger than the demo expects");
        }
        anyhow::ensure!(len < buf.len(), "response head too large");
    }
}

/// Starts a keep-alive HTTP/1.1 server answering every request with `body`, except
/// `failures` per mille of them answered 500, on its own thread and monoio runtime, on a
/// free loopback port.
pub(crate) fn spawn_upstream(
    body: &'static str,
    failures: Arc<AtomicU32>,
) -> std::io::Result<SocketAddr> {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    std_listener.set_nonblocking(true)?;
    let addr = std_listener.local_addr()?;
    std::thread::Builder::new().name("demo-upstream".into()).spawn(move || {
        let rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new().enable_timer().build();
        let Ok(mut rt) = rt else { return };
        rt.block_on(async move {
            let Ok(listener) = monoio::net::TcpListener::from_std(std_listener) else { return };
            let leak = |status: &str, body: &str| -> &'static [u8] {
                Box::leak(
                    format!(
                        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    )
                    .into_bytes()
                    .into_boxed_slice(),
                )
            };
            let responses = Responses {
                ok: leak("200 OK", body),
                failed: leak("500 Internal Server Error", "failed\n"),
                failures,
                seq: Arc::new(AtomicU64::new(0)),
            };
            while let Ok((stream, _)) = listener.accept().await {
                monoio::spawn(upstream_conn(stream, responses.clone()));
            }
        });
    })?;
    Ok(addr)
}

/// What a demo upstream answers.
#[derive(Clone)]
struct Responses {
    ok: &'static [u8],
    failed: &'static [u8],
    /// Per mille of requests answered `failed`, spread evenly.
    failures: Arc<AtomicU32>,
    seq: Arc<AtomicU64>,
}

impl Responses {
    fn next(&self) -> &'static [u8] {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let per_mille = u64::from(self.failures.load(Ordering::Relaxed));
        // Request n fails when it crosses the next multiple of 1000 / failures.
        if (n + 1) * per_mille / 1000 > n * per_mille / 1000 {
            self.failed
        } else {
            self.ok
        }
    }
}

/// Answers requests on one connection; request bodies (Content-Length) are discarded.
async fn upstream_conn(mut stream: monoio::net::TcpStream, responses: Responses) {
    let _ = stream.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut skip: usize = 0;
    loop {
        let mut answered = 0;
        let mut pos = 0;
        loop {
            if skip > 0 {
                let n = skip.min(buf.len() - pos);
                pos += n;
                skip -= n;
                if skip > 0 {
                    break;
                }
            }
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf[pos..]) {
                Ok(httparse::Status::Complete(n)) => {
                    skip = req
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                        .unwrap_or(0);
                    pos += n;
                    answered += 1;
                }
                Ok(httparse::Status::Partial) => break,
                Err(_) => return,
            }
        }
        buf.drain(..pos);
        for _ in 0..answered {
            let (res, _) = stream.write_all(responses.next()).await;
            if res.is_err() {
                return;
            }
        }
        if buf.len() == buf.capacity() {
            return;
        }
        let len = buf.len();
        let (res, slice) = stream
            .read(monoio::buf::IoBufMut::slice_mut(buf, len..))
            .await;
        buf = slice.into_inner();
        if !matches!(res, Ok(n) if n > 0) {
            return;
        }
    }
}
