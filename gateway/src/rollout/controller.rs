//! The rollout controller: owns every route's rollout (active and finished, in memory
//! only) and steers the routing state through [`Control`]'s methods, the same ones the
//! admin commands use. It never touches the data path.
//!
//! Lock order, everywhere: the controller's lock ([`Rollouts::lock`]) first, then
//! `Control`'s (taken inside each `Control` method, never held across calls). `Control`
//! never calls back up here, so the order cannot invert and there is no deadlock. Admin
//! commands that do not concern rollouts (`set percent`, `promote`, ...) go straight to
//! `Control`; the controller notices what they did on its next tick (a hand-made share
//! pauses a running rollout, a removed canary ends it).
//!
//! Reloads go through the controller ([`Rollouts::reload`]) rather than a hook in
//! `Control`: it reads the old configuration and its version, adjusts the new file
//! (shares of rollouts in progress, first steps of new ones), hands it to
//! `Control::reload` with that version (retrying if someone changed the configuration in
//! between, so the adjustment always matches what it replaces), then ends and starts
//! rollouts. That keeps `control` free of any rollout type and the lock order one-way.
//!
//! What a reload or a start does to rollouts:
//! - **reload** keeps every rollout: a rollout in progress keeps its share whatever the
//!   file's `percent` says; a rollout ends if the reload removes its route or canary or
//!   changes the canary's deployment id; a route whose canary is new or has a new id and
//!   that has a `rollout` plan starts a new rollout at the first step.
//! - **restart** forgets rollouts: rollouts started from the admin socket are gone and the
//!   canary gets the file's (or flag's) percent again; routes with a `rollout` plan and a
//!   canary start their rollout again from the first step. A restart never moves a canary
//!   further than the file says, and the judge starts over with fresh counters anyway.

mod command;
mod fleet;
mod reload;
mod tick;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::killswitch::ROLLOUT_DEFAULT;
use super::steering::{Figures, Steering};
use super::{Plan, Rollout};
use crate::config::RouteConfig;
use crate::control::{Control, ControlError};

/// How often the controller looks at rollouts and kill switches.
pub(crate) const TICK: Duration = Duration::from_millis(100);

/// Origin of rollouts the configuration file starts.
const FROM_FILE: &str = "config file";

/// Rollouts by route, active and finished.
type Book = BTreeMap<String, Rollout>;

/// The rollout controller: the rollouts behind their own mutex, and the routing state
/// they steer.
#[derive(Debug)]
pub(crate) struct Rollouts {
    book: Mutex<Book>,
    control: Arc<Control>,
    /// Fleet mode: the fleet's figures, leadership and stored rollouts.
    steering: Option<Arc<dyn Steering>>,
    /// Fleet mode: what this member knows of the stored rollouts (taken after `book`).
    journal: Mutex<fleet::Journal>,
}

impl Rollouts {
    /// Takes charge of `control`'s routes: every route with a plan and a canary starts its
    /// rollout at the first step. In fleet mode (`steering`) the fleet's stored rollouts
    /// are the rollouts, and the file's plans start with `rollout start ROUTE`.
    pub(crate) fn new(
        control: Arc<Control>,
        now: Instant,
        steering: Option<Arc<dyn Steering>>,
    ) -> Rollouts {
        let fleet = steering.is_some();
        let rollouts = Rollouts {
            book: Mutex::new(BTreeMap::new()),
            control,
            steering,
            journal: Mutex::new(fleet::Journal::default()),
        };
        if fleet {
            return rollouts;
        }
        {
            let mut book = rollouts.lock();
            let planned: Vec<(String, Plan)> = rollouts
                .control
                .config()
                .stages
                .iter()
                .flat_map(|s| &s.routes)
                .filter(|r| r.canary.is_some())
                .filter_map(|r| Some((r.name.clone(), r.rollout.clone()?)))
                .collect();
            for (name, plan) in planned {
                rollouts.control.set_share_quietly(&name, plan.steps[0]);
                rollouts.begin(&mut book, &name, plan, FROM_FILE, now);
            }
        }
        rollouts
    }

    /// Fleet mode: the fleet's figures, leadership and stored rollouts.
    pub(crate) fn steering(&self) -> Option<&Arc<dyn Steering>> {
        self.steering.as_ref()
    }

    /// The routing state the rollouts steer.
    pub(crate) fn control(&self) -> &Arc<Control> {
        &self.control
    }

    fn journal(&self) -> MutexGuard<'_, fleet::Journal> {
        self.journal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Route `name`'s figures for the judge: the fleet's in fleet mode, else this
    /// process's.
    fn figures(&self, name: &str) -> Option<Figures> {
        let counters = self.control.counters(name)?;
        Some(match &self.steering {
            Some(s) => s.figures(name),
            None => (counters, self.control.kernel_stats()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Book> {
        // Every change to a rollout is computed before it is stored.
        self.book
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Calls `f` with every route's configuration (only `route`'s when given), its rollout
    /// and its current share, under the controller lock; for `show rollout` and metrics.
    pub(crate) fn visit<T>(
        &self,
        route: Option<&str>,
        mut f: impl FnMut(&RouteConfig, Option<&Rollout>, u32) -> T,
    ) -> Result<Vec<T>, ControlError> {
        let book = self.lock();
        let routes = self.control.routes_with_share(route);
        if let (Some(name), true) = (route, routes.is_empty()) {
            return Err(ControlError::NoRoute(name.into()));
        }
        Ok(routes
            .iter()
            .map(|(r, ppm)| f(r, book.get(&r.name), *ppm))
            .collect())
    }

    /// A new rollout of route `name` whose first share is already set.
    fn begin(
        &self,
        book: &mut Book,
        name: &str,
        plan: Plan,
        origin: &str,
        now: Instant,
    ) -> Option<String> {
        let deployment = self.control.route(name)?.canary?.deployment.id;
        let (baseline, kernel) = self.figures(name)?;
        self.mark_window(name);
        let r = Rollout::new(plan, &deployment, origin, now, baseline, kernel);
        let line = format!(
            "route {name}: rollout of {deployment} started by {origin}: {}",
            r.plan.describe()
        );
        log::info!(target: "canarygate::audit", "{line}");
        book.insert(name.to_owned(), r);
        self.sync_kill_switches(book);
        Some(line)
    }

    /// Kill switches during rollouts: a route without a switch of its own gets
    /// [`ROLLOUT_DEFAULT`] while its rollout is active and its plan keeps the default on.
    fn sync_kill_switches(&self, book: &Book) {
        let fallback: HashMap<String, _> = book
            .iter()
            .filter(|(_, r)| r.phase.is_active() && r.plan.kill_switch)
            .map(|(n, _)| (n.clone(), ROLLOUT_DEFAULT))
            .collect();
        self.control.set_kill_switch_fallbacks(fallback);
    }

    /// Records kill-switch trips the workers made since the last look: the rollout (if
    /// any) fails, and the configuration's share becomes 0 as the workers already set it.
    /// Admin commands call this first, so what they show and change includes every trip.
    pub(crate) fn record_kill_switch_trips(&self) {
        let mut book = self.lock();
        self.record_trips_locked(&mut book);
    }

    fn record_trips_locked(&self, book: &mut Book) {
        for trip in self.control.record_kill_switch_trips() {
            if let Some(r) = book.get_mut(&trip.route) {
                r.kill_switch(format!("kill switch tripped ({})", trip.detail));
            }
        }
    }
}

/// Runs for ever on the control-plane runtime: a tick every [`TICK`].
pub(crate) async fn run(rollouts: Arc<Rollouts>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        rollouts.tick(Instant::now());
    }
}

#[cfg(test)]
mod tests;
