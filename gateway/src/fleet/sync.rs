//! The etcd thread's work: join (read or seed the configuration, or fall back to the
//! local copy), then for as long as the process lives run the commits `Control` hands
//! over, the heartbeat, and the watch that takes on the versions other gateways store.
//! Every loop here survives etcd going away: it marks etcd down, waits, and starts over
//! from a fresh read, so a gateway catches up with whatever happened meanwhile.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use etcd_client::{Client, EventType, WatchOptions};

use super::{Job, Shared, cache, etcd, member};
use crate::control::Control;

/// Pause between two attempts while etcd is unreachable.
pub(super) const RETRY: Duration = Duration::from_millis(500);

/// What joining found: the configuration text, its version, and whether it is the
/// local copy.
pub(super) type First = Result<(String, u64, bool), String>;

/// The etcd thread: joins, reports, then serves until the process ends.
pub(super) async fn main(
    shared: Arc<Shared>,
    seed: Option<String>,
    first: std::sync::mpsc::Sender<First>,
    start: tokio::sync::oneshot::Receiver<Arc<Control>>,
    mut jobs: tokio::sync::mpsc::UnboundedReceiver<Job>,
) {
    let client = match etcd::connect(&shared.cfg.etcd).await {
        Ok(c) => c,
        Err(e) => {
            let _ = first.send(Err(format!("fleet: {e}")));
            return;
        }
    };
    let joined = initial(&shared, client.clone(), seed).await;
    let ok = joined.is_ok();
    let _ = first.send(joined);
    if !ok {
        return;
    }
    let Ok(control) = start.await else {
        return;
    };
    tokio::spawn(member::heartbeat(
        Arc::clone(&shared),
        client.clone(),
        Arc::clone(&control),
    ));
    tokio::spawn(watch(Arc::clone(&shared), client.clone(), control));
    while let Some(job) = jobs.recv().await {
        match job {
            Job::Commit { base, text, reply } => {
                let (mut client, prefix) = (client.clone(), shared.cfg.prefix.clone());
                tokio::spawn(async move {
                    let _ = reply.send(etcd::put_config(&mut client, &prefix, base, &text).await);
                });
            }
            Job::Put {
                key,
                value,
                base,
                reply,
            } => {
                let mut client = client.clone();
                tokio::spawn(async move {
                    let _ = reply.send(etcd::put_if(&mut client, &key, &value, base).await);
                });
            }
        }
    }
}

/// Reads the fleet's configuration, stores `seed` as its first when it has none, or
/// falls back to the local copy when etcd does not answer.
async fn initial(shared: &Shared, mut client: Client, seed: Option<String>) -> First {
    let prefix = &shared.cfg.prefix;
    let found = match etcd::get_config(&mut client, prefix).await {
        Ok(found) => found,
        Err(e) => {
            shared.fail(&e);
            return from_cache(shared, &e);
        }
    };
    member::claim_name(shared, &mut client).await?;
    if let Some((text, version)) = found {
        return Ok((text, version, false));
    }
    let key = etcd::config_key(prefix);
    let Some(text) = seed else {
        return Err(format!(
            "fleet {prefix}: etcd has no configuration at {key} and this gateway was given none; \
             store one with `canarygate fleet import FILE --etcd URL --fleet-prefix {prefix}`"
        ));
    };
    match etcd::put_config(&mut client, prefix, 0, &text).await? {
        etcd::Cas::Stored(version) => {
            log::info!(
                "fleet {prefix}: it had no configuration; this gateway's is its first (version {version})"
            );
            Ok((text, version, false))
        }
        etcd::Cas::Moved(Some((text, version))) => Ok((text, version, false)),
        etcd::Cas::Moved(None) => Err(format!("fleet {prefix}: {key} changed while starting")),
    }
}

fn from_cache(shared: &Shared, error: &str) -> First {
    let (prefix, urls) = (&shared.cfg.prefix, shared.cfg.etcd.join(","));
    let Some(path) = &shared.cfg.cache else {
        return Err(format!(
            "fleet {prefix}: etcd at {urls} is unreachable ({error}) and no local copy is configured (--fleet-cache); not starting"
        ));
    };
    cache::read(path, prefix)
        .map(|(text, version)| (text, version, true))
        .map_err(|e| {
            format!(
                "fleet {prefix}: etcd at {urls} is unreachable ({error}) and there is no usable local copy ({e}); not starting"
            )
        })
}

/// Takes on every version of the configuration other gateways store, for ever.
async fn watch(shared: Arc<Shared>, mut client: Client, control: Arc<Control>) {
    let key = etcd::config_key(&shared.cfg.prefix);
    let mut missing_since: Option<Instant> = None;
    loop {
        match etcd::get_config(&mut client, &shared.cfg.prefix).await {
            Err(e) => shared.fail(&e),
            Ok(None) => {
                shared.ok();
                if missing_since.is_none() {
                    log::error!(
                        "fleet: {key} is gone from etcd; serving version {} until one is imported",
                        shared.version.load(Ordering::Acquire)
                    );
                    missing_since = Some(Instant::now());
                }
            }
            Ok(Some((text, version))) => {
                shared.ok();
                missing_since = None;
                take(&shared, &control, &text, version).await;
                let options = WatchOptions::new().with_start_revision(version.cast_signed() + 1);
                match client.watch(key.clone(), Some(options)).await {
                    Err(e) => shared.fail(&e.to_string()),
                    Ok(mut stream) => loop {
                        match stream.message().await {
                            Ok(Some(resp)) if resp.canceled() => break,
                            Ok(Some(resp)) => {
                                for ev in resp.events() {
                                    let Some(kv) = ev.kv() else { continue };
                                    if ev.event_type() == EventType::Delete {
                                        // The next read says so and keeps looking.
                                        break;
                                    }
                                    let text = String::from_utf8_lossy(kv.value()).into_owned();
                                    take(
                                        &shared,
                                        &control,
                                        &text,
                                        kv.mod_revision().unsigned_abs(),
                                    )
                                    .await;
                                }
                            }
                            Ok(None) => break,
                            Err(e) => {
                                shared.fail(&e.to_string());
                                break;
                            }
                        }
                    },
                }
            }
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Takes on `version` unless this gateway serves it (or a later one) already.
async fn take(shared: &Arc<Shared>, control: &Arc<Control>, text: &str, version: u64) {
    let serving = shared.version.load(Ordering::Acquire);
    if version <= serving {
        return;
    }
    let config = match shared.parse(text) {
        Ok(c) => c,
        Err(e) => {
            log::error!(
                "fleet: version {version} in etcd cannot be used here ({e}); still serving version {serving}"
            );
            return;
        }
    };
    shared.remember_listens(&config);
    let control = Arc::clone(control);
    match tokio::task::spawn_blocking(move || control.adopt(config, version)).await {
        Ok(Ok(changes)) => {
            shared.served(version, text);
            log::info!(
                "fleet: now serving version {version} ({} change(s))",
                changes.len()
            );
        }
        Ok(Err(e)) => log::error!(
            "fleet: version {version} cannot be applied here ({e}); still serving version {serving}"
        ),
        Err(e) => log::error!("fleet: applying version {version} failed: {e}"),
    }
}
