//! A reload as a diff (sozu's `ConfigState::diff`): the old configuration against the new
//! one gives a list of typed [`Change`]s, each applied to the runtime the way the matching
//! admin command is, then the new routing part is stored and published as one version.
//!
//! Server settings and the set of listeners need a restart: a change to the listeners
//! refuses the reload, a change to server settings is reported, not applied. Whoever
//! steers shares (the rollout controller) adjusts the new configuration before it gets
//! here; this module only applies what it is given.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;

use super::state::{State, check_version};
use super::store::StoreError;
use crate::config::value::format_percent;
use crate::config::{Config, RouteConfig};
use crate::control::{Control, ControlError};

/// One difference between two configurations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// A new route, with its canary share.
    AddRoute { route: String, ppm: u32 },
    /// A route's canary share changed (as `set percent` does).
    SetPercent { route: String, old: u32, new: u32 },
    /// Something else about a route changed (matching, deployments, variables, plan).
    UpdateRoute { route: String },
    /// A route is gone.
    RemoveRoute { route: String },
    /// Server settings changed; they apply after a restart.
    ServerSettings,
    /// A TLS stage's certificates were read again (new handshakes use them).
    Certificates { stage: String, count: usize },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::AddRoute { route, .. } => write!(f, "route {route}: added"),
            Change::SetPercent { route, old, new } => write!(
                f,
                "route {route}: canary percent {} -> {}",
                format_percent(*old),
                format_percent(*new)
            ),
            Change::UpdateRoute { route } => write!(f, "route {route}: updated"),
            Change::RemoveRoute { route } => write!(f, "route {route}: removed"),
            Change::ServerSettings => {
                f.write_str("server settings changed: they apply after a restart")
            }
            Change::Certificates { stage, count } => write!(
                f,
                "stage {stage}: {count} tls certificate(s) loaded; new handshakes use them"
            ),
        }
    }
}

/// What a reload did: its changes in order, and the version it published.
#[derive(Debug)]
pub(crate) struct Reloaded {
    /// The changes, in the order of the new file (removed routes last, then settings).
    pub(crate) changes: Vec<Change>,
    /// The configuration version after the reload.
    pub(crate) version: u64,
}

fn share(r: &RouteConfig) -> u32 {
    r.canary.as_ref().map_or(0, |c| c.ppm)
}

/// The changes that turn `old` into `new`. Pure: nothing is applied.
pub(crate) fn diff(old: &Config, new: &Config) -> Vec<Change> {
    let routes = |c: &Config| -> Vec<RouteConfig> {
        c.stages.iter().flat_map(|s| s.routes.clone()).collect()
    };
    let (old_routes, new_routes) = (routes(old), routes(new));
    let by_name: HashMap<&str, &RouteConfig> =
        old_routes.iter().map(|r| (r.name.as_str(), r)).collect();
    let mut changes = Vec::new();
    for r in &new_routes {
        match by_name.get(r.name.as_str()) {
            None => changes.push(Change::AddRoute {
                route: r.name.clone(),
                ppm: share(r),
            }),
            Some(o) if *o == r => {}
            Some(o) => {
                if share(o) != share(r) {
                    changes.push(Change::SetPercent {
                        route: r.name.clone(),
                        old: share(o),
                        new: share(r),
                    });
                }
                let (mut a, mut b) = ((*o).clone(), r.clone());
                for x in [&mut a, &mut b] {
                    if let Some(c) = &mut x.canary {
                        c.ppm = 0;
                    }
                }
                if a != b {
                    changes.push(Change::UpdateRoute {
                        route: r.name.clone(),
                    });
                }
            }
        }
    }
    for o in &old_routes {
        if !new_routes.iter().any(|r| r.name == o.name) {
            changes.push(Change::RemoveRoute {
                route: o.name.clone(),
            });
        }
    }
    let server = |c: &Config| {
        let s = &c.server;
        (
            s.timeouts.clone(),
            s.limits.clone(),
            s.workers,
            s.variant_header.clone(),
            s.log_format,
        )
    };
    if server(old) != server(new) {
        changes.push(Change::ServerSettings);
    }
    changes
}

/// The listen addresses bound now, when `new` asks for the same stages and listeners; a
/// file that asks for port 0 got a real port at startup, and the same file re-read still
/// says 0, which is not a change.
fn same_listeners(old: &Config, new: &Config) -> Result<Vec<SocketAddr>, ControlError> {
    let stages = |c: &Config| -> Vec<(String, SocketAddr)> {
        c.stages
            .iter()
            .map(|s| (s.name.clone(), s.listen))
            .collect()
    };
    let (old_stages, new_stages) = (stages(old), stages(new));
    let same = old_stages.len() == new_stages.len()
        && old_stages
            .iter()
            .zip(&new_stages)
            .all(|((on, oa), (nn, na))| {
                on == nn && (oa == na || (na.port() == 0 && na.ip() == oa.ip()))
            });
    if !same {
        return Err(ControlError::Reload(format!(
            "stages or listen addresses changed ({old_stages:?} -> {new_stages:?}); restart to apply"
        )));
    }
    Ok(old_stages.into_iter().map(|(_, a)| a).collect())
}

impl Control {
    /// Replaces the routing part of the configuration with `new`, if the version is
    /// still `expect` (when given), as the list of [`Change`]s [`diff`] finds; publishes
    /// the result as one new version. In fleet mode `new` is stored first.
    pub(crate) fn reload(
        &self,
        expect: Option<u64>,
        new: Config,
    ) -> Result<Reloaded, ControlError> {
        let mut st = self.lock();
        check_version(&st, expect)?;
        same_listeners(&st.config, &new)?;
        let version = match self.store() {
            None => st.version + 1,
            Some(store) => match store.commit(st.version, &new) {
                Ok(version) => version,
                Err(StoreError::Moved { config, version }) => {
                    self.adopt_locked(&mut st, *config, version)?;
                    return Err(ControlError::VersionMismatch {
                        expected: expect.unwrap_or(version.saturating_sub(1)),
                        current: version,
                    });
                }
                Err(StoreError::Unavailable(why)) => return Err(ControlError::Store(why)),
            },
        };
        let changes = self.replace_locked(&mut st, new, version)?;
        Ok(Reloaded {
            changes,
            version: st.version,
        })
    }

    /// Fleet mode: takes on `new`, the configuration another gateway stored as `version`
    /// (nothing happens when this gateway is there already). Returns the changes.
    pub(crate) fn adopt(&self, new: Config, version: u64) -> Result<Vec<Change>, ControlError> {
        let mut st = self.lock();
        self.adopt_locked(&mut st, new, version)
    }

    pub(super) fn adopt_locked(
        &self,
        st: &mut State,
        new: Config,
        version: u64,
    ) -> Result<Vec<Change>, ControlError> {
        if version <= st.version {
            return Ok(Vec::new());
        }
        let changes = self.replace_locked(st, new, version)?;
        for change in &changes {
            log::info!(target: "canarygate::audit", "fleet version {version}: {change}");
        }
        Ok(changes)
    }

    /// Replaces the routing configuration with `new` and publishes it as `version`.
    fn replace_locked(
        &self,
        st: &mut State,
        new: Config,
        version: u64,
    ) -> Result<Vec<Change>, ControlError> {
        let bound = same_listeners(&st.config, &new)?;
        // Every TLS file must load before anything changes.
        let tls = super::tls::TlsState::load(&new, Some(st.tls.resumption()))
            .map_err(ControlError::Reload)?;
        let mut changes = diff(&st.config, &new);
        for change in &changes {
            self.apply(st, change);
        }
        let mut stages = new.stages;
        for (stage, addr) in stages.iter_mut().zip(bound) {
            stage.listen = addr;
        }
        st.config.stages = stages;
        st.tls = tls;
        for (stage, count) in st.tls.stage_cert_counts(&st.config) {
            changes.push(Change::Certificates { stage, count });
        }
        // Kill switches follow the file; a share that became non-zero re-arms its switch.
        Self::configure_kill_switches(st);
        for change in &changes {
            let armed = match change {
                Change::AddRoute { route, ppm }
                | Change::SetPercent {
                    route, new: ppm, ..
                } => (*ppm > 0).then_some(route),
                _ => None,
            };
            if let Some(route) = armed {
                // A share set since (here or on another member) wins over a trip not
                // stored yet.
                st.unstored_trips.remove(route);
                if let Some(rt) = st.runtime.get(route) {
                    rt.kill.arm();
                }
            }
        }
        st.version = version;
        self.publish(st);
        Ok(changes)
    }

    /// Applies one change to the runtime (the configuration itself is stored whole).
    fn apply(&self, st: &mut State, change: &Change) {
        match change {
            Change::AddRoute { route, ppm } => self.add_runtime(st, route, *ppm),
            Change::SetPercent { route, new, .. } => {
                if let Some(rt) = st.runtime.get(route) {
                    rt.split.set_ppm(*new);
                }
            }
            Change::RemoveRoute { route } => {
                st.runtime.remove(route);
            }
            Change::UpdateRoute { .. } | Change::ServerSettings | Change::Certificates { .. } => {}
        }
    }
}
