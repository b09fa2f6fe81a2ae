//! Makes sure the tools `cargo xtask test` needs are present on a fresh machine, and
//! installs only what is missing:
//! - rustup components `rustfmt` and `clippy` for the active toolchain;
//! - what every build of the gateway needs, also before the other tasks' builds
//!   ([`ensure_build`]): Debian's `protobuf-compiler`, whose `protoc` etcd-client's build
//!   script runs;
//! - Debian packages `nginx-light`, `curl`, `openssl` and `prometheus`: the end-to-end tests run
//!   `/usr/sbin/nginx` as an upstream, `/usr/bin/curl` as a client and
//!   `openssl s_client` against TLS listeners; `chromium` loads the dashboard headless;
//!   `dpkg-dev`, `systemd` and `python3-seccomp` for the package tests
//!   (`dpkg-shlibdeps`, `systemd-analyze`, the unit's system-call filter). `prometheus` for
//!   `/usr/bin/promtool` (checks and unit-tests `deploy/prometheus`). `etcd-server` and
//!   `etcd-client` for the fleet-mode tests, which start a real `/usr/bin/etcd` on
//!   loopback and inspect it with `/usr/bin/etcdctl`; `nghttp2-client` for h2load in the
//!   HTTP/2 tests. They are installed with
//!   `apt-get install -y`; `apt-get update` runs only when that fails, and `sudo` is used
//!   only when not root.
//!
//! `cargo xtask compare` uses [`ensure_packages`] for its own list (nginx-light, haproxy,
//! wrk; valgrind when profiling, openssl with `--tls`).
//!
//! - the eBPF toolchain for kernel accounting and the tools its tests run
//!   (see [`crate::ebpf`]);
//! - the real upstream servers of the end-to-end tests: Node.js (`node` on PATH, else
//!   Debian's `nodejs`), gunicorn and grpcio (a gRPC client) from PyPI (`python3 -m pip
//!   install`, pinned).
//!
//! Each tool is probed again after installing, so a step that "succeeded" without
//! providing the tool still fails here rather than in a confusing test.

use std::env;
use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::step::{display, run, succeeds};

/// A rustup component and the cargo subcommand that proves it is installed.
struct Component {
    name: &'static str,
    subcommand: &'static str,
}

const COMPONENTS: [Component; 2] = [
    Component {
        name: "rustfmt",
        subcommand: "fmt",
    },
    Component {
        name: "clippy",
        subcommand: "clippy",
    },
];

/// A Debian package and the program it provides, at the path the tests use.
pub(crate) struct Package {
    /// Debian package name.
    pub(crate) name: &'static str,
    /// Absolute path of the program that proves it is installed.
    pub(crate) program: &'static str,
}

/// What building the gateway needs: etcd-client's build script compiles etcd's `.proto`
/// files with `protoc` (through tonic-build), so without it no gateway build gets past
/// etcd-client's build script.
const BUILD_PACKAGES: [Package; 1] = [Package {
    name: "protobuf-compiler",
    program: "/usr/bin/protoc",
}];

const PACKAGES: [Package; 11] = [
    Package {
        name: "nginx-light",
        program: "/usr/sbin/nginx",
    },
    Package {
        name: "curl",
        program: "/usr/bin/curl",
    },
    Package {
        name: "openssl",
        program: "/usr/bin/openssl",
    },
    // The dashboard's test loads the page in headless Chromium.
    Package {
        name: "chromium",
        program: "/usr/bin/chromium",
    },
    // The package tests (e2e `package::`): dpkg-shlibdeps for the .deb's Depends,
    // systemd-analyze to verify the unit and score its hardening.
    Package {
        name: "dpkg-dev",
        program: "/usr/bin/dpkg-shlibdeps",
    },
    Package {
        name: "systemd",
        program: "/usr/bin/systemd-analyze",
    },
    // Runs the gateway under the unit's SystemCallFilter (tests/peers/seccomp_exec.py);
    // a Python module, so its copyright file proves it is there.
    Package {
        name: "python3-seccomp",
        program: "/usr/share/doc/python3-seccomp/copyright",
    },
    Package {
        name: "prometheus",
        program: "/usr/bin/promtool",
    },
    // The fleet-mode tests start a real etcd on loopback (tests/src/etcd.rs) and read
    // and write its keys with etcdctl.
    Package {
        name: "etcd-server",
        program: "/usr/bin/etcd",
    },
    Package {
        name: "etcd-client",
        program: "/usr/bin/etcdctl",
    },
    // The HTTP/2 tests (e2e `http2::`) load the gateway with h2load.
    Package {
        name: "nghttp2-client",
        program: "/usr/bin/h2load",
    },
];

/// Installs what any build of the gateway needs (`protoc`, see [`BUILD_PACKAGES`]); every
/// task that runs cargo on the gateway calls it before its first build, so a fresh
/// machine fails here with a message about a package rather than in a build script.
pub(crate) fn ensure_build() -> Result<()> {
    ensure_packages(&BUILD_PACKAGES)
}

/// Installs whatever is missing; fails with a message saying what to do by hand when
/// installing is impossible (no rustup, no apt-get, no sudo).
pub(crate) fn ensure(root: &Path) -> Result<()> {
    ensure_components(root)?;
    ensure_build()?;
    ensure_packages(&PACKAGES)?;
    ensure_peers()?;
    // Kernel accounting: nightly + rust-src, bpf-linker, bpftool/tc/setpriv for its tests.
    crate::ebpf::ensure()
}

/// PyPI packages the end-to-end tests use, pinned to the versions they were written
/// against, each with the `python3` arguments that succeed once it is installed: gunicorn
/// (an upstream) and grpcio (a real gRPC client).
const PYPI: [(&str, &[&str]); 2] = [
    ("gunicorn==27.0.1", &["-m", "gunicorn", "--version"]),
    ("grpcio==1.68.1", &["-c", "import grpc"]),
];

/// Node.js, gunicorn and grpcio, which the end-to-end tests run as upstreams and clients
/// (Node's fetch as a client too).
fn ensure_peers() -> Result<()> {
    if !on_path("node") {
        ensure_packages(&[Package {
            name: "nodejs",
            program: "/usr/bin/node",
        }])?;
    }
    for (spec, check) in PYPI {
        let present = || succeeds(Command::new("python3").args(check));
        if present() {
            continue;
        }
        if !on_path("python3") {
            bail!(
                "python3 is not on PATH; install Python 3 with pip, then `python3 -m pip install {spec}`"
            );
        }
        let mut pip = Command::new("python3");
        pip.args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--root-user-action=ignore",
            spec,
        ]);
        eprintln!("xtask: installing {spec}: {}", display(&pip));
        run(&mut pip).with_context(|| format!("could not install {spec} with pip"))?;
        if !present() {
            bail!(
                "`pip install {spec}` succeeded but `python3 {}` still fails",
                check.join(" ")
            );
        }
    }
    Ok(())
}

fn component_present(root: &Path, component: &Component) -> bool {
    succeeds(crate::cargo(root).args([component.subcommand, "--version"]))
}

fn ensure_components(root: &Path) -> Result<()> {
    let missing: Vec<&Component> = COMPONENTS
        .iter()
        .filter(|c| !component_present(root, c))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = missing.iter().map(|c| c.name).collect();
    if !on_path("rustup") {
        bail!(
            "rust components missing: {}; rustup is not on PATH, so install them with your \
             Rust distribution and rerun",
            names.join(", ")
        );
    }
    // Without `--toolchain`, rustup picks the active toolchain, which honours the
    // RUSTUP_TOOLCHAIN that rustup's cargo proxy set for this process.
    let mut add = Command::new("rustup");
    add.args(["component", "add"]).args(&names);
    eprintln!("xtask: installing rust components: {}", display(&add));
    run(&mut add).context("could not install rust components")?;
    if let Some(c) = missing.iter().find(|c| !component_present(root, c)) {
        bail!(
            "`rustup component add {}` succeeded but `cargo {} --version` still fails",
            c.name,
            c.subcommand
        );
    }
    Ok(())
}

fn package_present(package: &Package) -> bool {
    Path::new(package.program).is_file()
}

/// Installs whichever of `packages` is missing with apt-get.
pub(crate) fn ensure_packages(packages: &[Package]) -> Result<()> {
    let names: Vec<&str> = packages
        .iter()
        .filter(|p| !package_present(p))
        .map(|p| p.name)
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    if !on_path("apt-get") {
        let programs: Vec<&str> = packages.iter().map(|p| p.program).collect();
        bail!(
            "missing Debian packages: {} (needed: {}); apt-get is not available here, so \
             install them with this system's package manager and rerun",
            names.join(", "),
            programs.join(", ")
        );
    }
    let mut install = vec!["install", "-y"];
    install.extend(&names);
    if let Err(first) = run(&mut apt(&install, &names)?) {
        eprintln!("xtask: apt-get install failed ({first:#}); running apt-get update and retrying");
        run(&mut apt(&["update"], &names)?).context("apt-get update failed")?;
        run(&mut apt(&install, &names)?).context("apt-get install failed after apt-get update")?;
    }
    if let Some(p) = packages.iter().find(|p| !package_present(p)) {
        bail!(
            "apt-get installed {} but {} is still missing",
            p.name,
            p.program
        );
    }
    Ok(())
}

/// `apt-get <args>`, non-interactive, through `sudo` unless already root; `names` are
/// the packages wanted, for the error message.
fn apt(args: &[&str], names: &[&str]) -> Result<Command> {
    let mut cmd = if is_root()? {
        let mut cmd = Command::new("apt-get");
        cmd.env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    } else {
        if !on_path("sudo") {
            bail!(
                "installing Debian packages needs root, and sudo is not on PATH; run \
                 `apt-get install -y {}` as root and rerun",
                names.join(" ")
            );
        }
        // sudo resets the environment; `env` carries the setting past it.
        let mut cmd = Command::new("sudo");
        cmd.args(["env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]);
        cmd
    };
    cmd.args(args);
    eprintln!("xtask: {}", display(&cmd));
    Ok(cmd)
}

fn is_root() -> Result<bool> {
    let out = Command::new("id")
        .arg("-u")
        .output()
        .context("could not run `id -u` to check for root")?;
    if !out.status.success() {
        bail!("`id -u` failed ({})", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// Whether an executable file called `program` is in a `PATH` directory.
fn on_path(program: &str) -> bool {
    env::var_os("PATH")
        .is_some_and(|paths| env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}
