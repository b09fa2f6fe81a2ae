//! Access logs, written off the hot path: workers push fixed-size records into their own
//! bounded lock-free queue; one writer thread formats them as JSON lines into the access
//! log and, for canary requests, also into the canary log (like AWS's separate canary log
//! group). When the writer falls behind (slow or full disk), records are dropped and
//! counted, never waited for.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use gateway_common::Variant;

use super::io::clock::rfc3339_seconds;
use crate::metrics::WorkerMetrics;

/// Records each worker can hold for the writer.
pub(crate) const QUEUE_CAPACITY: usize = 4096;

/// Bytes stored inline, truncated at `N`: copying one allocates nothing.
#[derive(Clone, Copy)]
pub(crate) struct Inline<const N: usize> {
    len: u16,
    bytes: [u8; N],
}

impl<const N: usize> Inline<N> {
    /// Copies up to `N` bytes of `src`.
    #[inline]
    pub(crate) fn new(src: &[u8]) -> Self {
        let len = src.len().min(N);
        let mut bytes = [0u8; N];
        bytes[..len].copy_from_slice(&src[..len]);
        Inline {
            len: len as u16,
            bytes,
        }
    }

    /// The stored bytes.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl<const N: usize> std::fmt::Debug for Inline<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

/// One request, as logged.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Record {
    /// Completion time, µs since the Unix epoch.
    pub time_us: u64,
    /// Stage name.
    pub stage: Inline<64>,
    /// Route name.
    pub route: Inline<64>,
    /// Deployment id.
    pub deployment: Inline<64>,
    /// Variant.
    pub variant: Variant,
    /// Method.
    pub method: Inline<16>,
    /// Path and query as received (truncated at 256 bytes).
    pub path: Inline<256>,
    /// The request came as an HTTP/2 stream (`"protocol":"h2"`, else `"http1"`).
    pub h2: bool,
    /// Status sent to the client (0: none).
    pub status: u16,
    /// The upstream's `grpc-status` for a gRPC call (`"grpc_status"`, only then).
    pub grpc_status: Option<u16>,
    /// Upstream endpoint tried last.
    pub upstream: Option<SocketAddr>,
    /// Total latency, µs.
    pub latency_us: u64,
    /// Time to the upstream response head, µs.
    pub upstream_latency_us: Option<u64>,
    /// Bytes from the client.
    pub bytes_in: u64,
    /// Bytes to the client.
    pub bytes_out: u64,
}

/// The queue one worker pushes into.
pub(crate) type Queue = Arc<ArrayQueue<Record>>;

/// The running log writer.
#[derive(Debug)]
pub(crate) struct AccessLog {
    queues: Vec<Queue>,
    stop: Arc<AtomicBool>,
}

impl AccessLog {
    /// Opens the log files (append) and starts the writer thread with one queue per worker.
    /// Records lost to a full queue or a failed write are counted in `metrics[worker]`.
    pub(crate) fn start(
        metrics: &[Arc<WorkerMetrics>],
        all: Option<&Path>,
        canary: Option<&Path>,
    ) -> std::io::Result<AccessLog> {
        let workers = metrics.len().max(1);
        let open = |p: &Path| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map(|file| Sink::new(file, p, workers))
        };
        let mut all = all.map(open).transpose()?;
        let mut canary = canary.map(open).transpose()?;
        let queues: Vec<Queue> = (0..workers)
            .map(|_| Arc::new(ArrayQueue::new(QUEUE_CAPACITY)))
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let (qs, st) = (queues.clone(), Arc::clone(&stop));
        let metrics = metrics.to_vec();
        std::thread::Builder::new()
            .name("canarygate-log".into())
            .spawn(move || {
                let mut line = Vec::with_capacity(1024);
                loop {
                    let mut any = false;
                    for (worker, q) in qs.iter().enumerate() {
                        while let Some(rec) = q.pop() {
                            any = true;
                            line.clear();
                            format_record(&rec, &mut line);
                            if let Some(s) = &mut all {
                                s.push(worker, &line);
                            }
                            if rec.variant == Variant::Canary
                                && let Some(s) = &mut canary
                            {
                                s.push(worker, &line);
                            }
                        }
                    }
                    for s in [&mut all, &mut canary].into_iter().flatten() {
                        s.write(&metrics);
                    }
                    if !any {
                        if st.load(Ordering::Relaxed) {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            })?;
        Ok(AccessLog { queues, stop })
    }

    /// The queue of worker `worker`.
    pub(crate) fn queue(&self, worker: usize) -> Queue {
        Arc::clone(&self.queues[worker % self.queues.len()])
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One log file and the lines formatted for it since the last write.
struct Sink {
    file: File,
    path: String,
    batch: Vec<u8>,
    /// Lines in `batch` per worker, so a failed write is counted against each.
    lines: Vec<u64>,
    /// The last write failed (so the next failure is not logged again).
    failing: bool,
}

impl Sink {
    fn new(file: File, path: &Path, workers: usize) -> Self {
        Sink {
            file,
            path: path.display().to_string(),
            batch: Vec::with_capacity(64 * 1024),
            lines: vec![0; workers],
            failing: false,
        }
    }

    fn push(&mut self, worker: usize, line: &[u8]) {
        self.batch.extend_from_slice(line);
        self.lines[worker] += 1;
    }

    /// Writes the batch with one `write` (or a few); on failure (full disk, I/O error)
    /// drops it and counts its lines as dropped, logging only when the state changes.
    fn write(&mut self, metrics: &[Arc<WorkerMetrics>]) {
        if self.batch.is_empty() {
            return;
        }
        match self.file.write_all(&self.batch) {
            Ok(()) => {
                if self.failing {
                    log::info!("access log {}: writing again", self.path);
                    self.failing = false;
                }
            }
            Err(e) => {
                let lost: u64 = self.lines.iter().sum();
                if !self.failing {
                    log::warn!(
                        "access log {}: write failed ({e}); dropping records and counting them \
                         in canarygate_access_log_dropped_total until writes succeed again",
                        self.path
                    );
                    self.failing = true;
                }
                log::debug!("access log {}: {lost} records dropped", self.path);
                for (m, n) in metrics.iter().zip(&self.lines) {
                    m.log_dropped.add(*n);
                }
            }
        }
        self.batch.clear();
        self.lines.iter_mut().for_each(|n| *n = 0);
    }
}

/// Formats `rec` as one JSON line.
pub(crate) fn format_record(rec: &Record, out: &mut Vec<u8>) {
    use std::io::Write as _;
    let secs = rec.time_us / 1_000_000;
    let _ = write!(
        out,
        "{{\"time\":\"{}.{:06}Z\"",
        rfc3339_seconds(secs),
        rec.time_us % 1_000_000
    );
    field(out, "stage", rec.stage.as_bytes());
    field(out, "route", rec.route.as_bytes());
    field(out, "variant", rec.variant.as_str().as_bytes());
    field(out, "deployment", rec.deployment.as_bytes());
    field(out, "method", rec.method.as_bytes());
    field(out, "path", rec.path.as_bytes());
    field(out, "protocol", if rec.h2 { b"h2" } else { b"http1" });
    let _ = write!(out, ",\"status\":{}", rec.status);
    if let Some(code) = rec.grpc_status {
        let _ = write!(out, ",\"grpc_status\":{code}");
    }
    match rec.upstream {
        Some(a) => {
            let _ = write!(out, ",\"upstream\":\"{a}\"");
        }
        None => out.extend_from_slice(b",\"upstream\":null"),
    }
    let _ = write!(out, ",\"latency_us\":{}", rec.latency_us);
    match rec.upstream_latency_us {
        Some(us) => {
            let _ = write!(out, ",\"upstream_latency_us\":{us}");
        }
        None => out.extend_from_slice(b",\"upstream_latency_us\":null"),
    }
    let _ = writeln!(
        out,
        ",\"bytes_in\":{},\"bytes_out\":{}}}",
        rec.bytes_in, rec.bytes_out
    );
}

fn field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":\"");
    for ch in String::from_utf8_lossy(value).chars() {
        match ch {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            c if (c as u32) < 0x20 => {
                use std::io::Write as _;
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let mut b = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_valid_json() {
        let rec = Record {
            time_us: 1_795_000_000_123_456,
            stage: Inline::new(b"prod"),
            route: Inline::new(b"api"),
            deployment: Inline::new(b"v2"),
            variant: Variant::Canary,
            method: Inline::new(b"GET"),
            path: Inline::new(b"/a\"b\\c\x01"),
            h2: true,
            status: 200,
            grpc_status: Some(14),
            upstream: Some("127.0.0.1:9000".parse().unwrap()),
            latency_us: 1234,
            upstream_latency_us: None,
            bytes_in: 10,
            bytes_out: 20,
        };
        let mut out = Vec::new();
        format_record(&rec, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["path"], "/a\"b\\c\u{1}");
        assert_eq!(v["variant"], "canary");
        assert_eq!(v["protocol"], "h2");
        assert_eq!(v["status"], 200);
        assert_eq!(v["grpc_status"], 14);
        assert_eq!(v["time"], "2026-11-18T11:06:40.123456Z");
        assert!(out.ends_with(b"}\n"));
    }

    #[test]
    fn inline_truncates() {
        let i = Inline::<4>::new(b"abcdef");
        assert_eq!(i.as_bytes(), b"abcd");
    }
}
