//! The running gateway's half of a binary upgrade, on the admin socket: `takeover` sends
//! the inventory of listening sockets with the sockets themselves (`SCM_RIGHTS`,
//! [`crate::takeover::wire`]); `takeover done`, sent by the successor once all its
//! workers accept, makes this process stop accepting and drain (the waiting main thread
//! wakes through [`Handover::wait`]). Nothing changes here before `takeover done`: a
//! successor that fails to start leaves this gateway as it was.

use std::os::fd::{AsFd, AsRawFd, RawFd};

use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::unix::OwnedWriteHalf;

use super::exec::Reply;
use crate::rollout::controller::Rollouts;
use crate::takeover::{Handover, wire};

/// The two commands of a takeover.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Asked {
    /// `takeover`: send the sockets.
    Sockets,
    /// `takeover done`: the successor accepts; stop and drain.
    Done,
}

/// Which takeover command `line` is, if any.
pub(crate) fn asked(line: &str) -> Option<Asked> {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["takeover"] => Some(Asked::Sockets),
        ["takeover", "done"] => Some(Asked::Done),
        _ => None,
    }
}

/// Writes the inventory and every listening socket to the successor on `write`; the
/// reply ends with the blank line like any other.
pub(crate) async fn send_sockets(
    handover: &Handover,
    write: &mut OwnedWriteHalf,
    who: &str,
) -> Result<(), String> {
    let (passed, fds) = handover.inventory()?;
    for (text, range) in wire::chunks(&passed) {
        let raw: Vec<RawFd> = fds[range].iter().map(AsRawFd::as_raw_fd).collect();
        let bytes = text.as_bytes();
        let conn = write.as_ref();
        let sent = conn
            .async_io(Interest::WRITABLE, || {
                wire::send_chunk(conn.as_fd(), bytes, &raw)
            })
            .await
            .map_err(|e| format!("cannot send the sockets: {e}"))?;
        // The descriptors went with the first byte; the rest is plain text.
        write
            .write_all(&bytes[sent..])
            .await
            .map_err(|e| format!("cannot send the inventory: {e}"))?;
    }
    log::info!(target: "canarygate::audit", "{who}: 'takeover': sent {} listening socket(s)", passed.len());
    Ok(())
}

/// `takeover done`: stops every accept (the sockets stay open for the successor) and
/// wakes the main thread, which drains and exits.
pub(crate) fn done(rollouts: &Rollouts, handover: &Handover, who: &str) -> Reply {
    if handover.is_done() {
        return Reply {
            ok: false,
            text: "error: takeover: the sockets were handed over already".into(),
        };
    }
    rollouts.control().shared().stop_accepting();
    handover.complete();
    log::info!(target: "canarygate::audit", "{who}: 'takeover done': stopped accepting, draining");
    Reply {
        ok: true,
        text: "handed over: stopped accepting, draining".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_two_takeover_commands_are_recognised() {
        assert_eq!(asked("takeover\n"), Some(Asked::Sockets));
        assert_eq!(asked(" takeover  done \n"), Some(Asked::Done));
        assert_eq!(asked("takeover now"), None);
        assert_eq!(asked("show stats"), None);
    }
}
