//! Merging the workers' figures into one [`Stats`]: each worker's per-route counters are
//! read once from the published snapshot and added both to that worker's totals and to
//! the route's, so the two views always agree.

use gateway_common::{VARIANT_COUNT, Variant};

use crate::control::Control;
use crate::metrics::{RouteStats, Stats, VariantStats};

impl Control {
    /// Figures of every worker and route.
    pub fn stats(&self) -> Stats {
        let snap = self.shared().load();
        let mut workers: Vec<_> = self.workers().iter().map(|w| w.snapshot()).collect();
        let mut routes = Vec::new();
        for stage in &snap.stages {
            for r in &stage.routes {
                let mut variants: [VariantStats; VARIANT_COUNT] = Default::default();
                for (i, w) in workers.iter_mut().enumerate() {
                    for ((worker, route), one) in w
                        .variants
                        .iter_mut()
                        .zip(variants.iter_mut())
                        .zip(r.metrics.worker_snapshot(i))
                    {
                        worker.add(&one);
                        route.add(&one);
                    }
                }
                for v in Variant::ALL {
                    variants[v.index()].ejections = self.health().ejections(&r.name, v);
                }
                routes.push(RouteStats {
                    stage: stage.name.clone(),
                    name: r.name.clone(),
                    canary_ppm: if r.has_canary() { r.split.ppm() } else { 0 },
                    deployments: [Variant::Stable, Variant::Canary]
                        .map(|v| r.plans[v.index()].as_ref().map(|p| p.deployment_id.clone())),
                    variants,
                });
            }
        }
        Stats { workers, routes }
    }
}
