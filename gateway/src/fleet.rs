//! Fleet mode: many gateways, one configuration, kept in etcd under a prefix
//! (`--etcd URL`, `[fleet]`). Each gateway watches it and publishes every version to its
//! workers the way an admin command does; every change this gateway makes (admin
//! command, rollout step, kill-switch trip) is stored in etcd first, compare-and-set on
//! the configuration's revision, which is the version `expect` compares.
//!
//! Where it sits: beside the admin server, above the routing state. It implements
//! [`crate::control::store::Store`], which `Control` calls under its lock, so it never
//! calls `Control` from its own thread: etcd runs on a thread of its own (a one-thread
//! tokio runtime), changes are handed to it as jobs, and the versions other gateways
//! store are taken on in blocking tasks. When etcd is unreachable the gateway keeps
//! serving what it has, refuses changes with the reason, and catches up when etcd is
//! back; it starts from its local copy ([`cache`]) when etcd is down at start.
//!
//! - [`etcd`]: the requests;
//! - [`sync`]: the watch that takes on other gateways' versions;
//! - [`member`]: this gateway's lease and heartbeat, the list of members, the
//!   leadership of rollouts;
//! - [`figures`]: every member's figures, merged for the fleet's judge;
//! - [`cache`]: the local copy.

pub(crate) mod cache;
pub(crate) mod etcd;
mod figures;
mod member;
mod sync;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::config::{Config, FleetConfig, ServerConfig};
use crate::control::Control;
use crate::control::store::{MemberStatus, Store, StoreError, StoreStatus};
use crate::rollout::steering::{Figures, Steering, Stored};

/// A change waits at most this long for etcd's answer (then it is refused).
const COMMIT_WAIT: Duration = Duration::from_secs(3);

/// Work for the etcd thread.
enum Job {
    /// Store a configuration compare-and-set on `base`.
    Commit {
        base: u64,
        text: String,
        reply: std::sync::mpsc::Sender<Result<etcd::Cas, String>>,
    },
    /// Store a value compare-and-set on `base` (rollouts).
    Put {
        key: String,
        value: String,
        base: u64,
        reply: std::sync::mpsc::Sender<Result<Option<u64>, String>>,
    },
}

/// etcd's state as this gateway last saw it.
#[derive(Debug, Default)]
struct Health {
    /// When it stopped answering, if it does not.
    down_since: Option<(SystemTime, Instant)>,
    /// The last error.
    error: String,
}

/// What the etcd thread and the control plane share.
#[derive(Debug)]
pub(crate) struct Shared {
    cfg: FleetConfig,
    /// This gateway's server settings: the fleet's text has routing only.
    server: ServerConfig,
    /// The fleet's listen address of each stage (this gateway's own may differ: port 0).
    listens: Mutex<HashMap<String, SocketAddr>>,
    up: AtomicBool,
    health: Mutex<Health>,
    /// Highest fleet version this gateway serves.
    version: AtomicU64,
    members: Mutex<Vec<member::Member>>,
    refused: AtomicU64,
    outages: AtomicU64,
    started: SystemTime,
    /// This run of this member, among its runs (`PID-STARTED_MS`).
    boot: String,
    /// Every member's figures.
    ledger: Mutex<figures::Ledger>,
    /// The member that runs rollouts, as last read.
    leader: Mutex<Option<String>>,
    is_leader: AtomicBool,
    /// The fleet's rollouts, as last read.
    stored: Mutex<Vec<Stored>>,
}

impl Shared {
    fn ok(&self) {
        if !self.up.swap(true, Ordering::AcqRel) {
            let mut h = lock(&self.health);
            if let Some((_, at)) = h.down_since.take() {
                log::info!(
                    "fleet: etcd is reachable again after {:.1}s; catching up",
                    at.elapsed().as_secs_f64()
                );
            }
        }
    }

    fn fail(&self, error: &str) {
        let error = &short(error);
        let mut h = lock(&self.health);
        error.clone_into(&mut h.error);
        if self.up.swap(false, Ordering::AcqRel) || h.down_since.is_none() {
            h.down_since = Some((SystemTime::now(), Instant::now()));
            self.outages.fetch_add(1, Ordering::Relaxed);
            log::warn!(
                "fleet: etcd is unreachable ({error}); serving version {} and refusing changes until it is back",
                self.version.load(Ordering::Acquire)
            );
        }
    }

    /// Why a change is refused while etcd is unreachable.
    fn refusal(&self) -> String {
        let h = lock(&self.health);
        let since = h
            .down_since
            .map_or(0.0, |(_, at)| at.elapsed().as_secs_f64());
        format!(
            "fleet: etcd is unreachable ({}, for {since:.1}s); the change is refused and this gateway keeps serving version {}",
            h.error,
            self.version.load(Ordering::Acquire)
        )
    }

    /// The fleet's text as this gateway's configuration.
    fn parse(&self, text: &str) -> Result<Config, String> {
        // No `/` in it: the parser resolves relative file paths against its directory.
        let origin = format!(
            "etcd key {}",
            etcd::config_key(&self.cfg.prefix).replace('/', ":")
        );
        let mut config =
            crate::config::file::parse(text, Path::new(&origin)).map_err(|e| e.to_string())?;
        config.server = self.server.clone();
        Ok(config)
    }

    /// Remembers the fleet's listen addresses of `config` (as the fleet wrote them).
    fn remember_listens(&self, config: &Config) {
        *lock(&self.listens) = config
            .stages
            .iter()
            .map(|s| (s.name.clone(), s.listen))
            .collect();
    }

    /// `config`'s routing part as the fleet's text (the fleet's listen addresses, not
    /// the ports this gateway was given for port 0).
    fn render(&self, config: &Config) -> String {
        let mut c = config.clone();
        let listens = lock(&self.listens);
        for s in &mut c.stages {
            if let Some(a) = listens.get(&s.name) {
                s.listen = *a;
            }
        }
        crate::config::render::stages_toml(&c)
    }

    /// Records that this gateway serves `version` of `text`, and writes the cache.
    fn served(&self, version: u64, text: &str) {
        self.version.fetch_max(version, Ordering::AcqRel);
        if let Some(path) = &self.cfg.cache
            && let Err(e) = cache::write(path, &self.cfg.prefix, version, text)
        {
            log::warn!("fleet: cannot write the local copy: {e}");
        }
    }
}

/// tonic's errors nest their causes; operators need the innermost one.
fn short(error: &str) -> String {
    for (needle, says) in [
        ("Connection refused", "connection refused"),
        ("tcp connect error", "cannot connect"),
        ("broken pipe", "connection lost"),
        ("timed out", "timed out"),
        ("Timeout", "timed out"),
    ] {
        if error.contains(needle) {
            return says.to_owned();
        }
    }
    error.chars().take(160).collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// This gateway in its fleet: the handle the control plane and `Control` use.
#[derive(Debug)]
pub(crate) struct Fleet {
    shared: Arc<Shared>,
    jobs: tokio::sync::mpsc::UnboundedSender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Job::Commit { base, .. } => write!(f, "Commit({base})"),
            Job::Put { key, base, .. } => write!(f, "Put({key}, {base})"),
        }
    }
}

/// A gateway that joined its fleet and has its configuration, not serving yet.
#[derive(Debug)]
pub(crate) struct Joined {
    fleet: Arc<Fleet>,
    /// The fleet's configuration with this gateway's server settings.
    pub(crate) config: Config,
    /// Its version.
    pub(crate) version: u64,
    start: tokio::sync::oneshot::Sender<Arc<Control>>,
}

/// Where the starting configuration came from.
fn describe_start(from_cache: bool, version: u64, prefix: &str) -> String {
    if from_cache {
        format!(
            "fleet {prefix}: etcd is unreachable; starting from the local copy of version {version}"
        )
    } else {
        format!("fleet {prefix}: configuration version {version} from etcd")
    }
}

/// Joins the fleet `local.server.fleet` names: connects to etcd on a thread of its own,
/// reads the fleet's configuration (storing `local`'s routing part first when the fleet
/// has none yet and `local` has stages), or starts from the local copy when etcd cannot
/// be reached. Fails with the reason when there is neither.
pub(crate) fn join(local: &Config) -> Result<Joined, String> {
    let cfg = local
        .server
        .fleet
        .clone()
        .ok_or_else(|| "fleet: no [fleet] settings".to_owned())?;
    let shared = Arc::new(Shared {
        server: local.server.clone(),
        listens: Mutex::new(HashMap::new()),
        up: AtomicBool::new(true),
        health: Mutex::new(Health::default()),
        version: AtomicU64::new(0),
        members: Mutex::new(Vec::new()),
        refused: AtomicU64::new(0),
        outages: AtomicU64::new(0),
        started: SystemTime::now(),
        boot: format!("{}-{}", std::process::id(), unix_ms(SystemTime::now())),
        ledger: Mutex::new(figures::Ledger::default()),
        leader: Mutex::new(None),
        is_leader: AtomicBool::new(false),
        stored: Mutex::new(Vec::new()),
        cfg,
    });
    let (jobs, job_rx) = tokio::sync::mpsc::unbounded_channel();
    let (first_tx, first_rx) = std::sync::mpsc::channel();
    let (start_tx, start_rx) = tokio::sync::oneshot::channel();
    let seed = (!local.stages.is_empty()).then(|| crate::config::render::stages_toml(local));
    let thread_shared = Arc::clone(&shared);
    std::thread::Builder::new()
        .name("canarygate-fleet".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = first_tx.send(Err(format!("fleet: cannot start its runtime: {e}")));
                    return;
                }
            };
            rt.block_on(sync::main(thread_shared, seed, first_tx, start_rx, job_rx));
        })
        .map_err(|e| format!("fleet: cannot start its thread: {e}"))?;
    let (text, version, from_cache) = first_rx
        .recv_timeout(etcd::REQUEST_TIMEOUT * 3 + shared.cfg.lease)
        .map_err(|_| "fleet: no answer from etcd or the local copy".to_owned())??;
    let config = shared.parse(&text)?;
    shared.remember_listens(&config);
    shared.served(version, &text);
    log::info!(
        "{}",
        describe_start(from_cache, version, &shared.cfg.prefix)
    );
    Ok(Joined {
        fleet: Arc::new(Fleet { shared, jobs }),
        config,
        version,
        start: start_tx,
    })
}

impl Joined {
    /// From now on `control`'s changes are the fleet's: attaches the store and starts
    /// the watch and the heartbeat.
    pub(crate) fn run(self, control: &Arc<Control>) -> Arc<Fleet> {
        control.attach_store(Arc::clone(&self.fleet) as Arc<dyn Store>, self.version);
        let _ = self.start.send(Arc::clone(control));
        self.fleet
    }
}

impl Fleet {
    fn refuse(&self, why: String) -> StoreError {
        self.shared.refused.fetch_add(1, Ordering::Relaxed);
        StoreError::Unavailable(why)
    }
}

impl Store for Fleet {
    fn commit(&self, base: u64, config: &Config) -> Result<u64, StoreError> {
        let shared = &self.shared;
        if !shared.up.load(Ordering::Acquire) {
            return Err(self.refuse(shared.refusal()));
        }
        let text = shared.render(config);
        let (reply, answer) = std::sync::mpsc::channel();
        if self
            .jobs
            .send(Job::Commit {
                base,
                text: text.clone(),
                reply,
            })
            .is_err()
        {
            return Err(self.refuse("fleet: the etcd thread is gone".into()));
        }
        match answer.recv_timeout(COMMIT_WAIT) {
            Ok(Ok(etcd::Cas::Stored(version))) => {
                shared.served(version, &text);
                Ok(version)
            }
            Ok(Ok(etcd::Cas::Moved(Some((text, version))))) => match shared.parse(&text) {
                Ok(config) => {
                    shared.remember_listens(&config);
                    Err(StoreError::Moved {
                        config: Box::new(config),
                        version,
                    })
                }
                Err(e) => Err(self.refuse(format!(
                    "fleet: version {version} in etcd cannot be used here: {e}"
                ))),
            },
            Ok(Ok(etcd::Cas::Moved(None))) => Err(self.refuse(format!(
                "fleet: there is no configuration at {} any more; `canarygate fleet import FILE` puts one back",
                etcd::config_key(&shared.cfg.prefix)
            ))),
            Ok(Err(e)) => {
                shared.fail(&e);
                Err(self.refuse(shared.refusal()))
            }
            Err(_) => {
                shared.fail("no answer in time");
                Err(self.refuse(shared.refusal()))
            }
        }
    }

    fn status(&self) -> StoreStatus {
        let shared = &self.shared;
        let now = unix_ms(SystemTime::now());
        let members = lock(&shared.members)
            .iter()
            .map(|m| MemberStatus {
                name: m.name.clone(),
                pid: m.pid,
                version: m.version,
                heartbeat_age: Duration::from_millis(now.saturating_sub(m.heartbeat_ms)),
                uptime: Duration::from_millis(now.saturating_sub(m.started_ms)),
            })
            .collect();
        let h = lock(&shared.health);
        StoreStatus {
            endpoints: shared.cfg.etcd.clone(),
            prefix: shared.cfg.prefix.clone(),
            member: shared.cfg.member.clone(),
            leader: lock(&shared.leader).clone(),
            is_leader: shared.is_leader.load(Ordering::Acquire),
            outage: h
                .down_since
                .map(|(wall, at)| (wall, at.elapsed(), h.error.clone())),
            members,
            refused: shared.refused.load(Ordering::Relaxed),
            outages: shared.outages.load(Ordering::Relaxed),
            cache: shared.cfg.cache.clone(),
        }
    }

    fn scope(&self) -> String {
        let n = lock(&self.shared.members).len();
        format!(
            "stored in fleet {} for its {n} member(s)",
            self.shared.cfg.prefix
        )
    }
}

impl Steering for Fleet {
    fn leads(&self) -> bool {
        self.shared.is_leader.load(Ordering::Acquire) && self.shared.up.load(Ordering::Acquire)
    }

    fn figures(&self, route: &str) -> Figures {
        lock(&self.shared.ledger).figures(route)
    }

    fn mark(&self, route: &str) -> serde_json::Value {
        lock(&self.shared.ledger).mark(route)
    }

    fn at_mark(&self, _route: &str, mark: &serde_json::Value) -> Figures {
        lock(&self.shared.ledger).at_mark(mark)
    }

    fn coverage(&self, mark: &serde_json::Value) -> (String, serde_json::Value) {
        let members: Vec<String> = lock(&self.shared.members)
            .iter()
            .map(|m| m.name.clone())
            .collect();
        // Figures older than two leases are missing: the member stopped publishing.
        let fresh = self.shared.cfg.lease * 2;
        lock(&self.shared.ledger).coverage(mark, &members, unix_ms(SystemTime::now()), fresh)
    }

    fn stored(&self) -> Vec<Stored> {
        lock(&self.shared.stored).clone()
    }

    fn store(&self, route: &str, value: &serde_json::Value, base: u64) -> Result<u64, String> {
        let shared = &self.shared;
        if !shared.up.load(Ordering::Acquire) {
            return Err(shared.refusal());
        }
        let key = format!("{}{route}", etcd::rollouts_key(&shared.cfg.prefix));
        let (reply, answer) = std::sync::mpsc::channel();
        self.jobs
            .send(Job::Put {
                key: key.clone(),
                value: value.to_string(),
                base,
                reply,
            })
            .map_err(|_| "fleet: the etcd thread is gone".to_owned())?;
        match answer.recv_timeout(COMMIT_WAIT) {
            Ok(Ok(Some(revision))) => {
                let mut stored = lock(&shared.stored);
                stored.retain(|s| s.route != route);
                stored.push(Stored {
                    route: route.to_owned(),
                    value: value.clone(),
                    revision,
                });
                Ok(revision)
            }
            Ok(Ok(None)) => Err(format!(
                "fleet: the rollout at {key} changed on another member first"
            )),
            Ok(Err(e)) => {
                shared.fail(&e);
                Err(shared.refusal())
            }
            Err(_) => {
                shared.fail("no answer in time");
                Err(shared.refusal())
            }
        }
    }
}
