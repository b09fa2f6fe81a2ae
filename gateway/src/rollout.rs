//! Progressive delivery: a route's canary walks through the steps of a rollout plan
//! (e.g. 5, 25, 50, 100 %), each step judged by [`crate::judge`] on that step's window,
//! with automatic promotion after the last step, rollback at the first failed step, and a
//! kill switch in the data plane that does not wait for the judge.
//!
//! Where it sits: plans come from the configuration file or the admin socket
//! ([`plan`], [`command`]); the state machine ([`machine`]) is pure; the control plane
//! keeps one [`Rollout`] per route next to the routing state and applies its actions
//! (`crate::control`); the [`controller`] task ticks it on the control-plane runtime;
//! [`show`] renders it. The [`killswitch`] is the only part on the data path: every
//! worker records its canary outcomes and drops the share to 0 by itself.

pub(crate) mod command;
pub(crate) mod controller;
pub(crate) mod killswitch;
pub(crate) mod machine;
pub(crate) mod plan;
pub(crate) mod show;

pub(crate) use crate::config::killswitch::KillSwitchConfig;
pub(crate) use crate::dataplane::route::killswitch::KillSwitch;
pub(crate) use command::RolloutCommand;
pub(crate) use machine::{Action, Phase, Rollout};
pub(crate) use plan::Plan;
