//! Types shared by every side of canarygate: the user-space gateway today, the eBPF
//! programs that account per variant in the kernel later. `no_std`, `#[repr(C)]`-friendly,
//! no padding, so the same definitions can cross the user/kernel boundary unchanged.
#![no_std]

/// Parts per million: the unit of the canary share (1 ppm = 0.0001 %).
pub const PPM_MAX: u32 = 1_000_000;

/// Number of variants a route can send traffic to (stable and canary).
pub const VARIANT_COUNT: usize = 2;

/// Which deployment a request (or, later, a socket) belongs to.
///
/// `#[repr(u32)]` so it can be stored as-is in BPF map values.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Variant {
    /// The deployment that serves most traffic.
    Stable = 0,
    /// The new deployment that receives the configured share.
    Canary = 1,
}

impl Variant {
    /// Every variant, in index order.
    pub const ALL: [Variant; VARIANT_COUNT] = [Variant::Stable, Variant::Canary];

    /// Dense index for per-variant arrays.
    #[inline]
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Lower-case name used in logs, metrics labels and response headers.
    #[inline]
    pub const fn as_str(self) -> &'static str {
        match self {
            Variant::Stable => "stable",
            Variant::Canary => "canary",
        }
    }

    /// The variant stored under `raw`, if any.
    #[inline]
    pub const fn from_u32(raw: u32) -> Option<Variant> {
        match raw {
            0 => Some(Variant::Stable),
            1 => Some(Variant::Canary),
            _ => None,
        }
    }
}

const _: () = assert!(core::mem::size_of::<Variant>() == 4);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_round_trips() {
        for v in Variant::ALL {
            assert_eq!(Variant::from_u32(v as u32), Some(v));
            assert_eq!(Variant::ALL[v.index()], v);
        }
        assert_eq!(Variant::from_u32(2), None);
    }
}
