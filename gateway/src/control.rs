//! The control plane: the authoritative routing state, the changes operators make to it
//! (admin commands, reloads), and publication to the workers as immutable snapshots.
//!
//! Writers (admin commands, reload, SIGHUP) serialize on a mutex that only the control
//! plane takes; each change builds a new [`snapshot::Snapshot`] and swaps it in with one
//! atomic pointer store. Workers never lock: they compare a generation number on each
//! request and re-read the snapshot only when it changed.

pub mod snapshot;
pub mod state;
pub mod template;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arc_swap::ArcSwap;

pub use snapshot::{Held, Plan, RouteSnap, Snapshot, StageSnap};
pub use state::{Control, ControlError};

/// What workers read: the current snapshot and a generation counter.
#[derive(Debug, Default)]
pub struct Shared {
    snapshot: ArcSwap<Snapshot>,
    generation: AtomicU64,
    /// Set once at shutdown: workers answer what they have with `Connection: close`.
    draining: AtomicBool,
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

    /// Publishes `snapshot` to every worker.
    pub fn publish(&self, snapshot: Snapshot) {
        self.snapshot.store(Arc::new(snapshot));
        self.generation.fetch_add(1, Ordering::Release);
    }
}
