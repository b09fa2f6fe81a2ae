//! The controller in fleet mode ([`crate::rollout::steering`]): every member mirrors the
//! fleet's rollouts from the store before each tick (a newer revision replaces what it
//! holds, its window rebuilt from the stored start), only the leader judges and steps
//! them, and whichever member changed a rollout (a verdict, a step, an operator's
//! command, a kill-switch trip) stores it back, compare-and-set on the revision it
//! read. When two members change one rollout at once, the second store fails and the
//! next tick takes on the first's; a member that takes over leadership continues from
//! the mirrored state: step, history and window.

use std::collections::HashMap;
use std::time::{Instant, SystemTime};

use serde_json::{Value, json};

use super::{Book, Rollouts};
use crate::rollout::Rollout;
use crate::rollout::machine::record;
use crate::rollout::steering::Steering;

/// What this member knows of the stored rollouts.
#[derive(Debug, Default)]
pub(super) struct Journal {
    /// Per route: the revision last read or written and the fingerprint stored there.
    known: HashMap<String, (u64, String)>,
    /// Per route: where the current window started (every member's figures).
    pub(super) marks: HashMap<String, Value>,
    /// Per route: the fingerprint whose store last failed (to log a failure once).
    failed: HashMap<String, String>,
}

/// What a store is worth writing for: a new step, phase, verdict or origin.
fn fingerprint(r: &Rollout) -> String {
    format!(
        "{}|{}|{}|{}|{}|{:?}|{}|{}",
        r.phase.as_str(),
        r.phase.reason().unwrap_or(""),
        r.step,
        r.history.len(),
        r.inconclusive,
        r.verdicts,
        r.deployment,
        r.origin
    )
}

impl Rollouts {
    /// Takes on every stored rollout newer than what this member holds.
    pub(super) fn mirror(&self, book: &mut Book, steering: &dyn Steering, now: Instant) {
        let wall = SystemTime::now();
        let mut journal = self.journal();
        for stored in steering.stored() {
            if journal
                .known
                .get(&stored.route)
                .is_some_and(|(rev, _)| *rev >= stored.revision)
            {
                continue;
            }
            let window = stored.value["window"].clone();
            let (baseline, kernel) = steering.at_mark(&stored.route, &window);
            match record::from_json(&stored.value["rollout"], now, wall, baseline, kernel) {
                Ok(r) => {
                    journal
                        .known
                        .insert(stored.route.clone(), (stored.revision, fingerprint(&r)));
                    journal.marks.insert(stored.route.clone(), window);
                    book.insert(stored.route, r);
                }
                Err(e) => {
                    log::warn!(
                        "fleet: the stored rollout of route {} (revision {}) cannot be used: {e}",
                        stored.route,
                        stored.revision
                    );
                    journal
                        .known
                        .insert(stored.route, (stored.revision, String::new()));
                }
            }
        }
    }

    /// Stores every rollout this member changed since it last read or wrote it.
    pub(super) fn store_changes(&self, book: &Book, steering: &dyn Steering, now: Instant) {
        let wall = SystemTime::now();
        let mut journal = self.journal();
        for (route, r) in book {
            let print = fingerprint(r);
            let base = match journal.known.get(route) {
                Some((_, p)) if *p == print => continue,
                Some((rev, _)) => *rev,
                None => 0,
            };
            if journal.failed.get(route) == Some(&print) && !steering.leads() {
                continue;
            }
            let window = journal
                .marks
                .entry(route.clone())
                .or_insert_with(|| steering.mark(route))
                .clone();
            let value = json!({ "rollout": record::to_json(r, now, wall), "window": window });
            match steering.store(route, &value, base) {
                Ok(rev) => {
                    journal.known.insert(route.clone(), (rev, print));
                    journal.failed.remove(route);
                }
                Err(e) => {
                    if journal.failed.insert(route.clone(), print.clone()) != Some(print) {
                        log::warn!("route {route}: rollout not stored in the fleet: {e}");
                    }
                }
            }
        }
    }

    /// Records where route `name`'s window starts now, in fleet mode.
    pub(super) fn mark_window(&self, name: &str) {
        if let Some(s) = &self.steering {
            let mark = s.mark(name);
            self.journal().marks.insert(name.to_owned(), mark);
        }
    }

    /// Adds who contributed to the verdict just recorded (fleet mode).
    pub(super) fn note_coverage(&self, r: &mut Rollout, name: &str) -> Option<String> {
        let s = self.steering.as_ref()?;
        let mark = self
            .journal()
            .marks
            .get(name)
            .cloned()
            .unwrap_or(Value::Null);
        let (line, detail) = s.coverage(&mark);
        if let Some(last) = r.history.last_mut() {
            last.summary = format!("{}; {line}", last.summary);
            if let Some(obj) = last.detail.as_object_mut() {
                obj.insert("fleet".into(), detail);
            }
        }
        Some(line)
    }
}
