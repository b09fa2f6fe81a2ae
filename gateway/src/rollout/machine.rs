//! One route's rollout as a state machine. Time is passed in (`now`) and the judge's
//! verdicts are passed in, so every transition is tested without clocks or traffic; the
//! control plane ([`crate::control`]) applies the [`Action`]s it returns.
//!
//! ```text
//! start -> Running(step 0) --pass/marginal--> Running(step+1) ... --> Promoted
//!            |  ^   \--inconclusive--> (same step, judged again one interval later)
//!      pause |  | resume (restarts the step's window)
//!            v  |
//!           Paused          fail / kill switch --> RolledBack     abort --> Aborted
//! ```

pub(crate) mod record;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use gateway_common::{PPM_MAX, VARIANT_COUNT};
use serde_json::{Value, json};

use super::plan::{JudgeKind, OnTimeout, Plan};
use crate::judge::sequential::{Assessment, SequentialJudge};
use crate::judge::{Judgement, KernelWindow, Sample, Verdict};
use crate::kernel::KernelStats;
use crate::metrics::VariantStats;

/// How often the sequential judge looks (at most; never less often than the interval).
pub(crate) const BATCH: Duration = Duration::from_millis(500);

/// Points of the sequential judge's history kept for `show rollout` (older points are
/// thinned out, so the whole rollout stays visible at a coarser grain).
const SERIES_POINTS: usize = 720;

/// One batch or window: stable, canary, kernel.
pub(crate) type Window<'a> = (&'a Sample, &'a Sample, Option<&'a KernelWindow>);

/// Where a rollout is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Walking through the steps.
    Running,
    /// Held by an operator (or by a change made by hand); the share stays where it is.
    Paused {
        /// Why.
        reason: String,
    },
    /// The canary became the stable deployment.
    Promoted,
    /// The judge or the kill switch failed the canary; its share is 0.
    RolledBack {
        /// Why.
        reason: String,
    },
    /// An operator aborted it; the canary's share is 0.
    Aborted {
        /// Why.
        reason: String,
    },
    /// It stopped because the route or its canary changed underneath it.
    Ended {
        /// Why.
        reason: String,
    },
}

impl Phase {
    /// Running or paused.
    pub(crate) fn is_active(&self) -> bool {
        matches!(self, Phase::Running | Phase::Paused { .. })
    }

    /// Name used in replies and metrics.
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            Phase::Running => "running",
            Phase::Paused { .. } => "paused",
            Phase::Promoted => "promoted",
            Phase::RolledBack { .. } => "rolled_back",
            Phase::Aborted { .. } => "aborted",
            Phase::Ended { .. } => "ended",
        }
    }

    /// Every phase name, for metrics.
    pub(crate) const NAMES: [&'static str; 6] = [
        "running",
        "paused",
        "promoted",
        "rolled_back",
        "aborted",
        "ended",
    ];

    /// The reason, if the phase has one.
    pub(crate) fn reason(&self) -> Option<&str> {
        match self {
            Phase::Paused { reason }
            | Phase::RolledBack { reason }
            | Phase::Aborted { reason }
            | Phase::Ended { reason } => Some(reason),
            Phase::Running | Phase::Promoted => None,
        }
    }
}

/// What the control plane must do to the route after a transition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Nothing.
    None,
    /// Set the canary share (then restart the window with [`Rollout::restart_window`]).
    SetPercent(u32),
    /// Promote the canary.
    Promote,
    /// Roll the canary back to 0 %.
    Rollback,
}

/// One verdict in a rollout's history.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Record {
    /// Step index (0-based).
    pub step: usize,
    /// Share during the step (ppm).
    pub ppm: u32,
    /// Time since the rollout started.
    pub at: Duration,
    /// The verdict.
    pub verdict: Verdict,
    /// One-line summary with the statistics.
    pub summary: String,
    /// Every statistic, as JSON.
    pub detail: Value,
}

/// A route's rollout.
#[derive(Debug)]
pub(crate) struct Rollout {
    /// The plan.
    pub plan: Plan,
    /// Who started it: `config file` or the admin user.
    pub origin: String,
    /// Id of the canary deployment being rolled out.
    pub deployment: String,
    /// Where it is.
    pub phase: Phase,
    /// Current step index.
    pub step: usize,
    /// Every verdict so far, oldest first.
    pub history: Vec<Record>,
    /// Verdicts by [`Verdict`] (in [`Verdict::ALL`] order).
    pub verdicts: [u64; 4],
    /// Route counters when the current window started.
    pub baseline: Box<[VariantStats; VARIANT_COUNT]>,
    /// Kernel counters when the current window started (kernel accounting only).
    pub kernel_baseline: Option<KernelStats>,
    /// The sequential judge (its evidence spans the whole rollout), unless the plan
    /// uses the fixed one.
    pub sequential: Option<SequentialJudge>,
    /// Route and kernel counters at the last batch the sequential judge saw.
    pub batch_baseline: Box<[VariantStats; VARIANT_COUNT]>,
    /// See `batch_baseline`.
    pub batch_kernel: Option<KernelStats>,
    /// The sequential judge's latest look (kept until the next one, also after the end).
    pub assessment: Option<Assessment>,
    /// The sequential judge's figures over time, oldest first.
    pub series: VecDeque<Value>,
    next_batch: Instant,
    started: Instant,
    window_started: Instant,
    next_judgement: Instant,
    /// Inconclusive verdicts in a row on the current step.
    pub inconclusive: u32,
}

impl Rollout {
    /// A rollout at its first step; the caller sets that share ([`Rollout::step_ppm`]).
    /// `kernel` holds the kernel's counters when kernel accounting runs.
    pub(crate) fn new(
        plan: Plan,
        deployment: &str,
        origin: &str,
        now: Instant,
        baseline: [VariantStats; VARIANT_COUNT],
        kernel: Option<KernelStats>,
    ) -> Rollout {
        let sequential = (plan.judge == JudgeKind::Sequential)
            .then(|| SequentialJudge::new(&plan.criteria, kernel.is_some()));
        Rollout {
            origin: origin.to_owned(),
            deployment: deployment.to_owned(),
            phase: Phase::Running,
            step: 0,
            history: Vec::new(),
            verdicts: [0; 4],
            batch_baseline: Box::new(baseline.clone()),
            baseline: Box::new(baseline),
            batch_kernel: kernel.clone(),
            kernel_baseline: kernel,
            sequential,
            assessment: None,
            series: VecDeque::new(),
            next_batch: now + BATCH.min(plan.interval),
            started: now,
            window_started: now,
            next_judgement: now + plan.interval,
            inconclusive: 0,
            plan,
        }
    }

    /// Share of the current step (ppm).
    pub(crate) fn step_ppm(&self) -> u32 {
        self.plan.steps[self.step]
    }

    /// True when the current step is due for a verdict (fixed judge) or a look
    /// (sequential judge).
    pub(crate) fn due(&self, now: Instant) -> bool {
        self.phase == Phase::Running
            && if self.sequential.is_some() {
                now >= self.next_batch
            } else {
                now >= self.next_judgement
            }
    }

    /// The sequential judge's look at a new batch: `batch` is what happened since the
    /// last look, `window` since the step started; `counters` and `kernel` become the
    /// next batch's baseline. Returns a judgement when the step is decided: failed as
    /// soon as a regression is significant, passed once the step's minimum duration is
    /// over and the confidence sequences rule a regression out, or the plan's
    /// `on-timeout` rule once its maximum duration is over.
    pub(crate) fn look(
        &mut self,
        now: Instant,
        batch: Window<'_>,
        window: Window<'_>,
        counters: [VariantStats; VARIANT_COUNT],
        kernel: Option<KernelStats>,
    ) -> Option<Judgement> {
        let judge = self.sequential.as_mut()?;
        let criteria = &self.plan.criteria;
        let share = f64::from(self.plan.steps[self.step]) / f64::from(PPM_MAX);
        judge.observe(criteria, share, batch.0, batch.1, batch.2);
        let a = judge.assess(criteria, window.0, window.1, window.2);
        *self.batch_baseline = counters;
        self.batch_kernel = kernel;
        self.next_batch = now + BATCH.min(self.plan.interval);
        let at = now.saturating_duration_since(self.started);
        self.record_point(at, &a);
        let elapsed = now.saturating_duration_since(self.window_started);
        let decided = if !a.fail.is_empty() {
            Some((Verdict::Fail, a.fail.clone()))
        } else if elapsed >= self.plan.interval && a.pending.is_empty() {
            Some((Verdict::Pass, Vec::new()))
        } else if elapsed >= self.plan.step_limit() {
            let mut why = vec![format!(
                "undecided after {} (on-timeout {})",
                super::plan::duration(self.plan.step_limit()),
                self.plan.on_timeout.as_str()
            )];
            why.extend(a.pending.iter().cloned());
            Some((
                match self.plan.on_timeout {
                    OnTimeout::Pass => Verdict::Marginal,
                    OnTimeout::Fail => Verdict::Fail,
                    OnTimeout::Pause => Verdict::Inconclusive,
                },
                why,
            ))
        } else {
            None
        };
        let judgement = decided.map(|(verdict, reasons)| Judgement {
            verdict,
            reasons,
            stable: window.0.clone(),
            canary: window.1.clone(),
            latency: None,
            errors: None,
            kernel: None,
            sequential: Some(a.clone()),
        });
        self.assessment = Some(a);
        judgement
    }

    fn record_point(&mut self, at: Duration, a: &Assessment) {
        if self.series.len() >= SERIES_POINTS {
            // Thin out: keep every other point.
            let kept: VecDeque<Value> = self.series.iter().step_by(2).cloned().collect();
            self.series = kept;
        }
        let median = a.quantiles.first().map(|q| q[2]);
        self.series.push_back(json!({
            "at_ms": at.as_millis() as u64,
            "step": self.step + 1,
            "p_latency": a.p_latency,
            "p_errors": a.p_errors,
            "p_retransmits": a.p_retransmits,
            "error_difference": [a.error_diff.0, a.error_diff.1],
            "median_difference_us": median.map(|(lo, hi)| json!([lo, hi])),
        }));
    }

    /// Time into the current window, and until the next verdict.
    pub(crate) fn timing(&self, now: Instant) -> (Duration, Duration) {
        (
            now.saturating_duration_since(self.window_started),
            self.next_judgement.saturating_duration_since(now),
        )
    }

    /// Starts a fresh window for the current step at `now` with the route's counters.
    pub(crate) fn restart_window(
        &mut self,
        now: Instant,
        baseline: [VariantStats; VARIANT_COUNT],
        kernel: Option<KernelStats>,
    ) {
        self.batch_baseline.clone_from_slice(&baseline);
        self.batch_kernel.clone_from(&kernel);
        *self.baseline = baseline;
        self.kernel_baseline = kernel;
        self.next_batch = now + BATCH.min(self.plan.interval);
        self.window_started = now;
        self.next_judgement = now + self.plan.interval;
        self.inconclusive = 0;
        if let Some(j) = self.sequential.as_mut() {
            j.new_window();
        }
    }

    /// Applies the judge's verdict on the current window.
    pub(crate) fn conclude(&mut self, now: Instant, judgement: &Judgement) -> Action {
        if self.phase != Phase::Running {
            return Action::None;
        }
        let verdict = judgement.verdict;
        self.verdicts[Verdict::ALL.iter().position(|v| *v == verdict).unwrap_or(0)] += 1;
        self.history.push(Record {
            step: self.step,
            ppm: self.step_ppm(),
            at: now.saturating_duration_since(self.started),
            verdict,
            summary: judgement.summary(),
            detail: judgement.json(),
        });
        match verdict {
            Verdict::Fail => {
                self.phase = Phase::RolledBack {
                    reason: format!("step {} failed: {}", self.step + 1, judgement.summary()),
                };
                Action::Rollback
            }
            Verdict::Inconclusive if judgement.sequential.is_some() => {
                // The sequential judge's maximum duration ran out with `on-timeout pause`.
                self.phase = Phase::Paused {
                    reason: format!(
                        "step {} was not decided in time ({}); resume to judge it again, or abort",
                        self.step + 1,
                        judgement.summary()
                    ),
                };
                Action::None
            }
            Verdict::Inconclusive => {
                // Hold: the same window goes on and is judged again one interval later,
                // unless the plan's patience ran out: then the operator decides.
                self.inconclusive += 1;
                self.next_judgement = now + self.plan.interval;
                if self.plan.max_inconclusive > 0 && self.inconclusive >= self.plan.max_inconclusive
                {
                    self.phase = Phase::Paused {
                        reason: format!(
                            "step {} was inconclusive {} times in a row ({}); resume to judge it again, or abort",
                            self.step + 1,
                            self.inconclusive,
                            judgement.summary()
                        ),
                    };
                }
                Action::None
            }
            Verdict::Pass | Verdict::Marginal => self.advance(now),
        }
    }

    fn advance(&mut self, now: Instant) -> Action {
        match self.plan.steps.get(self.step + 1) {
            Some(&ppm) if ppm < PPM_MAX => {
                self.step += 1;
                self.inconclusive = 0;
                self.window_started = now;
                self.next_judgement = now + self.plan.interval;
                Action::SetPercent(ppm)
            }
            _ => {
                self.phase = Phase::Promoted;
                Action::Promote
            }
        }
    }

    /// Holds the rollout.
    pub(crate) fn pause(&mut self, reason: String) -> Result<(), String> {
        match self.phase {
            Phase::Running => {
                self.phase = Phase::Paused { reason };
                Ok(())
            }
            Phase::Paused { .. } => Err("the rollout is already paused".into()),
            _ => Err(format!(
                "the rollout is {}, not running",
                self.phase.as_str()
            )),
        }
    }

    /// Continues a paused rollout: the current step's share is set again and its window
    /// restarts (what happened while paused is not judged).
    pub(crate) fn resume(&mut self) -> Result<Action, String> {
        match self.phase {
            Phase::Paused { .. } => {
                self.phase = Phase::Running;
                self.inconclusive = 0;
                Ok(Action::SetPercent(self.step_ppm()))
            }
            Phase::Running => Err("the rollout is not paused".into()),
            _ => Err(format!(
                "the rollout is {}; start a new one",
                self.phase.as_str()
            )),
        }
    }

    /// Stops the rollout and sends nothing more to the canary.
    pub(crate) fn abort(&mut self, reason: String) -> Result<Action, String> {
        if !self.phase.is_active() {
            return Err(format!("the rollout is already {}", self.phase.as_str()));
        }
        self.phase = Phase::Aborted { reason };
        Ok(Action::Rollback)
    }

    /// The kill switch failed the canary (its share is already 0).
    pub(crate) fn kill_switch(&mut self, reason: String) -> Action {
        if !self.phase.is_active() {
            return Action::None;
        }
        self.phase = Phase::RolledBack { reason };
        Action::Rollback
    }

    /// Stops without touching the route (it changed underneath the rollout).
    pub(crate) fn end(&mut self, reason: String) {
        if self.phase.is_active() {
            self.phase = Phase::Ended { reason };
        }
    }
}

#[cfg(test)]
mod tests;
