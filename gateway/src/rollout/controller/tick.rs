//! The controller's tick: record kill-switch trips, notice routes changed under a rollout
//! (by hand or by a removed canary), judge the steps that are due and apply the verdicts
//! through `Control`'s methods. Runs on the control-plane thread, under the controller
//! lock.

use std::time::Instant;

use gateway_common::Variant;

use super::{Book, Rollouts};
use crate::config::value::format_percent;
use crate::control::ControlError;
use crate::judge::{KernelWindow, Sample, histogram_sample, judge};
use crate::kernel::KernelStats;
use crate::metrics::VariantStats;
use crate::rollout::{Action, Phase};

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

impl Rollouts {
    /// One controller tick: records kill-switch trips, notices routes changed under a
    /// rollout, and judges the steps that are due.
    pub(crate) fn tick(&self, now: Instant) {
        let mut book = self.lock();
        if let Some(s) = &self.steering {
            self.mirror(&mut book, s.as_ref(), now);
        }
        self.record_trips_locked(&mut book);
        // In a fleet only the leader judges and steps; the others follow its stores.
        if self.steering.as_ref().is_none_or(|s| s.leads()) {
            let active: Vec<String> = book
                .iter()
                .filter(|(_, r)| r.phase.is_active())
                .map(|(n, _)| n.clone())
                .collect();
            for name in active {
                self.tick_one(&mut book, &name, now);
            }
        }
        self.sync_kill_switches(&book);
        if let Some(s) = &self.steering {
            self.store_changes(&book, s.as_ref(), now);
        }
    }

    /// Does what `action` says to route `name` and restarts the rollout's window after a
    /// new share. Returns the change's description.
    pub(super) fn act(
        &self,
        book: &mut Book,
        name: &str,
        action: &Action,
        now: Instant,
    ) -> Result<Option<String>, ControlError> {
        let what = match *action {
            Action::None => return Ok(None),
            Action::SetPercent(ppm) => {
                let what = self.control.set_step(None, name, ppm)?;
                if let (Some((baseline, kernel)), Some(r)) =
                    (self.figures(name), book.get_mut(name))
                {
                    r.restart_window(now, baseline, kernel);
                    self.mark_window(name);
                }
                what
            }
            Action::Promote => self.control.promote(None, name)?,
            Action::Rollback => self.control.rollback(None, name)?,
        };
        log::info!(target: "canarygate::audit", "rollout {name}: {what}");
        Ok(Some(what))
    }

    /// Why route `name`'s rollout must end or pause given its route's canary now (`None`:
    /// route gone; `Some(None)`: no canary); pauses it on a share changed by hand.
    fn notice_changes(&self, book: &mut Book, name: &str) -> Option<String> {
        let canary = self
            .control
            .route(name)
            .map(|r| r.canary.map(|c| (c.deployment.id, c.ppm)));
        let r = book.get_mut(name)?;
        match canary {
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
        }
    }

    fn tick_one(&self, book: &mut Book, name: &str, now: Instant) {
        let why = self.notice_changes(book, name);
        let Some(r) = book.get_mut(name) else {
            return;
        };
        if let Some(why) = why {
            log::warn!(target: "canarygate::audit", "route {name}: rollout ended: {why}");
            r.end(why);
            return;
        }
        if !r.due(now) {
            return;
        }
        let Some((counters, kernel_now)) = self.figures(name) else {
            return;
        };
        let between = |base: &[VariantStats], v: Variant| {
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
        let mut line = format!(
            "route {name}: rollout step {step} ({}%) verdict: {}",
            format_percent(ppm),
            j.summary()
        );
        if let Some(fleet) = self.note_coverage(r, name) {
            line = format!("{line}; {fleet}");
        }
        if j.verdict == crate::judge::Verdict::Fail {
            log::warn!(target: "canarygate::audit", "{line}");
        } else {
            log::info!(target: "canarygate::audit", "{line}");
        }
        if let Phase::Paused { reason } = &r.phase {
            log::warn!(target: "canarygate::audit", "route {name}: rollout paused: {reason}");
        }
        if let Err(e) = self.act(book, name, &action, now) {
            log::error!(target: "canarygate::audit", "route {name}: rollout could not apply {action:?}: {e}");
        }
    }
}
