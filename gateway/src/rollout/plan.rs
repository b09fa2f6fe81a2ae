//! Rollout plans: the steps (canary shares) a rollout walks through, how long each lasts
//! at least, and the judge's criteria. They come from a route's `rollout = { ... }` in the
//! configuration file or from `rollout start ROUTE steps ... interval ...` on the admin
//! socket; both are checked here, as pure functions.

use std::fmt::Write as _;
use std::time::Duration;

use gateway_common::PPM_MAX;
use serde::Deserialize;

use crate::config::value::{format_percent, parse_percent};
use crate::judge::Criteria;

/// Shortest step interval accepted.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Interval used when none is given.
pub(crate) const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// Which judge decides the steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum JudgeKind {
    /// Anytime-valid tests looked at every batch ([`crate::judge::sequential`]).
    #[default]
    Sequential,
    /// Fixed-sample tests at the end of each interval (Kayenta's way), for comparison.
    Fixed,
}

impl JudgeKind {
    /// Name in plans and replies.
    pub fn as_str(self) -> &'static str {
        match self {
            JudgeKind::Sequential => "sequential",
            JudgeKind::Fixed => "fixed",
        }
    }

    fn parse(v: &str) -> Result<JudgeKind, String> {
        match v {
            "sequential" => Ok(JudgeKind::Sequential),
            "fixed" => Ok(JudgeKind::Fixed),
            _ => Err(format!("judge: '{}' is not sequential or fixed", clip(v))),
        }
    }
}

/// What the sequential judge does with a step it could not decide by its maximum
/// duration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnTimeout {
    /// Hold the rollout for the operator (the safe default).
    #[default]
    Pause,
    /// Roll back.
    Fail,
    /// Go on to the next step (no regression was shown, but none was ruled out either).
    Pass,
}

impl OnTimeout {
    /// Name in plans and replies.
    pub fn as_str(self) -> &'static str {
        match self {
            OnTimeout::Pause => "pause",
            OnTimeout::Fail => "fail",
            OnTimeout::Pass => "pass",
        }
    }

    fn parse(v: &str) -> Result<OnTimeout, String> {
        match v {
            "pause" => Ok(OnTimeout::Pause),
            "fail" => Ok(OnTimeout::Fail),
            "pass" => Ok(OnTimeout::Pass),
            _ => Err(format!(
                "on-timeout: '{}' is not pause, fail or pass",
                clip(v)
            )),
        }
    }
}

fn clip(v: &str) -> String {
    v.chars().take(40).collect()
}

/// A step lasts at most this many intervals unless the plan says otherwise.
pub(crate) const MAX_INTERVALS: u32 = 5;

/// A checked rollout plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Canary shares in parts per million, strictly increasing. A last step of 100 % is
    /// the promotion itself (there is no stable traffic left to compare with).
    pub steps: Vec<u32>,
    /// Minimum duration of each step; the judge runs when it has passed.
    pub interval: Duration,
    /// How the judge decides (includes the minimum requests per variant).
    pub criteria: Criteria,
    /// Inconclusive verdicts in a row on one step after which the rollout pauses for
    /// the operator (as Argo Rollouts' `inconclusiveLimit`); 0 holds and re-judges for
    /// ever (fixed judge).
    pub max_inconclusive: u32,
    /// Which judge decides.
    pub judge: JudgeKind,
    /// Longest a step may last before [`Plan::on_timeout`] applies (sequential judge);
    /// `None`: [`MAX_INTERVALS`] intervals.
    pub max_interval: Option<Duration>,
    /// What happens to a step still undecided after `max_interval`.
    pub on_timeout: OnTimeout,
    /// During the rollout, a route without a `kill_switch` of its own gets
    /// [`crate::rollout::killswitch::ROLLOUT_DEFAULT`] (on unless turned off).
    pub kill_switch: bool,
}

impl Plan {
    /// A plan with default criteria.
    pub fn new(steps: Vec<u32>, interval: Duration) -> Result<Plan, String> {
        let plan = Plan {
            steps,
            interval,
            ..Plan::defaults()
        };
        plan.check()?;
        Ok(plan)
    }

    /// The defaults of every setting but the steps.
    fn defaults() -> Plan {
        Plan {
            steps: Vec::new(),
            interval: DEFAULT_INTERVAL,
            criteria: Criteria::default(),
            max_inconclusive: 0,
            judge: JudgeKind::default(),
            max_interval: None,
            on_timeout: OnTimeout::default(),
            kill_switch: true,
        }
    }

    /// Longest a step may last (sequential judge).
    pub fn step_limit(&self) -> Duration {
        self.max_interval.unwrap_or(self.interval * MAX_INTERVALS)
    }

    /// Checks steps, interval and criteria.
    pub fn check(&self) -> Result<(), String> {
        if self.steps.is_empty() {
            return Err("steps: at least one step is needed".into());
        }
        if self.steps.iter().any(|&s| s == 0 || s > PPM_MAX) {
            return Err("steps: each step is a percentage above 0 and at most 100".into());
        }
        if self.steps.windows(2).any(|w| w[0] >= w[1]) {
            return Err("steps: each step must be larger than the one before".into());
        }
        if self.steps[0] == PPM_MAX {
            return Err("steps: a plan needs a step below 100 (100 is the promotion)".into());
        }
        if self.interval < MIN_INTERVAL {
            return Err(format!("interval: at least {}ms", MIN_INTERVAL.as_millis()));
        }
        if self.max_interval.is_some_and(|m| m < self.interval) {
            return Err("max-interval must be at least the interval".into());
        }
        let c = &self.criteria;
        if !(c.confidence > 0.5 && c.confidence < 1.0) {
            return Err("confidence must be above 0.5 and below 1 (e.g. 0.95)".into());
        }
        if c.min_requests == 0 {
            return Err("min_requests must be at least 1".into());
        }
        for (name, v) in [
            ("latency_tolerance", Some(c.latency_tolerance)),
            ("error_tolerance", Some(c.error_tolerance)),
        ] {
            if v.is_some_and(|v| !(0.0..=10.0).contains(&v)) {
                return Err(format!("{name} must be a fraction >= 0 (0.1 = 10%)"));
            }
        }
        for (name, v) in [
            ("max_error_rate", c.max_error_rate),
            ("max_retransmit_rate", c.max_retransmit_rate),
        ] {
            if v.is_some_and(|v| !(0.0..=1.0).contains(&v)) {
                return Err(format!("{name} must be a fraction within 0..=1"));
            }
        }
        Ok(())
    }

    /// Steps that are judged (the final 100 %, if any, is the promotion).
    pub fn judged_steps(&self) -> usize {
        self.steps.iter().filter(|&&s| s < PPM_MAX).count()
    }

    /// `steps 5,25,50,100 interval 60s min-requests 100 confidence 0.95 ...`
    pub fn describe(&self) -> String {
        let c = &self.criteria;
        let mut s = format!(
            "steps {} interval {} min-requests {} confidence {} latency-tolerance {} latency-tolerance-abs {} error-tolerance {}",
            self.steps
                .iter()
                .map(|&p| format_percent(p))
                .collect::<Vec<_>>()
                .join(","),
            duration(self.interval),
            c.min_requests,
            c.confidence,
            c.latency_tolerance,
            duration(c.latency_tolerance_abs),
            c.error_tolerance
        );
        if let Some(d) = c.max_p99 {
            let _ = write!(s, " max-p99 {}", duration(d));
        }
        if let Some(r) = c.max_error_rate {
            let _ = write!(s, " max-error-rate {r}");
        }
        if let Some(r) = c.max_retransmit_rate {
            let _ = write!(s, " max-retransmit-rate {r}");
        }
        if let Some(n) = c.max_canary_ejections {
            let _ = write!(s, " max-canary-ejections {n}");
        }
        if self.max_inconclusive > 0 {
            let _ = write!(s, " max-inconclusive {}", self.max_inconclusive);
        }
        let _ = write!(s, " judge {}", self.judge.as_str());
        if self.judge == JudgeKind::Sequential {
            let _ = write!(
                s,
                " max-interval {} on-timeout {}",
                duration(self.step_limit()),
                self.on_timeout.as_str()
            );
        }
        if !self.kill_switch {
            s.push_str(" kill-switch off");
        }
        s
    }
}

/// `60s`, `1500ms`.
pub(crate) fn duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Changes to a plan given on the admin socket; unset fields keep the base plan's value.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PlanArgs {
    /// `steps P,P,..`
    pub steps: Option<Vec<u32>>,
    /// `interval DUR`
    pub interval: Option<Duration>,
    /// `min-requests N`
    pub min_requests: Option<u64>,
    /// `confidence C`
    pub confidence: Option<f64>,
    /// `latency-tolerance F`
    pub latency_tolerance: Option<f64>,
    /// `latency-tolerance-abs DUR`
    pub latency_tolerance_abs: Option<Duration>,
    /// `error-tolerance F`
    pub error_tolerance: Option<f64>,
    /// `max-p99 DUR`
    pub max_p99: Option<Duration>,
    /// `max-error-rate F`
    pub max_error_rate: Option<f64>,
    /// `max-retransmit-rate F`
    pub max_retransmit_rate: Option<f64>,
    /// `max-canary-ejections N`
    pub max_canary_ejections: Option<u64>,
    /// `max-inconclusive N`
    pub max_inconclusive: Option<u32>,
    /// `judge sequential|fixed`
    pub judge: Option<JudgeKind>,
    /// `max-interval DUR`
    pub max_interval: Option<Duration>,
    /// `on-timeout pause|fail|pass`
    pub on_timeout: Option<OnTimeout>,
    /// `kill-switch on|off`
    pub kill_switch: Option<bool>,
}

impl Eq for PlanArgs {}

impl PlanArgs {
    /// Parses `KEY VALUE` pairs.
    pub fn parse(words: &[&str]) -> Result<PlanArgs, String> {
        let mut a = PlanArgs::default();
        let mut it = words.chunks(2);
        for pair in &mut it {
            let [key, value] = pair else {
                return Err(format!("rollout: '{}' needs a value", pair[0]));
            };
            let frac = |v: &str| {
                v.parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite() && *f >= 0.0)
                    .ok_or_else(|| format!("{key}: '{v}' is not a number"))
            };
            let dur = |v: &str| {
                crate::config::value::parse_duration(v).map_err(|e| format!("{key}: {e}"))
            };
            match *key {
                "steps" => {
                    let steps = value
                        .split(',')
                        .map(|p| parse_percent(p).map_err(|e| format!("steps: {e}")))
                        .collect::<Result<Vec<_>, _>>()?;
                    a.steps = Some(steps);
                }
                "interval" => a.interval = Some(dur(value)?),
                "min-requests" => {
                    a.min_requests = Some(
                        value
                            .parse()
                            .map_err(|_| format!("min-requests: '{value}' is not a count"))?,
                    );
                }
                "confidence" => a.confidence = Some(frac(value)?),
                "latency-tolerance" => a.latency_tolerance = Some(frac(value)?),
                "latency-tolerance-abs" => a.latency_tolerance_abs = Some(dur(value)?),
                "error-tolerance" => a.error_tolerance = Some(frac(value)?),
                "max-p99" => a.max_p99 = Some(dur(value)?),
                "max-error-rate" => a.max_error_rate = Some(frac(value)?),
                "max-retransmit-rate" => a.max_retransmit_rate = Some(frac(value)?),
                "max-canary-ejections" => {
                    a.max_canary_ejections =
                        Some(value.parse().map_err(|_| {
                            format!("max-canary-ejections: '{value}' is not a count")
                        })?);
                }
                "max-inconclusive" => {
                    a.max_inconclusive = Some(
                        value
                            .parse()
                            .map_err(|_| format!("max-inconclusive: '{value}' is not a count"))?,
                    );
                }
                "judge" => a.judge = Some(JudgeKind::parse(value)?),
                "max-interval" => a.max_interval = Some(dur(value)?),
                "on-timeout" => a.on_timeout = Some(OnTimeout::parse(value)?),
                "kill-switch" => {
                    a.kill_switch = Some(match *value {
                        "on" => true,
                        "off" => false,
                        v => return Err(format!("kill-switch: '{}' is not on or off", clip(v))),
                    });
                }
                other => {
                    return Err(format!(
                        "rollout: unknown setting '{}' (steps, interval, min-requests, confidence, latency-tolerance, latency-tolerance-abs, error-tolerance, max-p99, max-error-rate, max-retransmit-rate, max-inconclusive, judge, max-interval, on-timeout, kill-switch)",
                        other.chars().take(40).collect::<String>()
                    ));
                }
            }
        }
        Ok(a)
    }

    /// `base` (the route's configured plan, if any) with these changes applied, checked.
    pub fn apply(&self, base: Option<&Plan>) -> Result<Plan, String> {
        let mut plan = match (base, &self.steps) {
            (Some(b), _) => b.clone(),
            (None, Some(steps)) => Plan { steps: steps.clone(), ..Plan::defaults() },
            (None, None) => return Err("this route has no rollout plan in the configuration file: give one (steps P,P,.. interval DUR)".into()),
        };
        let c = &mut plan.criteria;
        macro_rules! set {
            ($($field:ident),*) => { $(if let Some(v) = self.$field { c.$field = v; })* };
        }
        set!(
            min_requests,
            confidence,
            latency_tolerance,
            latency_tolerance_abs,
            error_tolerance
        );
        if self.max_p99.is_some() {
            c.max_p99 = self.max_p99;
        }
        if self.max_error_rate.is_some() {
            c.max_error_rate = self.max_error_rate;
        }
        if self.max_retransmit_rate.is_some() {
            c.max_retransmit_rate = self.max_retransmit_rate;
        }
        if self.max_canary_ejections.is_some() {
            c.max_canary_ejections = self.max_canary_ejections;
        }
        if let Some(steps) = &self.steps {
            plan.steps.clone_from(steps);
        }
        if let Some(i) = self.interval {
            plan.interval = i;
        }
        if let Some(n) = self.max_inconclusive {
            plan.max_inconclusive = n;
        }
        if let Some(j) = self.judge {
            plan.judge = j;
        }
        if self.max_interval.is_some() {
            plan.max_interval = self.max_interval;
        }
        if let Some(o) = self.on_timeout {
            plan.on_timeout = o;
        }
        if let Some(k) = self.kill_switch {
            plan.kill_switch = k;
        }
        plan.check()?;
        Ok(plan)
    }
}

/// A step or bound in the file: `5`, `12.5` or `"12.5"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Number {
    Int(i64),
    Float(f64),
    Text(String),
}

impl Number {
    fn text(&self) -> String {
        match self {
            Number::Int(i) => i.to_string(),
            Number::Float(f) => f.to_string(),
            Number::Text(t) => t.clone(),
        }
    }
}

/// `rollout = { steps = [5, 25, 50, 100], interval = "60s", min_requests = 100, ... }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FilePlan {
    steps: Vec<Number>,
    interval: Option<String>,
    min_requests: Option<u64>,
    confidence: Option<f64>,
    latency_tolerance: Option<f64>,
    latency_tolerance_abs: Option<String>,
    error_tolerance: Option<f64>,
    max_p99: Option<String>,
    max_error_rate: Option<f64>,
    max_retransmit_rate: Option<f64>,
    max_canary_ejections: Option<u64>,
    max_inconclusive: Option<u32>,
    judge: Option<String>,
    max_interval: Option<String>,
    on_timeout: Option<String>,
    kill_switch: Option<bool>,
}

impl FilePlan {
    /// The checked plan.
    pub(crate) fn check(&self) -> Result<Plan, String> {
        let dur = |name: &str, v: &Option<String>| {
            v.as_deref()
                .map(|t| {
                    crate::config::value::parse_duration(t).map_err(|e| format!("{name}: {e}"))
                })
                .transpose()
        };
        let args = PlanArgs {
            steps: Some(
                self.steps
                    .iter()
                    .map(|s| parse_percent(&s.text()).map_err(|e| format!("steps: {e}")))
                    .collect::<Result<_, _>>()?,
            ),
            interval: dur("interval", &self.interval)?,
            min_requests: self.min_requests,
            confidence: self.confidence,
            latency_tolerance: self.latency_tolerance,
            latency_tolerance_abs: dur("latency_tolerance_abs", &self.latency_tolerance_abs)?,
            error_tolerance: self.error_tolerance,
            max_p99: dur("max_p99", &self.max_p99)?,
            max_error_rate: self.max_error_rate,
            max_retransmit_rate: self.max_retransmit_rate,
            max_canary_ejections: self.max_canary_ejections,
            max_inconclusive: self.max_inconclusive,
            judge: self.judge.as_deref().map(JudgeKind::parse).transpose()?,
            max_interval: dur("max_interval", &self.max_interval)?,
            on_timeout: self
                .on_timeout
                .as_deref()
                .map(OnTimeout::parse)
                .transpose()
                .map_err(|e| e.replace("on-timeout", "on_timeout"))?,
            kill_switch: self.kill_switch,
        };
        args.apply(None).map_err(|e| {
            e.replace("min-requests", "min_requests")
                .replace("max-interval", "max_interval")
        })
    }
}

#[cfg(test)]
mod tests;
