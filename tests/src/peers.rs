//! Upstream servers and clients people run, as real processes: Node.js's `http` server
//! and fetch client, and gunicorn (its default gthread keep-alive of 2 s) serving a small
//! WSGI app. Their scripts live in `tests/peers/`.
//!
//! `node` comes with the machine (or Debian's `nodejs`), gunicorn from PyPI; both are
//! installed by `cargo xtask test`. A missing one is a test failure that names it.

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::process::{TempDir, free_port, workspace_root};

/// The directory holding the peers' scripts.
pub fn peers_dir() -> PathBuf {
    workspace_root().join("tests/peers")
}

/// A server process on a loopback port, killed by its PID on drop.
#[derive(Debug)]
pub struct ServerProc {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
    dir: TempDir,
}

impl ServerProc {
    /// Starts `program args` (with `{port}` in an argument replaced by a free port) and
    /// waits until it accepts connections.
    fn start(name: &'static str, program: &str, args: &[&str]) -> Self {
        Self::start_on(name, program, args, free_port())
    }

    /// [`ServerProc::start`] on a given port.
    fn start_on(name: &'static str, program: &str, args: &[&str], port: u16) -> Self {
        let dir = TempDir::new(name);
        let log = dir.path().join("output.log");
        let args: Vec<String> = args
            .iter()
            .map(|a| a.replace("{port}", &port.to_string()))
            .collect();
        let out = fs::File::create(&log).expect("server log file");
        let mut child = Command::new(program)
            .args(&args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone log file"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {program} for {name}: {e} (cargo xtask test installs it)")
            });
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "{name} exited ({status}) before listening:\n{}",
                    fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{name} did not listen on {addr} within 20 s:\n{}",
                    fs::read_to_string(&log).unwrap_or_default()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
        ServerProc {
            name,
            child,
            addr,
            dir,
        }
    }

    /// Node.js's `http` server running `tests/peers/node_upstream.js`, with Node's
    /// default keep-alive timeout (5 s, announced as `Keep-Alive: timeout=5`).
    pub fn node() -> Self {
        let script = peers_dir().join("node_upstream.js");
        Self::start("node", "node", &[&script.to_string_lossy(), "{port}"])
    }

    /// [`ServerProc::node`] on `port` (to start one again where a test killed it).
    pub fn node_on(port: u16) -> Self {
        let script = peers_dir().join("node_upstream.js");
        Self::start_on("node", "node", &[&script.to_string_lossy(), "{port}"], port)
    }

    /// Node.js's `https` server (`tests/peers/https_upstream.js`) with `cert`/`key`,
    /// answering `NAME PATH`; with `client_ca` it requires a client certificate that CA
    /// signed (mutual TLS).
    pub fn node_https(name: &str, cert: &Path, key: &Path, client_ca: Option<&Path>) -> Self {
        let script = peers_dir().join("https_upstream.js");
        let mut args = vec![
            script.to_string_lossy().into_owned(),
            "{port}".to_owned(),
            cert.to_string_lossy().into_owned(),
            key.to_string_lossy().into_owned(),
            name.to_owned(),
        ];
        if let Some(ca) = client_ca {
            args.push(ca.to_string_lossy().into_owned());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Self::start("node-https", "node", &args)
    }

    /// [`ServerProc::node`] with `server.keepAliveTimeout` set to `ms`.
    pub fn node_with_keepalive(ms: u32) -> Self {
        let script = peers_dir().join("node_upstream.js");
        Self::start(
            "node",
            "node",
            &[&script.to_string_lossy(), "{port}", &ms.to_string()],
        )
    }

    /// gunicorn with its threaded worker and default keep-alive (2 s) serving
    /// `tests/peers/wsgi_app.py`.
    pub fn gunicorn() -> Self {
        let dir = peers_dir();
        Self::start(
            "gunicorn",
            "python3",
            &[
                "-m",
                "gunicorn",
                "--worker-class",
                "gthread",
                "--threads",
                "8",
                "--workers",
                "1",
                "--bind",
                "127.0.0.1:{port}",
                "--chdir",
                &dir.to_string_lossy(),
                "wsgi_app:app",
            ],
        )
    }

    /// An HTTP/2 cleartext upstream (Node's `http2`, `tests/peers/h2_upstream.js`)
    /// answering as `name`: a full-duplex `/echo` with trailers, `/zeros?n=N`, and
    /// `NAME METHOD PATH` elsewhere.
    pub fn node_h2c(name: &str) -> Self {
        let script = peers_dir().join("h2_upstream.js");
        Self::start(
            "node-h2c",
            "node",
            &[&script.to_string_lossy(), "{port}", name],
        )
    }

    /// A real gRPC server (Python `grpcio`, h2c, `tests/peers/grpc_server.py`) whose
    /// `canary.Echo` answers as `name`; with `fail` (a status code name such as
    /// `UNAVAILABLE`) its unary `Say` fails with that status every time.
    pub fn grpc(name: &str, fail: Option<&str>) -> Self {
        let script = peers_dir().join("grpc_server.py");
        let mut args = vec![
            script.to_string_lossy().into_owned(),
            "{port}".into(),
            name.into(),
        ];
        if let Some(f) = fail {
            args.push(f.to_owned());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Self::start("grpc", "python3", &args)
    }

    /// Listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What the server printed so far.
    pub fn output(&self) -> String {
        fs::read_to_string(self.dir.path().join("output.log")).unwrap_or_default()
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("---- {} output ----\n{}\n----", self.name, self.output());
        }
    }
}

/// Runs Node's fetch client (`tests/peers/sse_client.js`) on `url`; returns the status
/// and how many milliseconds late each server-sent event arrived.
pub fn node_sse_client(url: &str) -> (u16, Vec<i64>) {
    let script = peers_dir().join("sse_client.js");
    let mut node = Command::new("node");
    if crate::tls::over_tls() {
        node.env("NODE_EXTRA_CA_CERTS", crate::tls::ca_file());
    }
    let out = node
        .arg(script)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("run node sse_client.js");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "node sse_client.js {url} failed: {}{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("sse_client output {stdout:?}: {e}"));
    let status = v["status"].as_u64().unwrap_or(0) as u16;
    let lags = v["lags"]
        .as_array()
        .map(|a| a.iter().filter_map(serde_json::Value::as_i64).collect())
        .unwrap_or_default();
    (status, lags)
}

/// `tests/peers/many_ports.js`: `n` tiny keep-alive HTTP servers in one Node process
/// (200 `ok` to everything; `GET /down` makes a port answer 503 from then on); killed on
/// drop.
#[derive(Debug)]
pub struct ManyPorts {
    child: Child,
    /// Their ports.
    pub ports: Vec<u16>,
}

impl ManyPorts {
    /// Starts them and waits for the list of ports (at most 30 s).
    pub fn start(n: usize) -> Self {
        use std::io::{BufRead, BufReader};
        let script = peers_dir().join("many_ports.js");
        let mut child = Command::new("node")
            .args([script.to_string_lossy().as_ref(), &n.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run node: {e} (cargo xtask test installs it)"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        let ports: Vec<u16> = serde_json::from_str(line.trim()).unwrap_or_else(|e| {
            let _ = child.kill();
            panic!("many_ports.js printed no port list ({e}): {line:?}")
        });
        assert_eq!(ports.len(), n, "many_ports.js listened on every port");
        ManyPorts { child, ports }
    }

    /// The process id (to read its CPU time).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ManyPorts {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
