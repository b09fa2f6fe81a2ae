//! Addresses where no upstream answers, for the 502 and 504 fault tests: one that refuses
//! connections and one whose handshakes never complete.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// An address on which nothing listens (bound, then released), for "connection refused".
pub fn refused_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind for refused addr");
    listener.local_addr().expect("refused addr")
}

/// A loopback address whose listener never accepts and whose accept queue is full, so a
/// new connection attempt hangs in SYN-SENT (the kernel drops its SYNs): the way to get a
/// connect timeout without leaving loopback. Keeps working while it lives.
#[derive(Debug)]
pub struct Blackhole {
    addr: SocketAddr,
    _listener: socket2::Socket,
    _fillers: Vec<TcpStream>,
}

impl Blackhole {
    /// Creates the listener (backlog 0) and fills its queue; panics if connections still
    /// complete afterwards.
    pub fn start() -> Self {
        use socket2::{Domain, Socket, Type};
        let listener = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        listener
            .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .expect("bind blackhole");
        listener.listen(0).expect("listen");
        let addr = listener
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .expect("blackhole addr");
        let mut fillers = Vec::new();
        for _ in 0..16 {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
                Ok(s) => fillers.push(s),
                Err(_) => {
                    return Self {
                        addr,
                        _listener: listener,
                        _fillers: fillers,
                    };
                }
            }
        }
        panic!("could not fill the accept queue of {addr}: connections keep completing");
    }

    /// The address that never completes a handshake.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}
