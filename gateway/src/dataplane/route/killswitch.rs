//! The data-plane kill switch: each worker keeps a sliding window of its last N canary
//! outcomes per route, and when too many of them failed it drops the route's canary share
//! to 0 itself, without waiting for the control plane or the judge.
//!
//! Called from [`crate::dataplane::record`] for every canary request. The window is a ring
//! of bits (1 = failed) with a running count, owned by one worker, so recording is a few
//! relaxed loads and stores: no lock, no read-modify-write, no allocation. The control
//! plane configures the switch and re-arms it (when a share is set again) by bumping an
//! epoch packed with the settings; each worker clears its own window when it sees a new
//! epoch, so every window keeps a single writer.
//!
//! A trip is counted (`trips`), flagged (`tripped`, shown by `show canary` and metrics)
//! and logged by the worker; the control plane then records it (config share 0, audit log,
//! and a failed rollout if one runs).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use super::split::Split;
use crate::config::killswitch::{KillSwitchConfig, MAX_WINDOW};
use crate::dataplane::io::clock::now_us;

const WORDS: usize = MAX_WINDOW as usize / 64;

/// One worker's window. Aligned so two workers never write the same cache line.
#[repr(align(64))]
#[derive(Debug, Default)]
struct Window {
    epoch: AtomicU32,
    pos: AtomicU32,
    failures: AtomicU32,
    bits: [AtomicU64; WORDS],
}

// Settings word: window (16 bits) | threshold (16) | count_5xx (1) | count_connect (1) | epoch (30).
const FLAG_5XX: u64 = 1 << 32;
const FLAG_CONNECT: u64 = 1 << 33;
const EPOCH_SHIFT: u32 = 34;

/// A route's kill switch, shared by the control plane and every worker.
#[derive(Debug)]
pub struct KillSwitch {
    settings: AtomicU64,
    tripped: AtomicBool,
    trips: AtomicU64,
    acknowledged: AtomicU64,
    /// Worker, failures and window of the last trip, and when (ms since the Unix epoch).
    last_trip: [AtomicU64; 3],
    windows: Box<[Window]>,
}

impl KillSwitch {
    /// An unconfigured (off) switch with one window per worker.
    pub fn new(workers: usize) -> KillSwitch {
        KillSwitch {
            settings: AtomicU64::new(0),
            tripped: AtomicBool::new(false),
            trips: AtomicU64::new(0),
            acknowledged: AtomicU64::new(0),
            last_trip: Default::default(),
            windows: (0..workers.max(1)).map(|_| Window::default()).collect(),
        }
    }

    /// Applies `config` (`None`: off). Control plane only. A change of settings clears
    /// every window; the same settings leave them alone.
    pub fn configure(&self, config: Option<&KillSwitchConfig>) {
        let old = self.settings.load(Ordering::Relaxed);
        let word = config.map_or(0, |c| {
            u64::from(c.window)
                | (u64::from(c.threshold()) << 16)
                | if c.count_5xx { FLAG_5XX } else { 0 }
                | if c.count_connect_failures {
                    FLAG_CONNECT
                } else {
                    0
                }
        });
        if word != old & ((1 << EPOCH_SHIFT) - 1) {
            let epoch = (old >> EPOCH_SHIFT).wrapping_add(1) & ((1 << 30) - 1);
            self.settings
                .store(word | (epoch << EPOCH_SHIFT), Ordering::Release);
        }
    }

    /// Re-arms after a trip or a new share: clears the flag and every window. Control
    /// plane only.
    pub fn arm(&self) {
        let old = self.settings.load(Ordering::Relaxed);
        let epoch = (old >> EPOCH_SHIFT).wrapping_add(1) & ((1 << 30) - 1);
        self.settings.store(
            (old & ((1 << EPOCH_SHIFT) - 1)) | (epoch << EPOCH_SHIFT),
            Ordering::Release,
        );
        self.tripped.store(false, Ordering::Release);
    }

    /// Counts one canary outcome of worker `worker` on route `route`; trips the switch
    /// (the share goes to 0 in `split`) when the window holds too many failures. Runs on
    /// the data path for every canary request.
    #[inline]
    pub fn record(&self, worker: usize, route: &str, answer: Answer, split: &Split) {
        let Answer {
            status,
            connect_failed,
            grpc_error,
        } = answer;
        let s = self.settings.load(Ordering::Acquire);
        let window = (s & 0xFFFF) as u32;
        if window == 0 {
            return;
        }
        // `count_5xx` counts server failures, and a gRPC error status is the 5xx of
        // a call that HTTP answered with 200.
        let failed = (s & FLAG_5XX != 0 && (status >= 500 || grpc_error))
            || (s & FLAG_CONNECT != 0 && connect_failed);
        if status == 0 && !failed {
            // Nothing was answered (the client went away): not an outcome.
            return;
        }
        let w = &self.windows[worker % self.windows.len()];
        let epoch = (s >> EPOCH_SHIFT) as u32;
        if w.epoch.load(Ordering::Relaxed) != epoch {
            for b in &w.bits {
                b.store(0, Ordering::Relaxed);
            }
            w.pos.store(0, Ordering::Relaxed);
            w.failures.store(0, Ordering::Relaxed);
            w.epoch.store(epoch, Ordering::Relaxed);
        }
        let pos = w.pos.load(Ordering::Relaxed) % window;
        let (word, bit) = (&w.bits[pos as usize / 64], 1u64 << (pos % 64));
        let bits = word.load(Ordering::Relaxed);
        let was = u32::from(bits & bit != 0);
        word.store(
            if failed { bits | bit } else { bits & !bit },
            Ordering::Relaxed,
        );
        let failures = w.failures.load(Ordering::Relaxed) + u32::from(failed) - was;
        w.failures.store(failures, Ordering::Relaxed);
        w.pos.store((pos + 1) % window, Ordering::Relaxed);
        let threshold = ((s >> 16) & 0xFFFF) as u32;
        if failed && failures >= threshold && !self.tripped.swap(true, Ordering::AcqRel) {
            split.set_ppm(0);
            self.last_trip[0].store(worker as u64, Ordering::Relaxed);
            self.last_trip[1].store(
                u64::from(failures) << 32 | u64::from(window),
                Ordering::Relaxed,
            );
            self.last_trip[2].store(now_us() / 1000, Ordering::Relaxed);
            self.trips.fetch_add(1, Ordering::Release);
            log::warn!(
                target: "canarygate::audit",
                "route {route}: kill switch tripped on worker {worker}: {failures} of the last {window} canary requests failed; canary share set to 0"
            );
        }
    }

    /// True from a trip until the switch is re-armed.
    pub fn is_tripped(&self) -> bool {
        self.tripped.load(Ordering::Acquire)
    }

    /// Trips so far (never reset).
    pub fn trips(&self) -> u64 {
        self.trips.load(Ordering::Acquire)
    }

    /// Marks every trip so far as handled; returns how many were new. Control plane only.
    pub fn acknowledge(&self) -> u64 {
        let trips = self.trips();
        let seen = self.acknowledged.load(Ordering::Acquire);
        if seen == trips {
            return 0;
        }
        self.acknowledged.store(trips, Ordering::Release);
        trips.saturating_sub(seen)
    }

    /// Whether the switch is configured.
    pub fn is_on(&self) -> bool {
        self.settings.load(Ordering::Relaxed) & 0xFFFF != 0
    }

    /// What the last trip saw: "worker W: F of the last N canary requests failed".
    pub fn last_trip(&self) -> Option<String> {
        (self.trips() > 0).then(|| {
            let fw = self.last_trip[1].load(Ordering::Relaxed);
            format!(
                "worker {}: {} of the last {} canary requests failed",
                self.last_trip[0].load(Ordering::Relaxed),
                fw >> 32,
                fw & 0xFFFF_FFFF
            )
        })
    }

    /// Trips the control plane has recorded ([`KillSwitch::acknowledge`]).
    pub(crate) fn recorded_trips(&self) -> u64 {
        self.acknowledged.load(Ordering::Acquire)
    }

    /// When the last trip happened, in ms since the Unix epoch.
    pub(crate) fn last_trip_unix_ms(&self) -> u64 {
        self.last_trip[2].load(Ordering::Relaxed)
    }
}

/// What one canary request came to, as the kill switch judges it.
#[derive(Clone, Copy, Debug)]
pub struct Answer {
    /// The status sent to the client (0: none was).
    pub status: u16,
    /// The last attempt could not connect.
    pub connect_failed: bool,
    /// The upstream answered a `grpc-status` that `grpc_error_codes` counts.
    pub grpc_error: bool,
}

impl Answer {
    /// An HTTP answer with `status`, no gRPC status.
    #[cfg(test)]
    pub(crate) fn http(status: u16, connect_failed: bool) -> Answer {
        Answer {
            status,
            connect_failed,
            grpc_error: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(window: u32, rate: f64) -> KillSwitchConfig {
        KillSwitchConfig {
            window,
            max_error_rate: rate,
            count_5xx: true,
            count_connect_failures: true,
        }
    }

    #[test]
    fn trips_after_threshold_failures_in_one_window() {
        let split = Split::new(500_000);
        let k = KillSwitch::new(2);
        k.configure(Some(&config(20, 0.5)));
        assert_eq!(config(20, 0.5).threshold(), 11);
        for _ in 0..100 {
            k.record(0, "r", Answer::http(200, false), &split);
        }
        for i in 0..10 {
            k.record(0, "r", Answer::http(503, false), &split);
            k.record(1, "r", Answer::http(502, true), &split);
            assert!(
                !k.is_tripped(),
                "tripped after {} failures per worker",
                i + 1
            );
        }
        k.record(1, "r", Answer::http(500, false), &split);
        assert!(k.is_tripped());
        assert_eq!(split.ppm(), 0);
        assert_eq!(k.trips(), 1);
        assert_eq!(
            k.last_trip().unwrap(),
            "worker 1: 11 of the last 20 canary requests failed"
        );
        // Further failures do not count as new trips until re-armed.
        k.record(0, "r", Answer::http(500, false), &split);
        assert_eq!(k.trips(), 1);
        assert_eq!(k.acknowledge(), 1);
        assert_eq!(k.acknowledge(), 0);
    }

    #[test]
    fn old_failures_slide_out_of_the_window() {
        let split = Split::new(500_000);
        let k = KillSwitch::new(1);
        k.configure(Some(&config(10, 0.3)));
        // 3 failures in every 10: never more than 3 in any 10 consecutive outcomes.
        for i in 0..1000 {
            k.record(
                0,
                "r",
                Answer::http(if i % 10 < 3 { 500 } else { 200 }, false),
                &split,
            );
        }
        assert!(!k.is_tripped());
        assert_eq!(split.ppm(), 500_000);
        k.record(0, "r", Answer::http(0, false), &split);
        assert!(!k.is_tripped(), "no answer is not an outcome");
    }

    #[test]
    fn rearming_clears_windows_and_the_flag() {
        let split = Split::new(500_000);
        let k = KillSwitch::new(1);
        k.configure(Some(&config(4, 0.5)));
        for _ in 0..3 {
            k.record(0, "r", Answer::http(500, false), &split);
        }
        assert!(k.is_tripped());
        split.set_ppm(100_000);
        k.arm();
        assert!(!k.is_tripped());
        k.record(0, "r", Answer::http(500, false), &split);
        k.record(0, "r", Answer::http(500, false), &split);
        assert!(!k.is_tripped(), "the window was cleared");
        k.record(0, "r", Answer::http(500, false), &split);
        assert!(k.is_tripped());
        assert_eq!(k.trips(), 2);
    }

    #[test]
    fn counts_only_what_it_is_told_to() {
        let split = Split::new(500_000);
        let k = KillSwitch::new(1);
        k.configure(Some(&KillSwitchConfig {
            count_5xx: false,
            ..config(4, 0.5)
        }));
        for _ in 0..10 {
            k.record(0, "r", Answer::http(503, false), &split);
        }
        assert!(!k.is_tripped());
        for _ in 0..3 {
            k.record(0, "r", Answer::http(502, true), &split);
        }
        assert!(k.is_tripped());
        k.configure(None);
        assert!(!k.is_on());
        assert!(
            config(1, 0.5).check().is_err()
                && config(10, 1.0).check().is_err()
                && config(10, 0.5).check().is_ok()
        );
    }
}
