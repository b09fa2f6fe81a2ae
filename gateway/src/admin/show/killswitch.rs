//! How `show canary` renders a route's kill switch: the figures as JSON and as one line.
//! Reads the switch the data plane runs ([`crate::dataplane::route::killswitch`]) and
//! the settings `Control` says it runs with; changes nothing.

use serde_json::{Value, json};

use crate::config::killswitch::KillSwitchConfig;
use crate::control::Control;
use crate::dataplane::route::killswitch::KillSwitch;

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

/// The kill switch of `route` for `show canary json` (`null` when off).
pub(crate) fn kill_switch_json(control: &Control, route: &str) -> Value {
    control
        .kill_switch(route)
        .map_or(Value::Null, |(k, c)| k.json(c.as_ref()))
}

/// The kill switch of `route` for `show canary`.
pub(crate) fn kill_switch_line(control: &Control, route: &str) -> String {
    control
        .kill_switch(route)
        .map_or_else(|| "off".into(), |(k, c)| k.describe(c.as_ref()))
}
