//! Builds the eBPF objects of `gateway-ebpf` (with aya-build), or says why it cannot:
//! `gateway-ebpf`, the production object that `canarygate` embeds for kernel accounting,
//! and `gateway-fault`, the test-only fault injector, which the gateway never embeds; its
//! path goes to the build scripts of crates that depend on this one (`links` metadata:
//! `tests/build.rs` reads `DEP_CANARYGATE_EBPF_FAULT_OBJECT`).
//!
//! The objects need a nightly toolchain with `rust-src` and `bpf-linker` on `PATH`
//! (`cargo xtask test` installs them). Without them, or with `AYA_BUILD_SKIP=1`, the
//! gateway still builds: this script writes empty objects, prints a cargo warning, and
//! sets `CANARYGATE_EBPF_UNAVAILABLE` to the reason, which the gateway repeats at run time
//! (`--kernel-accounting auto` then runs without it; `on` refuses to start).

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Name of the eBPF crate and of the object aya-build leaves in `OUT_DIR`.
const EBPF_PACKAGE: &str = "gateway-ebpf";
/// The eBPF crate's other binary: the test-only fault injector, never embedded.
const FAULT_OBJECT: &str = "gateway-fault";
/// The toolchain aya-build runs (`rustup run nightly cargo build -Z build-std=core ..`).
const TOOLCHAIN: &str = "nightly";

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let ebpf_dir = manifest_dir.join("..").join(EBPF_PACKAGE);
    let common_dir = manifest_dir.join("..").join("gateway-common");
    println!("cargo:rerun-if-changed={}", ebpf_dir.display());
    println!(
        "cargo:rerun-if-changed={}",
        common_dir.join("src").display()
    );
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    // Installing bpf-linker or rust-src later must be noticed without a PATH change.
    if let Some(bin) = cargo_bin_dir() {
        println!("cargo:rerun-if-changed={}", bin.display());
    }

    let object = out_dir.join(EBPF_PACKAGE);
    let fault = out_dir.join(FAULT_OBJECT);
    let result = missing_toolchain().map_or_else(|| build(&ebpf_dir), Err);
    match result {
        Ok(()) if object.is_file() => {
            println!("cargo:rustc-env=CANARYGATE_EBPF_UNAVAILABLE=");
            if !fault.is_file() {
                println!("cargo:warning=aya-build produced no {FAULT_OBJECT} object");
                fs::write(&fault, [])?;
            }
        }
        Ok(()) => unavailable(&[&object, &fault], "aya-build produced no object")?,
        Err(reason) => unavailable(&[&object, &fault], &reason)?,
    }
    println!("cargo::metadata=fault_object={}", fault.display());
    Ok(())
}

/// Builds the objects (every binary of the eBPF crate) into `OUT_DIR` with aya-build;
/// errors are returned as text.
fn build(ebpf_dir: &Path) -> Result<(), String> {
    let root_dir = ebpf_dir.to_string_lossy().into_owned();
    // aya-build relays every line its nested cargo prints on stderr as a cargo warning,
    // so each `Compiling ...` of the eBPF build showed up as a warning of this crate.
    // Quiet keeps errors (which still fail the build, with their text) and drops the
    // progress lines.
    // SAFETY: build scripts run single-threaded; nothing else reads the environment
    // concurrently.
    unsafe { env::set_var("CARGO_TERM_QUIET", "true") };
    aya_build::build_ebpf(
        [aya_build::Package {
            name: EBPF_PACKAGE,
            root_dir: &root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
    .map_err(|e| format!("the eBPF build failed: {e:#}"))
}

/// Writes empty objects and records why there are no real ones.
fn unavailable(objects: &[&Path], reason: &str) -> anyhow::Result<()> {
    let reason = reason.replace(['\n', '\r'], " ");
    println!(
        "cargo:warning=canarygate is built without kernel accounting: {reason}; run `cargo xtask test` (or see the README) to install the eBPF toolchain"
    );
    println!("cargo:rustc-env=CANARYGATE_EBPF_UNAVAILABLE={reason}");
    for object in objects {
        fs::write(object, [])?;
    }
    Ok(())
}

/// Why the eBPF toolchain cannot be used here, if it cannot.
fn missing_toolchain() -> Option<String> {
    if env::var_os("AYA_BUILD_SKIP").is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        return Some("it was built with AYA_BUILD_SKIP set".into());
    }
    if which("rustup").is_none() {
        return Some("rustup is not on PATH (the eBPF build needs a nightly toolchain)".into());
    }
    let sysroot = Command::new("rustup")
        .args(["run", TOOLCHAIN, "rustc", "--print", "sysroot"])
        .output();
    let sysroot = match sysroot {
        Ok(out) if out.status.success() => {
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        }
        _ => return Some(format!("the {TOOLCHAIN} toolchain is not installed")),
    };
    if !sysroot.join("lib/rustlib/src/rust/library/core").is_dir() {
        return Some(format!(
            "the rust-src component of the {TOOLCHAIN} toolchain is not installed"
        ));
    }
    match which("bpf-linker") {
        Some(linker) => {
            println!("cargo:rerun-if-changed={}", linker.display());
            None
        }
        None => Some("bpf-linker is not on PATH".into()),
    }
}

/// The first `PATH` entry holding an executable file called `program`.
fn which(program: &str) -> Option<PathBuf> {
    let paths = env::var_os("PATH")?;
    env::split_paths(&paths)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// `$CARGO_HOME/bin`, where `cargo install bpf-linker` puts the linker.
fn cargo_bin_dir() -> Option<PathBuf> {
    let home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    let bin = home.join("bin");
    bin.is_dir().then_some(bin)
}
