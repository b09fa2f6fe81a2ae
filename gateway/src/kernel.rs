//! Kernel-level TCP accounting per variant: loads the embedded `gateway-ebpf` object,
//! attaches its `sock_ops` program to a cgroup of the gateway's own, tags sockets, and
//! reads the kernel's figures back.
//!
//! Where it sits in the flow:
//! - [`start`] runs in `runtime::start` before any listener or upstream socket exists:
//!   the gateway moves itself into its own child cgroup (`canarygate-<pid>`, see
//!   [`cgroup`]) and attaches there, so the program sees the gateway's sockets and no
//!   one else's.
//! - On the hot path, [`tag_upstream`] (right after an upstream connect) and
//!   [`tag_downstream`] (right after accept) write the socket's class into socket-local
//!   storage: one `bpf(BPF_MAP_UPDATE_ELEM)` per new connection, nothing per request.
//!   With accounting off they are one relaxed atomic load.
//! - [`start`] returns the [`KernelGuard`], which owns the accounting; whoever reports the
//!   kernel's figures gets a [`Kernel`] handle from it ([`KernelGuard::handle`]: the
//!   control plane's [`Control`](crate::control::Control), which the rollouts and the
//!   admin server read through). [`Kernel::stats`] sums the per-CPU counters and copies
//!   the RTT histograms that a background thread ([`drain`]) fills from the ring buffer.
//!   There is no global to read: a handle only sees the accounting of the guard it came
//!   from, and nothing once that guard is gone.
//! - Dropping the [`KernelGuard`] (when the `Gateway` is dropped, at exit) stops tagging,
//!   detaches the program, moves the process back and removes the cgroup. Nothing is
//!   pinned, and no qdisc is created, so nothing outlives the process; a gateway killed
//!   with SIGKILL leaves only an empty cgroup directory, which the next gateway removes.
//!
//! The object is built by `gateway/build.rs`; without the eBPF toolchain the binary
//! still builds and [`start`] reports why accounting is unavailable. The test-only fault
//! injector is a separate object (`gateway-fault`) that is not embedded here.

mod cgroup;
mod drain;
pub(crate) mod prometheus;
pub(crate) mod report;
mod sys;

use std::fmt;
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use aya::maps::{Map, MapData, PerCpuArray, RingBuf};
use aya::programs::{CgroupAttachMode, SockOps};
use aya::{Ebpf, EbpfLoader};
use gateway_common::{
    CLASS_DOWNSTREAM, CLASS_SLOTS, ClassCounters, VARIANT_COUNT, Variant, variant_class,
};
use hdrhistogram::Histogram;

use crate::config::KernelAccounting;
use crate::metrics::new_histogram;

/// The eBPF object built by `gateway/build.rs`; empty when it could not be built.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/gateway-ebpf"));

/// Why the object is empty (set by `gateway/build.rs`; empty when it was built).
const BUILD_UNAVAILABLE: &str = env!("CANARYGATE_EBPF_UNAVAILABLE");

/// Name of the `sock_ops` program in the object.
const SOCKOPS_PROGRAM: &str = "cg_sockops";

/// Tags that could not be written (the socket is then not accounted).
static TAG_FAILURES: AtomicU64 = AtomicU64::new(0);

/// Why kernel accounting could not start.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The binary carries no eBPF object.
    #[error("this canarygate was built without its eBPF object ({0})")]
    NotBuilt(&'static str),
    /// Missing capabilities.
    #[error(
        "loading eBPF programs needs CAP_BPF and CAP_NET_ADMIN (or CAP_SYS_ADMIN); this process has {have}"
    )]
    Privileges {
        /// What the process has, e.g. "none of them" or "CAP_NET_ADMIN only".
        have: String,
    },
    /// No cgroup v2 hierarchy, or the gateway's cgroup cannot be made or entered.
    #[error("cgroup v2: {0}")]
    Cgroup(String),
    /// The kernel refused the object, a program or the attachment.
    #[error("{what}: {detail}")]
    Load {
        /// The step that failed.
        what: &'static str,
        /// The loader's error.
        detail: String,
    },
}

impl KernelError {
    fn load(what: &'static str, e: impl fmt::Display) -> KernelError {
        KernelError::Load {
            what,
            detail: e.to_string(),
        }
    }
}

/// Whether an [`Accounting`] exists in this process: one at a time, since it moves the
/// whole process into its cgroup. Only [`Accounting::start`] claims it and only
/// [`Claim`]'s drop releases it; nothing reads figures through it.
static CLAIMED: AtomicBool = AtomicBool::new(false);

/// Starts kernel accounting as `choice` says and returns the guard that stops it.
///
/// `Off` touches nothing. `Auto` logs a warning naming the reason and returns an inactive
/// guard when accounting is unavailable. `On` returns the reason as an error.
pub(crate) fn start(choice: KernelAccounting) -> Result<KernelGuard, KernelError> {
    let started = match choice {
        KernelAccounting::Off => {
            return Ok(KernelGuard {
                status: KernelStatus::Off("--kernel-accounting off".into()),
                accounting: None,
            });
        }
        KernelAccounting::On => Accounting::start()?,
        KernelAccounting::Auto => match Accounting::start() {
            Ok(a) => a,
            Err(e) => {
                log::warn!("kernel accounting is off: {e}");
                return Ok(KernelGuard {
                    status: KernelStatus::Off(e.to_string()),
                    accounting: None,
                });
            }
        },
    };
    let cgroup = started.cgroup_path().to_path_buf();
    Ok(KernelGuard {
        status: KernelStatus::On(cgroup),
        accounting: Some(Arc::new(started)),
    })
}

/// Whether kernel accounting runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelStatus {
    /// It runs, attached to this cgroup.
    On(PathBuf),
    /// It does not; why.
    Off(String),
}

/// Keeps kernel accounting running; dropping it detaches everything and removes the
/// cgroup. Held by the `Gateway`.
#[derive(Debug)]
pub(crate) struct KernelGuard {
    status: KernelStatus,
    /// The only owner: readers hold [`Kernel`] handles, which do not keep it alive.
    accounting: Option<Arc<Accounting>>,
}

impl KernelGuard {
    /// Whether accounting runs, and where or why not.
    pub(crate) fn status(&self) -> &KernelStatus {
        &self.status
    }

    /// The kernel's figures, when accounting runs.
    pub(crate) fn stats(&self) -> Option<KernelStats> {
        self.accounting.as_ref().map(|a| a.stats())
    }

    /// A handle for whoever reports the kernel's figures; it sees nothing once this
    /// guard is dropped.
    pub(crate) fn handle(&self) -> Kernel {
        Kernel {
            accounting: self
                .accounting
                .as_ref()
                .map_or_else(Weak::new, Arc::downgrade),
        }
    }
}

/// A reader's handle on kernel accounting: cheap to clone, handed out by
/// [`KernelGuard::handle`]. It does not keep accounting alive: a read holds it only for
/// its own duration, and once the guard is dropped [`Kernel::stats`] is `None`. The
/// default handle (accounting off, or a `Control` built without a gateway) never has
/// figures.
#[derive(Clone, Debug, Default)]
pub struct Kernel {
    accounting: Weak<Accounting>,
}

impl Kernel {
    /// The kernel's figures, when the accounting this handle came from still runs.
    pub fn stats(&self) -> Option<KernelStats> {
        Some(self.accounting.upgrade()?.stats())
    }
}

/// Whether this binary carries the eBPF object, and if not, why.
pub fn built() -> Result<(), KernelError> {
    if OBJECT.is_empty() {
        Err(KernelError::NotBuilt(if BUILD_UNAVAILABLE.is_empty() {
            "no reason recorded"
        } else {
            BUILD_UNAVAILABLE
        }))
    } else {
        Ok(())
    }
}

/// Tags a freshly connected upstream socket with the deployment it serves. Call right
/// after connect, before the first request is written.
#[inline]
pub(crate) fn tag_upstream(socket: &impl AsRawFd, variant: Variant) {
    tag(socket.as_raw_fd(), variant_class(variant));
}

/// Tags a freshly accepted client socket as downstream.
#[inline]
pub(crate) fn tag_downstream(socket: &impl AsRawFd) {
    tag(socket.as_raw_fd(), CLASS_DOWNSTREAM);
}

#[inline]
fn tag(fd: i32, class: u32) {
    if sys::tag(fd, class).is_err() {
        TAG_FAILURES.fetch_add(1, Ordering::Relaxed);
    }
}

/// Kernel figures for one class of sockets (a variant's upstream sockets, or the
/// downstream client sockets).
#[derive(Clone, Debug)]
pub struct ClassStats {
    /// Counters summed over CPUs.
    pub counters: ClassCounters,
    /// TCP RTT samples in µs, as measured by the kernel.
    pub rtt: Histogram<u64>,
}

impl Default for ClassStats {
    fn default() -> Self {
        ClassStats {
            counters: ClassCounters::default(),
            rtt: new_histogram(),
        }
    }
}

/// The kernel's view of the gateway's TCP traffic, per class.
#[derive(Clone, Debug, Default)]
pub struct KernelStats {
    /// Upstream sockets, indexed by [`Variant::index`].
    pub variants: [ClassStats; VARIANT_COUNT],
    /// Client sockets the gateway accepted.
    pub downstream: ClassStats,
    /// Sockets that could not be tagged (not accounted).
    pub tag_failures: u64,
}

impl KernelStats {
    /// The upstream figures of `variant`.
    pub fn variant(&self, variant: Variant) -> &ClassStats {
        &self.variants[variant.index()]
    }
}

/// Loaded and attached kernel accounting. Dropping it detaches and cleans up.
struct Accounting {
    counters: PerCpuArray<MapData, ClassCounters>,
    rtt: Arc<Mutex<Vec<Histogram<u64>>>>,
    drain: Option<drain::Drain>,
    // Dropped in declaration order: the program (and its cgroup link) goes before the
    // process leaves the cgroup and the directory is removed.
    _tags: sys::TagMap,
    _ebpf: Ebpf,
    cgroup: cgroup::OwnCgroup,
    /// Last: the next accounting may start only once this one is fully undone.
    _claim: Claim,
}

/// This process's claim on kernel accounting ([`CLAIMED`]); released when dropped.
#[derive(Debug)]
struct Claim;

impl Claim {
    /// Claims accounting for this process, unless it is claimed already.
    fn take() -> Result<Claim, KernelError> {
        CLAIMED
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| Claim)
            .map_err(|_| {
                KernelError::Cgroup(
                    "kernel accounting already runs in this process (one gateway at a time)".into(),
                )
            })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        CLAIMED.store(false, Ordering::Release);
    }
}

impl fmt::Debug for Accounting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Accounting")
            .field("cgroup", &self.cgroup)
            .finish_non_exhaustive()
    }
}

impl Accounting {
    /// Loads the object, moves the process into its own cgroup, attaches, and starts the
    /// thread that drains RTT samples and eBPF logs. Every step is undone on failure.
    fn start() -> Result<Accounting, KernelError> {
        built()?;
        let claim = Claim::take()?;
        sys::check_privileges()?;
        let level = log_level();
        let mut ebpf = EbpfLoader::new()
            .override_global(aya_log::LEVEL, &level, false)
            .load(OBJECT)
            .map_err(|e| KernelError::load("loading the eBPF object", e))?;
        let program: &mut SockOps = ebpf
            .program_mut(SOCKOPS_PROGRAM)
            .ok_or_else(|| KernelError::load("finding the sock_ops program", SOCKOPS_PROGRAM))?
            .try_into()
            .map_err(|e| KernelError::load("finding the sock_ops program", e))?;
        program
            .load()
            .map_err(|e| KernelError::load("loading the sock_ops program", e))?;

        let cgroup = cgroup::OwnCgroup::create()?;
        program
            .attach(cgroup.dir().as_fd(), CgroupAttachMode::Single)
            .map_err(|e| KernelError::load("attaching the sock_ops program", e))?;
        cgroup.enter()?;

        let counters = match ebpf.take_map("CLASS_COUNTERS") {
            Some(m) => PerCpuArray::try_from(m)
                .map_err(|e| KernelError::load("opening CLASS_COUNTERS", e))?,
            None => return Err(KernelError::load("opening CLASS_COUNTERS", "not found")),
        };
        let samples = match ebpf.take_map("RTT_SAMPLES") {
            Some(m) => {
                RingBuf::try_from(m).map_err(|e| KernelError::load("opening RTT_SAMPLES", e))?
            }
            None => return Err(KernelError::load("opening RTT_SAMPLES", "not found")),
        };
        let tags = match ebpf.take_map("SOCK_TAGS") {
            Some(Map::SkStorage(data)) => sys::TagMap::activate(data),
            _ => {
                return Err(KernelError::load(
                    "opening SOCK_TAGS",
                    "not a socket storage",
                ));
            }
        };
        let logger = match aya_log::EbpfLogger::init(&mut ebpf) {
            Ok(l) => Some(l),
            Err(e) => {
                log::warn!("eBPF log messages will not be shown: {e}");
                None
            }
        };
        let rtt = Arc::new(Mutex::new(
            (0..CLASS_SLOTS)
                .map(|_| new_histogram())
                .collect::<Vec<_>>(),
        ));
        let drain = drain::Drain::spawn(samples, logger, Arc::clone(&rtt))
            .map_err(|e| KernelError::load("starting the ring buffer thread", e))?;
        log::info!(
            "kernel accounting on: sock_ops attached to cgroup {}",
            cgroup.path().display()
        );
        Ok(Accounting {
            counters,
            rtt,
            drain: Some(drain),
            _tags: tags,
            _ebpf: ebpf,
            cgroup,
            _claim: claim,
        })
    }

    /// Reads the counters (summed over CPUs) and copies the RTT histograms.
    fn stats(&self) -> KernelStats {
        if let Some(d) = &self.drain {
            d.sync();
        }
        let class = |slot: u32| {
            let mut s = ClassStats::default();
            if let Ok(per_cpu) = self.counters.get(&slot, 0) {
                for c in per_cpu.iter() {
                    s.counters.add(c);
                }
            }
            if let Ok(h) = self.rtt.lock()
                && let Some(h) = h.get(slot as usize)
            {
                s.rtt.clone_from(h);
            }
            s
        };
        KernelStats {
            variants: Variant::ALL.map(|v| class(variant_class(v))),
            downstream: class(CLASS_DOWNSTREAM),
            tag_failures: TAG_FAILURES.load(Ordering::Relaxed),
        }
    }

    /// The cgroup the gateway runs in while accounting.
    fn cgroup_path(&self) -> &std::path::Path {
        self.cgroup.path()
    }
}

impl Drop for Accounting {
    fn drop(&mut self) {
        // `_tags` stops tagging when dropped (first field dropped after this body); stop
        // the drain thread first so it does not poll maps that are going away.
        if let Some(d) = self.drain.take() {
            d.stop();
        }
        // The fields are dropped after this, in declaration order: tagging stops, the
        // program and its cgroup link go (`_ebpf`), then the process leaves the cgroup and the
        // directory is removed (`cgroup::OwnCgroup`'s drop logs that), and last the claim
        // is released so that another gateway of this process may start accounting.
    }
}

/// The most verbose level the gateway logs at, as aya-log's kernel-side filter: eBPF
/// programs skip writing records the gateway would drop anyway.
fn log_level() -> u8 {
    match log::max_level() {
        log::LevelFilter::Off => 0,
        log::LevelFilter::Error => 1,
        log::LevelFilter::Warn => 2,
        log::LevelFilter::Info => 3,
        log::LevelFilter::Debug => 4,
        log::LevelFilter::Trace => 5,
    }
}

impl crate::runtime::Gateway {
    /// The kernel's per-variant TCP figures, when kernel accounting runs.
    pub fn kernel_stats(&self) -> Option<KernelStats> {
        self.kernel.stats()
    }

    /// Whether kernel accounting runs, and where or why not.
    pub fn kernel_status(&self) -> &KernelStatus {
        self.kernel.status()
    }
}

impl ClassStats {
    /// One line for people: connections, bytes, segments and retransmits.
    pub fn summary(&self) -> String {
        let c = &self.counters;
        format!(
            "{} connections ({} closed), {} B sent (acked), {} B received, {} segments in, {} out, {} retransmitted",
            c.conns_opened,
            c.conns_closed,
            c.bytes_acked,
            c.bytes_received,
            c.segs_in,
            c.segs_out,
            c.retrans
        )
    }
}
