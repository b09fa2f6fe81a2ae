//! What operators see of rollouts and kill switches: `show rollout [ROUTE] [json]`, the
//! kill-switch part of `show canary`, and the Prometheus series.

use std::fmt::Write as _;
use std::time::Instant;

use serde_json::{Value, json};

use super::machine::Rollout;
use super::plan::Plan;
use crate::config::value::format_percent;
use crate::control::Control;
use crate::judge::Verdict;
use crate::metrics::prometheus::{esc, header};
use crate::rollout::killswitch::Describe as _;

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
        "next_verdict_in_ms": (r.phase == super::machine::Phase::Running).then_some(next.as_millis() as u64),
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

fn s(v: &Value) -> &str {
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
    control: &Control,
    route: Option<&str>,
    as_json: bool,
) -> Result<String, String> {
    let items = control
        .rollout_report(route, Instant::now())
        .map_err(|e| e.to_string())?;
    if as_json {
        return Ok(json!({ "version": control.version(), "rollouts": items }).to_string());
    }
    Ok(render_text(&items))
}

/// The kill switch of `route` for `show canary json` (`null` when off).
pub(crate) fn kill_switch_json(control: &Control, route: &str) -> Value {
    control
        .kill_switch(route)
        .map_or(Value::Null, |(k, c)| k.json(c.as_ref()))
}

/// The kill switch of `route` for `show canary`.
pub(crate) fn kill_switch_line(control: &Control, route: &str) -> String {
    control
        .kill_switch(route)
        .map_or_else(|| "off".into(), |(k, c)| k.describe(c.as_ref()))
}

/// Appends the rollout and kill-switch series in the Prometheus text format.
pub(crate) fn render_prometheus(out: &mut String, control: &Control) {
    let Ok(items) = control.rollout_report(None, Instant::now()) else {
        return;
    };
    let with_rollout = || items.iter().filter(|i| i["state"] != "none");
    header(
        out,
        "canarygate_rollout_step",
        "Current rollout step, from 1 (0 without a rollout).",
        "gauge",
    );
    for i in &items {
        let _ = writeln!(
            out,
            "canarygate_rollout_step{{route=\"{}\"}} {}",
            esc(s(&i["route"])),
            i["step"].as_u64().unwrap_or(0)
        );
    }
    header(
        out,
        "canarygate_rollout_state",
        "1 for the state the route's last rollout is in.",
        "gauge",
    );
    for i in with_rollout() {
        for state in super::machine::Phase::NAMES {
            let _ = writeln!(
                out,
                "canarygate_rollout_state{{route=\"{}\",state=\"{state}\"}} {}",
                esc(s(&i["route"])),
                u8::from(i["state"] == state)
            );
        }
    }
    header(
        out,
        "canarygate_rollout_verdicts_total",
        "Verdicts of the canary judge in the route's last rollout.",
        "counter",
    );
    for i in with_rollout() {
        for v in Verdict::ALL {
            let n = i["verdicts"][v.as_str()].as_u64().unwrap_or(0);
            let _ = writeln!(
                out,
                "canarygate_rollout_verdicts_total{{route=\"{}\",verdict=\"{}\"}} {n}",
                esc(s(&i["route"])),
                v.as_str()
            );
        }
    }
    header(
        out,
        "canarygate_rollout_last_p_value",
        "One-sided p-value (canary worse) of the last verdict.",
        "gauge",
    );
    for i in with_rollout() {
        let detail = &i["last"]["detail"];
        for (metric, p) in [
            ("latency", &detail["latency"]["p_canary_slower"]),
            ("errors", &detail["errors"]["p_canary_worse"]),
        ] {
            if let Some(p) = p.as_f64() {
                let _ = writeln!(
                    out,
                    "canarygate_rollout_last_p_value{{route=\"{}\",metric=\"{metric}\"}} {p:e}",
                    esc(s(&i["route"]))
                );
            }
        }
    }
    header(
        out,
        "canarygate_rollout_p_value",
        "Always-valid p-value (canary worse) of the sequential judge, over the whole rollout.",
        "gauge",
    );
    for i in with_rollout() {
        let seq = &i["sequential"];
        for (test, p) in [
            ("latency", &seq["p_latency"]),
            ("errors", &seq["p_errors"]),
            ("retransmits", &seq["p_retransmits"]),
        ] {
            if let Some(p) = p.as_f64() {
                let _ = writeln!(
                    out,
                    "canarygate_rollout_p_value{{route=\"{}\",test=\"{test}\"}} {p:e}",
                    esc(s(&i["route"]))
                );
            }
        }
    }
    header(
        out,
        "canarygate_rollout_confidence_bound",
        "Confidence-sequence bounds of canary minus stable in the current step: error rate (fraction) and median latency (seconds).",
        "gauge",
    );
    for i in with_rollout() {
        let seq = &i["sequential"];
        for (quantity, pair, scale) in [
            ("error_rate", &seq["error_difference"], 1.0),
            (
                "median_latency_seconds",
                &seq["quantiles"][0]["difference_us"],
                1e-6,
            ),
        ] {
            for (side, v) in ["lower", "upper"].iter().zip([&pair[0], &pair[1]]) {
                if let Some(v) = v.as_f64() {
                    let _ = writeln!(
                        out,
                        "canarygate_rollout_confidence_bound{{route=\"{}\",quantity=\"{quantity}\",side=\"{side}\"}} {}",
                        esc(s(&i["route"])),
                        v * scale
                    );
                }
            }
        }
    }
    let switches: Vec<(String, Value)> = items
        .iter()
        .map(|i| {
            (
                s(&i["route"]).to_owned(),
                kill_switch_json(control, s(&i["route"])),
            )
        })
        .filter(|(_, k)| !k.is_null())
        .collect();
    header(
        out,
        "canarygate_kill_switch_tripped",
        "1 while the canary kill switch holds the canary share at 0.",
        "gauge",
    );
    for (route, k) in &switches {
        let _ = writeln!(
            out,
            "canarygate_kill_switch_tripped{{route=\"{}\"}} {}",
            esc(route),
            u8::from(k["tripped"] == true)
        );
    }
    header(
        out,
        "canarygate_kill_switch_trips_total",
        "Times the canary kill switch tripped.",
        "counter",
    );
    for (route, k) in &switches {
        let _ = writeln!(
            out,
            "canarygate_kill_switch_trips_total{{route=\"{}\"}} {}",
            esc(route),
            k["trips"].as_u64().unwrap_or(0)
        );
    }
}
