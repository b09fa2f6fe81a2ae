//! Binary upgrade (`canarygate run ... --takeover ADMIN_SOCKET`): under a steady load of
//! new connections (one per request), a second gateway takes the first one's listening
//! sockets over its admin socket, the first drains and exits 0, and not a connection is
//! refused or reset, not a request fails; a request in flight on a keep-alive connection
//! of the old process is answered; the admin socket then leads to the new process.
//! `--takeover` to a socket nobody listens on fails at startup and names the flag.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tests::{AdminConn, Client, Expect, GatewayProc, TempDir, TestUpstream, get_request, run_cli};

/// Client threads of the connection-per-request load.
const CLIENTS: usize = 4;

/// Threads that each connect, send one `GET /`, read the answer and close, in a loop.
struct ConnectLoad {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    threads: Vec<JoinHandle<Vec<String>>>,
}

impl ConnectLoad {
    fn start(addr: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let threads = (0..CLIENTS)
            .map(|_| {
                let (stop, ok) = (Arc::clone(&stop), Arc::clone(&ok));
                thread::spawn(move || {
                    let mut failures = Vec::new();
                    while !stop.load(Ordering::SeqCst) {
                        match Client::connect(addr).and_then(|mut c| c.get("/")) {
                            Ok(r) if r.status == 200 && r.text() == "stable" => {
                                ok.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok(r) => failures.push(format!("answer: {}", r.describe())),
                            Err(e) => failures.push(format!("{:?}: {e}", e.kind())),
                        }
                    }
                    failures
                })
            })
            .collect();
        Self { stop, ok, threads }
    }

    /// Requests answered 200 so far.
    fn ok(&self) -> u64 {
        self.ok.load(Ordering::SeqCst)
    }

    /// Stops the clients; returns the answered requests and every failure.
    fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let mut failures = Vec::new();
        for t in self.threads {
            failures.extend(t.join().expect("load thread panicked"));
        }
        (self.ok.load(Ordering::SeqCst), failures)
    }
}

fn requests_served(admin: &std::path::Path) -> u64 {
    let mut conn = AdminConn::connect(admin).expect("connect to the admin socket");
    let stats = conn.cmd("show stats json").json();
    stats["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            r["stable"]["stats"]["requests"].as_u64().unwrap_or(0)
                + r["canary"]["stats"]["requests"].as_u64().unwrap_or(0)
        })
        .sum()
}

#[test]
fn takeover_under_new_connections_refuses_none_and_the_old_one_drains() {
    let up = TestUpstream::start("stable");
    let dir = TempDir::new("upgrade");
    let sock = dir.path().join("admin.sock");
    let sock_str = sock.to_string_lossy().into_owned();
    let stable = up.addr_str();
    // The same flags for both, as an operator would run them (port 0: the new process
    // takes whatever port the old one has), with a different worker count.
    let flags = |workers: &'static str| {
        vec![
            "run",
            "--listen",
            "127.0.0.1:0",
            "--stable",
            &stable,
            "--admin-socket",
            &sock_str,
            "--workers",
            workers,
            "--drain-timeout",
            "10s",
        ]
    };
    let mut old = GatewayProc::spawn(&flags("2"), &Expect::stages(1).with_admin())
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = old.addr();

    // A keep-alive connection of the old process, with a request in flight across the
    // takeover.
    let mut kept = Client::connect(addr).expect("connect");
    kept.set_read_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(kept.get("/").unwrap().status, 200);

    let load = ConnectLoad::start(addr);
    thread::sleep(Duration::from_millis(400));
    let before = load.ok();
    assert!(before > 0, "no request answered before the upgrade");
    kept.send(&get_request("/slow?ms=1500")).unwrap();
    thread::sleep(Duration::from_millis(50));

    let mut args = flags("3");
    args.extend(["--takeover", &sock_str]);
    let started = Instant::now();
    let mut new = GatewayProc::spawn(&args, &Expect::stages(1).with_admin())
        .unwrap_or_else(|e| panic!("{e}"));
    let new_up = started.elapsed();
    assert_eq!(
        new.addr(),
        addr,
        "the new process listens where the old one did"
    );

    let status = old.wait_exit(Duration::from_secs(15));
    let old_gone = started.elapsed();
    assert!(
        status.is_some_and(|s| s.success()),
        "the old gateway did not exit 0 after the takeover: {status:?}\n{}",
        old.stderr()
    );
    let during = load.ok() - before;
    let slow = kept
        .read_response(false)
        .expect("the in-flight request's answer");
    assert_eq!(
        (slow.status, slow.text().as_str()),
        (200, "slow"),
        "{}",
        slow.describe()
    );
    assert!(slow.connection_has("close"), "{}", slow.describe());

    thread::sleep(Duration::from_millis(500));
    let at_end = load.ok();
    let (total, failures) = load.finish();
    eprintln!(
        "upgrade: new process ready after {new_up:?}, old one exited after {old_gone:?}; \
         {total} requests, {during} while both ran, {} after; failures: {}",
        at_end - before - during,
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} requests failed (refused, reset or wrong answer): {:?}",
        failures.len(),
        total + failures.len() as u64,
        &failures[..failures.len().min(10)]
    );
    assert!(
        at_end > before + during,
        "no request answered after the old one left"
    );
    assert!(
        old.stderr().contains("draining") || old.stderr().contains("drained"),
        "{}",
        old.stderr()
    );
    assert!(new.try_wait().is_none(), "the new gateway exited");
    // The admin socket path is the new process's now; what it served adds up.
    let served = requests_served(&sock);
    assert!(
        served > 0 && served <= total,
        "the new gateway served {served} of {total} requests"
    );
    assert!(
        sock.exists(),
        "the old process removed the new one's admin socket"
    );
    new.signal("TERM");
    assert!(
        new.wait_exit(Duration::from_secs(10))
            .is_some_and(|s| s.success())
    );
}

#[test]
fn takeover_of_a_dead_socket_fails_at_startup_and_names_the_flag() {
    let dir = TempDir::new("upgrade-dead");
    let sock = dir.path().join("admin.sock");
    // A socket file nobody listens on any more.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    for path in [sock.clone(), dir.path().join("missing.sock")] {
        let p = path.to_string_lossy();
        let out = run_cli(
            &[
                "run",
                "--listen",
                "127.0.0.1:0",
                "--stable",
                "127.0.0.1:1",
                "--takeover",
                &p,
            ],
            Duration::from_secs(10),
        );
        assert_eq!(out.status.and_then(|s| s.code()), Some(1), "{out:?}");
        assert!(
            out.stderr.contains(&format!("--takeover {p}")) && out.stderr.contains("connect"),
            "{}",
            out.stderr
        );
        assert!(
            out.stdout.is_empty(),
            "it announced a listener: {}",
            out.stdout
        );
    }
}

#[test]
fn takeover_onto_the_same_port_on_another_address_is_refused_and_changes_nothing() {
    let up = TestUpstream::start("stable");
    let dir = TempDir::new("upgrade-conflict");
    let sock = dir.path().join("admin.sock");
    let sock_str = sock.to_string_lossy().into_owned();
    let stable = up.addr_str();
    let old = GatewayProc::spawn(
        &[
            "run",
            "--listen",
            "127.0.0.1:0",
            "--stable",
            &stable,
            "--admin-socket",
            &sock_str,
        ],
        &Expect::stages(1).with_admin(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let elsewhere = format!("127.0.0.2:{}", old.addr().port());
    let out = run_cli(
        &[
            "run",
            "--listen",
            &elsewhere,
            "--stable",
            &stable,
            "--takeover",
            &sock_str,
        ],
        Duration::from_secs(10),
    );
    assert_eq!(out.status.and_then(|s| s.code()), Some(1), "{out:?}");
    assert!(
        out.stderr.contains("--takeover")
            && out.stderr.contains("the same port on another address"),
        "{}",
        out.stderr
    );
    // The old gateway never heard `takeover done`: it serves and answers as before.
    let r = Client::connect(old.addr()).and_then(|mut c| c.get("/"));
    assert_eq!(r.map(|r| r.status).ok(), Some(200));
    assert!(requests_served(&sock) >= 1);
}
