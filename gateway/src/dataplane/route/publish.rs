//! How routing snapshots reach the workers: the control plane publishes a new
//! [`Snapshot`] with one atomic pointer swap and bumps a generation; a worker compares the
//! generation on each request and re-reads the pointer only when it changed. The shutdown
//! flag travels the same way.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arc_swap::ArcSwap;

use super::snapshot::Snapshot;

/// What workers read: the current snapshot and a generation counter.
#[derive(Debug, Default)]
pub struct Shared {
    snapshot: ArcSwap<Snapshot>,
    generation: AtomicU64,
    /// Set once at shutdown: workers answer what they have with `Connection: close`.
    draining: AtomicBool,
    /// Set once when another process took the listening sockets over: workers stop
    /// accepting (without shutting the sockets, which are that process's too).
    handed_over: AtomicBool,
}

impl Shared {
    /// Generation of the current snapshot; changes with every publication.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The current snapshot.
    pub fn load(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// True once the gateway is shutting down gracefully.
    #[inline]
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Tells every worker to close each client connection after its current response.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// False once the listening sockets belong to a successor (binary upgrade).
    #[inline]
    pub fn accepting(&self) -> bool {
        !self.handed_over.load(Ordering::Relaxed)
    }

    /// Tells every worker to stop accepting: a successor accepts on the same sockets.
    pub fn stop_accepting(&self) {
        self.handed_over.store(true, Ordering::Relaxed);
    }

    /// Publishes `snapshot` to every worker.
    pub fn publish(&self, snapshot: Snapshot) {
        self.snapshot.store(Arc::new(snapshot));
        self.generation.fetch_add(1, Ordering::Release);
    }
}
