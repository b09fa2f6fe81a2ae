//! Progressive delivery: a route's canary walks through the steps of a rollout plan
//! (e.g. 5, 25, 50, 100 %), each step judged by [`crate::judge`] on that step's window,
//! with automatic promotion after the last step, rollback at the first failed step, and a
//! kill switch in the data plane that does not wait for the judge.
//!
//! Where it sits: above the routing state ([`crate::control`]) and below the admin
//! server. Plans come from the configuration file or the admin socket ([`plan`],
//! [`command`]); the state machine ([`machine`]) is pure; the [`controller`] owns one
//! [`Rollout`] per route, ticks them on the control-plane runtime and applies their
//! actions through `Control`'s methods; `crate::admin` renders them. The kill switch is
//! the only part on the data path (`crate::dataplane::route::killswitch`): every worker
//! records its canary outcomes and drops the share to 0 by itself; [`killswitch`] holds
//! the default a rollout turns on.

pub(crate) mod command;
pub(crate) mod controller;
pub(crate) mod killswitch;
pub(crate) mod machine;
pub(crate) mod plan;
pub(crate) mod steering;

pub(crate) use command::RolloutCommand;
pub(crate) use machine::{Action, Phase, Rollout};
pub(crate) use plan::Plan;
