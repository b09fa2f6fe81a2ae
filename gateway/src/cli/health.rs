//! Endpoint-health flags of `canarygate run` without `--config`: the active check and
//! passive outlier detection of both deployments of the one route, built into the same
//! values the file's `health_check = { ... }` and `outlier = { ... }` give.

use std::time::Duration;

use clap::Args;

use crate::config::health::{HealthCheck, HealthConfig, Outlier, StatusSet};
use crate::config::value::parse_duration;

/// Active checks and outlier detection (`--health-check-*`, `--outlier-*`).
#[derive(Debug, Args)]
pub(crate) struct HealthArgs {
    /// Check each endpoint with an HTTP GET of this path (2xx passes by default).
    #[arg(long, value_name = "PATH", conflicts_with_all = ["config", "health_check_tcp"])]
    health_check_path: Option<String>,
    /// Check each endpoint with a TCP connect.
    #[arg(long, conflicts_with = "config")]
    health_check_tcp: bool,
    /// Time between checks of an endpoint [default: 2s].
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    health_check_interval: Option<Duration>,
    /// Time a check may take [default: 1s, at most the interval].
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    health_check_timeout: Option<Duration>,
    /// Passed checks in a row that bring an endpoint up [default: 2].
    #[arg(long, value_name = "N")]
    health_check_rise: Option<u32>,
    /// Failed checks in a row that take an endpoint down [default: 3].
    #[arg(long, value_name = "N")]
    health_check_fall: Option<u32>,
    /// Statuses that pass an HTTP check: 2xx, 200,204, 200-399 [default: 2xx].
    #[arg(long, value_name = "SET", value_parser = StatusSet::parse, requires = "health_check_path")]
    health_check_expect: Option<StatusSet>,
    /// Host header of HTTP checks [default: the endpoint's address].
    #[arg(long, value_name = "HOST", requires = "health_check_path")]
    health_check_host: Option<String>,
    /// Eject an endpoint after this many 5xx responses in a row on one worker (turns
    /// outlier detection on; 0 = only gateway failures).
    #[arg(long, value_name = "N", conflicts_with = "config")]
    outlier_consecutive_5xx: Option<u32>,
    /// Eject an endpoint after this many connect failures, resets or timeouts in a row on
    /// one worker (turns outlier detection on; 0 = only 5xx).
    #[arg(long, value_name = "N", conflicts_with = "config")]
    outlier_consecutive_gateway_failures: Option<u32>,
    /// First ejection time; the n-th ejection in a row lasts n times this [default: 30s].
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    outlier_base_ejection_time: Option<Duration>,
    /// Longest ejection [default: 300s].
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    outlier_max_ejection_time: Option<Duration>,
    /// Most of a deployment ejected at once, in percent (one endpoint always may be)
    /// [default: 50].
    #[arg(long, value_name = "P")]
    outlier_max_ejection_percent: Option<u32>,
}

impl HealthArgs {
    /// The settings the flags describe; `Err` names the flag that is wrong.
    pub(crate) fn config(&self) -> Result<HealthConfig, String> {
        let check_tuned = self.health_check_interval.is_some()
            || self.health_check_timeout.is_some()
            || self.health_check_rise.is_some()
            || self.health_check_fall.is_some();
        let check = if self.health_check_path.is_some() || self.health_check_tcp {
            let mut c = HealthCheck::tcp();
            c.path.clone_from(&self.health_check_path);
            c.host.clone_from(&self.health_check_host);
            if let Some(i) = self.health_check_interval {
                c.interval = i;
                c.timeout = c.timeout.min(i);
            }
            c.timeout = self.health_check_timeout.unwrap_or(c.timeout);
            c.rise = self.health_check_rise.unwrap_or(c.rise);
            c.fall = self.health_check_fall.unwrap_or(c.fall);
            c.expect = self.health_check_expect.unwrap_or(c.expect);
            c.check().map_err(|e| {
                let flag = if e.starts_with("path") {
                    "--health-check-path"
                } else if e.starts_with("host") {
                    "--health-check-host"
                } else if e.starts_with("rise") {
                    "--health-check-rise/--health-check-fall"
                } else if e.starts_with("interval") {
                    "--health-check-interval"
                } else if e.starts_with("timeout") {
                    "--health-check-timeout"
                } else {
                    "--health-check-expect"
                };
                format!("{flag}: {e}")
            })?;
            Some(c)
        } else if check_tuned {
            return Err(
                "--health-check-interval, --health-check-timeout, --health-check-rise and --health-check-fall need --health-check-path or --health-check-tcp"
                    .into(),
            );
        } else {
            None
        };
        let outlier_on = self.outlier_consecutive_5xx.is_some()
            || self.outlier_consecutive_gateway_failures.is_some();
        let outlier_tuned = self.outlier_base_ejection_time.is_some()
            || self.outlier_max_ejection_time.is_some()
            || self.outlier_max_ejection_percent.is_some();
        let outlier = if outlier_on {
            let mut o = Outlier::default();
            o.consecutive_5xx = self.outlier_consecutive_5xx.unwrap_or(o.consecutive_5xx);
            o.consecutive_gateway_failures = self
                .outlier_consecutive_gateway_failures
                .unwrap_or(o.consecutive_gateway_failures);
            if let Some(b) = self.outlier_base_ejection_time {
                o.base_ejection_time = b;
                o.max_ejection_time = o.max_ejection_time.max(b);
            }
            o.max_ejection_time = self
                .outlier_max_ejection_time
                .unwrap_or(o.max_ejection_time);
            o.max_ejection_percent = self
                .outlier_max_ejection_percent
                .unwrap_or(o.max_ejection_percent);
            o.check().map_err(|e| {
                let flag = if e.starts_with("max_ejection_percent") {
                    "--outlier-max-ejection-percent"
                } else if e.starts_with("max_ejection_time") {
                    "--outlier-max-ejection-time"
                } else {
                    "--outlier-consecutive-5xx/--outlier-consecutive-gateway-failures"
                };
                format!("{flag}: {e}")
            })?;
            Some(o)
        } else if outlier_tuned {
            return Err("--outlier-base-ejection-time, --outlier-max-ejection-time and --outlier-max-ejection-percent need --outlier-consecutive-5xx or --outlier-consecutive-gateway-failures".into());
        } else {
            None
        };
        Ok(HealthConfig { check, outlier })
    }
}
