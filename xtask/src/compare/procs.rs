//! The processes under test: two nginx upstreams, the proxies (canarygate, nginx,
//! HAProxy; plain HTTP or terminating TLS with one certificate, [`TlsFiles`]), each
//! started from a config written into the run's directory, on free loopback ports. A
//! [`Proc`] stops its process (SIGTERM by PID, then SIGKILL) when dropped, so an error
//! anywhere leaves nothing running; only processes started here are ever signalled.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{BufRead as _, BufReader, Read as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::step::display;

/// Header the upstreams add, naming themselves, so any proxy's split can be checked.
pub(crate) const UPSTREAM_HEADER: &str = "x-upstream";
/// Header canarygate adds (`--variant-header`).
pub(crate) const VARIANT_HEADER: &str = "x-canarygate-variant";
/// Time a process has to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request body any proxy here takes (the upload shapes send up to 16 MiB).
pub(crate) const MAX_BODY_MIB: u64 = 64;
/// Response bodies the upstreams serve, `(location, file name, bytes)`: the download
/// shapes' `GET /1m` and `GET /16m`.
const BODIES: [(&str, &str, u64); 2] =
    [("/1m", "body-1m", 1 << 20), ("/16m", "body-16m", 16 << 20)];
/// Time a process has to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// A process this run started, stopped when dropped.
pub(crate) struct Proc {
    /// Short name for logs and errors.
    pub(crate) name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with stdin closed and stderr (and stdout unless `pipe_stdout`) going
    /// to `log`.
    pub(crate) fn spawn(
        name: &str,
        cmd: &mut Command,
        log: &Path,
        pipe_stdout: bool,
    ) -> Result<Proc> {
        let file = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let out = if pipe_stdout {
            Stdio::piped()
        } else {
            Stdio::from(file.try_clone()?)
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(Stdio::from(file))
            .spawn()
            .with_context(|| format!("could not start `{}`", display(cmd)))?;
        Ok(Proc {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
        })
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time (user + system, clock ticks) of the process and its direct children
    /// (nginx's workers); threads are included in their process's figure.
    pub(crate) fn cpu_ticks(&self) -> u64 {
        let (user, system) = self.cpu_split();
        user + system
    }

    /// User and system CPU time, clock ticks, as [`Proc::cpu_ticks`] counts them.
    pub(crate) fn cpu_split(&self) -> (u64, u64) {
        let pid = self.pid();
        std::iter::once(pid)
            .chain(children(pid))
            .map(user_system_ticks)
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    }

    /// Fails, with the end of its log, if the process has exited.
    pub(crate) fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}); end of {}:\n{}",
                self.name,
                self.log.display(),
                tail(&self.log)
            );
        }
        Ok(())
    }

    /// Waits until `port` on loopback accepts connections.
    pub(crate) fn wait_port(&mut self, port: u16) -> Result<()> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            self.check_alive()?;
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not listen on {addr} within {START_TIMEOUT:?}",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Reads `listening on ADDR` from stdout (canarygate's ready line) and returns the
    /// port; stdout is drained in the background afterwards.
    pub(crate) fn ready_line(&mut self, timeout: Duration) -> Result<u16> {
        let stdout = self.child.stdout.take().context("stdout was not piped")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout);
            let mut line = String::new();
            let _ = lines.read_line(&mut line);
            let _ = tx.send(line);
            let mut sink = Vec::new();
            let _ = lines.read_to_end(&mut sink);
        });
        let Ok(line) = rx.recv_timeout(timeout) else {
            self.check_alive()?;
            bail!("{} printed no ready line within {timeout:?}", self.name);
        };
        let addr: SocketAddr = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .with_context(|| {
                format!(
                    "{}: expected `listening on ADDR`, got {line:?}; log:\n{}",
                    self.name,
                    tail(&self.log)
                )
            })?;
        Ok(addr.port())
    }

    /// Stops the process: SIGTERM, then SIGKILL after [`STOP_TIMEOUT`].
    pub(crate) fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A loopback port nothing listens on right now.
pub(crate) fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding a probe socket on 127.0.0.1")?;
    Ok(l.local_addr()?.port())
}

/// Fields of `/proc/PID/stat` after the command name.
fn stat_fields(pid: u32) -> Option<Vec<u64>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    // Field 3 (state) is a letter; keep positions by mapping it to 0.
    Some(
        rest.split_ascii_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect(),
    )
}

/// utime and stime of `pid` in clock ticks (0 once it is gone).
fn user_system_ticks(pid: u32) -> (u64, u64) {
    // After the name: state(0) ppid(1) .. utime(11) stime(12) cutime(13) cstime(14).
    stat_fields(pid).map_or((0, 0), |f| {
        (*f.get(11).unwrap_or(&0), *f.get(12).unwrap_or(&0))
    })
}

/// CPU of the children this process has waited for (cutime + cstime), clock ticks.
pub(crate) fn waited_children_ticks() -> u64 {
    stat_fields(std::process::id()).map_or(0, |f| f.get(13).unwrap_or(&0) + f.get(14).unwrap_or(&0))
}

/// Direct children of `pid`.
pub(crate) fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| stat_fields(*p).and_then(|f| f.get(1).copied()) == Some(u64::from(pid)))
        .collect()
}

/// Busy and total jiffies of the whole machine, from the `cpu` line of `/proc/stat`.
pub(crate) fn machine_ticks() -> (u64, u64) {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return (0, 0);
    };
    let f: Vec<u64> = line
        .split_ascii_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let total: u64 = f.iter().take(8).sum();
    let idle = f.get(3).unwrap_or(&0) + f.get(4).unwrap_or(&0);
    (total - idle, total)
}

/// The last lines of a log file, for error messages.
fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// The two upstream deployments: nginx, one worker each, `return 200 "ok\n"`.
pub(crate) struct Upstreams {
    /// Stable (gets 95 %).
    pub(crate) stable: (Proc, u16),
    /// Canary (gets 5 %).
    pub(crate) canary: (Proc, u16),
}

impl Upstreams {
    /// Starts both in `dir`, after writing the response bodies they serve there.
    pub(crate) fn start(dir: &Path) -> Result<Upstreams> {
        write_bodies(dir)?;
        let start = |name: &str| -> Result<(Proc, u16)> {
            let port = free_port()?;
            let conf = dir.join(format!("upstream-{name}.conf"));
            fs::write(&conf, upstream_conf(dir, name, port))?;
            let mut p = Proc::spawn(
                &format!("nginx upstream {name}"),
                &mut nginx(dir, &conf),
                &dir.join(format!("upstream-{name}.log")),
                false,
            )?;
            p.wait_port(port)?;
            Ok((p, port))
        };
        Ok(Upstreams {
            stable: start("stable")?,
            canary: start("canary")?,
        })
    }

    /// Both upstream processes, for CPU accounting.
    pub(crate) fn procs(&self) -> [&Proc; 2] {
        [&self.stable.0, &self.canary.0]
    }
}

fn nginx(dir: &Path, conf: &Path) -> Command {
    let mut cmd = Command::new("/usr/sbin/nginx");
    cmd.arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(conf)
        .arg("-e")
        .arg(dir.join("nginx-startup.log"));
    cmd
}

/// Lines every nginx config here shares: foreground, files in the run directory.
fn nginx_common(dir: &Path, name: &str, workers: usize) -> String {
    let d = dir.display();
    format!(
        "worker_processes {workers};\n\
         worker_rlimit_nofile 65536;\n\
         daemon off;\n\
         pid {d}/{name}.pid;\n\
         error_log {d}/{name}-error.log warn;\n\
         events {{ worker_connections 16384; }}\n"
    )
}

fn http_common(dir: &Path, name: &str) -> String {
    let d = dir.display();
    format!(
        "  access_log off;\n\
         \x20 keepalive_requests 1000000;\n\
         \x20 keepalive_timeout 120s;\n\
         \x20 client_body_temp_path {d}/{name}-body;\n\
         \x20 proxy_temp_path {d}/{name}-proxy;\n"
    )
}

/// Writes the files behind [`BODIES`] into `dir` (exactly their size, `x` bytes).
fn write_bodies(dir: &Path) -> Result<()> {
    for (_, file, bytes) in BODIES {
        let path = dir.join(file);
        if fs::metadata(&path).is_ok_and(|m| m.len() == bytes) {
            continue;
        }
        let len = usize::try_from(bytes).context("body size")?;
        fs::write(&path, vec![b'x'; len]).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// An upstream: `ok\n` at `/`, the [`BODIES`] files (sendfile) at `/1m` and `/16m`, and
/// `POST /upload` answered `ok\n` only once the whole body has arrived; every response
/// names the upstream in [`UPSTREAM_HEADER`].
///
/// `return` alone answers in the rewrite phase, before the body is read, and a proxy then
/// gets its response while still sending: each proxy handles that differently (canarygate
/// stops relaying the rest, nginx and HAProxy relay it, cg-floor relays it), so the
/// upload shapes measured different work. The mirror module (`mirror_request_body on`)
/// reads the whole body in the precontent phase; the static handler (any file: the
/// 1 MiB body) then refuses the POST with 405, which `error_page 405 =200` turns into the `ok\n`.
fn upstream_conf(dir: &Path, name: &str, port: u16) -> String {
    let mut c = nginx_common(dir, &format!("upstream-{name}"), 1);
    let mut bodies = String::new();
    for (location, file, _) in BODIES {
        let _ = writeln!(
            bodies,
            "    location = {location} {{ alias {}; default_type application/octet-stream; sendfile on; add_header {UPSTREAM_HEADER} {name} always; }}",
            dir.join(file).display()
        );
    }
    let _ = write!(
        c,
        "http {{\n{}  server {{\n    listen 127.0.0.1:{port};\n    location / {{ add_header {UPSTREAM_HEADER} {name}; return 200 \"ok\\n\"; }}\n{bodies}    \
         location = /upload {{ client_max_body_size {MAX_BODY_MIB}m; client_body_buffer_size {MAX_BODY_MIB}m; \
         mirror /sink; mirror_request_body on; alias {}; error_page 405 =200 @uploaded; }}\n    \
         location @uploaded {{ add_header {UPSTREAM_HEADER} {name} always; return 200 \"ok\\n\"; }}\n    \
         location = /sink {{ internal; return 204; }}\n  }}\n}}\n",
        http_common(dir, &format!("upstream-{name}")),
        dir.join(BODIES[0].1).display()
    );
    c
}

/// The one certificate (ECDSA P-256, made at run time) every proxy of a TLS comparison
/// serves, in the forms they read.
pub(crate) struct TlsFiles {
    /// Certificate, PEM.
    pub(crate) cert: PathBuf,
    /// Its private key, PEM (PKCS#8).
    pub(crate) key: PathBuf,
    /// Certificate then key in one file: HAProxy's `crt`.
    pub(crate) combined: PathBuf,
}

/// nginx as the proxy: upstream weights 95/5, `keepalive pool` idle upstream connections
/// per worker, HTTP/1.1 upstream, one `reuseport` listener per worker (as canarygate
/// has), workers pinned in order. With `tls`: TLS 1.2 and 1.3 (1.22 leaves 1.3 off
/// unless asked), session tickets and a shared session cache. Bodies up to
/// [`MAX_BODY_MIB`] MiB pass. Responses are buffered (`proxy_buffering on`, nginx's
/// default and how it is deployed). Request bodies are read whole, in memory, before
/// they go upstream (`proxy_request_buffering on`, the default, with a 17 MiB
/// `client_body_buffer_size` so no upload of the shapes spills to a temp file), as
/// nginx does by default.
pub(crate) fn nginx_proxy(
    dir: &Path,
    workers: usize,
    up: &Upstreams,
    pool: usize,
    tls: Option<&TlsFiles>,
) -> Result<(Proc, u16)> {
    let port = free_port()?;
    let name = if tls.is_some() {
        format!("nginx-tls-w{workers}")
    } else {
        format!("nginx-w{workers}")
    };
    let listen = match tls {
        None => format!("listen 127.0.0.1:{port} reuseport;"),
        Some(t) => format!(
            "listen 127.0.0.1:{port} ssl reuseport;\n    ssl_certificate {};\n    ssl_certificate_key {};\n    \
             ssl_protocols TLSv1.2 TLSv1.3;\n    ssl_session_tickets on;\n    ssl_session_cache shared:tls:10m;\n    ssl_session_timeout 1h;",
            t.cert.display(),
            t.key.display()
        ),
    };
    let mut c = nginx_common(dir, &name, workers);
    let _ = write!(
        c,
        "worker_cpu_affinity auto;\n\
         http {{\n{}  upstream backend {{\n    server 127.0.0.1:{} weight=95;\n    server 127.0.0.1:{} weight=5;\n    keepalive {pool};\n    keepalive_requests 1000000;\n  }}\n\
         \x20 server {{\n    {listen}\n    client_max_body_size {MAX_BODY_MIB}m;\n    location / {{\n      proxy_pass http://backend;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      \
         client_body_buffer_size 17m;\n      proxy_request_buffering on;\n      proxy_buffering on;\n    }}\n  }}\n}}\n",
        http_common(dir, &name),
        up.stable.1,
        up.canary.1
    );
    let conf = dir.join(format!("{name}.conf"));
    fs::write(&conf, c)?;
    let mut p = Proc::spawn(
        &name,
        &mut nginx(dir, &conf),
        &dir.join(format!("{name}.log")),
        false,
    )?;
    p.wait_port(port)?;
    Ok((p, port))
}

/// HAProxy's global `maxconn` for the comparisons (the scale test asks for more).
pub(crate) const HAPROXY_MAXCONN: usize = 8192;

/// HAProxy as the proxy: weights 95/5, `http-reuse always`, `nbthread` threads pinned
/// in order, global `maxconn` as given ([`HAPROXY_MAXCONN`] but for the scale test).
/// With `tls`: `bind ... ssl crt`, its defaults otherwise (TLS 1.2 and 1.3, session
/// tickets and cache on).
pub(crate) fn haproxy(
    dir: &Path,
    workers: usize,
    up: &Upstreams,
    tls: Option<&TlsFiles>,
    maxconn: usize,
) -> Result<(Proc, u16)> {
    let port = free_port()?;
    let (name, ssl) = match tls {
        None => (format!("haproxy-w{workers}"), String::new()),
        Some(t) => (
            format!("haproxy-tls-w{workers}"),
            format!(" ssl crt {}", t.combined.display()),
        ),
    };
    let cpu_map = if workers == 1 {
        "cpu-map 1/1 0".to_owned()
    } else {
        format!("cpu-map auto:1/1-{workers} 0-{}", workers - 1)
    };
    let conf = format!(
        "global\n  nbthread {workers}\n  {cpu_map}\n  maxconn {maxconn}\n\
         defaults\n  mode http\n  timeout connect 3s\n  timeout client 60s\n  timeout server 30s\n  timeout http-keep-alive 60s\n\
         frontend fe\n  bind 127.0.0.1:{port}{ssl}\n  default_backend be\n\
         backend be\n  balance roundrobin\n  http-reuse always\n  server stable 127.0.0.1:{} weight 95\n  server canary 127.0.0.1:{} weight 5\n",
        up.stable.1, up.canary.1
    );
    let path = dir.join(format!("{name}.cfg"));
    fs::write(&path, conf)?;
    let mut cmd = Command::new("/usr/sbin/haproxy");
    cmd.arg("-db").arg("-f").arg(&path);
    let mut p = Proc::spawn(&name, &mut cmd, &dir.join(format!("{name}.log")), false)?;
    p.wait_port(port)?;
    Ok((p, port))
}

/// canarygate in front of the upstreams at 5 % canary, with the variant header; `wrap`
/// goes before the binary (`prlimit ...`, `valgrind ...`), `extra` after its flags.
pub(crate) fn canarygate(
    dir: &Path,
    bin: &Path,
    workers: usize,
    up: &Upstreams,
    wrap: &[String],
    extra: &[&str],
    ready_timeout: Duration,
) -> Result<(Proc, u16)> {
    // Its log file is named after it; the harness may run it with and without eBPF.
    let accounting_off = extra
        .windows(2)
        .any(|a| a == ["--kernel-accounting", "off"]);
    let label = if accounting_off {
        "canarygate-nokernel"
    } else {
        "canarygate"
    };
    let tls = if extra.contains(&"--tls-cert") {
        "-tls"
    } else {
        ""
    };
    let name = format!("{label}{tls}-w{workers}");
    let mut cmd = match wrap.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.args(["run", "--listen", "127.0.0.1:0"])
        .arg("--stable")
        .arg(format!("127.0.0.1:{}", up.stable.1))
        .arg("--canary")
        .arg(format!("127.0.0.1:{}", up.canary.1))
        .args(["--canary-percent", "5", "--workers", &workers.to_string()])
        .args(["--variant-header", VARIANT_HEADER])
        .args(extra);
    let mut p = Proc::spawn(&name, &mut cmd, &dir.join(format!("{name}.log")), true)?;
    let port = p.ready_line(ready_timeout)?;
    p.wait_port(port)?;
    Ok((p, port))
}

/// cg-floor (benches/): bytes relayed between each client connection and one
/// connection of its own to the stable upstream, nothing parsed; the floor a proxy's
/// CPU is held to. Same ready line as canarygate.
pub(crate) fn floor(dir: &Path, bin: &Path, workers: usize, up: &Upstreams) -> Result<(Proc, u16)> {
    let name = format!("floor-w{workers}");
    let mut cmd = Command::new(bin);
    cmd.arg("--upstream")
        .arg(format!("127.0.0.1:{}", up.stable.1))
        .args(["--listen", "127.0.0.1:0", "--workers", &workers.to_string()]);
    let mut p = Proc::spawn(&name, &mut cmd, &dir.join(format!("{name}.log")), true)?;
    let port = p.ready_line(START_TIMEOUT)?;
    p.wait_port(port)?;
    Ok((p, port))
}
