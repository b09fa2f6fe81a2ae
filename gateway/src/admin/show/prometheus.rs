//! The rollout and kill-switch series of `/metrics`, in the Prometheus text format, from
//! the same JSON `show rollout` and `show canary` print, so the figures agree.

use std::fmt::Write as _;
use std::time::Instant;

use serde_json::Value;

use super::killswitch::kill_switch_json;
use super::rollout::{report, s};
use crate::judge::Verdict;
use crate::metrics::prometheus::{esc, header};
use crate::rollout::controller::Rollouts;
use crate::rollout::machine::Phase;

/// Appends the rollout and kill-switch series in the Prometheus text format.
pub(crate) fn render(out: &mut String, rollouts: &Rollouts) {
    let Ok(items) = report(rollouts, None, Instant::now()) else {
        return;
    };
    state_series(out, &items);
    judge_series(out, &items);
    kill_switch_series(out, rollouts, &items);
}

/// Step, state and verdict counts of every route's rollout.
fn state_series(out: &mut String, items: &[Value]) {
    let with_rollout = || items.iter().filter(|i| i["state"] != "none");
    header(
        out,
        "canarygate_rollout_step",
        "Current rollout step, from 1 (0 without a rollout).",
        "gauge",
    );
    for i in items {
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
        for state in Phase::NAMES {
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
}

/// The judge's p-values and confidence bounds of every route's rollout.
fn judge_series(out: &mut String, items: &[Value]) {
    let with_rollout = || items.iter().filter(|i| i["state"] != "none");
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
}

/// Kill-switch state and trips of every route that has a switch on.
fn kill_switch_series(out: &mut String, rollouts: &Rollouts, items: &[Value]) {
    let switches: Vec<(String, Value)> = items
        .iter()
        .map(|i| {
            (
                s(&i["route"]).to_owned(),
                kill_switch_json(rollouts.control(), s(&i["route"])),
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
