//! The weighted split: which variant serves the next request.
//!
//! The share lives in one `AtomicU32` in parts per million, shared by every worker; each
//! worker draws from its own `rand_xoshiro` generator. A pick is one relaxed load, one
//! generator step and a compare: no lock, no allocation, no syscall. A store to the share
//! is seen by every worker on its next pick.

use std::sync::atomic::{AtomicU32, Ordering};

use gateway_common::{PPM_MAX, Variant};
use rand_xoshiro::Xoshiro256PlusPlus;
use rand_xoshiro::rand_core::{Rng, SeedableRng};

/// The canary share, shared by all workers.
#[derive(Debug)]
pub struct Split {
    canary_ppm: AtomicU32,
}

impl Split {
    /// A split sending `canary_ppm` parts per million to the canary (clamped to 100 %).
    pub fn new(canary_ppm: u32) -> Self {
        Split {
            canary_ppm: AtomicU32::new(canary_ppm.min(PPM_MAX)),
        }
    }

    /// The current canary share in parts per million.
    #[inline]
    pub fn ppm(&self) -> u32 {
        self.canary_ppm.load(Ordering::Relaxed)
    }

    /// Changes the canary share; every worker uses it from its next pick on.
    pub fn set_ppm(&self, ppm: u32) {
        self.canary_ppm.store(ppm.min(PPM_MAX), Ordering::Relaxed);
    }
}

/// One worker's random source for picks.
#[derive(Debug)]
pub struct Picker {
    rng: Xoshiro256PlusPlus,
}

impl Picker {
    /// A picker seeded from `seed` (each worker passes a different one).
    pub fn new(seed: u64) -> Self {
        Picker {
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
        }
    }

    /// A picker seeded from the OS clock, the thread and `salt`.
    pub fn from_entropy(salt: u64) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Self::new(nanos ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    /// A uniform draw in 0..=1,000,000 (for tests and property checks).
    pub fn draw_ppm(&mut self) -> u32 {
        ((u128::from(self.rng.next_u64()) * u128::from(PPM_MAX + 1)) >> 64) as u32
    }

    /// Picks a variant: canary with probability `ppm / 1_000_000`.
    ///
    /// Uses a 64-bit draw reduced by multiply-shift (Lemire), which is unbiased to far
    /// below the 1 ppm resolution of the share.
    #[inline]
    pub fn pick(&mut self, split: &Split) -> Variant {
        let ppm = split.ppm();
        if ppm == 0 {
            return Variant::Stable;
        }
        if ppm >= PPM_MAX {
            return Variant::Canary;
        }
        let draw = ((u128::from(self.rng.next_u64()) * u128::from(PPM_MAX)) >> 64) as u32;
        if draw < ppm {
            Variant::Canary
        } else {
            Variant::Stable
        }
    }
}

/// Parses a percentage such as `5`, `0.5` or `12.25` into parts per million, exactly
/// (no floating point): at most four decimals, within 0..=100.
pub(crate) fn parse_percent(text: &str) -> Result<u32, String> {
    let text = text.trim().trim_end_matches('%');
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if int.is_empty() && frac.is_empty() {
        return Err("expected a percentage such as 5, 0.5 or 12.25".into());
    }
    if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("'{text}' is not a number between 0 and 100"));
    }
    if frac.len() > 4 {
        return Err(format!(
            "'{text}' has more than 4 decimals (resolution is 0.0001%)"
        ));
    }
    let int: u64 = if int.is_empty() {
        0
    } else {
        int.parse()
            .map_err(|_| format!("'{text}' is outside 0..=100"))?
    };
    let mut frac_ppm: u64 = 0;
    for (i, b) in frac.bytes().enumerate() {
        frac_ppm += u64::from(b - b'0') * 10u64.pow(3 - i as u32);
    }
    let ppm = int.saturating_mul(10_000).saturating_add(frac_ppm);
    if ppm > u64::from(PPM_MAX) {
        return Err(format!("'{text}' is outside 0..=100"));
    }
    Ok(ppm as u32)
}

/// Formats parts per million as a percentage (`50000` -> `5`, `5000` -> `0.5`).
pub(crate) fn format_percent(ppm: u32) -> String {
    let int = ppm / 10_000;
    let frac = ppm % 10_000;
    if frac == 0 {
        format!("{int}")
    } else {
        let digits = format!("{frac:04}");
        format!("{int}.{}", digits.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_parses_exactly() {
        assert_eq!(parse_percent("5"), Ok(50_000));
        assert_eq!(parse_percent("0.5"), Ok(5_000));
        assert_eq!(parse_percent("12.25"), Ok(122_500));
        assert_eq!(parse_percent("0.0001"), Ok(1));
        assert_eq!(parse_percent("100"), Ok(1_000_000));
        assert_eq!(parse_percent("100.0"), Ok(1_000_000));
        assert_eq!(parse_percent(".5"), Ok(5_000));
        assert_eq!(parse_percent("0"), Ok(0));
        assert!(parse_percent("100.0001").is_err());
        assert!(parse_percent("150").is_err());
        assert!(parse_percent("-1").is_err());
        assert!(parse_percent("abc").is_err());
        assert!(parse_percent("0.00001").is_err());
        assert!(parse_percent("").is_err());
        assert!(parse_percent("99999999999999999999999").is_err());
    }

    #[test]
    fn percent_formats_round_trip() {
        for ppm in [0, 1, 5_000, 50_000, 122_500, 1_000_000] {
            assert_eq!(parse_percent(&format_percent(ppm)), Ok(ppm));
        }
    }

    #[test]
    fn extremes_are_exact() {
        let mut p = Picker::new(1);
        let split = Split::new(0);
        assert!((0..10_000).all(|_| p.pick(&split) == Variant::Stable));
        split.set_ppm(PPM_MAX);
        assert!((0..10_000).all(|_| p.pick(&split) == Variant::Canary));
    }

    #[test]
    fn share_is_accurate() {
        let mut p = Picker::new(7);
        for ppm in [5_000u32, 50_000, 500_000] {
            let split = Split::new(ppm);
            let n = 1_000_000u32;
            let k = (0..n).filter(|_| p.pick(&split) == Variant::Canary).count() as f64;
            let mean = f64::from(n) * f64::from(ppm) / 1e6;
            let sd = (mean * (1.0 - f64::from(ppm) / 1e6)).sqrt();
            assert!(
                (k - mean).abs() <= 3.291 * sd + 1.0,
                "ppm {ppm}: {k} vs {mean}"
            );
        }
    }
}
