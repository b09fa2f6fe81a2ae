//! A real etcd for the fleet-mode tests: Debian's `/usr/bin/etcd` (package `etcd-server`)
//! as a one-member cluster on two free loopback ports (client and peer), its data in a
//! fresh temp directory, and Debian's `/usr/bin/etcdctl` (package `etcd-client`) to read
//! and write keys behind the gateway's back.
//!
//! [`Etcd::start`] returns only once `GET /health` says `"health":"true"`. The member can
//! be stopped and started again on the same ports and data (an etcd restart under a
//! running fleet), or killed. Its log goes to a file in its temp directory, appended to
//! across restarts, and its last lines are printed when a start fails or the owning test
//! panics. The process is signalled by its own PID only; dropping the handle kills it and
//! removes its directory.

use std::fs;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::process::{TempDir, free_port};

/// Where Debian installs etcd.
pub const ETCD: &str = "/usr/bin/etcd";

/// Where Debian installs etcdctl.
pub const ETCDCTL: &str = "/usr/bin/etcdctl";

/// How long etcd may take to answer `/health` (a one-member cluster elects itself after
/// about one election timeout, a second by default; a busy machine needs more).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long etcd may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Lines of the log shown with a failure.
const LOG_TAIL: usize = 40;

/// A one-member etcd cluster on loopback.
#[derive(Debug)]
pub struct Etcd {
    /// `None` while stopped or killed.
    child: Option<Child>,
    client_port: u16,
    peer_port: u16,
    name: String,
    data_dir: PathBuf,
    log_path: PathBuf,
    dir: TempDir,
}

impl Etcd {
    /// Starts etcd on two free loopback ports with a fresh data directory and waits until
    /// it is healthy. Panics (with the log's last lines) when it exits or stays unhealthy.
    pub fn start() -> Self {
        assert!(
            Path::new(ETCD).exists(),
            "{ETCD} not found: install Debian's etcd-server (apt-get install -y etcd-server), \
             or run `cargo xtask tools`"
        );
        let dir = TempDir::new("etcd");
        let client_port = free_port();
        let mut peer_port = free_port();
        while peer_port == client_port {
            peer_port = free_port();
        }
        let mut etcd = Self {
            child: None,
            client_port,
            peer_port,
            name: format!("e2e-{}-{client_port}", std::process::id()),
            data_dir: data_dir(client_port),
            log_path: dir.path().join("etcd.log"),
            dir,
        };
        etcd.launch();
        etcd
    }

    /// The client URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The client address.
    pub fn addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.client_port).into()
    }

    /// Process id of the running member, `None` while stopped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops etcd with SIGTERM and waits for it to exit (SIGKILL after 10 s). The data
    /// directory and the ports are kept for [`Etcd::start_again`].
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "etcd (pid {}) did not exit within {STOP_TIMEOUT:?} of SIGTERM (killed); \
                     log tail:\n{}",
                    child.id(),
                    self.log_tail()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts etcd again after [`Etcd::stop`] or [`Etcd::kill`]: same name, ports and data
    /// directory, so every key written before is still there. Waits until healthy.
    pub fn start_again(&mut self) {
        assert!(
            self.child.is_none(),
            "Etcd::start_again while etcd is running"
        );
        self.launch();
    }

    /// Kills etcd with SIGKILL (a crash), keeping the data directory and the ports.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs `etcdctl --endpoints URL ARGS..` with the v3 API and bounded timeouts, and
    /// returns what it produced (the caller checks the status).
    pub fn etcdctl(&self, args: &[&str]) -> Output {
        assert!(
            Path::new(ETCDCTL).exists(),
            "{ETCDCTL} not found: install Debian's etcd-client (apt-get install -y etcd-client)"
        );
        Command::new(ETCDCTL)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.url()))
            .args(["--dial-timeout=3s", "--command-timeout=10s"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run etcdctl")
    }

    /// The value of `key` (`etcdctl get KEY --print-value-only`), `None` when absent.
    /// Panics (with etcdctl's stderr) when etcdctl fails.
    pub fn get(&self, key: &str) -> Option<String> {
        let out = self.etcdctl(&["get", key, "--print-value-only"]);
        assert!(
            out.status.success(),
            "etcdctl get {key} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        // etcdctl ends the value with a newline and prints nothing for a missing key.
        text.strip_suffix('\n').map(str::to_owned)
    }

    /// `etcdctl put KEY VALUE`; panics (with etcdctl's stderr) when it fails.
    pub fn put(&self, key: &str, value: &str) {
        let out = self.etcdctl(&["put", key, value]);
        assert!(
            out.status.success(),
            "etcdctl put {key} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Everything etcd logged so far, across restarts.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The log's last [`LOG_TAIL`] lines.
    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n")
    }

    /// Spawns etcd with this member's ports and data directory, then waits for health.
    fn launch(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open etcd log file");
        let client = self.url();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut cmd = Command::new(ETCD);
        // An ETCD_* variable in the test's environment would override these flags.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ETCD_") {
                cmd.env_remove(key);
            }
        }
        let child = cmd
            .arg(format!("--name={}", self.name))
            .arg(format!("--data-dir={}", self.data_dir.display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster={}={peer}", self.name))
            .arg("--initial-cluster-state=new")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone etcd log file"))
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        self.child = Some(child);
        self.wait_healthy();
    }

    /// Polls `GET /health` until it says `"health":"true"`; panics with the log's tail when
    /// etcd exits first or [`START_TIMEOUT`] passes.
    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let last = match health(self.addr()) {
                Ok(body) if body.contains(r#""health":"true""#) => return,
                Ok(body) => format!("answered {body:?}"),
                Err(e) => e,
            };
            let child = self.child.as_mut().expect("etcd was just spawned");
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                panic!(
                    "etcd exited ({status}) before it was healthy on {}; log tail:\n{}",
                    self.url(),
                    self.log_tail()
                );
            }
            if Instant::now() >= deadline {
                self.kill();
                panic!(
                    "etcd was not healthy on {} within {START_TIMEOUT:?} (last: {last}); \
                     log tail:\n{}",
                    self.url(),
                    self.log_tail()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let pid = self.pid();
        self.kill();
        let _ = std::fs::remove_dir_all(&self.data_dir);
        if thread::panicking() {
            eprintln!(
                "---- etcd (pid {pid:?}, {}) log, last lines ----\n{}\n----",
                self.dir.path().display(),
                self.log_tail()
            );
        }
    }
}

/// Where etcd keeps its data: in memory (`/dev/shm`) when the machine has it, because
/// etcd fsyncs every write and a shared CI disk makes that take seconds, longer than the
/// leases the fleet tests use; the tests are about the gateways, not etcd's durability.
fn data_dir(port: u16) -> PathBuf {
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    base.join(format!("canarygate-etcd-{}-{port}", std::process::id()))
}

/// `GET /health` on `addr`; the response body, or why there is none.
fn health(addr: SocketAddr) -> Result<String, String> {
    let timeout = Duration::from_secs(1);
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    s.take(64 * 1024)
        .read_to_end(&mut raw)
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no complete response: {text:?}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("status line {:?}", head.lines().next()));
    }
    Ok(body.to_owned())
}
