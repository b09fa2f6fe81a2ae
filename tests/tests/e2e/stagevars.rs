//! Stage variables: the upstream sees the rendered `upstream_path_prefix` (after
//! `strip_path_prefix`) and the rendered request headers, with the stable deployment's
//! variables for stable requests and the canary overrides on top for canary requests;
//! `set canary R var` / `del canary R var` change what the next requests carry.

use tests::{
    AdminConn, Client, ConfigFile, Expect, GatewayProc, SeenRequest, TestUpstream, get_with,
};

fn config(file: &ConfigFile, stable: &str, canary: &str) -> String {
    format!(
        r#"[server]
workers = 2
admin_socket = "{sock}"

[[stage]]
name = "prod"
listen = "127.0.0.1:0"

[[stage.route]]
name = "api"
path_prefix = "/api"
strip_path_prefix = true
upstream_path_prefix = "/${{stageVariables.version}}"
request_headers = {{ "x-version" = "${{stageVariables.version}}", "x-color" = "color=${{stageVariables.color}}", "x-missing" = "[${{stageVariables.nope}}]" }}
stable = {{ id = "v1", endpoints = ["{stable}"], variables = {{ version = "v1", color = "blue" }} }}
canary = {{ id = "v2", endpoints = ["{canary}"], percent = 0, variables = {{ version = "v2" }} }}

[[stage.route]]
name = "raw"
path_prefix = "/raw"
upstream_path_prefix = "/base/${{stageVariables.version}}"
stable = {{ id = "r1", endpoints = ["{stable}"], variables = {{ version = "r1" }} }}
canary = {{ id = "r2", endpoints = ["{canary}"], percent = 0, variables = {{ version = "r2" }} }}
"#,
        sock = file.sibling("admin.sock").display()
    )
}

struct Fixture {
    stable: TestUpstream,
    canary: TestUpstream,
    _file: ConfigFile,
    gw: GatewayProc,
    client: Client,
}

impl Fixture {
    fn start() -> Self {
        let stable = TestUpstream::start("stable");
        let canary = TestUpstream::start("canary");
        let file = ConfigFile::new("");
        file.write(&config(&file, &stable.addr_str(), &canary.addr_str()));
        let gw = GatewayProc::start_config(file.path(), &Expect::stages(1).with_admin(), &[]);
        let client = Client::connect(gw.addr()).unwrap();
        Self {
            stable,
            canary,
            _file: file,
            gw,
            client,
        }
    }

    /// Sends `GET path` (forced to `variant` with `x-canary`, plus `extra` header lines)
    /// and returns the request as that variant's upstream received it.
    fn seen(&mut self, path: &str, variant: &str, extra: &str) -> SeenRequest {
        let force = if variant == "canary" {
            "always"
        } else {
            "never"
        };
        let raw = get_with(
            path,
            "canarygate.test",
            &format!("x-canary: {force}\r\n{extra}"),
        );
        let r = self.client.request(&raw).expect("response");
        assert_eq!(
            r.header("x-upstream"),
            Some(variant),
            "GET {path} forced {force}: {}",
            r.describe()
        );
        let up = if variant == "canary" {
            &self.canary
        } else {
            &self.stable
        };
        up.last_request().expect("the upstream saw the request")
    }
}

/// What one request must look like upstream.
fn check(seen: &SeenRequest, target: &str, version: &str, color: &str) -> Vec<String> {
    let mut bad = Vec::new();
    if seen.target != target {
        bad.push(format!("target {:?}, want {target:?}", seen.target));
    }
    for (name, want) in [
        ("x-version", version.to_owned()),
        ("x-color", format!("color={color}")),
        ("x-missing", "[]".to_owned()),
    ] {
        let got = seen.header_values(name);
        if got != [want.clone()] {
            bad.push(format!("{name}: {got:?}, want [{want:?}]"));
        }
    }
    bad
}

#[test]
fn stage_variables_render_per_variant() {
    let mut fx = Fixture::start();
    let mut problems = Vec::new();
    // (client path, variant, upstream target, version, color)
    let cases = [
        ("/api/users?id=1", "stable", "/v1/users?id=1", "v1", "blue"),
        ("/api/users?id=2", "canary", "/v2/users?id=2", "v2", "blue"),
        ("/api/a/b/c", "stable", "/v1/a/b/c", "v1", "blue"),
        ("/api/a/b/c", "canary", "/v2/a/b/c", "v2", "blue"),
    ];
    for (path, variant, target, version, color) in cases {
        // The client's own x-version is replaced, not kept beside the rendered one.
        let seen = fx.seen(path, variant, "x-version: forged\r\n");
        for p in check(&seen, target, version, color) {
            problems.push(format!("{variant} GET {path}: {p}"));
        }
    }
    // Without strip_path_prefix the route's prefix stays after the rendered one.
    for (variant, want) in [
        ("stable", "/base/r1/raw/x?q=1"),
        ("canary", "/base/r2/raw/x?q=1"),
    ] {
        let seen = fx.seen("/raw/x?q=1", variant, "");
        if seen.target != want {
            problems.push(format!(
                "{variant} GET /raw/x?q=1: target {:?}, want {want:?}",
                seen.target
            ));
        }
        if !seen.header_values("x-version").is_empty() {
            problems.push(format!(
                "{variant} /raw got another route's x-version header"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn canary_variable_changes_reach_the_next_requests() {
    let mut fx = Fixture::start();
    let mut admin = AdminConn::connect(fx.gw.admin_socket()).unwrap();
    // (command, what canary requests carry next; stable ones stay at v1 / blue)
    let steps = [
        ("set canary api var color red", "v2", "red"),
        ("set canary api var version v9", "v9", "red"),
        ("set canary api var extra with spaces", "v9", "red"),
        ("del canary api var version", "v1", "red"),
        ("del canary api var color", "v1", "blue"),
    ];
    let mut problems = Vec::new();
    for (i, (cmd, version, color)) in steps.into_iter().enumerate() {
        admin.ok(cmd);
        let path = format!("/api/step?i={i}");
        let seen = fx.seen(&path, "canary", "");
        for p in check(&seen, &format!("/{version}/step?i={i}"), version, color) {
            problems.push(format!("after {cmd:?}, canary: {p}"));
        }
        let seen = fx.seen(&path, "stable", "");
        for p in check(&seen, &format!("/v1/step?i={i}"), "v1", "blue") {
            problems.push(format!("after {cmd:?}, stable: {p}"));
        }
    }
    let shown = admin.cmd("show canary api json").json();
    assert_eq!(
        shown["routes"][0]["canary"]["variables"],
        serde_json::json!({"extra": "with spaces"}),
        "{shown}"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
