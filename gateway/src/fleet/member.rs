//! This gateway as a member of its fleet: a lease of [`crate::config::FleetConfig::lease`]
//! kept alive by a heartbeat that rewrites `PREFIX/members/NAME` (pid, version served,
//! time) every second, and the list of every member read back each time. A gateway that
//! dies stops renewing, and its key vanishes with its lease.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use etcd_client::Client;
use serde::{Deserialize, Serialize};

use super::{Shared, etcd, figures, lock, unix_ms};
use crate::control::Control;
use crate::rollout::steering::Stored;

/// A member as its heartbeat describes it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Member {
    /// Its name.
    pub(crate) name: String,
    /// Its process id.
    pub(crate) pid: u32,
    /// The configuration version it serves.
    pub(crate) version: u64,
    /// Its last heartbeat, ms since the epoch (its clock).
    pub(crate) heartbeat_ms: u64,
    /// When it started, ms since the epoch.
    pub(crate) started_ms: u64,
}

fn key(shared: &Shared) -> String {
    format!(
        "{}{}",
        etcd::members_key(&shared.cfg.prefix),
        shared.cfg.member
    )
}

/// Fails when a live gateway holds this gateway's name (after waiting one lease for a
/// previous run's key to vanish).
pub(super) async fn claim_name(shared: &Shared, client: &mut Client) -> Result<(), String> {
    let key = key(shared);
    let deadline = tokio::time::Instant::now() + shared.cfg.lease + Duration::from_secs(1);
    loop {
        let held = etcd::list(client, &key).await?;
        let Some((_, value)) = held.into_iter().find(|(k, _)| *k == key) else {
            return Ok(());
        };
        if tokio::time::Instant::now() >= deadline {
            let who = serde_json::from_str::<Member>(&value)
                .map_or_else(|_| value.clone(), |m| format!("pid {}", m.pid));
            return Err(format!(
                "fleet: member name '{}' is in use by a live gateway ({who}); give each gateway its own --fleet-member",
                shared.cfg.member
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Keeps the lease and the heartbeat going for ever, and the member list fresh.
pub(super) async fn heartbeat(shared: Arc<Shared>, mut client: Client, control: Arc<Control>) {
    let ttl = shared.cfg.lease.as_secs().max(1).cast_signed();
    let every = (shared.cfg.lease / 3).clamp(Duration::from_millis(200), Duration::from_secs(1));
    loop {
        if let Err(e) = one_lease(&shared, &mut client, &control, ttl, every).await {
            shared.fail(&e);
        }
        // Without a lease this gateway cannot lead: another takes over.
        shared.is_leader.store(false, Ordering::Release);
        tokio::time::sleep(super::sync::RETRY).await;
    }
}

/// One lease, from grant until it is lost.
async fn one_lease(
    shared: &Arc<Shared>,
    client: &mut Client,
    control: &Arc<Control>,
    ttl: i64,
    every: Duration,
) -> Result<(), String> {
    let lease = client
        .lease_grant(ttl, None)
        .await
        .map_err(|e| e.to_string())?
        .id();
    let (mut keeper, mut answers) = client
        .lease_keep_alive(lease)
        .await
        .map_err(|e| e.to_string())?;
    let key = key(shared);
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        keeper.keep_alive().await.map_err(|e| e.to_string())?;
        match answers.message().await.map_err(|e| e.to_string())? {
            Some(a) if a.ttl() > 0 => {}
            _ => return Err("the lease expired".into()),
        }
        let me = Member {
            name: shared.cfg.member.clone(),
            pid: std::process::id(),
            version: shared.version.load(Ordering::Acquire),
            heartbeat_ms: unix_ms(SystemTime::now()),
            started_ms: unix_ms(shared.started),
        };
        let value = serde_json::to_string(&me).map_err(|e| e.to_string())?;
        etcd::put_leased(client, &key, &value, lease).await?;
        let mut members: Vec<Member> = etcd::list(client, &etcd::members_key(&shared.cfg.prefix))
            .await?
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_str(&v).ok())
            .collect();
        members.sort_by(|a, b| a.name.cmp(&b.name));
        *lock(&shared.members) = members;
        publish_figures(shared, client, control, lease).await?;
        let prefix = &shared.cfg.prefix;
        let leader = etcd::campaign(client, prefix, &shared.cfg.member, lease).await?;
        let leads = leader == shared.cfg.member;
        if shared.is_leader.swap(leads, Ordering::AcqRel) != leads && !leads {
            log::info!("fleet: {leader} leads the fleet's rollouts now");
        }
        *lock(&shared.leader) = Some(leader);
        let stored = etcd::list_revisions(client, &etcd::rollouts_key(prefix)).await?;
        *lock(&shared.stored) = stored
            .into_iter()
            .filter_map(|(key, value, revision)| {
                let route = key.strip_prefix(&etcd::rollouts_key(prefix))?.to_owned();
                let value = serde_json::from_str(&value).ok()?;
                Some(Stored {
                    route,
                    value,
                    revision,
                })
            })
            .collect();
        shared.ok();
    }
}

/// Publishes this gateway's figures under its lease and reads every member's back.
async fn publish_figures(
    shared: &Arc<Shared>,
    client: &mut Client,
    control: &Arc<Control>,
    lease: i64,
) -> Result<(), String> {
    let (c, member, boot) = (
        Arc::clone(control),
        shared.cfg.member.clone(),
        shared.boot.clone(),
    );
    let at = unix_ms(SystemTime::now());
    let mine = tokio::task::spawn_blocking(move || figures::publication(&c, &member, &boot, at))
        .await
        .map_err(|e| e.to_string())?;
    let key = format!(
        "{}{}",
        etcd::stats_key(&shared.cfg.prefix),
        shared.cfg.member
    );
    etcd::put_leased(client, &key, &mine.to_string(), lease).await?;
    let listed = etcd::list(client, &etcd::stats_key(&shared.cfg.prefix)).await?;
    lock(&shared.ledger).ingest(&listed);
    Ok(())
}
