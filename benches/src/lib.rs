//! canarygate's load tools. The criterion benches of the hot path live in `benches/` and
//! take their inputs from here ([`request_head`]); the `cg-load` binary is a thin CLI over
//! [`load`] (the generator) and [`stats`] (the split test it prints), `cg-handshake` one
//! over [`handshake`] (TLS handshakes per second), `cg-floor` one over [`floor`] (the
//! cheapest relay, the benchmark's floor).

pub mod floor;
pub mod handshake;
pub mod load;
pub mod stats;

/// A typical browser request head with `extra` additional headers.
pub fn request_head(extra: usize) -> Vec<u8> {
    let mut head = b"GET /api/v1/items?page=2 HTTP/1.1\r\nHost: shop.example\r\n\
        User-Agent: Mozilla/5.0\r\nAccept: */*\r\nConnection: keep-alive\r\n"
        .to_vec();
    for i in 0..extra {
        head.extend_from_slice(format!("X-Extra-{i}: value-{i}\r\n").as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// Parses a load duration: `500ms`, `2s`, `1m`, or bare seconds, decimals allowed (unlike
/// the gateway's flags, which take whole numbers, also `h`, and refuse 0).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (number, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (use 500ms, 2s, 1m or seconds)"))?;
    std::time::Duration::try_from_secs_f64(value * scale)
        .map_err(|_| format!("{s:?} is not a valid duration"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::parse_duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("abc").is_err());
    }
}
