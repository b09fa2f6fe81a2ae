//! Fleet mode on the command line: the `run` flags that join a fleet (`--etcd`,
//! `--fleet-prefix`, `--fleet-member`, `--fleet-cache`, `--fleet-lease`) and the
//! `canarygate fleet import FILE` / `fleet export` commands that move a TOML
//! configuration into and out of etcd.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::config::fleet::{DEFAULT_PREFIX, parse_etcd_url, parse_member, parse_prefix};
use crate::config::value::parse_duration;
use crate::config::{Config, FleetConfig};
use crate::fleet::etcd;

/// The `run` flags of fleet mode.
#[derive(Debug, Args)]
pub(crate) struct FleetArgs {
    /// Fleet mode: keep the routing configuration in etcd at these client URLs
    /// (http://host:port, comma-separated) and share it with every gateway of the fleet;
    /// admin changes on any gateway change the fleet. With --config: `[fleet] etcd`.
    #[arg(long, value_name = "URL[,URL..]", value_parser = parse_etcd_url, value_delimiter = ',')]
    pub etcd: Vec<String>,
    /// Key prefix of the fleet in etcd (default /canarygate/default).
    #[arg(long, value_name = "PREFIX", value_parser = parse_prefix)]
    pub fleet_prefix: Option<String>,
    /// This gateway's name in the fleet, unique among its live members (default: the
    /// host name).
    #[arg(long, value_name = "NAME", value_parser = parse_member)]
    pub fleet_member: Option<String>,
    /// Local copy of the fleet's last configuration, to start from when etcd is down
    /// (default: $STATE_DIRECTORY or /var/lib/canarygate, fleet-PREFIX.toml).
    #[arg(long, value_name = "PATH")]
    pub fleet_cache: Option<PathBuf>,
    /// Lease of this gateway's keys in etcd: how soon the fleet notices it is gone and
    /// another member takes over its rollouts (whole seconds, default 3s).
    #[arg(long, value_name = "DUR", value_parser = parse_lease)]
    pub fleet_lease: Option<Duration>,
}

fn parse_lease(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d < Duration::from_secs(1) {
        return Err(format!(
            "'{text}' is under 1s (etcd leases are whole seconds)"
        ));
    }
    Ok(d)
}

impl FleetArgs {
    /// True when any fleet flag was given.
    pub(crate) fn given(&self) -> bool {
        !self.etcd.is_empty()
            || self.fleet_prefix.is_some()
            || self.fleet_member.is_some()
            || self.fleet_cache.is_some()
            || self.fleet_lease.is_some()
    }

    /// Puts the flags over the file's `[fleet]` (or starts fleet mode). Fails naming the
    /// flag when fleet settings are given without any etcd URL.
    pub(crate) fn apply(&self, config: &mut Config) -> Result<(), String> {
        if !self.given() {
            return Ok(());
        }
        let mut fleet = match (config.server.fleet.take(), self.etcd.is_empty()) {
            (Some(f), true) => f,
            (Some(mut f), false) => {
                f.etcd.clone_from(&self.etcd);
                f
            }
            (None, false) => FleetConfig::new(self.etcd.clone()),
            (None, true) => {
                return Err(
                    "--etcd: the --fleet-* flags need etcd URLs (--etcd or [fleet] etcd)".into(),
                );
            }
        };
        if let Some(p) = &self.fleet_prefix {
            fleet.set_prefix(p.clone());
        }
        if let Some(m) = &self.fleet_member {
            fleet.member.clone_from(m);
        }
        if let Some(c) = &self.fleet_cache {
            fleet.cache = Some(c.clone());
        }
        if let Some(l) = self.fleet_lease {
            fleet.lease = l;
        }
        config.server.fleet = Some(fleet);
        Ok(())
    }
}

/// Where `fleet import` / `export` find the fleet.
#[derive(Debug, Args)]
pub(crate) struct Target {
    /// etcd client URLs (http://host:port, comma-separated).
    #[arg(long, value_name = "URL[,URL..]", value_parser = parse_etcd_url, value_delimiter = ',', required = true, env = "CANARYGATE_ETCD")]
    pub etcd: Vec<String>,
    /// Key prefix of the fleet.
    #[arg(long, value_name = "PREFIX", value_parser = parse_prefix, default_value = DEFAULT_PREFIX)]
    pub fleet_prefix: String,
}

/// `canarygate fleet ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum FleetCommand {
    /// Store the stages and routes of a TOML configuration file as the fleet's
    /// configuration (every gateway of the fleet takes it on; `[server]` stays local).
    Import {
        /// The TOML configuration file (checked first, as check-config does).
        file: PathBuf,
        #[command(flatten)]
        target: Target,
        /// Store it only if the fleet's configuration is still at this version.
        #[arg(long, value_name = "VERSION")]
        expect: Option<u64>,
    },
    /// Print the fleet's configuration as a TOML file (stages and routes), with its
    /// version in a comment.
    Export {
        #[command(flatten)]
        target: Target,
    },
}

/// Runs `canarygate fleet ...`.
pub(crate) fn run(command: &FleetCommand) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        match command {
            FleetCommand::Import {
                file,
                target,
                expect,
            } => {
                let config = crate::config::file::load(file).map_err(|e| anyhow::anyhow!("{e}"))?;
                if config.stages.is_empty() {
                    anyhow::bail!("{}: no [[stage]] to import", file.display());
                }
                config
                    .validate()
                    .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
                let text = crate::config::render::stages_toml(&config);
                let mut client = etcd::connect(&target.etcd)
                    .await
                    .map_err(|e| anyhow::anyhow!(e))?;
                let prefix = &target.fleet_prefix;
                let base = match expect {
                    Some(v) => *v,
                    None => etcd::get_config(&mut client, prefix)
                        .await
                        .map_err(|e| anyhow::anyhow!("etcd: {e}"))?
                        .map_or(0, |(_, v)| v),
                };
                match etcd::put_config(&mut client, prefix, base, &text)
                    .await
                    .map_err(|e| anyhow::anyhow!("etcd: {e}"))?
                {
                    etcd::Cas::Stored(v) => {
                        println!(
                            "imported {} into fleet {prefix} (version {v})",
                            file.display()
                        );
                        Ok(())
                    }
                    etcd::Cas::Moved(current) => anyhow::bail!(
                        "version mismatch: expected {base}, current is {}",
                        current.map_or(0, |(_, v)| v)
                    ),
                }
            }
            FleetCommand::Export { target } => {
                let mut client = etcd::connect(&target.etcd)
                    .await
                    .map_err(|e| anyhow::anyhow!(e))?;
                let prefix = &target.fleet_prefix;
                match etcd::get_config(&mut client, prefix)
                    .await
                    .map_err(|e| anyhow::anyhow!("etcd: {e}"))?
                {
                    Some((text, v)) => {
                        println!("# fleet {prefix}, version {v}");
                        print!("{text}");
                        Ok(())
                    }
                    None => anyhow::bail!(
                        "fleet {prefix} has no configuration (etcd key {})",
                        etcd::config_key(prefix)
                    ),
                }
            }
        }
    })
}
