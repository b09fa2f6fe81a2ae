//! The eBPF toolchain `gateway/build.rs` needs to build the kernel-accounting object, and
//! the tools the kernel tests run; each part is installed only when missing:
//! - the `nightly` toolchain with its `rust-src` component (aya-build runs
//!   `rustup run nightly cargo build -Z build-std=core --target bpfel-unknown-none`);
//! - `bpf-linker`, built with `cargo install` against LLVM 22 (the LLVM of our nightly),
//!   after the Debian packages it links with (`llvm-22-dev`, `libpolly-22-dev`,
//!   `libzstd-dev`, `zlib1g-dev`);
//! - Debian's `bpftool`, `iproute2` (`tc`) and `util-linux` (`setpriv`), which the
//!   kernel tests use to check what is attached and to drop privileges.
//!
//! Without them the gateway still builds (without kernel accounting, said at build and
//! run time), but the kernel tests fail, so `cargo xtask test` installs them.

use std::env;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::step::{display, run, succeeds};
use crate::tools::{Package, ensure_packages};

/// The toolchain aya-build uses.
const NIGHTLY: &str = "nightly";
/// LLVM major version of that nightly; bpf-linker must be built against the same one.
const LLVM: &str = "22";
/// The bpf-linker release known to build and link with LLVM 22 here.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// What building bpf-linker against LLVM 22 needs.
const LLVM_PACKAGES: [Package; 4] = [
    Package {
        name: "llvm-22-dev",
        program: "/usr/lib/llvm-22/bin/llvm-config",
    },
    Package {
        name: "libpolly-22-dev",
        program: "/usr/lib/llvm-22/lib/libPolly.a",
    },
    Package {
        name: "libzstd-dev",
        program: "/usr/include/zstd.h",
    },
    Package {
        name: "zlib1g-dev",
        program: "/usr/include/zlib.h",
    },
];

/// What the kernel tests run.
const TEST_PACKAGES: [Package; 3] = [
    Package {
        name: "bpftool",
        program: "/usr/sbin/bpftool",
    },
    Package {
        name: "iproute2",
        program: "/sbin/tc",
    },
    Package {
        name: "util-linux",
        program: "/usr/bin/setpriv",
    },
];

/// Installs whatever of the eBPF toolchain and the kernel test tools is missing.
pub(crate) fn ensure() -> Result<()> {
    ensure_nightly()?;
    ensure_bpf_linker()?;
    ensure_packages(&TEST_PACKAGES)
}

fn ensure_nightly() -> Result<()> {
    let rustup = || {
        let mut cmd = Command::new("rustup");
        // rustup's cargo proxy pins the toolchain of the running cargo; `--toolchain`
        // below names the one meant instead.
        cmd.env_remove("RUSTUP_TOOLCHAIN");
        cmd
    };
    if !succeeds(rustup().arg("--version")) {
        bail!(
            "rustup is not on PATH; the eBPF build needs `rustup toolchain install {NIGHTLY}` \
             and `rustup component add rust-src --toolchain {NIGHTLY}`"
        );
    }
    if !succeeds(rustup().args(["run", NIGHTLY, "rustc", "--version"])) {
        let mut install = rustup();
        install.args(["toolchain", "install", NIGHTLY, "--profile", "minimal"]);
        eprintln!("xtask: {}", display(&install));
        run(&mut install).context("could not install the nightly toolchain")?;
    }
    if !rust_src_present(&rustup) {
        let mut add = rustup();
        add.args(["component", "add", "rust-src", "--toolchain", NIGHTLY]);
        eprintln!("xtask: {}", display(&add));
        run(&mut add).context("could not add rust-src to the nightly toolchain")?;
        if !rust_src_present(&rustup) {
            bail!(
                "`{}` succeeded but rust-src is still missing",
                display(&add)
            );
        }
    }
    Ok(())
}

fn rust_src_present(rustup: &dyn Fn() -> Command) -> bool {
    let Ok(out) = rustup()
        .args(["run", NIGHTLY, "rustc", "--print", "sysroot"])
        .output()
    else {
        return false;
    };
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    out.status.success() && sysroot.join("lib/rustlib/src/rust/library/core").is_dir()
}

fn ensure_bpf_linker() -> Result<()> {
    if bpf_linker_present() {
        return Ok(());
    }
    ensure_packages(&LLVM_PACKAGES)?;
    let llvm_bin = format!("/usr/lib/llvm-{LLVM}/bin");
    let path = env::var_os("PATH").unwrap_or_default();
    let path =
        env::join_paths(std::iter::once(PathBuf::from(&llvm_bin)).chain(env::split_paths(&path)))
            .context("PATH contains an invalid entry")?;
    let program = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut install = Command::new(program);
    install
        .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
        .args([
            "--no-default-features",
            "--features",
            &format!("llvm-{LLVM}"),
        ])
        .env("PATH", path);
    eprintln!(
        "xtask: PATH={llvm_bin}:$PATH {} (about a minute)",
        display(&install)
    );
    run(&mut install).context("could not build bpf-linker")?;
    if !bpf_linker_present() {
        bail!(
            "`cargo install bpf-linker` succeeded but bpf-linker is not on PATH; add \
             ~/.cargo/bin to PATH"
        );
    }
    Ok(())
}

/// Whether `bpf-linker` is in a `PATH` directory (where `gateway/build.rs` looks).
fn bpf_linker_present() -> bool {
    env::var_os("PATH")
        .is_some_and(|paths| env::split_paths(&paths).any(|dir| dir.join("bpf-linker").is_file()))
}
