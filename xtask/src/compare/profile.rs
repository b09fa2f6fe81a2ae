//! `cargo xtask compare --callgrind`: canarygate (1 worker) under valgrind's callgrind,
//! instrumentation switched on only for a fixed number of requests after a warm-up, so
//! the instruction count divides cleanly into instructions per request. Writes the raw
//! profile and `callgrind_annotate`'s report (self cost, then inclusive) to
//! `target/compare/`.
//!
//! callgrind counts user-space instructions only: the kernel's share (syscalls, TCP)
//! is not in the figure. The gateway runs with `--io-driver epoll` unless `--io-driver`
//! says otherwise: under valgrind 3.19 an io_uring worker never gets to listening
//! (valgrind does not follow the ring), so the profile covers everything but the
//! driver layer of the production io_uring path.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use super::loadgen::parse_cg_load;
use super::procs::{self, Upstreams};
use super::{CompareArgs, NGINX, VALGRIND, driver_args, setup};
use crate::step::{Plan, display, run as run_cmd};

/// Connections of the profiled load.
const CONNECTIONS: &str = "16";
/// Requests sent before instrumentation starts.
const WARMUP_REQUESTS: &str = "2000";
/// Functions shown in each list.
const TOP: usize = 25;

/// Runs the profile.
pub(crate) fn run(root: &Path, args: &CompareArgs) -> Result<()> {
    let mut plan = Plan::new(6);
    let setup = setup(root, args, &mut plan, &[NGINX, VALGRIND])?;
    let mut upstreams = None;
    plan.step("upstreams", "two nginx, 1 worker each", || {
        upstreams = Some(Upstreams::start(&setup.run)?);
        Ok(())
    })?;
    let up = upstreams.context("upstreams did not start")?;
    let out_file = setup.out.join("callgrind.out");
    let _ = fs::remove_file(&out_file);
    let wrap = vec![
        "valgrind".to_owned(),
        "--tool=callgrind".to_owned(),
        "--instr-atstart=no".to_owned(),
        format!("--callgrind-out-file={}", out_file.display()),
    ];
    let driver = if args.io_driver.is_some() {
        driver_args(args)
    } else {
        vec!["--io-driver", "epoll"]
    };
    let mut gateway = None;
    plan.step(
        "gateway",
        "canarygate --workers 1 under callgrind, warmed up",
        || {
            let (p, port) = procs::canarygate(
                &setup.run,
                &setup.canarygate,
                1,
                &up,
                &wrap,
                &driver,
                Duration::from_secs(60),
            )?;
            let url = format!("http://127.0.0.1:{port}/");
            run_cmd(
                Command::new(&setup.cg_load)
                    .args([
                        "-q",
                        "-c",
                        CONNECTIONS,
                        "-n",
                        WARMUP_REQUESTS,
                        "--timeout",
                        "10s",
                    ])
                    .arg(&url)
                    .stdout(Stdio::null()),
            )?;
            gateway = Some((p, url));
            Ok(())
        },
    )?;
    let (mut gw, url) = gateway.context("gateway did not start")?;
    let pid = gw.pid().to_string();
    let mut requests = 0u64;
    plan.step(
        "load",
        &format!(
            "{} requests over {CONNECTIONS} connections, instrumented",
            args.profile_requests
        ),
        || {
            run_cmd(
                Command::new("callgrind_control")
                    .args(["-i", "on", &pid])
                    .stdout(Stdio::null()),
            )?;
            let mut load = Command::new(&setup.cg_load);
            load.args(["-q", "--json", "-c", CONNECTIONS, "--timeout", "10s", "-n"])
                .arg(args.profile_requests.to_string())
                .args([
                    "--variant-header",
                    procs::VARIANT_HEADER,
                    "--expect-canary-percent",
                    "5",
                ])
                .arg(&url);
            let shown = display(&load);
            let out = load
                .output()
                .with_context(|| format!("could not start `{shown}`"))?;
            run_cmd(
                Command::new("callgrind_control")
                    .args(["-i", "off", &pid])
                    .stdout(Stdio::null()),
            )?;
            let r = parse_cg_load(&String::from_utf8_lossy(&out.stdout))?;
            if r.errors > 0 {
                bail!("{} of the profiled requests failed", r.errors);
            }
            requests = r.requests;
            eprintln!(
                "xtask:   {} requests at {:.0} req/s under callgrind, p99 {:.0} µs",
                r.requests, r.rps, r.p99_us
            );
            Ok(())
        },
    )?;
    gw.stop();
    plan.step("report", "callgrind_annotate -> target/compare/callgrind.txt", || {
        if !out_file.is_file() {
            bail!("callgrind wrote no {}", out_file.display());
        }
        let annotate = |inclusive: bool| -> Result<String> {
            let out = Command::new("callgrind_annotate")
                .arg(format!("--inclusive={}", if inclusive { "yes" } else { "no" }))
                .arg(&out_file)
                .output()
                .context("could not run callgrind_annotate")?;
            if !out.status.success() {
                bail!("callgrind_annotate failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        };
        let (self_cost, inclusive) = (annotate(false)?, annotate(true)?);
        let total = program_total(&self_cost).context("no PROGRAM TOTALS in callgrind_annotate's output")?;
        let per_req = total as f64 / requests.max(1) as f64;
        let mut text = format!(
            "canarygate --workers 1 {} under callgrind: {total} instructions (user space) for {requests} requests = {per_req:.0} instructions per request\n\n",
            driver.join(" ")
        );
        let _ = writeln!(text, "Top {TOP} functions by own instructions (per request):");
        text.push_str(&top(&self_cost, requests));
        let _ = writeln!(text, "\nTop {TOP} functions by inclusive instructions (per request):");
        text.push_str(&top(&inclusive, requests));
        fs::write(setup.out.join("callgrind.txt"), &text)?;
        fs::write(setup.out.join("callgrind-self.txt"), &self_cost)?;
        fs::write(setup.out.join("callgrind-inclusive.txt"), &inclusive)?;
        println!("{text}");
        Ok(())
    })?;
    drop(up);
    plan.finish();
    Ok(())
}

/// Parses a callgrind_annotate count such as `1,234,567`.
fn count(s: &str) -> Option<u64> {
    s.replace(',', "").parse().ok()
}

/// The `PROGRAM TOTALS` line's instruction count.
fn program_total(annotated: &str) -> Option<u64> {
    annotated
        .lines()
        .find(|l| l.contains("PROGRAM TOTALS"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(count)
}

/// The first [`TOP`] function lines, with instructions per request in front.
fn top(annotated: &str, requests: u64) -> String {
    let mut out = String::new();
    let mut in_list = false;
    let mut n = 0;
    for line in annotated.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("Ir") && trimmed.contains("file:function") {
            in_list = true;
            continue;
        }
        if !in_list || trimmed.is_empty() || trimmed.starts_with("--") {
            continue;
        }
        let mut parts = trimmed.splitn(2, ' ');
        let (Some(ir), Some(rest)) = (parts.next().and_then(count), parts.next()) else {
            continue;
        };
        // `(25.00%)` or `( 5.00%)` before the name.
        let rest = rest.trim_start();
        let name = rest
            .strip_prefix('(')
            .and_then(|r| r.split_once(')'))
            .map_or(rest, |(_, name)| name)
            .trim();
        let _ = writeln!(out, "{:>9.0}  {name}", ir as f64 / requests.max(1) as f64);
        n += 1;
        if n == TOP {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANNOTATED: &str = "--------------------------------------------------------------------------------
Ir
--------------------------------------------------------------------------------
40,000,000 (100.0%)  PROGRAM TOTALS

--------------------------------------------------------------------------------
Ir                  file:function
--------------------------------------------------------------------------------
10,000,000 (25.00%)  ???:httparse::parse_headers [/x/canarygate]
 2,000,000 ( 5.00%)  ./string/../sysdeps/x86_64/multiarch/memmove-vec-unaligned-erms.S:__memcpy_avx_unaligned_erms [/usr/lib/x86_64-linux-gnu/libc.so.6]
";

    #[test]
    fn reads_callgrind_annotate() {
        assert_eq!(program_total(ANNOTATED), Some(40_000_000));
        let t = top(ANNOTATED, 10_000);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].starts_with("     1000  ???:httparse::parse_headers"),
            "{t}"
        );
        assert!(lines[1].trim_start().starts_with("200  ./string"), "{t}");
    }
}
