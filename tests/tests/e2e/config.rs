//! The configuration file: `check-config` accepts a good file and rejects bad ones with
//! one `error:` line naming the line; `run --config` serves several stages, routing by
//! host first and then by the longest path prefix, with 404 when no route matches; and
//! `reload` re-reads the file but refuses listener changes and broken files.

use std::time::Duration;

use tests::{
    AdminConn, Client, ConfigFile, Expect, GatewayProc, TestUpstream, free_port, get_with, run_cli,
};

/// A file with two stages and three routes, every optional field used once.
fn good_config(a: &str, b: &str) -> String {
    format!(
        r#"[server]
workers = 2
variant_header = "x-canarygate-variant"
header_timeout = "5s"
max_body_bytes = 1048576

[[stage]]
name = "prod"
listen = "127.0.0.1:0"

[[stage.route]]
name = "api"
host = "api.example.com"
path_prefix = "/api"
strip_path_prefix = true
upstream_path_prefix = "/${{stageVariables.version}}"
request_headers = {{ "x-version" = "${{stageVariables.version}}" }}
assignment = "sticky"
sticky_key = "header:x-user"
sticky_salt = "api-salt"
force_header = "x-force"
force_cookie = "force"
stable = {{ id = "v1", endpoints = ["{a}"], variables = {{ version = "v1" }} }}
canary = {{ id = "v2", endpoints = ["{b}"], percent = 5.5, variables = {{ version = "v2" }} }}

[[stage.route]]
name = "web"
stable = {{ id = "w1", endpoints = ["{a}", "{b}"] }}

[[stage]]
name = "beta"
listen = "127.0.0.2:0"

[[stage.route]]
name = "beta-all"
assignment = "sticky"
sticky_key = "ip"
stable = {{ id = "b1", endpoints = ["{a}"] }}
canary = {{ id = "b2", endpoints = ["{b}"], percent = "0.0001" }}
"#
    )
}

#[test]
fn check_config_accepts_a_good_file() {
    let file = ConfigFile::new(&good_config("127.0.0.1:9001", "127.0.0.1:9002"));
    let path = file.path().to_string_lossy().into_owned();
    let out = run_cli(&["check-config", &path], Duration::from_secs(10));
    assert_eq!(
        out.status.and_then(|s| s.code()),
        Some(0),
        "check-config {path}: stdout {:?} stderr {:?}",
        out.stdout,
        out.stderr
    );
    assert_eq!(
        out.stdout.trim(),
        format!("{path}: ok (2 stage(s), 3 route(s))"),
        "stderr {:?}",
        out.stderr
    );
}

/// One broken file: the text, the 1-based line that is wrong, and what the error must say
/// besides the line.
struct BadCase {
    what: &'static str,
    text: String,
    line: usize,
    mentions: &'static str,
}

/// A minimal valid file; `route_extra` is inserted as the route's last lines (line 8 on).
fn minimal(route_extra: &str, canary: &str) -> String {
    format!(
        "[[stage]]\nname = \"s\"\nlisten = \"127.0.0.1:0\"\n\n[[stage.route]]\nname = \"api\"\n\
         stable = {{ id = \"v1\", endpoints = [\"127.0.0.1:9001\"] }}\n{route_extra}{canary}"
    )
}

fn bad_cases() -> Vec<BadCase> {
    vec![
        BadCase {
            what: "unknown field in a route",
            text: minimal("colour = \"blue\"\n", ""),
            line: 8,
            mentions: "colour",
        },
        BadCase {
            what: "unknown field in [server]",
            text: format!("[server]\nworkers = 1\nturbo = true\n{}", minimal("", "")),
            line: 3,
            mentions: "turbo",
        },
        BadCase {
            what: "percent above 100",
            text: minimal(
                "",
                "canary = { id = \"v2\", endpoints = [\"127.0.0.1:9002\"], percent = 150 }\n",
            ),
            line: 8,
            mentions: "percent",
        },
        BadCase {
            what: "percent with 5 decimals",
            text: minimal(
                "",
                "canary = { id = \"v2\", endpoints = [\"127.0.0.1:9002\"], percent = \"0.00001\" }\n",
            ),
            line: 8,
            mentions: "percent",
        },
        BadCase {
            what: "endpoint without a port",
            text: minimal(
                "",
                "canary = { id = \"v2\", endpoints = [\"127.0.0.1\"], percent = 1 }\n",
            ),
            line: 8,
            mentions: "127.0.0.1",
        },
        BadCase {
            what: "endpoint that is not an address",
            text: minimal(
                "",
                "canary = { id = \"v2\", endpoints = [\"not an address\"], percent = 1 }\n",
            ),
            line: 8,
            mentions: "not an address",
        },
        BadCase {
            what: "h2 (HTTP/2 over TLS) with plain endpoints",
            text: minimal(
                "",
                "canary = { id = \"v2\", endpoints = [\"127.0.0.1:9002\"], protocol = \"h2\" }\n",
            ),
            line: 8,
            mentions: "h2c",
        },
        BadCase {
            what: "an upstream protocol that does not exist",
            text: minimal(
                "",
                "canary = { id = \"v2\", endpoints = [\"127.0.0.1:9002\"], protocol = \"spdy\" }\n",
            ),
            line: 8,
            mentions: "spdy",
        },
        BadCase {
            what: "a gRPC status code that does not exist",
            text: format!(
                "[server]\ngrpc_error_codes = [14, \"BROKEN\"]\n{}",
                minimal("", "")
            ),
            line: 2,
            mentions: "grpc_error_codes",
        },
        BadCase {
            what: "duplicate route name",
            text: minimal(
                "",
                "\n[[stage.route]]\npath_prefix = \"/b\"\nname = \"api\"\n\
                 stable = { id = \"v1\", endpoints = [\"127.0.0.1:9001\"] }\n",
            ),
            line: 11,
            mentions: "api",
        },
    ]
}

/// Whether `message` names `line` in either documented form: `FILE:LINE:` (semantic
/// errors) or `line LINE,` (unknown fields and syntax errors).
fn names_line(message: &str, path: &str, line: usize) -> bool {
    message.contains(&format!("{path}:{line}:")) || message.contains(&format!("line {line},"))
}

#[test]
fn check_config_rejects_bad_files_naming_the_line() {
    let mut failures = Vec::new();
    for case in bad_cases() {
        let file = ConfigFile::new(&case.text);
        let path = file.path().to_string_lossy().into_owned();
        let out = run_cli(&["check-config", &path], Duration::from_secs(10));
        let lines: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        let problem = match out.status {
            None => Some("still running after 10s".to_owned()),
            Some(s) if s.code() != Some(1) => Some(format!("exit status {s}, want 1")),
            Some(_) if lines.len() != 1 => Some(format!("{} stderr lines, want 1", lines.len())),
            Some(_) if !lines[0].starts_with("error:") => Some("no `error:` prefix".to_owned()),
            Some(_) if !names_line(lines[0], &path, case.line) => {
                Some(format!("does not name line {}", case.line))
            }
            Some(_) if !lines[0].contains(case.mentions) => {
                Some(format!("does not mention {:?}", case.mentions))
            }
            Some(_) if out.stdout.contains(": ok") => Some("stdout says ok".to_owned()),
            Some(_) => None,
        };
        if let Some(p) = problem {
            failures.push(format!(
                "{}: {p}; stderr {:?}; file:\n{}",
                case.what, out.stderr, case.text
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn run_config_serves_two_stages_by_host_and_longest_prefix() {
    let ups: Vec<TestUpstream> = ["root", "api", "apiv2", "hosted", "beta"]
        .into_iter()
        .map(TestUpstream::start)
        .collect();
    let ep = |i: usize| ups[i].addr_str();
    let text = format!(
        r#"[server]
workers = 2

[[stage]]
name = "prod"
listen = "127.0.0.1:0"

[[stage.route]]
name = "root"
stable = {{ id = "r", endpoints = ["{}"] }}

[[stage.route]]
name = "api"
path_prefix = "/api"
stable = {{ id = "a", endpoints = ["{}"] }}

[[stage.route]]
name = "apiv2"
path_prefix = "/api/v2"
stable = {{ id = "a2", endpoints = ["{}"] }}

[[stage.route]]
name = "hosted"
host = "api.example.com"
stable = {{ id = "h", endpoints = ["{}"] }}

[[stage]]
name = "beta"
listen = "127.0.0.2:0"

[[stage.route]]
name = "beta-b"
host = "b.example"
path_prefix = "/b"
stable = {{ id = "b", endpoints = ["{}"] }}
"#,
        ep(0),
        ep(1),
        ep(2),
        ep(3),
        ep(4)
    );
    let file = ConfigFile::new(&text);
    let gw = GatewayProc::start_config(file.path(), &Expect::stages(2), &[]);
    let [prod, beta] = [gw.addrs()[0], gw.addrs()[1]];
    assert_eq!(
        prod.ip().to_string(),
        "127.0.0.1",
        "stage order: {:?}",
        gw.addrs()
    );
    assert_eq!(
        beta.ip().to_string(),
        "127.0.0.2",
        "stage order: {:?}",
        gw.addrs()
    );

    // (stage address, Host, path, upstream that must answer or None for a 404)
    let cases: [(_, &str, &str, Option<&str>); 16] = [
        (prod, "canarygate.test", "/", Some("root")),
        (prod, "canarygate.test", "/x/y", Some("root")),
        (prod, "canarygate.test", "/api", Some("api")),
        (prod, "canarygate.test", "/api/", Some("api")),
        (prod, "canarygate.test", "/api/x", Some("api")),
        (prod, "canarygate.test", "/api?q=1", Some("api")),
        (prod, "canarygate.test", "/apix", Some("root")),
        (prod, "canarygate.test", "/api/v2", Some("apiv2")),
        (prod, "canarygate.test", "/api/v2/users?id=3", Some("apiv2")),
        (prod, "canarygate.test", "/api/v20", Some("api")),
        (prod, "api.example.com", "/api/v2/x", Some("hosted")),
        (prod, "API.Example.COM:8080", "/anything", Some("hosted")),
        (beta, "b.example", "/b/c", Some("beta")),
        (beta, "b.example", "/c", None),
        (beta, "other.example", "/b", None),
        (beta, "b.example", "/", None),
    ];
    let mut failures = Vec::new();
    for (addr, host, path, want) in cases {
        let mut c = Client::connect(addr).expect("connect to a stage");
        let r = c.request(&get_with(path, host, "")).expect("response");
        let got = r.header("x-upstream");
        let ok = match want {
            Some(name) => got == Some(name),
            None => {
                r.status == 404
                    && got.is_none()
                    && r.header("content-type")
                        .is_some_and(|t| t.starts_with("text/plain"))
            }
        };
        if !ok {
            failures.push(format!(
                "{addr} Host {host} GET {path}: want {want:?}, got status {} from {got:?}:\n{}",
                r.status,
                r.describe()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A one-stage file listening on `listen` with an admin socket beside it.
fn reloadable(file: &ConfigFile, listen: &str, up: &str, percent: &str) -> String {
    format!(
        r#"[server]
admin_socket = "{}"

[[stage]]
name = "prod"
listen = "{listen}"

[[stage.route]]
name = "api"
stable = {{ id = "v1", endpoints = ["{up}"] }}
canary = {{ id = "v2", endpoints = ["{up}"], percent = {percent} }}
"#,
        file.sibling("admin.sock").display()
    )
}

#[test]
fn reload_of_an_unchanged_port_zero_file_is_accepted() {
    let up = TestUpstream::start("stable");
    let file = ConfigFile::new("");
    file.write(&reloadable(&file, "127.0.0.1:0", &up.addr_str(), "5"));
    let gw = GatewayProc::start_config(file.path(), &Expect::stages(1).with_admin(), &[]);
    let mut admin = AdminConn::connect(gw.admin_socket()).unwrap();
    let before = admin.version();
    // Same file, one percent changed: the listen line still says 127.0.0.1:0, which is
    // what the gateway was started with, so this is not a listener change.
    file.write(&reloadable(&file, "127.0.0.1:0", &up.addr_str(), "6"));
    let r = admin.cmd("reload");
    assert!(
        r.ok,
        "reloading a file whose `listen = \"127.0.0.1:0\"` did not change was refused: {}",
        r.text
    );
    assert_eq!(admin.version(), before + 1);
}

#[test]
fn reload_refuses_listener_changes_and_bad_files() {
    let up = TestUpstream::start("stable");
    let file = ConfigFile::new("");
    let listen = format!("127.0.0.1:{}", free_port());
    file.write(&reloadable(&file, &listen, &up.addr_str(), "5"));
    let gw = GatewayProc::start_config(file.path(), &Expect::stages(1).with_admin(), &[]);
    let mut admin = AdminConn::connect(gw.admin_socket()).unwrap();
    let before = admin.version();
    let moved = format!("127.0.0.1:{}", free_port());
    file.write(&reloadable(&file, &moved, &up.addr_str(), "9"));
    let r = admin.cmd("reload");
    assert!(!r.ok && !r.text.contains('\n'), "listen change: {r:?}");
    file.write("[[stage]]\nname = \"prod\"\nlisten = \"nowhere\"\n");
    let r = admin.cmd("reload");
    assert!(!r.ok && !r.text.contains('\n'), "broken file: {r:?}");
    assert_eq!(
        admin.version(),
        before,
        "a refused reload changed the version"
    );
    let show = admin.cmd("show canary api json").json();
    assert_eq!(show["routes"][0]["canary"]["percent"], "5", "{show}");
    // Still serving on the original address.
    let r = Client::connect(gw.addr()).unwrap().get("/").unwrap();
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(gw.addr().to_string(), listen);
}
