//! Wall-clock time for records that leave the process (access-log lines, the kill
//! switch's last trip). Durations inside a request use `Instant` instead.

/// Microseconds since the Unix epoch (vDSO clock read, no syscall).
#[inline]
pub(crate) fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// `YYYY-MM-DDTHH:MM:SS` for seconds since the epoch (UTC, proleptic Gregorian).
pub(crate) fn rfc3339_seconds(secs: u64) -> String {
    let days = (secs / 86_400).cast_signed();
    let rem = secs % 86_400;
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Unix seconds (a certificate's validity, say) as `YYYY-MM-DDTHH:MM:SSZ`; times before
/// 1970 show as the epoch.
pub(crate) fn utc(secs: i64) -> String {
    format!("{}Z", rfc3339_seconds(secs.max(0).cast_unsigned()))
}
