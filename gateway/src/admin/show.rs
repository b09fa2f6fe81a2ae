//! Renderers of `show ...` and of the control-plane series of `/metrics`: they read the
//! routing state ([`crate::control`]) and the rollouts ([`crate::rollout`]) through their
//! accessors and format them; nothing here changes state.
//!
//! - [`canary`]: `show canary [ROUTE] [json]`;
//! - [`stats`]: `show stats [ROUTE] [json]`;
//! - [`endpoints`]: `show endpoints [ROUTE] [json]` and the endpoint series;
//! - [`rollout`]: `show rollout [ROUTE] [json]`;
//! - [`killswitch`]: the kill-switch part of `show canary`;
//! - [`prometheus`]: rollout and kill-switch series.

pub(crate) mod canary;
pub(crate) mod endpoints;
pub(crate) mod fleet;
pub(crate) mod killswitch;
pub(crate) mod prometheus;
pub(crate) mod rollout;
pub(crate) mod stats;
pub(crate) mod tls;
