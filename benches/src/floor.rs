//! `cg-floor`, the physical floor of the comparison benchmark (`cargo xtask compare`): the
//! cheapest relay of the same bytes this machine can do, so every gateway figure can be
//! read as a ratio to it.
//!
//! It makes the gateway's own I/O choices and nothing else: one worker thread per
//! `--workers`, worker `i` pinned to core `i % ncores`, each with its own `SO_REUSEPORT`
//! listener and its own monoio runtime (io_uring with coop_taskrun + single_issuer +
//! defer_taskrun, else plain io_uring, else epoll; 1024 ring entries), TCP_NODELAY on
//! both sockets, 16 KiB buffers. Each accepted connection gets a fresh connection to the
//! one upstream, and bytes are copied both ways until both directions end ([`relay`]).
//! No HTTP parsing, routing, pooling, timeouts, metrics or logging per request.

use std::io::{self, Write as _};
use std::net::{SocketAddr, TcpListener as StdListener};
use std::pin::pin;
use std::sync::mpsc;
use std::thread::JoinHandle;

use anyhow::{Context as _, Result, anyhow, bail};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Splitable};
use monoio::net::{TcpListener, TcpStream};
use monoio::time::TimeDriver;
use monoio::{FusionRuntime, IoUringDriver, LegacyDriver, RuntimeBuilder};
use socket2::{Domain, Protocol, Socket, Type};

/// io_uring submission queue entries per worker: the gateway's value
/// (`gateway/src/runtime.rs`).
const RING_ENTRIES: u32 = 1024;
/// Pending connections the kernel queues per listener: the gateway's value.
const BACKLOG: i32 = 4096;
/// The relay buffer per direction by default: the gateway's upstream buffer.
pub const DEFAULT_BUFFER: usize = 16 * 1024;

/// What to relay, where, and with how many workers.
#[derive(Clone, Debug)]
pub struct FloorConfig {
    /// Listen address; port 0 picks a free port (shared by every worker).
    pub listen: SocketAddr,
    /// The one upstream every client connection is relayed to.
    pub upstream: SocketAddr,
    /// Worker threads, each with its own listener and runtime.
    pub workers: usize,
    /// Bytes per relay buffer (one per direction per connection).
    pub buffer: usize,
}

/// A running floor: its address and its worker threads.
#[derive(Debug)]
pub struct Floor {
    /// The address every worker listens on (port 0 resolved).
    pub local_addr: SocketAddr,
    threads: Vec<JoinHandle<()>>,
}

impl Floor {
    /// Blocks while the workers run (they run until the process is killed).
    pub fn wait(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Binds every worker's listener, starts the workers and returns once every one of them
/// accepts. Errors name the address that could not be bound, or the worker that could
/// not start.
pub fn start(cfg: &FloorConfig) -> Result<Floor> {
    if cfg.workers == 0 {
        bail!("--workers must be at least 1");
    }
    if cfg.buffer == 0 {
        bail!("--buffer must be at least 1 byte");
    }
    // The first bind resolves port 0; the other workers bind that same port.
    let first = bind(cfg.listen)?;
    let local_addr = first
        .local_addr()
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let mut listeners = vec![first];
    for _ in 1..cfg.workers {
        listeners.push(bind(local_addr)?);
    }
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut threads = Vec::with_capacity(cfg.workers);
    for (id, listener) in listeners.into_iter().enumerate() {
        let core = (!cores.is_empty()).then(|| cores[id % cores.len()]);
        let (ready, upstream, buffer) = (ready_tx.clone(), cfg.upstream, cfg.buffer);
        let thread = std::thread::Builder::new()
            .name(format!("cg-floor-w{id}"))
            .spawn(move || {
                if let Some(core) = core {
                    core_affinity::set_for_current(core);
                }
                worker(id, listener, upstream, buffer, &ready);
            })
            .with_context(|| format!("cannot start worker {id}"))?;
        threads.push(thread);
    }
    drop(ready_tx);
    for _ in 0..cfg.workers {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err((id, e))) => return Err(anyhow!(e).context(format!("worker {id}"))),
            Err(_) => bail!("a worker exited before it listened"),
        }
    }
    Ok(Floor {
        local_addr,
        threads,
    })
}

/// Prints the line the benchmark harness waits for, `listening on ADDR`, and flushes it.
pub fn announce(addr: SocketAddr) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "listening on {addr}")?;
    out.flush()
}

/// A `SO_REUSEPORT` listener on `addr`, as the gateway binds it.
fn bind(addr: SocketAddr) -> Result<StdListener> {
    let bound = || -> io::Result<StdListener> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(BACKLOG)?;
        Ok(socket.into())
    };
    bound().with_context(|| format!("cannot listen on {addr}"))
}

/// The runtime each worker runs: the gateway's type.
type Runtime = FusionRuntime<TimeDriver<IoUringDriver>, TimeDriver<LegacyDriver>>;

/// io_uring with the gateway's tuned flags, else plain io_uring; monoio's FusionDriver
/// itself falls back to epoll where io_uring is unavailable. The timer is enabled, as in
/// the gateway, although the floor sets none: the same driver stack, not a cheaper one.
fn build_runtime() -> io::Result<Runtime> {
    let mut tuned = io_uring::IoUring::builder();
    tuned
        .setup_coop_taskrun()
        .setup_single_issuer()
        .setup_defer_taskrun();
    let rt = RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .with_entries(RING_ENTRIES)
        .uring_builder(tuned)
        .build();
    if let Ok(rt) = rt {
        return Ok(rt);
    }
    RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .with_entries(RING_ENTRIES)
        .build()
}

/// Tells the starting thread a worker listens, or why it cannot.
type Ready = mpsc::Sender<std::result::Result<(), (usize, io::Error)>>;

/// One worker thread: its runtime, its listener, one relay task per accepted connection.
fn worker(id: usize, listener: StdListener, upstream: SocketAddr, buffer: usize, ready: &Ready) {
    let mut rt = match build_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err((id, e)));
            return;
        }
    };
    rt.block_on(async move {
        let listener = match TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                let _ = ready.send(Err((id, e)));
                return;
            }
        };
        let _ = ready.send(Ok(()));
        accept_loop(&listener, upstream, buffer).await;
    });
}

/// Accepts forever, one [`relay`] task per connection.
pub(crate) async fn accept_loop(listener: &TcpListener, upstream: SocketAddr, buffer: usize) {
    loop {
        match listener.accept().await {
            Ok((client, _)) => {
                monoio::spawn(relay(client, upstream, buffer));
            }
            Err(e) => {
                // Out of file descriptors or memory: back off instead of spinning.
                eprintln!("cg-floor: accept failed: {e}");
                monoio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

/// Relays one client connection: a fresh upstream connection (closing the client when it
/// cannot be made), TCP_NODELAY on both, then both directions at once ([`pump`]). When
/// one direction ends with EOF, the other goes on until it ends too; an error in either
/// ends both, and both sockets close.
pub(crate) async fn relay(client: TcpStream, upstream: SocketAddr, buffer: usize) {
    let up = match TcpStream::connect_addr(upstream).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cg-floor: cannot connect to {upstream}: {e}");
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = up.set_nodelay(true);
    let (client_r, client_w) = client.into_split();
    let (up_r, up_w) = up.into_split();
    let mut there = pin!(pump(client_r, up_w, buffer));
    let mut back = pin!(pump(up_r, client_w, buffer));
    monoio::select! {
        r = &mut there => if r.is_ok() { let _ = back.await; },
        r = &mut back => if r.is_ok() { let _ = there.await; },
    }
}

/// Copies `from` to `to` until EOF, then shuts `to`'s write side down. One buffer,
/// allocated here, reused for every read.
async fn pump<R: AsyncReadRent, W: AsyncWriteRent>(
    mut from: R,
    mut to: W,
    buffer: usize,
) -> io::Result<()> {
    let mut buf = Vec::with_capacity(buffer);
    loop {
        buf.clear();
        let (n, b) = from.read(buf).await;
        buf = b;
        if n? == 0 {
            return to.shutdown().await;
        }
        let (w, b) = to.write_all(buf).await;
        buf = b;
        w?;
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};
    use std::net::{Shutdown, TcpStream as StdStream};
    use std::thread;
    use std::time::Duration;

    use super::*;

    /// Runs `f` on an io_uring runtime when the kernel allows it, else on epoll.
    fn on_runtime<F: Future<Output = ()>>(f: impl Fn() -> F) {
        if let Ok(mut rt) = RuntimeBuilder::<IoUringDriver>::new()
            .enable_timer()
            .build()
        {
            rt.block_on(f());
            return;
        }
        RuntimeBuilder::<LegacyDriver>::new()
            .enable_timer()
            .build()
            .expect("epoll runtime")
            .block_on(f());
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    /// An upstream that reads until EOF, checks it got `expect`, sends `reply`, closes.
    fn upstream(expect: Vec<u8>, reply: Vec<u8>) -> (SocketAddr, thread::JoinHandle<bool>) {
        let l = StdListener::bind("127.0.0.1:0").expect("bind upstream");
        let addr = l.local_addr().expect("addr");
        let t = thread::spawn(move || {
            let (mut s, _) = l.accept().expect("accept");
            let mut got = Vec::new();
            s.read_to_end(&mut got).expect("upstream read");
            s.write_all(&reply).expect("upstream write");
            got == expect
        });
        (addr, t)
    }

    /// A client on its own thread: sends `send`, shuts its write side (when `half`), reads
    /// until EOF.
    fn client(floor: SocketAddr, send: Vec<u8>, half: bool) -> thread::JoinHandle<Vec<u8>> {
        thread::spawn(move || {
            let mut s = StdStream::connect(floor).expect("connect floor");
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            s.write_all(&send).expect("client write");
            if half {
                s.shutdown(Shutdown::Write).expect("shutdown");
            }
            let mut got = Vec::new();
            s.read_to_end(&mut got).expect("client read");
            got
        })
    }

    /// Serves exactly one connection through the relay, as a worker would.
    async fn relay_one(listener: StdListener, upstream: SocketAddr, buffer: usize) {
        let listener = TcpListener::from_std(listener).expect("monoio listener");
        let (c, _) = listener.accept().await.expect("accept");
        relay(c, upstream, buffer).await;
        // monoio closes a dropped socket with an io_uring op the runtime submits later: let
        // it run before the runtime ends, as a worker's runtime always would.
        monoio::time::sleep(Duration::from_millis(50)).await;
    }

    fn listener() -> (StdListener, SocketAddr) {
        let l = bind("127.0.0.1:0".parse().expect("addr")).expect("bind floor");
        let a = l.local_addr().expect("addr");
        (l, a)
    }

    #[test]
    fn floor_relays_a_mebibyte_each_way() {
        on_runtime(|| async {
            let (send, reply) = (pattern(1 << 20, 1), pattern(1 << 20, 7));
            let (up, up_thread) = upstream(send.clone(), reply.clone());
            let (l, floor) = listener();
            let c = client(floor, send, true);
            relay_one(l, up, DEFAULT_BUFFER).await;
            assert!(
                up_thread.join().expect("upstream"),
                "upstream got other bytes"
            );
            assert!(c.join().expect("client") == reply, "client got other bytes");
        });
    }

    #[test]
    fn floor_half_close_reply_after_client_eof() {
        on_runtime(|| async {
            let (up, up_thread) = upstream(b"ping".to_vec(), b"pong after eof".to_vec());
            let (l, floor) = listener();
            let c = client(floor, b"ping".to_vec(), true);
            // A small buffer: several reads per direction.
            relay_one(l, up, 3).await;
            assert!(
                up_thread.join().expect("upstream"),
                "upstream did not see ping+EOF"
            );
            assert_eq!(c.join().expect("client"), b"pong after eof");
        });
    }

    #[test]
    fn floor_closes_the_client_when_the_upstream_is_down() {
        on_runtime(|| async {
            // A port nothing listens on: bound, then closed.
            let dead = StdListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("addr");
            let (l, floor) = listener();
            let c = client(floor, Vec::new(), false);
            relay_one(l, dead, DEFAULT_BUFFER).await;
            assert!(c.join().expect("client").is_empty());
        });
    }

    #[test]
    fn floor_start_refuses_nonsense_and_names_the_address() {
        let taken = StdListener::bind("127.0.0.1:0").expect("bind");
        let addr = taken.local_addr().expect("addr");
        let cfg = FloorConfig {
            listen: addr,
            upstream: addr,
            workers: 1,
            buffer: DEFAULT_BUFFER,
        };
        let e = start(&cfg).expect_err("port in use");
        assert!(format!("{e:#}").contains(&addr.to_string()), "{e:#}");
        assert!(
            start(&FloorConfig {
                workers: 0,
                ..cfg.clone()
            })
            .is_err()
        );
        assert!(start(&FloorConfig { buffer: 0, ..cfg }).is_err());
    }
}
