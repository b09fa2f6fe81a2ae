//! Threads, cores and listeners: one monoio worker per core, each pinned, each with its
//! own `SO_REUSEPORT` listener, upstream pools, random generator and metrics. Workers
//! share nothing on the hot path but the atomic canary share and their own metrics
//! (read, never written, by other threads).

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use monoio::net::TcpListener;
use monoio::time::TimeDriver;
use monoio::{FusionRuntime, IoUringDriver, LegacyDriver, RuntimeBuilder};
use socket2::{Domain, Protocol, Socket, Type};

use crate::config::{Config, DriverChoice};
use crate::metrics::{Stats, WorkerMetrics};
use crate::select::{Picker, Split};
use crate::upstream::Upstreams;

/// io_uring submission queue entries per worker.
const RING_ENTRIES: u32 = 1024;
/// Pending connections the kernel queues per listener.
const BACKLOG: i32 = 4096;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// No stable endpoint was given.
    #[error("the stable deployment needs at least one endpoint")]
    NoStable,
    /// A canary share without canary endpoints.
    #[error("a canary share above 0 needs at least one canary endpoint")]
    NoCanary,
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// A worker's runtime could not be built.
    #[error("cannot start worker {worker}: {source}")]
    Worker {
        /// Worker index.
        worker: usize,
        /// The OS error.
        source: io::Error,
    },
}

/// The I/O driver the workers run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    /// io_uring with `COOP_TASKRUN`, `SINGLE_ISSUER` and `DEFER_TASKRUN`.
    IoUringTuned,
    /// io_uring with default setup flags (the kernel refused the tuned ones).
    IoUring,
    /// epoll: asked for, or io_uring is unavailable here.
    Epoll,
}

impl std::fmt::Display for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Driver::IoUringTuned => "io_uring (coop_taskrun, single_issuer, defer_taskrun)",
            Driver::IoUring => "io_uring",
            Driver::Epoll => "epoll",
        })
    }
}

/// Everything one worker owns. Lives on its thread, behind an `Rc`.
#[derive(Debug)]
pub struct Worker {
    /// Index of the worker.
    pub id: usize,
    /// The configuration it was started with.
    pub config: Arc<Config>,
    /// The canary share (shared, atomic).
    pub split: Arc<Split>,
    /// This worker's counters and histograms.
    pub metrics: Arc<WorkerMetrics>,
    /// This worker's random source for picks.
    pub picker: RefCell<Picker>,
    /// This worker's endpoints and pools.
    pub upstreams: Upstreams,
}

/// A running gateway.
#[derive(Debug)]
pub struct Gateway {
    local_addr: SocketAddr,
    split: Arc<Split>,
    metrics: Vec<Arc<WorkerMetrics>>,
    driver: Driver,
    threads: Vec<JoinHandle<()>>,
}

impl Gateway {
    /// The address the workers listen on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The canary share; changes are seen by every worker on its next request.
    pub fn split(&self) -> &Arc<Split> {
        &self.split
    }

    /// Reads every worker's figures.
    pub fn stats(&self) -> Stats {
        Stats {
            workers: self.metrics.iter().map(|m| m.snapshot()).collect(),
        }
    }

    /// The I/O driver in use.
    pub fn driver(&self) -> Driver {
        self.driver
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.metrics.len()
    }

    /// Blocks until every worker thread ends (they run until the process exits).
    pub fn wait(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Binds the listeners, starts one pinned worker per core and returns once all of them
/// accept connections.
pub fn start(config: Config) -> Result<Gateway, StartError> {
    if config.stable.is_empty() {
        return Err(StartError::NoStable);
    }
    if config.canary_ppm > 0 && config.canary.is_empty() {
        return Err(StartError::NoCanary);
    }
    let workers = config.effective_workers();
    let first = bind(config.listen)?;
    let local_addr = first.local_addr().map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;
    let mut listeners = vec![first];
    for _ in 1..workers {
        listeners.push(bind(local_addr)?);
    }

    let split = Arc::new(Split::new(config.canary_ppm));
    let config = Arc::new(config);
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut metrics = Vec::with_capacity(workers);
    let mut threads = Vec::with_capacity(workers);
    for (id, listener) in listeners.into_iter().enumerate() {
        let m = Arc::new(WorkerMetrics::default());
        metrics.push(Arc::clone(&m));
        let core = (!cores.is_empty()).then(|| cores[id % cores.len()]);
        let (config, split, ready) = (Arc::clone(&config), Arc::clone(&split), ready_tx.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("canarygate-w{id}"))
            .spawn(move || {
                if let Some(core) = core {
                    core_affinity::set_for_current(core);
                }
                let upstreams = Upstreams::new(
                    &config.stable,
                    &config.canary,
                    config.limits.pool_max_idle,
                    config.timeouts.pool_idle,
                    config.timeouts.connect,
                );
                let worker = Rc::new(Worker {
                    id,
                    picker: RefCell::new(Picker::from_entropy(id as u64 + 1)),
                    config,
                    split,
                    metrics: m,
                    upstreams,
                });
                run_worker(worker, listener, &ready);
            });
        match spawned {
            Ok(t) => threads.push(t),
            Err(source) => return Err(StartError::Worker { worker: id, source }),
        }
    }
    drop(ready_tx);
    let mut driver = Driver::IoUringTuned;
    for _ in 0..workers {
        match ready_rx.recv() {
            Ok(Ok(d)) => driver = d,
            Ok(Err((worker, source))) => return Err(StartError::Worker { worker, source }),
            Err(_) => {
                return Err(StartError::Worker {
                    worker: 0,
                    source: io::Error::other("worker exited"),
                });
            }
        }
    }
    Ok(Gateway {
        local_addr,
        split,
        metrics,
        driver,
        threads,
    })
}

type Ready = mpsc::Sender<Result<Driver, (usize, io::Error)>>;

fn run_worker(worker: Rc<Worker>, listener: std::net::TcpListener, ready: &Ready) {
    let id = worker.id;
    let (mut rt, driver) = match build_runtime(worker.config.io_driver) {
        Ok(x) => x,
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
        let _ = ready.send(Ok(driver));
        let sweeper = Rc::clone(&worker);
        monoio::spawn(async move {
            loop {
                monoio::time::sleep(Duration::from_secs(1)).await;
                sweeper.upstreams.sweep();
            }
        });
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    monoio::spawn(crate::proxy::serve(Rc::clone(&worker), stream, peer));
                }
                Err(e) => {
                    // Out of file descriptors or memory: back off instead of spinning.
                    log::warn!("worker {id}: accept failed: {e}");
                    monoio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    });
}

type Runtime = FusionRuntime<TimeDriver<IoUringDriver>, TimeDriver<LegacyDriver>>;

/// io_uring with the tuned flags, else io_uring plain, else epoll (as `choice` allows).
fn build_runtime(choice: DriverChoice) -> io::Result<(Runtime, Driver)> {
    let uring = monoio::utils::detect_uring();
    if choice == DriverChoice::Epoll || (!uring && choice == DriverChoice::Auto) {
        let rt = RuntimeBuilder::<LegacyDriver>::new()
            .enable_timer()
            .build()?;
        return Ok((rt.into(), Driver::Epoll));
    }
    if !uring {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "io_uring is unavailable (kernel too old, disabled by kernel.io_uring_disabled, or blocked by seccomp)",
        ));
    }
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
        return Ok((rt, Driver::IoUringTuned));
    }
    let rt = RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .with_entries(RING_ENTRIES)
        .build()?;
    Ok((rt, Driver::IoUring))
}

fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, StartError> {
    let err = |source| StartError::Bind { addr, source };
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
    socket.set_reuse_address(true).map_err(err)?;
    socket.set_reuse_port(true).map_err(err)?;
    socket.set_nonblocking(true).map_err(err)?;
    socket.bind(&addr.into()).map_err(err)?;
    socket.listen(BACKLOG).map_err(err)?;
    Ok(socket.into())
}
