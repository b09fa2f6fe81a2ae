//! The admin `rollout ...` commands (start, pause, resume, abort), run under the
//! controller lock: checked against the configuration version, applied to the rollout,
//! and acted on through `Control`.

use std::time::Instant;

use super::Rollouts;
use crate::config::value::format_percent;
use crate::control::ControlError;
use crate::rollout::{Action, RolloutCommand};

impl Rollouts {
    /// Runs an admin `rollout` command for `who`.
    pub(crate) fn rollout(
        &self,
        expect: Option<u64>,
        cmd: &RolloutCommand,
        who: &str,
    ) -> Result<String, ControlError> {
        let mut book = self.lock();
        let steering = self.steering.clone();
        if let Some(s) = &steering {
            // The fleet's rollouts as they are now, whoever changed them last.
            self.mirror(&mut book, s.as_ref(), Instant::now());
        }
        let done = self.rollout_locked(&mut book, expect, cmd, who);
        if let Some(s) = &steering {
            self.store_changes(&book, s.as_ref(), Instant::now());
        }
        done
    }

    fn rollout_locked(
        &self,
        book: &mut super::Book,
        expect: Option<u64>,
        cmd: &RolloutCommand,
        who: &str,
    ) -> Result<String, ControlError> {
        self.control.check_version(expect)?;
        let name = cmd.route();
        let route = self
            .control
            .route(name)
            .ok_or_else(|| ControlError::NoRoute(name.into()))?;
        let (has_canary, file_plan) = (route.canary.is_some(), route.rollout);
        let now = Instant::now();
        let invalid = |e: String| ControlError::Invalid(format!("route {name}: {e}"));
        let rollout = book
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
                // The version was checked above; checked again with the change so that
                // nobody's change slips in between.
                let what = self.control.set_step(expect, name, plan.steps[0])?;
                let line = self.begin(book, name, plan, who, now).unwrap_or_default();
                self.control.arm(name);
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
        if let Some(what) = self.act(book, name, &action, now)? {
            text = format!("{text}\n{what}");
        }
        self.sync_kill_switches(book);
        Ok(text)
    }
}
