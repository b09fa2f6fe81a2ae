//! `cargo xtask test` / `cargo xtask ci`: the one check that must pass before merging.
//! Tools first, then fmt, clippy, the gateway binary (the end-to-end tests start it from
//! `target/ci/canarygate`) and the tests, all with the `ci` profile (release speed,
//! debug assertions and overflow checks on), then the HTTP/1.1 e2e modules again over
//! TLS. Stops at the first failing step.

use std::ffi::OsString;
use std::path::Path;

use anyhow::Result;

use crate::step::Plan;
use crate::{cargo, fuzz, tools};

/// The e2e modules that run a second time over TLS: everything about HTTP/1.1 on the
/// client connection (framing, bodies, streaming, upgrades, bad input, upstream faults,
/// real clients and servers, changes under load, the split), and what must not change
/// with it (kernel accounting on TLS sockets, endpoint health and drain, metrics, logs).
const TLS_MODULES: [&str; 13] = [
    "framing::",
    "bodies::",
    "protocol::",
    "bad_input::",
    "faults::",
    "realservers::",
    "thirdparty::",
    "hitless::",
    "split::",
    "kernel::",
    "health::",
    "metrics::",
    "accesslog::",
];

/// Runs every step; `test_args` go to the test runner after `--`.
pub(crate) fn run(root: &Path, test_args: &[OsString]) -> Result<()> {
    let mut plan = Plan::new(7);
    plan.step(
        "tools",
        "rustfmt, clippy, protoc, nginx-light, curl, openssl, chromium, etcd, node, gunicorn, \
         eBPF toolchain",
        || tools::ensure(root),
    )?;
    plan.command("fmt", cargo(root).args(["fmt", "--all", "--", "--check"]))?;
    plan.command(
        "clippy",
        cargo(root).args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--profile",
            "ci",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    plan.command(
        "build",
        cargo(root).args(["build", "-p", "gateway", "--profile", "ci"]),
    )?;
    let mut test = cargo(root);
    test.args(["test", "--workspace", "--profile", "ci"]);
    if !test_args.is_empty() {
        test.arg("--").args(test_args);
    }
    plan.command("test", &mut test)?;
    // The HTTP/1.1 behaviour tests once more with the harness speaking TLS to every
    // gateway it starts (https://, wss://; certificates from a test CA).
    let mut over_tls = cargo(root);
    over_tls
        .env("CANARYGATE_E2E_TLS", "1")
        .args([
            "test",
            "-p",
            "tests",
            "--profile",
            "ci",
            "--test",
            "e2e",
            "--",
        ])
        .args(TLS_MODULES);
    if !test_args.is_empty() {
        over_tls.args(test_args);
    }
    plan.command("test over TLS", &mut over_tls)?;
    plan.step(
        "fuzz",
        "a short smoke of every cargo-fuzz target (cargo xtask fuzz)",
        || fuzz::run_all(root, fuzz::SMOKE_SECONDS),
    )?;
    plan.finish();
    Ok(())
}
