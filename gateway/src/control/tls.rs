//! The control plane's TLS state: every TLS stage's finished listener configuration and
//! every distinct upstream TLS setting's client configuration, all loaded from their
//! files in one go. A configuration is applied only if all of its TLS files load, so a
//! bad certificate or a key that does not match refuses the start, the `reload` or the
//! `reload tls` with the file and the reason, and the running certificates keep serving.
//!
//! Ticket keys and the TLS 1.2 session cache ([`Resumption`]) outlive reloads: clients
//! resume across a certificate swap. Established connections keep the configuration
//! they were accepted with; only new handshakes see a new one.

use std::fmt::Write as _;
use std::sync::Arc;

use crate::config::{Config, Deployment, UpstreamTls};
use crate::dataplane::upstream::UpTls;
use crate::tls::certs::CertInfo;
use crate::tls::server::{Resumption, ServerTls};
use crate::tls::{TlsError, client, server};

/// An upstream TLS setting and whether its endpoints speak HTTP/2 (ALPN `h2` rather
/// than `http/1.1`): each pair has a client configuration of its own.
type UpstreamKey = (UpstreamTls, bool);

/// What every TLS configuration was built from, and the results.
#[derive(Debug)]
pub(crate) struct TlsState {
    resumption: Resumption,
    /// By stage index; `None` for plain-HTTP stages.
    stages: Vec<Option<Arc<ServerTls>>>,
    upstreams: Vec<(UpstreamKey, Arc<rustls::ClientConfig>)>,
    /// When the files were read (Unix seconds).
    pub(crate) loaded_at: u64,
}

/// A TLS file of `config` that cannot be used, with the stage or route it belongs to.
pub(crate) fn context(what: &str, e: &TlsError) -> String {
    format!("{what}: {e}")
}

impl TlsState {
    /// Reads every TLS file `config` names; `resumption` is kept from the previous state
    /// (or fresh at start).
    pub(crate) fn load(config: &Config, resumption: Option<Resumption>) -> Result<Self, String> {
        let resumption = match resumption {
            Some(r) => r,
            None => Resumption::new().map_err(|e| e.to_string())?,
        };
        let mut stages = Vec::with_capacity(config.stages.len());
        let mut upstreams: Vec<(UpstreamKey, Arc<rustls::ClientConfig>)> = Vec::new();
        for stage in &config.stages {
            stages.push(match &stage.tls {
                Some(t) => Some(Arc::new(
                    server::build(t, stage.http2, &resumption)
                        .map_err(|e| context(&format!("stage '{}' tls", stage.name), &e))?,
                )),
                None => None,
            });
            for route in &stage.routes {
                let canary = route.canary.as_ref().map(|c| &c.deployment);
                for d in std::iter::once(&route.stable).chain(canary) {
                    let Some(u) = &d.tls else { continue };
                    let key = (u.clone(), d.protocol.is_h2());
                    if upstreams.iter().any(|(k, _)| *k == key) {
                        continue;
                    }
                    let built = client::build(u, key.1).map_err(|e| {
                        context(
                            &format!("route '{}' deployment '{}' tls", route.name, d.id),
                            &e,
                        )
                    })?;
                    upstreams.push((key, built));
                }
            }
        }
        Ok(TlsState {
            resumption,
            stages,
            upstreams,
            loaded_at: crate::dataplane::io::clock::now_us() / 1_000_000,
        })
    }

    /// The resumption state to carry into the next load.
    pub(crate) fn resumption(&self) -> Resumption {
        self.resumption.clone()
    }

    /// Stage `i`'s listener configuration.
    pub(crate) fn stage(&self, i: usize) -> Option<&Arc<ServerTls>> {
        self.stages.get(i).and_then(Option::as_ref)
    }

    /// What the data plane needs to reach `d`'s endpoints over TLS: the client
    /// configuration loaded for its settings, and the name to verify. `None` for a plain
    /// deployment (or settings not loaded, which [`TlsState::load`] rules out).
    pub(crate) fn plan(&self, d: &Deployment) -> Option<Arc<UpTls>> {
        let key = (d.tls.clone()?, d.protocol.is_h2());
        let config = self
            .upstreams
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, c)| Arc::clone(c))?;
        let u = &key.0;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(&key, &mut h);
        Some(Arc::new(UpTls {
            id: std::hash::Hasher::finish(&h).max(1),
            config,
            name: u
                .server_name
                .as_ref()
                .and_then(|n| rustls::pki_types::ServerName::try_from(n.clone()).ok()),
        }))
    }

    /// Per TLS stage of `config`, its name and how many certificates it has.
    pub(crate) fn stage_cert_counts(&self, config: &Config) -> Vec<(String, usize)> {
        config
            .stages
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((s.name.clone(), self.stage(i)?.certs.len())))
            .collect()
    }

    /// Every loaded certificate with its stage name, in configuration order.
    pub(crate) fn certs<'a>(&'a self, config: &'a Config) -> Vec<(&'a str, &'a CertInfo)> {
        config
            .stages
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((s.name.as_str(), self.stage(i)?)))
            .flat_map(|(name, t)| t.certs.iter().map(move |c| (name, c)))
            .collect()
    }
}

impl super::Control {
    /// `reload tls`: re-reads every certificate, key and CA file of the current
    /// configuration and swaps them in whole, or refuses with the file and the reason
    /// (the old ones keep serving). Changes no route, so the version stays.
    pub(crate) fn reload_tls(&self, expect: Option<u64>) -> Result<String, super::ControlError> {
        let mut st = self.lock();
        super::state::check_version(&st, expect)?;
        let tls = TlsState::load(&st.config, Some(st.tls.resumption()))
            .map_err(|e| super::ControlError::Invalid(format!("reload tls: {e}")))?;
        st.tls = tls;
        self.publish(&st);
        let certs = st.tls.certs(&st.config);
        let mut out = format!(
            "tls: {} certificate(s) and {} upstream setting(s) reloaded; new handshakes use them",
            certs.len(),
            st.tls.upstreams.len()
        );
        for (stage, c) in certs {
            let _ = write!(
                out,
                "\nstage {stage}: {} serial {} (not after {})",
                c.names.join(","),
                c.serial,
                crate::dataplane::io::clock::utc(c.not_after)
            );
        }
        Ok(out)
    }

    /// Every listener certificate, with its stage, as `show tls` and `/metrics` report
    /// them, and when they were read.
    pub(crate) fn tls_certs(&self) -> (Vec<(String, CertInfo, String)>, u64) {
        let st = self.lock();
        let certs = st
            .config
            .stages
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((s, st.tls.stage(i)?)))
            .flat_map(|(s, t)| {
                t.certs
                    .iter()
                    .map(move |c| (s.name.clone(), c.clone(), t.min_version.to_string()))
            })
            .collect();
        (certs, st.tls.loaded_at)
    }
}
