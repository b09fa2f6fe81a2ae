//! Scale mode (`cg-load --idle-connections N`): opens N keep-alive connections, sends one
//! request on each so the server has fully set it up, then leaves them all idle for
//! `--hold`, then sends one more request on each to prove it is still open. With
//! `--watch-pid` it reads the server's resident memory before and after opening them, so
//! the cost of an idle connection can be read off directly.
//!
//! Phases are kept in step by the main thread: threads open their share and report in,
//! the main thread measures, waits, measures again, then releases them to probe.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write as _};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::conn::Conn;
use super::{LoadError, Target, raise_nofile, runtime, share};

/// Connections a thread opens (or probes) at the same time.
const BATCH: usize = 64;
/// Descriptors kept free above the connections (stdio, runtime, resolver).
const SPARE_FDS: u64 = 256;
/// Pause between opening the last connection and reading the server's memory, so
/// freed per-request memory is back with the allocator.
const SETTLE: Duration = Duration::from_millis(500);

/// A scale run.
#[derive(Clone, Debug)]
pub struct IdleConfig {
    /// Where to connect.
    pub target: Target,
    /// Connections to open and hold.
    pub connections: usize,
    /// Threads opening them.
    pub threads: usize,
    /// How long to keep them idle before checking them.
    pub hold: Duration,
    /// Time each connect and each request may take.
    pub timeout: Duration,
    /// Extra request headers.
    pub headers: Vec<String>,
    /// The server process whose memory is read from /proc.
    pub watch_pid: Option<u32>,
    /// Progress lines on stderr.
    pub progress: bool,
}

/// What a scale run saw.
#[derive(Clone, Debug, Serialize)]
pub struct IdleReport {
    /// Target URL.
    pub url: String,
    /// Connections asked for.
    pub connections: usize,
    /// Connections that opened and answered their first request.
    pub opened: u64,
    /// Connections that could not be opened or did not answer.
    pub failed: u64,
    /// Seconds taken to open them all.
    pub open_s: f64,
    /// Seconds they were held idle.
    pub hold_s: f64,
    /// Connections that answered again after the hold.
    pub alive_after_hold: u64,
    /// The watched server process.
    pub watch_pid: Option<u32>,
    /// Its VmRSS before opening, KiB.
    pub rss_before_kib: Option<u64>,
    /// Its VmRSS with every connection open, KiB.
    pub rss_open_kib: Option<u64>,
    /// Its VmRSS at the end of the hold, KiB.
    pub rss_held_kib: Option<u64>,
    /// `(rss_open - rss_before) / opened`, bytes.
    pub rss_per_connection_bytes: Option<f64>,
}

impl IdleReport {
    /// Every connection opened and survived the hold.
    pub fn ok(&self) -> bool {
        self.opened == self.connections as u64 && self.alive_after_hold == self.opened
    }

    /// The report as text.
    pub fn human(&self) -> String {
        let mut s = format!(
            "cg-load {} idle: {} of {} connections opened in {:.2} s ({} failed); {} alive after {:.1} s idle\n",
            self.url,
            self.opened,
            self.connections,
            self.open_s,
            self.failed,
            self.alive_after_hold,
            self.hold_s
        );
        if let (Some(pid), Some(before), Some(open)) =
            (self.watch_pid, self.rss_before_kib, self.rss_open_kib)
        {
            let _ = writeln!(
                s,
                "  server pid {pid} VmRSS: {before} KiB before, {open} KiB open, {} KiB after the hold",
                self.rss_held_kib.unwrap_or_default()
            );
            if let Some(per) = self.rss_per_connection_bytes {
                let _ = writeln!(
                    s,
                    "  RSS per idle connection: {per:.0} bytes ({:.2} KiB)",
                    per / 1024.0
                );
            }
        }
        s
    }
}

/// Resident memory of `pid` in KiB, from `/proc/PID/status`.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Runs the scale test.
pub fn run(cfg: &IdleConfig) -> Result<IdleReport, LoadError> {
    if cfg.connections == 0 || cfg.threads == 0 {
        return Err(LoadError::Invalid(
            "--idle-connections and --threads must be at least 1",
        ));
    }
    raise_nofile(cfg.connections as u64 + SPARE_FDS)?;
    let threads = cfg.threads.min(cfg.connections);
    let request = cfg.target.request(&cfg.headers);
    let rss = |pid: Option<u32>| pid.and_then(rss_kib);
    let rss_before = rss(cfg.watch_pid);
    let ready = Arc::new(AtomicUsize::new(0));
    let opened = Arc::new(AtomicU64::new(0));
    let release = Arc::new(Barrier::new(threads + 1));
    let started = Instant::now();
    let mut handles = Vec::with_capacity(threads);
    for t in 0..threads {
        let n = share(cfg.connections as u64, threads as u64, t as u64) as usize;
        let (addr, timeout, request) = (cfg.target.addr, cfg.timeout, request.clone());
        let (ready, opened, release) = (
            Arc::clone(&ready),
            Arc::clone(&opened),
            Arc::clone(&release),
        );
        let handle = std::thread::Builder::new()
            .name(format!("cg-idle-{t}"))
            .spawn(move || -> Result<(u64, u64), io::Error> {
                let rt = runtime();
                let mut rt = match rt {
                    Ok(rt) => rt,
                    Err(e) => {
                        ready.fetch_add(1, Ordering::SeqCst);
                        release.wait();
                        return Err(e);
                    }
                };
                rt.block_on(async move {
                    let request: Rc<[u8]> = request.into();
                    let mut conns = Vec::with_capacity(n);
                    let mut left = n;
                    while left > 0 {
                        let batch = left.min(BATCH);
                        left -= batch;
                        let tasks: Vec<_> = (0..batch)
                            .map(|_| {
                                let request = Rc::clone(&request);
                                monoio::spawn(async move {
                                    let mut c =
                                        Conn::connect(addr, &request, timeout).await.ok()?;
                                    let head = monoio::time::timeout(timeout, c.exchange(None))
                                        .await
                                        .ok()?
                                        .ok()?;
                                    (head.status < 400 && !head.close).then_some(c)
                                })
                            })
                            .collect();
                        for t in tasks {
                            if let Some(c) = t.await {
                                opened.fetch_add(1, Ordering::Relaxed);
                                conns.push(c);
                            }
                        }
                    }
                    let kept = conns.len() as u64;
                    ready.fetch_add(1, Ordering::SeqCst);
                    // Idle until the main thread has measured and held: nothing runs on
                    // this thread meanwhile, which is the point.
                    release.wait();
                    let mut alive = 0;
                    let mut conns = conns.into_iter();
                    loop {
                        let tasks: Vec<_> = conns
                            .by_ref()
                            .take(BATCH)
                            .map(|mut c| {
                                monoio::spawn(async move {
                                    matches!(
                                        monoio::time::timeout(timeout, c.exchange(None)).await,
                                        Ok(Ok(h)) if h.status < 400
                                    )
                                })
                            })
                            .collect();
                        if tasks.is_empty() {
                            break;
                        }
                        for t in tasks {
                            alive += u64::from(t.await);
                        }
                    }
                    Ok((kept, alive))
                })
            })
            .map_err(LoadError::Thread)?;
        handles.push(handle);
    }
    let mut next_print = started + Duration::from_secs(1);
    while ready.load(Ordering::SeqCst) < threads {
        std::thread::sleep(Duration::from_millis(20));
        if cfg.progress && Instant::now() >= next_print {
            let _ = writeln!(
                io::stderr(),
                "cg-load: [{:>5.1}s] {} of {} connections open",
                started.elapsed().as_secs_f64(),
                opened.load(Ordering::Relaxed),
                cfg.connections
            );
            next_print += Duration::from_secs(1);
        }
    }
    let open_s = started.elapsed().as_secs_f64();
    std::thread::sleep(SETTLE);
    let rss_open = rss(cfg.watch_pid);
    if cfg.progress {
        let _ = writeln!(
            io::stderr(),
            "cg-load: {} connections open in {open_s:.2} s; holding them idle for {:.1} s",
            opened.load(Ordering::Relaxed),
            cfg.hold.as_secs_f64()
        );
    }
    let held = Instant::now();
    std::thread::sleep(cfg.hold);
    let rss_held = rss(cfg.watch_pid);
    let hold_s = held.elapsed().as_secs_f64();
    release.wait();
    let (mut kept, mut alive) = (0, 0);
    let mut first_error = None;
    for h in handles {
        match h.join().map_err(|_| LoadError::Panicked)? {
            Ok((k, a)) => {
                kept += k;
                alive += a;
            }
            Err(e) => first_error = first_error.or(Some(e)),
        }
    }
    if let Some(e) = first_error {
        return Err(LoadError::Thread(e));
    }
    let per_conn = match (rss_before, rss_open) {
        (Some(b), Some(o)) if kept > 0 => Some((o as f64 - b as f64) * 1024.0 / kept as f64),
        _ => None,
    };
    Ok(IdleReport {
        url: cfg.target.url.clone(),
        connections: cfg.connections,
        opened: kept,
        failed: cfg.connections as u64 - kept,
        open_s,
        hold_s,
        alive_after_hold: alive,
        watch_pid: cfg.watch_pid,
        rss_before_kib: rss_before,
        rss_open_kib: rss_open,
        rss_held_kib: rss_held,
        rss_per_connection_bytes: per_conn,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_rss() {
        let kib = rss_kib(std::process::id()).expect("own /proc status");
        assert!(kib > 0);
        assert_eq!(rss_kib(u32::MAX), None);
    }
}
