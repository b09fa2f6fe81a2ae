//! Every member's figures, for the fleet's judge: each member publishes its cumulative
//! per-route, per-variant counters and latency histograms (and the kernel's figures)
//! under its lease at every heartbeat (`PREFIX/stats/NAME`), and every member keeps the
//! latest of each *instance* (a member's run: name and boot) it has seen, also after the
//! instance left, so that the fleet's sum only grows while this process runs. A window
//! is then the sum now less the sum at its start ([`Ledger::mark`]), instance by
//! instance, which stays right across a leader's takeover and a member's restart.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use gateway_common::VARIANT_COUNT;
use serde_json::{Map, Value, json};

use crate::control::Control;
use crate::kernel::KernelStats;
use crate::metrics::VariantStats;
use crate::metrics::wire::{
    add_kernel, add_variant, kernel_from_json, kernel_json, variant_from_json, variant_json,
};
use crate::rollout::steering::Figures;

/// Instances kept after they left (the oldest are dropped beyond this).
const KEEP_GONE: usize = 256;

/// One member's run as its latest publication has it.
#[derive(Debug)]
struct Instance {
    member: String,
    at_ms: u64,
    routes: HashMap<String, [VariantStats; VARIANT_COUNT]>,
    kernel: Option<KernelStats>,
    /// Still publishing (its key exists).
    live: bool,
}

/// The latest figures of every instance seen.
#[derive(Debug, Default)]
pub(super) struct Ledger {
    instances: HashMap<String, Instance>,
}

/// This gateway's figures as it publishes them.
pub(super) fn publication(control: &Control, member: &str, boot: &str, at_ms: u64) -> Value {
    let mut routes = Map::new();
    for (r, _) in control.routes_with_share(None) {
        if let Some(c) = control.counters(&r.name) {
            routes.insert(
                r.name,
                json!(c.iter().map(variant_json).collect::<Vec<_>>()),
            );
        }
    }
    json!({
        "member": member,
        "boot": boot,
        "at_ms": at_ms,
        "routes": routes,
        "kernel": control.kernel_stats().as_ref().map(kernel_json),
    })
}

fn variants(v: &Value) -> Result<[VariantStats; VARIANT_COUNT], String> {
    let a = v
        .as_array()
        .filter(|a| a.len() == VARIANT_COUNT)
        .ok_or("variants")?;
    Ok([variant_from_json(&a[0])?, variant_from_json(&a[1])?])
}

impl Ledger {
    /// Takes every publication listed now; instances not listed have left.
    pub(super) fn ingest(&mut self, listed: &[(String, String)]) {
        for i in self.instances.values_mut() {
            i.live = false;
        }
        for (key, text) in listed {
            match parse(text) {
                Ok((id, instance)) => {
                    self.instances.insert(id, instance);
                }
                Err(e) => log::warn!("fleet: figures at {key} cannot be read: {e}"),
            }
        }
        let gone: Vec<(u64, String)> = self
            .instances
            .iter()
            .filter(|(_, i)| !i.live)
            .map(|(id, i)| (i.at_ms, id.clone()))
            .collect();
        if gone.len() > KEEP_GONE {
            let mut gone = gone;
            gone.sort();
            for (_, id) in gone.iter().take(gone.len() - KEEP_GONE) {
                self.instances.remove(id);
            }
        }
    }

    /// The sum over every instance seen.
    pub(super) fn figures(&self, route: &str) -> Figures {
        let mut sum: [VariantStats; VARIANT_COUNT] = Default::default();
        let mut kernel: Option<KernelStats> = None;
        for i in self.instances.values() {
            if let Some(r) = i.routes.get(route) {
                for (into, v) in sum.iter_mut().zip(r) {
                    add_variant(into, v);
                }
            }
            if let Some(k) = &i.kernel {
                add_kernel(kernel.get_or_insert_with(KernelStats::default), k);
            }
        }
        (sum, kernel)
    }

    /// Every instance's figures of `route` now: `{instance: {"member", "stats", "kernel"}}`.
    pub(super) fn mark(&self, route: &str) -> Value {
        let mut out = Map::new();
        for (id, i) in &self.instances {
            let stats = i
                .routes
                .get(route)
                .map(|r| json!(r.iter().map(variant_json).collect::<Vec<_>>()));
            out.insert(
                id.clone(),
                json!({
                    "member": i.member,
                    "stats": stats,
                    "kernel": i.kernel.as_ref().map(kernel_json),
                }),
            );
        }
        Value::Object(out)
    }

    /// The sum at `mark` over the instances this ledger knows (one it never saw adds
    /// nothing now, so it must not be taken off either).
    pub(super) fn at_mark(&self, mark: &Value) -> Figures {
        let mut sum: [VariantStats; VARIANT_COUNT] = Default::default();
        let mut kernel: Option<KernelStats> = None;
        let Some(m) = mark.as_object() else {
            return (sum, kernel);
        };
        for (id, entry) in m {
            if !self.instances.contains_key(id) {
                continue;
            }
            if let Ok(v) = variants(&entry["stats"]) {
                for (into, x) in sum.iter_mut().zip(&v) {
                    add_variant(into, x);
                }
            }
            if let Ok(k) = kernel_from_json(&entry["kernel"]) {
                add_kernel(kernel.get_or_insert_with(KernelStats::default), &k);
            }
        }
        (sum, kernel)
    }

    /// Who is in a window since `mark`, against the members that heartbeat now: live
    /// instances with fresh figures contributed; a member without fresh figures, or an
    /// instance of the window that left, is named as missing.
    pub(super) fn coverage(
        &self,
        mark: &Value,
        members: &[String],
        now_ms: u64,
        fresh: Duration,
    ) -> (String, Value) {
        let fresh_ms = fresh.as_millis() as u64;
        let mut contributed: Vec<String> = self
            .instances
            .values()
            .filter(|i| i.live && now_ms.saturating_sub(i.at_ms) <= fresh_ms)
            .map(|i| i.member.clone())
            .collect();
        contributed.sort();
        contributed.dedup();
        let mut missing: Vec<String> = members
            .iter()
            .filter(|m| !contributed.contains(m))
            .map(|m| format!("{m} (no figures for over {}s)", fresh.as_secs()))
            .collect();
        if let Some(m) = mark.as_object() {
            for (id, entry) in m {
                let left = self.instances.get(id).is_none_or(|i| !i.live);
                let name = entry["member"].as_str().unwrap_or("?");
                if left && !contributed.iter().any(|c| c == name) {
                    missing.push(format!(
                        "{name} (left during the window; its figures until then are counted)"
                    ));
                }
            }
        }
        missing.sort();
        missing.dedup();
        let mut line = format!(
            "fleet: {} member(s) contributed ({})",
            contributed.len(),
            contributed.join(", ")
        );
        if !missing.is_empty() {
            let _ = write!(line, "; missing: {}", missing.join(", "));
        }
        (
            line,
            json!({ "contributed": contributed, "missing": missing }),
        )
    }
}

fn parse(text: &str) -> Result<(String, Instance), String> {
    let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let member = v["member"].as_str().ok_or("member")?.to_owned();
    let boot = v["boot"].as_str().ok_or("boot")?;
    let at_ms = v["at_ms"].as_u64().ok_or("at_ms")?;
    let mut routes = HashMap::new();
    for (name, r) in v["routes"].as_object().ok_or("routes")? {
        routes.insert(
            name.clone(),
            variants(r).map_err(|e| format!("routes.{name}: {e}"))?,
        );
    }
    let kernel = match &v["kernel"] {
        Value::Null => None,
        k => Some(kernel_from_json(k).map_err(|e| format!("kernel: {e}"))?),
    };
    Ok((
        format!("{member}/{boot}"),
        Instance {
            member,
            at_ms,
            routes,
            kernel,
            live: true,
        },
    ))
}
