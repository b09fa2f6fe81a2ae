//! The inverse of [`super::file`] for the routing part: a [`Config`]'s stages rendered
//! as `[[stage]]` / `[[stage.route]]` TOML in the configuration-file format, so a
//! configuration changed in memory (fleet mode's admin commands, `fleet export`) can be
//! stored and read back by [`super::file::parse`]. Built as `toml` values, never by
//! pasting strings, so quoting is always right.
//!
//! Guarantee (tested in `render/tests.rs`): for every configuration the parser produces,
//! parsing the rendered text gives the same stages, and rendering is stable. Values are
//! written in the file's syntax: percents as the shortest exact decimal (`5`, `12.25`),
//! durations as `2s` / `500ms`, status sets as `2xx` / `200,204` / `500-503`, endpoints
//! as resolved addresses (`https://` for a deployment with upstream TLS). Route-level
//! `health_check` / `outlier` defaults are written out on each deployment instead.
//!
//! What cannot come back exactly (no parsed configuration has it): durations finer than a
//! millisecond or zero where the file needs one above zero, counts above `i64::MAX`,
//! non-UTF-8 paths, a TCP health check with a non-default `expect`, an empty status set.
//! Relative TLS paths are resolved again against the directory of the path given to
//! `parse`: they come back unchanged when that path has no directory, or when the first
//! parse already made them absolute.

use std::path::Path;
use std::time::Duration;

use toml::{Table, Value};

use super::health::{HealthCheck, HealthConfig, Outlier, StatusSet};
use super::killswitch::KillSwitchConfig;
use super::value::{format_duration, format_percent};
use super::{
    Assignment, Config, Deployment, RouteConfig, StageConfig, StageTls, StickyKey, TlsVersion,
    UpstreamProtocol, UpstreamTls,
};
use crate::rollout::Plan;
use crate::rollout::plan::{JudgeKind, OnTimeout};

/// Force header of a route whose file says nothing.
const DEFAULT_FORCE_HEADER: &str = "x-canary";
/// Force cookie of a route whose file says nothing.
const DEFAULT_FORCE_COOKIE: &str = "canary";

/// Every stage of `config` as `[[stage]]` tables with their `[[stage.route]]`s, in the
/// configuration-file format; no `[server]` section.
pub(crate) fn stages_toml(config: &Config) -> String {
    let stages = config
        .stages
        .iter()
        .map(|s| Value::Table(stage(s)))
        .collect();
    let mut doc = Table::new();
    doc.insert("stage".into(), Value::Array(stages));
    // A tree of `toml::Value`s without `None`s always serializes.
    doc.to_string()
}

/// One `[[stage]]`.
fn stage(s: &StageConfig) -> Table {
    let mut t = Table::new();
    t.insert("name".into(), text(&s.name));
    t.insert("listen".into(), Value::String(s.listen.to_string()));
    if let Some(tls) = &s.tls {
        stage_tls(tls, &mut t);
    }
    if s.http2 {
        t.insert("http2".into(), Value::Boolean(true));
    }
    let routes = s.routes.iter().map(|r| Value::Table(route(r))).collect();
    t.insert("route".into(), Value::Array(routes));
    t
}

/// A stage's `tls = [{ cert, key, server_names, default }, ...]` and `tls_min_version`.
fn stage_tls(tls: &StageTls, into: &mut Table) {
    let certs = tls
        .certs
        .iter()
        .map(|c| {
            let mut t = Table::new();
            t.insert("cert".into(), path(&c.cert));
            t.insert("key".into(), path(&c.key));
            if !c.server_names.is_empty() {
                t.insert("server_names".into(), strings(&c.server_names));
            }
            if c.default {
                t.insert("default".into(), Value::Boolean(true));
            }
            Value::Table(t)
        })
        .collect();
    into.insert("tls".into(), Value::Array(certs));
    if tls.min_version != TlsVersion::default() {
        into.insert(
            "tls_min_version".into(),
            Value::String(tls.min_version.to_string()),
        );
    }
}

/// One `[[stage.route]]`; settings at their file default are left out.
fn route(r: &RouteConfig) -> Table {
    let mut t = Table::new();
    t.insert("name".into(), text(&r.name));
    if let Some(h) = &r.host {
        t.insert("host".into(), text(h));
    }
    if r.path_prefix != "/" {
        t.insert("path_prefix".into(), text(&r.path_prefix));
    }
    if r.strip_path_prefix {
        t.insert("strip_path_prefix".into(), Value::Boolean(true));
    }
    if r.retry_on_stable {
        t.insert("retry_on_stable".into(), Value::Boolean(true));
    }
    if !r.upstream_path_prefix.is_empty() {
        t.insert("upstream_path_prefix".into(), text(&r.upstream_path_prefix));
    }
    if !r.request_headers.is_empty() {
        let names: Vec<&str> = r.request_headers.iter().map(|(k, _)| k.as_str()).collect();
        let headers = header_keys(&names)
            .into_iter()
            .zip(&r.request_headers)
            .map(|(k, (_, v))| (k, text(v)))
            .collect();
        t.insert("request_headers".into(), Value::Table(headers));
    }
    if let Assignment::Sticky { key, salt } = &r.assignment {
        t.insert("assignment".into(), text("sticky"));
        let key = match key {
            StickyKey::Header(h) => format!("header:{h}"),
            StickyKey::Cookie(c) => format!("cookie:{c}"),
            StickyKey::ClientIp => "ip".into(),
        };
        t.insert("sticky_key".into(), Value::String(key));
        if *salt != r.name {
            t.insert("sticky_salt".into(), text(salt));
        }
    }
    // The file's default is on with a fixed name; off is written as an empty name.
    if r.force_header.as_deref() != Some(DEFAULT_FORCE_HEADER) {
        t.insert(
            "force_header".into(),
            text(r.force_header.as_deref().unwrap_or_default()),
        );
    }
    if r.force_cookie.as_deref() != Some(DEFAULT_FORCE_COOKIE) {
        t.insert(
            "force_cookie".into(),
            text(r.force_cookie.as_deref().unwrap_or_default()),
        );
    }
    t.insert("stable".into(), Value::Table(deployment(&r.stable)));
    if let Some(c) = &r.canary {
        let mut d = deployment(&c.deployment);
        d.insert("percent".into(), percent(c.ppm));
        t.insert("canary".into(), Value::Table(d));
    }
    if let Some(p) = &r.rollout {
        t.insert("rollout".into(), Value::Table(plan(p)));
    }
    if let Some(k) = &r.kill_switch {
        t.insert("kill_switch".into(), Value::Table(kill_switch(k)));
    }
    t
}

/// `{ id, endpoints, variables, health_check, outlier, tls }` of a stable or canary.
fn deployment(d: &Deployment) -> Table {
    let mut t = Table::new();
    t.insert("id".into(), text(&d.id));
    let scheme = if d.tls.is_some() { "https://" } else { "" };
    let endpoints = d
        .endpoints
        .iter()
        .map(|e| Value::String(format!("{scheme}{e}")))
        .collect();
    t.insert("endpoints".into(), Value::Array(endpoints));
    if !d.variables.is_empty() {
        let vars = d.variables.iter().map(|(k, v)| (k.clone(), text(v)));
        t.insert("variables".into(), Value::Table(vars.collect()));
    }
    health(&d.health, &mut t);
    if d.protocol != UpstreamProtocol::Http1 {
        t.insert("protocol".into(), text(d.protocol.as_str()));
    }
    if let Some(tls) = &d.tls {
        let tls = upstream_tls(tls);
        // `https://` endpoints alone mean TLS with every default.
        if !tls.is_empty() {
            t.insert("tls".into(), Value::Table(tls));
        }
    }
    t
}

/// A deployment's `tls = { server_name, ca_file, client_cert, client_key }`.
fn upstream_tls(tls: &UpstreamTls) -> Table {
    let mut t = Table::new();
    if let Some(n) = &tls.server_name {
        t.insert("server_name".into(), text(n));
    }
    if let Some(ca) = &tls.ca_file {
        t.insert("ca_file".into(), path(ca));
    }
    if let Some((cert, key)) = &tls.client_cert {
        t.insert("client_cert".into(), path(cert));
        t.insert("client_key".into(), path(key));
    }
    t
}

/// A deployment's `health_check` and `outlier`, every value written out (their
/// defaults depend on each other, e.g. the timeout on the interval).
fn health(h: &HealthConfig, into: &mut Table) {
    if let Some(c) = &h.check {
        into.insert("health_check".into(), Value::Table(health_check(c)));
    }
    if let Some(o) = &h.outlier {
        into.insert("outlier".into(), Value::Table(outlier(o)));
    }
}

fn health_check(c: &HealthCheck) -> Table {
    let mut t = Table::new();
    if let Some(p) = &c.path {
        t.insert("path".into(), text(p));
        // The file takes `expect` only with a path (a TCP check has no status).
        t.insert("expect".into(), Value::String(status_set(c.expect)));
    }
    if let Some(h) = &c.host {
        t.insert("host".into(), text(h));
    }
    t.insert("interval".into(), duration(c.interval));
    t.insert("timeout".into(), duration(c.timeout));
    t.insert("rise".into(), Value::Integer(i64::from(c.rise)));
    t.insert("fall".into(), Value::Integer(i64::from(c.fall)));
    t
}

fn outlier(o: &Outlier) -> Table {
    let mut t = Table::new();
    let count = |n: u32| Value::Integer(i64::from(n));
    t.insert("consecutive_5xx".into(), count(o.consecutive_5xx));
    t.insert("statuses".into(), Value::String(status_set(o.statuses)));
    t.insert(
        "consecutive_gateway_failures".into(),
        count(o.consecutive_gateway_failures),
    );
    t.insert(
        "count_connect_failures".into(),
        Value::Boolean(o.count_connect_failures),
    );
    t.insert("count_resets".into(), Value::Boolean(o.count_resets));
    t.insert("count_timeouts".into(), Value::Boolean(o.count_timeouts));
    t.insert("base_ejection_time".into(), duration(o.base_ejection_time));
    t.insert("max_ejection_time".into(), duration(o.max_ejection_time));
    t.insert("max_ejection_percent".into(), count(o.max_ejection_percent));
    t
}

/// `rollout = { steps, interval, ... }`: every criterion written out, optional ones when
/// set, the rest when not at their default.
fn plan(p: &Plan) -> Table {
    let mut t = Table::new();
    let steps = p.steps.iter().map(|&s| percent(s)).collect();
    t.insert("steps".into(), Value::Array(steps));
    t.insert("interval".into(), duration(p.interval));
    let c = &p.criteria;
    t.insert("min_requests".into(), big_count(c.min_requests));
    t.insert("confidence".into(), Value::Float(c.confidence));
    t.insert(
        "latency_tolerance".into(),
        Value::Float(c.latency_tolerance),
    );
    t.insert(
        "latency_tolerance_abs".into(),
        duration(c.latency_tolerance_abs),
    );
    t.insert("error_tolerance".into(), Value::Float(c.error_tolerance));
    if let Some(d) = c.max_p99 {
        t.insert("max_p99".into(), duration(d));
    }
    if let Some(r) = c.max_error_rate {
        t.insert("max_error_rate".into(), Value::Float(r));
    }
    if let Some(r) = c.max_retransmit_rate {
        t.insert("max_retransmit_rate".into(), Value::Float(r));
    }
    if let Some(n) = c.max_canary_ejections {
        t.insert("max_canary_ejections".into(), big_count(n));
    }
    if p.max_inconclusive > 0 {
        t.insert(
            "max_inconclusive".into(),
            Value::Integer(i64::from(p.max_inconclusive)),
        );
    }
    if p.judge != JudgeKind::default() {
        t.insert("judge".into(), text(p.judge.as_str()));
    }
    if let Some(d) = p.max_interval {
        t.insert("max_interval".into(), duration(d));
    }
    if p.on_timeout != OnTimeout::default() {
        t.insert("on_timeout".into(), text(p.on_timeout.as_str()));
    }
    if !p.kill_switch {
        t.insert("kill_switch".into(), Value::Boolean(false));
    }
    t
}

/// `kill_switch = { window, max_error_rate, count_5xx, count_connect_failures }`.
fn kill_switch(k: &KillSwitchConfig) -> Table {
    let mut t = Table::new();
    t.insert("window".into(), Value::Integer(i64::from(k.window)));
    t.insert("max_error_rate".into(), Value::Float(k.max_error_rate));
    t.insert("count_5xx".into(), Value::Boolean(k.count_5xx));
    t.insert(
        "count_connect_failures".into(),
        Value::Boolean(k.count_connect_failures),
    );
    t
}

/// Parts per million as the file's percent: an integer when whole, else the shortest
/// decimal (at most four places, which an `f64` holds and prints back exactly).
fn percent(ppm: u32) -> Value {
    if ppm.is_multiple_of(10_000) {
        return Value::Integer(i64::from(ppm / 10_000));
    }
    let text = format_percent(ppm);
    text.parse::<f64>()
        .map_or_else(|_| Value::String(text), Value::Float)
}

/// `2s`, `500ms`: what `parse_duration` reads back.
fn duration(d: Duration) -> Value {
    Value::String(format_duration(d))
}

/// A `u64` count; TOML integers stop at `i64::MAX`, which is also all the file can hold.
fn big_count(n: u64) -> Value {
    Value::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}

fn text(s: &str) -> Value {
    Value::String(s.to_owned())
}

fn strings(list: &[String]) -> Value {
    Value::Array(list.iter().map(|s| text(s)).collect())
}

/// Paths came from TOML strings, so they are UTF-8.
fn path(p: &Path) -> Value {
    Value::String(p.to_string_lossy().into_owned())
}

/// A status set as runs of codes: `2xx` for a whole class, `500-503`, `204`, joined by
/// commas.
fn status_set(set: StatusSet) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut code = 100;
    while code < 600 {
        if !set.contains(code) {
            code += 1;
            continue;
        }
        let lo = code;
        while code < 599 && set.contains(code + 1) {
            code += 1;
        }
        let hi = code;
        code += 1;
        // Split a run at class boundaries so whole classes read as `Nxx`.
        let mut start = lo;
        while start <= hi {
            let class_end = start - start % 100 + 99;
            let end = hi.min(class_end);
            parts.push(match (start, end) {
                (s, e) if s.is_multiple_of(100) && e == s + 99 => format!("{}xx", s / 100),
                (s, e) if s == e => s.to_string(),
                (s, e) => format!("{s}-{e}"),
            });
            start = end + 1;
        }
    }
    parts.join(",")
}

/// Keys for `request_headers`. The file reads them into a sorted map and lower-cases
/// them afterwards, so the route's order (and a name given twice in two casings) comes
/// back only if the keys sort in that order: lower-case when that already holds, else
/// each name in the smallest casing that sorts after the key before it (which exists
/// for every list the file produced, since its own casing did).
fn header_keys(names: &[&str]) -> Vec<String> {
    if names.windows(2).all(|w| w[0] < w[1]) {
        return names.iter().map(|&n| n.to_owned()).collect();
    }
    let mut keys: Vec<String> = Vec::with_capacity(names.len());
    for name in names {
        let prev = keys.last().map_or("", String::as_str);
        let key = casing_after(name, prev).unwrap_or_else(|| (*name).to_owned());
        keys.push(key);
    }
    keys
}

/// The smallest ASCII casing of `name` that sorts strictly after `prev`.
fn casing_after(name: &str, prev: &str) -> Option<String> {
    let (s, p) = (name.as_bytes(), prev.as_bytes());
    let upper = |b: &[u8]| -> Vec<u8> { b.to_ascii_uppercase() };
    // Longest prefix of `prev` that is a casing of `name`'s prefix.
    let matched = s
        .iter()
        .zip(p)
        .take_while(|(a, b)| a.eq_ignore_ascii_case(b))
        .count();
    let out = if matched == p.len() && s.len() > p.len() {
        // `prev` itself, then the rest as small as it goes.
        [p, &upper(&s[p.len()..])].concat()
    } else {
        // Match `prev` as long as possible, then step above it at one position.
        let last = matched
            .min(s.len().saturating_sub(1))
            .min(p.len().saturating_sub(1));
        (0..=last).rev().find_map(|i| {
            if i >= s.len() || i >= p.len() {
                return None;
            }
            let v = [s[i].to_ascii_uppercase(), s[i].to_ascii_lowercase()]
                .into_iter()
                .filter(|&v| v > p[i])
                .min()?;
            Some([&p[..i], &[v], &upper(&s[i + 1..])[..]].concat())
        })?
    };
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests;
