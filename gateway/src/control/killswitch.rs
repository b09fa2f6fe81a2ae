//! Kill switches as routing state: every route's switch gets its settings (the route's own
//! `kill_switch`, else a fallback its steerer set, else off), is re-armed when an operator
//! sets a share, and its trips are recorded in the configuration (share 0) here. Who sets
//! fallbacks and what a trip means to a rollout is the rollout controller's business.

use std::collections::HashMap;
use std::sync::Arc;

use super::edit::rollback_route;
use super::state::{State, route_config};
use crate::config::killswitch::KillSwitchConfig;
use crate::control::{Control, ControlError};
use crate::dataplane::route::killswitch::KillSwitch;

/// A trip the workers made, now recorded in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Trip {
    /// The route whose canary share the switch dropped to 0.
    pub(crate) route: String,
    /// The switch's description of the trip.
    pub(crate) detail: String,
}

impl Control {
    /// Applies every route's kill-switch settings (idempotent): the route's own
    /// `kill_switch` wins; without one, its fallback (if any).
    pub(super) fn configure_kill_switches(st: &State) {
        for r in st.config.stages.iter().flat_map(|s| &s.routes) {
            if let Some(rt) = st.runtime.get(&r.name) {
                let fallback = st.kill_fallback.get(&r.name);
                rt.kill.configure(r.kill_switch.as_ref().or(fallback));
            }
        }
    }

    /// Replaces the fallback settings (by route) of routes without a `kill_switch` of
    /// their own, and applies every route's settings.
    pub(crate) fn set_kill_switch_fallbacks(&self, fallback: HashMap<String, KillSwitchConfig>) {
        let mut st = self.lock();
        st.kill_fallback = fallback;
        Self::configure_kill_switches(&st);
    }

    /// Re-arms route `route`'s kill switch after an operator set its share to `ppm`. A
    /// trip not recorded yet is taken as seen: the operator's share, set after it, wins.
    pub(super) fn arm_kill_switch(&self, route: &str, ppm: u32) {
        let mut st = self.lock();
        if ppm > 0
            && let Some(rt) = st.runtime.get(route)
        {
            rt.kill.acknowledge();
            rt.kill.arm();
            st.unstored_trips.remove(route);
        }
    }

    /// Re-arms route `route`'s kill switch (a trip not recorded yet stays to be recorded).
    pub(crate) fn arm(&self, route: &str) {
        if let Some(rt) = self.lock().runtime.get(route) {
            rt.kill.arm();
        }
    }

    /// Records the kill-switch trips the workers made since the last look: the
    /// configuration's share becomes 0 as the workers already set it. Returns the trips so
    /// that whoever steers the route can react.
    pub(crate) fn record_kill_switch_trips(&self) -> Vec<Trip> {
        let mut st = self.lock();
        let switches: Vec<(String, Arc<KillSwitch>)> = st
            .runtime
            .iter()
            .map(|(n, rt)| (n.clone(), Arc::clone(&rt.kill)))
            .collect();
        let mut trips = Vec::new();
        for (name, kill) in switches {
            let fresh = kill.acknowledge() != 0;
            let detail = match (fresh, st.unstored_trips.get(&name)) {
                (true, _) => kill.last_trip().unwrap_or_default(),
                (false, Some(d)) => d.clone(),
                (false, None) => continue,
            };
            // The workers already set the share to 0; the configuration says so too. In
            // fleet mode a store that cannot take it now (etcd down) is tried again at
            // every look until it does, or until someone sets a share again.
            let what = match self.change_locked(&mut st, None, &name, rollback_route) {
                Ok(what) => {
                    st.unstored_trips.remove(&name);
                    what
                }
                Err(ControlError::Store(e)) => {
                    st.unstored_trips.insert(name.clone(), detail.clone());
                    if !fresh {
                        continue;
                    }
                    format!("{e}; tried again until the fleet takes it")
                }
                Err(e) => {
                    st.unstored_trips.remove(&name);
                    e.to_string()
                }
            };
            if fresh {
                log::warn!(target: "canarygate::audit", "route {name}: kill switch tripped ({detail}): {what}");
                trips.push(Trip {
                    route: name,
                    detail,
                });
            } else {
                log::warn!(target: "canarygate::audit", "route {name}: kill switch trip ({detail}) stored in the fleet now: {what}");
            }
        }
        trips
    }

    /// Route `route`'s kill switch and the settings it runs with.
    pub fn kill_switch(&self, route: &str) -> Option<(Arc<KillSwitch>, Option<KillSwitchConfig>)> {
        let st = self.lock();
        let rt = st.runtime.get(route)?;
        let own = route_config(&st.config, route).and_then(|r| r.kill_switch);
        Some((
            Arc::clone(&rt.kill),
            own.or_else(|| st.kill_fallback.get(route).copied()),
        ))
    }
}
