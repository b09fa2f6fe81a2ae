//! The admin socket: every command end to end over the real Unix socket and through
//! `canarygate ctl` (the same script runs both ways), its errors, the 4096-byte line limit,
//! the socket's file mode, and that another user cannot use it.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use tests::{
    AdminConn, Client, ConfigFile, Expect, GatewayProc, Reply, Response, TempDir, TestUpstream,
    ctl, free_port, gateway_bin, get_with, run_program,
};

/// A gateway with an admin socket and two routes: `api` (stable v1, canary v2 at 5 %,
/// adding `x-color: ${stageVariables.color}` upstream) and `web` (no canary).
struct Fixture {
    listen: String,
    stable: TestUpstream,
    canary: TestUpstream,
    canary3: TestUpstream,
    file: ConfigFile,
    gw: GatewayProc,
}

fn config(listen: &str, stable: &str, canary: &str, percent: &str, color: &str) -> String {
    format!(
        r#"[server]
workers = 2
admin_socket = "ADMIN"

[[stage]]
name = "prod"
listen = "{listen}"

[[stage.route]]
name = "api"
request_headers = {{ "x-color" = "${{stageVariables.color}}" }}
stable = {{ id = "v1", endpoints = ["{stable}"], variables = {{ color = "{color}" }} }}
canary = {{ id = "v2", endpoints = ["{canary}"], percent = {percent} }}

[[stage.route]]
name = "web"
path_prefix = "/web"
stable = {{ id = "w1", endpoints = ["{stable}"] }}
"#
    )
}

impl Fixture {
    fn start() -> Self {
        let stable = TestUpstream::start("stable");
        let canary = TestUpstream::start("canary");
        let canary3 = TestUpstream::start("canary3");
        // A fixed port rather than 127.0.0.1:0, so `reload` sees the same listen address
        // (reloading a port-0 file is checked on its own in the config tests).
        let file = ConfigFile::new("");
        let listen = format!("127.0.0.1:{}", free_port());
        file.write(&self_config(&file, &listen, &stable, &canary, "5", "blue"));
        let gw = GatewayProc::start_config(file.path(), &Expect::stages(1).with_admin(), &[]);
        assert_eq!(gw.admin_socket(), file.sibling("admin.sock"));
        Self {
            listen,
            stable,
            canary,
            canary3,
            file,
            gw,
        }
    }

    fn socket(&self) -> &Path {
        self.gw.admin_socket()
    }

    /// One request on a new connection; `extra` header lines end in CRLF.
    fn get(&self, extra: &str) -> Response {
        Client::connect(self.gw.addr())
            .and_then(|mut c| c.request(&get_with("/", "canarygate.test", extra)))
            .expect("request through the gateway")
    }

    /// Sends `n` requests and returns how many each upstream answered, by name.
    fn spread(&self, n: usize, extra: &str) -> Vec<String> {
        (0..n)
            .map(|_| {
                let r = self.get(extra);
                assert_eq!(r.status, 200, "{}", r.describe());
                r.header("x-upstream").unwrap_or_default().to_owned()
            })
            .collect()
    }
}

/// The config text for `file`'s directory (the admin socket lives beside the file).
fn self_config(
    file: &ConfigFile,
    listen: &str,
    stable: &TestUpstream,
    canary: &TestUpstream,
    percent: &str,
    color: &str,
) -> String {
    config(
        listen,
        &stable.addr_str(),
        &canary.addr_str(),
        percent,
        color,
    )
    .replace("ADMIN", &file.sibling("admin.sock").to_string_lossy())
}

/// `show canary ROUTE json`, the one route's object.
fn canary_json(send: &mut dyn FnMut(&str) -> Reply, route: &str) -> Value {
    let r = send(&format!("show canary {route} json"));
    assert!(r.ok, "{}", r.text);
    let v = r.json();
    assert_eq!(v["routes"].as_array().map(Vec::len), Some(1), "{v}");
    v["routes"][0].clone()
}

fn version(send: &mut dyn FnMut(&str) -> Reply) -> u64 {
    let r = send("show version");
    assert!(r.ok, "{}", r.text);
    r.text
        .strip_prefix("version ")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("`show version` answered {:?}", r.text))
}

fn must(send: &mut dyn FnMut(&str) -> Reply, line: &str) -> String {
    let r = send(line);
    assert!(r.ok, "{line:?} failed: {}", r.text);
    r.text
}

/// Every command, its documented answer and its effect on traffic, through `send`.
fn script(fx: &Fixture, send: &mut dyn FnMut(&str) -> Reply) {
    let help = must(send, "help");
    for cmd in [
        "show version",
        "show canary",
        "show stats",
        "set canary",
        "percent",
        "var",
        "deployment",
        "del canary",
        "promote",
        "rollback",
        "reload",
        "expect",
    ] {
        assert!(help.contains(cmd), "help does not mention {cmd:?}:\n{help}");
    }
    let v0 = version(send);
    let (s, c, c3) = (
        fx.stable.addr_str(),
        fx.canary.addr_str(),
        fx.canary3.addr_str(),
    );

    let human = must(send, "show canary");
    for word in ["api", "web", "v1", "v2", "w1"] {
        assert!(human.contains(word), "show canary lacks {word:?}:\n{human}");
    }
    let human = must(send, "show canary api");
    assert!(human.contains("v2") && !human.contains("w1"), "{human}");
    let all = send("show canary json").json();
    assert_eq!(all["version"], json!(v0), "{all}");
    let api = all["routes"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["route"] == "api"))
        .cloned()
        .unwrap_or_else(|| panic!("no route api in {all}"));
    let web = all["routes"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["route"] == "web"))
        .cloned()
        .unwrap_or_else(|| panic!("no route web in {all}"));
    assert_eq!(
        (&api["stage"], &api["path_prefix"], &api["host"]),
        (&json!("prod"), &json!("/"), &Value::Null),
        "{api}"
    );
    assert_eq!(
        (
            &api["assignment"],
            &api["force_header"],
            &api["force_cookie"]
        ),
        (&json!("random"), &json!("x-canary"), &json!("canary")),
        "{api}"
    );
    assert_eq!(
        api["stable"],
        json!({"id": "v1", "endpoints": [s], "variables": {"color": "blue"}})
    );
    assert_eq!(
        api["canary"],
        json!({"id": "v2", "endpoints": [c], "percent": "5", "ppm": 50_000, "variables": {}})
    );
    assert_eq!(web["canary"], Value::Null, "{web}");
    assert_eq!(web["path_prefix"], json!("/web"), "{web}");

    // Stats count exactly what was sent, per variant (forced, so the counts are known).
    fx.spread(20, "x-canary: always\r\n");
    fx.spread(30, "x-canary: never\r\n");
    assert!(must(send, "show stats").contains("api"));
    let st = send("show stats api json").json();
    assert_eq!(st["version"], json!(v0), "{st}");
    let r = &st["routes"][0];
    assert_eq!(
        (&r["route"], &r["stage"], &r["canary_percent"]),
        (&json!("api"), &json!("prod"), &json!("5")),
        "{st}"
    );
    for (variant, deployment, n) in [("stable", "v1", 30), ("canary", "v2", 20)] {
        let v = &r[variant];
        assert_eq!(v["deployment"], json!(deployment), "{st}");
        let stats = &v["stats"];
        assert_eq!(stats["requests"], json!(n), "{variant}: {st}");
        assert_eq!(stats["responses"]["2xx"], json!(n), "{variant}: {st}");
        assert_eq!(stats["in_flight"], json!(0), "{variant}: {st}");
        for key in [
            "retries",
            "stale_retries",
            "upstream_connects",
            "upstream_reuses",
            "bytes_in",
            "bytes_out",
        ] {
            assert!(stats[key].is_u64(), "{variant}.{key}: {st}");
        }
        for key in ["1xx", "2xx", "3xx", "4xx", "5xx"] {
            assert!(stats["responses"][key].is_u64(), "{variant} {key}: {st}");
        }
        for key in [
            "connect",
            "connect_timeout",
            "closed",
            "response_timeout",
            "bad_response",
        ] {
            assert_eq!(
                stats["upstream_errors"][key],
                json!(0),
                "{variant} {key}: {st}"
            );
        }
        for key in ["p50", "p90", "p99", "max"] {
            assert!(stats["latency_us"][key].is_u64(), "{variant} {key}: {st}");
        }
        for key in ["p50", "p99"] {
            assert!(
                stats["upstream_latency_us"][key].is_u64(),
                "{variant} {key}: {st}"
            );
        }
    }
    let both = send("show stats json").json();
    assert_eq!(both["routes"].as_array().map(Vec::len), Some(2), "{both}");

    // set canary ROUTE percent P
    assert_eq!(
        must(send, "set canary api percent 10"),
        format!("route api: canary percent 5 -> 10 (version {})", v0 + 1)
    );
    assert_eq!(version(send), v0 + 1);
    must(send, "set canary api percent 100");
    assert!(fx.spread(10, "").iter().all(|u| u == "canary"));
    assert_eq!(canary_json(send, "api")["canary"]["ppm"], json!(1_000_000));

    // set / del canary ROUTE var KEY VALUE
    must(send, "set canary api var color green");
    assert_eq!(
        canary_json(send, "api")["canary"]["variables"],
        json!({"color": "green"})
    );
    fx.spread(1, "");
    let seen = fx.canary.last_request().expect("canary saw a request");
    assert_eq!(seen.header_values("x-color"), ["green"]);
    must(send, "del canary api var color");
    assert_eq!(canary_json(send, "api")["canary"]["variables"], json!({}));
    fx.spread(1, "");
    let seen = fx.canary.last_request().expect("canary saw a request");
    assert_eq!(seen.header_values("x-color"), ["blue"]);

    // set canary ROUTE deployment ID ADDR
    must(send, &format!("set canary api deployment v3 {c3}"));
    let api = canary_json(send, "api");
    assert_eq!(
        (
            &api["canary"]["id"],
            &api["canary"]["endpoints"],
            &api["canary"]["percent"]
        ),
        (&json!("v3"), &json!([c3]), &json!("100")),
        "{api}"
    );
    assert!(fx.spread(10, "").iter().all(|u| u == "canary3"));

    // rollback: 0 % at once, canary kept
    must(send, "rollback api");
    let api = canary_json(send, "api");
    assert_eq!(
        (
            &api["canary"]["id"],
            &api["canary"]["percent"],
            &api["canary"]["ppm"]
        ),
        (&json!("v3"), &json!("0"), &json!(0)),
        "{api}"
    );
    assert!(fx.spread(10, "").iter().all(|u| u == "stable"));

    // expect VERSION: applies at the current version, refused at a stale one
    let v = version(send);
    must(send, &format!("expect {v} set canary api percent 50"));
    let stale = send(&format!("expect {v} set canary api percent 1"));
    assert!(
        !stale.ok && stale.text.starts_with("error: version mismatch"),
        "stale expect: {stale:?}"
    );
    assert_eq!(
        version(send),
        v + 1,
        "a refused command changed the version"
    );
    assert_eq!(canary_json(send, "api")["canary"]["percent"], json!("50"));

    // promote: the canary becomes stable, canary gone
    must(send, "promote api");
    let api = canary_json(send, "api");
    assert_eq!(api["canary"], Value::Null, "{api}");
    assert_eq!(
        (&api["stable"]["id"], &api["stable"]["endpoints"]),
        (&json!("v3"), &json!([c3])),
        "{api}"
    );
    assert!(fx.spread(10, "").iter().all(|u| u == "canary3"));

    // reload: the file is the truth again, with its new values
    fx.file.write(&self_config(
        &fx.file, &fx.listen, &fx.stable, &fx.canary, "7", "red",
    ));
    let reply = must(send, "reload");
    let now = version(send);
    assert_eq!(
        reply.lines().last(),
        Some(format!("reloaded (version {now})").as_str()),
        "{reply}"
    );
    let api = canary_json(send, "api");
    assert_eq!(
        (&api["stable"]["id"], &api["stable"]["variables"]["color"]),
        (&json!("v1"), &json!("red")),
        "{api}"
    );
    assert_eq!(
        (&api["canary"]["id"], &api["canary"]["percent"]),
        (&json!("v2"), &json!("7")),
        "{api}"
    );

    // Errors: one line each, nothing changes.
    let before = version(send);
    for (bad, mentions) in [
        ("frobnicate", "frobnicate"),
        ("set canary api percent 150", "150"),
        ("set canary api percent abc", "abc"),
        ("set canary nosuch percent 5", "nosuch"),
        ("show canary nosuch", "nosuch"),
        ("show stats nosuch json", "nosuch"),
        ("promote nosuch", "nosuch"),
        ("rollback nosuch", "nosuch"),
        ("set canary web percent 5", "web"),
        ("set canary api deployment v9 nowhere", "nowhere"),
        ("expect abc promote api", "abc"),
    ] {
        let r = send(bad);
        assert!(
            !r.ok && r.text.starts_with("error: ") && !r.text.contains('\n'),
            "{bad:?} answered {r:?}"
        );
        assert!(
            r.text.contains(mentions),
            "{bad:?}: {:?} lacks {mentions:?}",
            r.text
        );
    }
    assert_eq!(version(send), before, "an error changed the version");
}

#[test]
fn admin_commands_over_the_socket() {
    let fx = Fixture::start();
    let mut admin = AdminConn::connect(fx.socket()).expect("connect to the admin socket");
    script(&fx, &mut |line| admin.cmd(line));
    // A line over 4096 bytes: one error, then the gateway closes the connection.
    let long = format!("show canary {}", "x".repeat(5000));
    let r = admin.send(&long).expect("a reply to the long line");
    assert_eq!(r.text, "error: command longer than 4096 bytes");
    assert!(
        admin.closed_within(Duration::from_secs(5)),
        "connection still open after the too-long line"
    );
    // The gateway is fine: a new connection works.
    let mut again = AdminConn::connect(fx.socket()).unwrap();
    assert!(again.ok("show version").starts_with("version "));
    // Mutations are audit-logged (target canarygate::audit), reads are not.
    let audit: Vec<String> = fx
        .gw
        .stderr()
        .lines()
        .filter(|l| l.contains("canarygate::audit"))
        .map(str::to_owned)
        .collect();
    for cmd in [
        "set canary api percent 10",
        "set canary api var color green",
        "del canary api var color",
        "rollback api",
        "promote api",
        "reload",
    ] {
        assert!(
            audit.iter().any(|l| l.contains(cmd)),
            "no audit line for {cmd:?}: {audit:#?}"
        );
    }
    assert!(
        !audit.iter().any(|l| l.contains("show canary")),
        "reads are audit-logged: {audit:#?}"
    );
}

#[test]
fn admin_commands_through_ctl() {
    let fx = Fixture::start();
    let socket = fx.socket().to_owned();
    script(&fx, &mut |line| {
        let words: Vec<&str> = line.split_whitespace().collect();
        let out = ctl(&socket, &words);
        let code = out.status.and_then(|s| s.code());
        let text = out.stdout.trim_end().to_owned();
        assert!(
            code == Some(0) || code == Some(1),
            "ctl {line:?}: exit {:?}; stderr {:?}",
            out.status,
            out.stderr
        );
        assert_eq!(
            code == Some(1),
            text.starts_with("error: "),
            "ctl {line:?}: exit {code:?} but stdout {text:?}, stderr {:?}",
            out.stderr
        );
        Reply {
            ok: code == Some(0),
            text,
        }
    });
    let long = "x".repeat(5000);
    let out = ctl(&socket, &["show", "canary", &long]);
    assert_eq!(out.status.and_then(|s| s.code()), Some(1), "{out:?}");
    assert!(
        out.stdout.contains("error: command longer than 4096 bytes"),
        "{out:?}"
    );
    // ctl without a gateway behind the socket: exit 1 and an error on stderr.
    let out = ctl(&fx.file.sibling("nobody-here.sock"), &["show", "version"]);
    assert_eq!(out.status.and_then(|s| s.code()), Some(1), "{out:?}");
    assert!(out.stderr.starts_with("error:"), "{out:?}");
}

/// The effective uid of this process (from `/proc/self/status`).
fn euid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let uids = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    uids.split_whitespace().nth(1)?.parse().ok()
}

/// `program ARGS` run as `nobody` (uid/gid 65534, no groups).
fn as_nobody(program: &Path, args: &[&str]) -> tests::CliOutput {
    let program = program.to_string_lossy();
    let mut full = vec![
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        program.as_ref(),
    ];
    full.extend_from_slice(args);
    run_program("setpriv".as_ref(), &full, Duration::from_secs(20))
}

/// A `canarygate` binary that `nobody` can execute: the built one if its path is open to
/// everyone, otherwise a copy in a world-readable temp dir.
fn binary_for_nobody(keep: &TempDir) -> PathBuf {
    let bin = gateway_bin();
    if as_nobody(&bin, &["--version"])
        .status
        .is_some_and(|s| s.success())
    {
        return bin;
    }
    let copy = keep.path().join("canarygate");
    fs::copy(&bin, &copy).expect("copy canarygate");
    fs::set_permissions(keep.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).unwrap();
    let out = as_nobody(&copy, &["--version"]);
    assert!(
        out.status.is_some_and(|s| s.success()),
        "nobody cannot run a copy of canarygate either: {out:?}"
    );
    copy
}

#[test]
fn admin_socket_is_mode_0600_and_refuses_other_users() {
    let fx = Fixture::start();
    let socket = fx.socket().to_owned();
    let meta = fs::metadata(&socket).expect("stat the admin socket");
    assert!(
        meta.file_type().is_socket(),
        "{} is not a socket",
        socket.display()
    );
    assert_eq!(
        meta.mode() & 0o7777,
        0o600,
        "admin socket mode is {:o}",
        meta.mode() & 0o7777
    );
    let me = euid();
    assert_eq!(Some(meta.uid()), me, "socket owner");

    if me != Some(0) {
        eprintln!(
            "SKIPPED the second-user check: it needs root to run a command as nobody \
             (running as uid {me:?})"
        );
        return;
    }
    if run_program("setpriv".as_ref(), &["--help"], Duration::from_secs(5))
        .status
        .is_none_or(|s| !s.success())
    {
        eprintln!("SKIPPED the second-user check: setpriv(1) is not installed");
        return;
    }
    // Only the socket's own mode may stand between nobody and the socket.
    fs::set_permissions(fx.file.dir(), fs::Permissions::from_mode(0o755)).unwrap();
    let keep = TempDir::new("nobody-bin");
    let bin = binary_for_nobody(&keep);
    let sock = socket.to_string_lossy();
    let args = ["ctl", "--socket", sock.as_ref(), "show", "version"];
    let out = as_nobody(&bin, &args);
    assert!(
        out.status.is_some_and(|s| !s.success()),
        "nobody ran `ctl show version`: {out:?}"
    );
    assert!(
        out.stderr.contains("Permission denied") && !out.stdout.contains("version"),
        "nobody's ctl should fail with permission denied: {out:?}"
    );
    // Even with the file mode opened up, the gateway itself refuses another user.
    fs::set_permissions(&socket, fs::Permissions::from_mode(0o666)).unwrap();
    let out = as_nobody(&bin, &args);
    fs::set_permissions(&socket, fs::Permissions::from_mode(0o600)).unwrap();
    assert!(
        out.status.is_some_and(|s| !s.success()) && !out.stdout.contains("version"),
        "with the socket at 0666, nobody got an answer: {out:?}"
    );
    // The owner still can.
    let out = ctl(&socket, &["show", "version"]);
    assert!(out.stdout.starts_with("version "), "{out:?}");
}
