//! TLS settings as configuration values: which certificates a stage's listener serves
//! (chosen by SNI), the lowest protocol version it accepts, and how a deployment's
//! upstream connections are secured. Only paths and names live here; the files are read
//! and checked by [`crate::tls`] when the configuration is applied (at start, `reload`,
//! SIGHUP and `reload tls`), so a bad file refuses the change and the old certificates
//! keep serving.

use std::path::PathBuf;

/// A TLS listener: `tls = [{ cert, key, server_names }, ...]` on a stage, or
/// `--tls-cert` / `--tls-key` on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageTls {
    /// Certificates, chosen by the client's SNI name; the first one (or the one marked
    /// `default`) serves clients without SNI or with a name no certificate has.
    pub certs: Vec<TlsCert>,
    /// Lowest protocol version accepted (`tls_min_version`); TLS 1.1 and older are never
    /// offered.
    pub min_version: TlsVersion,
}

/// One certificate chain and its private key (PEM files).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsCert {
    /// PEM file with the leaf certificate first, then its chain.
    pub cert: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key: PathBuf,
    /// Names this certificate serves: exact (`api.example.com`) or one-label wildcards
    /// (`*.example.com`), lower-case. Empty: the DNS names in the certificate itself.
    pub server_names: Vec<String>,
    /// Serves clients without SNI (at most one per stage; else the first certificate).
    pub default: bool,
}

/// A TLS protocol version a listener may accept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3 (the default).
    #[default]
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

impl std::str::FromStr for TlsVersion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "1.2" | "tls1.2" | "TLSv1.2" => Ok(TlsVersion::Tls12),
            "1.3" | "tls1.3" | "TLSv1.3" => Ok(TlsVersion::Tls13),
            "1.0" | "1.1" | "tls1.0" | "tls1.1" | "TLSv1" | "TLSv1.1" => Err(format!(
                "'{s}' is not supported: TLS 1.1 and older are insecure (RFC 8996); use 1.2 or 1.3"
            )),
            _ => Err(format!("'{s}' is not a TLS version (use 1.2 or 1.3)")),
        }
    }
}

impl std::fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TlsVersion::Tls12 => "1.2",
            TlsVersion::Tls13 => "1.3",
        })
    }
}

/// TLS toward a deployment's endpoints (`https://` endpoints).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct UpstreamTls {
    /// Name sent as SNI and checked against the endpoint's certificate; `None` = the
    /// endpoint's IP address (which the certificate must then name).
    pub server_name: Option<String>,
    /// PEM file of the CA certificates to trust; `None` = the system's trust roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain and key for mutual TLS.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// Checks a `server_names` entry: a DNS name, or `*.` and a DNS name; returns it
/// lower-case.
pub(crate) fn parse_server_name(name: &str) -> Result<String, String> {
    let lower = name.trim().to_ascii_lowercase();
    let host = lower.strip_prefix("*.").unwrap_or(&lower);
    let ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ok {
        Ok(lower)
    } else {
        Err(format!(
            "'{name}' is not a server name (a DNS name, or '*.' and a DNS name)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names() {
        assert_eq!(
            parse_server_name("API.example.com").unwrap(),
            "api.example.com"
        );
        assert_eq!(parse_server_name("*.example.com").unwrap(), "*.example.com");
        for bad in ["", "*.", "a..b", "-a.b", "a b", "*.*.a", "a.*.b", "é.com"] {
            assert!(parse_server_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn versions() {
        assert_eq!("1.3".parse::<TlsVersion>().unwrap(), TlsVersion::Tls13);
        assert_eq!("1.2".parse::<TlsVersion>().unwrap(), TlsVersion::Tls12);
        assert!(
            "1.1"
                .parse::<TlsVersion>()
                .unwrap_err()
                .contains("RFC 8996")
        );
        assert!("2".parse::<TlsVersion>().is_err());
    }
}
