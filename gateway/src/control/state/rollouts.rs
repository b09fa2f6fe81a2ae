//! Rollouts and kill switches, as `Control` methods that act under the control-plane lock:
//! the admin `rollout ...` commands, the controller's tick (judge due steps, apply the
//! verdict, notice kill-switch trips and hand-made changes), and what a reload or a
//! start does to rollouts.
//!
//! Rollout state lives in memory, next to the configuration it steers:
//! - **reload** keeps every rollout: a rollout in progress keeps its share whatever the
//!   file's `percent` says; a rollout ends if the reload removes its route or canary or
//!   changes the canary's deployment id; a route whose canary is new or has a new id and
//!   that has a `rollout` plan starts a new rollout at the first step.
//! - **restart** forgets rollouts: rollouts started from the admin socket are gone and the
//!   canary gets the file's (or flag's) percent again; routes with a `rollout` plan and a
//!   canary start their rollout again from the first step. A restart never moves a canary
//!   further than the file says, and the judge starts over with fresh counters anyway.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use gateway_common::Variant;
use serde_json::Value;

use super::{Control, ControlError, State, promote_route, rollback_route, set_route_percent};
use crate::config::value::format_percent;
use crate::config::{Config, RouteConfig};
use crate::judge::{KernelWindow, Sample, histogram_sample, judge};
use crate::kernel::KernelStats;
use crate::rollout::killswitch::ROLLOUT_DEFAULT;
use crate::rollout::{Action, KillSwitch, Phase, Plan, Rollout, RolloutCommand, show};

/// Origin of rollouts the configuration file starts.
const FROM_FILE: &str = "config file";

fn route_config<'a>(st: &'a State, name: &str) -> Option<&'a RouteConfig> {
    st.config
        .stages
        .iter()
        .flat_map(|s| &s.routes)
        .find(|r| r.name == name)
}

fn route_config_mut<'a>(st: &'a mut State, name: &str) -> Option<&'a mut RouteConfig> {
    st.config
        .stages
        .iter_mut()
        .flat_map(|s| &mut s.routes)
        .find(|r| r.name == name)
}

/// The kernel's figures between two snapshots, when kernel accounting runs.
fn kernel_window(
    before: Option<&KernelStats>,
    after: Option<&KernelStats>,
) -> Option<KernelWindow> {
    let (before, after) = (before?, after?);
    let mut w = KernelWindow::default();
    for v in Variant::ALL {
        let (b, a) = (before.variant(v), after.variant(v));
        w.segs_out[v.index()] = a.counters.segs_out.saturating_sub(b.counters.segs_out);
        w.retrans[v.index()] = a.counters.retrans.saturating_sub(b.counters.retrans);
        let mut rtt = a.rtt.clone();
        if rtt.subtract(&b.rtt).is_err() {
            rtt = a.rtt.clone();
        }
        w.rtt[v.index()] = histogram_sample(&rtt);
    }
    Some(w)
}

impl Control {
    /// Applies every route's kill-switch settings (idempotent).
    /// A route's own `kill_switch` wins; without one, an active rollout whose plan keeps
    /// the default on gets [`ROLLOUT_DEFAULT`].
    fn configure_kill_switches(st: &State) {
        for r in st.config.stages.iter().flat_map(|s| &s.routes) {
            if let Some(rt) = st.runtime.get(&r.name) {
                let during_rollout = st
                    .rollouts
                    .get(&r.name)
                    .filter(|x| x.phase.is_active() && x.plan.kill_switch)
                    .map(|_| ROLLOUT_DEFAULT);
                rt.kill
                    .configure(r.kill_switch.as_ref().or(during_rollout.as_ref()));
            }
        }
    }

    /// Sets a share without counting a version (start-up and reload count their own).
    fn set_share_quietly(st: &mut State, name: &str, ppm: u32) {
        if let Some(c) = route_config_mut(st, name).and_then(|r| r.canary.as_mut()) {
            c.ppm = ppm;
        }
        if let Some(rt) = st.runtime.get(name) {
            rt.split.set_ppm(ppm);
            rt.kill.arm();
        }
    }

    /// A new rollout of route `name` whose first share is already set.
    fn begin(
        &self,
        st: &mut State,
        name: &str,
        plan: Plan,
        origin: &str,
        now: Instant,
    ) -> Option<String> {
        let deployment = route_config(st, name)?
            .canary
            .as_ref()?
            .deployment
            .id
            .clone();
        let rt = st.runtime.get(name)?;
        let r = Rollout::new(
            plan,
            &deployment,
            origin,
            now,
            rt.metrics.snapshot(),
            self.kernel.stats(),
        );
        let line = format!(
            "route {name}: rollout of {deployment} started by {origin}: {}",
            r.plan.describe()
        );
        log::info!(target: "canarygate::audit", "{line}");
        st.rollouts.insert(name.to_owned(), r);
        Self::configure_kill_switches(st);
        Some(line)
    }

    /// At start-up: kill switches configured, and every route with a plan and a canary
    /// starts its rollout at the first step.
    pub(super) fn start_configured_rollouts(&self, st: &mut State, now: Instant) {
        Self::configure_kill_switches(st);
        let planned: Vec<(String, Plan)> = st
            .config
            .stages
            .iter()
            .flat_map(|s| &s.routes)
            .filter(|r| r.canary.is_some())
            .filter_map(|r| Some((r.name.clone(), r.rollout.clone()?)))
            .collect();
        for (name, plan) in planned {
            Self::set_share_quietly(st, &name, plan.steps[0]);
            self.begin(st, &name, plan, FROM_FILE, now);
        }
    }

    /// Re-arms route `route`'s kill switch after an operator set its share to `ppm`. A
    /// trip the controller has not recorded yet is taken as seen: the operator's share,
    /// set after it, wins.
    pub(super) fn arm_kill_switch(&self, route: &str, ppm: u32) {
        if ppm > 0
            && let Some(rt) = self.lock().runtime.get(route)
        {
            rt.kill.acknowledge();
            rt.kill.arm();
        }
    }

    /// Before a reload's diff: rollouts in progress keep their share; new canaries with a
    /// plan get their first step. Returns the routes whose rollout starts.
    pub(super) fn reload_rollouts_before(
        st: &State,
        new: &mut Config,
        lines: &mut Vec<String>,
    ) -> Vec<String> {
        let mut starts = Vec::new();
        for r in new.stages.iter_mut().flat_map(|s| &mut s.routes) {
            let old = route_config(st, &r.name);
            let old_id = old
                .and_then(|o| o.canary.as_ref())
                .map(|c| c.deployment.id.clone());
            let new_id = r.canary.as_ref().map(|c| c.deployment.id.clone());
            let active = st.rollouts.get(&r.name).filter(|x| x.phase.is_active());
            if let Some(a) = active.filter(|a| new_id.as_deref() == Some(a.deployment.as_str())) {
                let current = old.and_then(|o| o.canary.as_ref()).map_or(0, |c| c.ppm);
                if let Some(c) = r.canary.as_mut().filter(|c| c.ppm != current) {
                    lines.push(format!(
                        "route {}: rollout {} at step {} keeps canary percent {} (the file says {})",
                        r.name,
                        a.phase.as_str(),
                        a.step + 1,
                        format_percent(current),
                        format_percent(c.ppm)
                    ));
                    c.ppm = current;
                }
            } else if let (Some(plan), Some(c)) = (&r.rollout, r.canary.as_mut())
                && new_id != old_id
            {
                c.ppm = plan.steps[0];
                starts.push(r.name.clone());
            }
        }
        starts
    }

    /// After a reload's diff: kill switches follow the file, rollouts whose route or
    /// canary changed end, and the new canaries' rollouts start.
    pub(super) fn reload_rollouts_after(
        &self,
        st: &mut State,
        old_routes: &HashMap<String, RouteConfig>,
        starts: &[String],
        lines: &mut Vec<String>,
    ) {
        Self::configure_kill_switches(st);
        for r in st.config.stages.iter().flat_map(|s| &s.routes) {
            let ppm = r.canary.as_ref().map_or(0, |c| c.ppm);
            let old_ppm = old_routes
                .get(&r.name)
                .and_then(|o| o.canary.as_ref())
                .map_or(0, |c| c.ppm);
            if ppm > 0
                && ppm != old_ppm
                && let Some(rt) = st.runtime.get(&r.name)
            {
                rt.kill.arm();
            }
        }
        let mut ended = Vec::new();
        for (name, r) in st.rollouts.iter().filter(|(_, r)| r.phase.is_active()) {
            let why = match route_config(st, name) {
                None => "its route was removed by reload".to_owned(),
                Some(c) => match &c.canary {
                    None => "its canary was removed by reload".to_owned(),
                    Some(c) if c.deployment.id != r.deployment => format!(
                        "reload changed the canary deployment ({} -> {})",
                        r.deployment, c.deployment.id
                    ),
                    Some(_) => continue,
                },
            };
            ended.push((name.clone(), why));
        }
        for (name, why) in ended {
            if let Some(r) = st.rollouts.get_mut(&name) {
                r.end(why.clone());
            }
            lines.push(format!("route {name}: rollout ended: {why}"));
        }
        for name in starts {
            let plan = route_config(st, name).and_then(|r| r.rollout.clone());
            if let Some(line) =
                plan.and_then(|p| self.begin(st, name, p, FROM_FILE, Instant::now()))
            {
                lines.push(line);
            }
        }
    }

    /// Does what `action` says to route `name` and restarts the rollout's window after a
    /// new share. Returns the change's description.
    fn act(
        &self,
        st: &mut State,
        name: &str,
        action: &Action,
        now: Instant,
    ) -> Result<Option<String>, ControlError> {
        let what = match *action {
            Action::None => return Ok(None),
            Action::SetPercent(ppm) => {
                let what = self
                    .change_locked(st, None, name, |r, split| set_route_percent(r, split, ppm))?;
                if let Some(rt) = st.runtime.get(name) {
                    rt.kill.arm();
                    let baseline = rt.metrics.snapshot();
                    if let Some(r) = st.rollouts.get_mut(name) {
                        r.restart_window(now, baseline, self.kernel.stats());
                    }
                }
                what
            }
            Action::Promote => self.change_locked(st, None, name, promote_route)?,
            Action::Rollback => self.change_locked(st, None, name, rollback_route)?,
        };
        log::info!(target: "canarygate::audit", "rollout {name}: {what}");
        Ok(Some(what))
    }

    /// Runs an admin `rollout` command for `who`.
    pub fn rollout(
        &self,
        expect: Option<u64>,
        cmd: &RolloutCommand,
        who: &str,
    ) -> Result<String, ControlError> {
        let mut guard = self.lock();
        let st = &mut *guard;
        if let Some(expected) = expect
            && expected != st.version
        {
            return Err(ControlError::VersionMismatch {
                expected,
                current: st.version,
            });
        }
        let name = cmd.route();
        let route = route_config(st, name).ok_or_else(|| ControlError::NoRoute(name.into()))?;
        let (has_canary, file_plan) = (route.canary.is_some(), route.rollout.clone());
        let now = Instant::now();
        let invalid = |e: String| ControlError::Invalid(format!("route {name}: {e}"));
        let rollout = st
            .rollouts
            .get_mut(name)
            .filter(|r| r.phase.is_active() || !matches!(cmd, RolloutCommand::Start { .. }));
        let (action, mut text) = match (cmd, rollout) {
            (RolloutCommand::Start { .. }, Some(r)) => {
                return Err(invalid(format!(
                    "a rollout is already {} at step {} ({}%); abort it first",
                    r.phase.as_str(),
                    r.step + 1,
                    format_percent(r.step_ppm())
                )));
            }
            (RolloutCommand::Start { args, .. }, None) => {
                if !has_canary {
                    return Err(ControlError::NoCanary(name.into()));
                }
                let plan = args.apply(file_plan.as_ref()).map_err(invalid)?;
                let first = plan.steps[0];
                let what = self.change_locked(st, None, name, |r, split| {
                    set_route_percent(r, split, first)
                })?;
                let line = self.begin(st, name, plan, who, now).unwrap_or_default();
                if let Some(rt) = st.runtime.get(name) {
                    rt.kill.arm();
                }
                return Ok(format!("{line}\n{what}"));
            }
            (_, None) => {
                return Err(invalid(
                    "no rollout (start one with: rollout start ROUTE ...)".into(),
                ));
            }
            (RolloutCommand::Pause { .. }, Some(r)) => {
                r.pause(format!("paused by {who}")).map_err(invalid)?;
                (
                    Action::None,
                    format!(
                        "route {name}: rollout paused at step {} ({}%)",
                        r.step + 1,
                        format_percent(r.step_ppm())
                    ),
                )
            }
            (RolloutCommand::Resume { .. }, Some(r)) => {
                let a = r.resume().map_err(invalid)?;
                (
                    a,
                    format!(
                        "route {name}: rollout resumed at step {} ({}%), its window restarts",
                        r.step + 1,
                        format_percent(r.step_ppm())
                    ),
                )
            }
            (RolloutCommand::Abort { .. }, Some(r)) => {
                let a = r.abort(format!("aborted by {who}")).map_err(invalid)?;
                (
                    a,
                    format!("route {name}: rollout aborted at step {}", r.step + 1),
                )
            }
        };
        if let Some(what) = self.act(st, name, &action, now)? {
            text = format!("{text}\n{what}");
        }
        Self::configure_kill_switches(st);
        Ok(text)
    }

    /// One controller tick: records kill-switch trips, notices routes changed under a
    /// rollout, and judges the steps that are due. Runs on the control-plane thread.
    pub fn rollout_tick(&self, now: Instant) {
        let mut guard = self.lock();
        let st = &mut *guard;
        self.record_trips_locked(st);
        let active: Vec<String> = st
            .rollouts
            .iter()
            .filter(|(_, r)| r.phase.is_active())
            .map(|(n, _)| n.clone())
            .collect();
        for name in active {
            self.tick_one(st, &name, now);
        }
        Self::configure_kill_switches(st);
    }

    /// Records kill-switch trips the workers made since the last look: the rollout (if
    /// any) fails, and the configuration's share becomes 0 as the workers already set it.
    /// Admin commands call this first, so what they show and change includes every trip.
    pub fn record_kill_switch_trips(&self) {
        let mut guard = self.lock();
        self.record_trips_locked(&mut guard);
    }

    fn record_trips_locked(&self, st: &mut State) {
        let switches: Vec<(String, Arc<KillSwitch>)> = st
            .runtime
            .iter()
            .map(|(n, rt)| (n.clone(), Arc::clone(&rt.kill)))
            .collect();
        for (name, kill) in switches {
            if kill.acknowledge() == 0 {
                continue;
            }
            let detail = kill.last_trip().unwrap_or_default();
            if let Some(r) = st.rollouts.get_mut(&name) {
                r.kill_switch(format!("kill switch tripped ({detail})"));
            }
            // The workers already set the share to 0; the configuration says so too.
            let what = match self.change_locked(st, None, &name, rollback_route) {
                Ok(what) => what,
                Err(e) => e.to_string(),
            };
            log::warn!(target: "canarygate::audit", "route {name}: kill switch tripped ({detail}): {what}");
        }
    }

    fn tick_one(&self, st: &mut State, name: &str, now: Instant) {
        let canary = route_config(st, name)
            .map(|r| r.canary.as_ref().map(|c| (c.deployment.id.clone(), c.ppm)));
        let Some(r) = st.rollouts.get_mut(name) else {
            return;
        };
        let why = match canary {
            None => Some("its route is gone".to_owned()),
            Some(None) => {
                Some("the canary was removed (promoted or rolled out by hand?)".to_owned())
            }
            Some(Some((id, _))) if id != r.deployment => {
                Some(format!("the canary deployment changed to {id}"))
            }
            Some(Some((_, ppm))) => {
                if r.phase == Phase::Running && ppm != r.step_ppm() {
                    let reason = format!(
                        "canary percent changed by hand to {}; 'rollout resume {name}' sets step {} ({}%) again",
                        format_percent(ppm),
                        r.step + 1,
                        format_percent(r.step_ppm())
                    );
                    log::warn!(target: "canarygate::audit", "route {name}: rollout paused: {reason}");
                    let _ = r.pause(reason);
                }
                None
            }
        };
        if let Some(why) = why {
            log::warn!(target: "canarygate::audit", "route {name}: rollout ended: {why}");
            r.end(why);
            return;
        }
        if !r.due(now) {
            return;
        }
        let Some(rt) = st.runtime.get(name) else {
            return;
        };
        let counters = rt.metrics.snapshot();
        let kernel_now = self.kernel.stats();
        let between = |base: &[crate::metrics::VariantStats], v: Variant| {
            Sample::between(&base[v.index()], &counters[v.index()])
        };
        let (stable, canary) = (
            between(&r.baseline[..], Variant::Stable),
            between(&r.baseline[..], Variant::Canary),
        );
        let kernel = kernel_window(r.kernel_baseline.as_ref(), kernel_now.as_ref());
        let j = if r.sequential.is_some() {
            let (bs, bc) = (
                between(&r.batch_baseline[..], Variant::Stable),
                between(&r.batch_baseline[..], Variant::Canary),
            );
            let bk = kernel_window(r.batch_kernel.as_ref(), kernel_now.as_ref());
            let Some(j) = r.look(
                now,
                (&bs, &bc, bk.as_ref()),
                (&stable, &canary, kernel.as_ref()),
                counters.clone(),
                kernel_now,
            ) else {
                return;
            };
            j
        } else {
            judge(&r.plan.criteria, &stable, &canary, kernel.as_ref())
        };
        let (step, ppm) = (r.step + 1, r.step_ppm());
        let action = r.conclude(now, &j);
        let line = format!(
            "route {name}: rollout step {step} ({}%) verdict: {}",
            format_percent(ppm),
            j.summary()
        );
        if j.verdict == crate::judge::Verdict::Fail {
            log::warn!(target: "canarygate::audit", "{line}");
        } else {
            log::info!(target: "canarygate::audit", "{line}");
        }
        if let Phase::Paused { reason } = &r.phase {
            log::warn!(target: "canarygate::audit", "route {name}: rollout paused: {reason}");
        }
        if let Err(e) = self.act(st, name, &action, now) {
            log::error!(target: "canarygate::audit", "route {name}: rollout could not apply {action:?}: {e}");
        }
    }

    /// Every route's rollout (or `"state": "none"`) as JSON, for `show rollout` and
    /// metrics; only `route` when given.
    pub fn rollout_report(
        &self,
        route: Option<&str>,
        now: Instant,
    ) -> Result<Vec<Value>, ControlError> {
        let st = self.lock();
        let routes: Vec<&RouteConfig> = st
            .config
            .stages
            .iter()
            .flat_map(|s| &s.routes)
            .filter(|r| route.is_none_or(|n| n == r.name))
            .collect();
        if let (Some(name), true) = (route, routes.is_empty()) {
            return Err(ControlError::NoRoute(name.into()));
        }
        Ok(routes
            .into_iter()
            .map(|r| {
                let ppm = st.runtime.get(&r.name).map_or(0, |rt| rt.split.ppm());
                show::rollout_json(
                    &r.name,
                    st.rollouts.get(&r.name),
                    r.rollout.as_ref(),
                    ppm,
                    now,
                )
            })
            .collect())
    }

    /// Route `route`'s kill switch and its settings.
    pub fn kill_switch(
        &self,
        route: &str,
    ) -> Option<(Arc<KillSwitch>, Option<crate::rollout::KillSwitchConfig>)> {
        let st = self.lock();
        let rt = st.runtime.get(route)?;
        let during_rollout = st
            .rollouts
            .get(route)
            .filter(|x| x.phase.is_active() && x.plan.kill_switch)
            .map(|_| ROLLOUT_DEFAULT);
        Some((
            Arc::clone(&rt.kill),
            route_config(&st, route)
                .and_then(|r| r.kill_switch)
                .or(during_rollout),
        ))
    }
}

#[cfg(test)]
mod tests;
