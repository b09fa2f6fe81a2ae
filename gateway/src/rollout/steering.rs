//! Rollouts of a fleet (fleet mode): whose traffic the judge sees and where a rollout's
//! state is kept, so that one elected gateway runs every rollout on the whole fleet's
//! figures and another can take over. The trait lives here and is implemented by
//! `crate::fleet`, which sits above; without it the controller judges this process's
//! own figures and keeps rollouts in memory.

use gateway_common::VARIANT_COUNT;
use serde_json::Value;

use crate::kernel::KernelStats;
use crate::metrics::VariantStats;

/// A route's figures: per variant, and the kernel's (when accounted).
pub(crate) type Figures = ([VariantStats; VARIANT_COUNT], Option<KernelStats>);

/// A rollout's state as the fleet keeps it.
#[derive(Clone, Debug)]
pub(crate) struct Stored {
    /// The route.
    pub(crate) route: String,
    /// The rollout (`rollout::machine::record`) and the start of its window
    /// ([`Steering::mark`]): `{"rollout": .., "window": ..}`.
    pub(crate) value: Value,
    /// Its revision in the store.
    pub(crate) revision: u64,
}

/// The fleet's side of rollouts.
pub(crate) trait Steering: Send + Sync + std::fmt::Debug {
    /// True while this gateway is the one that judges and steps rollouts.
    fn leads(&self) -> bool;

    /// The fleet's figures of `route` so far: every member's, summed (they only grow
    /// while this process runs, members that left included).
    fn figures(&self, route: &str) -> Figures;

    /// Where every member's figures of `route` are now, to store as a window's start.
    fn mark(&self, route: &str) -> Value;

    /// The fleet's figures at `mark`, comparable with [`Steering::figures`] now.
    fn at_mark(&self, route: &str, mark: &Value) -> Figures;

    /// Which members' figures are in the window since `mark`: one line for verdicts, and
    /// the same as JSON (`contributed`, `missing`).
    fn coverage(&self, mark: &Value) -> (String, Value);

    /// Every rollout the fleet keeps.
    fn stored(&self) -> Vec<Stored>;

    /// Stores route `route`'s rollout if the store still has it at `base` (0: has none).
    /// Returns the new revision; may block (bounded).
    fn store(&self, route: &str, value: &Value, base: u64) -> Result<u64, String>;
}
