//! Endpoint health settings of a deployment: the active check
//! (`health_check = { path = "/healthz", interval = "2s", timeout = "1s", rise = 2,
//! fall = 3, expect = "2xx" }`) and passive outlier detection
//! (`outlier = { consecutive_5xx = 5, consecutive_gateway_failures = 5, ... }`), as
//! values of the configuration, checked here. The checker and the ejections are the
//! control plane's (`control::health`); the data path only reads their result.

use std::time::Duration;

use serde::Deserialize;

use super::value::parse_duration;

/// A set of HTTP status codes (100..=599), e.g. `2xx`, `200,204`, `500-503`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct StatusSet([u64; 8]);

impl StatusSet {
    /// No status.
    pub const EMPTY: StatusSet = StatusSet([0; 8]);

    /// Every status from `lo` to `hi` (inclusive, clamped to 100..=599).
    pub fn range(lo: u16, hi: u16) -> StatusSet {
        let mut s = StatusSet::EMPTY;
        for code in lo.max(100)..=hi.min(599) {
            let i = usize::from(code - 100);
            s.0[i / 64] |= 1 << (i % 64);
        }
        s
    }

    /// True when `status` is in the set.
    #[inline]
    pub fn contains(&self, status: u16) -> bool {
        let Some(i) = status.checked_sub(100).map(usize::from) else {
            return false;
        };
        i < 500 && self.0[i / 64] & (1 << (i % 64)) != 0
    }

    fn union(self, other: StatusSet) -> StatusSet {
        let mut s = self;
        for (a, b) in s.0.iter_mut().zip(other.0) {
            *a |= b;
        }
        s
    }

    /// Parses `2xx`, `503`, `500-504` or a comma-separated list of those.
    pub(crate) fn parse(text: &str) -> Result<StatusSet, String> {
        let bad =
            || format!("'{text}' is not a status set like 2xx, 200,204 or 500-504 (codes 100-599)");
        let code = |t: &str| -> Result<u16, String> {
            t.parse::<u16>()
                .ok()
                .filter(|c| (100..=599).contains(c))
                .ok_or_else(bad)
        };
        let mut set = StatusSet::EMPTY;
        for part in text.split(',').map(str::trim) {
            let add = if let Some(class) = part.strip_suffix("xx") {
                match class {
                    "1" | "2" | "3" | "4" | "5" => {
                        let c = class.parse::<u16>().map_err(|_| bad())? * 100;
                        StatusSet::range(c, c + 99)
                    }
                    _ => return Err(bad()),
                }
            } else if let Some((lo, hi)) = part.split_once('-') {
                let (lo, hi) = (code(lo.trim())?, code(hi.trim())?);
                if lo > hi {
                    return Err(bad());
                }
                StatusSet::range(lo, hi)
            } else {
                let c = code(part)?;
                StatusSet::range(c, c)
            };
            set = set.union(add);
        }
        Ok(set)
    }
}

impl std::fmt::Debug for StatusSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let codes: Vec<u16> = (100..600).filter(|c| self.contains(*c)).collect();
        write!(f, "StatusSet({codes:?})")
    }
}

/// The active check of every endpoint of a deployment, run by one checker per endpoint
/// on the control-plane thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    /// Path of an HTTP `GET`; `None`: a TCP connect is the check.
    pub path: Option<String>,
    /// `Host` header of the check (default: the endpoint's address).
    pub host: Option<String>,
    /// Time between checks of one endpoint.
    pub interval: Duration,
    /// Time a check may take (connect and response head).
    pub timeout: Duration,
    /// Consecutive passed checks that bring a down endpoint up.
    pub rise: u32,
    /// Consecutive failed checks that take an up endpoint down.
    pub fall: u32,
    /// Statuses that pass.
    pub expect: StatusSet,
}

/// Passive outlier detection from live traffic: consecutive failures seen by any one
/// worker eject the endpoint for `base_ejection_time` times its ejections (capped).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outlier {
    /// Consecutive responses with a status in `statuses` that eject (0: off).
    pub consecutive_5xx: u32,
    /// Statuses counted by `consecutive_5xx`.
    pub statuses: StatusSet,
    /// Consecutive gateway failures (as counted below) that eject (0: off).
    pub consecutive_gateway_failures: u32,
    /// Connect failures (refused, unreachable, connect timeout) are gateway failures.
    pub count_connect_failures: bool,
    /// Connections closed or reset before a response head, and unparsable heads.
    pub count_resets: bool,
    /// Response timeouts.
    pub count_timeouts: bool,
    /// Ejection time of a first ejection; the n-th consecutive one lasts n times this.
    pub base_ejection_time: Duration,
    /// Longest ejection.
    pub max_ejection_time: Duration,
    /// Most of a deployment's endpoints ejected at once, in percent (one always may be).
    pub max_ejection_percent: u32,
}

/// What a deployment's endpoints are watched with; both parts are optional.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthConfig {
    /// Active check; `None`: endpoints are up unless ejected or set down by an operator.
    pub check: Option<HealthCheck>,
    /// Passive outlier detection; `None`: off.
    pub outlier: Option<Outlier>,
}

/// User-Agent of active checks, so upstream logs can tell them apart.
pub(crate) const CHECK_USER_AGENT: &str =
    concat!("canarygate-health-check/", env!("CARGO_PKG_VERSION"));

impl HealthCheck {
    /// A check with every default: TCP connect every 2 s, 1 s timeout, rise 2, fall 3,
    /// expecting 2xx once a path is set.
    pub fn tcp() -> HealthCheck {
        HealthCheck {
            path: None,
            host: None,
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 3,
            expect: StatusSet::range(200, 299),
        }
    }

    /// Checks the values.
    pub(crate) fn check(&self) -> Result<(), String> {
        if let Some(p) = &self.path
            && (!p.starts_with('/') || p.bytes().any(|b| b <= b' ' || b == 0x7f))
        {
            return Err(format!(
                "path '{p}' must start with '/' and have no spaces or control characters"
            ));
        }
        if let Some(h) = &self.host
            && (h.is_empty() || h.bytes().any(|b| b <= b' ' || b == 0x7f))
        {
            return Err(format!("host '{h}' is not a valid Host header value"));
        }
        if self.rise == 0 || self.fall == 0 {
            return Err("rise and fall must be at least 1".into());
        }
        if self.interval < Duration::from_millis(100) {
            return Err("interval must be at least 100ms".into());
        }
        if self.timeout > self.interval {
            return Err("timeout must not be longer than interval".into());
        }
        if self.expect == StatusSet::EMPTY {
            return Err("expect names no status".into());
        }
        Ok(())
    }
}

impl Default for Outlier {
    fn default() -> Self {
        Outlier {
            consecutive_5xx: 5,
            statuses: StatusSet::range(500, 599),
            consecutive_gateway_failures: 5,
            count_connect_failures: true,
            count_resets: true,
            count_timeouts: true,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 50,
        }
    }
}

impl Outlier {
    /// Checks the values.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.consecutive_5xx == 0 && self.consecutive_gateway_failures == 0 {
            return Err(
                "consecutive_5xx and consecutive_gateway_failures are both 0: nothing would eject"
                    .into(),
            );
        }
        if self.consecutive_gateway_failures > 0
            && !(self.count_connect_failures || self.count_resets || self.count_timeouts)
        {
            return Err("consecutive_gateway_failures is set but count_connect_failures, count_resets and count_timeouts are all off".into());
        }
        if self.max_ejection_percent > 100 {
            return Err("max_ejection_percent must be within 0..=100".into());
        }
        if self.max_ejection_time < self.base_ejection_time {
            return Err("max_ejection_time must not be shorter than base_ejection_time".into());
        }
        Ok(())
    }

    /// Most endpoints of a deployment of `n` that may be ejected at once: the share
    /// rounded down, but at least one (a lone bad endpoint can always be ejected; with
    /// every endpoint out, panic mode sends traffic to all of them anyway).
    pub fn max_ejected(&self, n: usize) -> usize {
        (n * self.max_ejection_percent as usize / 100).max(1)
    }
}

/// `health_check = { path = "/healthz", interval = "2s", timeout = "1s", rise = 2, fall = 3, expect = "2xx", host = "..." }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileHealthCheck {
    path: Option<String>,
    host: Option<String>,
    interval: Option<String>,
    timeout: Option<String>,
    rise: Option<u32>,
    fall: Option<u32>,
    expect: Option<String>,
}

impl FileHealthCheck {
    /// The checked settings.
    pub(crate) fn check(&self) -> Result<HealthCheck, String> {
        let mut c = HealthCheck::tcp();
        c.path.clone_from(&self.path);
        c.host.clone_from(&self.host);
        if let Some(i) = &self.interval {
            c.interval = parse_duration(i).map_err(|e| format!("interval: {e}"))?;
            // A shorter interval shortens the default timeout with it.
            c.timeout = c.timeout.min(c.interval);
        }
        if let Some(t) = &self.timeout {
            c.timeout = parse_duration(t).map_err(|e| format!("timeout: {e}"))?;
        }
        c.rise = self.rise.unwrap_or(c.rise);
        c.fall = self.fall.unwrap_or(c.fall);
        if let Some(e) = &self.expect {
            if c.path.is_none() {
                return Err("expect needs a path (a TCP check has no status)".into());
            }
            c.expect = StatusSet::parse(e).map_err(|e| format!("expect: {e}"))?;
        }
        c.check()?;
        Ok(c)
    }
}

/// `outlier = { consecutive_5xx = 5, statuses = "5xx", consecutive_gateway_failures = 5, count_connect_failures = true, count_resets = true, count_timeouts = true, base_ejection_time = "30s", max_ejection_time = "300s", max_ejection_percent = 50 }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileOutlier {
    consecutive_5xx: Option<u32>,
    statuses: Option<String>,
    consecutive_gateway_failures: Option<u32>,
    count_connect_failures: Option<bool>,
    count_resets: Option<bool>,
    count_timeouts: Option<bool>,
    base_ejection_time: Option<String>,
    max_ejection_time: Option<String>,
    max_ejection_percent: Option<u32>,
}

impl FileOutlier {
    /// The checked settings.
    pub(crate) fn check(&self) -> Result<Outlier, String> {
        let mut o = Outlier::default();
        o.consecutive_5xx = self.consecutive_5xx.unwrap_or(o.consecutive_5xx);
        if let Some(s) = &self.statuses {
            o.statuses = StatusSet::parse(s).map_err(|e| format!("statuses: {e}"))?;
        }
        o.consecutive_gateway_failures = self
            .consecutive_gateway_failures
            .unwrap_or(o.consecutive_gateway_failures);
        o.count_connect_failures = self.count_connect_failures.unwrap_or(true);
        o.count_resets = self.count_resets.unwrap_or(true);
        o.count_timeouts = self.count_timeouts.unwrap_or(true);
        if let Some(t) = &self.base_ejection_time {
            o.base_ejection_time =
                parse_duration(t).map_err(|e| format!("base_ejection_time: {e}"))?;
            o.max_ejection_time = o.max_ejection_time.max(o.base_ejection_time);
        }
        if let Some(t) = &self.max_ejection_time {
            o.max_ejection_time =
                parse_duration(t).map_err(|e| format!("max_ejection_time: {e}"))?;
        }
        o.max_ejection_percent = self.max_ejection_percent.unwrap_or(o.max_ejection_percent);
        o.check()?;
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_sets() {
        let s = StatusSet::parse("2xx").unwrap();
        assert!(s.contains(200) && s.contains(299) && !s.contains(300) && !s.contains(199));
        let s = StatusSet::parse("200, 204,500-503").unwrap();
        assert!(s.contains(204) && s.contains(502) && !s.contains(201) && !s.contains(504));
        assert!(!s.contains(0) && !s.contains(99) && !s.contains(600) && !s.contains(u16::MAX));
        for bad in ["", "6xx", "2x", "99", "600", "503-500", "abc", "2xx,"] {
            assert!(StatusSet::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn max_ejected_is_the_share_but_at_least_one() {
        let o = Outlier::default();
        assert_eq!(o.max_ejected(1), 1);
        assert_eq!(o.max_ejected(3), 1);
        assert_eq!(o.max_ejected(4), 2);
        let all = Outlier {
            max_ejection_percent: 100,
            ..Outlier::default()
        };
        assert_eq!(all.max_ejected(3), 3);
    }

    #[test]
    fn file_values_are_checked() {
        let t: FileHealthCheck =
            toml::from_str("path = \"/healthz\"\ninterval = \"500ms\"\nexpect = \"200\"").unwrap();
        let c = t.check().unwrap();
        assert_eq!(c.timeout, Duration::from_millis(500));
        assert!(c.expect.contains(200) && !c.expect.contains(204));
        let t: FileHealthCheck = toml::from_str("expect = \"2xx\"").unwrap();
        assert!(t.check().unwrap_err().contains("needs a path"));
        let t: FileHealthCheck = toml::from_str("path = \"nope\"").unwrap();
        assert!(t.check().unwrap_err().contains("must start with '/'"));
        let t: FileHealthCheck = toml::from_str("rise = 0").unwrap();
        assert!(t.check().is_err());
        let t: FileHealthCheck = toml::from_str("interval = \"1s\"\ntimeout = \"2s\"").unwrap();
        assert!(t.check().unwrap_err().contains("timeout"));
        let o: FileOutlier =
            toml::from_str("consecutive_5xx = 0\nconsecutive_gateway_failures = 0").unwrap();
        assert!(o.check().unwrap_err().contains("nothing would eject"));
        let o: FileOutlier = toml::from_str("max_ejection_percent = 101").unwrap();
        assert!(o.check().is_err());
        let o: FileOutlier = toml::from_str("base_ejection_time = \"10m\"").unwrap();
        assert_eq!(
            o.check().unwrap().max_ejection_time,
            Duration::from_secs(600)
        );
    }
}
