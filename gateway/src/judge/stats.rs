//! The statistics the canary judge uses, as pure functions over counts: the normal tail,
//! the Mann-Whitney U test on weighted samples (latency histograms are samples whose
//! values repeat, so ties are the rule), its effect sizes, the two-proportion z-test and
//! Fisher's exact test. Each matches SciPy (`scipy.stats.mannwhitneyu` with
//! `method="asymptotic"`, `fisher_exact`, `norm.sf`); `fixtures/reference.json` holds the
//! reference values and `fixtures/make_reference.py` the script that computed them.
//!
//! A weighted sample is a slice of `(value, count)` pairs sorted by value, each value once.

/// Upper tail of the standard normal distribution, `P(Z > z)`.
///
/// Accurate to about 1e-14 relative: a positive-term series of erf below 2, Lentz's
/// continued fraction of erfc above.
pub(crate) fn normal_sf(z: f64) -> f64 {
    if z.is_nan() {
        return f64::NAN;
    }
    let x = z.abs() / std::f64::consts::SQRT_2;
    let upper = 0.5 * erfc_pos(x);
    if z >= 0.0 { upper } else { 1.0 - upper }
}

/// `erfc(x)` for `x >= 0`.
fn erfc_pos(x: f64) -> f64 {
    const FRAC_2_SQRT_PI: f64 = std::f64::consts::FRAC_2_SQRT_PI;
    if x < 2.0 {
        // erf(x) = 2/sqrt(pi) * exp(-x^2) * sum 2^n x^(2n+1) / (1*3*...*(2n+1)): every
        // term is positive, so nothing cancels.
        let x2 = x * x;
        let mut term = x;
        let mut sum = x;
        let mut odd = 1.0;
        while term > sum * 1e-17 {
            odd += 2.0;
            term *= 2.0 * x2 / odd;
            sum += term;
        }
        return 1.0 - FRAC_2_SQRT_PI * (-x2).exp() * sum;
    }
    if x > 27.3 {
        return 0.0;
    }
    // erfc(x) = exp(-x^2)/sqrt(pi) * 1/(x + (1/2)/(x + (2/2)/(x + (3/2)/(x + ...)))),
    // evaluated with the modified Lentz algorithm.
    let tiny = 1e-300;
    let mut fraction = x;
    let mut num = x;
    let mut den = 0.0;
    for k in 1..500 {
        let partial = f64::from(k) / 2.0;
        den = x + partial * den;
        den = if den.abs() < tiny { tiny } else { den };
        num = x + partial / num;
        num = if num.abs() < tiny { tiny } else { num };
        den = 1.0 / den;
        let delta = num * den;
        fraction *= delta;
        if (delta - 1.0).abs() < 1e-16 {
            break;
        }
    }
    (-x * x).exp() / (fraction * std::f64::consts::PI.sqrt())
}

/// Result of a Mann-Whitney U test of sample `x` against sample `y`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct MannWhitney {
    /// U statistic of `x` (SciPy's `statistic`): pairs where x > y, ties counting one half.
    pub u: f64,
    /// Size of `x`.
    pub n_x: u64,
    /// Size of `y`.
    pub n_y: u64,
    /// Two-sided p-value (normal approximation, tie and continuity corrections).
    pub p_two_sided: f64,
    /// One-sided p-value for "x tends to be larger than y" (SciPy's `greater`).
    pub p_greater: f64,
    /// Cliff's delta, `P(x > y) - P(x < y)`, equal to the rank-biserial correlation:
    /// -1..1, positive when `x` is larger.
    pub cliffs_delta: f64,
}

/// Mann-Whitney U test of `x` against `y`; `None` when either sample is empty.
///
/// Ranks are computed over the merged values with ties given their average rank; the
/// variance is corrected for ties. When every observation is the same value the variance
/// is 0 and both p-values are 1 (there is no difference to see).
pub(crate) fn mann_whitney(xs: &[(u64, u64)], ys: &[(u64, u64)]) -> Option<MannWhitney> {
    let n_x: u64 = xs.iter().map(|p| p.1).sum();
    let n_y: u64 = ys.iter().map(|p| p.1).sum();
    if n_x == 0 || n_y == 0 {
        return None;
    }
    let (mut xi, mut yi) = (0, 0);
    let mut below = 0.0_f64;
    let mut rank_sum_x = 0.0_f64;
    let mut tie_term = 0.0_f64;
    loop {
        let value = match (xs.get(xi), ys.get(yi)) {
            (Some(xv), Some(yv)) => xv.0.min(yv.0),
            (Some(xv), None) => xv.0,
            (None, Some(yv)) => yv.0,
            (None, None) => break,
        };
        let in_x = match xs.get(xi) {
            Some(&(v, count)) if v == value => {
                xi += 1;
                count as f64
            }
            _ => 0.0,
        };
        let in_y = match ys.get(yi) {
            Some(&(v, count)) if v == value => {
                yi += 1;
                count as f64
            }
            _ => 0.0,
        };
        // Every observation of a tied group gets the group's average rank.
        let tied = in_x + in_y;
        rank_sum_x += in_x * (below + f64::midpoint(tied, 1.0));
        tie_term += tied * tied * tied - tied;
        below += tied;
    }
    let (nx, ny) = (n_x as f64, n_y as f64);
    let total = nx + ny;
    let u = rank_sum_x - nx * (nx + 1.0) / 2.0;
    let mean = nx * ny / 2.0;
    let variance = nx * ny / 12.0 * ((total + 1.0) - tie_term / (total * (total - 1.0)));
    let (p_two_sided, p_greater) = if variance > 0.0 {
        let sd = variance.sqrt();
        let u_max = u.max(nx * ny - u);
        let two = (2.0 * normal_sf((u_max - mean - 0.5) / sd)).min(1.0);
        (two, normal_sf((u - mean - 0.5) / sd))
    } else {
        (1.0, 1.0)
    };
    Some(MannWhitney {
        u,
        n_x,
        n_y,
        p_two_sided,
        p_greater,
        cliffs_delta: 2.0 * u / (nx * ny) - 1.0,
    })
}

/// Median of a weighted sample (the mean of the two middle values when the size is
/// even, like `numpy.median`); `None` when empty.
pub(crate) fn median(sample: &[(u64, u64)]) -> Option<f64> {
    let n: u64 = sample.iter().map(|p| p.1).sum();
    if n == 0 {
        return None;
    }
    let at = |k: u64| {
        let mut seen = 0;
        for &(v, c) in sample {
            seen += c;
            if seen > k {
                return v as f64;
            }
        }
        0.0
    };
    Some(if n % 2 == 1 {
        at(n / 2)
    } else {
        f64::midpoint(at(n / 2 - 1), at(n / 2))
    })
}

/// Builds a weighted sample from raw values (sorting and counting them).
#[cfg(test)]
pub(crate) fn weighted(values: &[u64]) -> Vec<(u64, u64)> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for v in sorted {
        match out.last_mut() {
            Some(last) if last.0 == v => last.1 += 1,
            _ => out.push((v, 1)),
        }
    }
    out
}

/// Which test compared two proportions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProportionTest {
    /// Pooled two-proportion z-test (normal approximation).
    Z,
    /// Fisher's exact test (used when an expected cell count is below 5).
    Fisher,
}

impl ProportionTest {
    /// Name shown in verdicts.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ProportionTest::Z => "z",
            ProportionTest::Fisher => "fisher",
        }
    }
}

/// Comparison of the rate `k_x / n_x` with `k_y / n_y`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Proportions {
    /// The test used.
    pub test: ProportionTest,
    /// Rate of `x`.
    pub rate_x: f64,
    /// Rate of `y`.
    pub rate_y: f64,
    /// z statistic (z-test only).
    pub z: Option<f64>,
    /// Two-sided p-value.
    pub p_two_sided: f64,
    /// One-sided p-value for "x has the higher rate".
    pub p_greater: f64,
}

/// Pooled two-proportion z-test; `None` when either sample is empty.
pub(crate) fn two_proportion_z(k_x: u64, n_x: u64, k_y: u64, n_y: u64) -> Option<Proportions> {
    if n_x == 0 || n_y == 0 || k_x > n_x || k_y > n_y {
        return None;
    }
    let (kx, nx, ky, ny) = (k_x as f64, n_x as f64, k_y as f64, n_y as f64);
    let (rate_x, rate_y) = (kx / nx, ky / ny);
    let pooled = (kx + ky) / (nx + ny);
    let se = (pooled * (1.0 - pooled) * (1.0 / nx + 1.0 / ny)).sqrt();
    if se == 0.0 {
        return Some(Proportions {
            test: ProportionTest::Z,
            rate_x,
            rate_y,
            z: Some(0.0),
            p_two_sided: 1.0,
            p_greater: 1.0,
        });
    }
    let z = (rate_x - rate_y) / se;
    Some(Proportions {
        test: ProportionTest::Z,
        rate_x,
        rate_y,
        z: Some(z),
        p_two_sided: (2.0 * normal_sf(z.abs())).min(1.0),
        p_greater: normal_sf(z),
    })
}

/// Largest number of tables Fisher's test enumerates before the z-test is used instead.
const FISHER_MAX_SUPPORT: u64 = 1_000_000;

/// Fisher's exact test on the table `[[k_x, n_x - k_x], [k_y, n_y - k_y]]`, like
/// `scipy.stats.fisher_exact` (two-sided: the tables no more likely than the observed
/// one; `greater`: odds ratio above 1). `None` when a sample is empty or the table is too
/// large to enumerate.
pub(crate) fn fisher_exact(k_x: u64, n_x: u64, k_y: u64, n_y: u64) -> Option<Proportions> {
    if n_x == 0 || n_y == 0 || k_x > n_x || k_y > n_y {
        return None;
    }
    let total = n_x + n_y;
    let successes = k_x + k_y;
    // k_x follows a hypergeometric law over lo..=hi given the margins.
    let lo = n_x.saturating_sub(total - successes);
    let hi = n_x.min(successes);
    if hi - lo >= FISHER_MAX_SUPPORT {
        return None;
    }
    // Probabilities up to a constant, built outward from the mode by the ratio
    // P(a+1)/P(a) = (K-a)(n_x-a) / ((a+1)(N-K-n_x+a+1)), which never overflows.
    let ratio = |a: u64| {
        let (a_f, k, nx, rest) = (
            a as f64,
            successes as f64,
            n_x as f64,
            (total - successes) as f64,
        );
        (k - a_f) * (nx - a_f) / ((a_f + 1.0) * (rest - nx + a_f + 1.0))
    };
    let len = (hi - lo + 1) as usize;
    let mut w = vec![0.0_f64; len];
    let mut mode = lo;
    while mode < hi && ratio(mode) > 1.0 {
        mode += 1;
    }
    let m = (mode - lo) as usize;
    w[m] = 1.0;
    for i in m + 1..len {
        w[i] = w[i - 1] * ratio(lo + i as u64 - 1);
    }
    for i in (0..m).rev() {
        w[i] = w[i + 1] / ratio(lo + i as u64);
    }
    let sum: f64 = w.iter().sum();
    let observed = w[(k_x - lo) as usize];
    let p_greater = w[(k_x - lo) as usize..].iter().sum::<f64>() / sum;
    let p_two_sided = w
        .iter()
        .filter(|&&p| p <= observed * (1.0 + 1e-7))
        .sum::<f64>()
        / sum;
    Some(Proportions {
        test: ProportionTest::Fisher,
        rate_x: k_x as f64 / n_x as f64,
        rate_y: k_y as f64 / n_y as f64,
        z: None,
        p_two_sided: p_two_sided.min(1.0),
        p_greater: p_greater.min(1.0),
    })
}

/// The usual rule: Fisher's exact test when any expected cell count is below 5, else the
/// z-test.
pub(crate) fn compare_proportions(k_x: u64, n_x: u64, k_y: u64, n_y: u64) -> Option<Proportions> {
    if n_x == 0 || n_y == 0 {
        return None;
    }
    let total = (n_x + n_y) as f64;
    let k = (k_x + k_y) as f64;
    let min_expected = [n_x, n_y]
        .iter()
        .flat_map(|&n| [n as f64 * k / total, n as f64 * (total - k) / total])
        .fold(f64::INFINITY, f64::min);
    if min_expected < 5.0 {
        fisher_exact(k_x, n_x, k_y, n_y).or_else(|| two_proportion_z(k_x, n_x, k_y, n_y))
    } else {
        two_proportion_z(k_x, n_x, k_y, n_y)
    }
}
