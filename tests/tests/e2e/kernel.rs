//! Kernel accounting (issue 3) through the real binary: the eBPF figures per variant
//! agree with what crossed the sockets, retransmits land on the deployment that loses
//! packets, the gateway serves without privileges or with accounting off, `on` refuses
//! to start without privileges, and nothing is left in the kernel after exit.
//!
//! These tests need root (CAP_BPF, CAP_NET_ADMIN, cgroup v2 writes), as CI has, and a
//! binary built with the eBPF toolchain (`cargo xtask test` installs it); without either
//! they fail and say so. Gateways here are stopped with SIGTERM so they clean up.
//!
//! The byte tolerance ("TCP framing overhead"): the kernel's `bytes_acked` and
//! `bytes_received` count sequence space, and a SYN and a FIN each take one sequence
//! number. Per connection, `bytes_acked` is the payload plus 1 for our SYN (upstream
//! connections are active opens) plus 1 for our FIN once the peer acknowledged it, and
//! `bytes_received` is the payload plus 1 for the peer's FIN if it arrived before the
//! socket was done. So with `n` connections, payload <= acked <= payload + 2n and
//! payload <= received <= payload + n; nothing else (headers, retransmits, ACKs) is in
//! these counters.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use aya::maps::Array;
use aya::programs::links::LinkOrder;
use aya::programs::tc::{SchedClassifier, TcAttachOptions, TcAttachType};
use gateway_common::FaultConfig;
use tests::{Client, Framing, TempDir, free_port, gateway_bin, post_request};

/// How long a gateway may take to print `listening on`.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the kernel figures may take to settle after the last connection closed
/// (pool idle timeout 1 s + the 1 s sweep + TCP teardown).
const SETTLE: Duration = Duration::from_secs(15);
/// Client connections used by the load.
const CONNS: usize = 8;
/// Requests per client connection.
const PER_CONN: usize = 60;

/// Fails the test, saying why, unless it runs as root.
fn require_root() {
    let status = fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1))
        .unwrap_or("?");
    assert_eq!(
        uid, "0",
        "the kernel accounting tests load eBPF programs and write cgroup v2 files: run them as root (CI does)"
    );
}

// ---------------------------------------------------------------------------------------
// A gateway process with control over wrapper, environment and shutdown.
// ---------------------------------------------------------------------------------------

/// `canarygate run` started through an optional wrapper (e.g. `setpriv`), stopped with
/// SIGTERM (so it detaches and removes its cgroup) and then, if needed, SIGKILL.
struct Gateway {
    child: Child,
    addr: SocketAddr,
    metrics: SocketAddr,
    stderr_path: PathBuf,
    _dir: TempDir,
}

impl Gateway {
    fn start(wrapper: &[&str], env: &[(&str, &str)], args: &[&str]) -> Gateway {
        let dir = TempDir::new("kernel-gw");
        let stderr_path = dir.path().join("stderr.log");
        let metrics: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let bin = gateway_bin();
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        cmd.args(["run", "--listen", "127.0.0.1:0", "--workers", "2"])
            .args(["--metrics-listen", &metrics.to_string()])
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&stderr_path).expect("stderr file"));
        let mut child = cmd.spawn().expect("spawn canarygate");
        let stdout = child.stdout.take().expect("stdout pipe");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "canarygate {args:?} did not start; stderr:\n{}",
                    fs::read_to_string(&stderr_path).unwrap_or_default()
                );
            };
            if let Some(a) = line.strip_prefix("listening on ") {
                break a.trim().parse().expect("listening address");
            }
        };
        let gw = Gateway {
            child,
            addr,
            metrics,
            stderr_path,
            _dir: dir,
        };
        gw.wait_metrics();
        gw
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// The metrics endpoint answers (it starts with the gateway, on its own thread).
    fn wait_metrics(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(self.metrics).is_err() {
            assert!(
                Instant::now() < deadline,
                "metrics endpoint {} never answered; stderr:\n{}",
                self.metrics,
                self.stderr()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// `/metrics`, parsed.
    fn metrics(&self) -> Metrics {
        Metrics::fetch(self.metrics)
    }

    /// SIGTERM, then waits for the exit.
    fn stop(&mut self) -> ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "canarygate did not exit within 10 s of SIGTERM; stderr:\n{}",
                self.stderr()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.pid().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if thread::panicking() {
            eprintln!(
                "---- canarygate (pid {}) stderr ----\n{}\n----",
                self.child.id(),
                self.stderr()
            );
        }
    }
}

/// A `/metrics` snapshot: `name{labels}` -> value.
struct Metrics(HashMap<String, f64>);

impl Metrics {
    fn fetch(addr: SocketAddr) -> Metrics {
        let mut s = TcpStream::connect(addr).expect("connect to /metrics");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n")
            .expect("write /metrics request");
        let mut text = String::new();
        s.read_to_string(&mut text).expect("read /metrics");
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let mut map = HashMap::new();
        for line in body.lines().filter(|l| !l.starts_with('#')) {
            if let Some((key, value)) = line.rsplit_once(' ')
                && let Ok(v) = value.parse()
            {
                map.insert(key.to_owned(), v);
            }
        }
        Metrics(map)
    }

    /// Sum of the series `name` whose labels contain every one of `labels`.
    fn sum(&self, name: &str, labels: &[&str]) -> u64 {
        self.0
            .iter()
            .filter(|(k, _)| {
                let (n, l) = k.split_once('{').unwrap_or((k.as_str(), ""));
                n == name && labels.iter().all(|want| l.contains(want))
            })
            .map(|(_, v)| *v as u64)
            .sum()
    }

    /// A kernel counter of the upstream sockets of `variant`.
    fn upstream(&self, name: &str, variant: &str) -> u64 {
        let variant = format!("variant=\"{variant}\"");
        self.sum(name, &["side=\"upstream\"", &variant])
    }

    /// A kernel counter of the client sockets.
    fn downstream(&self, name: &str) -> u64 {
        self.sum(name, &["side=\"downstream\""])
    }
}

// ---------------------------------------------------------------------------------------
// An upstream that counts every byte it reads and writes.
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct Counts {
    accepted: AtomicU64,
    requests: AtomicU64,
    read: AtomicU64,
    written: AtomicU64,
}

/// HTTP/1.1 keep-alive upstream: `/size/N` answers `N` body bytes; request bodies are
/// read and discarded. Closes a connection when the peer does.
struct CountingUpstream {
    addr: SocketAddr,
    counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
}

impl CountingUpstream {
    fn start(name: &'static str) -> CountingUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let counts = Arc::new(Counts::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (Arc::clone(&counts), Arc::clone(&stop));
        thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        c.accepted.fetch_add(1, Ordering::Relaxed);
                        let c = Arc::clone(&c);
                        thread::spawn(move || serve(stream, name, &c));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        CountingUpstream { addr, counts, stop }
    }

    fn addr_str(&self) -> String {
        self.addr.to_string()
    }

    fn read(&self) -> u64 {
        self.counts.read.load(Ordering::Relaxed)
    }

    fn written(&self) -> u64 {
        self.counts.written.load(Ordering::Relaxed)
    }

    fn accepted(&self) -> u64 {
        self.counts.accepted.load(Ordering::Relaxed)
    }

    fn requests(&self) -> u64 {
        self.counts.requests.load(Ordering::Relaxed)
    }
}

impl Drop for CountingUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(mut s: TcpStream, name: &str, counts: &Counts) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_nodelay(true);
    let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            let Ok(httparse::Status::Complete(head)) = req.parse(&buf) else {
                break;
            };
            let body: usize = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() < head + body {
                break;
            }
            let size: usize = req
                .path
                .and_then(|p| p.strip_prefix("/size/"))
                .and_then(|n| n.parse().ok())
                .unwrap_or(3);
            buf.drain(..head + body);
            let mut resp =
                format!("HTTP/1.1 200 OK\r\ncontent-length: {size}\r\nx-upstream: {name}\r\n\r\n")
                    .into_bytes();
            resp.resize(resp.len() + size, b'k');
            if s.write_all(&resp).is_err() {
                return;
            }
            counts
                .written
                .fetch_add(resp.len() as u64, Ordering::Relaxed);
            counts.requests.fetch_add(1, Ordering::Relaxed);
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                counts.read.fetch_add(n as u64, Ordering::Relaxed);
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
}

/// `CONNS` keep-alive clients, `per_conn` POSTs each with bodies and response sizes that
/// vary; returns requests answered per upstream name.
fn drive(addr: SocketAddr, per_conn: usize, max_body: usize) -> HashMap<String, u64> {
    let handles: Vec<_> = (0..CONNS)
        .map(|c| {
            thread::spawn(move || {
                let mut tally: HashMap<String, u64> = HashMap::new();
                let mut client = Client::connect(addr).expect("connect to the gateway");
                // A segment lost again and again waits out doubling retransmission
                // timeouts (0.2 s, 0.4 s, ...): allow for a few of them.
                client
                    .set_read_timeout(Duration::from_secs(30))
                    .expect("set the read timeout");
                for i in 0..per_conn {
                    let body = vec![b'q'; (c * 7919 + i * 104_729) % max_body];
                    let size = (c * 31 + i * 577) % 30_000;
                    let raw = post_request(&format!("/size/{size}"), &body, Framing::Length, "");
                    let r = client.request(&raw).expect("response through the gateway");
                    assert_eq!(r.status, 200, "{}", r.describe());
                    assert_eq!(r.body.len(), size);
                    let who = r.header("x-upstream").unwrap_or("?").to_owned();
                    *tally.entry(who).or_default() += 1;
                }
                tally
            })
        })
        .collect();
    let mut total: HashMap<String, u64> = HashMap::new();
    for h in handles {
        for (k, v) in h.join().expect("client thread") {
            *total.entry(k).or_default() += v;
        }
    }
    total
}

/// Polls `/metrics` until every kernel-counted connection is closed (pooled upstream
/// connections close after `--pool-idle-timeout`), so the counters are final.
fn settled(gw: &Gateway) -> Metrics {
    let deadline = Instant::now() + SETTLE;
    loop {
        let m = gw.metrics();
        let open = |f: &dyn Fn(&str) -> u64| {
            f("canarygate_kernel_connections_opened_total")
                != f("canarygate_kernel_connections_closed_total")
        };
        let busy = ["stable", "canary"]
            .iter()
            .any(|v| open(&|n| m.upstream(n, v)))
            || open(&|n| m.downstream(n));
        if !busy {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "kernel connection counts did not settle within {SETTLE:?}: {:?}",
            m.0.iter()
                .filter(|(k, _)| k.contains("connections_"))
                .collect::<Vec<_>>()
        );
        thread::sleep(Duration::from_millis(200));
    }
}

/// `lo <= v <= hi`, with a message naming what was compared.
fn assert_within(what: &str, v: u64, lo: u64, hi: u64) {
    assert!(
        (lo..=hi).contains(&v),
        "{what}: kernel says {v}, expected {lo}..={hi}"
    );
}

#[test]
fn kernel_counts_agree_with_relayed_bytes_and_pool_connects() {
    require_root();
    let stable = CountingUpstream::start("stable");
    let canary = CountingUpstream::start("canary");
    let gw = Gateway::start(
        &[],
        &[],
        &[
            "--stable",
            &stable.addr_str(),
            "--canary",
            &canary.addr_str(),
            "--canary-percent",
            "50",
            "--kernel-accounting",
            "on",
            "--pool-idle-timeout",
            "1s",
        ],
    );
    let tally = drive(gw.addr, PER_CONN, 20_000);
    let total = (CONNS * PER_CONN) as u64;
    assert_eq!(tally.values().sum::<u64>(), total);
    assert!(
        stable.requests() > total / 4 && canary.requests() > total / 4,
        "50 % canary sent {} to stable and {} to canary",
        stable.requests(),
        canary.requests()
    );
    let m = settled(&gw);

    for (name, up) in [("stable", &stable), ("canary", &canary)] {
        let conns = m.upstream("canarygate_kernel_connections_opened_total", name);
        let pool = m.sum(
            "canarygate_upstream_connects_total",
            &[&format!("variant=\"{name}\"")],
        );
        eprintln!(
            "{name}: kernel {conns} connections, pool connects {pool}, upstream accepted {}; \
             kernel acked {} / upstream read {}; kernel received {} / upstream wrote {}; \
             {} RTT samples, {} retransmits",
            up.accepted(),
            m.upstream("canarygate_kernel_bytes_acked_total", name),
            up.read(),
            m.upstream("canarygate_kernel_bytes_received_total", name),
            up.written(),
            m.upstream("canarygate_kernel_rtt_seconds_count", name),
            m.upstream("canarygate_kernel_retransmits_total", name),
        );
        assert!(conns > 0, "{name}: no connection counted");
        assert_eq!(
            conns, pool,
            "{name}: kernel connections vs the pool's connects"
        );
        assert_eq!(
            conns,
            up.accepted(),
            "{name}: kernel connections vs the upstream's accepts"
        );
        assert_within(
            &format!("{name}: bytes acked vs bytes the upstream read"),
            m.upstream("canarygate_kernel_bytes_acked_total", name),
            up.read(),
            up.read() + 2 * conns,
        );
        assert_within(
            &format!("{name}: bytes received vs bytes the upstream wrote"),
            m.upstream("canarygate_kernel_bytes_received_total", name),
            up.written(),
            up.written() + conns,
        );
        assert!(
            m.upstream("canarygate_kernel_rtt_seconds_count", name) > 0,
            "{name}: no RTT samples"
        );
        assert!(
            m.upstream("canarygate_kernel_segments_out_total", name) > 0
                && m.upstream("canarygate_kernel_segments_in_total", name) > 0,
            "{name}: no segments counted"
        );
    }

    // Client side: the kernel's downstream figures beside the gateway's own.
    let clients = m.downstream("canarygate_kernel_connections_opened_total");
    assert_eq!(clients, CONNS as u64, "downstream connections");
    assert_eq!(
        clients,
        m.sum("canarygate_connections_accepted_total", &[]),
        "downstream connections vs accepted"
    );
    let bytes_in = m.sum("canarygate_received_bytes_total", &[]);
    let bytes_out = m.sum("canarygate_sent_bytes_total", &[]);
    assert_within(
        "downstream bytes received vs the gateway's bytes from clients",
        m.downstream("canarygate_kernel_bytes_received_total"),
        bytes_in,
        bytes_in + clients,
    );
    assert_within(
        "downstream bytes acked vs the gateway's bytes to clients",
        m.downstream("canarygate_kernel_bytes_acked_total"),
        bytes_out,
        bytes_out + 2 * clients,
    );
    assert!(m.downstream("canarygate_kernel_rtt_seconds_count") > 0);
    assert_eq!(m.sum("canarygate_kernel_tag_failures_total", &[]), 0);
}

/// The test-only fault injector (`gateway-fault`), built with the gateway's eBPF object
/// but not embedded in it; `tests/build.rs` gives its path. Empty without the toolchain.
static FAULT_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("CANARYGATE_FAULT_OBJECT"));

/// The test-only fault injector, attached to `lo` ingress with TCX (no qdisc), dropping
/// one in `one_in` data segments towards `port`.
struct Fault {
    ebpf: aya::Ebpf,
}

impl Fault {
    fn drop_towards(port: u16, one_in: u32) -> Fault {
        assert!(
            !FAULT_OBJECT.is_empty(),
            "canarygate was built without its eBPF object: {:?}",
            gateway::kernel_built().err()
        );
        let mut ebpf = aya::Ebpf::load(FAULT_OBJECT).expect("load the eBPF object");
        let prog: &mut SchedClassifier = ebpf
            .program_mut("cg_fault_drop")
            .expect("cg_fault_drop in the object")
            .try_into()
            .expect("a classifier");
        prog.load().expect("load cg_fault_drop");
        prog.attach_with_options(
            "lo",
            TcAttachType::Ingress,
            TcAttachOptions::TcxOrder(LinkOrder::default()),
        )
        .expect("attach cg_fault_drop to lo ingress (TCX)");
        let mut fault = Fault { ebpf };
        fault.set(FaultConfig {
            port: u32::from(port),
            one_in,
        });
        fault
    }

    fn set(&mut self, cfg: FaultConfig) {
        let map = self.ebpf.map_mut("FAULT").expect("FAULT map");
        let mut array: Array<_, FaultConfig> = Array::try_from(map).expect("FAULT is an array");
        array.set(0, cfg, 0).expect("configure the fault");
    }
}

impl Drop for Fault {
    fn drop(&mut self) {
        self.set(FaultConfig::default());
    }
}

#[test]
fn retransmits_are_counted_for_the_deployment_that_loses_packets() {
    require_root();
    let stable = CountingUpstream::start("stable");
    let canary = CountingUpstream::start("canary");
    let gw = Gateway::start(
        &[],
        // The eBPF side logs each retransmit at debug level; this also shows that
        // aya-log records reach the gateway's log.
        &[("RUST_LOG", "info,gateway_ebpf=debug")],
        &[
            "--stable",
            &stable.addr_str(),
            "--canary",
            &canary.addr_str(),
            "--canary-percent",
            "50",
            "--kernel-accounting",
            "on",
        ],
    );
    // One in ten: ~24 losses expected over ~240 canary segments, while the chance that
    // one segment is lost four times running (3 s of backoff) stays around 1e-4.
    let fault = Fault::drop_towards(canary.addr.port(), 10);
    let tally = drive(gw.addr, PER_CONN, 4_000);
    drop(fault);
    let m = gw.metrics();
    let (s, c) = (
        m.upstream("canarygate_kernel_retransmits_total", "stable"),
        m.upstream("canarygate_kernel_retransmits_total", "canary"),
    );
    eprintln!("requests {tally:?}; retransmits: stable {s}, canary {c}");
    assert!(
        c >= 5,
        "dropping 1 in 10 segments towards the canary caused only {c} counted retransmits"
    );
    assert!(
        s * 5 <= c,
        "stable lost nothing yet counts {s} retransmits (canary {c})"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !gw.stderr().contains("retransmitted") {
        assert!(
            Instant::now() < deadline,
            "no eBPF log record about retransmits reached the gateway's log"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// `setpriv` prefix that runs a program as root without any capability.
const NO_CAPS: [&str; 4] = [
    "/usr/bin/setpriv",
    "--inh-caps=-all",
    "--bounding-set=-all",
    "--",
];

fn one_get(addr: SocketAddr) {
    let mut c = Client::connect(addr).expect("connect");
    let r = c.get("/size/5").expect("response");
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(r.body, b"kkkkk");
}

#[test]
fn off_and_unprivileged_gateways_serve_and_on_refuses_without_privileges() {
    require_root();
    assert!(
        Path::new(NO_CAPS[0]).exists(),
        "{} not found (Debian package util-linux)",
        NO_CAPS[0]
    );
    let up = CountingUpstream::start("stable");

    let mut off = Gateway::start(
        &[],
        &[],
        &["--stable", &up.addr_str(), "--kernel-accounting", "off"],
    );
    one_get(off.addr);
    assert_eq!(
        off.metrics()
            .sum("canarygate_kernel_accounting_enabled", &[]),
        0
    );
    assert!(
        !own_cgroup(off.pid()).contains("canarygate-"),
        "--kernel-accounting off moved the process into a cgroup"
    );
    assert!(off.stop().success());

    let mut unprivileged = Gateway::start(&NO_CAPS, &[], &["--stable", &up.addr_str()]);
    one_get(unprivileged.addr);
    let log = unprivileged.stderr();
    assert!(
        log.contains("kernel accounting is off: loading eBPF programs needs CAP_BPF"),
        "auto without privileges must say why accounting is off:\n{log}"
    );
    assert!(unprivileged.stop().success());

    let out = Command::new(NO_CAPS[0])
        .args(&NO_CAPS[1..])
        .arg(gateway_bin())
        .args(["run", "--listen", "127.0.0.1:0", "--stable", &up.addr_str()])
        .args(["--kernel-accounting", "on"])
        .stdin(Stdio::null())
        .output()
        .expect("run canarygate without capabilities");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{stderr}");
    assert!(
        stderr.lines().any(|l| l.starts_with(
            "error: --kernel-accounting on: kernel accounting is unavailable: loading eBPF programs needs CAP_BPF"
        )),
        "`on` without privileges must exit with a clear message:\n{stderr}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("listening on"),
        "`on` without privileges must not serve"
    );
}

/// The cgroup v2 path of `pid` (`0::/...`).
fn own_cgroup(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or_default()
        .to_owned()
}

/// The cgroup2 mount point.
fn cgroup2_mount() -> PathBuf {
    let info = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    info.lines()
        .find_map(|l| {
            let (fields, rest) = l.split_once(" - ")?;
            (rest.split_whitespace().next()? == "cgroup2")
                .then(|| fields.split_whitespace().nth(4).map(PathBuf::from))?
        })
        .expect("a cgroup2 mount")
}

/// `bpftool -j ARGS` as JSON.
fn bpftool(args: &[&str]) -> Option<serde_json::Value> {
    let out = Command::new("bpftool")
        .arg("-j")
        .args(args)
        .output()
        .expect("run bpftool (Debian package bpftool)");
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

#[test]
fn nothing_remains_in_the_kernel_after_exit() {
    require_root();
    let up = CountingUpstream::start("stable");
    let mut gw = Gateway::start(
        &[],
        &[],
        &["--stable", &up.addr_str(), "--kernel-accounting", "on"],
    );
    one_get(gw.addr);
    let rel = own_cgroup(gw.pid());
    assert!(
        rel.ends_with(&format!("canarygate-{}", gw.pid())),
        "the gateway runs in cgroup {rel:?}, not its own"
    );
    let dir = cgroup2_mount().join(rel.trim_start_matches('/'));
    let cgroup_id = {
        use std::os::unix::fs::MetadataExt as _;
        fs::metadata(&dir).expect("the gateway's cgroup").ino()
    };
    let links: Vec<serde_json::Value> = bpftool(&["link", "show"])
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter(|l| l["cgroup_id"].as_u64() == Some(cgroup_id))
        .collect();
    assert!(
        !links.is_empty(),
        "no bpf link attached to the gateway's cgroup {}",
        dir.display()
    );
    let link_ids: Vec<u64> = links.iter().filter_map(|l| l["id"].as_u64()).collect();
    let prog_ids: Vec<u64> = links.iter().filter_map(|l| l["prog_id"].as_u64()).collect();
    let map_ids: Vec<u64> = prog_ids
        .iter()
        .filter_map(|id| bpftool(&["prog", "show", "id", &id.to_string()]))
        .flat_map(|p| {
            p["map_ids"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|m| m.as_u64())
        })
        .collect();
    assert!(!map_ids.is_empty(), "the sock_ops program uses no map?");

    let status = gw.stop();
    assert!(status.success(), "exit status {status}");
    assert!(
        gw.stderr().contains("left and removed cgroup"),
        "{}",
        gw.stderr()
    );
    assert!(!dir.exists(), "{} is still there", dir.display());
    for id in &link_ids {
        assert!(
            bpftool(&["link", "show", "id", &id.to_string()]).is_none(),
            "bpf link {id} outlived the gateway"
        );
    }
    for id in &prog_ids {
        assert!(
            bpftool(&["prog", "show", "id", &id.to_string()]).is_none(),
            "bpf program {id} outlived the gateway"
        );
    }
    for id in &map_ids {
        assert!(
            bpftool(&["map", "show", "id", &id.to_string()]).is_none(),
            "bpf map {id} outlived the gateway"
        );
    }
    let qdisc = Command::new("tc")
        .args(["qdisc", "show", "dev", "lo"])
        .output()
        .expect("run tc (Debian package iproute2)");
    let qdisc = String::from_utf8_lossy(&qdisc.stdout);
    assert!(
        !qdisc.contains("clsact"),
        "a clsact qdisc is left on lo: {qdisc}"
    );
    let pinned = fs::read_dir("/sys/fs/bpf").map_or(0, |d| {
        d.flatten()
            .filter(|e| e.file_name().to_string_lossy().contains("canarygate"))
            .count()
    });
    assert_eq!(
        pinned, 0,
        "something of canarygate is pinned under /sys/fs/bpf"
    );
}
