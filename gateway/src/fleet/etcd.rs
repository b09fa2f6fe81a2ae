//! The etcd operations fleet mode makes, each one request (or one transaction) with the
//! client's timeout: read the configuration, store it compare-and-set on its revision,
//! seed it, and the keys under the prefix. Also used by `canarygate fleet import/export`.

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
};

/// Timeout of one etcd request: a change an operator makes while etcd is slow is refused
/// after this rather than held.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// The configuration's key under a prefix.
pub(crate) fn config_key(prefix: &str) -> String {
    format!("{prefix}/config")
}

/// Prefix of the members' heartbeats.
pub(crate) fn members_key(prefix: &str) -> String {
    format!("{prefix}/members/")
}

/// A connected client (connecting does not talk to etcd yet: the first request does).
pub(crate) async fn connect(urls: &[String]) -> Result<Client, String> {
    let options = ConnectOptions::new()
        .with_connect_timeout(REQUEST_TIMEOUT)
        .with_timeout(REQUEST_TIMEOUT)
        .with_keep_alive(Duration::from_secs(2), REQUEST_TIMEOUT);
    Client::connect(urls, Some(options))
        .await
        .map_err(|e| format!("etcd {}: {e}", urls.join(",")))
}

/// The stored configuration text and its revision (the key's `mod_revision`), if any.
pub(crate) async fn get_config(
    client: &mut Client,
    prefix: &str,
) -> Result<Option<(String, u64)>, String> {
    let r = client
        .get(config_key(prefix), None)
        .await
        .map_err(|e| e.to_string())?;
    Ok(r.kvs().first().map(|kv| {
        (
            String::from_utf8_lossy(kv.value()).into_owned(),
            kv.mod_revision().unsigned_abs(),
        )
    }))
}

/// What a compare-and-set found.
pub(crate) enum Cas {
    /// Stored; the new revision.
    Stored(u64),
    /// The key was at another revision: its text and revision (`None`: no key).
    Moved(Option<(String, u64)>),
}

/// Stores `text` as the configuration if its revision is still `base` (0: if there is no
/// configuration yet).
pub(crate) async fn put_config(
    client: &mut Client,
    prefix: &str,
    base: u64,
    text: &str,
) -> Result<Cas, String> {
    let key = config_key(prefix);
    let compare = if base == 0 {
        Compare::create_revision(key.clone(), CompareOp::Equal, 0)
    } else {
        Compare::mod_revision(key.clone(), CompareOp::Equal, base.cast_signed())
    };
    let txn = Txn::new()
        .when([compare])
        .and_then([TxnOp::put(key.clone(), text, None)])
        .or_else([TxnOp::get(key, None)]);
    let r = client.txn(txn).await.map_err(|e| e.to_string())?;
    if r.succeeded() {
        let rev = r.header().map_or(0, etcd_client::ResponseHeader::revision);
        return Ok(Cas::Stored(rev.unsigned_abs()));
    }
    let current = r.op_responses().into_iter().find_map(|op| match op {
        TxnOpResponse::Get(g) => g.kvs().first().map(|kv| {
            (
                String::from_utf8_lossy(kv.value()).into_owned(),
                kv.mod_revision().unsigned_abs(),
            )
        }),
        _ => None,
    });
    Ok(Cas::Moved(current))
}

/// Puts `value` at `key` under `lease`.
pub(crate) async fn put_leased(
    client: &mut Client,
    key: &str,
    value: &str,
    lease: i64,
) -> Result<(), String> {
    client
        .put(key, value, Some(PutOptions::new().with_lease(lease)))
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Every key and value under `prefix`.
pub(crate) async fn list(
    client: &mut Client,
    prefix: &str,
) -> Result<Vec<(String, String)>, String> {
    let r = client
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await
        .map_err(|e| e.to_string())?;
    Ok(r.kvs()
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(kv.key()).into_owned(),
                String::from_utf8_lossy(kv.value()).into_owned(),
            )
        })
        .collect())
}

/// Prefix of the members' figures.
pub(crate) fn stats_key(prefix: &str) -> String {
    format!("{prefix}/stats/")
}

/// Prefix of the rollouts.
pub(crate) fn rollouts_key(prefix: &str) -> String {
    format!("{prefix}/rollouts/")
}

/// The leader's key.
pub(crate) fn leader_key(prefix: &str) -> String {
    format!("{prefix}/leader")
}

/// Every key, value and `mod_revision` under `prefix`.
pub(crate) async fn list_revisions(
    client: &mut Client,
    prefix: &str,
) -> Result<Vec<(String, String, u64)>, String> {
    let r = client
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await
        .map_err(|e| e.to_string())?;
    Ok(r.kvs()
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(kv.key()).into_owned(),
                String::from_utf8_lossy(kv.value()).into_owned(),
                kv.mod_revision().unsigned_abs(),
            )
        })
        .collect())
}

/// Stores `value` at `key` if the key is still at revision `base` (0: absent). Returns
/// the new revision, or `None` when the key had moved.
pub(crate) async fn put_if(
    client: &mut Client,
    key: &str,
    value: &str,
    base: u64,
) -> Result<Option<u64>, String> {
    let compare = if base == 0 {
        Compare::create_revision(key, CompareOp::Equal, 0)
    } else {
        Compare::mod_revision(key, CompareOp::Equal, base.cast_signed())
    };
    let txn = Txn::new()
        .when([compare])
        .and_then([TxnOp::put(key, value, None)]);
    let r = client.txn(txn).await.map_err(|e| e.to_string())?;
    Ok(r.succeeded()
        .then(|| r.header().map_or(0, |h| h.revision().unsigned_abs())))
}

/// Takes the leader's key for `member` under `lease` unless someone holds it; returns
/// who holds it now.
pub(crate) async fn campaign(
    client: &mut Client,
    prefix: &str,
    member: &str,
    lease: i64,
) -> Result<String, String> {
    let key = leader_key(prefix);
    let txn = Txn::new()
        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(
            key.clone(),
            member,
            Some(PutOptions::new().with_lease(lease)),
        )])
        .or_else([TxnOp::get(key, None)]);
    let r = client.txn(txn).await.map_err(|e| e.to_string())?;
    if r.succeeded() {
        log::info!(target: "canarygate::audit", "fleet: {member} is the leader now (it runs the fleet's rollouts)");
        return Ok(member.to_owned());
    }
    Ok(r.op_responses()
        .into_iter()
        .find_map(|op| match op {
            TxnOpResponse::Get(g) => g
                .kvs()
                .first()
                .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
            _ => None,
        })
        .unwrap_or_default())
}
