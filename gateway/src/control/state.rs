//! The control plane's handle, [`Control`]: the authoritative routing state (configuration,
//! version, per-route runtime: split, metrics, kill switch) and the admin commands that
//! change it. Each change is checked, applied, counted in the configuration version,
//! audit-logged and published as a new snapshot in one step under one mutex.
//!
//! It knows nothing of rollouts: the rollout controller (`rollout::controller`) drives it
//! through the same methods (and a few accessors) and takes its own lock first.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use gateway_common::VARIANT_COUNT;

use super::edit::{check_var_name, promote_route, rollback_route, set_route_percent};
use super::health::Health;
use super::store::{Store, StoreError};
use super::tls::TlsState;
use crate::config::killswitch::KillSwitchConfig;
use crate::config::{Canary, Config, Deployment, RouteConfig};
use crate::dataplane::route::killswitch::KillSwitch;
use crate::dataplane::route::publish::Shared;
use crate::dataplane::route::snapshot::{Live, RouteSnap, Snapshot, StageSnap};
use crate::dataplane::route::split::Split;
use crate::kernel::{Kernel, KernelStats};
use crate::metrics::{RouteMetrics, VariantStats, WorkerMetrics};

/// Why a change was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ControlError {
    /// No route has that name.
    #[error("no route named '{0}'")]
    NoRoute(String),
    /// The route has no canary deployment.
    #[error(
        "route '{0}' has no canary deployment (add one with: set canary {0} deployment <id> <endpoints>)"
    )]
    NoCanary(String),
    /// Someone else changed the configuration first.
    #[error("version mismatch: expected {expected}, current is {current}")]
    VersionMismatch {
        /// What the caller expected.
        expected: u64,
        /// What it is.
        current: u64,
    },
    /// The configuration file could not be used.
    #[error("reload failed: {0}")]
    Reload(String),
    /// A value is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// The shared store (fleet mode's etcd) did not take the change; nothing changed.
    #[error("{0}")]
    Store(String),
}

/// How many times a change without `expect` is tried again on the store's newer version
/// after another gateway changed the configuration first.
const STORE_RETRIES: usize = 3;

/// What a route has at run time besides its configuration; shared with the snapshots.
#[derive(Debug)]
pub(super) struct RouteRuntime {
    pub(super) id: usize,
    pub(super) split: Arc<Split>,
    pub(super) metrics: Arc<RouteMetrics>,
    pub(super) kill: Arc<KillSwitch>,
}

/// Everything behind the control lock.
#[derive(Debug)]
pub(super) struct State {
    pub(super) config: Config,
    pub(super) version: u64,
    pub(super) runtime: HashMap<String, RouteRuntime>,
    pub(super) next_id: usize,
    /// Kill-switch settings for routes without their own `kill_switch`, set by whoever
    /// steers them (the rollout controller while a rollout runs).
    pub(super) kill_fallback: HashMap<String, KillSwitchConfig>,
    /// Loaded certificates and TLS configurations of `config`.
    pub(super) tls: TlsState,
    /// Fleet mode: kill-switch trips (route -> detail) the store could not take yet.
    pub(super) unstored_trips: HashMap<String, String>,
}

/// The control plane's handle: state behind a mutex only it takes, plus what workers read.
#[derive(Debug)]
pub struct Control {
    state: Mutex<State>,
    shared: Arc<Shared>,
    workers: Vec<Arc<WorkerMetrics>>,
    /// The kernel's figures, for rollouts (the judge's kernel signals) and the admin
    /// server (`/metrics`, `show stats`).
    kernel: Kernel,
    /// Endpoint health of every route's deployments.
    health: Arc<Health>,
    /// Fleet mode: where every change is stored before it is applied.
    store: OnceLock<Arc<dyn Store>>,
}

impl Control {
    /// Builds the first snapshot from `config`, configures the routes' kill switches and
    /// publishes it; `kernel` is where the kernel's figures come from
    /// (`Kernel::default()`: none). Rollouts the file plans are started by the rollout
    /// controller built on top of it. Fails when a TLS file of `config` cannot be used.
    pub fn new(
        config: Config,
        workers: Vec<Arc<WorkerMetrics>>,
        kernel: Kernel,
    ) -> Result<Control, String> {
        let tls = TlsState::load(&config, None)?;
        let control = Control {
            state: Mutex::new(State {
                config,
                version: 1,
                runtime: HashMap::new(),
                next_id: 0,
                kill_fallback: HashMap::new(),
                tls,
                unstored_trips: HashMap::new(),
            }),
            shared: Arc::new(Shared::default()),
            health: Arc::new(Health::new(workers.len())),
            store: OnceLock::new(),
            workers,
            kernel,
        };
        {
            let mut st = control.lock();
            let routes: Vec<(String, u32)> = st
                .config
                .stages
                .iter()
                .flat_map(|s| {
                    s.routes
                        .iter()
                        .map(|r| (r.name.clone(), r.canary.as_ref().map_or(0, |c| c.ppm)))
                })
                .collect();
            for (name, ppm) in routes {
                control.add_runtime(&mut st, &name, ppm);
            }
            control.publish(&st);
            Self::configure_kill_switches(&st);
        }
        Ok(control)
    }

    /// Fleet mode: from now on every change is stored in `store` first; `version` is the
    /// store's version of the configuration this gateway started with.
    pub(crate) fn attach_store(&self, store: Arc<dyn Store>, version: u64) {
        let mut st = self.lock();
        if self.store.set(store).is_ok() {
            st.version = version;
            self.publish(&st);
        }
    }

    /// The store changes go through, in fleet mode.
    pub(crate) fn store(&self) -> Option<&Arc<dyn Store>> {
        self.store.get()
    }

    /// Every worker's figures, in worker order.
    pub(super) fn workers(&self) -> &[Arc<WorkerMetrics>] {
        &self.workers
    }

    /// Endpoint health.
    pub(crate) fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// What workers read.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The kernel's figures, when kernel accounting runs.
    pub fn kernel_stats(&self) -> Option<KernelStats> {
        self.kernel.stats()
    }

    /// Current configuration version.
    pub fn version(&self) -> u64 {
        self.lock().version
    }

    /// A copy of the current configuration.
    pub fn config(&self) -> Config {
        self.lock().config.clone()
    }

    /// The split of route `name`.
    pub fn split(&self, name: &str) -> Option<Arc<Split>> {
        self.lock().runtime.get(name).map(|r| Arc::clone(&r.split))
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-changed: every change
        // is computed before it is stored.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn add_runtime(&self, st: &mut State, name: &str, ppm: u32) {
        let id = st.next_id;
        st.next_id += 1;
        st.runtime.insert(
            name.to_owned(),
            RouteRuntime {
                id,
                split: Arc::new(Split::new(ppm)),
                metrics: Arc::new(RouteMetrics::new(self.workers.len())),
                kill: Arc::new(KillSwitch::new(self.workers.len())),
            },
        );
    }

    pub(super) fn publish(&self, st: &State) {
        let mut endpoints = self.health.rebuild(&st.config, &|d| st.tls.plan(d));
        let stages = st
            .config
            .stages
            .iter()
            .enumerate()
            .map(|(i, stage)| {
                let routes = stage
                    .routes
                    .iter()
                    .filter_map(|r| {
                        let rt = st.runtime.get(&r.name)?;
                        let live = Live {
                            split: Arc::clone(&rt.split),
                            metrics: Arc::clone(&rt.metrics),
                            kill: Arc::clone(&rt.kill),
                            endpoints: endpoints.remove(&r.name).unwrap_or_default(),
                            tls: [
                                st.tls.plan(&r.stable),
                                r.canary.as_ref().and_then(|c| st.tls.plan(&c.deployment)),
                            ],
                        };
                        Some(Arc::new(RouteSnap::build(rt.id, &stage.name, r, live)))
                    })
                    .collect();
                let tls = st.tls.stage(i).map(|t| Arc::clone(&t.config));
                StageSnap::new(stage.name.clone(), routes, tls, stage.http2)
            })
            .collect();
        self.shared.publish(Snapshot {
            version: st.version,
            stages,
        });
    }

    /// Applies `change` to route `name` under the version check, then publishes.
    fn change(
        &self,
        expect: Option<u64>,
        name: &str,
        change: impl Fn(&mut RouteConfig) -> Result<String, ControlError>,
    ) -> Result<String, ControlError> {
        let mut st = self.lock();
        self.change_locked(&mut st, expect, name, change)
    }

    /// [`Control::change`] with the lock already held (a kill-switch trip acts under it).
    /// In fleet mode the changed configuration is stored first; when another gateway
    /// changed it in between, this one adopts the store's version and, unless the caller
    /// expected a version, makes its change again on top of it.
    pub(super) fn change_locked(
        &self,
        st: &mut State,
        expect: Option<u64>,
        name: &str,
        change: impl Fn(&mut RouteConfig) -> Result<String, ControlError>,
    ) -> Result<String, ControlError> {
        check_version(st, expect)?;
        let mut tries = 0;
        loop {
            let split = st
                .runtime
                .get(name)
                .map(|r| Arc::clone(&r.split))
                .ok_or_else(|| ControlError::NoRoute(name.into()))?;
            let mut candidate = st.config.clone();
            let route = route_config_mut(&mut candidate, name)
                .ok_or_else(|| ControlError::NoRoute(name.into()))?;
            let what = change(route)?;
            let ppm = route.canary.as_ref().map_or(0, |c| c.ppm);
            let Some(store) = self.store.get() else {
                st.config = candidate;
                st.version += 1;
                split.set_ppm(ppm);
                self.publish(st);
                return Ok(format!("{what} (version {})", st.version));
            };
            match store.commit(st.version, &candidate) {
                Ok(version) => {
                    st.config = candidate;
                    st.version = version;
                    split.set_ppm(ppm);
                    self.publish(st);
                    return Ok(format!(
                        "{what} (version {}, {})",
                        st.version,
                        store.scope()
                    ));
                }
                Err(StoreError::Moved { config, version }) => {
                    self.adopt_locked(st, *config, version)?;
                    if let Some(expected) = expect {
                        return Err(ControlError::VersionMismatch {
                            expected,
                            current: version,
                        });
                    }
                    tries += 1;
                    if tries > STORE_RETRIES {
                        return Err(ControlError::Store(format!(
                            "fleet: the configuration kept changing under this change ({tries} tries); try again"
                        )));
                    }
                }
                Err(StoreError::Unavailable(why)) => return Err(ControlError::Store(why)),
            }
        }
    }

    /// Sets the canary share of `route`.
    pub fn set_percent(
        &self,
        expect: Option<u64>,
        route: &str,
        ppm: u32,
    ) -> Result<String, ControlError> {
        let what = self.change(expect, route, |r| set_route_percent(r, ppm))?;
        // A share set again re-arms a tripped kill switch.
        self.arm_kill_switch(route, ppm);
        Ok(what)
    }

    /// Sets a canary stage-variable override.
    pub fn set_var(
        &self,
        expect: Option<u64>,
        route: &str,
        key: &str,
        value: &str,
    ) -> Result<String, ControlError> {
        check_var_name(key)?;
        self.change(expect, route, |r| {
            let name = r.name.clone();
            let canary = r.canary.as_mut().ok_or(ControlError::NoCanary(name))?;
            canary
                .deployment
                .variables
                .insert(key.to_owned(), value.to_owned());
            Ok(format!("route {}: canary variable {key} = {value}", r.name))
        })
    }

    /// Removes a canary stage-variable override.
    pub fn del_var(
        &self,
        expect: Option<u64>,
        route: &str,
        key: &str,
    ) -> Result<String, ControlError> {
        self.change(expect, route, |r| {
            let name = r.name.clone();
            let canary = r.canary.as_mut().ok_or(ControlError::NoCanary(name))?;
            if canary.deployment.variables.remove(key).is_none() {
                return Err(ControlError::Invalid(format!(
                    "route {}: canary has no variable override '{key}'",
                    r.name
                )));
            }
            Ok(format!("route {}: canary variable {key} removed", r.name))
        })
    }

    /// Creates or replaces the canary deployment (share and overrides are kept).
    pub fn set_deployment(
        &self,
        expect: Option<u64>,
        route: &str,
        id: &str,
        endpoints: &[SocketAddr],
    ) -> Result<String, ControlError> {
        if endpoints.is_empty() {
            return Err(ControlError::Invalid(
                "a deployment needs at least one endpoint".into(),
            ));
        }
        self.change(expect, route, |r| {
            let list = endpoints
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",");
            match &mut r.canary {
                Some(c) => {
                    id.clone_into(&mut c.deployment.id);
                    c.deployment.endpoints = endpoints.to_vec();
                }
                None => {
                    r.canary = Some(Canary {
                        deployment: Deployment {
                            id: id.to_owned(),
                            endpoints: endpoints.to_vec(),
                            variables: BTreeMap::new(),
                            // The same service: its endpoints are watched the same way.
                            health: r.stable.health.clone(),
                            tls: r.stable.tls.clone(),
                            protocol: r.stable.protocol,
                        },
                        ppm: 0,
                    });
                }
            }
            Ok(format!(
                "route {}: canary deployment {id} at {list}",
                r.name
            ))
        })
    }

    /// Makes the canary the stable deployment (id, endpoints, variables with the
    /// overrides applied) and removes the canary: every request goes to it at once.
    pub fn promote(&self, expect: Option<u64>, route: &str) -> Result<String, ControlError> {
        self.change(expect, route, promote_route)
    }

    /// Sends nothing more to the canary, at once; the canary deployment is kept.
    pub fn rollback(&self, expect: Option<u64>, route: &str) -> Result<String, ControlError> {
        self.change(expect, route, rollback_route)
    }

    /// Fails unless the configuration version is `expect` (when given).
    pub fn check_version(&self, expect: Option<u64>) -> Result<(), ControlError> {
        check_version(&self.lock(), expect)
    }

    /// A copy of the configuration and its version, read together.
    pub(crate) fn config_and_version(&self) -> (Config, u64) {
        let st = self.lock();
        (st.config.clone(), st.version)
    }

    /// A copy of route `name`'s configuration.
    pub(crate) fn route(&self, name: &str) -> Option<RouteConfig> {
        route_config(&self.lock().config, name).cloned()
    }

    /// Every route's configuration (only `name`'s when given) with its current share.
    pub(crate) fn routes_with_share(&self, name: Option<&str>) -> Vec<(RouteConfig, u32)> {
        let st = self.lock();
        st.config
            .stages
            .iter()
            .flat_map(|s| &s.routes)
            .filter(|r| name.is_none_or(|n| n == r.name))
            .map(|r| {
                let ppm = st.runtime.get(&r.name).map_or(0, |rt| rt.split.ppm());
                (r.clone(), ppm)
            })
            .collect()
    }

    /// Route `name`'s figures so far, summed over workers.
    pub(crate) fn counters(&self, name: &str) -> Option<[VariantStats; VARIANT_COUNT]> {
        let mut counters = self
            .lock()
            .runtime
            .get(name)
            .map(|rt| rt.metrics.snapshot())?;
        for v in gateway_common::Variant::ALL {
            counters[v.index()].ejections = self.health.ejections(name, v);
        }
        Some(counters)
    }

    /// Sets route `name`'s canary share as a step of a plan does: a counted, published
    /// change that re-arms the kill switch (a trip not recorded yet stays to be recorded).
    pub(crate) fn set_step(
        &self,
        expect: Option<u64>,
        name: &str,
        ppm: u32,
    ) -> Result<String, ControlError> {
        let mut st = self.lock();
        let what = self.change_locked(&mut st, expect, name, |r| set_route_percent(r, ppm))?;
        if let Some(rt) = st.runtime.get(name) {
            rt.kill.arm();
        }
        Ok(what)
    }

    /// Sets a share without counting a version (start-up counts its own) and arms the
    /// kill switch.
    pub(crate) fn set_share_quietly(&self, name: &str, ppm: u32) {
        let mut st = self.lock();
        if let Some(c) = route_config_mut(&mut st.config, name).and_then(|r| r.canary.as_mut()) {
            c.ppm = ppm;
        }
        if let Some(rt) = st.runtime.get(name) {
            rt.split.set_ppm(ppm);
            rt.kill.arm();
        }
    }
}

/// Fails unless `st` is at version `expect` (when given).
pub(super) fn check_version(st: &State, expect: Option<u64>) -> Result<(), ControlError> {
    match expect {
        Some(expected) if expected != st.version => Err(ControlError::VersionMismatch {
            expected,
            current: st.version,
        }),
        _ => Ok(()),
    }
}

/// Route `name` of `config`.
pub(super) fn route_config<'a>(config: &'a Config, name: &str) -> Option<&'a RouteConfig> {
    config
        .stages
        .iter()
        .flat_map(|s| &s.routes)
        .find(|r| r.name == name)
}

fn route_config_mut<'a>(config: &'a mut Config, name: &str) -> Option<&'a mut RouteConfig> {
    config
        .stages
        .iter_mut()
        .flat_map(|s| &mut s.routes)
        .find(|r| r.name == name)
}

#[cfg(test)]
mod tests;
