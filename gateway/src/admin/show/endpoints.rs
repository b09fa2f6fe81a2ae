//! `show endpoints [ROUTE] [json]` and the endpoint series of `/metrics`, from one JSON
//! report of the health state ([`crate::control::health`]) so both agree: per endpoint
//! of each route's deployments its state (up, down, ejected, draining, maintenance),
//! last check, consecutive failures, ejections, requests in flight and idle pooled
//! connections. Changes nothing.

use std::fmt::Write as _;
use std::time::{Instant, UNIX_EPOCH};

use serde_json::{Value, json};

use super::rollout::s;
use crate::control::Control;
use crate::control::health::{Admin, CHECK_BUCKETS};
use crate::metrics::prometheus::{esc, header};

/// One JSON item per endpoint of `route` (every route when `None`).
pub(crate) fn report(control: &Control, route: Option<&str>) -> Result<Vec<Value>, String> {
    let groups = control.health().groups();
    if let Some(name) = route
        && !groups.iter().any(|g| g.route == name)
    {
        return Err(format!("no route named '{name}'"));
    }
    let now = Instant::now();
    let mut items = Vec::new();
    for g in groups.iter().filter(|g| route.is_none_or(|n| n == g.route)) {
        for e in &g.entries {
            let ctl = e.ctl();
            let ep = &e.endpoint;
            let (in_flight, idle) = ep.gauges();
            let counters = (0..ep.workers()).map(|w| ep.counters(w));
            let (c5xx, cgw) = counters.fold((0, 0), |(a, b), c| {
                (a.max(c.consecutive_5xx), b.max(c.consecutive_gateway))
            });
            // Ejected until the health loop brings it back (what the workers see).
            let ejected_for = ctl
                .ejection
                .until
                .map(|u| u.saturating_duration_since(now).as_secs_f64());
            let state = match ctl.admin {
                Admin::Drain => "draining",
                Admin::Maint => "maintenance",
                Admin::Ready if !ctl.check_up => "down",
                Admin::Ready if ejected_for.is_some() => "ejected",
                Admin::Ready => "up",
            };
            let check = g.config.check.as_ref().map(|c| {
                json!({
                    "kind": if c.path.is_some() { "http" } else { "tcp" },
                    "up": ctl.check_up,
                    "consecutive_passed": ctl.successes,
                    "consecutive_failed": ctl.failures,
                    "checks": ctl.checks,
                    "failed": ctl.checks_failed,
                    "buckets": ctl.buckets.to_vec(),
                    "seconds_sum": ctl.took_sum,
                    "last": ctl.last.as_ref().map(|l| json!({
                        "at_unix_s": l.at.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64()),
                        "passed": l.error.is_none(),
                        "detail": l.error.clone().unwrap_or_else(|| match l.status {
                            Some(code) => format!("status {code}"),
                            None => "connected".to_owned(),
                        }),
                        "took_ms": l.took.as_secs_f64() * 1e3,
                    })),
                })
            });
            items.push(json!({
                "route": g.route,
                "variant": g.variant.as_str(),
                "deployment": g.deployment,
                "endpoint": e.addr().to_string(),
                "state": state,
                "serving": ep.state() == crate::dataplane::upstream::health::UP,
                "admin": ctl.admin.name(),
                "panic": g.panic,
                "check": check,
                "ejected_for_s": ejected_for,
                "ejections": ctl.ejection.total,
                "ejections_skipped": ctl.ejection.skipped,
                "consecutive_5xx": c5xx,
                "consecutive_gateway_failures": cgw,
                "in_flight": in_flight,
                "idle_connections": idle,
            }));
        }
    }
    Ok(items)
}

/// `show endpoints [ROUTE] [json]`.
pub(crate) fn show(control: &Control, route: Option<&str>, json: bool) -> Result<String, String> {
    let items = report(control, route)?;
    if json {
        return Ok(json!({ "endpoints": items }).to_string());
    }
    let mut out = String::new();
    let mut last_group = String::new();
    for i in &items {
        let group = format!(
            "route {} {} ({})",
            s(&i["route"]),
            s(&i["variant"]),
            s(&i["deployment"])
        );
        if group != last_group {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(&group);
            if i["panic"] == true {
                out.push_str("  PANIC: every endpoint is down, all take traffic");
            }
            last_group = group;
        }
        let mut state = s(&i["state"]).to_owned();
        if let Some(left) = i["ejected_for_s"].as_f64() {
            let _ = write!(state, " ({left:.1}s left)");
        }
        let check = match &i["check"] {
            Value::Null => "no check".to_owned(),
            c => match &c["last"] {
                Value::Null => format!("{} check: not run yet", s(&c["kind"])),
                l => format!(
                    "{} check {} {} in {:.1}ms (passed {} failed {} in a row)",
                    s(&c["kind"]),
                    if l["passed"] == true {
                        "passed:"
                    } else {
                        "FAILED:"
                    },
                    s(&l["detail"]),
                    l["took_ms"].as_f64().unwrap_or(0.0),
                    c["consecutive_passed"],
                    c["consecutive_failed"],
                ),
            },
        };
        let _ = write!(
            out,
            "\n  {:<22} {:<24} in-flight {} idle {}  ejections {}  consecutive 5xx {} gateway {}  {check}",
            s(&i["endpoint"]),
            state,
            i["in_flight"],
            i["idle_connections"],
            i["ejections"],
            i["consecutive_5xx"],
            i["consecutive_gateway_failures"],
        );
    }
    if out.is_empty() {
        out.push_str("no endpoints");
    }
    Ok(out)
}

/// Appends the endpoint series in the Prometheus text format.
pub(crate) fn render(out: &mut String, control: &Control) {
    let Ok(items) = report(control, None) else {
        return;
    };
    let labels = |i: &Value| {
        format!(
            "route=\"{}\",variant=\"{}\",endpoint=\"{}\"",
            esc(s(&i["route"])),
            s(&i["variant"]),
            esc(s(&i["endpoint"]))
        )
    };
    let gauge =
        |out: &mut String, name: &str, help: &str, kind: &str, f: &dyn Fn(&Value) -> u64| {
            header(out, name, help, kind);
            for i in &items {
                let _ = writeln!(out, "{name}{{{}}} {}", labels(i), f(i));
            }
        };
    gauge(
        out,
        "canarygate_endpoint_up",
        "1 when the endpoint takes new requests (up: not down, ejected, draining or in maintenance).",
        "gauge",
        &|i| u64::from(i["serving"] == true),
    );
    gauge(
        out,
        "canarygate_endpoint_ejections_total",
        "Passive outlier ejections of the endpoint.",
        "counter",
        &|i| i["ejections"].as_u64().unwrap_or(0),
    );
    gauge(
        out,
        "canarygate_endpoint_in_flight",
        "Requests in flight on the endpoint, summed over workers.",
        "gauge",
        &|i| i["in_flight"].as_u64().unwrap_or(0),
    );
    gauge(
        out,
        "canarygate_endpoint_idle_connections",
        "Idle pooled connections to the endpoint, summed over workers.",
        "gauge",
        &|i| i["idle_connections"].as_u64().unwrap_or(0),
    );
    header(
        out,
        "canarygate_endpoint_health_checks_total",
        "Active health checks of the endpoint, by result.",
        "counter",
    );
    for i in items.iter().filter(|i| !i["check"].is_null()) {
        let c = &i["check"];
        let (all, failed) = (
            c["checks"].as_u64().unwrap_or(0),
            c["failed"].as_u64().unwrap_or(0),
        );
        let l = labels(i);
        let _ = writeln!(
            out,
            "canarygate_endpoint_health_checks_total{{{l},result=\"passed\"}} {}",
            all - failed.min(all)
        );
        let _ = writeln!(
            out,
            "canarygate_endpoint_health_checks_total{{{l},result=\"failed\"}} {failed}"
        );
    }
    header(
        out,
        "canarygate_endpoint_health_check_duration_seconds",
        "Time an active health check took, per endpoint.",
        "histogram",
    );
    for i in items.iter().filter(|i| !i["check"].is_null()) {
        let c = &i["check"];
        let l = labels(i);
        let mut cumulative = 0;
        let buckets: Vec<u64> = c["buckets"]
            .as_array()
            .map(|b| b.iter().map(|v| v.as_u64().unwrap_or(0)).collect())
            .unwrap_or_default();
        for (k, le) in CHECK_BUCKETS.iter().enumerate() {
            cumulative += buckets.get(k).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "canarygate_endpoint_health_check_duration_seconds_bucket{{{l},le=\"{le}\"}} {cumulative}"
            );
        }
        let count = c["checks"].as_u64().unwrap_or(0);
        let _ = writeln!(
            out,
            "canarygate_endpoint_health_check_duration_seconds_bucket{{{l},le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "canarygate_endpoint_health_check_duration_seconds_sum{{{l}}} {}",
            c["seconds_sum"].as_f64().unwrap_or(0.0)
        );
        let _ = writeln!(
            out,
            "canarygate_endpoint_health_check_duration_seconds_count{{{l}}} {count}"
        );
    }
    header(
        out,
        "canarygate_deployment_panic",
        "1 while every endpoint of the deployment is down and all of them take traffic (panic mode).",
        "gauge",
    );
    let mut seen = std::collections::HashSet::new();
    for i in &items {
        let key = (s(&i["route"]).to_owned(), s(&i["variant"]).to_owned());
        if seen.insert(key) {
            let _ = writeln!(
                out,
                "canarygate_deployment_panic{{route=\"{}\",variant=\"{}\"}} {}",
                esc(s(&i["route"])),
                s(&i["variant"]),
                u64::from(i["panic"] == true)
            );
        }
    }
}
