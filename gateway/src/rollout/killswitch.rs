//! The kill switch as rollouts see it: the default a rollout turns on (the controller
//! sets it as the route's fallback while the rollout is active). The switch itself
//! (per-worker windows, tripping) is the data plane's
//! ([`crate::dataplane::route::killswitch`]); `show canary` renders it in `crate::admin`.

use crate::config::killswitch::KillSwitchConfig;

/// The kill switch a rollout turns on for a route without one of its own (unless its plan
/// says `kill-switch off`): it trips when more than half of a worker's last 20 canary
/// requests failed, so a canary that fails every request is stopped after at most 11
/// requests per worker, whatever the judge is doing.
pub(crate) const ROLLOUT_DEFAULT: KillSwitchConfig = KillSwitchConfig {
    window: 20,
    max_error_rate: 0.5,
    count_5xx: true,
    count_connect_failures: true,
};
