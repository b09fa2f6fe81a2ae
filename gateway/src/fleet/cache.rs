//! The local copy of the fleet's configuration: written after every version this gateway
//! takes on, read at start when etcd cannot be reached. One file, replaced atomically
//! (written beside, then renamed), whose first line names the prefix and the version.

use std::path::Path;

const HEADER: &str = "# canarygate fleet cache:";

/// Writes `text` as version `version` of `prefix`'s configuration.
pub(crate) fn write(path: &Path, prefix: &str, version: u64, text: &str) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    let body = format!("{HEADER} prefix {prefix} version {version}\n{text}");
    std::fs::write(&tmp, body).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The cached configuration text and its version, if `path` holds one for `prefix`.
pub(crate) fn read(path: &Path, prefix: &str) -> Result<(String, u64), String> {
    let body = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (first, text) = body.split_once('\n').unwrap_or((&body, ""));
    let mut words = first
        .strip_prefix(HEADER)
        .ok_or_else(|| format!("{}: not a fleet cache", path.display()))?
        .split_whitespace();
    match (words.next(), words.next(), words.next(), words.next()) {
        (Some("prefix"), Some(p), Some("version"), Some(v)) if p == prefix => v
            .parse()
            .map(|v| (text.to_owned(), v))
            .map_err(|_| format!("{}: bad version '{v}'", path.display())),
        (Some("prefix"), Some(p), ..) => Err(format!(
            "{}: the cache is of fleet {p}, not {prefix}",
            path.display()
        )),
        _ => Err(format!("{}: not a fleet cache", path.display())),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip_and_wrong_prefix() {
        let dir = std::env::temp_dir().join(format!("cg-cache-{}", std::process::id()));
        let path = dir.join("fleet.toml");
        super::write(&path, "/cg/a", 42, "[[stage]]\n").unwrap();
        assert_eq!(
            super::read(&path, "/cg/a").unwrap(),
            ("[[stage]]\n".to_owned(), 42)
        );
        assert!(super::read(&path, "/cg/b").unwrap_err().contains("/cg/a"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
