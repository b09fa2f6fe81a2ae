//! What one gateway instance runs: where it listens, the two deployments, the canary share
//! and every timeout and limit. Built by [`crate::cli`] from flags (or by tests directly);
//! immutable once the workers start, except the share, which lives in [`crate::Split`].

use std::net::SocketAddr;
use std::time::Duration;

/// Which I/O driver the workers should use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum DriverChoice {
    /// io_uring when the kernel allows it, else epoll (said at startup).
    #[default]
    Auto,
    /// io_uring or refuse to start.
    IoUring,
    /// epoll, even where io_uring works (e.g. to compare, or under a seccomp filter).
    Epoll,
}

/// Timeouts applied by every worker.
#[derive(Clone, Debug)]
pub struct Timeouts {
    /// Time a client has to send a complete request head once it started one (408 after).
    pub header: Duration,
    /// Time an idle keep-alive client connection is kept open between requests.
    pub keepalive: Duration,
    /// Time allowed for a TCP connect to an upstream endpoint (504 after).
    pub connect: Duration,
    /// Time allowed for the upstream to start answering, and between reads while it answers
    /// or while the client sends a body (504 after).
    pub response: Duration,
    /// Idle upstream connections older than this are closed instead of reused.
    pub pool_idle: Duration,
}

/// Size limits applied by every worker.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest accepted request head (request line plus headers), in bytes (431 above).
    pub max_header_bytes: usize,
    /// Largest accepted request body, in bytes; 0 means unlimited (413 above).
    pub max_body_bytes: u64,
    /// Idle upstream connections kept per endpoint and per worker.
    pub pool_max_idle: usize,
}

/// Everything a gateway instance needs to start.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address every worker listens on (`SO_REUSEPORT`); port 0 picks a free port.
    pub listen: SocketAddr,
    /// Endpoints of the stable deployment (round-robin); never empty.
    pub stable: Vec<SocketAddr>,
    /// Endpoints of the canary deployment (round-robin); may be empty when the share is 0.
    pub canary: Vec<SocketAddr>,
    /// Initial canary share in parts per million.
    pub canary_ppm: u32,
    /// Worker threads, one per core; 0 means one per available core.
    pub workers: usize,
    /// I/O driver.
    pub io_driver: DriverChoice,
    /// Response header naming the variant that served the request; `None` = not sent.
    pub variant_header: Option<String>,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Limits.
    pub limits: Limits,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            header: Duration::from_secs(10),
            keepalive: Duration::from_secs(60),
            connect: Duration::from_secs(3),
            response: Duration::from_secs(30),
            pool_idle: Duration::from_secs(30),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 16 * 1024,
            max_body_bytes: 1 << 30,
            pool_max_idle: 64,
        }
    }
}

impl Config {
    /// A configuration with defaults: no canary, one worker per core.
    pub fn new(listen: SocketAddr, stable: Vec<SocketAddr>) -> Self {
        Config {
            listen,
            stable,
            canary: Vec::new(),
            canary_ppm: 0,
            workers: 0,
            io_driver: DriverChoice::Auto,
            variant_header: None,
            timeouts: Timeouts::default(),
            limits: Limits::default(),
        }
    }

    /// Worker count after resolving 0 to the number of available cores.
    pub fn effective_workers(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        }
    }
}
