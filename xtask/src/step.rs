//! Numbered, timed steps. Each step is announced before it starts and reported with its
//! duration when it ends; the first failure stops the plan with an error naming the step,
//! so a red CI log says which stage broke without scrolling.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

/// A fixed number of steps run in order, with a running clock for the summary line.
pub(crate) struct Plan {
    total: usize,
    done: usize,
    started: Instant,
}

impl Plan {
    /// Starts the clock for a plan of `total` steps.
    pub(crate) fn new(total: usize) -> Self {
        Self {
            total,
            done: 0,
            started: Instant::now(),
        }
    }

    /// Runs `work` as the next step; `detail` says what it does in the progress line.
    pub(crate) fn step(
        &mut self,
        name: &str,
        detail: &str,
        work: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        self.done += 1;
        let tag = format!("[{}/{}] {name}", self.done, self.total);
        eprintln!("xtask: {tag}: {detail}");
        let started = Instant::now();
        work().with_context(|| {
            format!("step `{name}` failed after {}", seconds(started.elapsed()))
        })?;
        eprintln!("xtask: {tag} ok in {}", seconds(started.elapsed()));
        Ok(())
    }

    /// Runs `cmd` as the next step; the step fails unless the command exits 0.
    pub(crate) fn command(&mut self, name: &str, cmd: &mut Command) -> Result<()> {
        let shown = display(cmd);
        self.step(name, &shown, || run(cmd))
    }

    /// Prints the summary line once every step has passed.
    pub(crate) fn finish(self) {
        eprintln!(
            "xtask: all {} steps passed in {}",
            self.total,
            seconds(self.started.elapsed())
        );
    }
}

/// Runs `cmd` with inherited stdio and fails unless it exits 0.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let shown = display(cmd);
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

/// Whether `cmd` starts and exits 0, output discarded: a probe for an installed tool.
pub(crate) fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// The command as a user would type it; the program is shortened to its file name
/// because `$CARGO` is usually a long toolchain path.
pub(crate) fn display(cmd: &Command) -> String {
    let program = cmd.get_program();
    let program = Path::new(program).file_name().unwrap_or(program);
    std::iter::once(program)
        .chain(cmd.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

fn seconds(elapsed: Duration) -> String {
    format!("{:.1}s", elapsed.as_secs_f64())
}
