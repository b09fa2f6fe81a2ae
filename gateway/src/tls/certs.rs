//! Certificate chains and keys from PEM files: read, paired (the key must be the leaf's),
//! and described for `show tls` and the expiry metric (names, issuer, serial, validity).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use super::TlsError;
use crate::config::TlsCert;

/// What `show tls` says about one certificate.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct CertInfo {
    /// The certificate file.
    pub(crate) cert_file: String,
    /// Names it is chosen for (configured `server_names`, else its DNS names).
    pub(crate) names: Vec<String>,
    /// Serves clients without SNI or with an unknown name.
    pub(crate) default: bool,
    /// Subject and issuer distinguished names.
    pub(crate) subject: String,
    pub(crate) issuer: String,
    /// Serial number, hex bytes separated by `:`.
    pub(crate) serial: String,
    /// Validity, Unix seconds.
    pub(crate) not_before: i64,
    pub(crate) not_after: i64,
    /// `ECDSA`, `RSA`, `Ed25519` or the algorithm's OID.
    pub(crate) key_type: String,
    /// Certificates in the chain, leaf included.
    pub(crate) chain_len: usize,
}

/// A loaded certificate: the chain with its signing key, and its description.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) key: Arc<CertifiedKey>,
    pub(crate) info: CertInfo,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Every certificate in the PEM file at `path`, leaf first.
pub(crate) fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let text = read(path)?;
    let bad = |reason: String| TlsError::BadCert {
        path: path.to_owned(),
        reason,
    };
    let chain = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not a PEM certificate file: {e}")))?;
    if chain.is_empty() {
        return Err(bad(
            "no PEM certificate (BEGIN CERTIFICATE) in the file".into()
        ));
    }
    Ok(chain)
}

/// The private key in the PEM file at `path`.
pub(crate) fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let text = read(path)?;
    PrivateKeyDer::from_pem_slice(&text).map_err(|e| TlsError::BadKey {
        path: path.to_owned(),
        reason: match e {
            pem::Error::NoItemsFound => {
                "no private key (PKCS#8, PKCS#1 RSA or SEC1 EC PEM) in the file".into()
            }
            e => format!("not a PEM key file: {e}"),
        },
    })
}

/// Reads `c`'s chain and key, checks the key is the leaf's, and describes the leaf.
pub(crate) fn load(c: &TlsCert) -> Result<Loaded, TlsError> {
    let chain = read_chain(&c.cert)?;
    let der = read_key(&c.key)?;
    let provider = super::provider();
    let signer = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| TlsError::BadKey {
            path: c.key.clone(),
            reason: format!("unusable private key: {e}"),
        })?;
    let key = CertifiedKey::new(chain, signer);
    match key.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(TlsError::Mismatch {
                cert: c.cert.clone(),
                key: c.key.clone(),
            });
        }
        Err(e) => {
            return Err(TlsError::BadCert {
                path: c.cert.clone(),
                reason: e.to_string(),
            });
        }
    }
    let info = describe(c, &key)?;
    Ok(Loaded {
        key: Arc::new(key),
        info,
    })
}

fn describe(c: &TlsCert, key: &CertifiedKey) -> Result<CertInfo, TlsError> {
    let leaf = key.end_entity_cert().map_err(|e| TlsError::BadCert {
        path: c.cert.clone(),
        reason: e.to_string(),
    })?;
    let (_, x) = x509_parser::parse_x509_certificate(leaf).map_err(|e| TlsError::BadCert {
        path: c.cert.clone(),
        reason: format!("not an X.509 certificate: {e}"),
    })?;
    let mut dns = Vec::new();
    if let Ok(Some(san)) = x.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(n) = name {
                dns.push(n.to_ascii_lowercase());
            }
        }
    }
    if dns.is_empty() {
        dns.extend(
            x.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(str::to_ascii_lowercase),
        );
    }
    let alg = x.public_key().algorithm.algorithm.to_id_string();
    let key_type = match alg.as_str() {
        "1.2.840.10045.2.1" => "ECDSA".to_owned(),
        "1.2.840.113549.1.1.1" | "1.2.840.113549.1.1.10" => "RSA".to_owned(),
        "1.3.101.112" => "Ed25519".to_owned(),
        _ => alg,
    };
    Ok(CertInfo {
        cert_file: c.cert.display().to_string(),
        names: if c.server_names.is_empty() {
            dns
        } else {
            c.server_names.clone()
        },
        default: c.default,
        subject: x.subject().to_string(),
        issuer: x.issuer().to_string(),
        serial: x.raw_serial_as_string(),
        not_before: x.validity().not_before.timestamp(),
        not_after: x.validity().not_after.timestamp(),
        key_type,
        chain_len: key.cert.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn files(dir: &Path, name: &str, cert_pem: &str, key_pem: &str) -> TlsCert {
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, cert_pem).unwrap();
        std::fs::write(&key, key_pem).unwrap();
        TlsCert {
            cert,
            key,
            server_names: Vec::new(),
            default: false,
        }
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cg-certs-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn loads_a_pair_and_describes_it() {
        let d = dir("ok");
        let c = rcgen::generate_simple_self_signed(vec!["api.test".into(), "*.api.test".into()])
            .unwrap();
        let spec = files(&d, "a", &c.cert.pem(), &c.signing_key.serialize_pem());
        let l = load(&spec).unwrap();
        assert_eq!(l.info.names, ["api.test", "*.api.test"]);
        assert_eq!(l.info.key_type, "ECDSA");
        assert_eq!(l.info.chain_len, 1);
        assert!(l.info.not_after > l.info.not_before);
        assert!(!l.info.serial.is_empty());
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn refuses_a_foreign_key_a_broken_key_and_no_certificate() {
        let d = dir("bad");
        let a = rcgen::generate_simple_self_signed(vec!["a.test".into()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["b.test".into()]).unwrap();
        let mismatch = files(&d, "m", &a.cert.pem(), &b.signing_key.serialize_pem());
        assert!(matches!(load(&mismatch), Err(TlsError::Mismatch { .. })));
        let broken = files(
            &d,
            "k",
            &a.cert.pem(),
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        );
        let e = load(&broken).unwrap_err();
        assert!(matches!(e, TlsError::BadKey { .. }), "{e}");
        let none = files(
            &d,
            "n",
            "not a certificate\n",
            &a.signing_key.serialize_pem(),
        );
        let e = load(&none).unwrap_err().to_string();
        assert!(e.contains("no PEM certificate"), "{e}");
        let missing = TlsCert {
            cert: d.join("absent.crt"),
            ..mismatch
        };
        let e = load(&missing).unwrap_err().to_string();
        assert!(e.contains("absent.crt"), "{e}");
        let _ = std::fs::remove_dir_all(d);
    }
}
