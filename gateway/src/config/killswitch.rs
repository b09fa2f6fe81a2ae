//! Kill-switch settings of a route (`kill_switch = { ... }` in the file, `kill-switch`
//! in a rollout plan): a value of the configuration, checked here; the switch itself is
//! the data plane's ([`crate::dataplane::route::killswitch`]).

use serde::Deserialize;

/// Largest window, in requests.
pub(crate) const MAX_WINDOW: u32 = 1024;

/// Kill-switch settings of a route (`kill_switch = { ... }` in the configuration file).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KillSwitchConfig {
    /// Canary requests per worker in the sliding window.
    pub window: u32,
    /// Trips when more than this share of the window failed (0 < rate < 1).
    pub max_error_rate: f64,
    /// Count 5xx responses (the gateway's own 502/504 included) as failures.
    pub count_5xx: bool,
    /// Count upstream connect failures (refused, timed out) as failures.
    pub count_connect_failures: bool,
}

impl Eq for KillSwitchConfig {}

impl KillSwitchConfig {
    /// Failures within one worker's window that trip the switch:
    /// `floor(max_error_rate * window) + 1`, at most the window.
    pub fn threshold(&self) -> u32 {
        ((self.max_error_rate * f64::from(self.window)).floor() as u32 + 1).min(self.window)
    }

    /// Checks the values.
    pub fn check(&self) -> Result<(), String> {
        if !(2..=MAX_WINDOW).contains(&self.window) {
            return Err(format!("window must be within 2..={MAX_WINDOW} requests"));
        }
        if !(self.max_error_rate > 0.0 && self.max_error_rate < 1.0) {
            return Err("max_error_rate must be above 0 and below 1".into());
        }
        if !self.count_5xx && !self.count_connect_failures {
            return Err(
                "count_5xx and count_connect_failures are both off: nothing would trip it".into(),
            );
        }
        Ok(())
    }
}

/// `kill_switch = { window = 50, max_error_rate = 0.5, count_5xx = true, count_connect_failures = true }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileKillSwitch {
    window: u32,
    max_error_rate: f64,
    #[serde(default = "yes")]
    count_5xx: bool,
    #[serde(default = "yes")]
    count_connect_failures: bool,
}

fn yes() -> bool {
    true
}

impl FileKillSwitch {
    /// The checked settings.
    pub(crate) fn check(&self) -> Result<KillSwitchConfig, String> {
        let c = KillSwitchConfig {
            window: self.window,
            max_error_rate: self.max_error_rate,
            count_5xx: self.count_5xx,
            count_connect_failures: self.count_connect_failures,
        };
        c.check()?;
        Ok(c)
    }
}
