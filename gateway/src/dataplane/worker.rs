//! What one worker owns, handed to every connection task on its thread: its id and
//! configuration, the published routing state and this worker's cached copy of it, its
//! metrics, random source, upstream pools and access-log queue. Lives behind an `Rc` on
//! one thread, so nothing here locks or is shared with other cores except through the
//! atomics of [`Shared`] and [`WorkerMetrics`].

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use super::accesslog::Queue;
use super::io::buf::BulkBufs;
use super::route::publish::Shared;
use super::route::snapshot::Held;
use super::route::split::Picker;
use super::upstream::Upstreams;
use crate::config::ServerConfig;
use crate::metrics::WorkerMetrics;

/// Everything one worker owns. Lives on its thread, behind an `Rc`.
#[derive(Debug)]
pub(crate) struct Worker {
    /// Index of the worker.
    pub(crate) id: usize,
    /// The server settings it was started with.
    pub(crate) config: Arc<ServerConfig>,
    /// The published routing snapshot.
    pub(crate) shared: Arc<Shared>,
    /// This worker's copy of the snapshot pointer and its generation.
    snap: RefCell<(u64, Rc<Held>)>,
    /// This worker's connection-level counters.
    pub(crate) metrics: Arc<WorkerMetrics>,
    /// This worker's random source for picks.
    pub(crate) picker: RefCell<Picker>,
    /// This worker's pools.
    pub(crate) upstreams: Upstreams,
    /// This worker's access-log queue, when logging is on.
    pub(crate) log: Option<Queue>,
    /// Large buffers lent to connections for the middle of long bodies.
    pub(crate) bulk: BulkBufs,
}

impl Worker {
    /// The current routing snapshot: one atomic load per call; the shared pointer is
    /// re-read only when the control plane published a new one.
    #[inline]
    pub(crate) fn snapshot(&self) -> Rc<Held> {
        let generation = self.shared.generation();
        let mut cached = self.snap.borrow_mut();
        if cached.0 != generation {
            *cached = (generation, Rc::new(Held(self.shared.load())));
        }
        Rc::clone(&cached.1)
    }

    /// Closes idle upstream connections that are due (see [`Upstreams::sweep`]) and
    /// publishes, per endpoint of the current snapshot, this worker's requests in flight
    /// and idle connections.
    pub(crate) fn sweep_pools(&self) {
        let snap = self.snapshot();
        let endpoints = snap.stages.iter().flat_map(|s| &s.routes).flat_map(|r| {
            r.plans
                .iter()
                .zip(gateway_common::Variant::ALL)
                .flat_map(|(p, v)| {
                    p.iter().flat_map(move |p| {
                        let tls = p.tls.as_ref().map_or(0, |t| t.id);
                        p.endpoints.iter().map(move |e| (&**e, v, tls))
                    })
                })
        });
        self.upstreams.sweep(self.id, endpoints);
    }

    /// Worker `id`'s state, reading routing state from `shared`.
    pub(crate) fn new(
        id: usize,
        config: Arc<ServerConfig>,
        shared: Arc<Shared>,
        metrics: Arc<WorkerMetrics>,
        log: Option<Queue>,
    ) -> Worker {
        let upstreams = Upstreams::new(config.limits.pool_max_idle, &config.timeouts);
        let snap = RefCell::new((shared.generation(), Rc::new(Held(shared.load()))));
        Worker {
            id,
            picker: RefCell::new(Picker::from_entropy(id as u64 + 1)),
            config,
            shared,
            snap,
            metrics,
            upstreams,
            log,
            bulk: BulkBufs::default(),
        }
    }
}
