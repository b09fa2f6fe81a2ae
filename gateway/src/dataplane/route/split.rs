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

#[cfg(test)]
mod tests {
    use super::*;

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
