//! Fleet mode's settings (`--etcd ...` on the command line, `[fleet]` in the file): where
//! the fleet's configuration lives in etcd and who this gateway is in it. The values are
//! checked here, once, for both.

use std::path::PathBuf;
use std::time::Duration;

/// Prefix under which a fleet keeps its keys when none is given.
pub(crate) const DEFAULT_PREFIX: &str = "/canarygate/default";

/// Lease of a member's keys (heartbeat, statistics, leadership) when none is given: a
/// dead gateway's keys vanish, and another takes the lead, within it.
pub(crate) const DEFAULT_LEASE: Duration = Duration::from_secs(3);

/// Fleet mode: this gateway's configuration is the fleet's, kept in etcd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetConfig {
    /// etcd client URLs (`http://host:port`).
    pub etcd: Vec<String>,
    /// Key prefix of this fleet (`/canarygate/NAME`, no trailing `/`).
    pub prefix: String,
    /// This gateway's name in the fleet (unique among live members).
    pub member: String,
    /// Local copy of the last configuration seen, to start from while etcd is down;
    /// `None` = no copy.
    pub cache: Option<PathBuf>,
    /// Lease of this member's keys.
    pub lease: Duration,
}

impl FleetConfig {
    /// Settings for `etcd` with the defaults: prefix [`DEFAULT_PREFIX`], member named
    /// after the host, cache under the state directory, lease [`DEFAULT_LEASE`].
    pub fn new(etcd: Vec<String>) -> FleetConfig {
        FleetConfig {
            etcd,
            prefix: DEFAULT_PREFIX.to_owned(),
            member: default_member(),
            cache: Some(default_cache(DEFAULT_PREFIX)),
            lease: DEFAULT_LEASE,
        }
    }

    /// Sets the prefix and, when the cache is the default one, moves it along.
    pub(crate) fn set_prefix(&mut self, prefix: String) {
        if self.cache.as_deref() == Some(default_cache(&self.prefix).as_path()) {
            self.cache = Some(default_cache(&prefix));
        }
        self.prefix = prefix;
    }
}

/// Checks one etcd URL: `http://host:port` (TLS to etcd is not supported yet).
pub(crate) fn parse_etcd_url(text: &str) -> Result<String, String> {
    let t = text.trim();
    let Some(rest) = t.strip_prefix("http://") else {
        return Err(format!(
            "'{t}' is not an etcd URL (http://host:port; https is not supported)"
        ));
    };
    let hostport = rest.trim_end_matches('/');
    match hostport.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(format!("http://{hostport}"))
        }
        _ => Err(format!("'{t}' needs a host and a port (http://host:port)")),
    }
}

/// Checks a key prefix: starts with `/`, no trailing `/`, printable ASCII without spaces.
pub(crate) fn parse_prefix(text: &str) -> Result<String, String> {
    let ok = text.len() > 1
        && text.starts_with('/')
        && !text.ends_with('/')
        && text.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "'{text}' is not a key prefix (like /canarygate/prod: starts with '/', no trailing '/', no spaces)"
        ))
    }
}

/// Checks a member name: 1-64 of letters, digits, `.`, `-`, `_`.
pub(crate) fn parse_member(text: &str) -> Result<String, String> {
    let ok = (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if ok {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "'{text}' is not a member name (1-64 letters, digits, '.', '-', '_')"
        ))
    }
}

/// The host's name, else `gateway`.
fn default_member() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    parse_member(host.trim()).unwrap_or_else(|_| "gateway".to_owned())
}

/// `$STATE_DIRECTORY` (systemd's `StateDirectory=`) or `/var/lib/canarygate`, one file per
/// prefix.
fn default_cache(prefix: &str) -> PathBuf {
    let dir = std::env::var_os("STATE_DIRECTORY")
        .map_or_else(|| PathBuf::from("/var/lib/canarygate"), PathBuf::from);
    let name: String = prefix
        .trim_start_matches('/')
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    dir.join(format!("fleet-{name}.toml"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_checked() {
        assert_eq!(
            parse_etcd_url("http://127.0.0.1:2379/").unwrap(),
            "http://127.0.0.1:2379"
        );
        assert!(parse_etcd_url("https://a:1").is_err());
        assert!(parse_etcd_url("http://a").is_err());
        assert!(parse_etcd_url("127.0.0.1:2379").is_err());
        assert!(parse_prefix("/canarygate/prod").is_ok());
        assert!(parse_prefix("canarygate").is_err());
        assert!(parse_prefix("/a/").is_err());
        assert!(parse_prefix("/a b").is_err());
        assert!(parse_member("gw-1.east").is_ok());
        assert!(parse_member("").is_err());
        assert!(parse_member("a/b").is_err());
    }

    #[test]
    fn the_default_cache_follows_the_prefix() {
        let mut f = FleetConfig::new(vec!["http://127.0.0.1:2379".into()]);
        f.set_prefix("/canarygate/prod".into());
        assert!(
            f.cache
                .unwrap()
                .to_string_lossy()
                .ends_with("fleet-canarygate_prod.toml")
        );
    }
}
