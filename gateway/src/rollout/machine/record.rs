//! A [`Rollout`] to and from JSON, for fleet mode: the leader writes a rollout's state to
//! etcd after every transition so that another gateway can continue it from its
//! recorded step and window, and every gateway can show the fleet's rollouts.
//!
//! The record holds the plan (as [`Plan::describe`] words), the phase, the step, the
//! verdicts and the history, and the rollout's times as wall-clock milliseconds since the
//! Unix epoch (an [`Instant`] means nothing on another machine). It leaves out the
//! counter baselines (the caller stores those its own way and passes them back in), the
//! sequential judge's evidence, its series and its latest assessment: a gateway that
//! takes a rollout over starts the sequential judge afresh, as [`Rollout::new`] does.
//! The input comes from etcd, so [`from_json`] checks every field and never panics.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gateway_common::VARIANT_COUNT;
use serde_json::{Map, Value, json};

use super::{BATCH, Phase, Record, Rollout};
use crate::judge::Verdict;
use crate::judge::sequential::SequentialJudge;
use crate::kernel::KernelStats;
use crate::metrics::VariantStats;
use crate::rollout::plan::{JudgeKind, Plan, PlanArgs};

/// The rollout as JSON, with its times as wall-clock milliseconds (`now` is `wall_now`).
pub(crate) fn to_json(r: &Rollout, now: Instant, wall_now: SystemTime) -> Value {
    let wall = |t: Instant| wall_ms(t, now, wall_now);
    let history: Vec<Value> = r
        .history
        .iter()
        .map(|h| {
            json!({
                "step": h.step,
                "ppm": h.ppm,
                "at_ms": duration_ms(h.at),
                "verdict": h.verdict.as_str(),
                "summary": h.summary,
                "detail": h.detail,
            })
        })
        .collect();
    json!({
        "plan": r.plan.describe(),
        "origin": r.origin,
        "deployment": r.deployment,
        "phase": { "name": r.phase.as_str(), "reason": r.phase.reason() },
        "step": r.step,
        "verdicts": r.verdicts,
        "inconclusive": r.inconclusive,
        "history": history,
        "started_ms": wall(r.started),
        "window_started_ms": wall(r.window_started),
        "next_judgement_ms": wall(r.next_judgement),
    })
}

/// The rollout recorded by [`to_json`], continued at `now` (`wall_now`): `baseline` and
/// `kernel` become the window's and the sequential batch's baselines. Any missing or
/// malformed field gives an error naming it.
pub(crate) fn from_json(
    v: &Value,
    now: Instant,
    wall_now: SystemTime,
    baseline: [VariantStats; VARIANT_COUNT],
    kernel: Option<KernelStats>,
) -> Result<Rollout, String> {
    let o = v.as_object().ok_or("rollout record: not a JSON object")?;
    let plan = plan(str_field(o, "plan")?)?;
    let step = usize_field(o, "step")?;
    if step >= plan.steps.len() {
        return Err(format!(
            "rollout record: step {step} is out of range (the plan has {} steps)",
            plan.steps.len()
        ));
    }
    let verdicts = verdicts(o)?;
    let inconclusive = u32::try_from(u64_field(o, "inconclusive")?)
        .map_err(|_| "rollout record: inconclusive is out of range")?;
    let history = o
        .get("history")
        .and_then(Value::as_array)
        .ok_or("rollout record: history is missing or not an array")?
        .iter()
        .enumerate()
        .map(|(i, h)| record(h, plan.steps.len()).map_err(|e| format!("history[{i}]: {e}")))
        .collect::<Result<Vec<Record>, String>>()
        .map_err(|e| format!("rollout record: {e}"))?;
    let instant = |name: &str| u64_field(o, name).map(|ms| instant(ms, now, wall_now));
    let sequential = (plan.judge == JudgeKind::Sequential)
        .then(|| SequentialJudge::new(&plan.criteria, kernel.is_some()));
    Ok(Rollout {
        origin: str_field(o, "origin")?.to_owned(),
        deployment: str_field(o, "deployment")?.to_owned(),
        phase: phase(o)?,
        step,
        history,
        verdicts,
        batch_baseline: Box::new(baseline.clone()),
        baseline: Box::new(baseline),
        batch_kernel: kernel.clone(),
        kernel_baseline: kernel,
        sequential,
        assessment: None,
        series: VecDeque::new(),
        next_batch: now + BATCH.min(plan.interval),
        started: instant("started_ms")?,
        window_started: instant("window_started_ms")?,
        next_judgement: instant("next_judgement_ms")?,
        inconclusive,
        plan,
    })
}

/// The plan from its [`Plan::describe`] words.
fn plan(text: &str) -> Result<Plan, String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    PlanArgs::parse(&words)
        .and_then(|a| a.apply(None))
        .map_err(|e| format!("rollout record: plan: {e}"))
}

/// The phase from `{"name": .., "reason": ..}`; the phases that have a reason need it.
fn phase(o: &Map<String, Value>) -> Result<Phase, String> {
    let p = o
        .get("phase")
        .and_then(Value::as_object)
        .ok_or("rollout record: phase is missing or not an object")?;
    let name = str_field(p, "name").map_err(|e| e.replace("record: ", "record: phase."))?;
    let reason = || {
        str_field(p, "reason")
            .map(str::to_owned)
            .map_err(|e| e.replace("record: ", "record: phase."))
    };
    Ok(match name {
        "running" => Phase::Running,
        "promoted" => Phase::Promoted,
        "paused" => Phase::Paused { reason: reason()? },
        "rolled_back" => Phase::RolledBack { reason: reason()? },
        "aborted" => Phase::Aborted { reason: reason()? },
        "ended" => Phase::Ended { reason: reason()? },
        other => {
            return Err(format!(
                "rollout record: phase.name {other:?} is not one of {}",
                Phase::NAMES.join(", ")
            ));
        }
    })
}

/// The verdict counts, in [`Verdict::ALL`] order.
fn verdicts(o: &Map<String, Value>) -> Result<[u64; 4], String> {
    let a = o
        .get("verdicts")
        .and_then(Value::as_array)
        .filter(|a| a.len() == Verdict::ALL.len())
        .ok_or("rollout record: verdicts is missing or not an array of 4 counts")?;
    let mut counts = [0; 4];
    for (c, v) in counts.iter_mut().zip(a) {
        *c = v
            .as_u64()
            .ok_or("rollout record: verdicts holds something other than a count")?;
    }
    Ok(counts)
}

/// One history entry; its step must be one of the plan's `steps`.
fn record(v: &Value, steps: usize) -> Result<Record, String> {
    let o = v.as_object().ok_or("not a JSON object")?;
    let field = |e: String| e.replace("rollout record: ", "");
    let step = usize_field(o, "step").map_err(field)?;
    if step >= steps {
        return Err(format!(
            "step {step} is out of range (the plan has {steps} steps)"
        ));
    }
    let ppm = u32::try_from(u64_field(o, "ppm").map_err(field)?)
        .map_err(|_| "ppm is out of range".to_owned())?;
    let name = str_field(o, "verdict").map_err(field)?;
    let verdict = Verdict::parse(name).ok_or_else(|| format!("verdict {name:?} is unknown"))?;
    Ok(Record {
        step,
        ppm,
        at: Duration::from_millis(u64_field(o, "at_ms").map_err(field)?),
        verdict,
        summary: str_field(o, "summary").map_err(field)?.to_owned(),
        detail: o.get("detail").cloned().ok_or("detail is missing")?,
    })
}

fn str_field<'a>(o: &'a Map<String, Value>, name: &str) -> Result<&'a str, String> {
    o.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("rollout record: {name} is missing or not a string"))
}

fn u64_field(o: &Map<String, Value>, name: &str) -> Result<u64, String> {
    o.get(name)
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("rollout record: {name} is missing or not a whole number"))
}

fn usize_field(o: &Map<String, Value>, name: &str) -> Result<usize, String> {
    usize::try_from(u64_field(o, name)?)
        .map_err(|_| format!("rollout record: {name} is out of range"))
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `t` as milliseconds since the Unix epoch, given that `now` is `wall_now`; saturating
/// at the epoch and at the largest representable time.
fn wall_ms(t: Instant, now: Instant, wall_now: SystemTime) -> u64 {
    let wall = if t <= now {
        wall_now
            .checked_sub(now.duration_since(t))
            .unwrap_or(UNIX_EPOCH)
    } else {
        match wall_now.checked_add(t.duration_since(now)) {
            Some(w) => w,
            None => return u64::MAX,
        }
    };
    duration_ms(wall.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO))
}

/// The [`Instant`] that is `ms` milliseconds after the Unix epoch, given that `now` is
/// `wall_now`: a past time stays in the past and a future one in the future, as far as
/// an `Instant` can represent them.
fn instant(ms: u64, now: Instant, wall_now: SystemTime) -> Instant {
    let since_epoch = Duration::from_millis(ms);
    let wall_now = wall_now
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    if since_epoch <= wall_now {
        saturate(
            now,
            wall_now.saturating_sub(since_epoch),
            Instant::checked_sub,
        )
    } else {
        saturate(
            now,
            since_epoch.saturating_sub(wall_now),
            Instant::checked_add,
        )
    }
}

/// `op(from, by)`, or as far as `op` can go towards it when that is not representable.
fn saturate(from: Instant, by: Duration, op: fn(&Instant, Duration) -> Option<Instant>) -> Instant {
    let (mut t, mut left, mut stride) = (from, by, by);
    while !left.is_zero() && !stride.is_zero() {
        match op(&t, stride.min(left)) {
            Some(next) => {
                t = next;
                left -= stride.min(left);
            }
            None => stride /= 2,
        }
    }
    t
}

#[cfg(test)]
mod tests;
