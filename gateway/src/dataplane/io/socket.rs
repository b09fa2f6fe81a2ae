//! Socket options and liveness probes on the workers' monoio TCP streams, below both the
//! client side (the session) and the upstream side ([`crate::dataplane::upstream`]).
//! They are set on the TCP socket before any layer (TLS, HTTP/2) wraps it.
//!
//! Each helper is one non-blocking system call on the stream's descriptor; failing to
//! set an option only loses the protection it gives, never the connection.

use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

use monoio::net::TcpStream;

/// Runs `f` on a borrowed view of `stream`'s socket.
fn with_sock<R>(stream: &impl AsRawFd, f: impl FnOnce(socket2::SockRef<'_>) -> R) -> R {
    // SAFETY: the descriptor belongs to `stream` (a socket, or a TLS stream owning the
    // socket whose descriptor it reports), which outlives this borrow, and it is not
    // closed while `f` runs (`stream` is borrowed for the call).
    let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    f(socket2::SockRef::from(&fd))
}

/// Cuts the connection off when the peer takes none of what is sent to it for `timeout`
/// (`TCP_USER_TIMEOUT`: unacknowledged data, or a zero window, for that long).
pub(crate) fn set_send_timeout(stream: &TcpStream, timeout: Duration) {
    if timeout.is_zero() {
        return;
    }
    let _ = with_sock(stream, |s| s.set_tcp_user_timeout(Some(timeout)));
}

/// Sets on a listening socket what every client connection needs, once, so that each
/// accepted socket inherits it from the listener instead of costing two system calls of
/// its own: `TCP_NODELAY` (small heads must not wait for Nagle) and the send timeout of
/// [`set_send_timeout`]. Linux copies both into the sockets `accept` returns (checked by
/// the test below). Failing only loses the option.
pub(crate) fn set_client_defaults(listener: &impl AsRawFd, send_timeout: Duration) {
    with_sock(listener, |s| {
        let _ = s.set_nodelay(true);
        if !send_timeout.is_zero() {
            let _ = s.set_tcp_user_timeout(Some(send_timeout));
        }
    });
}

/// What a look at an idle connection's receive queue found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Idle {
    /// Nothing arrived: the connection is still open and quiet.
    Quiet,
    /// The peer closed or reset it, or sent bytes nobody asked for (a `408` before an
    /// idle close, say): it must not carry another request.
    Unusable,
}

/// Looks at `stream`'s receive queue without consuming or waiting
/// (`recv(MSG_PEEK | MSG_DONTWAIT)` of one byte): an idle keep-alive connection the peer
/// has closed shows its FIN or RST here.
pub(crate) fn probe_idle(stream: &impl AsRawFd) -> Idle {
    let mut byte = [MaybeUninit::<u8>::uninit(); 1];
    match with_sock(stream, |s| {
        s.recv_with_flags(&mut byte, libc::MSG_PEEK | libc::MSG_DONTWAIT)
    }) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Idle::Quiet,
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Idle::Quiet,
        _ => Idle::Unusable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn pair() -> (std::net::TcpStream, TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        (client, TcpStream::from_std(server).unwrap())
    }

    #[test]
    fn accepted_sockets_inherit_the_listeners_options() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let timeout = Duration::from_millis(7_500);
        set_client_defaults(&l, timeout);
        let _client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (accepted, _) = l.accept().unwrap();
        let s = socket2::SockRef::from(&accepted);
        assert!(s.nodelay().unwrap(), "TCP_NODELAY");
        assert_eq!(
            s.tcp_user_timeout().unwrap(),
            Some(timeout),
            "TCP_USER_TIMEOUT"
        );
        // And a listener left alone gives neither.
        let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = std::net::TcpStream::connect(plain.local_addr().unwrap()).unwrap();
        let (accepted, _) = plain.accept().unwrap();
        let s = socket2::SockRef::from(&accepted);
        assert!(!s.nodelay().unwrap());
        assert_eq!(s.tcp_user_timeout().unwrap(), None);
    }

    #[test]
    fn probe_sees_close_reset_and_stray_bytes() {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
            .block_on(async {
                let (peer, s) = pair();
                assert_eq!(probe_idle(&s), Idle::Quiet);
                drop(peer);
                monoio::time::sleep(Duration::from_millis(20)).await;
                assert_eq!(probe_idle(&s), Idle::Unusable, "FIN");

                let (mut peer, s) = pair();
                peer.write_all(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
                    .unwrap();
                monoio::time::sleep(Duration::from_millis(20)).await;
                assert_eq!(probe_idle(&s), Idle::Unusable, "stray bytes");
                // The probe consumed nothing.
                assert_eq!(probe_idle(&s), Idle::Unusable);

                let (peer, s) = pair();
                socket2::SockRef::from(&peer)
                    .set_linger(Some(Duration::ZERO))
                    .unwrap();
                drop(peer);
                monoio::time::sleep(Duration::from_millis(20)).await;
                assert_eq!(probe_idle(&s), Idle::Unusable, "RST");
            });
    }
}
