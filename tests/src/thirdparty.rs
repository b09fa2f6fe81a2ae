//! Third-party peers: nginx as an upstream (started from a generated config in a temp
//! prefix, single process, killed by its PID on drop) and curl as a client.
//!
//! Both come from Debian packages (`nginx` or `nginx-light`, `curl`); a missing binary is
//! reported as a test failure naming the package, never silently skipped.

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::process::{TempDir, free_port};
use crate::wire::pattern_bytes;

/// Where Debian installs nginx.
pub const NGINX: &str = "/usr/sbin/nginx";

/// Where Debian installs curl.
pub const CURL: &str = "/usr/bin/curl";

/// Size of the static file nginx serves at `/blob`.
pub const NGINX_BLOB_LEN: usize = 3 * 1024 * 1024 + 17;

/// A running nginx on a loopback port.
///
/// Locations: `/` returns `nginx\n`; `/blob` is a static file of [`NGINX_BLOB_LEN`] pattern
/// bytes (sent with Content-Length); `/upload` reads and discards bodies up to
/// 64 MiB and answers `got\n`.
#[derive(Debug)]
pub struct Nginx {
    child: Child,
    addr: SocketAddr,
    dir: TempDir,
}

impl Nginx {
    /// Writes the config and the static file, starts nginx in the foreground, and waits
    /// until it accepts connections.
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// [`Nginx::start`] with `directives` added to the `http` block (for example
    /// `keepalive_timeout 1s;`).
    pub fn start_with(directives: &str) -> Self {
        assert!(
            Path::new(NGINX).exists(),
            "{NGINX} not found: install Debian's nginx (apt-get install -y nginx-light)"
        );
        let dir = TempDir::new("nginx");
        let prefix = dir.path();
        fs::create_dir_all(prefix.join("html")).expect("mkdir html");
        fs::write(prefix.join("html/blob"), pattern_bytes(NGINX_BLOB_LEN)).expect("write blob");
        let port = free_port();
        let p = prefix.display();
        let conf = format!(
            "daemon off;\n\
             master_process off;\n\
             worker_processes 1;\n\
             error_log {p}/error.log warn;\n\
             pid {p}/nginx.pid;\n\
             events {{ worker_connections 512; }}\n\
             http {{\n\
               access_log off;\n\
               client_body_temp_path {p}/body;\n\
               proxy_temp_path {p}/proxy;\n\
               fastcgi_temp_path {p}/fastcgi;\n\
               uwsgi_temp_path {p}/uwsgi;\n\
               scgi_temp_path {p}/scgi;\n\
               keepalive_requests 100000;\n\
               {directives}\n\
               server {{\n\
                 listen 127.0.0.1:{port};\n\
                 root {p}/html;\n\
                 location = / {{ default_type text/plain; return 200 \"nginx\\n\"; }}\n\
                 location = /blob {{ default_type application/octet-stream; }}\n\
                 location = /upload {{ client_max_body_size 64m; default_type text/plain; return 200 \"got\\n\"; }}\n\
               }}\n\
             }}\n"
        );
        let conf_path = prefix.join("nginx.conf");
        fs::write(&conf_path, conf).expect("write nginx.conf");
        let mut child = Command::new(NGINX)
            .arg("-p")
            .arg(prefix)
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(prefix.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(prefix.join("stderr.log")).expect("nginx stderr file"))
            .spawn()
            .expect("spawn nginx");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "nginx exited ({status}) before listening:\n{}\n{}",
                    fs::read_to_string(prefix.join("stderr.log")).unwrap_or_default(),
                    fs::read_to_string(prefix.join("error.log")).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "nginx did not listen on {addr} within 10s:\n{}",
                    fs::read_to_string(prefix.join("error.log")).unwrap_or_default()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
        Self { child, addr, dir }
    }

    /// Listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// nginx's error log so far.
    pub fn error_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("---- nginx error.log ----\n{}\n----", self.error_log());
        }
    }
}

/// Runs curl with `args` (after `-sS --max-time 20`); returns its output.
pub fn curl(args: &[&str]) -> Output {
    assert!(
        Path::new(CURL).exists(),
        "{CURL} not found: install Debian's curl (apt-get install -y curl)"
    );
    let mut cmd = Command::new(CURL);
    cmd.args(["-sS", "--max-time", "20"]);
    if crate::tls::over_tls() {
        // The harness's gateways present certificates of its CA.
        cmd.arg("--cacert").arg(crate::tls::ca_file());
    }
    cmd.args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run curl")
}

/// Writes `data` to `dir/name` and returns the path (for `--data-binary @file`).
pub fn write_file(dir: &TempDir, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.path().join(name);
    fs::write(&p, data).expect("write temp file");
    p
}
