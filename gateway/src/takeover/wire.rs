//! What goes over the admin socket during a binary upgrade: the inventory of listening
//! sockets (text, one line per descriptor, in the order the descriptors travel), the
//! descriptors themselves as `SCM_RIGHTS` ancillary data, and the pure decisions the new
//! process makes from the inventory (which passed socket serves which of its stages and
//! workers). Parsing and planning are pure functions, tested without sockets.
//!
//! The reply to `takeover` is
//! ```text
//! takeover 3
//! listener 0 0 127.0.0.1:8080
//! listener 0 1 127.0.0.1:8080
//! metrics 127.0.0.1:9090
//!
//! ```
//! (`listener STAGE WORKER ADDR`), sent in chunks of at most [`FDS_PER_MESSAGE`]
//! descriptors, each chunk's lines carrying that chunk's descriptors.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

/// Descriptors per `sendmsg` (the kernel's `SCM_MAX_FD` is 253).
pub(crate) const FDS_PER_MESSAGE: usize = 200;
/// Longest inventory accepted (bytes), checked before it grows further.
const MAX_INVENTORY: usize = 1 << 20;

/// What a passed descriptor is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// Stage `stage`'s listener of worker `worker` (one `SO_REUSEPORT` socket each).
    Listener { stage: usize, worker: usize },
    /// The Prometheus endpoint's listener.
    Metrics,
}

/// One passed listening socket, as the inventory describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Passed {
    pub(crate) role: Role,
    pub(crate) addr: SocketAddr,
}

impl Passed {
    fn line(&self) -> String {
        match self.role {
            Role::Listener { stage, worker } => {
                format!("listener {stage} {worker} {}\n", self.addr)
            }
            Role::Metrics => format!("metrics {}\n", self.addr),
        }
    }
}

/// Parses the inventory (without its blank last line).
pub(crate) fn parse(text: &str) -> Result<Vec<Passed>, String> {
    let mut lines = text.lines();
    let count: usize = lines
        .next()
        .and_then(|l| l.strip_prefix("takeover "))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| format!("unexpected reply: {:?}", text.lines().next().unwrap_or("")))?;
    let mut out = Vec::with_capacity(count.min(4096));
    for line in lines.filter(|l| !l.is_empty()) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let bad = || format!("unexpected inventory line {line:?}");
        let addr = |w: &str| w.parse::<SocketAddr>().map_err(|_| bad());
        let passed = match words.as_slice() {
            ["listener", stage, worker, a] => Passed {
                role: Role::Listener {
                    stage: stage.parse().map_err(|_| bad())?,
                    worker: worker.parse().map_err(|_| bad())?,
                },
                addr: addr(a)?,
            },
            ["metrics", a] => Passed {
                role: Role::Metrics,
                addr: addr(a)?,
            },
            _ => return Err(bad()),
        };
        out.push(passed);
    }
    if out.len() != count {
        return Err(format!(
            "the inventory announces {count} sockets and lists {}",
            out.len()
        ));
    }
    Ok(out)
}

/// For each stage of the new configuration (its listen addresses, in order), the old
/// stage whose sockets it takes over, or `None` to bind fresh. An old stage matches when
/// its address is the same, or, for a new stage on port 0, when it is at the same
/// position on the same IP (`--listen 127.0.0.1:0` twice means "the same listener").
/// A fresh bind on a port the old gateway holds on another IP is a conflict: both would
/// take that port's connections.
pub(crate) fn plan(old: &[SocketAddr], new: &[SocketAddr]) -> Result<Vec<Option<usize>>, String> {
    let mut used = vec![false; old.len()];
    let mut out = Vec::with_capacity(new.len());
    for (i, want) in new.iter().enumerate() {
        let exact = old.iter().position(|a| a == want);
        let by_position = (want.port() == 0)
            .then(|| old.get(i).filter(|a| a.ip() == want.ip()).map(|_| i))
            .flatten();
        let found = exact.or(by_position).filter(|&o| !used[o]);
        if let Some(o) = found {
            used[o] = true;
        } else if let Some(o) = old
            .iter()
            .find(|a| want.port() != 0 && a.port() == want.port())
        {
            return Err(format!(
                "stage {i} listens on {want}, and the running gateway listens on {o}: \
                 the same port on another address (listen on {o}, or another port)"
            ));
        }
        out.push(found);
    }
    Ok(out)
}

/// Which of a stage's `passed` sockets (in the old workers' order) each of `workers`
/// new workers accepts on: socket `j` goes to worker `j % workers`. A worker with none
/// binds a socket of its own; a worker may get several, so that no passed socket, and
/// no connection queued on it, is closed.
pub(crate) fn spread(passed: usize, workers: usize) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = (0..workers).map(|_| Vec::new()).collect();
    if workers > 0 {
        for j in 0..passed {
            out[j % workers].push(j);
        }
    }
    out
}

/// Splits the inventory of `sockets` into messages of at most [`FDS_PER_MESSAGE`]
/// descriptors: each message's text and the range of `sockets` whose descriptors go
/// with it. The first starts with the count, the last ends with the blank line.
pub(crate) fn chunks(sockets: &[Passed]) -> Vec<(String, std::ops::Range<usize>)> {
    let mut out = Vec::new();
    let mut start = 0;
    loop {
        let end = (start + FDS_PER_MESSAGE).min(sockets.len());
        let mut text = String::new();
        if start == 0 {
            text = format!("takeover {}\n", sockets.len());
        }
        for s in &sockets[start..end] {
            text.push_str(&s.line());
        }
        if end == sockets.len() {
            text.push('\n');
        }
        out.push((text, start..end));
        if end == sockets.len() {
            return out;
        }
        start = end;
    }
}

/// One `sendmsg` of `text` with `fds` attached; returns the bytes sent (the descriptors
/// travel with the first of them, so the caller writes any rest without them).
pub(crate) fn send_chunk(conn: BorrowedFd<'_>, text: &[u8], fds: &[RawFd]) -> io::Result<usize> {
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &cmsg };
    sendmsg::<()>(
        conn.as_raw_fd(),
        &[IoSlice::new(text)],
        cmsgs,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(io::Error::from)
}

/// Reads the reply to `takeover` from the blocking Unix stream `conn`: text up to the
/// blank line, and every descriptor that came with it, in order.
pub(crate) fn receive(conn: BorrowedFd<'_>) -> io::Result<(String, Vec<OwnedFd>)> {
    let mut text = Vec::new();
    let mut fds = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut space = nix::cmsg_space!([RawFd; 253]);
    while !(text.ends_with(b"\n\n") || text == b"\n") {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        for c in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmRights(raw) = c {
                for fd in raw {
                    // SAFETY: the kernel has just installed `fd` in this process's table
                    // for this message; nothing else refers to it, so we own it.
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
            return Err(io::Error::other("descriptors were truncated in transit"));
        }
        let n = msg.bytes;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the running gateway closed the connection before the end of its reply",
            ));
        }
        text.extend_from_slice(&buf[..n]);
        if text.len() > MAX_INVENTORY {
            return Err(io::Error::other("the reply is too long"));
        }
    }
    let text = String::from_utf8(text).map_err(|_| io::Error::other("the reply is not UTF-8"))?;
    Ok((text.trim_end().to_owned(), fds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn inventory_round_trips_across_chunks() {
        let mut sockets: Vec<Passed> = (0..450)
            .map(|w| Passed {
                role: Role::Listener {
                    stage: w % 2,
                    worker: w / 2,
                },
                addr: a("127.0.0.1:8080"),
            })
            .collect();
        sockets.push(Passed {
            role: Role::Metrics,
            addr: a("[::1]:9090"),
        });
        let parts = chunks(&sockets);
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|(_, r)| r.len() <= FDS_PER_MESSAGE));
        let text: String = parts.iter().map(|(t, _)| t.as_str()).collect();
        assert!(text.ends_with("\n\n"));
        assert_eq!(parse(text.trim_end()).unwrap(), sockets);
    }

    #[test]
    fn bad_inventories_are_refused() {
        assert!(parse("error: no").is_err());
        assert!(parse("takeover 2\nlistener 0 0 127.0.0.1:1").is_err());
        assert!(parse("takeover 1\nlistener x 0 127.0.0.1:1").is_err());
        assert!(parse("takeover 1\nsocket 127.0.0.1:1").is_err());
    }

    #[test]
    fn stages_match_by_address_or_by_position_on_port_zero() {
        let old = [a("127.0.0.1:8080"), a("127.0.0.1:8443")];
        assert_eq!(
            plan(&old, &[a("127.0.0.1:8443"), a("127.0.0.1:8080")]).unwrap(),
            [Some(1), Some(0)]
        );
        assert_eq!(
            plan(
                &old,
                &[a("127.0.0.1:0"), a("127.0.0.1:0"), a("127.0.0.1:0")]
            )
            .unwrap(),
            [Some(0), Some(1), None]
        );
        assert_eq!(
            plan(&old, &[a("127.0.0.1:9000")]).unwrap(),
            [None],
            "a new address is bound fresh"
        );
        let err = plan(&old, &[a("0.0.0.0:8080")]).unwrap_err();
        assert!(err.contains("127.0.0.1:8080"), "{err}");
    }

    #[test]
    fn every_passed_socket_goes_to_some_worker() {
        assert_eq!(spread(2, 2), [vec![0], vec![1]]);
        assert_eq!(spread(1, 3), [vec![0], vec![], vec![]]);
        assert_eq!(spread(3, 2), [vec![0, 2], vec![1]]);
    }
}
