//! Binary upgrade without a refused connection: a new process takes the listening
//! sockets of the running one over its admin socket (`SCM_RIGHTS`, as HAProxy's `-x` and
//! Envoy's hot restart do), starts its workers on them, and then tells the old process to
//! stop accepting and drain.
//!
//! Both sides meet here, below the runtime and the control plane that use them:
//! - the old process's [`Handover`] keeps a duplicate of every listening socket, hands
//!   duplicates out on `takeover` (the admin server writes them, [`wire`]), and on
//!   `takeover done` forgets them and wakes whoever waits for the end ([`Handover::wait`]);
//! - the new process's [`Taken`] connects, receives the sockets, gives each stage and the
//!   metrics endpoint theirs ([`Taken::stage`], [`Taken::metrics`]) and confirms with
//!   [`Taken::finish`] once its workers accept.
//!
//! A passed socket is the same kernel socket in both processes: it is never shut down
//! (that would end it for the new process too) and never closed while it may hold queued
//! connections the new process has not been given.

pub(crate) mod wire;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

use wire::{Passed, Role};

/// How long the new process waits for each answer of the old one.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// The old process's side: what it can hand over, and whether it did.
#[derive(Debug)]
pub(crate) struct Handover {
    state: Mutex<State>,
    ended: Condvar,
    done: tokio::sync::watch::Sender<bool>,
}

#[derive(Debug, Default)]
struct State {
    /// Duplicates of every listening socket, in the order the inventory lists them.
    sockets: Vec<(Passed, OwnedFd)>,
    /// An inventory went out: the sockets may be shared with another process now.
    shared: bool,
    /// `takeover done` arrived.
    done: bool,
}

impl Default for Handover {
    fn default() -> Self {
        Handover {
            state: Mutex::default(),
            ended: Condvar::new(),
            done: tokio::sync::watch::Sender::new(false),
        }
    }
}

impl Handover {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a listening socket (a duplicate the handover owns) to what it hands over.
    pub(crate) fn offer(&self, role: Role, listener: &TcpListener) -> std::io::Result<()> {
        let addr = listener.local_addr()?;
        let fd = listener.as_fd().try_clone_to_owned()?;
        self.state().sockets.push((Passed { role, addr }, fd));
        Ok(())
    }

    /// The inventory and a duplicate of each socket, for one `takeover` reply. From now
    /// on the sockets count as shared (a graceful stop no longer shuts them).
    pub(crate) fn inventory(&self) -> Result<(Vec<Passed>, Vec<OwnedFd>), String> {
        let mut state = self.state();
        if state.done {
            return Err("this gateway has already handed its sockets over".into());
        }
        let mut passed = Vec::with_capacity(state.sockets.len());
        let mut fds = Vec::with_capacity(state.sockets.len());
        for (p, fd) in &state.sockets {
            passed.push(*p);
            fds.push(
                fd.try_clone()
                    .map_err(|e| format!("cannot duplicate a socket: {e}"))?,
            );
        }
        state.shared = true;
        Ok((passed, fds))
    }

    /// Shuts every data listener for a graceful stop (each worker's pending accept
    /// wakes), unless they may be another process's too; returns whether it did.
    pub(crate) fn shut_listeners(&self) -> bool {
        let state = self.state();
        if state.shared {
            return false;
        }
        for (p, fd) in &state.sockets {
            if matches!(p.role, Role::Listener { .. }) {
                let _ = socket2::SockRef::from(fd).shutdown(std::net::Shutdown::Read);
            }
        }
        true
    }

    /// `takeover done`: the new process accepts on every socket. Forgets the duplicates
    /// and wakes [`Handover::wait`] and [`Handover::subscribe`]rs.
    pub(crate) fn complete(&self) {
        let mut state = self.state();
        state.sockets.clear();
        state.done = true;
        drop(state);
        self.ended.notify_all();
        self.done.send_replace(true);
    }

    /// Blocks until [`Handover::complete`].
    pub(crate) fn wait(&self) {
        let mut state = self.state();
        while !state.done {
            state = self
                .ended
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Whether the sockets were handed over.
    pub(crate) fn is_done(&self) -> bool {
        self.state().done
    }

    /// Sees `true` once the sockets were handed over (for the control plane's loops).
    pub(crate) fn subscribe(&self) -> tokio::sync::watch::Receiver<bool> {
        self.done.subscribe()
    }
}

/// The new process's side: the connection to the old process and the sockets it passed,
/// each until a stage or the metrics endpoint takes it.
#[derive(Debug)]
pub(crate) struct Taken {
    conn: UnixStream,
    path: PathBuf,
    sockets: Vec<(Passed, Option<TcpListener>)>,
}

impl Taken {
    /// Connects to the running gateway's admin socket at `path` and receives its
    /// listening sockets. Nothing changes for the old process yet.
    pub(crate) fn connect(path: &Path) -> Result<Taken, String> {
        let mut conn = UnixStream::connect(path)
            .map_err(|e| format!("cannot connect to the running gateway's admin socket: {e}"))?;
        conn.set_read_timeout(Some(ANSWER_TIMEOUT))
            .and_then(|()| conn.set_write_timeout(Some(ANSWER_TIMEOUT)))
            .and_then(|()| conn.write_all(b"takeover\n"))
            .map_err(|e| format!("cannot ask for the sockets: {e}"))?;
        let (text, fds) =
            wire::receive(conn.as_fd()).map_err(|e| format!("receiving the sockets: {e}"))?;
        if let Some(e) = text.strip_prefix("error: ") {
            return Err(format!("the running gateway refused: {e}"));
        }
        let inventory = wire::parse(&text)?;
        if inventory.len() != fds.len() {
            return Err(format!(
                "{} sockets announced, {} received",
                inventory.len(),
                fds.len()
            ));
        }
        let mut sockets = Vec::with_capacity(fds.len());
        for (passed, fd) in inventory.into_iter().zip(fds) {
            let listener = TcpListener::from(fd);
            let actual = listener
                .local_addr()
                .map_err(|e| format!("a passed socket is not a TCP listener: {e}"))?;
            if actual != passed.addr {
                return Err(format!(
                    "a socket announced as {} listens on {actual}",
                    passed.addr
                ));
            }
            sockets.push((passed, Some(listener)));
        }
        log::info!(
            "took {} listening socket(s) over from {}",
            sockets.len(),
            path.display()
        );
        Ok(Taken {
            conn,
            path: path.to_path_buf(),
            sockets,
        })
    }

    /// The admin socket it came from.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The old process's stage addresses, in its stage order.
    pub(crate) fn stage_addrs(&self) -> Vec<SocketAddr> {
        let mut out: Vec<(usize, SocketAddr)> = Vec::new();
        for (p, _) in &self.sockets {
            if let Role::Listener { stage, .. } = p.role
                && !out.iter().any(|(s, _)| *s == stage)
            {
                out.push((stage, p.addr));
            }
        }
        out.sort_unstable();
        out.into_iter().map(|(_, a)| a).collect()
    }

    /// Takes the listeners of the old process's stage at position `index` of
    /// [`Taken::stage_addrs`], in its workers' order.
    pub(crate) fn stage(&mut self, index: usize) -> Vec<TcpListener> {
        let Some(&addr) = self.stage_addrs().get(index) else {
            return Vec::new();
        };
        let mut found: Vec<(usize, TcpListener)> = Vec::new();
        for (p, l) in &mut self.sockets {
            if let Role::Listener { worker, .. } = p.role
                && p.addr == addr
                && let Some(l) = l.take()
            {
                found.push((worker, l));
            }
        }
        found.sort_by_key(|(w, _)| *w);
        found.into_iter().map(|(_, l)| l).collect()
    }

    /// The metrics listener, when the old one listens where `want` asks (port 0: any
    /// port on that IP).
    pub(crate) fn metrics(&mut self, want: Option<SocketAddr>) -> Option<TcpListener> {
        let want = want?;
        self.sockets.iter_mut().find_map(|(p, l)| {
            let fits = p.addr == want || (want.port() == 0 && p.addr.ip() == want.ip());
            if p.role == Role::Metrics && fits {
                l.take()
            } else {
                None
            }
        })
    }

    /// Closes the passed sockets nothing took (the new configuration has no stage or
    /// metrics endpoint there) and returns their addresses, for the log.
    pub(crate) fn close_unused(&mut self) -> Vec<SocketAddr> {
        let mut out = Vec::new();
        for (p, l) in &mut self.sockets {
            if l.take().is_some() && !out.contains(&p.addr) {
                out.push(p.addr);
            }
        }
        out
    }

    /// Tells the old process that every worker accepts, so it stops accepting and
    /// drains; returns once it confirmed.
    pub(crate) fn finish(mut self) -> Result<(), String> {
        self.conn
            .write_all(b"takeover done\n")
            .map_err(|e| format!("cannot confirm the takeover: {e}"))?;
        let mut reader = BufReader::new(&self.conn);
        let mut reply = String::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) => break,
                Ok(_) if line == "\n" => break,
                Ok(_) => reply.push_str(&line),
                Err(e) => return Err(format!("waiting for the confirmation: {e}")),
            }
        }
        if reply.is_empty() || reply.starts_with("error:") {
            return Err(format!(
                "the running gateway at {} did not confirm: {}",
                self.path.display(),
                reply.trim()
            ));
        }
        Ok(())
    }
}
