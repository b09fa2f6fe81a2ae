//! `Control` on its own: the admin model (deployment, share, promote, rollback) and
//! compare-and-set on the configuration version.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::{Config, RouteConfig, StageConfig};
use crate::control::{Control, ControlError};
use crate::kernel::Kernel;
use crate::metrics::WorkerMetrics;

fn control() -> Control {
    let mut route = RouteConfig::catch_all("api", vec!["127.0.0.1:1".parse().unwrap()]);
    route.stable.variables.insert("v".into(), "1".into());
    let cfg = Config {
        stages: vec![StageConfig {
            name: "s".into(),
            listen: "127.0.0.1:0".parse().unwrap(),
            routes: vec![route],
            tls: None,
            http2: false,
        }],
        ..Config::default()
    };
    Control::new(
        cfg,
        vec![Arc::new(WorkerMetrics::default())],
        Kernel::default(),
    )
    .unwrap()
}

#[test]
fn aws_model_promote_and_rollback() {
    let c = control();
    assert_eq!(
        c.set_percent(None, "api", 10),
        Err(ControlError::NoCanary("api".into()))
    );
    c.set_deployment(None, "api", "v2", &["127.0.0.1:2".parse().unwrap()])
        .unwrap();
    c.set_percent(None, "api", 50_000).unwrap();
    c.set_var(None, "api", "v", "2").unwrap();
    assert_eq!(c.split("api").unwrap().ppm(), 50_000);
    c.rollback(None, "api").unwrap();
    assert_eq!(c.split("api").unwrap().ppm(), 0);
    let cfg = c.config();
    let route = &cfg.stages[0].routes[0];
    assert_eq!(
        route.canary.as_ref().unwrap().deployment.id,
        "v2",
        "rollback keeps the canary"
    );
    c.set_percent(None, "api", 50_000).unwrap();
    c.promote(None, "api").unwrap();
    let cfg = c.config();
    let route = &cfg.stages[0].routes[0];
    assert!(route.canary.is_none());
    assert_eq!(route.stable.id, "v2");
    assert_eq!(
        route.stable.endpoints,
        vec!["127.0.0.1:2".parse::<SocketAddr>().unwrap()]
    );
    assert_eq!(route.stable.variables["v"], "2");
    assert_eq!(c.split("api").unwrap().ppm(), 0);
}

#[test]
fn compare_and_set() {
    let c = control();
    let v = c.version();
    c.set_deployment(Some(v), "api", "v2", &["127.0.0.1:2".parse().unwrap()])
        .unwrap();
    assert!(matches!(
        c.set_percent(Some(v), "api", 1),
        Err(ControlError::VersionMismatch { .. })
    ));
    assert!(c.set_percent(Some(v + 1), "api", 1).is_ok());
    assert_eq!(
        c.set_percent(None, "nope", 1),
        Err(ControlError::NoRoute("nope".into()))
    );
}
