//! `canarygate ctl`: sends one admin command over the Unix socket and prints the answer.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Default admin socket path of `canarygate ctl`: where the packaged configuration puts
/// it (`RuntimeDirectory=canarygate` in the systemd unit makes `/run/canarygate`).
pub(crate) const DEFAULT_SOCKET: &str = "/run/canarygate/admin.sock";

/// Sends `command` to the gateway at `socket`; returns the reply text and whether it
/// succeeded (replies to failed commands start with `error:`).
pub(crate) fn send(socket: &Path, command: &str) -> Result<(bool, String), String> {
    let mut stream = UnixStream::connect(socket)
        .map_err(|e| format!("cannot connect to {}: {e}", socket.display()))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let mut line = command.replace('\n', " ");
    line.push('\n');
    stream
        .write_all(line.as_bytes())
        .map_err(|e| format!("cannot send: {e}"))?;
    let mut reader = BufReader::new(stream);
    let mut text = String::new();
    loop {
        let mut l = String::new();
        let n = reader
            .read_line(&mut l)
            .map_err(|e| format!("cannot read the reply: {e}"))?;
        if n == 0 || l == "\n" {
            break;
        }
        text.push_str(&l);
    }
    let text = text.trim_end().to_owned();
    if text.is_empty() {
        return Err("the gateway closed the connection without a reply".into());
    }
    Ok((!text.starts_with("error:"), text))
}
