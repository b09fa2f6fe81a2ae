//! Passive outlier detection's decisions, made by the control plane from the workers'
//! consecutive-failure counters: eject an endpoint when any one worker's count crossed a
//! threshold, for `base_ejection_time` times its recent ejections (capped at
//! `max_ejection_time`), never more than `max_ejection_percent` of the deployment at
//! once (one always may be); bring it back when the time is up. Time is passed in.

use std::time::{Duration, Instant};

use super::{Entry, Group};
use crate::config::health::Outlier;

/// An endpoint's ejection record.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Ejection {
    /// Until when it is ejected, while it is.
    pub(crate) until: Option<Instant>,
    /// Recent ejections: the multiplier of the next ejection time. One is forgiven for
    /// each `base_ejection_time` the endpoint stays in after coming back.
    pub(crate) multiplier: u32,
    /// When the multiplier last changed (ejection, return or forgiveness).
    pub(crate) since: Option<Instant>,
    /// Ejections since the entry exists.
    pub(crate) total: u64,
    /// Thresholds crossed while `max_ejection_percent` allowed no more ejections.
    pub(crate) skipped: u64,
}

impl Ejection {
    /// True while ejected at `now`.
    pub(crate) fn is_ejected(&self, now: Instant) -> bool {
        self.until.is_some_and(|u| now < u)
    }

    /// Ejects at `now` under `o`; returns for how long.
    fn eject(&mut self, o: &Outlier, now: Instant) -> Duration {
        self.multiplier = self.multiplier.saturating_add(1);
        let time = o
            .base_ejection_time
            .saturating_mul(self.multiplier)
            .min(o.max_ejection_time);
        self.until = Some(now + time);
        self.since = Some(now);
        self.total += 1;
        time
    }

    /// Ends an ejection that is over, and forgives one past ejection per base time
    /// served without one. Returns true when the endpoint just came back.
    fn age(&mut self, o: &Outlier, now: Instant) -> bool {
        if let Some(until) = self.until
            && now >= until
        {
            self.until = None;
            self.since = Some(now);
            return true;
        }
        if self.until.is_none()
            && self.multiplier > 0
            && self
                .since
                .is_some_and(|s| now.duration_since(s) >= o.base_ejection_time)
        {
            self.multiplier -= 1;
            self.since = Some(now);
        }
        false
    }
}

/// Whether `e`'s counters cross a threshold of `o`: any one worker's consecutive count.
fn tripped(e: &Entry, o: &Outlier) -> Option<&'static str> {
    let ep = &e.endpoint;
    (0..ep.workers()).map(|w| ep.counters(w)).find_map(|c| {
        if o.consecutive_5xx > 0 && c.consecutive_5xx >= o.consecutive_5xx {
            Some("consecutive 5xx")
        } else if o.consecutive_gateway_failures > 0
            && c.consecutive_gateway >= o.consecutive_gateway_failures
        {
            Some("consecutive gateway failures")
        } else {
            None
        }
    })
}

/// One pass over group `g`: returns, then ejections.
pub(crate) fn evaluate(g: &Group, o: &Outlier, now: Instant) {
    for e in &g.entries {
        let mut ctl = e.ctl();
        if ctl.ejection.age(o, now) {
            log::info!(
                "route {} {} endpoint {}: ejection over, back in",
                g.route,
                g.variant.as_str(),
                e.addr()
            );
            e.publish(&ctl, now);
        }
    }
    let max = o.max_ejected(g.entries.len());
    let mut ejected = g
        .entries
        .iter()
        .filter(|e| e.ctl().ejection.is_ejected(now))
        .count();
    for e in &g.entries {
        let Some(why) = tripped(e, o) else { continue };
        // Counted from zero again, ejected or not.
        e.endpoint.reset_counters();
        let mut ctl = e.ctl();
        if ctl.ejection.is_ejected(now) {
            continue;
        }
        if ejected >= max {
            ctl.ejection.skipped += 1;
            log::warn!(
                "route {} {} endpoint {}: {why}, not ejected: {ejected} of {} endpoints are already (max_ejection_percent {})",
                g.route,
                g.variant.as_str(),
                e.addr(),
                g.entries.len(),
                o.max_ejection_percent
            );
            continue;
        }
        let time = ctl.ejection.eject(o, now);
        ejected += 1;
        log::warn!(
            "route {} {} endpoint {}: {why}: ejected for {}",
            g.route,
            g.variant.as_str(),
            e.addr(),
            crate::config::value::format_duration(time)
        );
        e.publish(&ctl, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::health::HealthConfig;
    use crate::dataplane::upstream::health::{DOWN, Observed, UP};
    use gateway_common::Variant;
    use std::sync::Arc;

    const S: Duration = Duration::from_secs(1);

    fn group(n: u16, o: &Outlier) -> Group {
        Group {
            route: "api".into(),
            variant: Variant::Stable,
            deployment: "v1".into(),
            config: HealthConfig {
                check: None,
                outlier: Some(o.clone()),
            },
            entries: (0..n)
                .map(|i| {
                    Arc::new(Entry::new(
                        "api",
                        "v1",
                        ([127, 0, 0, 1], 9000 + i).into(),
                        2,
                    ))
                })
                .collect(),
            panic: false,
            tls: None,
        }
    }

    fn fail(g: &Group, i: usize, times: u32) {
        for _ in 0..times {
            let o = g.config.outlier.as_ref();
            g.entries[i].endpoint.observe(1, o, Observed::Answered(503));
        }
    }

    #[test]
    fn ejects_at_the_threshold_and_brings_back_after_a_growing_time() {
        let o = Outlier {
            base_ejection_time: 10 * S,
            max_ejection_time: 25 * S,
            ..Outlier::default()
        };
        let g = group(2, &o);
        let t0 = Instant::now();
        fail(&g, 0, 4);
        evaluate(&g, &o, t0);
        assert_eq!(g.entries[0].endpoint.state(), UP, "below the threshold");
        fail(&g, 0, 1);
        evaluate(&g, &o, t0);
        assert_eq!(g.entries[0].endpoint.state(), DOWN);
        assert_eq!(g.entries[0].endpoint.counters(1).consecutive_5xx, 0);
        evaluate(&g, &o, t0 + 9 * S);
        assert_eq!(g.entries[0].endpoint.state(), DOWN);
        evaluate(&g, &o, t0 + 10 * S);
        assert_eq!(g.entries[0].endpoint.state(), UP, "back after base x 1");
        // Ejected again soon: twice as long; a third time is capped.
        let t1 = t0 + 11 * S;
        fail(&g, 0, 5);
        evaluate(&g, &o, t1);
        evaluate(&g, &o, t1 + 19 * S);
        assert_eq!(g.entries[0].endpoint.state(), DOWN);
        evaluate(&g, &o, t1 + 20 * S);
        assert_eq!(g.entries[0].endpoint.state(), UP);
        let t2 = t1 + 21 * S;
        fail(&g, 0, 5);
        evaluate(&g, &o, t2);
        evaluate(&g, &o, t2 + 24 * S);
        assert_eq!(g.entries[0].endpoint.state(), DOWN);
        evaluate(&g, &o, t2 + 25 * S);
        assert_eq!(
            g.entries[0].endpoint.state(),
            UP,
            "capped at max_ejection_time"
        );
        assert_eq!(g.entries[0].ctl().ejection.total, 3);
        // Good behaviour forgives: after 3 base times in, the multiplier is back to 0.
        let t3 = t2 + 25 * S;
        for k in 1..=3 {
            evaluate(&g, &o, t3 + k * 10 * S);
        }
        assert_eq!(g.entries[0].ctl().ejection.multiplier, 0);
    }

    #[test]
    fn max_ejection_percent_is_respected_but_one_may_always_go() {
        let o = Outlier::default(); // 50%
        let g = group(3, &o);
        let t0 = Instant::now();
        fail(&g, 0, 5);
        fail(&g, 1, 5);
        evaluate(&g, &o, t0);
        let states: Vec<u8> = g.entries.iter().map(|e| e.endpoint.state()).collect();
        assert_eq!(states, [DOWN, UP, UP], "50% of 3 is 1");
        assert_eq!(g.entries[1].ctl().ejection.skipped, 1);
        let lone = group(1, &o);
        fail(&lone, 0, 5);
        evaluate(&lone, &o, t0);
        assert_eq!(lone.entries[0].endpoint.state(), DOWN);
    }

    #[test]
    fn gateway_failures_count_separately_and_successes_clear() {
        let o = Outlier {
            consecutive_5xx: 0,
            consecutive_gateway_failures: 3,
            ..Outlier::default()
        };
        let g = group(2, &o);
        let e = &g.entries[0].endpoint;
        e.observe(0, Some(&o), Observed::ConnectFailed);
        e.observe(0, Some(&o), Observed::Timeout);
        e.observe(0, Some(&o), Observed::Answered(200));
        e.observe(0, Some(&o), Observed::Reset);
        e.observe(0, Some(&o), Observed::Answered(503));
        evaluate(&g, &o, Instant::now());
        assert_eq!(e.state(), UP);
        e.observe(0, Some(&o), Observed::Reset);
        e.observe(0, Some(&o), Observed::Reset);
        e.observe(0, Some(&o), Observed::Reset);
        evaluate(&g, &o, Instant::now());
        assert_eq!(e.state(), DOWN);
    }
}
