//! The one check every [`Config`] passes before a gateway starts, whether the `run` flags,
//! the file parser or a program built it: at least one stage, each with routes, every
//! route with stable endpoints and no canary share without canary endpoints. The file
//! parser reports these earlier, with a line number; this is the check `start` relies on.

use super::Config;

/// A configuration that cannot run; each message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `stages` is empty.
    #[error("stages: at least one stage is needed")]
    NoStages,
    /// A stage has no routes.
    #[error("stage '{stage}' routes: at least one route is needed")]
    NoRoutes {
        /// The stage.
        stage: String,
    },
    /// A route's stable deployment has no endpoint.
    #[error("route '{route}' stable.endpoints: the stable deployment needs at least one endpoint")]
    NoStable {
        /// The route.
        route: String,
    },
    /// A route sends a share to a canary without endpoints.
    #[error(
        "route '{route}' canary.endpoints: a canary share above 0 needs at least one canary endpoint"
    )]
    NoCanary {
        /// The route.
        route: String,
    },
    /// A TLS stage without certificates.
    #[error("stage '{stage}' tls: a TLS listener needs at least one certificate")]
    NoTlsCerts {
        /// The stage.
        stage: String,
    },
    /// `max_tls_handshakes` is 0: no TLS client could ever connect.
    #[error("max_tls_handshakes: must be at least 1")]
    NoTlsHandshakes,
    /// `h2_max_concurrent_streams` is 0: no HTTP/2 client could make a request.
    #[error("h2_max_concurrent_streams: must be at least 1")]
    NoH2Streams,
}

impl Config {
    /// Checks what every gateway needs to start; changes nothing.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.stages.is_empty() {
            return Err(ConfigError::NoStages);
        }
        if self.server.limits.max_tls_handshakes == 0 {
            return Err(ConfigError::NoTlsHandshakes);
        }
        if self.server.limits.h2_max_concurrent_streams == 0 {
            return Err(ConfigError::NoH2Streams);
        }
        for stage in &self.stages {
            if stage.tls.as_ref().is_some_and(|t| t.certs.is_empty()) {
                return Err(ConfigError::NoTlsCerts {
                    stage: stage.name.clone(),
                });
            }
            if stage.routes.is_empty() {
                return Err(ConfigError::NoRoutes {
                    stage: stage.name.clone(),
                });
            }
            for route in &stage.routes {
                if route.stable.endpoints.is_empty() {
                    return Err(ConfigError::NoStable {
                        route: route.name.clone(),
                    });
                }
                if route
                    .canary
                    .as_ref()
                    .is_some_and(|c| c.ppm > 0 && c.deployment.endpoints.is_empty())
                {
                    return Err(ConfigError::NoCanary {
                        route: route.name.clone(),
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_NAME;

    fn addr(port: u16) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn the_shortcut_stage_is_valid_and_errors_name_the_field() {
        assert_eq!(
            Config::single_route(addr(0), vec![addr(1)], vec![addr(2)], 50_000).validate(),
            Ok(())
        );
        assert_eq!(
            Config::single_route(addr(0), vec![addr(1)], Vec::new(), 0).validate(),
            Ok(())
        );
        let e = Config::single_route(addr(0), Vec::new(), Vec::new(), 0).validate();
        assert_eq!(
            e,
            Err(ConfigError::NoStable {
                route: DEFAULT_NAME.into()
            })
        );
        let e = Config::single_route(addr(0), vec![addr(1)], Vec::new(), 1).validate();
        assert!(
            e.as_ref()
                .is_err_and(|e| e.to_string().contains("canary.endpoints")),
            "{e:?}"
        );
        let mut c = Config::single_route(addr(0), vec![addr(1)], Vec::new(), 0);
        c.stages[0].routes.clear();
        assert!(matches!(c.validate(), Err(ConfigError::NoRoutes { .. })));
        c.stages.clear();
        assert_eq!(c.validate(), Err(ConfigError::NoStages));
    }
}
