//! Which certificate a handshake gets: by the client's SNI name, exact names before
//! `*.` wildcards (one label, as RFC 6125 §6.4.3 allows), among several certificates for
//! one name the first whose key can sign with a scheme the client offers (so an ECDSA
//! and an RSA certificate can serve the same name); the default certificate otherwise.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::SignatureScheme;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Certificates of one listener, indexed by name.
#[derive(Debug)]
pub(crate) struct Resolver {
    keys: Vec<Arc<CertifiedKey>>,
    exact: HashMap<String, Vec<usize>>,
    /// Keyed by what follows `*.`.
    wildcard: HashMap<String, Vec<usize>>,
    default: usize,
}

impl Resolver {
    /// `certs` in configuration order, each with the names it serves; `default` is the
    /// index of the certificate for clients without a known name.
    pub(crate) fn new(certs: Vec<(Arc<CertifiedKey>, Vec<String>)>, default: usize) -> Self {
        let mut r = Resolver {
            keys: Vec::with_capacity(certs.len()),
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            default,
        };
        for (i, (key, names)) in certs.into_iter().enumerate() {
            r.keys.push(key);
            for name in names {
                let map = match name.strip_prefix("*.") {
                    Some(rest) => r.wildcard.entry(rest.to_owned()),
                    None => r.exact.entry(name),
                };
                map.or_default().push(i);
            }
        }
        r
    }

    /// The index of the certificate for `sni` and a client offering `schemes`.
    pub(crate) fn pick(&self, sni: Option<&str>, schemes: &[SignatureScheme]) -> usize {
        let Some(name) = sni.map(str::to_ascii_lowercase) else {
            return self.default;
        };
        let found = self.exact.get(&name).or_else(|| {
            let (_, parent) = name.split_once('.')?;
            self.wildcard.get(parent)
        });
        let Some(list) = found else {
            return self.default;
        };
        list.iter()
            .copied()
            .find(|&i| self.keys[i].key.choose_scheme(schemes).is_some())
            .unwrap_or(list[0])
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let i = self.pick(hello.server_name(), hello.signature_schemes());
        self.keys.get(i).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

    fn key(name: &str) -> Arc<CertifiedKey> {
        key_with(name, &rcgen::KeyPair::generate().unwrap())
    }

    fn key_with(name: &str, pair: &rcgen::KeyPair) -> Arc<CertifiedKey> {
        let params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
        let cert = params.self_signed(&pair).unwrap();
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pair.serialize_der()));
        let signer = crate::tls::provider()
            .key_provider
            .load_private_key(der)
            .unwrap();
        Arc::new(CertifiedKey::new(
            vec![CertificateDer::from(cert.der().to_vec())],
            signer,
        ))
    }

    #[test]
    fn exact_then_wildcard_then_default() {
        let all = [
            SignatureScheme::ECDSA_NISTP256_SHA256,
            SignatureScheme::RSA_PSS_SHA256,
        ];
        let r = Resolver::new(
            vec![
                (key("default.test"), vec!["default.test".into()]),
                (key("a.test"), vec!["a.test".into()]),
                (
                    key("*.wild.test"),
                    vec!["*.wild.test".into(), "x.wild.test".into()],
                ),
            ],
            0,
        );
        assert_eq!(r.pick(Some("a.test"), &all), 1);
        assert_eq!(
            r.pick(Some("A.TEST"), &all),
            1,
            "names compare case-insensitively"
        );
        assert_eq!(r.pick(Some("b.wild.test"), &all), 2);
        assert_eq!(r.pick(Some("x.wild.test"), &all), 2);
        // A wildcard covers one label only, and not the bare parent.
        assert_eq!(r.pick(Some("a.b.wild.test"), &all), 0);
        assert_eq!(r.pick(Some("wild.test"), &all), 0);
        assert_eq!(r.pick(Some("unknown.test"), &all), 0);
        assert_eq!(r.pick(None, &all), 0);
    }

    #[test]
    fn a_key_the_client_cannot_use_is_passed_over() {
        // Two certificates for one name: the ECDSA one is first, but a client that
        // only takes RSA signatures gets the second, RSA one; with none usable the
        // first is served (the handshake then fails cleanly).
        let rsa = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        let r = Resolver::new(
            vec![
                (key("a.test"), vec!["a.test".into()]),
                (key_with("a.test", &rsa), vec!["a.test".into()]),
            ],
            0,
        );
        assert_eq!(
            r.pick(Some("a.test"), &[SignatureScheme::ECDSA_NISTP256_SHA256]),
            0
        );
        assert_eq!(
            r.pick(Some("a.test"), &[SignatureScheme::RSA_PSS_SHA256]),
            1
        );
        assert_eq!(r.pick(Some("a.test"), &[SignatureScheme::ED448]), 0);
    }
}
