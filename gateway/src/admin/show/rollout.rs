//! What operators see of rollouts: `show rollout [ROUTE] [json]`, built from the rollout
//! controller's state (read under its lock through [`Rollouts::visit`]); changes nothing.

use std::fmt::Write as _;
use std::time::Instant;

use serde_json::{Value, json};

use crate::config::value::format_percent;
use crate::control::ControlError;
use crate::judge::Verdict;
use crate::rollout::controller::Rollouts;
use crate::rollout::machine::{Phase, Rollout};
use crate::rollout::plan::Plan;

/// One route's rollout as JSON (`"state": "none"` without one).
pub(crate) fn rollout_json(
    route: &str,
    rollout: Option<&Rollout>,
    file_plan: Option<&Plan>,
    ppm: u32,
    now: Instant,
) -> Value {
    let Some(r) = rollout else {
        return json!({ "route": route, "state": "none", "canary_percent": format_percent(ppm), "file_plan": file_plan.map(Plan::describe) });
    };
    let (elapsed, next) = r.timing(now);
    let history: Vec<Value> = r
        .history
        .iter()
        .map(|h| json!({ "step": h.step + 1, "percent": format_percent(h.ppm), "at_ms": h.at.as_millis() as u64, "verdict": h.verdict.as_str(), "summary": h.summary, "detail": h.detail }))
        .collect();
    let verdicts: serde_json::Map<String, Value> = Verdict::ALL
        .iter()
        .zip(r.verdicts)
        .map(|(v, n)| (v.as_str().to_owned(), json!(n)))
        .collect();
    json!({
        "route": route,
        "state": r.phase.as_str(),
        "reason": r.phase.reason(),
        "deployment": r.deployment,
        "origin": r.origin,
        "step": r.step + 1,
        "judged_steps": r.plan.judged_steps(),
        "steps": r.plan.steps.iter().map(|&s| format_percent(s)).collect::<Vec<_>>(),
        "step_percent": format_percent(r.step_ppm()),
        "canary_percent": format_percent(ppm),
        "plan": r.plan.describe(),
        "interval_ms": r.plan.interval.as_millis() as u64,
        "min_requests": r.plan.criteria.min_requests,
        "max_inconclusive": r.plan.max_inconclusive,
        "inconclusive_in_a_row": r.inconclusive,
        "window_ms": elapsed.as_millis() as u64,
        "next_verdict_in_ms": (r.phase == Phase::Running).then_some(next.as_millis() as u64),
        "verdicts": verdicts,
        "last": history.last(),
        "history": history,
        "file_plan": file_plan.map(Plan::describe),
        "judge": r.plan.judge.as_str(),
        "max_interval_ms": r.plan.step_limit().as_millis() as u64,
        "on_timeout": r.plan.on_timeout.as_str(),
        "default_kill_switch": r.plan.kill_switch,
        "sequential": r.assessment.as_ref().map(crate::judge::sequential::Assessment::json),
        "series": r.series,
    })
}

/// Every route's rollout (or `"state": "none"`) as JSON, for `show rollout` and metrics;
/// only `route` when given.
pub(crate) fn report(
    rollouts: &Rollouts,
    route: Option<&str>,
    now: Instant,
) -> Result<Vec<Value>, ControlError> {
    rollouts.visit(route, |r, rollout, ppm| {
        rollout_json(&r.name, rollout, r.rollout.as_ref(), ppm, now)
    })
}

/// A JSON string field as text (empty when absent).
pub(super) fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// The text form of [`rollout_json`] items.
pub(crate) fn render_text(items: &[Value]) -> String {
    let mut out = String::new();
    for i in items {
        if !out.is_empty() {
            out.push('\n');
        }
        if i["state"] == "none" {
            let plan = i["file_plan"].as_str().map_or_else(
                || "no plan in the configuration file".to_owned(),
                |p| format!("plan in the configuration file: {p}"),
            );
            let _ = write!(
                out,
                "route {}: no rollout, canary {}% ({plan})",
                s(&i["route"]),
                s(&i["canary_percent"])
            );
            continue;
        }
        let _ = write!(
            out,
            "route {}: {} at step {} of {} ({}%, canary now {}%), deployment {}, started by {}",
            s(&i["route"]),
            s(&i["state"]),
            i["step"],
            i["judged_steps"],
            s(&i["step_percent"]),
            s(&i["canary_percent"]),
            s(&i["deployment"]),
            s(&i["origin"])
        );
        if let Some(reason) = i["reason"].as_str() {
            let _ = write!(out, "\n  reason: {reason}");
        }
        let _ = write!(out, "\n  plan: {}", s(&i["plan"]));
        if let Some(next) = i["next_verdict_in_ms"].as_u64() {
            let _ = write!(
                out,
                "\n  window: {:.1}s, next verdict in {:.1}s",
                i["window_ms"].as_u64().unwrap_or(0) as f64 / 1e3,
                next as f64 / 1e3
            );
        }
        if let Some(seq) = i["sequential"].as_object() {
            sequential_text(&mut out, seq);
        }
        for h in i["history"].as_array().into_iter().flatten() {
            let _ = write!(
                out,
                "\n  step {} ({}%) at {:.1}s: {}",
                h["step"],
                s(&h["percent"]),
                h["at_ms"].as_u64().unwrap_or(0) as f64 / 1e3,
                s(&h["summary"])
            );
        }
    }
    if out.is_empty() {
        out.push_str("no routes");
    }
    out
}

/// `show rollout [ROUTE] [json]`.
pub(crate) fn show(
    rollouts: &Rollouts,
    route: Option<&str>,
    as_json: bool,
) -> Result<String, String> {
    let items = report(rollouts, route, Instant::now()).map_err(|e| e.to_string())?;
    if as_json {
        return Ok(
            json!({ "version": rollouts.control().version(), "rollouts": items }).to_string(),
        );
    }
    Ok(render_text(&items))
}

/// The sequential judge's figures of one rollout, for the text form.
fn sequential_text(out: &mut String, seq: &serde_json::Map<String, Value>) {
    let p = |k: &str| {
        seq.get(k)
            .and_then(Value::as_f64)
            .map_or_else(|| "-".to_owned(), |p| format!("{p:.2e}"))
    };
    let _ = write!(
        out,
        "\n  sequential judge now: always-valid p latency {} errors {}",
        p("p_latency"),
        p("p_errors")
    );
    if seq.get("p_retransmits").is_some_and(|v| !v.is_null()) {
        let _ = write!(out, " retransmits {}", p("p_retransmits"));
    }
    if let Some([lo, hi]) = seq
        .get("error_difference")
        .and_then(Value::as_array)
        .map(|a| [a[0].as_f64().unwrap_or(0.0), a[1].as_f64().unwrap_or(0.0)])
    {
        let _ = write!(
            out,
            "; error difference [{:+.2}, {:+.2}] points",
            100.0 * lo,
            100.0 * hi
        );
    }
    let median = &seq["quantiles"][0]["difference_us"];
    let f = |v: &Value| {
        v.as_f64()
            .map_or_else(|| "?".to_owned(), |v| format!("{v:+.0}"))
    };
    let _ = write!(
        out,
        "; median difference [{}, {}]us",
        f(&median[0]),
        f(&median[1])
    );
    for w in seq
        .get("pending")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let _ = write!(out, "\n    to pass: {}", w.as_str().unwrap_or(""));
    }
}
