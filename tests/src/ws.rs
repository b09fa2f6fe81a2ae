//! WebSocket pieces for the Upgrade test: an echo upstream built on `tungstenite::accept`
//! (one thread per connection) and a client helper that runs the `tungstenite` client
//! handshake over a plain `TcpStream` to the gateway.

use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::tls::Sock;
use tungstenite::{Message, WebSocket};

use crate::client::IO_TIMEOUT;

/// A WebSocket server that echoes every text and binary message; stops on drop.
#[derive(Debug)]
pub struct WsEchoUpstream {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    handshakes: Arc<AtomicU64>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl WsEchoUpstream {
    /// Binds an ephemeral loopback port and starts accepting.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind ws upstream");
        let addr = listener.local_addr().expect("ws local addr");
        let stop = Arc::new(AtomicBool::new(false));
        let handshakes = Arc::new(AtomicU64::new(0));
        let open = Arc::new(Mutex::new(Vec::new()));
        let acceptor = {
            let (stop, handshakes, open) = (stop.clone(), handshakes.clone(), open.clone());
            thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    if let Ok(c) = stream.try_clone() {
                        open.lock().unwrap_or_else(PoisonError::into_inner).push(c);
                    }
                    let handshakes = handshakes.clone();
                    thread::spawn(move || echo(stream, &handshakes));
                }
            })
        };
        Self {
            addr,
            stop,
            handshakes,
            open,
            acceptor: Some(acceptor),
        }
    }

    /// Listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Completed server handshakes.
    pub fn handshakes(&self) -> u64 {
        self.handshakes.load(Ordering::SeqCst)
    }
}

fn echo(stream: TcpStream, handshakes: &AtomicU64) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let Ok(mut ws) = tungstenite::accept(stream) else {
        return;
    };
    handshakes.fetch_add(1, Ordering::SeqCst);
    loop {
        match ws.read() {
            Ok(msg @ (Message::Text(_) | Message::Binary(_))) => {
                if ws.send(msg).is_err() {
                    return;
                }
            }
            Ok(Message::Close(_)) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

impl Drop for WsEchoUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
        for s in self
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// Connects to `addr` and performs the WebSocket client handshake for `path`.
pub fn ws_connect(addr: SocketAddr, path: &str) -> Result<WebSocket<Sock>, String> {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let scheme = if crate::tls::over_tls() { "wss" } else { "ws" };
    let url = format!("{scheme}://{addr}{path}");
    let sock = Sock::harness(stream, addr).map_err(|e| format!("TLS to {addr}: {e}"))?;
    match tungstenite::client(url.as_str(), sock) {
        Ok((ws, resp)) => {
            if resp.status().as_u16() == 101 {
                Ok(ws)
            } else {
                Err(format!("handshake answered {}", resp.status()))
            }
        }
        Err(e) => Err(format!("websocket handshake through {addr} failed: {e}")),
    }
}
