//! The anytime-valid building blocks of the sequential judge, as pure functions and small
//! accumulators. Every one is a nonnegative (super)martingale under its null hypothesis,
//! so by Ville's inequality `P(sup_t M_t >= 1/alpha) <= alpha`: the tests may be looked at
//! after every observation and stopped at any time.
//!
//! - [`RateTest`]: two counting processes (errors of canary and stable), the test of the
//!   rate ratio of Lindon, Sanden & Shirikian (KDD 2022, arXiv 2205.14762, the
//!   counting-process model of their section on count data; Netflix's "Sequential A/B
//!   Testing Keeps the World Streaming", part 2).
//! - [`LabelTest`]: equality in distribution against "canary stochastically slower", the
//!   paper's other test, on latency.
//! - [`proportion_cs`]: Robbins' conjugate-mixture confidence sequence for one
//!   proportion (beta-binomial mixture).
//! - [`Band`]: the time-uniform, quantile-uniform DKW band of Howard & Ramdas
//!   (2022, "Sequential estimation of quantiles with applications to A/B-testing and
//!   best-arm identification", Bernoulli 28(3); the bound `confseq` implements as
//!   `EmpiricalProcessLILBound`).

/// `ln Γ(x)` for `x > 0` (Lanczos, g = 7, nine terms: about 1e-15 relative).
pub(crate) fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x) Γ(1-x) = π / sin(πx).
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// `ln B(a, b)`.
pub(crate) fn ln_beta(a: f64, b: f64) -> f64 {
    ln_gamma(a) + ln_gamma(b) - ln_gamma(a + b)
}

/// Jeffreys' prior, Beta(1/2, 1/2): mass near 0 and 1, where error rates live.
const PRIOR: (f64, f64) = (0.5, 0.5);

/// Confidence sequence for a proportion after `successes` of `n`: the set of `p` where
/// Robbins' beta-binomial mixture martingale
///
/// ```text
/// M_n(p) = B(a + S, b + n - S) / B(a, b) / (p^S (1-p)^(n-S))
/// ```
///
/// is below `1/alpha` (it is a martingale with mean 1 under each `p`, so the set covers
/// the true `p` at every `n` at once with probability `1 - alpha`). The set is an
/// interval because `S ln p + (n-S) ln(1-p)` is concave; its ends are found by bisection.
pub(crate) fn proportion_cs(successes: u64, n: u64, alpha: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let hits = successes.min(n);
    let (k, m) = (hits as f64, (n - hits) as f64);
    let (pa, pb) = PRIOR;
    let floor = ln_beta(pa + k, pb + m) - ln_beta(pa, pb) - (1.0 / alpha).ln();
    let log_lik = |p: f64| {
        let mut v = 0.0;
        if hits > 0 {
            v += k * p.ln();
        }
        if hits < n {
            v += m * (1.0 - p).ln();
        }
        v
    };
    let mle = k / n as f64;
    // The log-likelihood at the maximum is above `floor` (the mixture is at most the
    // maximum likelihood), so each side has one crossing, or none when its end is inside.
    let cross = |mut inside: f64, mut outside: f64| {
        for _ in 0..64 {
            let mid = 0.5 * (inside + outside);
            if log_lik(mid) > floor {
                inside = mid;
            } else {
                outside = mid;
            }
        }
        inside
    };
    let lo = if hits == 0 { 0.0 } else { cross(mle, 0.0) };
    let hi = if hits == n { 1.0 } else { cross(mle, 1.0) };
    (lo, hi)
}

/// The time-uniform DKW band of Howard & Ramdas (2022, the empirical-process LIL bound):
/// with probability `1 - alpha`, for every `t >= 1` at once,
/// `sup_x |F_t(x) - F(x)| <= A sqrt((ln(1 + ln t) + C) / t)`, `A = 0.85`, where `C`
/// makes their error bound `4 exp(-γ² C) (1 + 1 / ((γ² - 1) ln η))` equal to `alpha`
/// with `γ² = (2/η) (A - sqrt(2(η - 1)/C))²` for the best stitching ratio `η`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Band {
    c: f64,
}

impl Band {
    const A: f64 = 0.85;

    /// The band at level `1 - alpha` (finding `C` takes a few milliseconds: build once).
    pub(crate) fn new(alpha: f64) -> Band {
        Band {
            c: band_constant(alpha, Band::A),
        }
    }

    /// Half-width after `t` observations (1 when there are none).
    pub(crate) fn eps(self, t: u64) -> f64 {
        if t == 0 {
            return 1.0;
        }
        let t = t as f64;
        (Band::A * ((1.0 + t.ln()).ln().max(0.0) + self.c).sqrt() / t.sqrt()).min(1.0)
    }

    /// The constant `C`.
    #[cfg(test)]
    pub(crate) fn constant(self) -> f64 {
        self.c
    }
}

/// The smallest `C` (to 1e-6) whose error bound is at most `alpha` for some `η` on a fine
/// grid: any such pair is a valid instance of the theorem, so a coarse search is only a
/// little conservative, never wrong.
fn band_constant(alpha: f64, a: f64) -> f64 {
    let bound = |c: f64| {
        let mut best = f64::INFINITY;
        for i in 1..=400 {
            let eta = 1.0 + f64::from(i) * 0.005;
            let root = a - (2.0 * (eta - 1.0) / c).sqrt();
            if root <= 0.0 {
                continue;
            }
            let g2 = 2.0 / eta * root * root;
            if g2 <= 1.0 {
                continue;
            }
            let e = 4.0 * (-g2 * c).exp() * (1.0 + 1.0 / ((g2 - 1.0) * eta.ln()));
            best = best.min(e);
        }
        best
    };
    let (mut lo, mut hi) = (0.01_f64, 400.0_f64);
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if bound(mid) <= alpha {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi
}

/// A quantile's confidence interval from a weighted sample and the band half-width:
/// `[Q(p - eps), Q(p + eps)]` where `Q(r)` is the smallest value whose empirical CDF
/// reaches `r`; `None` for an end beyond the data (0 or infinity).
pub(crate) fn quantile_interval(
    sample: &[(u64, u64)],
    p: f64,
    eps: f64,
) -> (Option<u64>, Option<u64>) {
    let n: u64 = sample.iter().map(|&(_, c)| c).sum();
    let at = |r: f64| -> Option<u64> {
        if r <= 0.0 || r > 1.0 || n == 0 {
            return None;
        }
        let need = (r * n as f64).ceil() as u64;
        let mut seen = 0;
        for &(v, c) in sample {
            seen += c;
            if seen >= need.max(1) {
                return Some(v);
            }
        }
        sample.last().map(|&(v, _)| v)
    };
    let lo = if p - eps <= 0.0 { None } else { at(p - eps) };
    let hi = if p + eps > 1.0 { None } else { at(p + eps) };
    (lo, hi)
}

/// Log rate ratios of the [`RateTest`]'s mixture (equal weights): from a 1.4-fold to a
/// 90-fold increase. Few points, because each costs `ln(points)` of evidence; a larger
/// ratio is still caught by the largest point.
const RATE_GRID: [f64; 6] = [0.35, 0.7, 1.1, 1.6, 2.5, 4.5];

/// Sequential test of `H0: rate_canary <= rate_stable` for two counting processes with
/// known exposures (requests, or segments sent).
///
/// The model (Lindon et al., count data): events of each variant arrive as Poisson
/// processes with intensity `exposure x rate`. Given that an event happened in a
/// batch whose canary exposure share is `ρ`, it is the canary's with probability
/// `θ(ψ) = ρ e^ψ / (ρ e^ψ + 1 - ρ)`, `ψ` the log rate ratio, so a batch with `x` canary
/// and `y` stable events has the likelihood ratio against `ψ = 0`
///
/// ```text
/// LR(ψ) = (θ(ψ)/ρ)^x ((1 - θ(ψ))/(1 - ρ))^y
/// ```
///
/// and the mixture `M_t = Σ_k w_k Π_batches LR(ψ_k)` is a martingale under `ψ = 0`.
/// Two facts make it a supermartingale for the whole composite null and for per-request
/// (Bernoulli) errors: the binomial family has monotone likelihood ratio, so under any
/// `ψ < 0` each factor (increasing in `x`) has mean below 1; and with Bernoulli errors
/// the canary's count given the batch's total is hypergeometric, which is below the
/// binomial in convex order (Hoeffding 1963, Theorem 4), so the mean of each factor
/// (convex in `x`) is again at most 1.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RateTest {
    log_lr: [f64; RATE_GRID.len()],
    /// Largest mixture value seen (the always-valid p-value is its inverse).
    pub(crate) max_e: f64,
}

impl Default for RateTest {
    fn default() -> Self {
        RateTest {
            log_lr: [0.0; RATE_GRID.len()],
            max_e: 1.0,
        }
    }
}

impl RateTest {
    /// Adds one batch: events and exposures of canary and stable.
    pub(crate) fn update(&mut self, events: [u64; 2], exposure: [u64; 2]) {
        let [x, y] = events;
        let [ec, es] = exposure;
        if ec == 0 || es == 0 || x + y == 0 {
            return;
        }
        let rho = ec as f64 / (ec + es) as f64;
        let (x, y) = (x as f64, y as f64);
        for (l, psi) in self.log_lr.iter_mut().zip(RATE_GRID) {
            let num = rho * psi.exp();
            let theta = num / (num + 1.0 - rho);
            *l += x * (theta / rho).ln() + y * ((1.0 - theta) / (1.0 - rho)).ln();
        }
        self.max_e = self.max_e.max(self.e_value());
    }

    /// The mixture martingale now.
    pub(crate) fn e_value(&self) -> f64 {
        mixture(&self.log_lr)
    }

    /// Always-valid p-value: `min(1, 1 / max_s M_s)`.
    pub(crate) fn p_value(&self) -> f64 {
        (1.0 / self.max_e).min(1.0)
    }

    /// The grid point that explains the data best (for reports): the canary's rate over
    /// the stable's, as a factor.
    pub(crate) fn best_ratio(&self) -> f64 {
        let (i, _) = self
            .log_lr
            .iter()
            .enumerate()
            .fold(
                (0, f64::NEG_INFINITY),
                |b, (i, &l)| if l > b.1 { (i, l) } else { b },
            );
        if self.log_lr[i] <= 0.0 {
            1.0
        } else {
            RATE_GRID[i].exp()
        }
    }
}

/// `Σ w_k exp(l_k)` with equal weights, computed without overflow.
fn mixture(log_lr: &[f64]) -> f64 {
    let max = log_lr.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if max > 700.0 {
        return f64::MAX;
    }
    log_lr.iter().map(|l| l.exp()).sum::<f64>() / log_lr.len() as f64
}

/// Tilts of the [`LabelTest`]'s mixture (equal weights).
const TILT_GRID: [f64; 6] = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0];

/// Sequential test of equality in distribution against "the canary is slower".
///
/// Under `H0` (canary and stable latencies have the same law) and the gateway's split
/// (each request goes to the canary with probability `ρ`, the step's share, by a draw
/// that does not look at the request), which variant served a request is independent of
/// its latency: given the latencies, the labels are independent Bernoulli(`ρ`). The
/// alternative tilts the label towards the canary for slow observations:
///
/// ```text
/// P(canary | latency v) = σ(logit ρ + β g(v)),   g(v) = 2 F_past(v) - 1
/// ```
///
/// where `F_past` is the mid-rank empirical CDF of every earlier batch (both variants),
/// so `g` is known before the batch (predictable) and lies in `[-1, 1]`. Each
/// observation's likelihood ratio against `β = 0` has mean exactly 1 under `H0`, so the
/// running product for each `β`, and the mixture over `β`, is a martingale (a sequential
/// rank test in the spirit of the paper's test of stochastic order: it sees the ranks of
/// canary latencies among all, not their values). `ρ` must be the share the split used,
/// not the batch's realised fraction: conditioning on the realised count makes the
/// labels a random subset, under which the product's mean exceeds 1 near `ρ = 1/2`.
/// Canary values come in already shifted by the tolerance, so the null it rejects is
/// "no slower than the tolerance allows".
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct LabelTest {
    log_lr: [f64; TILT_GRID.len()],
    /// Every earlier observation, pooled, as `(value, count)` sorted by value.
    past: Vec<(u64, u64)>,
    /// `past_before[i]`: observations in `past` below `past[i]`'s value.
    past_before: Vec<u64>,
    past_n: u64,
    /// Largest mixture value seen.
    pub(crate) max_e: f64,
}

impl Default for LabelTest {
    fn default() -> Self {
        LabelTest {
            log_lr: [0.0; TILT_GRID.len()],
            past: Vec::new(),
            past_before: Vec::new(),
            past_n: 0,
            max_e: 1.0,
        }
    }
}

impl LabelTest {
    /// Adds one batch of observations made at canary share `rho`: canary's (shifted by
    /// the tolerance) and stable's, each a weighted sample sorted by value.
    pub(crate) fn update(&mut self, rho: f64, canary: &[(u64, u64)], stable: &[(u64, u64)]) {
        if rho > 0.0 && rho < 1.0 && self.past_n > 0 {
            let logit = (rho / (1.0 - rho)).ln();
            let mut add = |v: u64, count: u64, is_canary: bool| {
                let g = self.score(v);
                for (l, beta) in self.log_lr.iter_mut().zip(TILT_GRID) {
                    let theta = 1.0 / (1.0 + (-(logit + beta * g)).exp());
                    *l += count as f64
                        * if is_canary {
                            (theta / rho).ln()
                        } else {
                            ((1.0 - theta) / (1.0 - rho)).ln()
                        };
                }
            };
            for &(v, c) in canary {
                add(v, c, true);
            }
            for &(v, c) in stable {
                add(v, c, false);
            }
            self.max_e = self.max_e.max(mixture(&self.log_lr));
        }
        self.past = merge(&merge(&self.past, canary), stable);
        self.past_before.clear();
        let mut seen = 0;
        for &(_, c) in &self.past {
            self.past_before.push(seen);
            seen += c;
        }
        self.past_n = seen;
    }

    /// `2 F_past(v) - 1` with the mid-rank CDF `P(X < v) + P(X = v) / 2`.
    fn score(&self, v: u64) -> f64 {
        let below = self.past.partition_point(|&(x, _)| x < v);
        let less = self.past_before.get(below).copied().unwrap_or(self.past_n);
        let equal = self
            .past
            .get(below)
            .filter(|&&(x, _)| x == v)
            .map_or(0, |&(_, c)| c);
        let f = (less as f64 + equal as f64 / 2.0) / self.past_n as f64;
        2.0 * f - 1.0
    }

    /// The mixture martingale now.
    #[cfg(test)]
    pub(crate) fn e_value(&self) -> f64 {
        mixture(&self.log_lr)
    }

    /// Always-valid p-value.
    pub(crate) fn p_value(&self) -> f64 {
        (1.0 / self.max_e).min(1.0)
    }
}

/// Merges two weighted samples sorted by value.
pub(crate) fn merge(left: &[(u64, u64)], right: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::with_capacity(left.len() + right.len());
    let (mut li, mut ri) = (0, 0);
    loop {
        let next = match (left.get(li), right.get(ri)) {
            (None, None) => return out,
            (Some(&l), Some(&r)) if l.0 == r.0 => {
                li += 1;
                ri += 1;
                (l.0, l.1 + r.1)
            }
            (Some(&l), Some(&r)) if l.0 < r.0 => {
                li += 1;
                l
            }
            (Some(&l), None) => {
                li += 1;
                l
            }
            (_, Some(&r)) => {
                ri += 1;
                r
            }
        };
        out.push(next);
    }
}
