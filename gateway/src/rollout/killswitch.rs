//! The kill switch as the control plane sees it: the default a rollout turns on, and how
//! `show canary` describes a route's switch. The switch itself (per-worker windows,
//! tripping) is the data plane's ([`crate::dataplane::route::killswitch`]).

use serde_json::{Value, json};

use crate::config::killswitch::KillSwitchConfig;
use crate::dataplane::route::killswitch::KillSwitch;

/// The kill switch a rollout turns on for a route without one of its own (unless its plan
/// says `kill-switch off`): it trips when more than half of a worker's last 20 canary
/// requests failed, so a canary that fails every request is stopped after at most 11
/// requests per worker, whatever the judge is doing.
pub(crate) const ROLLOUT_DEFAULT: KillSwitchConfig = KillSwitchConfig {
    window: 20,
    max_error_rate: 0.5,
    count_5xx: true,
    count_connect_failures: true,
};

/// How `show canary` renders a switch.
pub(crate) trait Describe {
    /// State for `show canary json`.
    fn json(&self, config: Option<&KillSwitchConfig>) -> Value;
    /// One line for `show canary`.
    fn describe(&self, config: Option<&KillSwitchConfig>) -> String;
}

impl Describe for KillSwitch {
    /// State for `show canary json`. Trips are the ones the control plane has recorded
    /// (the configuration's share already says 0 for them), so the figures agree with the
    /// rest of what `show canary` prints even while a worker trips at that moment; the
    /// next admin command or controller tick records a newer one.
    fn json(&self, config: Option<&KillSwitchConfig>) -> Value {
        let Some(c) = config else { return Value::Null };
        let trips = self.recorded_trips();
        json!({
            "window": c.window,
            "max_error_rate": c.max_error_rate,
            "threshold": c.threshold(),
            "count_5xx": c.count_5xx,
            "count_connect_failures": c.count_connect_failures,
            "tripped": self.is_tripped(),
            "trips": trips,
            "last_trip": if trips > 0 { self.last_trip() } else { None },
            "last_trip_unix_ms": (trips > 0).then(|| self.last_trip_unix_ms()),
        })
    }

    /// One line for `show canary`.
    fn describe(&self, config: Option<&KillSwitchConfig>) -> String {
        let Some(c) = config else { return "off".into() };
        let state = if self.is_tripped() {
            format!(
                "TRIPPED ({}); set the percent again to re-arm",
                self.last_trip().unwrap_or_default()
            )
        } else {
            "armed".into()
        };
        format!(
            "{state}, window {} per worker, trips at {} failures, {} trip(s) so far",
            c.window,
            c.threshold(),
            self.trips()
        )
    }
}
