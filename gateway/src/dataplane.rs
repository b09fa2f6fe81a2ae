//! The data plane: what a worker does with a client connection, in layers that each use
//! only the ones below them. Bottom to top:
//!
//! 1. [`h1`]: HTTP/1.x codecs, pure functions over bytes (heads, chunked framing), with
//!    their own [`h1::ParseError`].
//! 2. [`io`]: the connection's buffers, socket options, body relay and the clock.
//! 3. [`tls`]: client and upstream TLS handshakes (rustls), giving streams like sockets.
//! 4. [`upstream`]: connect, pool, endpoint choice, with its own
//!    [`upstream::ConnectError`].
//! 5. [`error`]: every way a request can fail (the lower layers' errors convert into
//!    it), its side, the status the client gets and the metric it counts in.
//! 6. [`route`]: the published routing snapshot, the canary share, the kill switch.
//! 7. [`assign`]: which variant serves a request (forced, sticky, random).
//! 8. [`accesslog`]: the per-worker queues and the writer thread behind them.
//! 9. [`worker`]: what one worker owns, shared by its connection tasks.
//! 10. [`request`]: one routed request's context and outcome, plain data.
//! 11. [`record`]: the one place an outcome becomes metrics, kill-switch window and
//!     access-log record.
//! 12. [`session`]: one request's phases, ending in one outcome handed to `record`.
//! 13. [`h2`]: an HTTP/2 connection, each stream one request through [`session`].
//! 14. [`conn`]: one connection, request after request (or its streams, by [`h2`]).
//!
//! The rule: a module imports only from itself, from layers earlier in this list, or from the ground floor outside the data plane
//! (`config`, `metrics`, `tls` material, `kernel`'s socket tagging, `gateway_common`); never from the
//! control plane (`control`, `rollout`, `judge`, `admin`) or `runtime`, which start and
//! steer it. The test below reads the sources and fails on an upward import.

pub(crate) mod accesslog;
pub(crate) mod assign;
pub(crate) mod conn;
pub(crate) mod error;
pub mod h1;
pub(crate) mod h2;
pub(crate) mod io;
pub(crate) mod record;
pub(crate) mod request;
pub(crate) mod route;
pub(crate) mod session;
pub(crate) mod tls;
pub(crate) mod upstream;
pub(crate) mod worker;

#[cfg(test)]
mod layers;
