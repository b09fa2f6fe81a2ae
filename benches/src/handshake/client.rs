//! The client side of `cg-handshake`: one rustls configuration that every proxy under
//! test is offered alike. TLS 1.3 only, one cipher suite and one key-exchange group
//! (so a server cannot pick a cheaper or dearer one than its peers), no ALPN, the
//! server's certificate pinned by its bytes, and resumption either off (every
//! connection a full handshake) or through rustls' in-memory ticket store.
//!
//! The server's CertificateVerify signature is checked only with `verify`: the server
//! signs either way, and on a machine where client and server share the cores, every
//! microsecond the client spends verifying is one the server under test does not get.

use std::sync::Arc;

use rustls::client::Resumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, aws_lc_rs};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

/// TLS 1.3 tickets kept per thread: rustls takes one per connection and the server
/// hands out new ones on each.
const TICKETS: usize = 64;

/// The cipher suites a run may pin, by their IANA names.
pub const SUITES: [&str; 3] = [
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
];

/// What every connection of a run is offered.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    /// The certificate the server must present (DER).
    pub cert: CertificateDer<'static>,
    /// IANA name of the one TLS 1.3 cipher suite offered (one of [`SUITES`]).
    pub suite: String,
    /// Resume sessions with tickets (else every handshake is a full one).
    pub resume: bool,
    /// Check the server's CertificateVerify signature.
    pub verify: bool,
}

/// A configuration for one load thread (its own ticket store, so threads never share a
/// lock). Fails on an unknown suite name.
pub fn config(s: &ClientSettings) -> Result<Arc<rustls::ClientConfig>, String> {
    let suite = match s.suite.as_str() {
        "TLS_AES_128_GCM_SHA256" => aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256,
        "TLS_AES_256_GCM_SHA384" => aws_lc_rs::cipher_suite::TLS13_AES_256_GCM_SHA384,
        "TLS_CHACHA20_POLY1305_SHA256" => aws_lc_rs::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        other => {
            return Err(format!(
                "unknown cipher suite {other:?} (one of {})",
                SUITES.join(", ")
            ));
        }
    };
    let provider = Arc::new(CryptoProvider {
        cipher_suites: vec![suite],
        // Plain X25519: every peer has it, and none may answer with a hybrid group.
        kx_groups: vec![aws_lc_rs::kx_group::X25519],
        ..aws_lc_rs::default_provider()
    });
    let verifier = Arc::new(Pinned {
        cert: s.cert.clone(),
        verify: s.verify,
        provider: Arc::clone(&provider),
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.resumption = if s.resume {
        Resumption::in_memory_sessions(TICKETS)
    } else {
        Resumption::disabled()
    };
    Ok(Arc::new(config))
}

/// Accepts exactly one certificate, by its bytes.
#[derive(Debug)]
struct Pinned {
    cert: CertificateDer<'static>,
    verify: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // The configuration offers TLS 1.3 only.
        Err(rustls::Error::General("TLS 1.2 is not offered".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if self.verify {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        } else {
            Ok(HandshakeSignatureValid::assertion())
        }
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
