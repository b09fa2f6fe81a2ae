//! Hitless changes: 1,000 percent changes over one admin connection and 100 reloads of a
//! rewritten config file (and, on its own, a reload by SIGHUP), all while keep-alive
//! clients keep sending: not a request fails, no client connection is dropped (the load
//! driver never reconnects), and a WebSocket opened before the changes still echoes after
//! them.

use std::thread;
use std::time::{Duration, Instant};

use tests::{
    AdminConn, BackgroundLoad, ConfigFile, Expect, GatewayProc, TestUpstream, WsEchoUpstream,
    free_port, ws_connect,
};
use tungstenite::Message;

/// Keep-alive client connections of the background load.
const CONNS: usize = 4;

/// The config with `api` at `percent` and stage variable `flip`; the `ws` route's share
/// moves with it so the WebSocket's own route is replaced by every reload too.
fn config(
    file: &ConfigFile,
    listen: &str,
    (stable, canary, ws): (&str, &str, &str),
    percent: u32,
    flip: &str,
) -> String {
    format!(
        r#"[server]
workers = 2
admin_socket = "{sock}"

[[stage]]
name = "prod"
listen = "{listen}"

[[stage.route]]
name = "api"
request_headers = {{ "x-flip" = "${{stageVariables.flip}}" }}
stable = {{ id = "v1", endpoints = ["{stable}"], variables = {{ flip = "{flip}" }} }}
canary = {{ id = "v2", endpoints = ["{canary}"], percent = {percent}, variables = {{ extra = "{flip}" }} }}

[[stage.route]]
name = "ws"
path_prefix = "/ws"
stable = {{ id = "ws1", endpoints = ["{ws}"] }}
canary = {{ id = "ws2", endpoints = ["{ws}"], percent = {ws_percent} }}
"#,
        sock = file.sibling("admin.sock").display(),
        ws_percent = 100 - percent
    )
}

/// Sends `text` on the WebSocket and expects it echoed back.
fn echo(ws: &mut tungstenite::WebSocket<tests::tls::Sock>, text: &str) {
    ws.send(Message::Text(text.into()))
        .unwrap_or_else(|e| panic!("websocket send {text:?}: {e}"));
    match ws.read() {
        Ok(Message::Text(t)) if t.as_str() == text => {}
        other => panic!("websocket echo of {text:?}: got {other:?}"),
    }
}

#[test]
fn thousand_changes_and_hundred_reloads_under_load_drop_nothing() {
    let stable = TestUpstream::start("stable");
    let canary = TestUpstream::start("canary");
    let ws_up = WsEchoUpstream::start();
    let (s, c, w) = (
        stable.addr_str(),
        canary.addr_str(),
        ws_up.addr().to_string(),
    );
    let file = ConfigFile::new("");
    // A fixed port: reloading a `127.0.0.1:0` file is a separate (config) test.
    let listen = format!("127.0.0.1:{}", free_port());
    let write = |percent: u32, flip: &str| {
        file.write(&config(&file, &listen, (&s, &c, &w), percent, flip));
    };
    write(5, "a");
    let gw = GatewayProc::start_config(file.path(), &Expect::stages(1).with_admin(), &[]);
    let mut admin = AdminConn::connect(gw.admin_socket()).unwrap();

    let mut ws = ws_connect(gw.addr(), "/ws").expect("websocket through the gateway");
    echo(&mut ws, "before");
    let load = BackgroundLoad::start(gw.addr(), "/", CONNS, 4, Duration::from_secs(120));
    thread::sleep(Duration::from_millis(200));

    let started = Instant::now();
    let v0 = admin.version();
    for i in 0..1000_u32 {
        let ppm = (i * 7919) % 1_000_001;
        let percent = format!("{}.{:04}", ppm / 10_000, ppm % 10_000);
        let r = admin.cmd(&format!("set canary api percent {percent}"));
        assert!(
            r.ok && r.text.contains("canary percent"),
            "change {i}: {r:?}"
        );
    }
    let changes = started.elapsed();
    assert_eq!(admin.version(), v0 + 1000, "1000 changes, 1000 versions");

    let started = Instant::now();
    for i in 0..100_u32 {
        write((i * 37) % 101, if i % 2 == 0 { "b" } else { "a" });
        let r = admin.cmd("reload");
        let now = admin.version();
        assert!(
            r.ok && r.text.ends_with(&format!("reloaded (version {now})")),
            "reload {i}: {r:?}"
        );
    }
    let reloads = started.elapsed();

    thread::sleep(Duration::from_millis(300));
    let report = load.finish();
    echo(&mut ws, "after all the changes");
    assert_eq!(ws_up.handshakes(), 1, "the WebSocket was re-established");
    eprintln!(
        "hitless: 1000 changes in {changes:?}, 100 reloads in {reloads:?}; load: {:?}",
        report.bodies
    );
    assert!(
        report.errors.is_empty(),
        "client connections dropped or broken: {:?}",
        report.errors
    );
    assert!(
        report.other_status.is_empty(),
        "failed requests: {:?}",
        report.other_status
    );
    assert!(
        report.count("stable") > 100 && report.count("canary") > 100,
        "the load did not see both variants while the share moved: {:?}",
        report.bodies
    );
    assert_eq!(
        report.responses(),
        stable.requests() + canary.requests(),
        "responses vs requests the upstreams served"
    );
    let stats = admin.cmd("show stats api json").json();
    let served = &stats["routes"][0];
    let total = served["stable"]["stats"]["requests"].as_u64().unwrap_or(0)
        + served["canary"]["stats"]["requests"].as_u64().unwrap_or(0);
    assert_eq!(total, report.responses(), "show stats: {stats}");
}

#[test]
fn sighup_reloads_the_config_file_under_load() {
    let stable = TestUpstream::start("stable");
    let canary = TestUpstream::start("canary");
    let ws_up = WsEchoUpstream::start();
    let (s, c, w) = (
        stable.addr_str(),
        canary.addr_str(),
        ws_up.addr().to_string(),
    );
    let file = ConfigFile::new("");
    let listen = format!("127.0.0.1:{}", free_port());
    let write = |percent: u32, flip: &str| {
        file.write(&config(&file, &listen, (&s, &c, &w), percent, flip));
    };
    write(5, "a");
    let mut gw = GatewayProc::start_config(file.path(), &Expect::stages(1).with_admin(), &[]);
    let mut admin = AdminConn::connect(gw.admin_socket()).unwrap();
    let mut ws = ws_connect(gw.addr(), "/ws").expect("websocket through the gateway");
    echo(&mut ws, "before");
    let load = BackgroundLoad::start(gw.addr(), "/", CONNS, 4, Duration::from_secs(60));
    thread::sleep(Duration::from_millis(200));

    write(50, "hup");
    let before = admin.version();
    gw.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut now = before;
    while now == before && Instant::now() < deadline && gw.try_wait().is_none() {
        thread::sleep(Duration::from_millis(20));
        now = admin.send("show version").map_or(before, |r| {
            r.text
                .trim_start_matches("version ")
                .parse()
                .unwrap_or(before)
        });
    }
    let exited = gw.try_wait();
    assert!(
        exited.is_none(),
        "the gateway exited on SIGHUP ({exited:?}) instead of reloading"
    );
    assert_eq!(now, before + 1, "SIGHUP did not reload within 5 s");
    let shown = admin.cmd("show canary api json").json();
    let api = &shown["routes"][0];
    assert_eq!(
        (
            &api["canary"]["percent"],
            &api["stable"]["variables"]["flip"]
        ),
        (&serde_json::json!("50"), &serde_json::json!("hup")),
        "after SIGHUP: {shown}"
    );
    thread::sleep(Duration::from_millis(300));
    let report = load.finish();
    echo(&mut ws, "after SIGHUP");
    assert!(
        report.all_ok(),
        "failures across SIGHUP: statuses {:?}, errors {:?}",
        report.other_status,
        report.errors
    );
    let seen = stable.last_request().expect("stable served requests");
    assert_eq!(seen.header("x-flip").as_deref(), Some("hup"));
}
