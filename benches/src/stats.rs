//! The statistics the load tools print: a chi-square goodness-of-fit test of the observed
//! stable/canary split against the configured share.
//!
//! With two cells (stable, canary) the statistic has one degree of freedom, and its
//! p-value is the regularized upper incomplete gamma function `Q(1/2, x/2)`, computed here
//! by series or continued fraction (Numerical Recipes' `gammq`), so no statistics crate is
//! needed. Accurate to about 1e-14, far below the 0.001 threshold it is compared with.

use serde::Serialize;

/// The significance level a split must pass: a correct gateway fails once in 1,000 runs.
pub const SPLIT_ALPHA: f64 = 0.001;

/// `ln Γ(1/2) = ln √π`.
const LN_GAMMA_HALF: f64 = 0.572_364_942_924_700_1;
/// Relative precision the series and the continued fraction stop at.
const EPS: f64 = 1e-15;
/// Guards the continued fraction against division by zero.
const TINY: f64 = 1e-300;
/// Iteration cap; both expansions converge in far fewer steps for a = 1/2.
const MAX_ITER: u32 = 1_000;

/// Outcome of the split test.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ChiSquare {
    /// Pearson's statistic over the two cells.
    pub statistic: f64,
    /// Probability of a statistic at least this large if the split is as configured.
    pub p_value: f64,
    /// `p_value >= SPLIT_ALPHA`.
    pub pass: bool,
}

/// Tests `stable`/`canary` response counts against an expected canary fraction in
/// `0.0..=1.0`. `None` when there is nothing to test (no responses).
///
/// A cell whose expected count is zero (a 0 % or 100 % share) passes only when nothing
/// was observed in it.
pub fn split_test(stable: u64, canary: u64, expected_canary: f64) -> Option<ChiSquare> {
    let n = (stable + canary) as f64;
    if n == 0.0 || !(0.0..=1.0).contains(&expected_canary) {
        return None;
    }
    let mut statistic = 0.0;
    for (observed, share) in [(canary, expected_canary), (stable, 1.0 - expected_canary)] {
        let expected = n * share;
        let observed = observed as f64;
        if expected == 0.0 {
            if observed > 0.0 {
                statistic = f64::INFINITY;
            }
        } else {
            statistic += (observed - expected).powi(2) / expected;
        }
    }
    let p_value = chi_square_sf_1dof(statistic);
    Some(ChiSquare {
        statistic,
        p_value,
        pass: p_value >= SPLIT_ALPHA,
    })
}

/// `P(X >= x)` for a chi-square variable `X` with one degree of freedom.
pub fn chi_square_sf_1dof(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x <= 0.0 {
        return 1.0;
    }
    if x.is_infinite() {
        return 0.0;
    }
    gamma_q_half(x / 2.0)
}

/// `Q(1/2, x)`, the regularized upper incomplete gamma function at `a = 1/2`, `x > 0`.
#[expect(
    clippy::many_single_char_names,
    reason = "the names of Numerical Recipes' gser/gcf, so the code can be checked against it"
)]
fn gamma_q_half(x: f64) -> f64 {
    let a = 0.5;
    let prefactor = (-x + a * x.ln() - LN_GAMMA_HALF).exp();
    if x < a + 1.0 {
        // Series for P(a, x); Q = 1 - P.
        let mut ap = a;
        let mut del = 1.0 / a;
        let mut sum = del;
        for _ in 0..MAX_ITER {
            ap += 1.0;
            del *= x / ap;
            sum += del;
            if del.abs() < sum.abs() * EPS {
                break;
            }
        }
        (1.0 - sum * prefactor).clamp(0.0, 1.0)
    } else {
        // Continued fraction for Q(a, x), modified Lentz.
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / TINY;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..=MAX_ITER {
            let i = f64::from(i);
            let an = -i * (i - a);
            b += 2.0;
            d = an * d + b;
            if d.abs() < TINY {
                d = TINY;
            }
            c = b + an / c;
            if c.abs() < TINY {
                c = TINY;
            }
            d = 1.0 / d;
            let del = d * c;
            h *= del;
            if (del - 1.0).abs() < EPS {
                break;
            }
        }
        (prefactor * h).clamp(0.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs().max(1e-300)
    }

    #[test]
    fn p_values_match_the_chi_square_table() {
        // Critical values of chi-square with 1 dof for the usual levels.
        for (x, p) in [
            (0.454_936_423_119_572_7, 0.5),
            (2.705_543_454_095_404, 0.1),
            (3.841_458_820_694_124, 0.05),
            (6.634_896_601_021_214, 0.01),
            (10.827_566_170_662_733, 0.001),
            (15.136_705_226_623_606, 0.0001),
        ] {
            let got = chi_square_sf_1dof(x);
            assert!(close(got, p, 1e-9), "x={x}: {got} != {p}");
        }
    }

    #[test]
    fn p_value_is_erfc_of_sqrt_half_x() {
        // erfc(1) and erfc(3), from tables, at x = 2 and x = 18.
        assert!(close(
            chi_square_sf_1dof(2.0),
            0.157_299_207_050_285_13,
            1e-12
        ));
        assert!(close(
            chi_square_sf_1dof(18.0),
            2.209_049_699_858_544e-5,
            1e-10
        ));
    }

    #[test]
    fn edges() {
        assert!((chi_square_sf_1dof(0.0) - 1.0).abs() < 1e-12);
        assert!(chi_square_sf_1dof(f64::INFINITY).abs() < 1e-12);
        assert!(chi_square_sf_1dof(1e4) < 1e-300);
        assert_eq!(split_test(0, 0, 0.05), None);
        assert_eq!(split_test(10, 0, 1.5), None);
    }

    #[test]
    fn an_exact_split_passes_with_p_one() {
        let t = split_test(95_000, 5_000, 0.05).expect("has responses");
        assert!(t.statistic.abs() < 1e-9);
        assert!(close(t.p_value, 1.0, 1e-12));
        assert!(t.pass);
    }

    #[test]
    fn statistic_is_pearsons() {
        // 100,000 requests at 5 %: 5,100 canary is (100²/5000 + 100²/95000).
        let t = split_test(94_900, 5_100, 0.05).expect("has responses");
        assert!(close(t.statistic, 2.0 + 10_000.0 / 95_000.0, 1e-12));
        assert!(t.pass);
        // 5,400 canary of 100,000 is 5.8 standard deviations off: fails.
        let t = split_test(94_600, 5_400, 0.05).expect("has responses");
        assert!(close(t.statistic, 32.0 + 160_000.0 / 95_000.0, 1e-12));
        assert!(!t.pass);
        assert!(t.p_value < 1e-7);
    }

    #[test]
    fn zero_and_full_shares() {
        assert!(split_test(1_000, 0, 0.0).expect("has responses").pass);
        let t = split_test(999, 1, 0.0).expect("has responses");
        assert!(t.statistic.is_infinite() && !t.pass && t.p_value == 0.0);
        assert!(split_test(0, 1_000, 1.0).expect("has responses").pass);
        assert!(!split_test(1, 999, 1.0).expect("has responses").pass);
    }
}
