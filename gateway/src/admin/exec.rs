//! Runs admin commands against the routing state ([`Control`]) and the rollout controller
//! ([`Rollouts`], which owns the rollouts and is the way in for reloads), and formats the
//! answers: human-readable text by default, JSON on request (the `show rollout` and
//! kill-switch renderers live in [`super::show`]). Mutating commands are audit-logged
//! with who ran them.

use std::fmt::Write as _;
use std::path::Path;

use gateway_common::Variant;
use serde_json::{Value, json};

use super::protocol::{Command, HELP, parse};
use crate::config::value::format_percent;
use crate::control::Control;
use crate::metrics::{RouteStats, VariantStats};
use crate::rollout::controller::Rollouts;

/// An answer: its text and whether the command succeeded.
#[derive(Debug, PartialEq, Eq)]
pub struct Reply {
    /// True unless the command failed.
    pub ok: bool,
    /// Lines without the terminating empty line; errors start with `error: `.
    pub text: String,
}

impl Reply {
    fn ok(text: String) -> Reply {
        Reply { ok: true, text }
    }

    fn err(text: impl std::fmt::Display) -> Reply {
        Reply {
            ok: false,
            text: format!("error: {text}"),
        }
    }
}

/// Parses and runs `line` for `who` (for the audit log).
pub(crate) fn execute(rollouts: &Rollouts, line: &str, who: &str) -> Reply {
    let control = rollouts.control();
    let request = match parse(line) {
        Ok(r) => r,
        Err(e) => return Reply::err(e),
    };
    // A trip the workers made since the controller's last tick is part of the state
    // this command reads or changes.
    rollouts.record_kill_switch_trips();
    let expect = request.expect;
    let mutates = request.command.mutates();
    let reply = match request.command {
        Command::Help => Reply::ok(HELP.to_owned()),
        Command::ShowVersion => Reply::ok(format!("version {}", control.version())),
        Command::ShowCanary { route, json } => show_canary(control, route.as_deref(), json),
        Command::ShowStats { route, json } => show_stats(control, route.as_deref(), json),
        Command::SetPercent { ref route, ppm } => result(control.set_percent(expect, route, ppm)),
        Command::SetVar {
            ref route,
            ref key,
            ref value,
        } => result(control.set_var(expect, route, key, value)),
        Command::DelVar { ref route, ref key } => result(control.del_var(expect, route, key)),
        Command::SetDeployment {
            ref route,
            ref id,
            ref endpoints,
        } => result(control.set_deployment(expect, route, id, endpoints)),
        Command::Promote { ref route } => result(control.promote(expect, route)),
        Command::Rollback { ref route } => result(control.rollback(expect, route)),
        Command::Reload => reload(rollouts, expect),
        Command::Rollout(ref cmd) => result(rollouts.rollout(expect, cmd, who)),
        Command::ShowRollout { route, json } => {
            match super::show::rollout::show(rollouts, route.as_deref(), json) {
                Ok(text) => Reply::ok(text),
                Err(e) => Reply::err(e),
            }
        }
    };
    if mutates {
        let outcome = if reply.ok { "ok" } else { "refused" };
        log::info!(target: "canarygate::audit", "{who}: '{}' {outcome}: {}", line.trim(), reply.text.replace('\n', "; "));
    }
    reply
}

fn result(r: Result<String, crate::control::ControlError>) -> Reply {
    match r {
        Ok(text) => Reply::ok(text),
        Err(e) => Reply::err(e),
    }
}

/// Re-reads the configuration file the gateway started with and applies the difference
/// through the rollout controller (which keeps rollouts' shares).
pub(crate) fn reload(rollouts: &Rollouts, expect: Option<u64>) -> Reply {
    let control = rollouts.control();
    let current = control.config();
    let Some(source) = current.server.source.as_deref() else {
        return Reply::err("reload: the gateway was not started with --config");
    };
    if let Some(expected) = expect
        && expected != control.version()
    {
        return Reply::err(format!(
            "version mismatch: expected {expected}, current is {}",
            control.version()
        ));
    }
    match crate::config::file::load(Path::new(source)) {
        Err(e) => Reply::err(format!("reload: {e}")),
        Ok(new) => result(rollouts.reload(&new).map(|lines| lines.join("\n"))),
    }
}

fn routes_of(control: &Control, route: Option<&str>) -> Result<Vec<RouteStats>, Reply> {
    let stats = control.stats();
    let routes: Vec<RouteStats> = stats
        .routes
        .into_iter()
        .filter(|r| route.is_none_or(|n| n == r.name))
        .collect();
    if let (Some(name), true) = (route, routes.is_empty()) {
        return Err(Reply::err(format!("no route named '{name}'")));
    }
    Ok(routes)
}

fn show_canary(control: &Control, route: Option<&str>, json: bool) -> Reply {
    let config = control.config();
    let version = control.version();
    let stats = match routes_of(control, route) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let mut items = Vec::new();
    for stage in &config.stages {
        for r in stage
            .routes
            .iter()
            .filter(|r| stats.iter().any(|s| s.name == r.name))
        {
            let ppm = stats
                .iter()
                .find(|s| s.name == r.name)
                .map_or(0, |s| s.canary_ppm);
            let assignment = match &r.assignment {
                crate::config::Assignment::Random => "random".to_owned(),
                crate::config::Assignment::Sticky { key, .. } => match key {
                    crate::config::StickyKey::Header(h) => format!("sticky header:{h}"),
                    crate::config::StickyKey::Cookie(c) => format!("sticky cookie:{c}"),
                    crate::config::StickyKey::ClientIp => "sticky ip".to_owned(),
                },
            };
            items.push(json!({
                "stage": stage.name,
                "route": r.name,
                "host": r.host,
                "path_prefix": r.path_prefix,
                "assignment": assignment,
                "force_header": r.force_header,
                "force_cookie": r.force_cookie,
                "stable": {
                    "id": r.stable.id,
                    "endpoints": r.stable.endpoints.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "variables": r.stable.variables,
                },
                "canary": r.canary.as_ref().map(|c| json!({
                    "id": c.deployment.id,
                    "endpoints": c.deployment.endpoints.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "percent": format_percent(ppm),
                    "ppm": ppm,
                    "variables": c.deployment.variables,
                })),
                "kill_switch": super::show::killswitch::kill_switch_json(control, &r.name),
            }));
        }
    }
    if json {
        return Reply::ok(json!({ "version": version, "routes": items }).to_string());
    }
    let mut out = format!("version {version}");
    for i in &items {
        let _ = write!(
            out,
            "\nroute {} (stage {}, host {}, prefix {}, assignment {})",
            s(&i["route"]),
            s(&i["stage"]),
            i["host"].as_str().unwrap_or("*"),
            s(&i["path_prefix"]),
            s(&i["assignment"])
        );
        let _ = write!(
            out,
            "\n  stable  {}  {}  vars: {}",
            s(&i["stable"]["id"]),
            list(&i["stable"]["endpoints"]),
            vars(&i["stable"]["variables"])
        );
        match i["canary"].as_object() {
            Some(c) => {
                let _ = write!(
                    out,
                    "\n  canary  {}  {}  {}%  overrides: {}",
                    s(&c["id"]),
                    list(&c["endpoints"]),
                    s(&c["percent"]),
                    vars(&c["variables"])
                );
            }
            None => out.push_str("\n  canary  none"),
        }
        let _ = write!(
            out,
            "\n  kill switch: {}",
            super::show::killswitch::kill_switch_line(control, s(&i["route"]))
        );
    }
    Reply::ok(out)
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn list(v: &Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|x| s(x).to_owned())
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn vars(v: &Value) -> String {
    match v.as_object() {
        Some(m) if !m.is_empty() => m
            .iter()
            .map(|(k, v)| format!("{k}={}", s(v)))
            .collect::<Vec<_>>()
            .join(" "),
        _ => "-".into(),
    }
}

fn variant_json(v: &VariantStats) -> Value {
    let q = |h: &crate::metrics::Histogram<u64>, p: f64| {
        if h.is_empty() {
            Value::Null
        } else {
            json!(h.value_at_quantile(p))
        }
    };
    json!({
        "requests": v.requests,
        "in_flight": v.in_flight,
        "responses": { "1xx": v.responses[0], "2xx": v.responses[1], "3xx": v.responses[2], "4xx": v.responses[3], "5xx": v.responses[4] },
        "upstream_errors": crate::metrics::UpstreamFailure::ALL
            .iter()
            .map(|k| (k.as_str().to_owned(), json!(v.upstream_failures[*k as usize])))
            .collect::<serde_json::Map<String, Value>>(),
        "retries": v.retries,
        "stale_retries": v.stale_retries,
        "upstream_connects": v.upstream_connects,
        "upstream_reuses": v.upstream_reuses,
        "bytes_in": v.bytes_in,
        "bytes_out": v.bytes_out,
        "latency_us": { "p50": q(&v.total_latency, 0.5), "p90": q(&v.total_latency, 0.9), "p99": q(&v.total_latency, 0.99), "max": if v.total_latency.is_empty() { Value::Null } else { json!(v.total_latency.max()) } },
        "upstream_latency_us": { "p50": q(&v.upstream_latency, 0.5), "p99": q(&v.upstream_latency, 0.99) },
    })
}

fn show_stats(control: &Control, route: Option<&str>, json: bool) -> Reply {
    let routes = match routes_of(control, route) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let items: Vec<Value> = routes
        .iter()
        .map(|r| {
            json!({
                "stage": r.stage,
                "route": r.name,
                "canary_percent": format_percent(r.canary_ppm),
                "stable": { "deployment": r.deployments[0], "stats": variant_json(&r.variants[0]) },
                "canary": { "deployment": r.deployments[1], "stats": variant_json(&r.variants[1]) },
            })
        })
        .collect();
    if json {
        let kernel = crate::kernel::report::json(control.kernel_stats().as_ref());
        return Reply::ok(
            json!({ "version": control.version(), "routes": items, "kernel": kernel }).to_string(),
        );
    }
    let mut out = String::from(
        "route        variant  deployment   requests  2xx       3xx      4xx      5xx      upstream_err  p50_us  p99_us",
    );
    for r in &routes {
        for v in Variant::ALL {
            let st = &r.variants[v.index()];
            let p = |q: f64| {
                if st.total_latency.is_empty() {
                    "-".to_owned()
                } else {
                    st.total_latency.value_at_quantile(q).to_string()
                }
            };
            let _ = write!(
                out,
                "\n{:<12} {:<8} {:<12} {:<9} {:<9} {:<8} {:<8} {:<8} {:<13} {:<7} {}",
                r.name,
                v.as_str(),
                r.deployments[v.index()].as_deref().unwrap_or("-"),
                st.requests,
                st.responses[1],
                st.responses[2],
                st.responses[3],
                st.responses[4],
                st.upstream_errors(),
                p(0.5),
                p(0.99)
            );
        }
    }
    let _ = write!(
        out,
        "\n{}",
        crate::kernel::report::text(control.kernel_stats().as_ref())
    );
    Reply::ok(out)
}
