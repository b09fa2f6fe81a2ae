//! TLS toward upstream endpoints: a rustls client configuration per distinct
//! [`UpstreamTls`] (trust roots from `ca_file` or the system, optional client
//! certificate for mutual TLS, ALPN `http/1.1`), and the name the endpoint's certificate
//! is checked against.

use std::sync::Arc;

use rustls::RootCertStore;

use super::certs::{read_chain, read_key};
use super::{ALPN, TlsError};
use crate::config::UpstreamTls;

/// The client configuration for `u`, offering ALPN `h2` alone when `h2` (the
/// deployment speaks HTTP/2), else `http/1.1`.
pub(crate) fn build(u: &UpstreamTls, h2: bool) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    if let Some(ca) = &u.ca_file {
        for cert in read_chain(ca)? {
            roots.add(cert).map_err(|e| TlsError::BadCert {
                path: ca.clone(),
                reason: format!("not a usable CA certificate: {e}"),
            })?;
        }
    } else {
        let found = rustls_native_certs::load_native_certs();
        for cert in found.certs {
            // One unusable system certificate must not cost the others.
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            return Err(TlsError::Config(format!(
                "no system trust roots found ({}); set tls.ca_file",
                found
                    .errors
                    .first()
                    .map_or_else(|| "none installed".to_owned(), ToString::to_string)
            )));
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(super::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match &u.client_cert {
        Some((cert, key)) => builder
            .with_client_auth_cert(read_chain(cert)?, read_key(key)?)
            .map_err(|e| TlsError::BadKey {
                path: key.clone(),
                reason: format!("client certificate: {e}"),
            })?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = if h2 {
        vec![b"h2".to_vec()]
    } else {
        ALPN.iter().map(|p| p.to_vec()).collect()
    };
    Ok(Arc::new(config))
}
