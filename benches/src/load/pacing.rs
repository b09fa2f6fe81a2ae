//! When a connection sends its next request, and from which instant its latency counts.
//!
//! Closed loop: send as soon as the previous response is in, and measure from the send.
//! Open loop: request `k` of a connection is *intended* at `start + offset + k * interval`
//! whatever happened before. When the server stalls, the requests that should have gone
//! out during the stall are sent late, back to back, and each one's latency is measured
//! from its intended time, not from when it was finally sent. That is wrk2's correction
//! for coordinated omission: a closed-loop client politely stops asking while the server
//! is stuck, so the stall shows up as one slow sample instead of the many a real user
//! population would have seen.
//!
//! The runtime's timer ticks in milliseconds and rounds deadlines up, so a connection
//! asks to wake [`TIMER_SLACK`] before the intended time and sends at once. A request
//! that goes out early is measured from when it was actually sent; one that goes out late
//! (the connection was still busy) from when it was intended. Either way the client's own
//! timer granularity is not charged to the server, and the rate holds on average because
//! intended times are absolute.

use std::time::{Duration, Instant};

/// Resolution of monoio's timer wheel.
pub const TIMER_SLACK: Duration = Duration::from_millis(1);

/// How a connection paces its requests.
#[derive(Clone, Debug)]
pub enum Pacing {
    /// As fast as responses come back.
    Closed,
    /// At a fixed rate, with latency measured from the intended send time.
    Open(Schedule),
}

/// A fixed-rate schedule of intended send times for one connection.
#[derive(Clone, Debug)]
pub struct Schedule {
    first: Instant,
    interval: Duration,
    sent: u32,
}

/// What [`Pacing::plan`] decided for the next request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Planned {
    /// Do not send before this instant.
    pub send_at: Instant,
    /// When the request should go out: the schedule's time in open loop, the planning
    /// instant in closed loop.
    pub intended: Instant,
}

impl Planned {
    /// The instant latency is measured from, for a request actually sent at `sent`: the
    /// intended time when sent late, the send itself when sent early.
    pub fn measure_from(&self, sent: Instant) -> Instant {
        self.intended.min(sent)
    }
}

impl Schedule {
    /// Request `k` is intended at `start + offset + k * interval`; `offset` staggers the
    /// connections so they do not all fire in the same instant.
    pub fn new(start: Instant, offset: Duration, interval: Duration) -> Self {
        Schedule {
            first: start + offset,
            interval,
            sent: 0,
        }
    }

    /// The intended time of the next request; advances the schedule.
    pub fn next_intended(&mut self) -> Instant {
        let at = self.first + self.interval * self.sent;
        self.sent = self.sent.saturating_add(1);
        at
    }
}

impl Pacing {
    /// An open-loop pacing for connection `index` of `connections` sharing `rate`
    /// requests per second (`rate > 0`), all starting at `start`.
    pub fn open(start: Instant, rate: f64, connections: usize, index: usize) -> Self {
        let per_conn = rate / connections as f64;
        let interval = Duration::from_secs_f64(1.0 / per_conn);
        let offset = interval.mul_f64(index as f64 / connections as f64);
        Pacing::Open(Schedule::new(start, offset, interval))
    }

    /// Plans the next request once the connection is free at `now`.
    pub fn plan(&mut self, now: Instant) -> Planned {
        match self {
            Pacing::Closed => Planned {
                send_at: now,
                intended: now,
            },
            Pacing::Open(schedule) => {
                let intended = schedule.next_intended();
                let wake = intended.checked_sub(TIMER_SLACK).unwrap_or(intended);
                Planned {
                    send_at: wake.max(now),
                    intended,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives `pacing` against a simulated server on one connection, exactly as the
    /// connection loop does (plan, wait until `send_at`, send, wait for the response,
    /// record `done - measure_from(sent)`), with `service(k)` the server time of request
    /// `k`. The simulated timer is exact, so early wake-ups are the full slack.
    /// Returns the recorded latencies in order.
    fn simulate(
        mut pacing: Pacing,
        start: Instant,
        requests: u32,
        service: impl Fn(u32) -> Duration,
    ) -> Vec<Duration> {
        let mut now = start;
        (0..requests)
            .map(|k| {
                let plan = pacing.plan(now);
                now = now.max(plan.send_at);
                let sent = now;
                now += service(k);
                now - plan.measure_from(sent)
            })
            .collect()
    }

    const MS: Duration = Duration::from_millis(1);

    /// 1,000 requests at 1 ms intervals; the server answers in 100 µs except request 100,
    /// which it holds for 200 ms.
    fn stall(k: u32) -> Duration {
        if k == 100 { 200 * MS } else { MS / 10 }
    }

    #[test]
    fn open_loop_charges_the_stall_to_every_request_it_delayed() {
        let start = Instant::now();
        let lat = simulate(Pacing::open(start, 1_000.0, 1, 0), start, 1_000, stall);
        // Request 100 itself took 200 ms (sent at 99 ms, one slack early).
        assert_eq!(lat[100], 200 * MS);
        // Request 101 was intended at 101 ms and went out when 100 finished, at 299 ms:
        // it waited 198 ms, plus its own 0.1 ms.
        assert_eq!(lat[101], 198 * MS + MS / 10);
        // The backlog drains at 0.9 ms per request (1 ms schedule, 0.1 ms service):
        // requests 100..=318 carry part of the stall.
        let slow = lat.iter().filter(|l| **l > 2 * MS).count();
        assert!((200..=230).contains(&slow), "{slow} slow requests");
        // Once drained, latency is the service time again.
        assert_eq!(lat[999], MS / 10);
    }

    #[test]
    fn closed_loop_sees_the_stall_once() {
        let start = Instant::now();
        let lat = simulate(Pacing::Closed, start, 1_000, stall);
        assert_eq!(lat[100], 200 * MS);
        assert_eq!(lat.iter().filter(|l| **l > 2 * MS).count(), 1);
    }

    #[test]
    fn open_loop_waits_for_the_intended_time_when_early() {
        let start = Instant::now();
        let mut p = Pacing::open(start, 100.0, 1, 0);
        let first = p.plan(start);
        assert_eq!((first.send_at, first.intended), (start, start));
        // Response arrived after 1 ms: the next request, intended at 10 ms, waits until
        // one timer slack before it.
        let second = p.plan(start + MS);
        assert_eq!(second.intended, start + 10 * MS);
        assert_eq!(
            Some(second.send_at),
            (start + 10 * MS).checked_sub(TIMER_SLACK)
        );
        // Sent early: measured from the send. Sent late: from the intended time.
        assert_eq!(second.measure_from(start + 9 * MS), start + 9 * MS);
        assert_eq!(second.measure_from(start + 12 * MS), start + 10 * MS);
    }

    #[test]
    fn connections_share_the_rate_and_are_staggered() {
        let start = Instant::now();
        // 1,000 req/s over 4 connections: each sends every 4 ms, offset by 1 ms.
        let mut firsts = Vec::new();
        for i in 0..4 {
            let mut p = Pacing::open(start, 1_000.0, 4, i);
            let a = p.plan(start).intended;
            let b = p.plan(start).intended;
            assert_eq!(b - a, 4 * MS);
            firsts.push(a - start);
        }
        assert_eq!(firsts, [Duration::ZERO, MS, 2 * MS, 3 * MS]);
    }
}
