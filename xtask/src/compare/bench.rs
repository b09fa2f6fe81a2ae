//! One measured run: wait for a quiet machine, snapshot CPU counters, drive the load,
//! snapshot again. The proxy's CPU per request comes from /proc/PID/stat (all its
//! processes); the load generator's from this process's reaped-children times; whatever
//! else the machine did meanwhile is reported as `other_cpu_pct`, and a run disturbed by
//! more than [`NOISE_PCT`] is redone (up to `--retries` times). In the mixed shape the
//! proxy's CPU per request is over the fast and the slow clients' requests together.

use std::time::{Duration, Instant};

use anyhow::Result;
use serde::Serialize;

use super::loadgen::Load;
use super::procs::{Proc, machine_ticks, waited_children_ticks};
use super::shape::Shape;

/// Share of the machine (percent of all CPUs) other processes may use during a run.
pub(crate) const NOISE_PCT: f64 = 5.0;
/// Window over which the machine is checked for quiet before a run.
const IDLE_WINDOW: Duration = Duration::from_millis(300);

/// What is measured: a proxy, or the upstream directly.
pub(crate) struct Target<'a> {
    /// `canarygate`, `nginx`, `haproxy` or `direct`.
    pub(crate) proxy: &'static str,
    /// Worker processes/threads; 0 for `direct`.
    pub(crate) workers: usize,
    /// URL the load goes to.
    pub(crate) url: String,
    /// The proxy process (none for `direct`).
    pub(crate) proc: Option<&'a Proc>,
}

/// One run's figures.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Sample {
    /// The traffic shape measured.
    pub(crate) shape: Shape,
    pub(crate) proxy: &'static str,
    pub(crate) workers: usize,
    pub(crate) connections: usize,
    pub(crate) round: usize,
    pub(crate) requests: u64,
    pub(crate) rps: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) errors: u64,
    /// Proxy CPU (user + system, all its processes) per request, µs.
    pub(crate) proxy_cpu_us_per_req: Option<f64>,
    /// Share of the proxy's CPU spent in user space (the rest is the kernel), percent.
    pub(crate) proxy_user_pct: Option<f64>,
    /// Load generator CPU per request, µs.
    pub(crate) loadgen_cpu_us_per_req: f64,
    /// CPU used by processes this run did not start, percent of the machine.
    pub(crate) other_cpu_pct: f64,
    /// Percent of the machine busy just before the run started.
    pub(crate) busy_before_pct: f64,
    /// Times the run was redone because the machine was not quiet.
    pub(crate) retries: u32,
    /// Handshake runs: share of the completed connections that resumed a session, percent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) resumed_pct: Option<f64>,
    /// Mixed shape: responses the background slow clients got.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) slow_requests: Option<u64>,
    /// Mixed shape: the slow clients' p99 latency, µs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) slow_p99_us: Option<f64>,
    /// Mixed shape: the slow clients' errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) slow_errors: Option<u64>,
}

/// Settings shared by every run.
pub(crate) struct Bench<'a> {
    /// The shape `loadgen` puts on the target (recorded in the samples).
    pub(crate) shape: Shape,
    pub(crate) loadgen: &'a dyn Load,
    pub(crate) duration: Duration,
    /// Every process this comparison started (their CPU is not "other").
    pub(crate) ours: Vec<&'a Proc>,
    /// Longest wait for a quiet machine before each run.
    pub(crate) idle_wait: Duration,
    /// Clock ticks per second (`getconf CLK_TCK`).
    pub(crate) hz: f64,
    /// Redos of a disturbed run.
    pub(crate) retries: u32,
}

impl Bench<'_> {
    /// Measures `target` at `connections`, redoing a disturbed run.
    pub(crate) fn measure(
        &self,
        target: &Target<'_>,
        connections: usize,
        round: usize,
    ) -> Result<Sample> {
        let mut retries = 0;
        loop {
            let busy_before_pct = self.wait_quiet();
            let ours_before: u64 = self.ours.iter().map(|p| p.cpu_ticks()).sum();
            let proxy_before = target.proc.map(Proc::cpu_split);
            let children_before = waited_children_ticks();
            let (busy0, total0) = machine_ticks();
            let r = self.loadgen.run(&target.url, connections, self.duration)?;
            let (busy1, total1) = machine_ticks();
            let loadgen_ticks = waited_children_ticks().saturating_sub(children_before);
            let ours_ticks = self
                .ours
                .iter()
                .map(|p| p.cpu_ticks())
                .sum::<u64>()
                .saturating_sub(ours_before);
            let proxy_split = target.proc.zip(proxy_before).map(|(p, before)| {
                let now = p.cpu_split();
                (
                    now.0.saturating_sub(before.0),
                    now.1.saturating_sub(before.1),
                )
            });
            let proxy_ticks = proxy_split.map(|(user, system)| user + system);
            let total = (total1 - total0).max(1) as f64;
            let other = (busy1 - busy0).saturating_sub(ours_ticks + loadgen_ticks) as f64;
            let other_cpu_pct = other * 100.0 / total;
            let per_req = |ticks: u64| ticks as f64 * 1e6 / self.hz / r.requests.max(1) as f64;
            // The proxy served the slow clients too: its CPU is over all requests.
            let all_requests = r.requests + r.slow.map_or(0, |s| s.requests);
            let proxy_per_req =
                |ticks: u64| ticks as f64 * 1e6 / self.hz / all_requests.max(1) as f64;
            if other_cpu_pct > NOISE_PCT && retries < self.retries {
                retries += 1;
                eprintln!(
                    "xtask:   other processes used {other_cpu_pct:.1}% of the machine during {} c{connections}; redoing the run",
                    target.proxy
                );
                continue;
            }
            return Ok(Sample {
                shape: self.shape,
                proxy: target.proxy,
                workers: target.workers,
                connections,
                round,
                requests: r.requests,
                rps: r.rps,
                p50_us: r.p50_us,
                p99_us: r.p99_us,
                errors: r.errors,
                proxy_cpu_us_per_req: proxy_ticks.map(proxy_per_req),
                proxy_user_pct: proxy_split
                    .filter(|(u, s)| u + s > 0)
                    .map(|(u, s)| u as f64 * 100.0 / (u + s) as f64),
                loadgen_cpu_us_per_req: per_req(loadgen_ticks),
                other_cpu_pct,
                busy_before_pct,
                retries,
                resumed_pct: r
                    .resumed
                    .map(|n| n as f64 * 100.0 / r.requests.max(1) as f64),
                slow_requests: r.slow.map(|s| s.requests),
                slow_p99_us: r.slow.map(|s| s.p99_us),
                slow_errors: r.slow.map(|s| s.errors),
            });
        }
    }

    /// Waits until the machine is quiet (under [`NOISE_PCT`] busy over a short window)
    /// or `idle_wait` has passed; returns the last busy share seen, percent.
    fn wait_quiet(&self) -> f64 {
        let deadline = Instant::now() + self.idle_wait;
        let mut warned = false;
        loop {
            let (b0, t0) = machine_ticks();
            std::thread::sleep(IDLE_WINDOW);
            let (b1, t1) = machine_ticks();
            let pct = (b1 - b0) as f64 * 100.0 / (t1 - t0).max(1) as f64;
            if pct <= NOISE_PCT || Instant::now() > deadline {
                if pct > NOISE_PCT {
                    eprintln!(
                        "xtask:   machine still {pct:.0}% busy after waiting {:?}; measuring anyway",
                        self.idle_wait
                    );
                }
                return pct;
            }
            if !warned {
                eprintln!("xtask:   machine {pct:.0}% busy; waiting for it to settle");
                warned = true;
            }
        }
    }
}
