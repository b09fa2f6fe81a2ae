//! `cargo xtask`: the project's automation, reached through the alias in
//! `.cargo/config.toml` (`run --quiet --package xtask --`).
//!
//! - `cargo xtask test` (also `ci`): installs missing tools, then runs fmt, clippy, the
//!   gateway build and the whole test suite with the `ci` profile, stopping at the first
//!   failing step. `.ci/run` calls exactly this, so CI and a laptop run the same thing.
//! - `cargo xtask demo`: builds the release binary and replaces itself with
//!   `canarygate demo`.
//! - `cargo xtask fuzz [--seconds N]`: every cargo-fuzz target for N seconds each.
//! - `cargo xtask compare`: canarygate against nginx and HAProxy on this machine (also
//!   `--scale` for 10,000 idle connections, `--callgrind` for a profile).
//!
//! Every external program is run with `std::process::Command` and its exit status
//! checked; failures come back as `anyhow` errors that name the step.

mod ci;
mod compare;
mod demo;
mod ebpf;
mod fuzz;
mod step;
mod tools;

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};

/// Command line of `cargo xtask`.
#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "canarygate project automation"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

/// The tasks `cargo xtask` knows.
#[derive(Debug, Subcommand)]
enum Task {
    /// Install missing tools, then fmt, clippy, build and every test (`ci` profile).
    ///
    /// Tools: rustup components rustfmt and clippy, Debian packages nginx-light and curl.
    /// Steps: `cargo fmt --all -- --check`, `cargo clippy --workspace --all-targets
    /// --profile ci -- -D warnings`, `cargo build -p gateway --profile ci`,
    /// `cargo test --workspace --profile ci [-- ARGS]`. Stops at the first failure.
    #[command(visible_alias = "ci")]
    Test {
        /// Passed to the test runner after `--`, e.g. `cargo xtask test -- --nocapture`.
        #[arg(last = true)]
        args: Vec<OsString>,
    },
    /// Install what `cargo xtask test` needs and nothing else (its first step alone).
    Tools,
    /// Build `canarygate` in release mode and run `canarygate demo`.
    ///
    /// The demo listens on 127.0.0.1:8080 by default, with built-in stable and canary
    /// upstreams answering "v1" and "v2".
    Demo {
        /// Passed to `canarygate demo`, e.g. `cargo xtask demo -- --listen 127.0.0.1:9090`.
        #[arg(last = true)]
        args: Vec<OsString>,
    },
    /// Compare canarygate with nginx and HAProxy: req/s, p50/p99, proxy CPU per request.
    ///
    /// Installs nginx-light, haproxy and wrk if missing, builds canarygate and cg-load
    /// (release), starts two nginx upstreams, then measures each proxy with 1 and 2
    /// workers at 16, 64 and 256 connections, alternating, 3 rounds of 5 s, plus the
    /// upstream directly. Writes target/compare/results.json and results.md.
    /// `--tls`: the proxies terminate TLS; full and resumed handshakes/s and keep-alive
    /// req/s over TLS, with CPU per handshake or request (target/compare/tls.{json,md}).
    /// `--scale`: RSS per idle connection with 10,000 connections held through canarygate.
    /// `--callgrind`: instructions per request and the top functions of canarygate.
    Compare(Box<compare::CompareArgs>),
    /// Run every cargo-fuzz target in `fuzz/` (request and response heads, chunked
    /// decoder, config file, admin commands, and a differential against httparse),
    /// starting from the seeds in `fuzz/seeds/`. Installs cargo-fuzz when missing.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u32,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One line naming the failed step; a backtrace of xtask itself (anyhow captures one
    // when RUST_BACKTRACE is set for the tests) would only bury it.
    match run(cli.task) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(task: Task) -> Result<()> {
    let root = workspace_root()?;
    match task {
        Task::Test { args } => ci::run(&root, &args),
        Task::Tools => tools::ensure(&root),
        Task::Demo { args } => demo::run(&root, &args),
        Task::Compare(args) => compare::run(&root, &args),
        Task::Fuzz { seconds } => fuzz::run_all(&root, seconds),
    }
}

/// The workspace root: the parent of this crate's directory.
fn workspace_root() -> Result<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .context("xtask's manifest directory has no parent, so the workspace root is unknown")
}

/// A `cargo` command run from the workspace root, using the same cargo (and so the same
/// toolchain) that started xtask.
fn cargo(root: &Path) -> Command {
    let program = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut cmd = Command::new(program);
    cmd.current_dir(root);
    cmd
}

/// Where cargo puts build output: `$CARGO_TARGET_DIR` when set (relative to the
/// workspace root, where xtask runs cargo), else `<root>/target`.
fn target_dir(root: &Path) -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    }
}
