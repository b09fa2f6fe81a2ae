//! Value parsers of the configuration, shared by the `run` flags ([`crate::cli`]), the
//! file ([`super::file`]), rollout plans and the admin protocol: addresses, header names,
//! durations, and the names of the enumerated settings. Each returns a message that
//! says what was expected, for the caller to prefix with the flag or field.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;
use std::time::Duration;

use gateway_common::PPM_MAX;

use super::{DriverChoice, KernelAccounting, LogFormat};

/// `host:port`, resolved once.
pub(crate) fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let mut addrs = text
        .to_socket_addrs()
        .map_err(|_| format!("'{text}' is not a host:port address"))?;
    addrs
        .next()
        .ok_or_else(|| format!("'{text}' resolves to no address"))
}

/// A header field name (RFC 9110 token), stored lower-case.
pub(crate) fn parse_header_name(text: &str) -> Result<String, String> {
    let ok = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if ok {
        Ok(text.to_ascii_lowercase())
    } else {
        Err(format!("'{text}' is not a valid header name"))
    }
}

/// `500ms`, `2s`, `1m`, `1h` or a bare number of seconds.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = parse_duration_or_zero(text)?;
    if d.is_zero() {
        return Err(format!("'{text}' must be greater than zero"));
    }
    Ok(d)
}

/// Like [`parse_duration`], but `0` (or `0s`, `0ms`) is allowed.
pub(crate) fn parse_duration_or_zero(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{text}' is not a duration like 500ms, 2s or 1m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n.saturating_mul(60))),
        "h" => Ok(Duration::from_secs(n.saturating_mul(3600))),
        _ => Err(format!("'{text}' is not a duration like 500ms, 2s or 1m")),
    }
}

/// Formats a duration the way [`parse_duration_or_zero`] reads it back: whole seconds as
/// `10s`, anything finer as milliseconds (`500ms`; below a millisecond is dropped).
pub(crate) fn format_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Every name in `names` joined for a message: `a, b or c`.
fn one_of(names: &[&str]) -> String {
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => names.join(""),
    }
}

impl DriverChoice {
    /// Every choice, in the order help texts list them.
    pub(crate) const ALL: [DriverChoice; 3] = [
        DriverChoice::Auto,
        DriverChoice::IoUring,
        DriverChoice::Epoll,
    ];

    /// The name the flag and the file use.
    pub(crate) fn name(self) -> &'static str {
        match self {
            DriverChoice::Auto => "auto",
            DriverChoice::IoUring => "io-uring",
            DriverChoice::Epoll => "epoll",
        }
    }
}

impl fmt::Display for DriverChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DriverChoice {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        DriverChoice::ALL
            .into_iter()
            .find(|d| d.name() == text)
            .ok_or_else(|| {
                let names = DriverChoice::ALL.map(DriverChoice::name);
                format!("'{text}' is not {}", one_of(&names))
            })
    }
}

impl KernelAccounting {
    /// Every mode, in the order help texts list them.
    pub(crate) const ALL: [KernelAccounting; 3] = [
        KernelAccounting::Auto,
        KernelAccounting::On,
        KernelAccounting::Off,
    ];

    /// The name the flag uses.
    pub(crate) fn name(self) -> &'static str {
        match self {
            KernelAccounting::Auto => "auto",
            KernelAccounting::On => "on",
            KernelAccounting::Off => "off",
        }
    }
}

impl fmt::Display for KernelAccounting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KernelAccounting {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        KernelAccounting::ALL
            .into_iter()
            .find(|k| k.name() == text)
            .ok_or_else(|| {
                let names = KernelAccounting::ALL.map(KernelAccounting::name);
                format!("'{text}' is not {}", one_of(&names))
            })
    }
}

impl LogFormat {
    /// Every format, in the order help texts list them.
    pub(crate) const ALL: [LogFormat; 2] = [LogFormat::Text, LogFormat::Json];

    /// The name the flag and the file use.
    pub(crate) fn name(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        LogFormat::ALL
            .into_iter()
            .find(|l| l.name() == text)
            .ok_or_else(|| {
                let names = LogFormat::ALL.map(LogFormat::name);
                format!("'{text}' is not {}", one_of(&names))
            })
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
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("5d").is_err());
    }

    #[test]
    fn formatted_durations_read_back() {
        for d in [
            Duration::ZERO,
            Duration::from_millis(500),
            Duration::from_secs(10),
            Duration::from_millis(1500),
        ] {
            assert_eq!(parse_duration_or_zero(&format_duration(d)), Ok(d));
        }
        assert_eq!(format_duration(Duration::from_secs(60)), "60s");
    }

    #[test]
    fn enumerated_settings_read_back_and_list_their_names() {
        for d in DriverChoice::ALL {
            assert_eq!(d.to_string().parse(), Ok(d));
        }
        for k in KernelAccounting::ALL {
            assert_eq!(k.to_string().parse(), Ok(k));
        }
        for l in LogFormat::ALL {
            assert_eq!(l.to_string().parse(), Ok(l));
        }
        assert_eq!(
            "uring".parse::<DriverChoice>(),
            Err("'uring' is not auto, io-uring or epoll".to_owned())
        );
    }

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
}
