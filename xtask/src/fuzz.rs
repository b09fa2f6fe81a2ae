//! `cargo xtask fuzz [--seconds N]`: runs every cargo-fuzz (libFuzzer) target in `fuzz/`
//! for N seconds each, starting from the seed corpus committed in `fuzz/seeds/TARGET/`
//! (new inputs go to `target/fuzz-corpus/TARGET/`, crashes to `fuzz/artifacts/TARGET/`),
//! and prints each target's executions. `cargo xtask test` runs it as a short smoke.
//!
//! Needs the nightly toolchain (installed for the eBPF build) and cargo-fuzz, which is
//! installed with `cargo install cargo-fuzz --locked` when missing. The targets build the
//! gateway without its eBPF object (`AYA_BUILD_SKIP=1`): the parsers do not need it. They
//! still build etcd-client, so `protoc` is installed first ([`crate::tools::ensure_build`]).

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::step::{display, run, succeeds};

/// The fuzz targets, as named in `fuzz/Cargo.toml`.
pub(crate) const TARGETS: [&str; 7] = [
    "request_head",
    "response_head",
    "chunked",
    "config_file",
    "admin_command",
    "request_differential",
    "h2_request",
];

/// Seconds per target in the `cargo xtask test` smoke.
pub(crate) const SMOKE_SECONDS: u32 = 20;

/// `rustup run nightly cargo ...` from the workspace root.
fn nightly_cargo(root: &Path) -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo"]).current_dir(root);
    cmd.env_remove("RUSTUP_TOOLCHAIN").env_remove("CARGO");
    cmd
}

/// Installs protoc (the targets build the gateway) and cargo-fuzz when `cargo fuzz` is
/// not there.
pub(crate) fn ensure(root: &Path) -> Result<()> {
    crate::tools::ensure_build()?;
    if succeeds(nightly_cargo(root).args(["fuzz", "--version"])) {
        return Ok(());
    }
    let mut install = nightly_cargo(root);
    install.args(["install", "cargo-fuzz", "--locked"]);
    eprintln!("xtask: installing cargo-fuzz: {}", display(&install));
    run(&mut install).context("could not install cargo-fuzz")?;
    if !succeeds(nightly_cargo(root).args(["fuzz", "--version"])) {
        bail!("`cargo install cargo-fuzz` succeeded but `cargo fuzz --version` still fails");
    }
    Ok(())
}

/// Runs every target for `seconds`; fails on the first crash, naming its artifact.
pub(crate) fn run_all(root: &Path, seconds: u32) -> Result<()> {
    ensure(root)?;
    for target in TARGETS {
        let corpus = crate::target_dir(root).join("fuzz-corpus").join(target);
        std::fs::create_dir_all(&corpus).with_context(|| format!("create {}", corpus.display()))?;
        let seeds = root.join("fuzz/seeds").join(target);
        let mut cmd = nightly_cargo(root);
        cmd.env("AYA_BUILD_SKIP", "1")
            .args(["fuzz", "run", target])
            .arg(&corpus)
            .arg(&seeds)
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg("-print_final_stats=1");
        eprintln!("xtask: fuzz {target} for {seconds} s: {}", display(&cmd));
        let out = cmd
            .output()
            .with_context(|| format!("could not run cargo fuzz for {target}"))?;
        let log = String::from_utf8_lossy(&out.stderr);
        let runs = log
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
            .map_or("?", str::trim)
            .to_owned();
        if !out.status.success() {
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "fuzz target {target} failed after {runs} executions (artifact in fuzz/artifacts/{target}/):\n{}",
                tail.join("\n")
            );
        }
        println!("xtask: fuzz {target}: {runs} executions in {seconds} s, no crash");
    }
    Ok(())
}
