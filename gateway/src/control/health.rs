//! Endpoint health, the control plane's side: one [`Entry`] per endpoint of each route's
//! deployment, holding what the operator set (ready, drain, maintenance), what the active
//! checker found ([`check`]) and what passive outlier detection decided ([`outlier`]),
//! and publishing the result as the one state word workers read
//! ([`crate::dataplane::upstream::health::Endpoint`]).
//!
//! Entries are keyed by route, deployment id and address, so they survive every
//! snapshot, a reload that keeps the endpoint, and a promotion (the canary's entries
//! become stable's). Lock order: the control lock, then [`Health`]'s, then an entry's.
//! Workers take none of them.

pub(crate) mod check;
pub(crate) mod outlier;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use gateway_common::{VARIANT_COUNT, Variant};

use crate::config::health::HealthConfig;
use crate::config::{Config, Deployment};
use crate::dataplane::upstream::UpTls;
use crate::dataplane::upstream::health::{DOWN, Endpoint, OUT, UP};

/// What the operator set on an endpoint (`set endpoint ROUTE ADDR ...`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admin {
    /// Takes traffic as its health allows.
    Ready,
    /// No new request; those in flight finish; idle connections are closed. Checks go on.
    Drain,
    /// Like drain, and checks stop.
    Maint,
}

impl Admin {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Admin::Ready => "ready",
            Admin::Drain => "drain",
            Admin::Maint => "maint",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Admin> {
        match text {
            "ready" => Some(Admin::Ready),
            "drain" => Some(Admin::Drain),
            "maint" | "maintenance" => Some(Admin::Maint),
            _ => None,
        }
    }
}

/// The last active check of an endpoint.
#[derive(Clone, Debug)]
pub(crate) struct LastCheck {
    pub(crate) at: SystemTime,
    /// The status of a passed HTTP check.
    pub(crate) status: Option<u16>,
    /// Why it failed (allocated only then).
    pub(crate) error: Option<String>,
    pub(crate) took: Duration,
}

/// Upper bounds (seconds) of the check-duration histogram buckets.
pub(crate) const CHECK_BUCKETS: [f64; 8] = [0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0];

/// Everything the control plane knows of one endpoint.
#[derive(Debug)]
pub(crate) struct Ctl {
    pub(crate) admin: Admin,
    /// The active check says it is up (true without a check).
    pub(crate) check_up: bool,
    pub(crate) successes: u32,
    pub(crate) failures: u32,
    pub(crate) last: Option<LastCheck>,
    /// Check durations: count per bucket of [`CHECK_BUCKETS`] (the last one is above),
    /// their sum in seconds, checks and failed checks.
    pub(crate) buckets: [u64; CHECK_BUCKETS.len() + 1],
    pub(crate) took_sum: f64,
    pub(crate) checks: u64,
    pub(crate) checks_failed: u64,
    pub(crate) ejection: outlier::Ejection,
}

impl Ctl {
    /// The state workers see.
    pub(crate) fn state(&self, now: Instant) -> u8 {
        if self.admin != Admin::Ready {
            OUT
        } else if !self.check_up || self.ejection.is_ejected(now) {
            DOWN
        } else {
            UP
        }
    }
}

/// One endpoint of one route's deployment.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) endpoint: Arc<Endpoint>,
    pub(crate) route: String,
    pub(crate) deployment: String,
    ctl: Mutex<Ctl>,
    /// The active checker's task, while one runs.
    checker: Mutex<Option<(check::Handle, check::Settings)>>,
}

impl Entry {
    fn new(route: &str, deployment: &str, addr: SocketAddr, workers: usize) -> Entry {
        Entry {
            endpoint: Arc::new(Endpoint::new(addr, workers)),
            route: route.to_owned(),
            deployment: deployment.to_owned(),
            ctl: Mutex::new(Ctl {
                admin: Admin::Ready,
                check_up: true,
                successes: 0,
                failures: 0,
                last: None,
                buckets: [0; CHECK_BUCKETS.len() + 1],
                took_sum: 0.0,
                checks: 0,
                checks_failed: 0,
                ejection: outlier::Ejection::default(),
            }),
            checker: Mutex::new(None),
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.endpoint.addr
    }

    /// The entry's control state; whoever changes it calls [`Entry::publish`] after.
    pub(crate) fn ctl(&self) -> MutexGuard<'_, Ctl> {
        self.ctl
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Publishes the state `ctl` implies to the workers.
    pub(crate) fn publish(&self, ctl: &Ctl, now: Instant) {
        self.endpoint.set_state(ctl.state(now));
    }

    fn stop_checker(&self) {
        if let Some((h, _)) = self
            .checker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            h.stop();
        }
    }
}

/// One route's deployment as health sees it.
#[derive(Debug)]
pub(crate) struct Group {
    pub(crate) route: String,
    pub(crate) variant: Variant,
    pub(crate) deployment: String,
    pub(crate) config: HealthConfig,
    /// One per distinct address, in the deployment's order.
    pub(crate) entries: Vec<Arc<Entry>>,
    /// Every endpoint that may serve is down: traffic goes to all of them.
    pub(crate) panic: bool,
    /// TLS toward the endpoints (`https://`): HTTP checks run over it.
    pub(crate) tls: Option<Arc<UpTls>>,
}

/// Every route's deployments' endpoint health.
#[derive(Debug)]
pub(crate) struct Health {
    workers: usize,
    groups: Mutex<Vec<Group>>,
    /// Set by [`Health::rebuild`]: the next tick reconciles the checkers.
    changed: std::sync::atomic::AtomicBool,
}

impl Health {
    /// Health for a gateway with `workers` workers; empty until the first
    /// [`Health::rebuild`].
    pub(crate) fn new(workers: usize) -> Health {
        Health {
            workers,
            groups: Mutex::new(Vec::new()),
            changed: std::sync::atomic::AtomicBool::new(true),
        }
    }

    pub(crate) fn groups(&self) -> MutexGuard<'_, Vec<Group>> {
        self.groups
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes the groups those of `config`, keeping every entry whose route, deployment
    /// id and address stay; returns per route the endpoint handles of each variant, in
    /// the deployments' endpoint order, for the snapshot. Checkers of entries that are
    /// gone are stopped; new ones are started by the next [`Health::tick`].
    pub(crate) fn rebuild(
        &self,
        config: &Config,
        tls: &dyn Fn(&Deployment) -> Option<Arc<UpTls>>,
    ) -> HashMap<String, [Vec<Arc<Endpoint>>; VARIANT_COUNT]> {
        let mut groups = self.groups();
        let mut old: HashMap<(String, String, SocketAddr), Arc<Entry>> = groups
            .drain(..)
            .flat_map(|g| g.entries)
            .map(|e| ((e.route.clone(), e.deployment.clone(), e.addr()), e))
            .collect();
        let mut handles = HashMap::new();
        for route in config.stages.iter().flat_map(|s| &s.routes) {
            let mut per_variant: [Vec<Arc<Endpoint>>; VARIANT_COUNT] = Default::default();
            let deployments = [
                Some(&route.stable),
                route.canary.as_ref().map(|c| &c.deployment),
            ];
            for (v, d) in Variant::ALL.into_iter().zip(deployments) {
                let Some(d) = d else { continue };
                let mut group = self.group(&route.name, v, d, &mut old);
                group.tls = tls(d);
                per_variant[v.index()] = d
                    .endpoints
                    .iter()
                    .filter_map(|a| group.entries.iter().find(|e| e.addr() == *a))
                    .map(|e| Arc::clone(&e.endpoint))
                    .collect();
                groups.push(group);
            }
            handles.insert(route.name.clone(), per_variant);
        }
        for gone in old.values() {
            gone.stop_checker();
        }
        self.changed
            .store(true, std::sync::atomic::Ordering::Release);
        handles
    }

    fn group(
        &self,
        route: &str,
        variant: Variant,
        d: &Deployment,
        old: &mut HashMap<(String, String, SocketAddr), Arc<Entry>>,
    ) -> Group {
        let mut entries: Vec<Arc<Entry>> = Vec::with_capacity(d.endpoints.len());
        let now = Instant::now();
        for addr in &d.endpoints {
            if entries.iter().any(|e| e.addr() == *addr) {
                continue;
            }
            let key = (route.to_owned(), d.id.clone(), *addr);
            let entry = old
                .remove(&key)
                .unwrap_or_else(|| Arc::new(Entry::new(route, &d.id, *addr, self.workers)));
            {
                let mut ctl = entry.ctl();
                if d.health.check.is_none() {
                    // Without a check there is nothing to say it is down.
                    ctl.check_up = true;
                }
                if d.health.outlier.is_none() {
                    ctl.ejection = outlier::Ejection::default();
                }
                entry.publish(&ctl, now);
            }
            entries.push(entry);
        }
        Group {
            route: route.to_owned(),
            variant,
            deployment: d.id.clone(),
            config: d.health.clone(),
            entries,
            panic: false,
            tls: None,
        }
    }

    /// Sets the operator state of `addr` in route `route` (both deployments, when both
    /// list it). Returns what was done, or why not.
    pub(crate) fn set_admin(
        &self,
        route: &str,
        addr: SocketAddr,
        admin: Admin,
    ) -> Result<String, String> {
        let groups = self.groups();
        let mut found = Vec::new();
        let now = Instant::now();
        for g in groups.iter().filter(|g| g.route == route) {
            for e in g.entries.iter().filter(|e| e.addr() == addr) {
                let mut ctl = e.ctl();
                ctl.admin = admin;
                e.publish(&ctl, now);
                found.push(format!("{} ({})", g.variant.as_str(), g.deployment));
            }
        }
        if !groups.iter().any(|g| g.route == route) {
            return Err(format!("no route named '{route}'"));
        }
        if found.is_empty() {
            return Err(format!(
                "route {route} has no endpoint {addr} (see: show endpoints {route})"
            ));
        }
        Ok(format!(
            "route {route}: endpoint {addr} of {} set to {}",
            found.join(" and "),
            admin.name()
        ))
    }

    /// Every ejection so far of `route`'s `variant` endpoints.
    pub(crate) fn ejections(&self, route: &str, variant: Variant) -> u64 {
        self.groups()
            .iter()
            .filter(|g| g.route == route && g.variant == variant)
            .flat_map(|g| &g.entries)
            .map(|e| e.ctl().ejection.total)
            .sum()
    }

    /// One pass of the control plane's health loop: start the checkers that should run,
    /// act on the workers' passive counters, bring back endpoints whose ejection ended,
    /// and log panic mode as it starts and ends.
    pub(crate) fn tick(&self, now: Instant) {
        let mut groups = self.groups();
        let reconcile = self
            .changed
            .swap(false, std::sync::atomic::Ordering::AcqRel);
        for g in groups.iter_mut() {
            if reconcile {
                for e in &g.entries {
                    check::ensure(e, g.config.check.as_ref(), g.tls.as_ref());
                }
            }
            if g.config.check.is_none() && g.config.outlier.is_none() && !g.panic {
                // Nothing can take an endpoint down but the operator (never panic).
                continue;
            }
            if let Some(o) = &g.config.outlier {
                outlier::evaluate(g, o, now);
            }
            let panic = panic_now(g, now);
            if panic != g.panic {
                g.panic = panic;
                if panic {
                    log::warn!(
                        "route {} {} ({}): every endpoint is down; panic mode: requests go to all of them",
                        g.route,
                        g.variant.as_str(),
                        g.deployment
                    );
                } else {
                    log::info!(
                        "route {} {} ({}): an endpoint is up again; panic mode over",
                        g.route,
                        g.variant.as_str(),
                        g.deployment
                    );
                }
            }
        }
    }
}

/// True when no endpoint of `g` is up but some may serve (panic mode, as the data path
/// applies it).
fn panic_now(g: &Group, now: Instant) -> bool {
    let mut down = false;
    for e in &g.entries {
        match e.ctl().state(now) {
            UP => return false,
            DOWN => down = true,
            _ => {}
        }
    }
    down
}

/// How often the health loop runs: the delay between a worker's counters crossing a
/// threshold and the ejection, and the precision of ejection ends.
pub(crate) const TICK: Duration = Duration::from_millis(100);

/// The control plane's health loop, for ever.
pub(crate) async fn run(health: Arc<Health>) {
    let mut every = tokio::time::interval(TICK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        health.tick(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RouteConfig;

    fn config(endpoints: &[u16]) -> Config {
        let addrs = endpoints
            .iter()
            .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
            .collect();
        let mut c = Config::single_route(([127, 0, 0, 1], 0).into(), addrs, Vec::new(), 0);
        c.stages[0].routes.push(RouteConfig::catch_all(
            "other",
            vec![([127, 0, 0, 1], 1).into()],
        ));
        c
    }

    #[test]
    fn operator_states_survive_a_rebuild_that_keeps_the_endpoint() {
        let h = Health::new(2);
        let handles = h.rebuild(&config(&[1, 2, 3]), &|_| None);
        assert_eq!(handles["default"][0].len(), 3);
        let two: SocketAddr = ([127, 0, 0, 1], 2).into();
        h.set_admin("default", two, Admin::Drain).unwrap();
        assert_eq!(handles["default"][0][1].state(), OUT);
        // A reload that changes another endpoint keeps this one's entry and state.
        let again = h.rebuild(&config(&[2, 3, 4]), &|_| None);
        assert!(Arc::ptr_eq(
            &again["default"][0][0],
            &handles["default"][0][1]
        ));
        assert_eq!(again["default"][0][0].state(), OUT);
        // The same address in another route is another entry.
        assert_eq!(again["other"][0][0].state(), UP);
        // Gone and back: a new entry, ready.
        h.rebuild(&config(&[3]), &|_| None);
        let back = h.rebuild(&config(&[2, 3]), &|_| None);
        assert_eq!(back["default"][0][0].state(), UP);
        assert!(h.set_admin("nope", two, Admin::Ready).is_err());
        assert!(
            h.set_admin("default", ([127, 0, 0, 1], 9).into(), Admin::Ready)
                .unwrap_err()
                .contains("no endpoint")
        );
    }
}
