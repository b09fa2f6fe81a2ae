//! `cargo xtask demo`: builds the release binary, then replaces the xtask process with
//! `canarygate demo` so Ctrl-C and the exit code belong to the gateway itself.

use std::ffi::OsString;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, Result};

use crate::step::Plan;
use crate::{cargo, target_dir};

/// Builds `canarygate` (release) and execs `canarygate demo <args>`; returns only on error.
pub(crate) fn run(root: &Path, args: &[OsString]) -> Result<()> {
    let mut plan = Plan::new(1);
    plan.command(
        "build",
        cargo(root).args(["build", "--release", "-p", "gateway"]),
    )?;
    let bin = target_dir(root).join("release").join("canarygate");
    eprintln!("xtask: exec {} demo", bin.display());
    let err = Command::new(&bin).arg("demo").args(args).exec();
    Err(err).with_context(|| format!("could not start `{} demo`", bin.display()))
}
