//! `cargo xtask compare --scale`: 10,000 (by default) idle keep-alive client
//! connections held open through canarygate, and its resident memory per connection.
//!
//! canarygate and cg-load both run under `prlimit --nofile=N:N`, N the hard limit
//! capped at 65,536 (raising the hard limit itself needs CAP_SYS_RESOURCE, which a
//! container may not have); a short load first warms the gateway's
//! pools and allocator so the baseline is a serving gateway, not a fresh one. Then
//! `cg-load --idle-connections N --watch-pid PID` opens the connections, one request
//! each, reads VmRSS before and with them, holds them idle, and checks each answers
//! again. The figures go to `target/compare/scale.json`.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use super::procs::{self, Upstreams};
use super::{CompareArgs, NGINX, driver_args, setup};
use crate::step::{Plan, display};

/// Descriptor limit wanted for both sides.
const NOFILE_WANTED: u64 = 65_536;
/// Descriptors each side needs beyond the connections themselves.
const NOFILE_SPARE: u64 = 1_024;

/// The hard RLIMIT_NOFILE of this process, from /proc/self/limits.
fn hard_nofile() -> Option<u64> {
    let limits = fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let hard = line.split_whitespace().nth(4)?;
    if hard == "unlimited" {
        Some(u64::MAX)
    } else {
        hard.parse().ok()
    }
}

/// Runs the scale test.
pub(crate) fn run(root: &Path, args: &CompareArgs) -> Result<()> {
    let workers = args.workers.iter().copied().max().unwrap_or(1).max(1);
    eprintln!(
        "xtask: compare --scale: {} idle connections through canarygate ({workers} workers), held {:.0} s",
        args.idle_connections,
        args.hold.as_secs_f64()
    );
    let hard = hard_nofile().unwrap_or(NOFILE_WANTED);
    let nofile = hard.min(NOFILE_WANTED);
    if nofile < args.idle_connections as u64 + NOFILE_SPARE {
        bail!(
            "{} connections need a descriptor limit of at least {}, and the hard limit here is \
             {hard}; raise it (ulimit -Hn, as root with CAP_SYS_RESOURCE) or ask for fewer \
             with --idle-connections",
            args.idle_connections,
            args.idle_connections as u64 + NOFILE_SPARE
        );
    }
    let nofile = format!("--nofile={nofile}:{nofile}");
    let mut plan = Plan::new(6);
    let setup = setup(root, args, &mut plan, &[NGINX])?;
    let mut upstreams = None;
    plan.step("upstreams", "two nginx, 1 worker each", || {
        upstreams = Some(Upstreams::start(&setup.run)?);
        Ok(())
    })?;
    let up = upstreams.context("upstreams did not start")?;
    let wrap = vec!["prlimit".to_owned(), nofile.clone(), "--".to_owned()];
    let mut gateway = None;
    plan.step(
        "gateway",
        "canarygate under prlimit, warmed up with 1 s of load",
        || {
            let (p, port) = procs::canarygate(
                &setup.run,
                &setup.canarygate,
                workers,
                &up,
                &wrap,
                &driver_args(args),
                Duration::from_secs(10),
            )?;
            let mut warm = Command::new(&setup.cg_load);
            warm.args(["-q", "-c", "64", "-d", "1s"])
                .arg(format!("http://127.0.0.1:{port}/"));
            crate::step::run(warm.stdout(std::process::Stdio::null()))?;
            gateway = Some((p, port));
            Ok(())
        },
    )?;
    let (mut gw, port) = gateway.context("gateway did not start")?;
    let mut report = String::new();
    plan.step(
        "idle connections",
        &format!("{} connections held {:?}", args.idle_connections, args.hold),
        || {
            let mut cmd = Command::new("prlimit");
            cmd.args([nofile.as_str(), "--"])
                .arg(&setup.cg_load)
                .arg(format!("http://127.0.0.1:{port}/"))
                .args(["--idle-connections", &args.idle_connections.to_string()])
                .args(["-t", &workers.to_string(), "--json"])
                .arg("--hold")
                .arg(format!("{}ms", args.hold.as_millis()))
                .args(["--watch-pid", &gw.pid().to_string()]);
            let shown = display(&cmd);
            eprintln!("xtask:   {shown}");
            let out = cmd
                .stderr(std::process::Stdio::inherit())
                .output()
                .with_context(|| format!("could not start `{shown}`"))?;
            report = String::from_utf8_lossy(&out.stdout).into_owned();
            gw.check_alive()?;
            if !out.status.success() {
                bail!("`{shown}` failed ({}):\n{report}", out.status);
            }
            Ok(())
        },
    )?;
    plan.step("report", "target/compare/scale.json", || {
        fs::write(setup.out.join("scale.json"), &report)?;
        let v: serde_json::Value = serde_json::from_str(&report).context("cg-load JSON")?;
        let get = |k: &str| v.get(k).and_then(serde_json::Value::as_f64).unwrap_or(f64::NAN);
        println!(
            "scale: {} of {} idle connections opened, {} alive after {:.1} s; canarygate VmRSS {} KiB -> {} KiB: {:.0} bytes ({:.2} KiB) per idle connection",
            get("opened"),
            get("connections"),
            get("alive_after_hold"),
            get("hold_s"),
            get("rss_before_kib"),
            get("rss_open_kib"),
            get("rss_per_connection_bytes"),
            get("rss_per_connection_bytes") / 1024.0
        );
        Ok(())
    })?;
    drop(gw);
    drop(up);
    plan.finish();
    Ok(())
}
