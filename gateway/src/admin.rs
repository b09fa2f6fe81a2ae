//! The control-plane thread: the admin socket (a Unix socket, mode 0600, owner only), the
//! Prometheus `/metrics` endpoint and SIGHUP reloads, all on one tokio runtime that never
//! touches the data path. `canarygate ctl` ([`ctl`]) is the client for the socket;
//! [`upgrade`] serves a successor's `takeover` on it.

pub(crate) mod ctl;
pub(crate) mod dashboard;
pub(crate) mod exec;
pub(crate) mod protocol;
pub(crate) mod show;
pub(crate) mod upgrade;

use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::config::ServerConfig;
use crate::rollout::controller::Rollouts;
use crate::takeover::Handover;
use crate::takeover::wire::Role;
use protocol::MAX_LINE;

/// The running control plane: where it listens. Dropping it removes the socket file,
/// unless a successor's socket has replaced it there.
#[derive(Debug)]
pub struct ControlPlane {
    admin_socket: Option<PathBuf>,
    /// Where the admin socket was bound until [`ControlPlane::publish_admin`] moves it
    /// to `admin_socket` (a successor binds beside the old process's socket).
    bound_at: std::sync::Mutex<Option<PathBuf>>,
    /// Device and inode of our socket file: whose file a path holds.
    identity: Option<(u64, u64)>,
    metrics_addr: Option<SocketAddr>,
}

/// What the runtime hands the control plane besides the settings.
#[derive(Debug)]
pub(crate) struct Plane {
    /// Sockets a successor may take over; the metrics listener joins them.
    pub(crate) handover: std::sync::Arc<Handover>,
    /// The metrics listener taken over from a predecessor, if any.
    pub(crate) metrics: Option<std::net::TcpListener>,
    /// Taking over: bind the admin socket beside the predecessor's and move it into its
    /// place once the predecessor agreed ([`ControlPlane::publish_admin`]).
    pub(crate) replace_admin: bool,
}

impl ControlPlane {
    /// Binds the admin socket and metrics listener (so errors surface at startup), then
    /// serves them on a dedicated thread.
    /// The rollout controller is its way to the routing state too.
    pub(crate) fn start(
        config: &ServerConfig,
        rollouts: Arc<Rollouts>,
        plane: Plane,
    ) -> Result<ControlPlane, String> {
        let mut bound_at = None;
        let admin = match &config.admin_socket {
            Some(path) if plane.replace_admin => {
                let beside = beside(path);
                let l = bind_admin(&beside)?;
                bound_at = Some(beside);
                Some((l, path.clone()))
            }
            Some(path) => Some((bind_admin(path)?, path.clone())),
            None => None,
        };
        let metrics = match (plane.metrics, config.metrics_listen) {
            (Some(l), _) => Some(l),
            (None, Some(addr)) => {
                let l = std::net::TcpListener::bind(addr)
                    .map_err(|e| format!("--metrics-listen {addr}: {e}"))?;
                l.set_nonblocking(true)
                    .map_err(|e| format!("--metrics-listen: {e}"))?;
                Some(l)
            }
            (None, None) => None,
        };
        if let Some(l) = &metrics {
            plane
                .handover
                .offer(Role::Metrics, l)
                .map_err(|e| format!("--metrics-listen: {e}"))?;
        }
        let metrics_addr = metrics.as_ref().and_then(|l| l.local_addr().ok());
        let admin_socket = admin.as_ref().map(|(_, p)| p.clone());
        let reloadable = config.source.is_some();
        let dashboard = config
            .dashboard
            .then(|| Arc::new(dashboard::Dashboard::default()));
        let file = bound_at
            .as_deref()
            .or(admin_socket.as_deref())
            .and_then(|p| std::fs::metadata(p).ok());
        let owner = file.as_ref().map(MetadataExt::uid);
        let identity = file.as_ref().map(|m| (m.dev(), m.ino()));
        let handover = plane.handover;
        std::thread::Builder::new()
            .name("canarygate-control".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        log::error!("control plane cannot start: {e}");
                        return;
                    }
                };
                rt.block_on(serve(
                    rollouts,
                    handover,
                    admin.map(|(l, _)| l),
                    metrics,
                    dashboard,
                    reloadable,
                    owner,
                ));
            })
            .map_err(|e| format!("cannot start the control-plane thread: {e}"))?;
        if let Some(p) = &admin_socket {
            log::info!("admin socket at {}", p.display());
        }
        if let Some(a) = metrics_addr {
            log::info!("metrics at http://{a}/metrics");
            if config.dashboard {
                log::info!("dashboard at http://{a}/dashboard");
            }
        }
        Ok(ControlPlane {
            admin_socket,
            bound_at: std::sync::Mutex::new(bound_at),
            identity,
            metrics_addr,
        })
    }

    /// Moves an admin socket bound beside a predecessor's into its place (one `rename`,
    /// so the path always leads to a live gateway).
    pub(crate) fn publish_admin(&self) -> Result<(), String> {
        let mut bound_at = self
            .bound_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let (Some(from), Some(to)) = (bound_at.as_deref(), self.admin_socket.as_deref()) {
            std::fs::rename(from, to)
                .map_err(|e| format!("--admin-socket {}: {e}", to.display()))?;
            *bound_at = None;
        }
        Ok(())
    }

    /// Whether `path` holds our socket file (not a successor's).
    fn holds_ours(&self, path: &Path) -> bool {
        std::fs::symlink_metadata(path).is_ok_and(|m| Some((m.dev(), m.ino())) == self.identity)
    }

    /// Path of the admin socket.
    pub fn admin_socket(&self) -> Option<&Path> {
        self.admin_socket.as_deref()
    }

    /// Address of the metrics endpoint.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let beside = self
            .bound_at
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        for p in beside.iter().chain(&self.admin_socket) {
            if self.holds_ours(p) {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

/// Where a successor binds its admin socket until it replaces the one at `path`.
fn beside(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".takeover-{}", std::process::id()));
    path.with_file_name(name)
}

/// Binds the Unix socket and restricts it to its owner. A stale socket file (nobody
/// listening) is replaced; a live one is an error.
fn bind_admin(path: &Path) -> Result<std::os::unix::net::UnixListener, String> {
    let name = path.display();
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(format!(
                "--admin-socket {name}: another process is listening there"
            ));
        }
        std::fs::remove_file(path)
            .map_err(|e| format!("--admin-socket {name}: cannot remove the stale socket: {e}"))?;
    }
    let listener = std::os::unix::net::UnixListener::bind(path)
        .map_err(|e| format!("--admin-socket {name}: {e}"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("--admin-socket {name}: cannot set mode 0600: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("--admin-socket {name}: {e}"))?;
    Ok(listener)
}

async fn serve(
    rollouts: Arc<Rollouts>,
    handover: Arc<Handover>,
    admin: Option<std::os::unix::net::UnixListener>,
    metrics: Option<std::net::TcpListener>,
    dashboard: Option<Arc<dashboard::Dashboard>>,
    reloadable: bool,
    owner: Option<u32>,
) {
    if let Some(l) = admin {
        match tokio::net::UnixListener::from_std(l) {
            Ok(l) => {
                tokio::spawn(admin_loop(
                    Arc::clone(&rollouts),
                    Arc::clone(&handover),
                    l,
                    owner,
                ));
            }
            Err(e) => log::error!("admin socket: {e}"),
        }
    }
    tokio::spawn(crate::rollout::controller::run(Arc::clone(&rollouts)));
    tokio::spawn(crate::control::health::run(Arc::clone(
        rollouts.control().health(),
    )));
    if let Some(d) = &dashboard {
        tokio::spawn(dashboard::run(Arc::clone(&rollouts), Arc::clone(d)));
    }
    if let Some(l) = metrics {
        match tokio::net::TcpListener::from_std(l) {
            Ok(l) => {
                tokio::spawn(metrics_loop(
                    Arc::clone(&rollouts),
                    l,
                    handover.subscribe(),
                    dashboard,
                ));
            }
            Err(e) => log::error!("metrics endpoint: {e}"),
        }
    }
    // SIGHUP re-reads the configuration file, or without one the TLS files.
    {
        let command = if reloadable { "reload" } else { "reload tls" };
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(mut hup) => {
                while hup.recv().await.is_some() {
                    let reply = exec::execute(&rollouts, command, "SIGHUP");
                    if reply.ok {
                        log::info!("SIGHUP: {}", reply.text.replace('\n', "; "));
                    } else {
                        log::error!("SIGHUP: {}", reply.text);
                    }
                }
            }
            Err(e) => log::error!("cannot watch SIGHUP: {e}"),
        }
    }
    std::future::pending::<()>().await;
}

async fn admin_loop(
    rollouts: Arc<Rollouts>,
    handover: Arc<Handover>,
    listener: tokio::net::UnixListener,
    owner: Option<u32>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let uid = stream.peer_cred().map(|c| c.uid()).ok();
        // The socket is mode 0600; this also refuses anyone who got a descriptor anyway.
        if uid.is_none() || (uid != owner && uid != Some(0)) {
            log::warn!(target: "canarygate::audit", "refused admin connection from uid {uid:?}");
            continue;
        }
        let who = format!("uid {}", uid.unwrap_or_default());
        tokio::spawn(admin_conn(
            Arc::clone(&rollouts),
            Arc::clone(&handover),
            stream,
            who,
        ));
    }
}

/// Serves commands on one admin connection until it closes.
async fn admin_conn(
    rollouts: Arc<Rollouts>,
    handover: Arc<Handover>,
    stream: tokio::net::UnixStream,
    who: String,
) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        let n = match (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let too_long = n > MAX_LINE && !line.ends_with(b"\n");
        let reply = if too_long {
            exec::Reply {
                ok: false,
                text: format!("error: command longer than {MAX_LINE} bytes"),
            }
        } else {
            match std::str::from_utf8(&line) {
                Ok(text) if text.trim().is_empty() => continue,
                Ok(text) if upgrade::asked(text) == Some(upgrade::Asked::Sockets) => {
                    match upgrade::send_sockets(&handover, &mut write, &who).await {
                        Ok(()) => continue,
                        Err(e) => exec::Reply {
                            ok: false,
                            text: format!("error: takeover: {e}"),
                        },
                    }
                }
                Ok(text) if upgrade::asked(text) == Some(upgrade::Asked::Done) => {
                    upgrade::done(&rollouts, &handover, &who)
                }
                Ok(text) => {
                    let rollouts = Arc::clone(&rollouts);
                    let (text, who) = (text.to_owned(), who.clone());
                    // Reload reads a file; keep the runtime responsive.
                    match tokio::task::spawn_blocking(move || exec::execute(&rollouts, &text, &who))
                        .await
                    {
                        Ok(r) => r,
                        Err(_) => exec::Reply {
                            ok: false,
                            text: "error: internal error".into(),
                        },
                    }
                }
                Err(_) => exec::Reply {
                    ok: false,
                    text: "error: command is not UTF-8".into(),
                },
            }
        };
        let mut out = reply.text.into_bytes();
        out.extend_from_slice(b"\n\n");
        if write.write_all(&out).await.is_err() || too_long {
            return;
        }
    }
}

/// The metrics listener: `GET /metrics`, and the dashboard's page, assets and data when
/// it is on. One request per connection.
async fn metrics_loop(
    rollouts: Arc<Rollouts>,
    listener: tokio::net::TcpListener,
    mut handed_over: tokio::sync::watch::Receiver<bool>,
    dashboard: Option<Arc<dashboard::Dashboard>>,
) {
    loop {
        // Readiness-based (epoll): once a successor took the socket over, a scrape
        // still queued on it is the successor's.
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = handed_over.wait_for(|done| *done) => return,
        };
        let Ok((mut stream, _)) = accepted else {
            continue;
        };
        let rollouts = Arc::clone(&rollouts);
        let dashboard = dashboard.clone();
        tokio::spawn(async move {
            let mut head = Vec::with_capacity(1024);
            let mut buf = [0u8; 1024];
            let complete = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                true
            })
            .await
            .unwrap_or(false);
            if !complete {
                return;
            }
            let request = head;
            let (status, content_type, body) = respond(&rollouts, dashboard.as_deref(), &request);
            let head = format!(
                "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\ncache-control: no-store\r\nx-content-type-options: nosniff\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let mut out = head.into_bytes();
            if !request.starts_with(b"HEAD ") {
                out.extend_from_slice(&body);
            }
            let _ = stream.write_all(&out).await;
            let _ = stream.shutdown().await;
        });
    }
}

const TEXT: &str = "text/plain; charset=utf-8";

/// Status, content type and body for one request head of the metrics listener.
fn respond(
    rollouts: &Rollouts,
    dashboard: Option<&dashboard::Dashboard>,
    head: &[u8],
) -> (&'static str, &'static str, std::borrow::Cow<'static, [u8]>) {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut words = line.split(|&b| b == b' ');
    let (method, target) = (
        words.next().unwrap_or_default(),
        words.next().unwrap_or_default(),
    );
    let path = std::str::from_utf8(target)
        .unwrap_or_default()
        .split('?')
        .next()
        .unwrap_or_default();
    if method != b"GET" && method != b"HEAD" {
        return (
            "405 Method Not Allowed",
            TEXT,
            b"only GET is served here\n"[..].into(),
        );
    }
    if path == "/metrics" {
        // Kill-switch figures are the recorded trips; record the newest first.
        rollouts.record_kill_switch_trips();
        let control = rollouts.control();
        let mut text = crate::metrics::prometheus::render(&control.stats());
        crate::kernel::prometheus::render(&mut text, control.kernel_stats().as_ref());
        show::prometheus::render(&mut text, rollouts);
        show::endpoints::render(&mut text, control);
        show::tls::render(&mut text, control);
        show::fleet::render(&mut text, control);
        return (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            text.into_bytes().into(),
        );
    }
    if let Some(d) = dashboard {
        if path == "/dashboard/data" {
            return (
                "200 OK",
                "application/json",
                dashboard::data(rollouts, d).into_bytes().into(),
            );
        }
        if let Some((content_type, body)) = dashboard::asset(path) {
            return ("200 OK", content_type, body.into());
        }
    }
    let what = if dashboard.is_some() {
        "GET /metrics and /dashboard are served here\n"
    } else {
        "only GET /metrics is served here\n"
    };
    ("404 Not Found", TEXT, what.as_bytes().into())
}
