//! `show stats [ROUTE] [json]`: every route's figures per variant (merged from the
//! workers by `Control::stats`) and the kernel's, as a table or JSON; changes nothing.

use std::fmt::Write as _;

use gateway_common::Variant;
use serde_json::{Value, json};

use crate::config::value::format_percent;
use crate::control::Control;
use crate::metrics::{RouteStats, VariantStats};

/// The figures of every route (only `route`'s when given; an error if it has none).
pub(super) fn routes_of(control: &Control, route: Option<&str>) -> Result<Vec<RouteStats>, String> {
    let stats = control.stats();
    let routes: Vec<RouteStats> = stats
        .routes
        .into_iter()
        .filter(|r| route.is_none_or(|n| n == r.name))
        .collect();
    if let (Some(name), true) = (route, routes.is_empty()) {
        return Err(format!("no route named '{name}'"));
    }
    Ok(routes)
}

pub(crate) fn variant_json(v: &VariantStats) -> Value {
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
        "ejections": v.ejections,
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

/// `show stats [ROUTE] [json]`.
pub(crate) fn show(control: &Control, route: Option<&str>, json: bool) -> Result<String, String> {
    let routes = routes_of(control, route)?;
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
        return Ok(
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
    Ok(out)
}
