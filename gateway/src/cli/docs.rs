//! The command line as documentation: shell completion scripts (`canarygate completions
//! SHELL`) and man pages (the hidden `canarygate manpage DIR`), both generated from the
//! same clap definition that parses the flags, so they cannot drift from it.
//! `cargo xtask package` runs both on the binary it puts in the `.deb`.

use std::fs;
use std::path::Path;

use anyhow::Context as _;
use clap::CommandFactory as _;

use super::Cli;

/// Writes the completion script for `shell` to stdout.
pub(super) fn completions(shell: clap_complete::Shell) {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "canarygate", &mut std::io::stdout());
}

/// Writes `canarygate.1` and `canarygate-SUBCOMMAND.1` for every visible subcommand
/// into `dir`, creating it when missing.
pub(super) fn manpages(dir: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("cannot write the man pages into {}", dir.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_page_per_visible_subcommand() {
        let dir = std::env::temp_dir().join(format!("canarygate-man-{}", std::process::id()));
        manpages(&dir).unwrap();
        let mut names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let run = fs::read_to_string(dir.join("canarygate-run.1")).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            names,
            [
                "canarygate-check-config.1",
                "canarygate-completions.1",
                "canarygate-ctl.1",
                "canarygate-demo.1",
                "canarygate-fleet-export.1",
                "canarygate-fleet-import.1",
                "canarygate-fleet.1",
                "canarygate-run.1",
                "canarygate.1"
            ]
        );
        // roff escapes the dashes of flags.
        assert!(run.contains(r"\-\-drain\-timeout"), "{run}");
    }
}
