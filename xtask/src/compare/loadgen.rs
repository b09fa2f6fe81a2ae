//! The load generators the comparison can drive, and the parsing of their output:
//! `wrk -t1 --latency` (the neutral default) or our own `cg-load --json` for keep-alive
//! requests (wrk also over https://, its OpenSSL pinned by an `OPENSSL_CONF` file), and
//! `cg-handshake --json` for TLS handshakes per second ([`Handshakes`]). A [`Loadgen`]
//! is set up for one traffic shape ([`Loadgen::for_shape`]): extra headers, a wrk script
//! for request bodies, slow cg-load clients in the background, and every client under
//! `taskset -c` when `--loadgen-cpus` asks.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::ValueEnum;

use super::shape::Shape;
use crate::step::display;

/// Which load generator drives the proxies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum LoadgenKind {
    /// wrk, one thread: a tool none of the proxies was written against.
    Wrk,
    /// cg-load (benches/), one thread.
    CgLoad,
}

impl LoadgenKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            LoadgenKind::Wrk => "wrk -t1",
            LoadgenKind::CgLoad => "cg-load -t1",
        }
    }
}

/// A configured load generator.
pub(crate) struct Loadgen {
    pub(crate) kind: LoadgenKind,
    /// Path of cg-load (built by the comparison).
    pub(crate) cg_load: PathBuf,
    /// `OPENSSL_CONF` for wrk: the TLS parameters its OpenSSL offers on https:// URLs.
    pub(crate) openssl_conf: Option<PathBuf>,
    /// `--loadgen-cpus`: every client runs under `taskset -c` with this list.
    pub(crate) cpus: Option<String>,
    /// Extra request headers, `Name: value`.
    pub(crate) headers: Vec<String>,
    /// wrk script (`-s`): the request bodies of the upload shapes.
    pub(crate) script: Option<PathBuf>,
    /// Background slow clients for the run's length: `(connections, total req/s)`,
    /// cg-load in open loop.
    pub(crate) slow: Option<(usize, usize)>,
}

impl Loadgen {
    /// A plain keep-alive load generator of `kind`.
    pub(crate) fn new(kind: LoadgenKind, cg_load: PathBuf, cpus: Option<String>) -> Loadgen {
        Loadgen {
            kind,
            cg_load,
            openssl_conf: None,
            cpus,
            headers: Vec::new(),
            script: None,
            slow: None,
        }
    }

    /// This load generator set up for `shape` (its script, if any, written into `dir`).
    pub(crate) fn for_shape(&self, shape: Shape, dir: &Path) -> Result<Loadgen> {
        let script = shape.write_script(dir)?;
        if script.is_some() && self.kind != LoadgenKind::Wrk {
            bail!(
                "--shapes {}: request bodies are sent by a wrk script; use --loadgen wrk",
                shape.name()
            );
        }
        Ok(Loadgen {
            kind: self.kind,
            cg_load: self.cg_load.clone(),
            openssl_conf: self.openssl_conf.clone(),
            cpus: self.cpus.clone(),
            headers: shape.headers(),
            script,
            slow: shape.slow_clients(),
        })
    }

    /// `program`, under `taskset -c CPUS` when pinned.
    fn command(&self, program: &Path) -> Command {
        match &self.cpus {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cpus]).arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    /// Starts the background slow clients against `url` for `duration`, if any.
    fn start_slow(&self, url: &str, duration: Duration) -> Result<Option<(Child, String)>> {
        let Some((connections, rate)) = self.slow else {
            return Ok(None);
        };
        let mut c = self.command(&self.cg_load);
        c.args(["-q", "--json", "-c", &connections.to_string()])
            .args(["-R", &rate.to_string()])
            .arg("-d")
            .arg(format!("{}ms", duration.as_millis()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let shown = display(&c);
        let child = c
            .spawn()
            .with_context(|| format!("could not start `{shown}`"))?;
        Ok(Some((child, shown)))
    }
}

/// Waits for the background slow clients and reads their figures.
fn finish_slow(child: Child, shown: &str) -> Result<LoadResult> {
    let out = child
        .wait_with_output()
        .with_context(|| format!("waiting for `{shown}`"))?;
    // Exit 1: no request succeeded; the JSON says what happened.
    if !(out.status.success() || out.status.code() == Some(1)) {
        bail!(
            "`{shown}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    parse_cg_load(&stdout).with_context(|| format!("reading the output of `{shown}`:\n{stdout}"))
}

/// Something that puts a measured load on a URL: what [`super::bench::Bench`] drives.
pub(crate) trait Load {
    /// Runs `connections` clients against `url` for `duration`; blocks. The load
    /// generator must be a child process waited for here (its CPU is read that way).
    fn run(&self, url: &str, connections: usize, duration: Duration) -> Result<LoadResult>;
}

/// What one load run measured.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct LoadResult {
    /// Complete responses.
    pub(crate) requests: u64,
    /// Responses per second.
    pub(crate) rps: f64,
    /// Median latency, µs.
    pub(crate) p50_us: f64,
    /// 99th percentile latency, µs.
    pub(crate) p99_us: f64,
    /// Socket errors and non-2xx/3xx responses.
    pub(crate) errors: u64,
    /// Handshake runs: completed connections whose session was resumed.
    pub(crate) resumed: Option<u64>,
    /// Mixed shape: what the background slow clients measured.
    pub(crate) slow: Option<Slow>,
}

/// The background slow clients' figures (mixed shape).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Slow {
    /// Complete responses.
    pub(crate) requests: u64,
    /// 99th percentile latency (from the intended send time), µs.
    pub(crate) p99_us: f64,
    /// Socket errors, timeouts and error statuses.
    pub(crate) errors: u64,
}

impl Load for Loadgen {
    /// Runs `connections` connections against `url` for `duration` (keep-alive unless
    /// the headers say otherwise), with the slow clients in the background if any.
    fn run(&self, url: &str, connections: usize, duration: Duration) -> Result<LoadResult> {
        let mut cmd = match self.kind {
            LoadgenKind::Wrk => {
                let mut c = self.command(Path::new("wrk"));
                if let Some(conf) = &self.openssl_conf {
                    c.env("OPENSSL_CONF", conf);
                }
                c.args(["-t1", "--latency", "-c", &connections.to_string()])
                    .arg("-d")
                    .arg(format!("{}s", duration.as_secs().max(1)));
                if let Some(script) = &self.script {
                    c.arg("-s").arg(script);
                }
                c
            }
            LoadgenKind::CgLoad => {
                let mut c = self.command(&self.cg_load);
                c.args(["-t", "1", "-q", "--json", "-c", &connections.to_string()])
                    .arg("-d")
                    .arg(format!("{}ms", duration.as_millis()));
                c
            }
        };
        for h in &self.headers {
            cmd.args(["-H", h]);
        }
        cmd.arg(url);
        let shown = display(&cmd);
        let slow = self.start_slow(url, duration)?;
        let out = cmd
            .output()
            .with_context(|| format!("could not start `{shown}`"));
        // The slow clients are waited for even when the fast ones failed.
        let slow = slow
            .map(|(child, shown)| finish_slow(child, &shown))
            .transpose()?;
        let out = out?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        // cg-load exits 1 when no request succeeded; its JSON still says what happened.
        let tolerated = self.kind == LoadgenKind::CgLoad && out.status.code() == Some(1);
        if !(out.status.success() || tolerated) {
            bail!(
                "`{shown}` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let mut r = match self.kind {
            LoadgenKind::Wrk => parse_wrk(&stdout),
            LoadgenKind::CgLoad => parse_cg_load(&stdout),
        }
        .with_context(|| format!("reading the output of `{shown}`:\n{stdout}"))?;
        r.slow = slow.map(|s| Slow {
            requests: s.requests,
            p99_us: s.p99_us,
            errors: s.errors,
        });
        Ok(r)
    }
}

/// `850.00us`, `1.23ms`, `2.00s` -> microseconds.
fn wrk_time_us(s: &str) -> Option<f64> {
    let (n, scale) = if let Some(n) = s.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60e6)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e6)
    } else {
        return None;
    };
    n.parse::<f64>().ok().map(|v| v * scale)
}

/// Reads requests, req/s, p50/p99 and errors from `wrk --latency` output.
pub(crate) fn parse_wrk(out: &str) -> Result<LoadResult> {
    let mut r = LoadResult::default();
    let (mut have_rps, mut have_reqs) = (false, false);
    for line in out.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", v] => {
                r.rps = v.parse().context("Requests/sec")?;
                have_rps = true;
            }
            [n, "requests", "in", ..] => {
                r.requests = n.parse().context("requests")?;
                have_reqs = true;
            }
            ["50%", v] => r.p50_us = wrk_time_us(v).context("50% latency")?,
            ["99%", v] => r.p99_us = wrk_time_us(v).context("99% latency")?,
            ["Socket", "errors:", rest @ ..] => {
                r.errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => r.errors += n.parse::<u64>()?,
            _ => {}
        }
    }
    if !(have_rps && have_reqs) {
        bail!("no `Requests/sec:` or `N requests in` line");
    }
    Ok(r)
}

/// Reads the same figures from `cg-load --json`.
pub(crate) fn parse_cg_load(out: &str) -> Result<LoadResult> {
    let v: serde_json::Value = serde_json::from_str(out).context("cg-load JSON")?;
    let num = |ptr: &str| {
        v.pointer(ptr)
            .and_then(serde_json::Value::as_f64)
            .with_context(|| format!("cg-load JSON has no {ptr}"))
    };
    Ok(LoadResult {
        requests: num("/requests")? as u64,
        rps: num("/rps")?,
        p50_us: num("/latency_us/p50")?,
        p99_us: num("/latency_us/p99")?,
        errors: num("/errors_total")? as u64,
        resumed: None,
        slow: None,
    })
}

/// `cg-handshake`: every connection a new TLS handshake, full or (with `resume`) resumed
/// from the ticket of the connection before, against a pinned certificate.
pub(crate) struct Handshakes {
    /// Path of cg-handshake (built by the comparison).
    pub(crate) bin: PathBuf,
    /// The certificate every proxy serves (PEM).
    pub(crate) cert: PathBuf,
    /// SNI and Host header.
    pub(crate) server_name: &'static str,
    /// The one TLS 1.3 suite offered.
    pub(crate) suite: String,
    /// Resume sessions.
    pub(crate) resume: bool,
}

impl Handshakes {
    /// Runs and returns the whole report (negotiated parameters included).
    pub(crate) fn report(
        &self,
        url: &str,
        clients: usize,
        duration: Duration,
    ) -> Result<serde_json::Value> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg(url)
            .arg("--cert")
            .arg(&self.cert)
            .args(["--server-name", self.server_name, "--suite", &self.suite])
            .args(["--json", "-c", &clients.to_string()])
            .arg("-d")
            .arg(format!("{}ms", duration.as_millis()));
        if self.resume {
            cmd.arg("--resume");
        }
        let shown = display(&cmd);
        let out = cmd
            .output()
            .with_context(|| format!("could not start `{shown}`"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        // Exit 1: no connection completed; the JSON says why.
        if !(out.status.success() || out.status.code() == Some(1)) {
            bail!(
                "`{shown}` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        serde_json::from_str(&stdout)
            .with_context(|| format!("reading the output of `{shown}`:\n{stdout}"))
    }
}

impl Load for Handshakes {
    fn run(&self, url: &str, connections: usize, duration: Duration) -> Result<LoadResult> {
        parse_cg_handshake(&self.report(url, connections, duration)?)
    }
}

/// Reads handshakes (as requests), their rate, latency, errors and resumptions from
/// `cg-handshake --json`.
pub(crate) fn parse_cg_handshake(v: &serde_json::Value) -> Result<LoadResult> {
    let num = |ptr: &str| {
        v.pointer(ptr)
            .and_then(serde_json::Value::as_f64)
            .with_context(|| format!("cg-handshake JSON has no {ptr}"))
    };
    Ok(LoadResult {
        requests: num("/connections")? as u64,
        rps: num("/rate")?,
        p50_us: num("/latency_us/p50")?,
        p99_us: num("/latency_us/p99")?,
        errors: num("/errors_total")? as u64,
        resumed: Some(num("/resumed")? as u64),
        slow: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK: &str = "Running 5s test @ http://127.0.0.1:8080/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.24ms  311.22us  14.51ms   93.35%
    Req/Sec    51.98k     2.47k   55.11k    82.00%
  Latency Distribution
     50%    1.20ms
     75%    1.30ms
     90%    1.45ms
     99%    2.26ms
  258669 requests in 5.00s, 40.21MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  51722.30
Transfer/sec:      8.04MB
";

    #[test]
    fn parses_wrk() {
        let r = parse_wrk(WRK).expect("valid");
        assert_eq!(r.requests, 258_669);
        assert!((r.rps - 51_722.30).abs() < 1e-6);
        assert!((r.p50_us - 1_200.0).abs() < 1e-6);
        assert!((r.p99_us - 2_260.0).abs() < 1e-6);
        assert_eq!(r.errors, 7);
        assert!(parse_wrk("nothing").is_err());
    }

    #[test]
    fn wrk_units() {
        assert_eq!(wrk_time_us("850.00us"), Some(850.0));
        assert_eq!(wrk_time_us("2.00s"), Some(2e6));
        assert_eq!(wrk_time_us("1.00m"), Some(60e6));
        assert_eq!(wrk_time_us("12"), None);
    }

    #[test]
    fn parses_cg_load() {
        let json = r#"{"requests": 10, "rps": 5.5, "latency_us": {"p50": 100, "p99": 250},
            "errors_total": 1}"#;
        let r = parse_cg_load(json).expect("valid");
        assert_eq!((r.requests, r.errors), (10, 1));
        assert_eq!((r.rps, r.p50_us, r.p99_us), (5.5, 100.0, 250.0));
    }

    /// The report of the mixed shape's slow clients, as `cg-load -c 256 -R 2560 --json`
    /// prints it.
    #[test]
    fn parses_cg_load_open_loop() {
        let json = r#"{"url": "http://127.0.0.1:1/", "mode": "open", "rate": 2560.0,
            "connections": 256, "threads": 1, "elapsed_s": 1.0, "requests": 2555,
            "rps": 2555.0, "latency_us": {"p50": 180, "p90": 300, "p99": 1200, "p999": 4000,
            "max": 9000, "mean": 210.5}, "status": {"2xx": 2555}, "errors": {"timeout": 3},
            "errors_total": 3, "variants": null}"#;
        let r = parse_cg_load(json).expect("valid");
        assert_eq!((r.requests, r.errors, r.p99_us), (2555, 3, 1200.0));
        assert!(parse_cg_load(r#"{"requests": 1}"#).is_err());
    }

    #[test]
    fn shape_settings() {
        let dir = std::env::temp_dir().join(format!("xtask-loadgen-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let base = Loadgen::new(LoadgenKind::Wrk, PathBuf::from("cg-load"), None);
        let up = base.for_shape(Shape::Upload1m, &dir).expect("wrk script");
        let script = up.script.clone().expect("upload script");
        let text = std::fs::read_to_string(&script).expect("written");
        assert!(text.contains("string.rep(\"x\", 1048576)"), "{text}");
        assert_eq!(up.slow, None);
        let churn = base.for_shape(Shape::Churn, &dir).expect("churn");
        assert_eq!(churn.headers, ["Connection: close"]);
        assert_eq!(
            base.for_shape(Shape::Mixed, &dir).expect("mixed").slow,
            Some((256, 2560))
        );
        let cg = Loadgen::new(
            LoadgenKind::CgLoad,
            PathBuf::from("cg-load"),
            Some("1".into()),
        );
        assert!(cg.for_shape(Shape::Upload16m, &dir).is_err());
        let cmd = cg.command(Path::new("wrk"));
        assert_eq!(display(&cmd), "taskset -c 1 wrk");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn parses_cg_handshake() {
        let json = r#"{"connections": 900, "rate": 450.5, "full": 8, "resumed": 892,
            "latency_us": {"p50": 900, "p99": 4000}, "errors_total": 2}"#;
        let v = serde_json::from_str(json).expect("JSON");
        let r = parse_cg_handshake(&v).expect("valid");
        assert_eq!((r.requests, r.errors, r.resumed), (900, 2, Some(892)));
        assert_eq!((r.rps, r.p50_us, r.p99_us), (450.5, 900.0, 4000.0));
    }
}
