//! Which variant serves a request on a route: forced by a header, then by a cookie, then
//! sticky by a key, then at random — in that order of precedence.
//!
//! Sticky assignment hashes a salt and the key into 1,000,000 buckets; the request goes to
//! the canary iff its bucket is below the share in ppm. Raising the share only adds
//! buckets (users) to the canary, lowering it only removes them, and every gateway with
//! the same salt assigns a key the same way. The hash (FNV-1a 64 with a splitmix64
//! finalizer, reduced by multiply-shift) is fixed and documented so other tools can
//! reproduce it.

use std::net::IpAddr;

use gateway_common::{PPM_MAX, Variant};

use super::route::snapshot::RouteSnap;
use super::route::split::Picker;
use crate::config::{Assignment, StickyKey};

/// The bucket (0..1,000,000) of `key` under `salt`.
pub fn bucket(salt: &[u8], key: &[u8]) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in salt.iter().chain(&[0xff]).chain(key) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    ((u128::from(h) * u128::from(PPM_MAX)) >> 64) as u32
}

/// Picks the variant for a request with `headers` from `client` on `route`.
#[inline]
pub(crate) fn assign(
    route: &RouteSnap,
    headers: &[httparse::Header<'_>],
    client: IpAddr,
    picker: &mut Picker,
) -> Variant {
    if !route.has_canary() {
        return Variant::Stable;
    }
    if let Some(name) = &route.force_header
        && let Some(v) = headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| forced(h.value))
    {
        return v;
    }
    if let Some(name) = &route.force_cookie
        && let Some(v) = cookie(headers, name.as_bytes()).and_then(forced)
    {
        return v;
    }
    if let Assignment::Sticky { key, salt } = &route.assignment {
        let mut ip_buf = [0u8; 16];
        let key: Option<&[u8]> = match key {
            StickyKey::Header(name) => headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value.trim_ascii()),
            StickyKey::Cookie(name) => cookie(headers, name.as_bytes()),
            StickyKey::ClientIp => Some(match client {
                IpAddr::V4(v4) => {
                    ip_buf[..4].copy_from_slice(&v4.octets());
                    &ip_buf[..4]
                }
                IpAddr::V6(v6) => {
                    ip_buf = v6.octets();
                    &ip_buf[..]
                }
            }),
        };
        if let Some(key) = key.filter(|k| !k.is_empty()) {
            let v = if bucket(salt.as_bytes(), key) < route.split.ppm() {
                Variant::Canary
            } else {
                Variant::Stable
            };
            return v;
        }
    }
    picker.pick(&route.split)
}

fn forced(value: &[u8]) -> Option<Variant> {
    let v = value.trim_ascii();
    if v.eq_ignore_ascii_case(b"always") {
        Some(Variant::Canary)
    } else if v.eq_ignore_ascii_case(b"never") {
        Some(Variant::Stable)
    } else {
        None
    }
}

/// The value of cookie `name` in the request's `Cookie` headers (RFC 6265 §5.4).
pub(crate) fn cookie<'h>(headers: &[httparse::Header<'h>], name: &[u8]) -> Option<&'h [u8]> {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("cookie"))
        .flat_map(|h| h.value.split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            (pair[..eq].trim_ascii() == name).then(|| {
                let v = pair[eq + 1..].trim_ascii();
                v.strip_prefix(b"\"")
                    .and_then(|v| v.strip_suffix(b"\""))
                    .unwrap_or(v)
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_uniform_enough_and_stable() {
        assert_eq!(bucket(b"api", b"user-1"), bucket(b"api", b"user-1"));
        assert_ne!(bucket(b"api", b"user-1"), bucket(b"web", b"user-1"));
        let n = 200_000u32;
        let below = (0..n)
            .filter(|i| bucket(b"s", i.to_string().as_bytes()) < 100_000)
            .count() as f64;
        let expected = f64::from(n) * 0.1;
        assert!(
            (below - expected).abs() < 4.0 * (expected * 0.9).sqrt(),
            "{below}"
        );
    }

    #[test]
    fn monotone_in_the_share() {
        // Property: for any key, canary at ppm p implies canary at every p' >= p.
        let mut rng = Picker::new(3);
        for i in 0..20_000u32 {
            let key = i.to_le_bytes();
            let b = bucket(b"salt", &key);
            let lo = rng.draw_ppm();
            let hi = lo + rng.draw_ppm() % (PPM_MAX - lo + 1);
            assert!(b >= lo || b < hi);
        }
    }

    #[test]
    fn cookies_parse() {
        let headers = [
            httparse::Header {
                name: "Cookie",
                value: b"a=1; uid=\"abc\" ;canary=always",
            },
            httparse::Header {
                name: "cookie",
                value: b"later=2",
            },
        ];
        assert_eq!(cookie(&headers, b"uid"), Some(&b"abc"[..]));
        assert_eq!(
            cookie(&headers, b"canary").and_then(forced),
            Some(Variant::Canary)
        );
        assert_eq!(cookie(&headers, b"later"), Some(&b"2"[..]));
        assert_eq!(cookie(&headers, b"missing"), None);
    }
}
