//! `show canary [ROUTE] [json]`: every route's matching, deployments, share and kill
//! switch, read from the routing state ([`crate::control`]); changes nothing.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::rollout::s;
use super::stats::routes_of;
use crate::config::value::format_percent;
use crate::control::Control;

/// `show canary [ROUTE] [json]`.
pub(crate) fn show(control: &Control, route: Option<&str>, json: bool) -> Result<String, String> {
    let config = control.config();
    let version = control.version();
    let stats = routes_of(control, route)?;
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
                "kill_switch": super::killswitch::kill_switch_json(control, &r.name),
            }));
        }
    }
    if json {
        return Ok(json!({ "version": version, "routes": items }).to_string());
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
            super::killswitch::kill_switch_line(control, s(&i["route"]))
        );
    }
    Ok(out)
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
