//! Telling the service manager how the gateway is doing: systemd's `sd_notify` protocol
//! (`Type=notify` in `deploy/debian/canarygate.service`).
//!
//! Where it sits: beside [`runtime`](crate::runtime), at the binary's edge. `canarygate
//! run` sends `READY=1` once [`runtime::start`](crate::runtime::start) has returned,
//! that is once every worker accepts connections, and `STOPPING=1` when SIGTERM or
//! SIGINT starts the drain. Nothing on the data path calls it.
//!
//! The protocol is one datagram of `KEY=VALUE` lines sent to the Unix socket named by
//! `$NOTIFY_SOCKET`: a path, or an abstract-namespace name written with a leading `@`.
//! Without the variable (not started by systemd) every call does nothing. Written here
//! rather than taken from the `sd-notify` crate: it is one `sendto` on a socket the
//! standard library already has, including abstract addresses, and this way the message
//! format and the address rules are unit-tested beside the code.

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The environment variable systemd sets for `Type=notify` services.
const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Where notifications go: the service manager's socket, when there is one.
#[derive(Debug)]
pub(crate) struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// The notifier `$NOTIFY_SOCKET` names; `None` when it is unset or empty (no service
    /// manager listens). An address that cannot be used is logged once and also `None`:
    /// a gateway must not refuse to serve because its supervisor's socket is odd.
    pub(crate) fn from_env() -> Option<Notifier> {
        let name = std::env::var_os(NOTIFY_SOCKET)?;
        if name.is_empty() {
            return None;
        }
        match address(&name).and_then(|addr| Ok((UnixDatagram::unbound()?, addr))) {
            Ok((socket, addr)) => Some(Notifier { socket, addr }),
            Err(e) => {
                log::warn!(
                    "${NOTIFY_SOCKET}={}: {e}; the service manager will not hear from the gateway",
                    name.to_string_lossy()
                );
                None
            }
        }
    }

    /// Sends one notification made of `fields` (see [`message`]). A failed send is
    /// logged, never fatal.
    pub(crate) fn send(&self, fields: &[(&str, &str)]) {
        let text = message(fields);
        if let Err(e) = self.socket.send_to_addr(text.as_bytes(), &self.addr) {
            log::warn!(
                "cannot notify the service manager ({}): {e}",
                text.trim_end()
            );
        }
    }
}

/// Sends `fields` to the service manager when there is one (`$NOTIFY_SOCKET`).
pub(crate) fn notify(fields: &[(&str, &str)]) {
    if let Some(n) = Notifier::from_env() {
        n.send(fields);
    }
}

/// The socket address `$NOTIFY_SOCKET` names: `@name` is `name` in the abstract
/// namespace, `/path` a socket file. Anything else (a relative path, `vsock:`) is refused,
/// as systemd's own `sd_notify` does for relative paths.
fn address(name: &OsStr) -> io::Result<SocketAddr> {
    let bytes = name.as_bytes();
    match bytes.first() {
        Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..]),
        Some(b'/') => SocketAddr::from_pathname(name),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "neither an absolute path nor an @abstract name",
        )),
    }
}

/// The datagram for `fields`: one `KEY=VALUE` line each. A newline inside a value would
/// start a bogus field, so it becomes a space.
fn message(fields: &[(&str, &str)]) -> String {
    let mut text = String::new();
    for (key, value) in fields {
        text.push_str(key);
        text.push('=');
        text.extend(value.chars().map(|c| if c == '\n' { ' ' } else { c }));
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn one_line_per_field_and_no_newline_inside_a_value() {
        assert_eq!(message(&[("READY", "1")]), "READY=1\n");
        assert_eq!(
            message(&[("STOPPING", "1"), ("STATUS", "draining\n2 in flight")]),
            "STOPPING=1\nSTATUS=draining 2 in flight\n"
        );
    }

    #[test]
    fn at_means_abstract_and_only_absolute_paths_are_files() {
        let abs = address(OsStr::new("@canarygate/notify")).unwrap();
        assert_eq!(abs.as_abstract_name(), Some(&b"canarygate/notify"[..]));
        assert!(abs.as_pathname().is_none());
        let file = address(OsStr::new("/run/systemd/notify")).unwrap();
        assert_eq!(
            file.as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
        for bad in ["relative/notify", "vsock:2:1234", ""] {
            assert!(address(OsStr::new(bad)).is_err(), "{bad}");
        }
        // Longer than sun_path.
        assert!(address(OsStr::new(&format!("/{}", "x".repeat(200)))).is_err());
    }

    #[test]
    fn a_datagram_reaches_an_abstract_socket() {
        let name = format!("canarygate-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        listener
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let notifier = Notifier {
            socket: UnixDatagram::unbound().unwrap(),
            addr: address(OsStr::new(&format!("@{name}"))).unwrap(),
        };
        notifier.send(&[("READY", "1"), ("STATUS", "serving")]);
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=serving\n");
    }
}
