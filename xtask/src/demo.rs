//! `cargo xtask demo`: installs what the whole feature set needs (the eBPF toolchain that
//! `cargo xtask test` installs too, so the demo shows the kernel's figures, and the
//! `protoc` every gateway build needs, see [`crate::tools::ensure_build`]), builds the
//! release binary, then replaces the xtask process with `canarygate demo` so Ctrl-C and
//! the exit code belong to the gateway itself. On a fresh machine the toolchain takes a
//! few minutes (apt packages, `cargo install bpf-linker`, nightly rust-src) and the
//! release build about two; on later runs both are checks of a second or less.

use std::ffi::OsString;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, Result};

use crate::step::Plan;
use crate::{cargo, target_dir};

/// Installs protoc and the eBPF toolchain, builds `canarygate` (release) and execs
/// `canarygate demo <args>`; returns only on error.
pub(crate) fn run(root: &Path, args: &[OsString]) -> Result<()> {
    let started = Instant::now();
    let mut plan = Plan::new(3);
    plan.step(
        "build tools",
        "protobuf-compiler (protoc, for etcd-client's build script)",
        crate::tools::ensure_build,
    )?;
    plan.step(
        "eBPF toolchain",
        "nightly rust-src, bpf-linker and the kernel tools, for kernel accounting",
        crate::ebpf::ensure,
    )?;
    plan.command(
        "build",
        cargo(root).args(["build", "--release", "-p", "gateway"]),
    )?;
    let bin = target_dir(root).join("release").join("canarygate");
    eprintln!(
        "xtask: ready after {:.0} s; exec {} demo",
        started.elapsed().as_secs_f64(),
        bin.display()
    );
    let err = Command::new(&bin).arg("demo").args(args).exec();
    Err(err).with_context(|| format!("could not start `{} demo`", bin.display()))
}
