//! The rollout controller: a task on the control-plane tokio runtime that ticks every
//! [`TICK`] and lets [`Control::rollout_tick`] judge due steps, apply verdicts and record
//! kill-switch trips. It never touches the data path: it changes shares through the same
//! `Control` methods the admin commands use.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::control::Control;

/// How often the controller looks at rollouts and kill switches.
pub(crate) const TICK: Duration = Duration::from_millis(100);

/// Runs for ever on the control-plane runtime.
pub(crate) async fn run(control: Arc<Control>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        control.rollout_tick(Instant::now());
    }
}
