//! Where the routing configuration is kept when it is not this process's alone: fleet
//! mode keeps it in etcd and attaches a [`Store`] to [`super::Control`]. Every change
//! (admin command, rollout step, kill-switch trip) is then stored first, as the
//! successor of the version this gateway serves (compare-and-set), and applied here only
//! once the store took it; changes other gateways stored arrive through
//! [`super::Control::adopt`].
//!
//! The trait lives here, below its one implementation (`crate::fleet`), so that the
//! routing state never imports the fleet.

use crate::config::Config;

/// Why the store did not take a change.
#[derive(Debug)]
pub(crate) enum StoreError {
    /// The store is at another version: someone else changed the configuration first.
    /// Carries what the store has now, for this gateway to adopt.
    Moved {
        /// The store's configuration (routing part, this gateway's server settings).
        config: Box<Config>,
        /// Its version.
        version: u64,
    },
    /// The store cannot be reached or refused the write; nothing changed.
    Unavailable(String),
}

/// A shared home of the routing configuration.
pub(crate) trait Store: Send + Sync + std::fmt::Debug {
    /// Stores `config`'s routing part as the version after `base`, if the store is still
    /// at `base`. Returns the new version. May block (bounded by the store's timeout);
    /// called under the control lock, so it must never call back into `Control`.
    fn commit(&self, base: u64, config: &Config) -> Result<u64, StoreError>;

    /// What a reply that changed the store adds ("stored in fleet /cg/prod for its 3
    /// member(s)").
    fn scope(&self) -> String;

    /// The store's state, for `show fleet` and `/metrics`.
    fn status(&self) -> StoreStatus;
}

/// One member of the fleet, as the store last listed it.
#[derive(Clone, Debug)]
pub(crate) struct MemberStatus {
    /// Its name.
    pub(crate) name: String,
    /// Its process id.
    pub(crate) pid: u32,
    /// The configuration version it serves.
    pub(crate) version: u64,
    /// How long ago its last heartbeat was written (by its clock against ours).
    pub(crate) heartbeat_age: std::time::Duration,
    /// How long it has been running.
    pub(crate) uptime: std::time::Duration,
}

/// What `show fleet` and `/metrics` report about the store.
#[derive(Clone, Debug)]
pub(crate) struct StoreStatus {
    /// etcd URLs.
    pub(crate) endpoints: Vec<String>,
    /// The fleet's key prefix.
    pub(crate) prefix: String,
    /// This gateway's name.
    pub(crate) member: String,
    /// The member running rollouts, if known.
    pub(crate) leader: Option<String>,
    /// True when this gateway is that member.
    pub(crate) is_leader: bool,
    /// When etcd stopped answering (wall clock), for how long, and the last error.
    pub(crate) outage: Option<(std::time::SystemTime, std::time::Duration, String)>,
    /// The members as last listed.
    pub(crate) members: Vec<MemberStatus>,
    /// Changes refused because the store could not take them.
    pub(crate) refused: u64,
    /// Outages seen.
    pub(crate) outages: u64,
    /// The local copy, if one is kept.
    pub(crate) cache: Option<std::path::PathBuf>,
}
