//! `show fleet [json]` and the fleet series of `/metrics`, from the store's status
//! ([`crate::control::store::StoreStatus`]): etcd's endpoints and whether it answers,
//! this gateway's name and version, the members with their versions and last
//! heartbeats, the rollout leader, and the changes refused while etcd was down. Changes
//! nothing.

use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::control::Control;
use crate::control::store::StoreStatus;
use crate::dataplane::io::clock::utc;
use crate::metrics::prometheus::{esc, header};
use crate::rollout::controller::Rollouts;

fn secs(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 10.0).round() / 10.0
}

fn report(s: &StoreStatus, version: u64) -> Value {
    json!({
        "prefix": s.prefix,
        "etcd": s.endpoints,
        "etcd_up": s.outage.is_none(),
        "outage": s.outage.as_ref().map(|(wall, since, error)| json!({
            "since": utc(wall.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()).cast_signed()),
            "for_s": secs(*since),
            "error": error,
        })),
        "member": s.member,
        "version": version,
        "leader": s.leader,
        "is_leader": s.is_leader,
        "members": s.members.iter().map(|m| json!({
            "name": m.name,
            "pid": m.pid,
            "version": m.version,
            "heartbeat_age_s": secs(m.heartbeat_age),
            "uptime_s": secs(m.uptime),
            "leader": s.leader.as_deref() == Some(m.name.as_str()),
        })).collect::<Vec<_>>(),
        "changes_refused": s.refused,
        "etcd_outages": s.outages,
        "cache": s.cache,
    })
}

/// `show fleet [json]`.
pub(crate) fn show(control: &Control, json: bool) -> Result<String, String> {
    let Some(store) = control.store() else {
        return Err("this gateway is not in a fleet (start it with --etcd URL)".into());
    };
    let s = store.status();
    let version = control.version();
    if json {
        return Ok(report(&s, version).to_string());
    }
    let mut out = format!(
        "fleet {} on etcd {}: this gateway is {}, serving version {version}",
        s.prefix,
        s.endpoints.join(","),
        s.member
    );
    match &s.outage {
        None => out.push_str("\netcd: up"),
        Some((_, since, error)) => {
            let _ = write!(
                out,
                "\netcd: UNREACHABLE for {:.1}s ({error}); serving version {version} from memory, changes are refused",
                since.as_secs_f64()
            );
        }
    }
    let _ = write!(
        out,
        "\nleader: {}",
        match (&s.leader, s.is_leader) {
            (Some(l), true) => format!("{l} (this gateway)"),
            (Some(l), false) => l.clone(),
            (None, _) => "none".into(),
        }
    );
    let stale = if s.outage.is_some() {
        " (as last seen)"
    } else {
        ""
    };
    let _ = write!(out, "\n{} member(s){stale}:", s.members.len());
    for m in &s.members {
        let _ = write!(
            out,
            "\n  {:<20} pid {:<8} version {:<8} heartbeat {:.1}s ago, up {:.0}s{}",
            m.name,
            m.pid,
            m.version,
            m.heartbeat_age.as_secs_f64(),
            m.uptime.as_secs_f64(),
            if s.leader.as_deref() == Some(m.name.as_str()) {
                "  leader"
            } else {
                ""
            }
        );
    }
    let _ = write!(
        out,
        "\nchanges refused while etcd was unreachable: {}; etcd outages: {}",
        s.refused, s.outages
    );
    Ok(out)
}

/// `show fleet stats [ROUTE] [json]`: every member's figures of each route summed, as
/// the leader's judge sees them (members that left included, up to when they left), and
/// which members' figures are fresh.
pub(crate) fn stats(
    rollouts: &Rollouts,
    route: Option<&str>,
    json: bool,
) -> Result<String, String> {
    let Some(steering) = rollouts.steering() else {
        return Err("this gateway is not in a fleet (start it with --etcd URL)".into());
    };
    let control = rollouts.control();
    let routes: Vec<String> = control
        .routes_with_share(route)
        .into_iter()
        .map(|(r, _)| r.name)
        .collect();
    if let (Some(name), true) = (route, routes.is_empty()) {
        return Err(format!("no route named '{name}'"));
    }
    let (coverage, who) = steering.coverage(&Value::Null);
    let figures: Vec<(String, crate::rollout::steering::Figures)> = routes
        .into_iter()
        .map(|name| {
            let f = steering.figures(&name);
            (name, f)
        })
        .collect();
    if json {
        let items: Vec<Value> = figures
            .iter()
            .map(|(name, (v, _))| {
                json!({
                    "route": name,
                    "stable": super::stats::variant_json(&v[0]),
                    "canary": super::stats::variant_json(&v[1]),
                })
            })
            .collect();
        return Ok(
            json!({ "version": control.version(), "routes": items, "members": who }).to_string(),
        );
    }
    let mut out = format!("{coverage}\nroute        variant  requests  5xx       p50_us  p99_us");
    for (name, (v, _)) in &figures {
        for variant in gateway_common::Variant::ALL {
            let st = &v[variant.index()];
            let p = |q: f64| {
                if st.total_latency.is_empty() {
                    "-".to_owned()
                } else {
                    st.total_latency.value_at_quantile(q).to_string()
                }
            };
            let _ = write!(
                out,
                "\n{name:<12} {:<8} {:<9} {:<9} {:<7} {}",
                variant.as_str(),
                st.requests,
                st.responses[4],
                p(0.5),
                p(0.99)
            );
        }
    }
    Ok(out)
}

/// Appends the `canarygate_fleet_*` series, in fleet mode.
pub(crate) fn render(out: &mut String, control: &Control) {
    let Some(store) = control.store() else {
        return;
    };
    let s = store.status();
    let prefix = esc(&s.prefix);
    let gauge = |out: &mut String, name: &str, help: &str, kind: &str, value: u64| {
        header(out, name, help, kind);
        let _ = writeln!(out, "{name}{{fleet=\"{prefix}\"}} {value}");
    };
    gauge(
        out,
        "canarygate_fleet_etcd_up",
        "1 while etcd answers this gateway, 0 while it serves its last configuration without it.",
        "gauge",
        u64::from(s.outage.is_none()),
    );
    gauge(
        out,
        "canarygate_fleet_config_version",
        "The fleet configuration version (etcd revision) this gateway serves.",
        "gauge",
        control.version(),
    );
    gauge(
        out,
        "canarygate_fleet_members",
        "Members of the fleet as last listed.",
        "gauge",
        s.members.len() as u64,
    );
    gauge(
        out,
        "canarygate_fleet_leader",
        "1 when this gateway runs the fleet's rollouts.",
        "gauge",
        u64::from(s.is_leader),
    );
    gauge(
        out,
        "canarygate_fleet_changes_refused_total",
        "Changes refused because etcd could not take them.",
        "counter",
        s.refused,
    );
    gauge(
        out,
        "canarygate_fleet_etcd_outages_total",
        "Times etcd stopped answering this gateway.",
        "counter",
        s.outages,
    );
}
