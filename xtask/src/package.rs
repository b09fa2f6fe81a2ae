//! `cargo xtask package`: the Debian package, built with plain `dpkg-deb --build` from
//! a staging tree (no cargo-deb to compile).
//!
//! What goes in comes from two places: `deploy/debian/` (the systemd unit, the default
//! configuration, the sysusers.d entry and the maintainer scripts, all written by hand)
//! and the packaged binary itself, which writes its own man pages (`canarygate manpage
//! DIR`) and shell completions (`canarygate completions SHELL`) from the clap definition
//! that parses its flags, and says its version (`canarygate --version`). So the page,
//! the completions and the version in the control file always describe the very binary
//! in the package, and xtask needs no dependency on the gateway crate.
//!
//! By default the binary is `cargo build --release`'s; `--binary PATH` packages another
//! one (the end-to-end test packages `target/ci/canarygate`, already built).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail, ensure};

use crate::step::{display, run};
use crate::tools::{Package, ensure_packages};

/// Flags of `cargo xtask package`.
#[derive(Debug, clap::Args)]
pub(crate) struct PackageArgs {
    /// Package this binary instead of building `--release` (e.g. target/ci/canarygate).
    #[arg(long, value_name = "PATH")]
    binary: Option<PathBuf>,
    /// Directory for the .deb (default: target/package).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

/// Debian package name.
const NAME: &str = "canarygate";

/// Maintainer field of the control file.
const MAINTAINER: &str = "canarygate developers <canarygate@users.noreply.github.com>";

/// `deploy/debian/FILE` -> path in the package, mode. The configuration is also listed in
/// `DEBIAN/conffiles`, so dpkg keeps an administrator's edits across upgrades.
const FILES: [(&str, &str, u32); 3] = [
    ("canarygate.toml", "etc/canarygate/canarygate.toml", 0o644),
    (
        "canarygate.service",
        "lib/systemd/system/canarygate.service",
        0o644,
    ),
    (
        "canarygate.sysusers",
        "usr/lib/sysusers.d/canarygate.conf",
        0o644,
    ),
];

/// The conffiles: every file under `/etc`.
const CONFFILES: &str = "/etc/canarygate/canarygate.toml\n";

/// Maintainer scripts in `deploy/debian/`, copied to `DEBIAN/`.
const SCRIPTS: [&str; 3] = ["postinst", "prerm", "postrm"];

/// `clap_complete` shell name -> where Debian's bash-completion, zsh and fish look.
const COMPLETIONS: [(&str, &str); 3] = [
    ("bash", "usr/share/bash-completion/completions/canarygate"),
    ("zsh", "usr/share/zsh/vendor-completions/_canarygate"),
    (
        "fish",
        "usr/share/fish/vendor_completions.d/canarygate.fish",
    ),
];

/// Builds the package and prints its path on stdout (the last line).
pub(crate) fn run_package(root: &Path, args: &PackageArgs) -> Result<()> {
    // dpkg-shlibdeps computes Depends from the libraries the binary links.
    ensure_packages(&[Package {
        name: "dpkg-dev",
        program: "/usr/bin/dpkg-shlibdeps",
    }])?;
    let binary = if let Some(b) = &args.binary {
        b.clone()
    } else {
        crate::tools::ensure_build()?;
        let mut build = crate::cargo(root);
        build.args(["build", "--release", "-p", "gateway", "--bin", NAME]);
        eprintln!("xtask: {}", display(&build));
        run(&mut build).context("the release build failed")?;
        crate::target_dir(root).join("release").join(NAME)
    };
    ensure!(
        binary.is_file(),
        "{} is not a file (build it, or pass --binary)",
        binary.display()
    );
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| crate::target_dir(root).join("package"));
    fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    // Per process, so two packagings into one directory do not share a tree.
    let stage = out.join(format!(".stage-{}", std::process::id()));
    let _ = fs::remove_dir_all(&stage);
    let result = build(root, &binary, &stage, &out);
    let _ = fs::remove_dir_all(&stage);
    let deb = result?;
    println!("{}", deb.display());
    Ok(())
}

/// Fills `stage` and runs `dpkg-deb --build` into `out`; returns the .deb's path.
fn build(root: &Path, binary: &Path, stage: &Path, out: &Path) -> Result<PathBuf> {
    let version = binary_version(binary)?;
    let arch = capture(Command::new("dpkg").arg("--print-architecture"))?;
    let arch = arch.trim();

    let bin = stage.join("usr/bin").join(NAME);
    install_file(binary, &bin, 0o755)?;
    // The ci and release profiles keep line tables for backtraces; Debian ships
    // binaries without them (a -dbgsym package would carry them).
    let mut strip = Command::new("objcopy");
    strip.arg("--strip-debug").arg(&bin);
    run(&mut strip).context("cannot strip the binary (objcopy is in binutils)")?;

    let debian = root.join("deploy/debian");
    for (file, dest, mode) in FILES {
        install_file(&debian.join(file), &stage.join(dest), mode)?;
    }
    let doc = stage.join("usr/share/doc").join(NAME);
    install_file(&root.join("README.md"), &doc.join("README.md"), 0o644)?;
    write_file(&doc.join("copyright"), COPYRIGHT.as_bytes(), 0o644)?;

    man_pages(binary, &stage.join("usr/share/man/man1"))?;
    for (shell, dest) in COMPLETIONS {
        let script = capture(Command::new(binary).args(["completions", shell]))?;
        ensure!(
            !script.is_empty(),
            "`canarygate completions {shell}` printed nothing"
        );
        write_file(&stage.join(dest), script.as_bytes(), 0o644)?;
    }

    let control_dir = stage.join("DEBIAN");
    for script in SCRIPTS {
        install_file(&debian.join(script), &control_dir.join(script), 0o755)?;
    }
    write_file(&control_dir.join("conffiles"), CONFFILES.as_bytes(), 0o644)?;
    let depends = shlib_depends(&bin, stage)?;
    open_dirs(stage)?;
    let control = control_file(&version, arch, &depends, installed_size_kib(stage)?);
    write_file(&control_dir.join("control"), control.as_bytes(), 0o644)?;

    let deb = out.join(format!("{NAME}_{version}_{arch}.deb"));
    let mut pack = Command::new("dpkg-deb");
    // zstd: 0.2 s where the default xz takes 10 s on this binary, for a 30 % larger
    // file. Every dpkg that can install it reads zstd (>= 1.21.18: Debian 12, Ubuntu
    // 21.10); older systems lack the glibc 2.34 that Depends asks for anyway.
    pack.args(["--root-owner-group", "-Zzstd", "--build"])
        .arg(stage)
        .arg(&deb);
    let shown = display(&pack);
    let output = pack
        .output()
        .with_context(|| format!("cannot run `{shown}`"))?;
    if !output.status.success() {
        bail!(
            "`{shown}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    eprintln!("xtask: built {}", deb.display());
    Ok(deb)
}

/// The version `canarygate --version` prints (`canarygate 0.1.0`): the gateway crate's.
fn binary_version(binary: &Path) -> Result<String> {
    let text = capture(Command::new(binary).arg("--version"))?;
    let version = text
        .trim()
        .strip_prefix("canarygate ")
        .with_context(|| format!("unexpected `canarygate --version` output: {text:?}"))?;
    ensure!(
        !version.is_empty()
            && version
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".+~-".contains(c)),
        "{version:?} is not a Debian version"
    );
    Ok(version.to_owned())
}

/// `canarygate manpage` into a scratch directory, then each page gzipped (`-n`: no
/// name or time stamp inside, so the same binary gives the same bytes) into `man1`.
fn man_pages(binary: &Path, man1: &Path) -> Result<()> {
    let scratch = man1.with_file_name(".man-pages");
    let mut generate = Command::new(binary);
    generate.arg("manpage").arg(&scratch);
    run(&mut generate)?;
    fs::create_dir_all(man1)?;
    let mut pages = 0;
    for entry in fs::read_dir(&scratch)? {
        let page = entry?.path();
        let name = page.file_name().map(|n| n.to_string_lossy().into_owned());
        let Some(name) = name.filter(|n| n.ends_with(".1")) else {
            continue;
        };
        let mut gzip = Command::new("gzip");
        gzip.args(["-9", "-n", "-c"]).arg(&page);
        let shown = display(&gzip);
        let output = gzip
            .output()
            .with_context(|| format!("cannot run `{shown}`"))?;
        ensure!(
            output.status.success(),
            "`{shown}` failed ({})",
            output.status
        );
        write_file(&man1.join(format!("{name}.gz")), &output.stdout, 0o644)?;
        pages += 1;
    }
    fs::remove_dir_all(&scratch)?;
    ensure!(pages > 0, "`canarygate manpage` wrote no page");
    Ok(())
}

/// `Depends` from `dpkg-shlibdeps` (the libraries `bin` links and the symbol versions
/// it uses). dpkg-shlibdeps reads `debian/control`, so it runs in a scratch source tree
/// beside `stage` that holds only that.
fn shlib_depends(bin: &Path, stage: &Path) -> Result<String> {
    let source = stage.with_extension("src");
    let _ = fs::remove_dir_all(&source);
    write_file(
        &source.join("debian/control"),
        format!("Source: {NAME}\n\nPackage: {NAME}\nArchitecture: any\n").as_bytes(),
        0o644,
    )?;
    let bin = fs::canonicalize(bin)?;
    let result = capture(
        Command::new("dpkg-shlibdeps")
            .args(["-O", "-e"])
            .arg(&bin)
            .current_dir(&source),
    );
    let _ = fs::remove_dir_all(&source);
    let text = result?;
    let depends = text
        .lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .with_context(|| format!("dpkg-shlibdeps printed no shlibs:Depends: {text:?}"))?;
    Ok(depends.trim().to_owned())
}

/// The `DEBIAN/control` text.
fn control_file(version: &str, arch: &str, depends: &str, installed_kib: u64) -> String {
    format!(
        "Package: {NAME}\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: {MAINTAINER}\n\
         Installed-Size: {installed_kib}\n\
         Depends: {depends}\n\
         Section: net\n\
         Priority: optional\n\
         Description: L7 load balancer for canary deployments (io_uring)\n \
         canarygate sends an exact share of HTTP/1.1 traffic to a canary deployment\n \
         and keeps everything about that share separate: metrics, access logs,\n \
         kernel-level TCP accounting (eBPF), health and a kill switch. Shares change\n \
         at run time through an admin socket (canarygate ctl) without dropping a\n \
         request; rollouts step the share up while a judge compares canary and stable.\n \
         .\n \
         This package runs it as canarygate.service (Type=notify, its own user,\n \
         hardened) with /etc/canarygate/canarygate.toml.\n"
    )
}

/// Sum of the file sizes under `dir` (outside `DEBIAN/`), in KiB rounded up, as
/// `Installed-Size` wants.
fn installed_size_kib(dir: &Path) -> Result<u64> {
    fn walk(dir: &Path, total: &mut u64) -> Result<()> {
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                if entry.file_name() != "DEBIAN" {
                    walk(&entry.path(), total)?;
                }
            } else {
                *total += meta.len().div_ceil(1024);
            }
        }
        Ok(())
    }
    let mut total = 0;
    walk(dir, &mut total)?;
    Ok(total)
}

/// Sets every directory under `dir` (and `dir`) to 0755 whatever the umask was: dpkg
/// installs directories with the modes they have in the package, and refuses a
/// `DEBIAN/` that others cannot read.
fn open_dirs(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot set the mode of {}", dir.display()))?;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            open_dirs(&entry.path())?;
        }
    }
    Ok(())
}

/// Copies `from` to `to` (parents made 0755) with `mode`, whatever the umask.
fn install_file(from: &Path, to: &Path, mode: u32) -> Result<()> {
    let bytes = fs::read(from).with_context(|| format!("cannot read {}", from.display()))?;
    write_file(to, &bytes, mode)
}

/// Writes `bytes` to `path` (parents made 0755) with `mode`.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    if let Some(parent) = path.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", path.display()))
}

/// Runs `cmd` and returns its stdout; fails with its stderr unless it exits 0.
fn capture(cmd: &mut Command) -> Result<String> {
    let shown = display(cmd);
    let output = cmd
        .output()
        .with_context(|| format!("cannot run `{shown}`"))?;
    if !output.status.success() {
        bail!(
            "`{shown}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    String::from_utf8(output.stdout).with_context(|| format!("`{shown}` printed non-UTF-8"))
}

/// `/usr/share/doc/canarygate/copyright` (machine-readable format 1.0).
const COPYRIGHT: &str = "\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: canarygate

Files: *
Copyright: canarygate developers
License: Apache-2.0
 On Debian systems, the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
";
