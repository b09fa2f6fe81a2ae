//! TLS termination and TLS to upstreams, with real clients (curl, `openssl s_client`, a
//! rustls client) and a real TLS upstream (Node's `https`): certificates chosen by SNI,
//! protocol versions, certificate reloads under load, refused reloads, handshake
//! slowloris and garbage, `show tls` and the expiry metric, upstream verification and
//! mutual TLS. Every certificate is made by a test CA at test time.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use tests::tls::{KeyKind, TestCa, client_config};
use tests::{AdminConn, Client, ConfigFile, Expect, GatewayProc, ServerProc, TestUpstream, curl};

/// One TLS stage with three certificates: `a.test` (ECDSA), `*.b.test` (RSA) and the
/// default (`default.test`), in front of `upstream`; admin socket and metrics on.
fn sni_gateway(ca: &TestCa, file: &ConfigFile, upstream: &str) -> GatewayProc {
    let dir = file.dir();
    ca.issue(dir, "a", &["a.test"], KeyKind::Ecdsa, 0xa1);
    ca.issue(dir, "b", &["*.b.test"], KeyKind::Rsa, 0xb1);
    ca.issue(dir, "d", &["default.test"], KeyKind::Ecdsa, 0xd1);
    ca.write_pem(dir, "ca.pem");
    file.write(&format!(
        r#"
[server]
admin_socket = "{admin}"
metrics_listen = "127.0.0.1:0"

[[stage]]
name = "edge"
listen = "127.0.0.1:0"
tls = [
  {{ cert = "a.crt", key = "a.key", server_names = ["a.test"] }},
  {{ cert = "b.crt", key = "b.key", server_names = ["*.b.test"] }},
  {{ cert = "d.crt", key = "d.key", default = true }},
]

[[stage.route]]
name = "api"
stable = {{ id = "v1", endpoints = ["{upstream}"] }}
"#,
        admin = file.sibling("admin.sock").display()
    ));
    GatewayProc::start_config(
        file.path(),
        &Expect::stages(1).with_admin().with_metrics(),
        &["--kernel-accounting", "off"],
    )
}

/// `openssl s_client` against `addr` with `args`; its whole output.
fn s_client(addr: SocketAddr, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl s_client (Debian package openssl)");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The serial of the first certificate in PEM text (the server's leaf, as s_client and
/// curl's `%{certs}` print it), in `show tls`'s format.
fn first_serial(pem_text: &str) -> Option<String> {
    let der = CertificateDer::from_pem_slice(pem_text.as_bytes()).ok()?;
    let (_, x) = x509_parser::parse_x509_certificate(&der).ok()?;
    Some(x.raw_serial_as_string())
}

fn serial_hex(serial: u64) -> String {
    tests::tls::TestCa::serial_text(serial)
}

fn failures(gw: &GatewayProc, reason: &str) -> u64 {
    gw.scrape().int(
        "canarygate_tls_handshake_failures_total",
        &[("reason", reason)],
    )
}

#[test]
fn curl_and_openssl_get_the_certificate_of_their_sni_name() {
    let up = TestUpstream::start("stable");
    let ca = TestCa::new("sni CA");
    let file = ConfigFile::new("");
    let gw = sni_gateway(&ca, &file, &up.addr_str());
    let port = gw.addr().port();
    let ca_file = file.sibling("ca.pem");
    let ca_arg = ca_file.to_string_lossy();
    for (name, serial) in [("a.test", 0xa1), ("x.b.test", 0xb1)] {
        // curl verifies the chain for the name it asked for, and shows what it got.
        let resolve = format!("{name}:{port}:127.0.0.1");
        let url = format!("https://{name}:{port}/");
        let out = curl(&[
            "--cacert",
            &ca_arg,
            "--resolve",
            &resolve,
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{certs}",
            &url,
        ]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.starts_with("200 "),
            "curl {url}: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(first_serial(&text), Some(serial_hex(serial)), "curl {name}");
        let out = s_client(
            gw.addr(),
            &[
                "-servername",
                name,
                "-CAfile",
                &ca_arg,
                "-verify_return_error",
            ],
        );
        assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
        assert_eq!(
            first_serial(&out),
            Some(serial_hex(serial)),
            "s_client {name}"
        );
    }
    // No SNI, and a name no certificate has: the default certificate.
    let out = s_client(gw.addr(), &["-noservername", "-CAfile", &ca_arg]);
    assert_eq!(first_serial(&out), Some(serial_hex(0xd1)), "{out}");
    let out = s_client(
        gw.addr(),
        &["-servername", "nobody.test", "-CAfile", &ca_arg],
    );
    assert_eq!(first_serial(&out), Some(serial_hex(0xd1)), "{out}");
    // A wildcard covers one label only.
    let out = s_client(
        gw.addr(),
        &["-servername", "a.x.b.test", "-CAfile", &ca_arg],
    );
    assert_eq!(first_serial(&out), Some(serial_hex(0xd1)), "{out}");

    // show tls lists each certificate; /metrics says how long each has left.
    let mut admin = AdminConn::connect(gw.admin_socket()).unwrap();
    let shown = admin.cmd("show tls json").json();
    let certs = shown["certificates"].as_array().unwrap();
    assert_eq!(certs.len(), 3, "{shown}");
    assert_eq!(certs[1]["names"][0], "*.b.test");
    assert_eq!(certs[1]["key_type"], "RSA");
    assert_eq!(certs[2]["default"], true);
    assert_eq!(certs[0]["serial"], serial_hex(0xa1));
    assert!(
        certs[0]["issuer"].as_str().unwrap().contains("sni CA"),
        "{shown}"
    );
    let text = admin.ok("show tls");
    assert!(
        text.contains("a.test") && text.contains("expires in"),
        "{text}"
    );
    let left = gw.scrape().value(
        "canarygate_tls_certificate_expiry_seconds",
        &[
            ("stage", "edge"),
            ("name", "a.test"),
            ("serial", &serial_hex(0xa1)),
        ],
    );
    // rcgen's default validity runs to 4096; anything far in the future will do.
    assert!(left > 86_400.0 * 365.0, "expiry {left}");
}

#[test]
fn tls13_by_default_tls12_when_forced_tls11_refused() {
    let up = TestUpstream::start("stable");
    let ca = TestCa::new("versions CA");
    let file = ConfigFile::new("");
    let gw = sni_gateway(&ca, &file, &up.addr_str());
    let out = s_client(gw.addr(), &["-servername", "a.test"]);
    assert!(out.contains("New, TLSv1.3"), "default: {out}");
    let out = s_client(gw.addr(), &["-servername", "a.test", "-tls1_2"]);
    assert!(out.contains("New, TLSv1.2"), "forced 1.2: {out}");
    assert!(
        out.contains("ECDHE-ECDSA-AES") || out.contains("ECDHE-ECDSA-CHACHA20"),
        "{out}"
    );
    // OpenSSL refuses TLS 1.1 itself at its default security level: lower it, so the
    // refusal seen is the gateway's.
    let before = failures(&gw, "version");
    let out = s_client(
        gw.addr(),
        &[
            "-servername",
            "a.test",
            "-tls1_1",
            "-cipher",
            "DEFAULT@SECLEVEL=0",
        ],
    );
    assert!(!out.contains("New, TLSv1.1"), "TLS 1.1 accepted: {out}");
    assert!(out.contains("alert"), "no alert for TLS 1.1: {out}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while failures(&gw, "version") <= before {
        assert!(
            Instant::now() < deadline,
            "the refused TLS 1.1 handshake was not counted"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Writes a new certificate for `a.test` with `serial` into the files the gateway
/// reads (`a.crt`, `a.key`), each replaced in one rename.
fn replace_a(ca: &TestCa, file: &ConfigFile, serial: u64) {
    let staged = ca.issue(file.dir(), "a-next", &["a.test"], KeyKind::Ecdsa, serial);
    std::fs::rename(&staged.key, file.sibling("a.key")).unwrap();
    std::fs::rename(&staged.cert, file.sibling("a.crt")).unwrap();
}

#[test]
fn certificate_reload_under_keepalive_load_fails_no_request() {
    let up = TestUpstream::start("stable");
    let ca = TestCa::new("reload CA");
    let file = ConfigFile::new("");
    let gw = sni_gateway(&ca, &file, &up.addr_str());
    let config = client_config(&[ca.der()], &[b"http/1.1"]);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let connected = Arc::new(std::sync::Barrier::new(5));
    let workers: Vec<_> = (0..4)
        .map(|i| {
            let (stop, ok, failed, config, connected) = (
                Arc::clone(&stop),
                Arc::clone(&ok),
                Arc::clone(&failed),
                Arc::clone(&config),
                Arc::clone(&connected),
            );
            let addr = gw.addr();
            thread::spawn(move || {
                // Keep-alive connections opened before any reload keep their certificate.
                let mut c = Client::connect_tls(addr, config, "a.test").unwrap();
                let first = c.peer_serial();
                connected.wait();
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    match c.get(&format!("/?{i}-{n}")) {
                        Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::SeqCst),
                        _ => failed.fetch_add(1, Ordering::SeqCst),
                    };
                    n += 1;
                }
                assert_eq!(c.peer_serial(), first);
                first
            })
        })
        .collect();
    connected.wait();
    let mut admin = AdminConn::connect(gw.admin_socket()).unwrap();
    for serial in [0xa2, 0xa3, 0xa4] {
        replace_a(&ca, &file, serial);
        let r = admin.cmd(if serial == 0xa3 {
            "reload tls"
        } else {
            "reload"
        });
        assert!(r.ok, "reload: {}", r.text);
        // Every new handshake now gets the new certificate.
        for _ in 0..3 {
            let c = Client::connect_tls(gw.addr(), Arc::clone(&config), "a.test").unwrap();
            assert_eq!(c.peer_serial(), Some(serial_hex(serial)));
        }
        thread::sleep(Duration::from_millis(300));
    }
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        assert_eq!(w.join().unwrap(), Some(serial_hex(0xa1)));
    }
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "failed requests during reloads"
    );
    assert!(ok.load(Ordering::SeqCst) > 100, "too little load: {ok:?}");
}

#[test]
fn broken_or_mismatched_key_on_reload_is_refused_and_the_old_certificate_serves() {
    let up = TestUpstream::start("stable");
    let ca = TestCa::new("refuse CA");
    let file = ConfigFile::new("");
    let gw = sni_gateway(&ca, &file, &up.addr_str());
    let config = client_config(&[ca.der()], &[b"http/1.1"]);
    let serial = || {
        Client::connect_tls(gw.addr(), Arc::clone(&config), "a.test")
            .unwrap()
            .peer_serial()
    };
    let mut admin = AdminConn::connect(gw.admin_socket()).unwrap();
    // A broken key file.
    std::fs::write(
        file.sibling("a.key"),
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    for cmd in ["reload", "reload tls"] {
        let r = admin.cmd(cmd);
        assert!(!r.ok && r.text.contains("a.key"), "{cmd}: {}", r.text);
        assert_eq!(serial(), Some(serial_hex(0xa1)));
    }
    // A key that belongs to another certificate.
    let other = ca.issue(file.dir(), "other", &["other.test"], KeyKind::Ecdsa, 0xee);
    std::fs::copy(&other.key, file.sibling("a.key")).unwrap();
    let r = admin.cmd("reload");
    assert!(!r.ok && r.text.contains("does not match"), "{}", r.text);
    assert_eq!(serial(), Some(serial_hex(0xa1)));
    // A certificate file that is not one.
    replace_a(&ca, &file, 0xa5);
    std::fs::write(file.sibling("a.crt"), "junk\n").unwrap();
    let r = admin.cmd("reload tls");
    assert!(!r.ok && r.text.contains("a.crt"), "{}", r.text);
    assert_eq!(serial(), Some(serial_hex(0xa1)));
    // Fixed: taken.
    replace_a(&ca, &file, 0xa6);
    let r = admin.cmd("reload tls");
    assert!(r.ok, "{}", r.text);
    assert_eq!(serial(), Some(serial_hex(0xa6)));
}

#[test]
fn handshake_slowloris_and_garbage_are_closed_without_touching_others() {
    let up = TestUpstream::start("stable");
    let ca = TestCa::new("slow CA");
    let dir = tests::TempDir::new("tls-slow");
    let cert = ca.issue(dir.path(), "gw", &["a.test"], KeyKind::Ecdsa, 7);
    let gw = GatewayProc::start(&[
        "--stable",
        &up.addr_str(),
        "--tls-cert",
        &cert.cert.to_string_lossy(),
        "--tls-key",
        &cert.key.to_string_lossy(),
        "--tls-handshake-timeout",
        "1s",
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    let config = client_config(&[ca.der()], &[b"http/1.1"]);
    // A client that is in the middle of its keep-alive connection throughout.
    let mut good = Client::connect_tls(gw.addr(), Arc::clone(&config), "a.test").unwrap();
    assert_eq!(good.get("/").unwrap().status, 200);

    // The start of a ClientHello record, and then nothing.
    let started = Instant::now();
    let mut slow = TcpStream::connect(gw.addr()).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    slow.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    // Garbage instead of a ClientHello: closed at once (after an alert).
    let mut garbage = TcpStream::connect(gw.addr()).unwrap();
    garbage
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .unwrap();
    let mut sink = Vec::new();
    let _ = garbage.read_to_end(&mut sink);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "garbage kept open"
    );
    assert!(
        !String::from_utf8_lossy(&sink).contains("HTTP/1.1"),
        "garbage was answered as HTTP: {sink:?}"
    );
    assert_eq!(good.get("/").unwrap().status, 200);
    let mut byte = [0u8; 64];
    let got = slow.read(&mut byte);
    let waited = started.elapsed();
    assert!(matches!(got, Ok(0) | Err(_)), "slow handshake got {got:?}");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "slow handshake closed after {waited:?}, timeout 1s"
    );
    assert_eq!(good.get("/").unwrap().status, 200);
    let fresh = Client::connect_tls(gw.addr(), config, "a.test").unwrap();
    assert!(fresh.peer_serial().is_some());
    assert!(failures(&gw, "timeout") >= 1);
    assert!(failures(&gw, "protocol") >= 1);
}

#[test]
fn upstream_tls_verifies_against_the_ca_file_and_says_why_it_refuses() {
    let ca = TestCa::new("upstream CA");
    let wrong = TestCa::new("someone else");
    let client_ca = TestCa::new("client CA");
    let file = ConfigFile::new("");
    let dir = file.dir();
    let up_cert = ca.issue(dir, "up", &["up.test", "127.0.0.1"], KeyKind::Ecdsa, 3);
    let up = ServerProc::node_https("tls-up", &up_cert.cert, &up_cert.key, None);
    let client_ca_file = client_ca.write_pem(dir, "client-ca.pem");
    let mtls = ServerProc::node_https(
        "mtls-up",
        &up_cert.cert,
        &up_cert.key,
        Some(&client_ca_file),
    );
    client_ca.issue(dir, "me", &["gateway.client"], KeyKind::Ecdsa, 9);
    ca.write_pem(dir, "ca.pem");
    wrong.write_pem(dir, "wrong.pem");
    let (a, m) = (up.addr(), mtls.addr());
    let admin_socket = file.sibling("admin.sock");
    file.write(&format!(
        r#"
[server]
admin_socket = "{admin}"

[[stage]]
name = "s"
listen = "127.0.0.1:0"

[[stage.route]]
name = "good"
path_prefix = "/good"
health_check = {{ path = "/health", interval = "200ms", rise = 1, fall = 1 }}
stable = {{ id = "v1", endpoints = ["https://{a}"], tls = {{ ca_file = "ca.pem" }} }}

[[stage.route]]
name = "byname"
path_prefix = "/byname"
stable = {{ id = "v1", endpoints = ["https://{a}"], tls = {{ ca_file = "ca.pem", server_name = "up.test" }} }}

[[stage.route]]
name = "wrongca"
path_prefix = "/wrongca"
health_check = {{ path = "/health", interval = "200ms", rise = 1, fall = 1 }}
stable = {{ id = "v1", endpoints = ["https://{a}"], tls = {{ ca_file = "wrong.pem" }} }}

[[stage.route]]
name = "wrongname"
path_prefix = "/wrongname"
stable = {{ id = "v1", endpoints = ["https://{a}"], tls = {{ ca_file = "ca.pem", server_name = "elsewhere.test" }} }}

[[stage.route]]
name = "mtls"
path_prefix = "/mtls"
stable = {{ id = "v1", endpoints = ["https://{m}"], tls = {{ ca_file = "ca.pem", client_cert = "me.crt", client_key = "me.key" }} }}

[[stage.route]]
name = "nocert"
path_prefix = "/nocert"
stable = {{ id = "v1", endpoints = ["https://{m}"], tls = {{ ca_file = "ca.pem" }} }}
"#,
        admin = admin_socket.display()
    ));
    let gw = GatewayProc::start_config(
        file.path(),
        &Expect::stages(1).with_admin(),
        &["--kernel-accounting", "off"],
    );
    let mut c = Client::connect(gw.addr()).unwrap();
    for path in ["/good/a", "/byname/b", "/good/c"] {
        let r = c.get(path).unwrap();
        assert_eq!(
            (r.status, r.text()),
            (200, format!("tls-up {path}\n")),
            "{}",
            r.describe()
        );
    }
    let r = c.get("/mtls/x").unwrap();
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(r.header("x-client-cert"), Some("gateway.client"));
    for (path, why) in [
        ("/wrongca/x", "not signed by a trusted CA"),
        ("/wrongname/x", "does not name the endpoint"),
        ("/nocert/x", "refused the TLS session with an alert"),
    ] {
        let mut c = Client::connect(gw.addr()).unwrap();
        let r = c.get(path).unwrap();
        assert_eq!(r.status, 502, "{path}: {}", r.describe());
        assert!(r.text().contains(why), "{path}: {}", r.text());
    }
    // Health checks of https:// endpoints run over TLS with the deployment's settings:
    // up with the right CA, down (and why) with the wrong one.
    let mut admin = AdminConn::connect(gw.admin_socket()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let shown = admin.cmd("show endpoints json").json();
        let item = |route: &str| {
            shown["endpoints"]
                .as_array()
                .and_then(|a| a.iter().find(|i| i["route"] == route).cloned())
                .unwrap_or_default()
        };
        let (good, bad) = (item("good"), item("wrongca"));
        let detail = bad["check"]["last"]["detail"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        if good["state"] == "up"
            && good["check"]["last"]["detail"] == "status 200"
            && bad["state"] == "down"
            && detail.contains("TLS")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "checks over TLS: good {good}, wrong CA {bad}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn sessions_resume_with_tickets_across_a_certificate_reload() {
    let up = TestUpstream::start("stable");
    let ca = TestCa::new("resume CA");
    let file = ConfigFile::new("");
    let gw = sni_gateway(&ca, &file, &up.addr_str());
    let config = tests::tls::resuming_client_config(&[ca.der()], &[b"http/1.1"]);
    let kind = |config: &Arc<rustls::ClientConfig>| {
        let mut c = Client::connect_tls(gw.addr(), Arc::clone(config), "a.test").unwrap();
        // The ticket arrives after the handshake; one exchange reads it.
        assert_eq!(c.get("/").unwrap().status, 200);
        c.handshake_kind()
    };
    assert_eq!(kind(&config), Some(rustls::HandshakeKind::Full));
    assert_eq!(kind(&config), Some(rustls::HandshakeKind::Resumed));
    // Ticket keys outlive a certificate reload.
    replace_a(&ca, &file, 0xa7);
    let mut admin = AdminConn::connect(gw.admin_socket()).unwrap();
    assert!(admin.cmd("reload tls").ok);
    assert_eq!(kind(&config), Some(rustls::HandshakeKind::Resumed));
    // TLS 1.2 resumes too (openssl: session file out, then in).
    let sess = file.sibling("s.pem");
    let sess = sess.to_string_lossy();
    let out = s_client(
        gw.addr(),
        &["-servername", "a.test", "-tls1_2", "-sess_out", &sess],
    );
    assert!(out.contains("New, TLSv1.2"), "{out}");
    let out = s_client(
        gw.addr(),
        &["-servername", "a.test", "-tls1_2", "-sess_in", &sess],
    );
    assert!(out.contains("Reused, TLSv1.2"), "{out}");
    let p = gw.scrape();
    assert!(p.int("canarygate_tls_handshakes_total", &[("kind", "resumed")]) >= 3);
    assert!(p.int("canarygate_tls_handshakes_total", &[("kind", "full")]) >= 2);
}

#[test]
fn handshakes_beyond_the_per_worker_limit_are_closed_at_once() {
    let up = TestUpstream::start("stable");
    let ca = TestCa::new("limit CA");
    let dir = tests::TempDir::new("tls-limit");
    let cert = ca.issue(dir.path(), "gw", &["a.test"], KeyKind::Ecdsa, 8);
    let gw = GatewayProc::start(&[
        "--stable",
        &up.addr_str(),
        "--workers",
        "1",
        "--tls-cert",
        &cert.cert.to_string_lossy(),
        "--tls-key",
        &cert.key.to_string_lossy(),
        "--max-tls-handshakes",
        "1",
        "--tls-handshake-timeout",
        "2s",
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    let config = client_config(&[ca.der()], &[b"http/1.1"]);
    // One handshake that never finishes holds the only slot...
    let mut slow = TcpStream::connect(gw.addr()).unwrap();
    slow.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).unwrap();
    thread::sleep(Duration::from_millis(200));
    // ...so the next one is closed at once, not queued.
    let started = Instant::now();
    let refused = Client::connect_tls(gw.addr(), Arc::clone(&config), "a.test");
    assert!(
        refused.is_err(),
        "a handshake beyond the limit went through"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(failures(&gw, "overload") >= 1);
    // Once the slow one timed out, handshakes go through again.
    let mut byte = [0u8; 1];
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = slow.read(&mut byte);
    let mut c = Client::connect_tls(gw.addr(), config, "a.test").unwrap();
    assert_eq!(c.get("/").unwrap().status, 200);
    assert_eq!(
        gw.scrape()
            .int("canarygate_tls_handshakes_in_progress", &[]),
        0
    );
}
