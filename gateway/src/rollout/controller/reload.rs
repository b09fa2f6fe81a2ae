//! What a reload does to rollouts (see the rules in [`super`]): before the diff, rollouts
//! in progress keep their share and new canaries with a plan get their first step; after
//! it, rollouts whose route or canary changed end and the new canaries' rollouts start.
//! `Control::reload` applies the adjusted file; this module never edits routing state
//! itself.

use std::time::Instant;

use super::{Book, FROM_FILE, Rollouts};
use crate::config::value::format_percent;
use crate::config::{Config, RouteConfig};
use crate::control::ControlError;

fn route_config<'a>(config: &'a Config, name: &str) -> Option<&'a RouteConfig> {
    config
        .stages
        .iter()
        .flat_map(|s| &s.routes)
        .find(|r| r.name == name)
}

/// Before a reload's diff: rollouts in progress keep their share (as `old` has it); new
/// canaries with a plan get their first step. Returns the routes whose rollout starts.
fn keep_shares(
    book: &Book,
    old: &Config,
    new: &mut Config,
    lines: &mut Vec<String>,
) -> Vec<String> {
    let mut starts = Vec::new();
    for r in new.stages.iter_mut().flat_map(|s| &mut s.routes) {
        let old = route_config(old, &r.name);
        let old_id = old
            .and_then(|o| o.canary.as_ref())
            .map(|c| c.deployment.id.clone());
        let new_id = r.canary.as_ref().map(|c| c.deployment.id.clone());
        let active = book.get(&r.name).filter(|x| x.phase.is_active());
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

impl Rollouts {
    /// Replaces the routing part of the configuration with `new` (see `Control::reload`)
    /// with the rollouts' shares kept; returns one line per change.
    pub(crate) fn reload(&self, new: &Config) -> Result<Vec<String>, ControlError> {
        let mut book = self.lock();
        let (mut lines, starts, reloaded) = loop {
            let (old, version) = self.control.config_and_version();
            let mut adjusted = new.clone();
            let mut lines = Vec::new();
            let starts = keep_shares(&book, &old, &mut adjusted, &mut lines);
            match self.control.reload(Some(version), adjusted) {
                // Someone changed the configuration since it was read: adjust again.
                Err(ControlError::VersionMismatch { .. }) => {}
                Err(e) => return Err(e),
                Ok(reloaded) => break (lines, starts, reloaded),
            }
        };
        lines.extend(reloaded.changes.iter().map(ToString::to_string));
        self.end_changed(&mut book, &mut lines);
        let config = self.control.config();
        for name in &starts {
            let plan = route_config(&config, name).and_then(|r| r.rollout.clone());
            if let Some(line) =
                plan.and_then(|p| self.begin(&mut book, name, p, FROM_FILE, Instant::now()))
            {
                lines.push(line);
            }
        }
        self.sync_kill_switches(&book);
        lines.push(format!("reloaded (version {})", reloaded.version));
        Ok(lines)
    }

    /// Ends the active rollouts whose route or canary the reload removed or whose canary
    /// deployment it changed.
    fn end_changed(&self, book: &mut Book, lines: &mut Vec<String>) {
        let config = self.control.config();
        let mut ended = Vec::new();
        for (name, r) in book.iter().filter(|(_, r)| r.phase.is_active()) {
            let why = match route_config(&config, name) {
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
            if let Some(r) = book.get_mut(&name) {
                r.end(why.clone());
            }
            lines.push(format!("route {name}: rollout ended: {why}"));
        }
    }
}
