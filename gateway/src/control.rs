//! The control plane's routing state: the authoritative configuration, the changes
//! operators make to it (admin commands, reloads), and publication to the workers as
//! immutable snapshots. Rollouts steer it from above (the rollout controller holds a
//! [`Control`]); nothing here knows of them.
//!
//! Writers (admin commands, reload, SIGHUP, the rollout controller) serialize on a mutex
//! that only the control plane takes; each change builds a new snapshot and swaps it in
//! with one atomic pointer store. Workers never lock: they compare a generation number on
//! each request and re-read the snapshot only when it changed.
//!
//! - [`state`]: the [`Control`] handle, its state and the admin mutations;
//! - [`edit`]: the pure per-route edits those mutations apply;
//! - [`reload`]: a reload as a diff of typed changes;
//! - [`killswitch`]: kill-switch settings, arming and recorded trips;
//! - [`health`]: endpoint health (active checks, outlier ejection, drain), published
//!   to the workers as one state word per endpoint;
//! - [`tls`]: loaded certificates and TLS configurations, swapped whole on reload;
//! - [`stats`]: merging worker figures;
//! - [`store`]: the shared home of the configuration in fleet mode (etcd), which every
//!   change goes through first when one is attached.

pub(crate) mod edit;
pub(crate) mod health;
pub(crate) mod killswitch;
pub(crate) mod reload;
pub(crate) mod state;
pub(crate) mod stats;
pub(crate) mod store;
pub(crate) mod tls;

pub(crate) use state::{Control, ControlError};
