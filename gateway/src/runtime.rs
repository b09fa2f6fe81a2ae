//! Threads, cores and listeners: one monoio worker per core, each pinned, each with its
//! own `SO_REUSEPORT` listener, upstream pools, random generator and metrics. Workers
//! share nothing on the hot path but the atomic canary share and their own metrics
//! (read, never written, by other threads).
//!
//! With `--takeover` the listeners come from the running gateway instead of `bind`
//! ([`crate::takeover`]): each stage takes the old stage's sockets, the workers start on
//! them, and only then is the old process told to stop accepting. A worker stops
//! accepting by cancelling its pending accept; an accept that completed as it was
//! cancelled still hands its connection over, and it is served.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use monoio::io::{CancelHandle, Canceller};
use monoio::net::TcpListener;
use monoio::time::TimeDriver;
use monoio::{FusionRuntime, IoUringDriver, LegacyDriver, RuntimeBuilder};
use socket2::{Domain, Protocol, Socket, Type};

use crate::config::{Config, ConfigError, DriverChoice};
use crate::control::Control;
use crate::dataplane::accesslog::AccessLog;
use crate::dataplane::route::split::Split;
use crate::dataplane::worker::Worker;
use crate::metrics::{Stats, WorkerMetrics};
use crate::rollout::controller::Rollouts;
use crate::takeover::wire::{self, Role};
use crate::takeover::{Handover, Taken};

/// io_uring submission queue entries per worker.
const RING_ENTRIES: u32 = 1024;
/// Pending connections the kernel queues per listener.
const BACKLOG: i32 = 4096;
/// How often a worker looks whether a successor took its listening sockets over.
const HANDOVER_POLL: Duration = Duration::from_millis(50);

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration cannot run ([`Config::validate`]).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// A TLS certificate, key or CA file cannot be used (the message names it).
    #[error("{0}")]
    Tls(String),
    /// The access log could not be opened.
    #[error("cannot open the access log: {0}")]
    AccessLog(io::Error),
    /// The control plane (admin socket, metrics endpoint) could not start.
    #[error("{0}")]
    ControlPlane(String),
    /// `--kernel-accounting on`, and kernel accounting is unavailable.
    #[error("kernel accounting is unavailable: {0}")]
    Kernel(#[from] crate::kernel::KernelError),
    /// `--takeover`: the running gateway's sockets could not be taken over, or do not
    /// fit this configuration (the message names the flag).
    #[error("{0}")]
    Takeover(String),
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

/// A running gateway.
#[derive(Debug)]
pub struct Gateway {
    local_addrs: Vec<SocketAddr>,
    split: Arc<Split>,
    control: Arc<Control>,
    metrics: Vec<Arc<WorkerMetrics>>,
    driver: Driver,
    threads: Vec<JoinHandle<()>>,
    /// Duplicates of the listening sockets, for [`Gateway::begin_drain`] and for a
    /// successor that takes them over.
    handover: Arc<Handover>,
    _log: Option<AccessLog>,
    control_plane: Option<crate::admin::ControlPlane>,
    /// Fleet mode: this gateway in its fleet (its etcd thread lives as long as this).
    _fleet: Option<std::sync::Arc<crate::fleet::Fleet>>,
    /// Kernel accounting; dropping the gateway detaches it (see `crate::kernel`).
    pub(crate) kernel: crate::kernel::KernelGuard,
}

impl Gateway {
    /// The address the first stage listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addrs[0]
    }

    /// The addresses every stage listens on, in stage order.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// The canary share of the first route; changes are seen by every worker on its next
    /// request.
    pub fn split(&self) -> &Arc<Split> {
        &self.split
    }

    /// The control plane: routing state and the changes operators make to it.
    pub fn control(&self) -> &Arc<Control> {
        &self.control
    }

    /// Starts a graceful stop: no new connections are accepted (the listening sockets
    /// are shut, so a successor bound to the same port with `SO_REUSEPORT` gets them),
    /// each response from now on carries `Connection: close`, and each client connection
    /// closes after its current response. Wait for [`Gateway::busy`] to reach 0, then
    /// drop the gateway.
    /// After a takeover the sockets are the successor's too: they are left open and the
    /// workers only stop accepting.
    pub fn begin_drain(&self) {
        self.control.shared().start_draining();
        if !self.handover.shut_listeners() {
            self.control.shared().stop_accepting();
        }
    }

    /// What a successor takes over; [`Handover::wait`] returns once one did.
    pub(crate) fn handover(&self) -> &Arc<Handover> {
        &self.handover
    }

    /// Requests being served plus upgraded connections being tunnelled, all workers.
    pub fn busy(&self) -> u64 {
        self.metrics.iter().map(|m| m.busy.get()).sum()
    }

    /// Where the admin socket and metrics endpoint listen, when they run.
    pub fn control_plane(&self) -> Option<&crate::admin::ControlPlane> {
        self.control_plane.as_ref()
    }

    /// Reads every worker's and route's figures.
    pub fn stats(&self) -> Stats {
        self.control.stats()
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

/// Binds the listeners, starts one pinned worker per core (and the control plane when an
/// admin socket, metrics endpoint or config file asks for it) and returns once all of
/// them accept connections.
pub fn start(config: Config) -> Result<Gateway, StartError> {
    start_in(config, None)
}

/// [`start`] for a gateway that joined a fleet ([`crate::fleet::join`]): its changes are
/// stored in etcd and it takes on the fleet's from there on.
pub(crate) fn start_in(
    mut config: Config,
    fleet: Option<crate::fleet::Joined>,
) -> Result<Gateway, StartError> {
    config.validate()?;
    let workers = config.server.effective_workers();
    // Before any socket exists: the gateway may move itself into its own cgroup.
    let kernel = crate::kernel::start(config.server.kernel_accounting)?;
    let mut taken = match config.server.takeover.clone() {
        Some(path) => Some(Taken::connect(&path).map_err(|e| takeover_error(&path, &e))?),
        None => None,
    };
    if taken.is_some() && matches!(kernel.status(), crate::kernel::KernelStatus::On(_)) {
        log::warn!(
            "kernel accounting: connections accepted on the sockets taken over belong to the \
             old process's cgroup, so this process's kernel figures count its upstream \
             traffic only (restart without --takeover to count client traffic again)"
        );
    }
    let (local_addrs, per_worker) = bind_listeners(&mut config, workers, taken.as_mut())?;
    let handover = Arc::new(Handover::default());
    for (worker, listeners) in per_worker.iter().enumerate() {
        for (stage, l) in listeners {
            let role = Role::Listener {
                stage: *stage,
                worker,
            };
            handover.offer(role, l).map_err(|source| StartError::Bind {
                addr: local_addrs[*stage],
                source,
            })?;
        }
    }

    let metrics: Vec<Arc<WorkerMetrics>> = (0..workers)
        .map(|_| Arc::new(WorkerMetrics::default()))
        .collect();
    let kernel_handle = kernel.handle();
    let control = Arc::new(
        Control::new(config.clone(), metrics.clone(), kernel_handle).map_err(StartError::Tls)?,
    );
    let fleet = fleet.map(|j| j.run(&control));
    // The rollout controller owns the rollouts the file plans, and starts them now.
    let steering = fleet
        .as_ref()
        .map(|f| Arc::clone(f) as Arc<dyn crate::rollout::steering::Steering>);
    let rollouts = Arc::new(Rollouts::new(
        Arc::clone(&control),
        std::time::Instant::now(),
        steering,
    ));
    let first_route = config.stages[0].routes[0].name.clone();
    let split = control
        .split(&first_route)
        .unwrap_or_else(|| Arc::new(Split::new(0)));
    let server = &config.server;
    let log = if server.access_log.is_some() || server.canary_access_log.is_some() {
        Some(
            AccessLog::start(
                &metrics,
                server.access_log.as_deref(),
                server.canary_access_log.as_deref(),
            )
            .map_err(StartError::AccessLog)?,
        )
    } else {
        None
    };
    let taken_metrics = taken
        .as_mut()
        .and_then(|t| t.metrics(server.metrics_listen));
    if let Some(t) = taken.as_mut() {
        for addr in t.close_unused() {
            log::warn!(
                "--takeover: the new configuration does not listen on {addr}; its socket is \
                 closed here and stays the old process's until it exits"
            );
        }
    }
    let control_plane = if server.admin_socket.is_some()
        || server.metrics_listen.is_some()
        || server.source.is_some()
        || fleet.is_some()
    {
        let plane = crate::admin::Plane {
            handover: Arc::clone(&handover),
            metrics: taken_metrics,
            replace_admin: taken.is_some(),
        };
        Some(
            crate::admin::ControlPlane::start(server, rollouts, plane)
                .map_err(StartError::ControlPlane)?,
        )
    } else {
        None
    };
    let config = Arc::new(config.server);
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut threads = Vec::with_capacity(workers);
    for (id, listeners) in per_worker.into_iter().enumerate() {
        let m = Arc::clone(&metrics[id]);
        let core = (!cores.is_empty()).then(|| cores[id % cores.len()]);
        let (config, shared, ready) = (
            Arc::clone(&config),
            Arc::clone(control.shared()),
            ready_tx.clone(),
        );
        let queue = log.as_ref().map(|l| l.queue(id));
        let spawned = std::thread::Builder::new()
            .name(format!("canarygate-w{id}"))
            .spawn(move || {
                if let Some(core) = core {
                    core_affinity::set_for_current(core);
                }
                let worker = Rc::new(Worker::new(id, config, shared, m, queue));
                run_worker(worker, listeners, &ready);
            });
        match spawned {
            Ok(t) => threads.push(t),
            Err(source) => return Err(StartError::Worker { worker: id, source }),
        }
    }
    drop(ready_tx);
    let driver = wait_ready(&ready_rx, workers)?;
    if let Some(t) = taken {
        // Every worker accepts on the sockets now: the old process may stop. Its admin
        // socket path becomes ours only once it agreed.
        let path = t.path().to_path_buf();
        t.finish().map_err(|e| takeover_error(&path, &e))?;
        if let Some(cp) = &control_plane {
            cp.publish_admin().map_err(StartError::ControlPlane)?;
        }
        log::info!(
            "took over from the gateway at {}: it drains now",
            path.display()
        );
    }
    Ok(Gateway {
        local_addrs,
        split,
        control,
        metrics,
        driver,
        threads,
        handover,
        _log: log,
        control_plane,
        _fleet: fleet,
        kernel,
    })
}

fn takeover_error(path: &std::path::Path, e: &str) -> StartError {
    StartError::Takeover(format!("--takeover {}: {e}", path.display()))
}

/// One worker's listeners: the stage each serves, and the socket.
type Listeners = Vec<(usize, std::net::TcpListener)>;

/// Listeners: per stage, the first bind resolves port 0 (the config then records the real
/// port, which reload relies on); every worker gets its own `SO_REUSEPORT` socket on the
/// same address. A stage the old process listens on (`taken`) takes its sockets instead,
/// spread over the workers ([`wire::spread`]); a worker left without one binds its own.
/// Returns the stages' addresses and each worker's listeners.
fn bind_listeners(
    config: &mut Config,
    workers: usize,
    mut taken: Option<&mut Taken>,
) -> Result<(Vec<SocketAddr>, Vec<Listeners>), StartError> {
    let wanted: Vec<SocketAddr> = config.stages.iter().map(|s| s.listen).collect();
    let plan = match taken.as_deref() {
        Some(t) => {
            wire::plan(&t.stage_addrs(), &wanted).map_err(|e| takeover_error(t.path(), &e))?
        }
        None => vec![None; wanted.len()],
    };
    let mut local_addrs = Vec::new();
    let mut per_worker: Vec<Listeners> = (0..workers).map(|_| Vec::new()).collect();
    for (index, stage) in config.stages.iter_mut().enumerate() {
        let passed = match (plan[index], taken.as_deref_mut()) {
            (Some(old), Some(t)) => t.stage(old),
            _ => Vec::new(),
        };
        let mut passed: Vec<Option<std::net::TcpListener>> = passed.into_iter().map(Some).collect();
        let first = if let Some(l) = passed.first().and_then(Option::as_ref) {
            l.local_addr()
        } else {
            let l = bind(stage.listen)?;
            let addr = l.local_addr();
            passed.push(Some(l));
            addr
        };
        let addr = first.map_err(|source| StartError::Bind {
            addr: stage.listen,
            source,
        })?;
        stage.listen = addr;
        local_addrs.push(addr);
        for (worker, mine) in wire::spread(passed.len(), workers).into_iter().enumerate() {
            if mine.is_empty() {
                per_worker[worker].push((index, bind(addr)?));
            }
            for j in mine {
                if let Some(l) = passed[j].take() {
                    per_worker[worker].push((index, l));
                }
            }
        }
    }
    Ok((local_addrs, per_worker))
}

/// Waits until every worker listens (or one failed); returns the I/O driver they run on.
fn wait_ready(
    ready_rx: &mpsc::Receiver<Result<Driver, (usize, io::Error)>>,
    workers: usize,
) -> Result<Driver, StartError> {
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
    Ok(driver)
}

type Ready = mpsc::Sender<Result<Driver, (usize, io::Error)>>;

fn run_worker(worker: Rc<Worker>, listeners: Listeners, ready: &Ready) {
    let id = worker.id;
    let (mut rt, driver) = match build_runtime(worker.config.io_driver) {
        Ok(x) => x,
        Err(e) => {
            let _ = ready.send(Err((id, e)));
            return;
        }
    };
    rt.block_on(async move {
        let mut accepting = Vec::with_capacity(listeners.len());
        for (stage, l) in listeners {
            // Bound here or taken over from the old process alike.
            crate::dataplane::io::socket::set_client_defaults(&l, worker.config.timeouts.send);
            match TcpListener::from_std(l) {
                Ok(l) => accepting.push((stage, l)),
                Err(e) => {
                    let _ = ready.send(Err((id, e)));
                    return;
                }
            }
        }
        let _ = ready.send(Ok(driver));
        let sweeper = Rc::clone(&worker);
        monoio::spawn(async move {
            loop {
                // Often enough that a connection the upstream closed is let go soon
                // (a peek per idle connection, nothing for busy ones).
                monoio::time::sleep(Duration::from_millis(250)).await;
                sweeper.sweep_pools();
            }
        });
        // One canceller for every accept of this worker: it fires once a successor took
        // the sockets over (the flag is polled: nothing can wake this thread's ring
        // from another thread).
        let canceller = Canceller::new();
        let cancel = canceller.handle();
        let shared = Arc::clone(&worker.shared);
        monoio::spawn(async move {
            while shared.accepting() {
                monoio::time::sleep(HANDOVER_POLL).await;
            }
            let _ = canceller.cancel();
        });
        for (stage, listener) in accepting {
            monoio::spawn(accept_loop(
                Rc::clone(&worker),
                listener,
                stage,
                cancel.clone(),
            ));
        }
        // The runtime lives as long as the process: requests in flight end with it.
        std::future::pending::<()>().await;
    });
}

/// Accepts connections on one stage's listener, one task per connection, until the
/// listener is shut (graceful stop) or the accepts are cancelled (a successor took the
/// sockets over).
async fn accept_loop(
    worker: Rc<Worker>,
    listener: TcpListener,
    stage: usize,
    cancel: CancelHandle,
) {
    loop {
        match listener.cancelable_accept(cancel.clone()).await {
            // Also an accept that completed while it was being cancelled: the connection
            // is out of the kernel's queue, so this process serves it (dropping it would
            // reset the client).
            Ok((stream, peer)) => {
                monoio::spawn(crate::dataplane::conn::serve(
                    Rc::clone(&worker),
                    stream,
                    peer,
                    stage,
                ));
            }
            // Handed over (the successor accepts on this very socket, so only this
            // process's descriptor closes) or shut for a graceful stop.
            Err(_) if !worker.shared.accepting() || worker.shared.draining() => return,
            Err(e) => {
                // Out of file descriptors or memory: back off instead of spinning.
                log::warn!("worker {}: accept failed: {e}", worker.id);
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
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
