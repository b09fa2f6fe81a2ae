//! The authoritative routing state and every change that can be made to it. Each change
//! is checked, applied, counted in the configuration version, audit-logged and published.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use gateway_common::{VARIANT_COUNT, Variant};

use crate::config::value::format_percent;
use crate::config::{Canary, Config, Deployment, RouteConfig};
use crate::dataplane::route::publish::Shared;
use crate::dataplane::route::snapshot::{RouteSnap, Snapshot, StageSnap};
use crate::dataplane::route::split::Split;
use crate::kernel::{Kernel, KernelStats};
use crate::metrics::{RouteMetrics, RouteStats, Stats, VariantStats, WorkerMetrics};

// Rollouts and kill switches: `Control` methods that need this module's private state.
mod rollouts;

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
}

#[derive(Debug)]
struct RouteRuntime {
    id: usize,
    split: Arc<Split>,
    metrics: Arc<RouteMetrics>,
    kill: Arc<crate::rollout::KillSwitch>,
}

#[derive(Debug)]
struct State {
    config: Config,
    version: u64,
    runtime: HashMap<String, RouteRuntime>,
    next_id: usize,
    /// Rollouts by route, active and finished (kept in memory only; see `rollouts`).
    rollouts: BTreeMap<String, crate::rollout::Rollout>,
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
}

impl Control {
    /// Builds the first snapshot from `config` and publishes it; `kernel` is where the
    /// kernel's figures come from (`Kernel::default()`: none), read from the first
    /// rollout on, so it is given here.
    pub fn new(config: Config, workers: Vec<Arc<WorkerMetrics>>, kernel: Kernel) -> Control {
        let control = Control {
            state: Mutex::new(State {
                config,
                version: 1,
                runtime: HashMap::new(),
                next_id: 0,
                rollouts: BTreeMap::new(),
            }),
            shared: Arc::new(Shared::default()),
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
            control.start_configured_rollouts(&mut st, std::time::Instant::now());
        }
        control
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

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-changed: every change
        // is computed before it is stored.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn add_runtime(&self, st: &mut State, name: &str, ppm: u32) {
        let id = st.next_id;
        st.next_id += 1;
        st.runtime.insert(
            name.to_owned(),
            RouteRuntime {
                id,
                split: Arc::new(Split::new(ppm)),
                metrics: Arc::new(RouteMetrics::new(self.workers.len())),
                kill: Arc::new(crate::rollout::KillSwitch::new(self.workers.len())),
            },
        );
    }

    fn publish(&self, st: &State) {
        let stages = st
            .config
            .stages
            .iter()
            .map(|stage| {
                let routes = stage
                    .routes
                    .iter()
                    .filter_map(|r| {
                        let rt = st.runtime.get(&r.name)?;
                        Some(Arc::new(RouteSnap::build(
                            rt.id,
                            &stage.name,
                            r,
                            Arc::clone(&rt.split),
                            Arc::clone(&rt.metrics),
                            Arc::clone(&rt.kill),
                        )))
                    })
                    .collect();
                StageSnap::new(stage.name.clone(), routes)
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
        change: impl FnOnce(&mut RouteConfig, &Split) -> Result<String, ControlError>,
    ) -> Result<String, ControlError> {
        let mut st = self.lock();
        self.change_locked(&mut st, expect, name, change)
    }

    /// [`Control::change`] with the lock already held (rollouts decide and act under it).
    fn change_locked(
        &self,
        st: &mut State,
        expect: Option<u64>,
        name: &str,
        change: impl FnOnce(&mut RouteConfig, &Split) -> Result<String, ControlError>,
    ) -> Result<String, ControlError> {
        if let Some(expected) = expect
            && expected != st.version
        {
            return Err(ControlError::VersionMismatch {
                expected,
                current: st.version,
            });
        }
        let split = st
            .runtime
            .get(name)
            .map(|r| Arc::clone(&r.split))
            .ok_or_else(|| ControlError::NoRoute(name.into()))?;
        let route = st
            .config
            .stages
            .iter_mut()
            .flat_map(|s| s.routes.iter_mut())
            .find(|r| r.name == name)
            .ok_or_else(|| ControlError::NoRoute(name.into()))?;
        let mut updated = route.clone();
        let what = change(&mut updated, &split)?;
        *route = updated;
        st.version += 1;
        self.publish(st);
        Ok(format!("{what} (version {})", st.version))
    }

    /// Sets the canary share of `route`.
    pub fn set_percent(
        &self,
        expect: Option<u64>,
        route: &str,
        ppm: u32,
    ) -> Result<String, ControlError> {
        let what = self.change(expect, route, |r, split| set_route_percent(r, split, ppm))?;
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
        self.change(expect, route, |r, _| {
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
        self.change(expect, route, |r, _| {
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
        self.change(expect, route, |r, _| {
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

    /// Replaces the routing part of the configuration with `new` as a list of typed
    /// changes; returns one line per change. Server settings and the set of listeners
    /// need a restart; changes to them are reported, not applied.
    pub fn reload(&self, mut new: Config) -> Result<Vec<String>, ControlError> {
        let mut st = self.lock();
        let mut lines = Vec::new();
        let old_stages: Vec<(String, SocketAddr)> = st
            .config
            .stages
            .iter()
            .map(|s| (s.name.clone(), s.listen))
            .collect();
        let new_stages: Vec<(String, SocketAddr)> = new
            .stages
            .iter()
            .map(|s| (s.name.clone(), s.listen))
            .collect();
        // A file that asks for port 0 got a real port at startup; the same file re-read
        // still says 0, which is not a change.
        let same_listeners = old_stages.len() == new_stages.len()
            && old_stages
                .iter()
                .zip(&new_stages)
                .all(|((on, oa), (nn, na))| {
                    on == nn && (oa == na || (na.port() == 0 && na.ip() == oa.ip()))
                });
        if !same_listeners {
            return Err(ControlError::Reload(format!(
                "stages or listen addresses changed ({old_stages:?} -> {new_stages:?}); restart to apply"
            )));
        }
        // A rollout in progress keeps its share; a new canary with a plan starts one.
        let starts = Self::reload_rollouts_before(&st, &mut new, &mut lines);
        let old_routes: HashMap<String, RouteConfig> = st
            .config
            .stages
            .iter()
            .flat_map(|s| s.routes.iter().map(|r| (r.name.clone(), r.clone())))
            .collect();
        for stage in &new.stages {
            for r in &stage.routes {
                let ppm = r.canary.as_ref().map_or(0, |c| c.ppm);
                match old_routes.get(&r.name) {
                    None => {
                        self.add_runtime(&mut st, &r.name, ppm);
                        lines.push(format!("route {}: added", r.name));
                    }
                    Some(old) if old == r => {}
                    Some(old) => {
                        let old_ppm = old.canary.as_ref().map_or(0, |c| c.ppm);
                        if let Some(rt) = st.runtime.get(&r.name) {
                            rt.split.set_ppm(ppm);
                        }
                        if old_ppm != ppm {
                            lines.push(format!(
                                "route {}: canary percent {} -> {}",
                                r.name,
                                format_percent(old_ppm),
                                format_percent(ppm)
                            ));
                        }
                        let (mut a, mut b) = (old.clone(), r.clone());
                        for x in [&mut a, &mut b] {
                            if let Some(c) = &mut x.canary {
                                c.ppm = 0;
                            }
                        }
                        if a != b {
                            lines.push(format!("route {}: updated", r.name));
                        }
                    }
                }
            }
        }
        let new_names: Vec<&str> = new
            .stages
            .iter()
            .flat_map(|s| s.routes.iter().map(|r| r.name.as_str()))
            .collect();
        for name in old_routes.keys() {
            if !new_names.contains(&name.as_str()) {
                st.runtime.remove(name);
                lines.push(format!("route {name}: removed"));
            }
        }
        let server = |c: &Config| {
            let s = &c.server;
            (
                s.timeouts.clone(),
                s.limits.clone(),
                s.workers,
                s.variant_header.clone(),
            )
        };
        let server_changed = server(&st.config) != server(&new);
        if server_changed {
            lines.push("server settings changed: they apply after a restart".into());
        }
        let mut stages = new.stages;
        for (stage, (_, bound)) in stages.iter_mut().zip(&old_stages) {
            stage.listen = *bound;
        }
        st.config.stages = stages;
        self.reload_rollouts_after(&mut st, &old_routes, &starts, &mut lines);
        st.version += 1;
        self.publish(&st);
        lines.push(format!("reloaded (version {})", st.version));
        Ok(lines)
    }

    /// Figures of every worker and route.
    pub fn stats(&self) -> Stats {
        let snap = self.shared.load();
        let mut workers: Vec<_> = self.workers.iter().map(|w| w.snapshot()).collect();
        let mut routes = Vec::new();
        for stage in &snap.stages {
            for r in &stage.routes {
                // Each worker's figures are read once, and added to its worker's totals
                // and to the route's.
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

fn set_route_percent(r: &mut RouteConfig, split: &Split, ppm: u32) -> Result<String, ControlError> {
    let name = r.name.clone();
    let canary = r.canary.as_mut().ok_or(ControlError::NoCanary(name))?;
    let old = canary.ppm;
    canary.ppm = ppm;
    split.set_ppm(ppm);
    Ok(format!(
        "route {}: canary percent {} -> {}",
        r.name,
        format_percent(old),
        format_percent(ppm)
    ))
}

fn promote_route(r: &mut RouteConfig, split: &Split) -> Result<String, ControlError> {
    let name = r.name.clone();
    let canary = r.canary.take().ok_or(ControlError::NoCanary(name))?;
    let old = std::mem::replace(&mut r.stable.id, canary.deployment.id.clone());
    r.stable.endpoints = canary.deployment.endpoints;
    r.stable.variables.extend(canary.deployment.variables);
    split.set_ppm(0);
    Ok(format!(
        "route {}: promoted canary {} to stable (was {old})",
        r.name, r.stable.id
    ))
}

fn rollback_route(r: &mut RouteConfig, split: &Split) -> Result<String, ControlError> {
    let name = r.name.clone();
    let canary = r.canary.as_mut().ok_or(ControlError::NoCanary(name))?;
    let old = canary.ppm;
    canary.ppm = 0;
    split.set_ppm(0);
    Ok(format!(
        "route {}: rolled back, canary percent {} -> 0 (deployment {} kept)",
        r.name,
        format_percent(old),
        canary.deployment.id
    ))
}

fn check_var_name(key: &str) -> Result<(), ControlError> {
    if crate::config::template::is_var_name(key) {
        Ok(())
    } else {
        Err(ControlError::Invalid(format!(
            "'{key}' is not a variable name (letters, digits, _)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RouteConfig, StageConfig};

    fn control() -> Control {
        let mut route = RouteConfig::catch_all("api", vec!["127.0.0.1:1".parse().unwrap()]);
        route.stable.variables.insert("v".into(), "1".into());
        let cfg = Config {
            stages: vec![StageConfig {
                name: "s".into(),
                listen: "127.0.0.1:0".parse().unwrap(),
                routes: vec![route],
            }],
            ..Config::default()
        };
        Control::new(
            cfg,
            vec![Arc::new(WorkerMetrics::default())],
            Kernel::default(),
        )
    }

    #[test]
    fn aws_model_promote_and_rollback() {
        let c = control();
        assert_eq!(
            c.set_percent(None, "api", 10),
            Err(ControlError::NoCanary("api".into()))
        );
        c.set_deployment(None, "api", "v2", &["127.0.0.1:2".parse().unwrap()])
            .unwrap();
        c.set_percent(None, "api", 50_000).unwrap();
        c.set_var(None, "api", "v", "2").unwrap();
        assert_eq!(c.split("api").unwrap().ppm(), 50_000);
        c.rollback(None, "api").unwrap();
        assert_eq!(c.split("api").unwrap().ppm(), 0);
        let cfg = c.config();
        let route = &cfg.stages[0].routes[0];
        assert_eq!(
            route.canary.as_ref().unwrap().deployment.id,
            "v2",
            "rollback keeps the canary"
        );
        c.set_percent(None, "api", 50_000).unwrap();
        c.promote(None, "api").unwrap();
        let cfg = c.config();
        let route = &cfg.stages[0].routes[0];
        assert!(route.canary.is_none());
        assert_eq!(route.stable.id, "v2");
        assert_eq!(
            route.stable.endpoints,
            vec!["127.0.0.1:2".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(route.stable.variables["v"], "2");
        assert_eq!(c.split("api").unwrap().ppm(), 0);
    }

    #[test]
    fn compare_and_set() {
        let c = control();
        let v = c.version();
        c.set_deployment(Some(v), "api", "v2", &["127.0.0.1:2".parse().unwrap()])
            .unwrap();
        assert!(matches!(
            c.set_percent(Some(v), "api", 1),
            Err(ControlError::VersionMismatch { .. })
        ));
        assert!(c.set_percent(Some(v + 1), "api", 1).is_ok());
        assert_eq!(
            c.set_percent(None, "nope", 1),
            Err(ControlError::NoRoute("nope".into()))
        );
    }
}
