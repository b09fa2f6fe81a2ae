//! Real `canarygate` processes for end-to-end tests: finding (or building) the binary,
//! starting `canarygate run` on ephemeral loopback ports (from flags, or from a config
//! file with several stages, an admin socket and a metrics endpoint), and running it to
//! completion for CLI tests.
//!
//! A [`GatewayProc`] is killed by its own PID when dropped; its stderr goes to a temp file
//! that is printed when the owning test panics, so a failure shows the gateway's logs.

use std::ffi::OsStr;
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a gateway may take to print its `listening on` line.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests crate has a parent directory")
        .to_path_buf()
}

/// The `target/<profile>` directory the running test executable was built into
/// (the executable is `target/<profile>/deps/e2e-HASH`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test exe has a directory");
    if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().expect("deps has a parent").to_path_buf()
    } else {
        deps.to_path_buf()
    }
}

/// The cargo profile whose output directory is named `dir_name`.
fn profile_name(dir_name: &str) -> &str {
    match dir_name {
        "debug" => "dev",
        other => other,
    }
}

/// Path of the `canarygate` binary built with the same profile as the running tests.
///
/// `CANARYGATE_BIN` overrides it. Otherwise the binary is built (once per test process)
/// with `cargo build -p gateway --bin canarygate --profile P` from the workspace root, so a
/// stale binary is never tested; cargo makes that a no-op when it is up to date.
pub fn gateway_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("CANARYGATE_BIN") {
            return PathBuf::from(p);
        }
        let dir = profile_dir();
        let bin = dir.join("canarygate");
        let dir_name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("debug")
            .to_owned();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .args(["build", "--quiet", "-p", "gateway", "--bin", "canarygate"])
            .args(["--profile", profile_name(&dir_name)])
            .current_dir(workspace_root())
            .stdin(Stdio::null())
            .output()
            .expect("run cargo build for canarygate");
        assert!(
            out.status.success(),
            "cargo build -p gateway --bin canarygate --profile {} failed:\n{}",
            profile_name(&dir_name),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            bin.exists(),
            "cargo build succeeded but {} does not exist",
            bin.display()
        );
        bin
    })
    .clone()
}

/// A temporary directory removed (recursively) on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates a fresh directory under the system temp dir; `tag` goes into its name.
    pub fn new(tag: &str) -> Self {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "canarygate-e2e-{tag}-{}-{}-{nanos}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        fs::create_dir_all(&path).expect("create temp dir");
        Self { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// What a starting `canarygate run` must print on stdout before it counts as ready.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expect {
    /// `listening on ADDR` lines (one per stage, in stage order).
    pub listeners: usize,
    /// Whether an `admin socket PATH` line follows.
    pub admin_socket: bool,
    /// Whether a `metrics on ADDR` line follows.
    pub metrics: bool,
}

impl Expect {
    /// `listeners` stages, no admin socket, no metrics endpoint.
    pub fn stages(listeners: usize) -> Self {
        Self {
            listeners,
            ..Self::default()
        }
    }

    /// Also expects the `admin socket PATH` line.
    #[must_use]
    pub fn with_admin(mut self) -> Self {
        self.admin_socket = true;
        self
    }

    /// Also expects the `metrics on ADDR` line.
    #[must_use]
    pub fn with_metrics(mut self) -> Self {
        self.metrics = true;
        self
    }
}

/// What the gateway announced on stdout while starting.
#[derive(Debug, Default)]
struct Announced {
    addrs: Vec<SocketAddr>,
    admin_socket: Option<PathBuf>,
    metrics: Option<SocketAddr>,
}

impl Announced {
    fn satisfies(&self, want: &Expect) -> bool {
        self.addrs.len() >= want.listeners
            && (!want.admin_socket || self.admin_socket.is_some())
            && (!want.metrics || self.metrics.is_some())
    }

    /// Records one stdout line; an announced address that does not parse is an error.
    fn take(&mut self, line: &str) -> Result<(), String> {
        let parse = |rest: &str| {
            rest.trim()
                .parse::<SocketAddr>()
                .map_err(|e| format!("canarygate printed an unparsable address ({e}): {line:?}"))
        };
        if let Some(rest) = line.strip_prefix("listening on ") {
            self.addrs.push(parse(rest)?);
        } else if let Some(rest) = line.strip_prefix("metrics on ") {
            self.metrics = Some(parse(rest)?);
        } else if let Some(rest) = line.strip_prefix("admin socket ") {
            self.admin_socket = Some(PathBuf::from(rest.trim()));
        }
        Ok(())
    }
}

/// A running `canarygate run` process listening on ephemeral loopback ports.
#[derive(Debug)]
pub struct GatewayProc {
    child: Child,
    announced: Announced,
    stderr_path: PathBuf,
    /// Whether [`GatewayProc::try_start`] registered its listener as TLS (undone on drop,
    /// so a later plain gateway on the same port is not taken for TLS).
    tls: bool,
    _dir: TempDir,
}

impl GatewayProc {
    /// Runs `canarygate run --listen 127.0.0.1:0 ARGS..` and waits for `listening on ADDR`
    /// (and for `admin socket` / `metrics on` when ARGS ask for them).
    /// Panics (with the gateway's stderr) if it exits or stays silent.
    pub fn start(args: &[&str]) -> Self {
        match Self::try_start(args) {
            Ok(g) => g,
            Err(e) => panic!("{e}"),
        }
    }

    /// Like [`GatewayProc::start`] but returns the failure as text.
    /// With `CANARYGATE_E2E_TLS=1` it terminates TLS with a certificate from the
    /// harness CA ([`crate::tls`]) unless ARGS already name one.
    pub fn try_start(args: &[&str]) -> Result<Self, String> {
        let dir = TempDir::new("gw");
        let tls = if crate::tls::over_tls() && !args.contains(&"--tls-cert") {
            crate::tls::harness_flags(dir.path())
        } else {
            Vec::new()
        };
        let mut full = vec!["run", "--listen", "127.0.0.1:0"];
        full.extend_from_slice(args);
        full.extend(tls.iter().map(String::as_str));
        let expect = Expect {
            listeners: 1,
            admin_socket: args.contains(&"--admin-socket"),
            metrics: args.contains(&"--metrics-listen"),
        };
        let mut gw = Self::spawn_in(dir, &full, &expect)?;
        if !tls.is_empty() {
            crate::tls::register_listener(gw.addr(), gw.child.id());
            gw.tls = true;
        }
        Ok(gw)
    }

    /// Runs `canarygate run --config FILE ARGS..` and waits until it printed what `expect`
    /// lists. Panics (with the gateway's stderr) if it does not.
    pub fn start_config(config: &Path, expect: &Expect, args: &[&str]) -> Self {
        let path = config.to_string_lossy();
        let mut full = vec!["run", "--config", &path];
        full.extend_from_slice(args);
        match Self::spawn(&full, expect) {
            Ok(g) => g,
            Err(e) => panic!("{e}"),
        }
    }

    /// Runs `canarygate ARGS..` (the subcommand included) and waits until it printed what
    /// `expect` lists on stdout.
    pub fn spawn(args: &[&str], expect: &Expect) -> Result<Self, String> {
        Self::spawn_in(TempDir::new("gw"), args, expect)
    }

    /// [`GatewayProc::spawn`] with extra environment variables (e.g. `NOTIFY_SOCKET`).
    pub fn spawn_with_env(
        args: &[&str],
        env: &[(&str, &OsStr)],
        expect: &Expect,
    ) -> Result<Self, String> {
        Self::spawn_env_in(TempDir::new("gw"), &[], args, env, expect)
    }

    /// [`GatewayProc::spawn`] through a wrapper program: `WRAPPER.. canarygate ARGS..`
    /// (e.g. one that installs a seccomp filter and then execs the gateway).
    pub fn spawn_wrapped(
        wrapper: &[&OsStr],
        args: &[&str],
        expect: &Expect,
    ) -> Result<Self, String> {
        Self::spawn_env_in(TempDir::new("gw"), wrapper, args, &[], expect)
    }

    /// [`GatewayProc::spawn`] with `dir` as the process's own directory (kept while it
    /// runs, removed after).
    fn spawn_in(dir: TempDir, args: &[&str], expect: &Expect) -> Result<Self, String> {
        Self::spawn_env_in(dir, &[], args, &[], expect)
    }

    fn spawn_env_in(
        dir: TempDir,
        wrapper: &[&OsStr],
        args: &[&str],
        env: &[(&str, &OsStr)],
        expect: &Expect,
    ) -> Result<Self, String> {
        let stderr_path = dir.path().join("stderr.log");
        let stderr = fs::File::create(&stderr_path).map_err(|e| e.to_string())?;
        let bin = gateway_bin();
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut cmd = Command::new(first);
                cmd.args(rest).arg(&bin);
                cmd
            }
            None => Command::new(&bin),
        };
        let mut child = cmd
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("spawn canarygate: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout pipe")?;
        let (tx, rx) = mpsc::channel::<String>();
        // Reads the first lines, reports them, then keeps draining so the gateway never
        // blocks on a full pipe.
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let mut seen = Vec::new();
        let mut announced = Announced::default();
        while !announced.satisfies(expect) {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                let status = child.try_wait().ok().flatten();
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "canarygate {args:?} did not print {expect:?} \
                     (exit status {status:?}); stdout {seen:?}; stderr:\n{}",
                    fs::read_to_string(&stderr_path).unwrap_or_default()
                ));
            };
            if let Err(e) = announced.take(&line) {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
            seen.push(line);
        }
        // A port the kernel hands out again belongs to this process now: plain until
        // `try_start` says otherwise.
        for &addr in &announced.addrs {
            crate::tls::forget_listener(addr);
        }
        Ok(Self {
            child,
            announced,
            stderr_path,
            tls: false,
            _dir: dir,
        })
    }

    /// The (first) address it printed.
    pub fn addr(&self) -> SocketAddr {
        self.announced.addrs[0]
    }

    /// Every `listening on` address, in stage order.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.announced.addrs
    }

    /// The path of its `admin socket` line.
    pub fn admin_socket(&self) -> &Path {
        self.announced
            .admin_socket
            .as_deref()
            .expect("the gateway announced no admin socket")
    }

    /// `GET /metrics`, parsed by Prometheus's own client parser (panics with the text
    /// when the status is not 200 or it does not parse).
    pub fn scrape(&self) -> crate::PromText {
        let r = crate::Client::connect(self.metrics_addr())
            .and_then(|mut c| c.get("/metrics"))
            .expect("GET /metrics");
        assert_eq!(r.status, 200, "{}", r.describe());
        crate::parse_prometheus(&r.text()).unwrap_or_else(|e| panic!("{e}\n{}", r.text()))
    }

    /// The address of its `metrics on` line.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.announced
            .metrics
            .expect("the gateway announced no metrics endpoint")
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time used so far by all of the process's threads, from each thread's
    /// `/proc/PID/task/TID/schedstat` (nanoseconds on a CPU, user and system).
    pub fn cpu_time(&self) -> Duration {
        cpu_time_of(self.pid())
    }

    /// Resident set size (`VmRSS` from `/proc/PID/status`) in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.proc_status_kib("VmRSS:")
    }

    /// Peak resident set size so far (`VmHWM`) in KiB: catches memory that was used for
    /// a moment and given back.
    pub fn peak_rss_kib(&self) -> u64 {
        self.proc_status_kib("VmHWM:")
    }

    fn proc_status_kib(&self, field: &str) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} line in /proc/PID/status"))
    }

    /// Everything the gateway wrote to stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Exit status if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Undoes [`GatewayProc::try_start`]'s TLS registration (once).
    fn forget_tls(&mut self) {
        if std::mem::take(&mut self.tls) {
            crate::tls::unregister_listener(self.addr(), self.child.id());
        }
    }

    /// Waits up to `within` for the process to exit.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.try_wait() {
                self.forget_tls();
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends signal `name` (`TERM`, `INT`, ...) to this process, by PID, with `kill(1)`.
    pub fn signal(&self, name: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status();
    }
}

impl Drop for GatewayProc {
    fn drop(&mut self) {
        // Forgotten while this process still holds the port, so never after another
        // gateway took it.
        self.forget_tls();
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            let log = self.stderr();
            let tail: String = {
                let lines: Vec<&str> = log.lines().collect();
                lines[lines.len().saturating_sub(60)..].join("\n")
            };
            eprintln!(
                "---- canarygate (pid {}) stderr, last lines ----\n{tail}\n----",
                self.child.id()
            );
        }
    }
}

/// What a finished (or timed-out) CLI run produced.
#[derive(Debug)]
pub struct CliOutput {
    /// Exit status, `None` if it was still running at the deadline (then killed).
    pub status: Option<ExitStatus>,
    /// Everything on stdout.
    pub stdout: String,
    /// Everything on stderr.
    pub stderr: String,
}

impl CliOutput {
    /// True when it exited with status 0.
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// Status, stdout and stderr, for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `canarygate ARGS..` to completion, killing it (by PID) after `timeout`.
pub fn run_cli(args: &[&str], timeout: Duration) -> CliOutput {
    run_program(gateway_bin().as_os_str(), args, timeout)
}

/// Runs `program ARGS..` to completion, killing it (by PID) after `timeout`.
pub fn run_program(program: &OsStr, args: &[&str], timeout: Duration) -> CliOutput {
    let dir = TempDir::new("cli");
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out_path).expect("create stdout file"))
        .stderr(fs::File::create(&err_path).expect("create stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", program.to_string_lossy()));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break Some(s);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    CliOutput {
        status,
        stdout: fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: fs::read_to_string(&err_path).unwrap_or_default(),
    }
}

/// CPU time of process `pid` so far (see [`GatewayProc::cpu_time`]).
pub fn cpu_time_of(pid: u32) -> Duration {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    let ns: u64 = tasks
        .filter_map(Result::ok)
        .filter_map(|t| fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(ns)
}

/// A loopback port that was free a moment ago (bound to port 0, then released), for
/// programs that cannot report the port they picked.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}
