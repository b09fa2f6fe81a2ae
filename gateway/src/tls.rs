//! TLS material, on the ground floor beside [`crate::config`]: reading certificate and
//! key files and checking they belong together ([`certs`]), choosing a certificate by
//! SNI ([`resolve`]), and building the rustls configurations the data plane's TLS layer
//! hands to each handshake: the listener's ([`server`]) and the upstreams' ([`client`]).
//!
//! Everything here runs on the control plane, when a configuration is applied (start,
//! `reload`, SIGHUP, `reload tls`); a failure refuses that change with the file and the
//! reason, and what was serving keeps serving. Workers only ever see finished
//! `Arc<rustls::ServerConfig>` / `Arc<rustls::ClientConfig>` values in the snapshot.

pub(crate) mod certs;
pub(crate) mod client;
pub(crate) mod resolve;
pub(crate) mod server;

use std::path::PathBuf;
use std::sync::Arc;

/// ALPN protocols offered to upstreams and to clients, in preference order: the one
/// place the choice is made. A stage with `http2` offers clients `h2` first.
pub(crate) const ALPN: [&[u8]; 1] = [b"http/1.1"];
pub(crate) const ALPN_H2: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The crypto provider of every TLS configuration: aws-lc-rs with rustls' default
/// (modern) suites: TLS 1.3 AES-GCM and ChaCha20-Poly1305, TLS 1.2 ECDHE with AEADs only.
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A TLS file or setting that cannot be used; each names the file and the reason.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not PEM, or holds no certificate.
    #[error("{path}: {reason}")]
    BadCert {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The file holds no usable private key.
    #[error("{path}: {reason}")]
    BadKey {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The key is not the certificate's.
    #[error(
        "{key} does not match the certificate in {cert} (the certificate's public key is not this key's)"
    )]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// rustls refused the assembled configuration.
    #[error("{0}")]
    Config(String),
}
