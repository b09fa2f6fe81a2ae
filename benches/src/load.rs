//! `cg-load`, the load generator: HTTP/1.1 keep-alive requests over N connections spread
//! over T threads, each thread a monoio runtime of its own (the same thread-per-core model
//! as the gateway). Closed loop or open loop with coordinated-omission correction
//! ([`pacing`]), bounded by a duration and/or a request count.
//!
//! Flow of [`run`]: every thread connects its share of the connections, all threads meet
//! at a barrier so the clock starts with every connection open, then each connection
//! runs [`conn::drive`] until its budget or the deadline; the main thread prints a
//! progress line each second, then merges the per-thread [`tally::Tally`] into a
//! [`report::Report`].
//!
//! [`idle`] is the scale mode: many idle keep-alive connections, held and checked.

pub mod conn;
pub mod idle;
pub mod pacing;
pub mod report;
pub mod response;
pub mod tally;

use std::io::{self, Write as _};
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use monoio::time::TimeDriver;
use monoio::{FusionDriver, FusionRuntime, IoUringDriver, LegacyDriver, RuntimeBuilder};
use thiserror::Error;

use conn::{Conn, Shared};
use pacing::Pacing;
use report::{Report, RunInfo};
use tally::{Counters, Tally};

/// io_uring submission queue entries per thread.
const RING_ENTRIES: u32 = 4096;

/// Why a run could not start.
#[derive(Debug, Error)]
pub enum LoadError {
    /// The URL is not `http://host[:port][/path]`.
    #[error("invalid URL {url:?}: {reason}")]
    Url {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The host did not resolve.
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        /// `host:port`.
        host: String,
        /// Resolver error.
        source: io::Error,
    },
    /// A flag combination that cannot run.
    #[error("{0}")]
    Invalid(&'static str),
    /// A thread or its runtime could not start.
    #[error("cannot start load thread: {0}")]
    Thread(io::Error),
    /// A load thread panicked.
    #[error("a load thread panicked")]
    Panicked,
    /// The file-descriptor limit could not be raised.
    #[error("cannot raise RLIMIT_NOFILE to {want}: {reason}")]
    Rlimit {
        /// Descriptors needed.
        want: u64,
        /// Why not.
        reason: String,
    },
}

/// Where requests go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The URL as given.
    pub url: String,
    /// Resolved address (the first one).
    pub addr: SocketAddr,
    /// `host[:port]` for the Host header.
    pub authority: String,
    /// Path and query.
    pub path: String,
}

impl Target {
    /// Parses `http://host[:port][/path]` and resolves the host.
    pub fn parse(url: &str) -> Result<Target, LoadError> {
        let bad = |reason| LoadError::Url {
            url: url.to_owned(),
            reason,
        };
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| bad("only http:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            return Err(bad("no host"));
        }
        let with_port = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|source| LoadError::Resolve {
                host: with_port.clone(),
                source,
            })?
            .next()
            .ok_or_else(|| bad("host has no address"))?;
        Ok(Target {
            url: url.to_owned(),
            addr,
            authority: authority.to_owned(),
            path: path.to_owned(),
        })
    }

    /// The request every connection sends: `GET path`, Host, then `headers`.
    pub fn request(&self, headers: &[String]) -> Vec<u8> {
        let mut r = format!("GET {} HTTP/1.1\r\nHost: {}\r\n", self.path, self.authority);
        for h in headers {
            r.push_str(h.trim());
            r.push_str("\r\n");
        }
        r.push_str("\r\n");
        r.into_bytes()
    }
}

/// A load run.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// Where to send.
    pub target: Target,
    /// Keep-alive connections, spread evenly over the threads.
    pub connections: usize,
    /// Threads, each with its own monoio runtime.
    pub threads: usize,
    /// Stop sending after this long (from when every connection is open).
    pub duration: Option<Duration>,
    /// Stop after this many requests in total.
    pub requests: Option<u64>,
    /// Open loop at this many requests per second in total; closed loop when `None`.
    pub rate: Option<f64>,
    /// Time a request may take, connect included, before it counts as a timeout.
    pub timeout: Duration,
    /// Extra request headers, `Name: value`.
    pub headers: Vec<String>,
    /// Response header naming the variant.
    pub variant_header: Option<String>,
    /// Share of canary responses expected, percent.
    pub expect_canary_percent: Option<f64>,
    /// Print a progress line on stderr every second.
    pub progress: bool,
}

impl LoadConfig {
    fn check(&self) -> Result<(), LoadError> {
        if self.connections == 0 || self.threads == 0 {
            return Err(LoadError::Invalid(
                "--connections and --threads must be at least 1",
            ));
        }
        if self.duration.is_none() && self.requests.is_none() {
            return Err(LoadError::Invalid(
                "give --duration, --requests or both: the run must be bounded",
            ));
        }
        if self.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
            return Err(LoadError::Invalid("--rate must be a positive number"));
        }
        if self
            .expect_canary_percent
            .is_some_and(|p| !(0.0..=100.0).contains(&p))
        {
            return Err(LoadError::Invalid(
                "--expect-canary-percent must be within 0..=100",
            ));
        }
        Ok(())
    }

    fn info(&self) -> RunInfo {
        RunInfo {
            url: self.target.url.clone(),
            rate: self.rate,
            connections: self.connections,
            threads: self.threads,
            variant_header: self.variant_header.clone(),
            expect_canary_percent: self.expect_canary_percent,
        }
    }
}

/// The runtime each load thread runs: io_uring when the kernel allows it, else epoll.
pub(crate) type Runtime = FusionRuntime<TimeDriver<IoUringDriver>, TimeDriver<LegacyDriver>>;

/// Builds one load thread's runtime.
pub(crate) fn runtime() -> io::Result<Runtime> {
    RuntimeBuilder::<FusionDriver>::new()
        .enable_timer()
        .with_entries(RING_ENTRIES)
        .build()
}

/// `n` items split over `parts` as evenly as possible: the size of part `i`.
pub(crate) fn share(n: u64, parts: u64, i: u64) -> u64 {
    n / parts + u64::from(i < n % parts)
}

/// Runs the load and returns the merged report.
pub fn run(cfg: &LoadConfig) -> Result<Report, LoadError> {
    cfg.check()?;
    let threads = cfg.threads.min(cfg.connections);
    let request = cfg.target.request(&cfg.headers);
    let barrier = Arc::new(Barrier::new(threads + 1));
    let counters: Vec<Arc<Counters>> = (0..threads).map(|_| Arc::default()).collect();
    let setup_error = Arc::new(Mutex::new(None::<io::Error>));
    let mut handles = Vec::with_capacity(threads);
    let mut first_conn = 0;
    for (t, counters) in counters.iter().enumerate() {
        let n = share(cfg.connections as u64, threads as u64, t as u64) as usize;
        let conns = first_conn..first_conn + n;
        first_conn += n;
        let (cfg, request, barrier, counters, setup_error) = (
            cfg.clone(),
            request.clone(),
            Arc::clone(&barrier),
            Arc::clone(counters),
            Arc::clone(&setup_error),
        );
        let handle = std::thread::Builder::new()
            .name(format!("cg-load-{t}"))
            .spawn(move || {
                let mut rt = match runtime() {
                    Ok(rt) => rt,
                    Err(e) => {
                        *setup_error
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e);
                        barrier.wait();
                        return Tally::default();
                    }
                };
                rt.block_on(thread_main(cfg, request, conns, counters, barrier))
            })
            .map_err(LoadError::Thread)?;
        handles.push(handle);
    }
    barrier.wait();
    let started = Instant::now();
    if let Some(e) = setup_error
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()
    {
        // Threads that did start still run their (bounded) load; wait for them.
        for h in handles {
            let _ = h.join();
        }
        return Err(LoadError::Thread(e));
    }
    let mut last = (started, 0u64);
    let mut next_print = started + Duration::from_secs(1);
    while !handles.iter().all(std::thread::JoinHandle::is_finished) {
        std::thread::sleep(Duration::from_millis(20));
        let now = Instant::now();
        if cfg.progress && now >= next_print {
            let (responses, errors) = counters
                .iter()
                .map(|c| c.read())
                .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
            let rate = (responses - last.1) as f64 / (now - last.0).as_secs_f64();
            let mut err = io::stderr().lock();
            let _ = writeln!(
                err,
                "cg-load: [{:>5.1}s] {responses} responses, {rate:.0} req/s, {errors} errors",
                (now - started).as_secs_f64()
            );
            last = (now, responses);
            next_print += Duration::from_secs(1);
        }
    }
    let elapsed = started.elapsed();
    let mut total = Tally::default();
    for h in handles {
        total.merge(&h.join().map_err(|_| LoadError::Panicked)?);
    }
    Ok(Report::new(&cfg.info(), &total, elapsed))
}

/// One load thread: connect its connections, meet the others, drive them, return the
/// tally.
async fn thread_main(
    cfg: LoadConfig,
    request: Vec<u8>,
    conns: std::ops::Range<usize>,
    counters: Arc<Counters>,
    barrier: Arc<Barrier>,
) -> Tally {
    let shared = Rc::new(Shared {
        addr: cfg.target.addr,
        request,
        timeout: cfg.timeout,
        variant_header: cfg.variant_header.clone(),
        tally: std::cell::RefCell::new(Tally::default()),
        counters,
    });
    let mut connecting = Vec::with_capacity(conns.len());
    for _ in conns.clone() {
        let s = Rc::clone(&shared);
        connecting.push(monoio::spawn(async move {
            Conn::connect(s.addr, &s.request, s.timeout).await
        }));
    }
    let mut opened = Vec::with_capacity(conns.len());
    for c in connecting {
        opened.push(c.await.ok());
    }
    // Every thread waits here until all connections of all threads are open (or failed),
    // so the clock starts with the full load ready; nothing else runs on this thread yet.
    barrier.wait();
    let start = Instant::now();
    let deadline = cfg.duration.map(|d| start + d);
    let mut tasks = Vec::with_capacity(conns.len());
    for (i, conn) in conns.zip(opened) {
        if conn.is_none() {
            // Counted once here; `drive` reconnects and counts its own failures.
            shared.tally.borrow_mut().errors.connect += 1;
            shared.counters.error();
        }
        let pacing = match cfg.rate {
            Some(rate) => Pacing::open(start, rate, cfg.connections, i),
            None => Pacing::Closed,
        };
        let budget = cfg
            .requests
            .map(|n| share(n, cfg.connections as u64, i as u64));
        tasks.push(monoio::spawn(conn::drive(
            Rc::clone(&shared),
            conn,
            pacing,
            budget,
            deadline,
        )));
    }
    for t in tasks {
        t.await;
    }
    shared.tally.borrow().clone()
}

/// Raises this process's soft RLIMIT_NOFILE to at least `want` (and the hard limit too
/// when allowed, as root may).
pub fn raise_nofile(want: u64) -> Result<(), LoadError> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let fail = |reason: String| LoadError::Rlimit { want, reason };
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| fail(e.to_string()))?;
    if soft >= want {
        return Ok(());
    }
    let new_hard = hard.max(want);
    setrlimit(Resource::RLIMIT_NOFILE, want, new_hard)
        .or_else(|_| {
            if hard >= want {
                setrlimit(Resource::RLIMIT_NOFILE, want, hard)
            } else {
                Err(nix::errno::Errno::EPERM)
            }
        })
        .map_err(|e| {
            fail(format!(
                "{e} (hard limit {hard}); run as root or raise it with `ulimit -n`"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_parsing() {
        let t = Target::parse("http://127.0.0.1:8080/a?b=1").expect("valid");
        assert_eq!(t.addr, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(
            (t.authority.as_str(), t.path.as_str()),
            ("127.0.0.1:8080", "/a?b=1")
        );
        let t = Target::parse("http://127.0.0.1").expect("valid");
        assert_eq!((t.addr.port(), t.path.as_str()), (80, "/"));
        assert!(Target::parse("https://127.0.0.1/").is_err());
        assert!(Target::parse("http:///x").is_err());
        assert_eq!(
            t.request(&["X-A: 1".into()]),
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: 1\r\n\r\n"
        );
    }

    #[test]
    fn shares_add_up() {
        let parts: Vec<u64> = (0..3).map(|i| share(10, 3, i)).collect();
        assert_eq!(parts, [4, 3, 3]);
        assert_eq!((0..7).map(|i| share(5, 7, i)).sum::<u64>(), 5);
    }
}
