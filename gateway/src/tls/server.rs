//! A TLS listener's rustls configuration: its certificates behind the SNI [`Resolver`],
//! the protocol versions from `tls_min_version`, ALPN, and session resumption shared by
//! every listener and kept across reloads (so a certificate swap does not cost every
//! client a full handshake): stateless tickets whose keys rotate every 6 hours (rustls'
//! `TicketRotator`, both TLS 1.3 and 1.2) and a bounded session-ID cache for TLS 1.2
//! clients without ticket support. 0-RTT early data stays off (it can be replayed).

use std::sync::Arc;

use rustls::server::{ProducesTickets, ServerSessionMemoryCache, StoresServerSessions};

use super::certs::{self, CertInfo};
use super::resolve::Resolver;
use super::{ALPN, ALPN_H2, TlsError};
use crate::config::{StageTls, TlsVersion};

/// Session IDs remembered for TLS 1.2 clients that do not take tickets (all listeners).
const SESSION_CACHE: usize = 16 * 1024;

/// What every listener's configuration shares: ticket keys and the session cache.
#[derive(Clone, Debug)]
pub(crate) struct Resumption {
    ticketer: Arc<dyn ProducesTickets>,
    cache: Arc<dyn StoresServerSessions>,
}

impl Resumption {
    /// Fresh ticket keys and an empty cache.
    pub(crate) fn new() -> Result<Self, TlsError> {
        Ok(Resumption {
            ticketer: rustls::crypto::aws_lc_rs::Ticketer::new()
                .map_err(|e| TlsError::Config(format!("session tickets: {e}")))?,
            cache: ServerSessionMemoryCache::new(SESSION_CACHE),
        })
    }
}

/// A listener's finished configuration and what `show tls` says about it.
#[derive(Debug)]
pub(crate) struct ServerTls {
    pub(crate) config: Arc<rustls::ServerConfig>,
    pub(crate) certs: Vec<CertInfo>,
    pub(crate) min_version: TlsVersion,
}

/// Reads `tls`'s files and builds the listener's configuration; `http2`: offer `h2`.
pub(crate) fn build(
    tls: &StageTls,
    http2: bool,
    resumption: &Resumption,
) -> Result<ServerTls, TlsError> {
    let mut loaded = Vec::with_capacity(tls.certs.len());
    for c in &tls.certs {
        loaded.push(certs::load(c)?);
    }
    let default = tls.certs.iter().position(|c| c.default).unwrap_or(0);
    let infos: Vec<CertInfo> = loaded.iter().map(|l| l.info.clone()).collect();
    let resolver = Resolver::new(
        loaded.into_iter().map(|l| (l.key, l.info.names)).collect(),
        default,
    );
    let versions: &[&rustls::SupportedProtocolVersion] = match tls.min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let mut config = rustls::ServerConfig::builder_with_provider(super::provider())
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    let alpn: &[&[u8]] = if http2 { &ALPN_H2 } else { &ALPN };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config.ticketer = Arc::clone(&resumption.ticketer);
    config.session_storage = Arc::clone(&resumption.cache);
    config.max_early_data_size = 0;
    Ok(ServerTls {
        config: Arc::new(config),
        certs: infos,
        min_version: tls.min_version,
    })
}
