//! The Debian package and its systemd unit, through the real binary: the sd_notify
//! messages `Type=notify` relies on (READY=1 only once the listener accepts, STOPPING=1
//! at SIGTERM), `systemd-analyze verify` and the offline `systemd-analyze security`
//! score of `deploy/debian/canarygate.service`, the gateway serving on io_uring under
//! the unit's system-call filter (a seccomp filter made from it), and the `.deb` that `cargo xtask
//! package` builds from the already built binary: its files and control fields, then
//! installed with dpkg (as root), its configuration checked by the installed binary as
//! the service user, its man page read, the installed binary run as the service user
//! with only the unit's capabilities in a delegated cgroup (what systemd would set up),
//! and purged.

use std::ffi::OsStr;
use std::fs;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use tests::{Expect, GatewayProc, TempDir, TestUpstream, gateway_bin, workspace_root};

/// The unit file as it is shipped.
fn unit_file() -> PathBuf {
    workspace_root().join("deploy/debian/canarygate.service")
}

/// Runs `program ARGS..` and returns what it did; panics if it cannot start.
fn output(program: &str, args: &[&OsStr]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

/// Everything a finished command printed, for assertion messages.
fn printed(out: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Waits for the next datagram on `socket` (which has a read timeout) as text.
fn next_message(socket: &UnixDatagram, what: &str) -> String {
    let mut buf = [0u8; 4096];
    let n = socket
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no {what} from the gateway: {e}"));
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// READY=1 (with a STATUS naming the address and the workers) comes once the listener
/// answers, STOPPING=1 as soon as SIGTERM starts the drain; `socket` is where the
/// gateway was told to send them (`notify_socket`, the `$NOTIFY_SOCKET` value).
fn notifies_ready_then_stopping(socket: &UnixDatagram, notify_socket: &OsStr) {
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let upstream = TestUpstream::start("v1");
    let stable = upstream.addr().to_string();
    let args = [
        "run",
        "--listen",
        "127.0.0.1:0",
        "--stable",
        &stable,
        "--workers",
        "2",
    ];
    let mut gw = GatewayProc::spawn_with_env(
        &args,
        &[("NOTIFY_SOCKET", notify_socket)],
        &Expect::stages(1),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let ready = next_message(socket, "READY=1");
    // The moment READY=1 arrives the listener must already take and serve requests.
    let mut client = TcpStream::connect(gw.addr()).expect("connect right after READY=1");
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    let _ = client.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let lines: Vec<&str> = ready.lines().collect();
    assert_eq!(lines[0], "READY=1", "{ready:?}");
    let status = format!("STATUS=serving on {} with 2 workers", gw.addr());
    assert!(lines.contains(&status.as_str()), "{ready:?}");

    gw.signal("TERM");
    let stopping = next_message(socket, "STOPPING=1");
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    let status = gw
        .wait_exit(Duration::from_secs(20))
        .expect("the gateway exits after SIGTERM");
    assert!(status.success(), "{status}; stderr:\n{}", gw.stderr());
}

#[test]
fn sd_notify_ready_and_stopping_on_a_socket_file() {
    let dir = TempDir::new("notify");
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
    notifies_ready_then_stopping(&socket, path.as_os_str());
}

#[test]
fn sd_notify_ready_and_stopping_on_an_abstract_socket() {
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let name = format!(
        "canarygate-e2e-notify-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let socket = UnixDatagram::bind_addr(&addr).expect("bind the abstract notify socket");
    notifies_ready_then_stopping(&socket, OsStr::new(&format!("@{name}")));
}

/// A copy of the unit in `dir` whose commands run `bin` (verify wants them to exist).
fn unit_running(bin: &Path, dir: &Path) -> PathBuf {
    let text = fs::read_to_string(unit_file()).expect("read the unit");
    let copy = dir.join("canarygate.service");
    fs::write(
        &copy,
        text.replace("/usr/bin/canarygate", &bin.to_string_lossy()),
    )
    .unwrap();
    copy
}

/// `systemd-analyze verify UNIT` passes with nothing said about the unit.
fn verify(unit: &Path, check_man: bool) {
    let man = if check_man { "--man=yes" } else { "--man=no" };
    let out = output(
        "systemd-analyze",
        &[OsStr::new("verify"), OsStr::new(man), unit.as_os_str()],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Without systemd as PID 1 verify still loads the unit; it must find nothing wrong
    // in it (lines about other units, e.g. a missing network-online.target, are not ours).
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("canarygate"))
        .collect();
    assert!(
        out.status.success() && complaints.is_empty(),
        "{}",
        printed(&out)
    );
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let dir = TempDir::new("verify");
    verify(&unit_running(&gateway_bin(), dir.path()), false);
}

/// The offline exposure score measured for `deploy/debian/canarygate.service` with
/// systemd 252 (README, "Install as a Debian package"), plus a margin for other systemd
/// versions' weights. A change that loosens the sandbox fails here.
const MAX_EXPOSURE: f64 = EXPOSURE_MEASURED + 0.5;
const EXPOSURE_MEASURED: f64 = 2.0;

/// The number in `→ Overall exposure level for canarygate.service: 2.1 OK`.
fn exposure(report: &str) -> Option<f64> {
    let line = report.lines().find_map(|l| {
        l.split_once("Overall exposure level for ")
            .map(|(_, rest)| rest)
    })?;
    let (_, value) = line.split_once(": ")?;
    value.split_whitespace().next()?.parse().ok()
}

#[test]
fn the_unit_scores_low_in_systemd_analyze_security() {
    let dir = TempDir::new("security");
    let unit = unit_running(&gateway_bin(), dir.path());
    let out = output(
        "systemd-analyze",
        &[
            OsStr::new("security"),
            OsStr::new("--offline=true"),
            OsStr::new("--no-pager"),
            unit.as_os_str(),
        ],
    );
    let report = String::from_utf8_lossy(&out.stdout);
    let score = exposure(&report).unwrap_or_else(|| panic!("no score in {}", printed(&out)));
    assert!(
        score <= MAX_EXPOSURE,
        "exposure {score} > {MAX_EXPOSURE}:\n{report}"
    );
}

/// The allow list of the unit's `SystemCallFilter=` lines.
fn unit_syscall_filter() -> String {
    let text = fs::read_to_string(unit_file()).expect("read the unit");
    let lines: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("SystemCallFilter="))
        .collect();
    assert!(
        lines.iter().all(|l| !l.starts_with('~')),
        "a deny list in the unit: teach tests/peers/seccomp_exec.py about it"
    );
    lines.join(" ")
}

#[test]
fn the_binary_serves_on_io_uring_under_the_units_system_call_filter() {
    let python = "/usr/bin/python3";
    let probe = output(python, &[OsStr::new("-c"), OsStr::new("import seccomp")]);
    assert!(
        probe.status.success(),
        "python3-seccomp is missing (cargo xtask tools installs it): {}",
        printed(&probe)
    );
    let script = tests::peers::peers_dir().join("seccomp_exec.py");
    let filter = unit_syscall_filter();
    // As root (CI) kernel accounting must work too: bpf(2) is in the filter.
    let accounting = if is_root() && gateway::kernel_built().is_ok() {
        "on"
    } else {
        "auto"
    };
    let upstream = TestUpstream::start("v1");
    let stable = upstream.addr().to_string();
    let args = [
        "run",
        "--listen",
        "127.0.0.1:0",
        "--stable",
        &stable,
        "--io-driver",
        "io-uring",
        "--kernel-accounting",
        accounting,
    ];
    let wrapper = [OsStr::new(python), script.as_os_str(), OsStr::new(&filter)];
    let mut gw = GatewayProc::spawn_wrapped(&wrapper, &args, &Expect::stages(1))
        .unwrap_or_else(|e| panic!("under SystemCallFilter={filter}: {e}"));
    let mut client = TcpStream::connect(gw.addr()).expect("connect");
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    let _ = client.read_to_string(&mut response);
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "{response}\n{}",
        gw.stderr()
    );
    assert!(
        gw.stderr().contains("workers on io_uring"),
        "{}",
        gw.stderr()
    );
    gw.signal("TERM");
    let status = gw
        .wait_exit(Duration::from_secs(20))
        .expect("exits after SIGTERM");
    assert!(status.success(), "{status}; stderr:\n{}", gw.stderr());
}

/// Serialises the install test across test processes (two worktrees, repeated runs):
/// both would install and purge the same package.
fn install_lock() -> fs::File {
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(std::env::temp_dir().join("canarygate-e2e-package.lock"))
        .expect("open the package lock");
    file.lock().expect("take the package lock");
    file
}

/// `dpkg ARGS..`, retried while another dpkg or apt holds dpkg's lock.
fn dpkg(args: &[&OsStr]) -> Output {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = output("dpkg", args);
        let locked = String::from_utf8_lossy(&out.stderr).contains("lock");
        if out.status.success() || !locked || Instant::now() >= deadline {
            return out;
        }
        thread::sleep(Duration::from_millis(500));
    }
}

/// Whether this process runs as root (dpkg -i needs it).
fn is_root() -> bool {
    let out = output("id", &[OsStr::new("-u")]);
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// What the package must hold.
const PACKAGED: [&str; 12] = [
    "./usr/bin/canarygate",
    "./etc/canarygate/canarygate.toml",
    "./lib/systemd/system/canarygate.service",
    "./usr/lib/sysusers.d/canarygate.conf",
    "./usr/share/man/man1/canarygate.1.gz",
    "./usr/share/man/man1/canarygate-run.1.gz",
    "./usr/share/man/man1/canarygate-ctl.1.gz",
    "./usr/share/bash-completion/completions/canarygate",
    "./usr/share/zsh/vendor-completions/_canarygate",
    "./usr/share/fish/vendor_completions.d/canarygate.fish",
    "./usr/share/doc/canarygate/copyright",
    "./usr/share/doc/canarygate/README.md",
];

/// `cargo xtask package --binary BIN --out DIR`: the path it printed.
fn build_package(out_dir: &Path) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["run", "--quiet", "--profile", "ci", "-p", "xtask", "--"])
        .args(["package", "--binary"])
        .arg(gateway_bin())
        .arg("--out")
        .arg(out_dir)
        .current_dir(workspace_root())
        .output()
        .expect("run cargo xtask package");
    assert!(out.status.success(), "{}", printed(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let deb = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    assert!(
        deb.is_file(),
        "no .deb at {}: {}",
        deb.display(),
        printed(&out)
    );
    deb
}

#[test]
fn the_package_installs_checks_its_config_and_purges() {
    let dir = TempDir::new("package");
    let deb = build_package(dir.path());
    let version = String::from_utf8_lossy(
        &output(gateway_bin().to_str().unwrap(), &[OsStr::new("--version")]).stdout,
    )
    .trim()
    .trim_start_matches("canarygate ")
    .to_owned();
    let arch =
        String::from_utf8_lossy(&output("dpkg", &[OsStr::new("--print-architecture")]).stdout)
            .trim()
            .to_owned();
    assert_eq!(
        deb.file_name().unwrap().to_string_lossy(),
        format!("canarygate_{version}_{arch}.deb")
    );

    let list = output("dpkg-deb", &[OsStr::new("-c"), deb.as_os_str()]);
    let list = String::from_utf8_lossy(&list.stdout);
    for path in PACKAGED {
        assert!(
            list.lines()
                .any(|l| l.ends_with(path) && l.contains("root/root")),
            "{path} missing (or not root-owned) in\n{list}"
        );
    }
    assert!(
        list.lines()
            .any(|l| l.starts_with("-rwxr-xr-x") && l.ends_with("./usr/bin/canarygate")),
        "{list}"
    );

    let fields = |names: &[&str]| {
        let mut args = vec![OsStr::new("-f"), deb.as_os_str()];
        args.extend(names.iter().map(OsStr::new));
        String::from_utf8_lossy(&output("dpkg-deb", &args).stdout).into_owned()
    };
    let control = fields(&[
        "Package",
        "Version",
        "Architecture",
        "Maintainer",
        "Depends",
    ]);
    assert!(control.contains("Package: canarygate\n"), "{control}");
    assert!(
        control.contains(&format!("Version: {version}\n")),
        "{control}"
    );
    assert!(
        control.contains(&format!("Architecture: {arch}\n")),
        "{control}"
    );
    assert!(control.contains("Maintainer: "), "{control}");
    assert!(control.contains("Depends: libc6 (>= "), "{control}");
    let info = dir.path().join("control");
    let out = output(
        "dpkg-deb",
        &[OsStr::new("-e"), deb.as_os_str(), info.as_os_str()],
    );
    assert!(out.status.success(), "{}", printed(&out));
    assert_eq!(
        fs::read_to_string(info.join("conffiles")).unwrap(),
        "/etc/canarygate/canarygate.toml\n"
    );
    for script in ["postinst", "prerm", "postrm"] {
        assert!(info.join(script).is_file(), "DEBIAN/{script} missing");
    }

    if !is_root() {
        eprintln!(
            "package: not root, so the .deb is checked but not installed (dpkg -i needs root)"
        );
        return;
    }
    let _lock = install_lock();
    let _installed = Installed::new(&deb);
    check_installed();
}

/// The package installed with `dpkg -i`; purged again on drop, even when a check fails.
struct Installed;

impl Installed {
    fn new(deb: &Path) -> Installed {
        let out = dpkg(&[OsStr::new("-i"), deb.as_os_str()]);
        let installed = Installed;
        // No systemd as PID 1 here: the maintainer scripts must not fail because of it.
        assert!(out.status.success(), "dpkg -i: {}", printed(&out));
        installed
    }
}

/// What the installed package must do: its binary accepts its configuration (as root
/// and as the service user), its man pages name the flags, its unit verifies.
fn check_installed() {
    let config = "/etc/canarygate/canarygate.toml";
    let out = output(
        "/usr/bin/canarygate",
        &[OsStr::new("check-config"), OsStr::new(config)],
    );
    assert!(out.status.success(), "{}", printed(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(": ok ("),
        "{}",
        printed(&out)
    );
    // ExecStartPre runs the same check as the service user, which reads the file
    // through the group of /etc/canarygate (0750 root:canarygate).
    let out = output(
        "setpriv",
        &[
            OsStr::new("--reuid=canarygate"),
            OsStr::new("--regid=canarygate"),
            OsStr::new("--init-groups"),
            OsStr::new("/usr/bin/canarygate"),
            OsStr::new("check-config"),
            OsStr::new(config),
        ],
    );
    assert!(out.status.success(), "as canarygate: {}", printed(&out));

    let page = output(
        "zcat",
        &[OsStr::new("/usr/share/man/man1/canarygate-run.1.gz")],
    );
    let page = String::from_utf8_lossy(&page.stdout);
    for flag in [
        r"\-\-config",
        r"\-\-listen",
        r"\-\-drain\-timeout",
        r"\-\-kernel\-accounting",
    ] {
        assert!(
            page.contains(flag),
            "{flag} not in canarygate-run.1:\n{page}"
        );
    }
    let top = output("zcat", &[OsStr::new("/usr/share/man/man1/canarygate.1.gz")]);
    let top = String::from_utf8_lossy(&top.stdout);
    for sub in ["run", "check\\-config", "ctl", "completions"] {
        assert!(top.contains(sub), "{sub} not in canarygate.1:\n{top}");
    }

    // The installed unit, with its man pages present, verifies as shipped.
    verify(Path::new("/lib/systemd/system/canarygate.service"), true);
    serves_as_the_service_user_with_the_units_capabilities();
}

/// The unit's `AmbientCapabilities=` as setpriv's list: `+net_bind_service,+bpf,..`.
fn unit_capabilities() -> String {
    let text = fs::read_to_string(unit_file()).expect("read the unit");
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("AmbientCapabilities="))
        .expect("AmbientCapabilities= in the unit");
    let bounding = text
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("CapabilityBoundingSet= in the unit");
    assert_eq!(line, bounding, "ambient and bounding sets differ");
    line.split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_ascii_lowercase()))
        .collect::<Vec<_>>()
        .join(",")
}

/// This process's cgroup v2 directory.
fn own_cgroup() -> PathBuf {
    let cgroups = fs::read_to_string("/proc/self/cgroup").unwrap();
    let rel = cgroups
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("a cgroup v2 line in /proc/self/cgroup");
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mount = mountinfo
        .lines()
        .find_map(|l| {
            let (fields, rest) = l.split_once(" - ")?;
            rest.starts_with("cgroup2 ")
                .then(|| fields.split_whitespace().nth(4))
                .flatten()
        })
        .expect("a cgroup2 mount");
    Path::new(mount).join(rel.trim().trim_start_matches('/'))
}

/// A loopback port below 1024 that was free a moment ago (we are root).
fn privileged_port() -> u16 {
    (900..1000)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port in 900..1000")
}

/// What the unit sets up, without systemd: the installed binary as the `canarygate`
/// user, with only the unit's capabilities (ambient and bounding, no new privileges),
/// started in a cgroup delegated to that user (`Delegate=yes`), binds a port below 1024,
/// serves on io_uring and runs kernel accounting in a child cgroup of its own.
fn serves_as_the_service_user_with_the_units_capabilities() {
    let caps = unit_capabilities();
    let cgroup = own_cgroup().join(format!("canarygate-e2e-delegated-{}", std::process::id()));
    fs::create_dir_all(&cgroup).expect("create the delegated cgroup");
    for file in [
        "",
        "cgroup.procs",
        "cgroup.subtree_control",
        "cgroup.threads",
    ] {
        let out = output(
            "chown",
            &[
                OsStr::new("canarygate:canarygate"),
                cgroup.join(file).as_os_str(),
            ],
        );
        assert!(out.status.success(), "{}", printed(&out));
    }
    // sh moves itself into the cgroup as root, then becomes the service user running the
    // installed binary; $1, the harness's own binary (the same build, unstripped), is
    // dropped.
    let script = format!(
        "shift; echo $$ > '{}/cgroup.procs' && exec setpriv --reuid=canarygate \
         --regid=canarygate --init-groups --inh-caps=-all,{caps} --ambient-caps=-all,{caps} \
         --bounding-set=-all,{caps} --no-new-privs /usr/bin/canarygate \"$@\"",
        cgroup.display()
    );
    let accounting = if gateway::kernel_built().is_ok() {
        "on"
    } else {
        "auto"
    };
    let upstream = TestUpstream::start("v1");
    let listen = format!("127.0.0.1:{}", privileged_port());
    let stable = upstream.addr().to_string();
    let wrapper = [
        OsStr::new("/bin/sh"),
        OsStr::new("-c"),
        OsStr::new(&script),
        OsStr::new("sh"),
    ];
    let args = [
        "run",
        "--listen",
        &listen,
        "--stable",
        &stable,
        "--io-driver",
        "io-uring",
        "--kernel-accounting",
        accounting,
    ];
    let started = GatewayProc::spawn_wrapped(&wrapper, &args, &Expect::stages(1));
    let result = started.map(|mut gw| {
        let mut client = TcpStream::connect(gw.addr()).expect("connect");
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut response = String::new();
        let _ = client.read_to_string(&mut response);
        gw.signal("TERM");
        let status = gw.wait_exit(Duration::from_secs(20));
        (response, status, gw.stderr())
    });
    let _ = fs::remove_dir(&cgroup);
    let (response, status, stderr) = result.unwrap_or_else(|e| panic!("as canarygate: {e}"));
    assert!(response.starts_with("HTTP/1.1 200"), "{response}\n{stderr}");
    if accounting == "on" {
        assert!(stderr.contains("kernel accounting on"), "{stderr}");
    }
    assert!(status.is_some_and(|s| s.success()), "{status:?}\n{stderr}");
}

impl Drop for Installed {
    fn drop(&mut self) {
        let out = dpkg(&[OsStr::new("-P"), OsStr::new("canarygate")]);
        if !out.status.success() {
            eprintln!("dpkg -P canarygate failed: {}", printed(&out));
        }
        let left = Path::new("/usr/bin/canarygate").exists()
            || Path::new("/lib/systemd/system/canarygate.service").exists();
        if !thread::panicking() {
            assert!(out.status.success(), "dpkg -P: {}", printed(&out));
            assert!(!left, "files left after dpkg -P canarygate");
        }
    }
}

#[test]
fn exposure_is_read_from_the_report_line() {
    assert_eq!(
        exposure("  ✓ Foo\n→ Overall exposure level for canarygate.service: 2.1 OK :-)\n"),
        Some(2.1)
    );
    assert_eq!(exposure("nothing"), None);
}
