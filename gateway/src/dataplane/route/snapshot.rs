//! The routing snapshot every worker reads: immutable, built by the control plane from
//! the configuration, published by one atomic pointer swap. Everything a request needs
//! (route match, assignment, endpoints, rendered stage variables) is precomputed here so
//! the data path only reads.

use std::collections::BTreeMap;
use std::sync::Arc;

use gateway_common::{VARIANT_COUNT, Variant};

use super::killswitch::KillSwitch;
use super::split::Split;
use crate::config::health::Outlier;
use crate::config::template::render;
use crate::config::{Assignment, Deployment, RouteConfig};
use crate::dataplane::upstream::UpTls;
use crate::dataplane::upstream::health::Endpoint;
use crate::metrics::RouteMetrics;

/// A worker's handle on a snapshot. Workers share it through a worker-local `Rc`, so a
/// request costs a non-atomic count instead of bumping the shared `Arc` all cores touch.
#[derive(Debug)]
pub(crate) struct Held(pub Arc<Snapshot>);

impl std::ops::Deref for Held {
    type Target = Snapshot;

    fn deref(&self) -> &Snapshot {
        &self.0
    }
}

/// All stages and routes at one configuration version.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Configuration version this snapshot was built from.
    pub version: u64,
    /// Stages in listener order.
    pub stages: Vec<StageSnap>,
}

/// One stage's routes, in match order (host-specific first, then longest prefix).
#[derive(Debug)]
pub struct StageSnap {
    /// Stage name.
    pub name: String,
    /// Routes in match order.
    pub routes: Vec<Arc<RouteSnap>>,
    /// TLS termination (certificates, versions, ALPN); `None` = plain HTTP. A new
    /// connection's handshake uses the configuration current at its accept.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// HTTP/2 from clients (ALPN `h2` is in `tls` already; h2c on a plain listener).
    pub http2: bool,
}

/// Where one variant of a route sends requests, with stage variables already applied.
#[derive(Debug)]
pub struct Plan {
    /// Deployment id.
    pub deployment_id: String,
    /// Endpoints (round-robin among those up), with their health as the control plane
    /// publishes it (shared across snapshots while the endpoint stays).
    pub endpoints: Vec<Arc<Endpoint>>,
    /// Passive outlier detection of the deployment: what attempts count.
    pub outlier: Option<Outlier>,
    /// TLS toward the endpoints (`https://`); `None` = plain TCP.
    pub tls: Option<Arc<UpTls>>,
    /// The HTTP version the endpoints speak.
    pub protocol: crate::config::UpstreamProtocol,
    /// Rendered upstream path prefix.
    pub path_prefix: Vec<u8>,
    /// Rendered headers added toward the upstream (lower-case names).
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
}

/// One route, ready for the data path.
#[derive(Debug)]
pub struct RouteSnap {
    /// Stable small integer identifying the route for its whole life (per-worker state).
    pub id: usize,
    /// Route name.
    pub name: String,
    /// Stage name.
    pub stage: String,
    /// Host to match (lower-case), or any.
    pub host: Option<String>,
    /// Path prefix to match.
    pub path_prefix: String,
    /// Remove the prefix before forwarding.
    pub strip_path_prefix: bool,
    /// Failed idempotent canary requests go to stable (see `RouteConfig`).
    pub retry_on_stable: bool,
    /// Random or sticky.
    pub assignment: Assignment,
    /// Forcing header (lower-case), if any.
    pub force_header: Option<String>,
    /// Forcing cookie, if any.
    pub force_cookie: Option<String>,
    /// The canary share (shared with the control plane; survives snapshots).
    pub split: Arc<Split>,
    /// Per-worker counters of this route (survive snapshots).
    pub metrics: Arc<RouteMetrics>,
    /// The canary kill switch: per-worker windows of canary outcomes (survives snapshots).
    pub kill: Arc<KillSwitch>,
    /// Plans indexed by [`Variant::index`]; the canary's is `None` without a canary.
    pub plans: [Option<Plan>; VARIANT_COUNT],
}

impl RouteSnap {
    /// Builds the data-path view of `route`; `live` holds what outlives snapshots.
    pub fn build(id: usize, stage: &str, route: &RouteConfig, live: Live) -> RouteSnap {
        let Live {
            split,
            metrics,
            kill,
            endpoints: [stable_endpoints, canary_endpoints],
            tls: [stable_tls, canary_tls],
        } = live;
        let stable = plan(
            route,
            &route.stable,
            &route.stable.variables,
            stable_endpoints,
            stable_tls,
        );
        let canary = route.canary.as_ref().map(|c| {
            let mut vars = route.stable.variables.clone();
            vars.extend(
                c.deployment
                    .variables
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone())),
            );
            plan(route, &c.deployment, &vars, canary_endpoints, canary_tls)
        });
        RouteSnap {
            id,
            name: route.name.clone(),
            stage: stage.to_owned(),
            host: route.host.clone(),
            path_prefix: route.path_prefix.clone(),
            strip_path_prefix: route.strip_path_prefix,
            retry_on_stable: route.retry_on_stable,
            assignment: route.assignment.clone(),
            force_header: route.force_header.clone(),
            force_cookie: route.force_cookie.clone(),
            split,
            metrics,
            kill,
            plans: [Some(stable), canary],
        }
    }

    /// The plan of `variant`, falling back to stable when there is no canary.
    #[inline]
    pub fn plan(&self, variant: Variant) -> (&Plan, Variant) {
        match &self.plans[variant.index()] {
            Some(p) => (p, variant),
            None => (
                self.plans[0]
                    .as_ref()
                    .unwrap_or_else(|| unreachable!("stable plan always exists")),
                Variant::Stable,
            ),
        }
    }

    /// True when the route has a canary deployment.
    pub fn has_canary(&self) -> bool {
        self.plans[Variant::Canary.index()].is_some()
    }

    /// True when this route takes a request for `host` (without port) and `path`.
    pub fn matches(&self, host: Option<&[u8]>, path: &[u8]) -> bool {
        if let Some(want) = &self.host {
            match host {
                Some(h) if h.eq_ignore_ascii_case(want.as_bytes()) => {}
                _ => return false,
            }
        }
        let prefix = self.path_prefix.as_bytes();
        path.starts_with(prefix)
            && (prefix.ends_with(b"/")
                || matches!(path.get(prefix.len()), None | Some(b'/' | b'?')))
    }
}

/// What a route's snapshot shares with the ones before and after it: the split, the
/// counters, the kill switch, and each variant's endpoint health (in the order of the
/// deployment's endpoints; the control plane keeps one per endpoint).
#[derive(Debug)]
pub struct Live {
    /// The canary share.
    pub split: Arc<Split>,
    /// Per-worker counters.
    pub metrics: Arc<RouteMetrics>,
    /// The kill switch.
    pub kill: Arc<KillSwitch>,
    /// Endpoint health, indexed by [`Variant::index`].
    pub endpoints: [Vec<Arc<Endpoint>>; VARIANT_COUNT],
    /// Upstream TLS of each deployment, indexed by [`Variant::index`].
    pub tls: [Option<Arc<UpTls>>; VARIANT_COUNT],
}

#[cfg(test)]
impl Live {
    /// Everything new for `route`, as for a route just added, seen by `workers` workers.
    pub(crate) fn fresh(route: &RouteConfig, workers: usize) -> Live {
        let endpoints = |d: Option<&Deployment>| -> Vec<Arc<Endpoint>> {
            d.map(|d| {
                d.endpoints
                    .iter()
                    .map(|a| Arc::new(Endpoint::new(*a, workers)))
                    .collect()
            })
            .unwrap_or_default()
        };
        Live {
            split: Arc::new(Split::new(0)),
            metrics: Arc::new(RouteMetrics::new(workers)),
            kill: Arc::new(KillSwitch::new(workers)),
            endpoints: [
                endpoints(Some(&route.stable)),
                endpoints(route.canary.as_ref().map(|c| &c.deployment)),
            ],
            tls: [None, None],
        }
    }
}

fn plan(
    route: &RouteConfig,
    d: &Deployment,
    vars: &BTreeMap<String, String>,
    endpoints: Vec<Arc<Endpoint>>,
    tls: Option<Arc<UpTls>>,
) -> Plan {
    debug_assert!(
        endpoints
            .iter()
            .map(|e| e.addr)
            .eq(d.endpoints.iter().copied()),
        "endpoint health in the deployment's order"
    );
    Plan {
        deployment_id: d.id.clone(),
        endpoints,
        outlier: d.health.outlier.clone(),
        tls,
        protocol: d.protocol,
        path_prefix: render(&route.upstream_path_prefix, vars).into_bytes(),
        headers: route
            .request_headers
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), render(v, vars).into_bytes()))
            .collect(),
    }
}

impl StageSnap {
    /// Sorts routes into match order.
    pub fn new(
        name: String,
        mut routes: Vec<Arc<RouteSnap>>,
        tls: Option<Arc<rustls::ServerConfig>>,
        http2: bool,
    ) -> StageSnap {
        routes.sort_by(|a, b| {
            b.host
                .is_some()
                .cmp(&a.host.is_some())
                .then(b.path_prefix.len().cmp(&a.path_prefix.len()))
        });
        StageSnap {
            name,
            routes,
            tls,
            http2,
        }
    }

    /// Index of the first route that takes `host` and `path`. `OPTIONS *` (path `*`)
    /// asks about the server as a whole: the routes for `/` take it.
    #[inline]
    pub fn find(&self, host: Option<&[u8]>, path: &[u8]) -> Option<usize> {
        let path = if path == b"*" { b"/" } else { path };
        self.routes.iter().position(|r| r.matches(host, path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, host: Option<&str>, prefix: &str) -> Arc<RouteSnap> {
        let mut cfg = RouteConfig::catch_all(name, vec!["127.0.0.1:1".parse().unwrap()]);
        cfg.host = host.map(str::to_owned);
        cfg.path_prefix = prefix.into();
        Arc::new(RouteSnap::build(0, "s", &cfg, Live::fresh(&cfg, 1)))
    }

    #[test]
    fn longest_prefix_and_host_first() {
        let stage = StageSnap::new(
            "s".into(),
            vec![
                route("root", None, "/"),
                route("api", None, "/api"),
                route("host", Some("a.example"), "/"),
            ],
            None,
            false,
        );
        let name = |h: Option<&str>, p: &str| {
            stage
                .find(h.map(str::as_bytes), p.as_bytes())
                .map(|i| stage.routes[i].name.clone())
        };
        assert_eq!(name(None, "/api/x").as_deref(), Some("api"));
        assert_eq!(name(None, "/api").as_deref(), Some("api"));
        assert_eq!(name(None, "/api?q").as_deref(), Some("api"));
        assert_eq!(name(None, "/apix").as_deref(), Some("root"));
        assert_eq!(name(Some("A.Example"), "/api").as_deref(), Some("host"));
    }

    #[test]
    fn canary_variables_override_stage_variables() {
        let mut cfg = RouteConfig::catch_all("r", vec!["127.0.0.1:1".parse().unwrap()]);
        cfg.upstream_path_prefix = "/${stageVariables.v}".into();
        cfg.request_headers = vec![("x-a".into(), "${stageVariables.a}".into())];
        cfg.stable.variables = [
            ("v".to_owned(), "1".to_owned()),
            ("a".to_owned(), "s".to_owned()),
        ]
        .into();
        cfg.canary = Some(crate::config::Canary {
            deployment: Deployment {
                id: "c".into(),
                endpoints: vec!["127.0.0.1:2".parse().unwrap()],
                variables: [("v".to_owned(), "2".to_owned())].into(),
                health: crate::config::health::HealthConfig::default(),
                tls: None,
                protocol: crate::config::UpstreamProtocol::Http1,
            },
            ppm: 0,
        });
        let r = RouteSnap::build(0, "s", &cfg, Live::fresh(&cfg, 1));
        assert_eq!(r.plan(Variant::Stable).0.path_prefix, b"/1");
        assert_eq!(r.plan(Variant::Canary).0.path_prefix, b"/2");
        assert_eq!(r.plan(Variant::Canary).0.headers[0].1, b"s");
    }
}
