//! What a request is routed by, as the workers read it: the immutable routing
//! [`snapshot`] (stages, routes, each variant's plan with its stage variables rendered), its publication ([`publish`]), each route's canary share ([`split`]) and
//! kill switch ([`killswitch`]). The control plane builds and publishes these; the data
//! plane only reads them, with atomics and pointer swaps, never a lock.

pub(crate) mod killswitch;
pub(crate) mod publish;
pub(crate) mod snapshot;
pub(crate) mod split;
