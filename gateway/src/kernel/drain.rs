//! The thread that empties the eBPF ring buffers: RTT samples into the per-class HDR
//! histograms, and aya-log records into the gateway's own log.
//!
//! The data plane is monoio (no tokio `AsyncFd`), and the programs write RTT samples
//! with `BPF_RB_NO_WAKEUP` so that no sample costs a wakeup; this plain thread therefore
//! drains on a short timer instead of waiting for readiness. The ring buffer holds far
//! more than one interval's worth of samples at the gateway's peak rate.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use aya_log::EbpfLogger;
use hdrhistogram::Histogram;

/// How often the buffers are drained.
const INTERVAL: Duration = Duration::from_millis(25);

/// How long [`Drain::sync`] waits for a pass before giving up.
const SYNC_WAIT: Duration = Duration::from_millis(200);

/// The running drain thread.
pub(super) struct Drain {
    stop: Arc<AtomicBool>,
    /// Completed passes, so a reader can wait for one that started after its request.
    passes: Arc<(Mutex<u64>, Condvar)>,
    thread: JoinHandle<()>,
}

impl Drain {
    /// Starts draining `samples` into `rtt` (indexed by class) and `logger` into `log`.
    pub(super) fn spawn(
        mut samples: RingBuf<MapData>,
        mut logger: Option<EbpfLogger<&'static dyn log::Log>>,
        rtt: Arc<Mutex<Vec<Histogram<u64>>>>,
    ) -> std::io::Result<Drain> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let passes = Arc::new((Mutex::new(0u64), Condvar::new()));
        let done = Arc::clone(&passes);
        let thread = std::thread::Builder::new()
            .name("canarygate-kernel".into())
            .spawn(move || {
                loop {
                    let last = stopping.load(Ordering::Acquire);
                    drain_samples(&mut samples, &rtt);
                    if let Some(l) = logger.as_mut() {
                        // aya-log panics on a record it cannot decode; losing the eBPF
                        // log must not stop the RTT histograms.
                        let flushed = std::panic::catch_unwind(AssertUnwindSafe(|| l.flush()));
                        if flushed.is_err() {
                            log::warn!(
                                "eBPF log records could not be decoded; no longer forwarding them"
                            );
                            logger = None;
                        }
                    }
                    if let Ok(mut n) = done.0.lock() {
                        *n += 1;
                        done.1.notify_all();
                    }
                    if last {
                        break;
                    }
                    std::thread::park_timeout(INTERVAL);
                }
            })?;
        Ok(Drain {
            stop,
            passes,
            thread,
        })
    }

    /// Makes the thread drain now and waits (briefly) until samples written before this
    /// call are in the histograms.
    pub(super) fn sync(&self) {
        let (count, cv) = &*self.passes;
        let Ok(guard) = count.lock() else { return };
        // A pass that is already running may have missed the newest samples: wait for
        // two more.
        let target = *guard + 2;
        self.thread.thread().unpark();
        let _ = cv.wait_timeout_while(guard, SYNC_WAIT, |n| {
            if *n + 1 == target {
                self.thread.thread().unpark();
            }
            *n < target
        });
    }

    /// Drains once more and ends the thread.
    pub(super) fn stop(self) {
        self.stop.store(true, Ordering::Release);
        self.thread.thread().unpark();
        let _ = self.thread.join();
    }
}

/// Records every pending sample; the histograms are locked once per batch.
fn drain_samples(samples: &mut RingBuf<MapData>, rtt: &Mutex<Vec<Histogram<u64>>>) {
    let Ok(mut histograms) = rtt.lock() else {
        return;
    };
    while let Some(item) = samples.next() {
        let Some((class, rtt_us)) = parse_sample(&item) else {
            continue;
        };
        if let Some(h) = histograms.get_mut(class as usize) {
            h.saturating_record(u64::from(rtt_us.max(1)));
        }
    }
}

/// `(class, rtt_us)` of a `gateway_common::RttSample` record.
fn parse_sample(bytes: &[u8]) -> Option<(u32, u32)> {
    let class = u32::from_ne_bytes(bytes.get(0..4)?.try_into().ok()?);
    let rtt_us = u32::from_ne_bytes(bytes.get(4..8)?.try_into().ok()?);
    Some((class, rtt_us))
}

#[cfg(test)]
mod tests {
    use super::parse_sample;

    #[test]
    fn parses_a_sample_record() {
        let mut bytes = 1u32.to_ne_bytes().to_vec();
        bytes.extend_from_slice(&250u32.to_ne_bytes());
        assert_eq!(parse_sample(&bytes), Some((1, 250)));
        assert_eq!(parse_sample(&bytes[..7]), None);
    }
}
