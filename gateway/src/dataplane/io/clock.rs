//! Wall-clock time for records that leave the process (access-log lines, the kill
//! switch's last trip). Durations inside a request use `Instant` instead.

/// Microseconds since the Unix epoch (vDSO clock read, no syscall).
#[inline]
pub(crate) fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
