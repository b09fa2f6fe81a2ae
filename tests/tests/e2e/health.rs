//! Endpoint health through the real binary: active checks taking a killed Node upstream
//! out under a steady load of POSTs and bringing it back after `rise` checks; passive
//! ejection of endpoints answering 503, within `max_ejection_percent`, and their return;
//! panic mode when every endpoint is down (and a dead canary staying the canary's
//! failure); draining an endpoint while a streamed response and a WebSocket finish on it;
//! and what 1,000 checked endpoints cost the gateway.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::{
    AdminConn, Client, ConfigFile, Expect, Framing, GatewayProc, ManyPorts, ServerProc, TempDir,
    TestUpstream, TunableUpstream, WsEchoUpstream, get_request, post_request, refused_addr,
    ws_connect,
};

use crate::start_gw;

/// `show endpoints ROUTE json`, as items.
fn endpoints(admin: &mut AdminConn, route: &str) -> Vec<Value> {
    admin.cmd(&format!("show endpoints {route} json")).json()["endpoints"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The item of `addr` in `show endpoints ROUTE json`.
fn endpoint(admin: &mut AdminConn, route: &str, addr: SocketAddr) -> Value {
    let items = endpoints(admin, route);
    items
        .into_iter()
        .find(|i| i["endpoint"] == addr.to_string())
        .unwrap_or_else(|| panic!("{addr} not in show endpoints {route}"))
}

/// Polls until `addr`'s state in `route` is `state`, at most `within`; returns how long
/// it took.
fn wait_state(
    admin: &mut AdminConn,
    route: &str,
    addr: SocketAddr,
    state: &str,
    within: Duration,
) -> Duration {
    let t0 = Instant::now();
    loop {
        let e = endpoint(admin, route, addr);
        if e["state"] == state {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < within,
            "{addr} not {state} within {within:?}: {e}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// One request of the POST load: when it ended, and the port that answered or the failure.
type Sample = (Instant, Result<u16, String>);

/// Keep-alive clients POSTing in a loop until stopped (at most 60 s), each answer's
/// `x-port` recorded; a failed connection is replaced.
struct PostLoad {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl PostLoad {
    fn start(gw: SocketAddr, clients: usize) -> PostLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|k| {
                let (stop, samples) = (Arc::clone(&stop), Arc::clone(&samples));
                thread::spawn(move || {
                    let limit = Instant::now() + Duration::from_secs(60);
                    let mut c = Client::connect(gw).ok();
                    let mut i = 0u64;
                    while !stop.load(Ordering::SeqCst) && Instant::now() < limit {
                        i += 1;
                        let body = format!("client {k} post {i}");
                        let req = post_request("/post", body.as_bytes(), Framing::Length, "");
                        let result = match c.as_mut().map(|c| c.request(&req)) {
                            Some(Ok(r)) if r.status == 200 => r
                                .header("x-port")
                                .and_then(|p| p.parse().ok())
                                .ok_or_else(|| format!("no x-port: {}", r.describe())),
                            Some(Ok(r)) => Err(r.describe()),
                            Some(Err(e)) => Err(e.to_string()),
                            None => Err("cannot connect".into()),
                        };
                        if result.is_err() {
                            c = Client::connect(gw).ok();
                        }
                        samples.lock().unwrap().push((Instant::now(), result));
                        thread::sleep(Duration::from_millis(2));
                    }
                })
            })
            .collect();
        PostLoad {
            stop,
            samples,
            threads,
        }
    }

    fn since(&self, t: Instant) -> Vec<Sample> {
        self.samples
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, _)| *at >= t)
            .cloned()
            .collect()
    }

    fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().unwrap();
        }
        Arc::try_unwrap(self.samples).unwrap().into_inner().unwrap()
    }
}

/// Three Node endpoints checked every 200 ms (timeout 200 ms, fall 2, rise 2), one
/// killed while four clients POST without pause. The configuration bounds detection at
/// `fall x interval + timeout` = 0.6 s after the kill (a POST already on its way to the
/// endpoint when it died may fail before that); from 1 s after the kill no POST may
/// fail. Started again on its port, the endpoint is up after two passed checks and takes
/// POSTs again.
#[test]
fn a_killed_endpoint_costs_no_post_after_the_detection_bound_and_comes_back_after_rise() {
    let mut nodes: Vec<ServerProc> = (0..3).map(|_| ServerProc::node()).collect();
    let addrs: Vec<SocketAddr> = nodes.iter().map(ServerProc::addr).collect();
    let list = addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let dir = TempDir::new("health-kill");
    let sock = dir.path().join("admin.sock");
    let gw = start_gw(
        &list,
        &[
            "--workers",
            "2",
            "--admin-socket",
            sock.to_str().unwrap(),
            "--health-check-path",
            "/healthz",
            "--health-check-interval",
            "200ms",
            "--health-check-timeout",
            "200ms",
            "--health-check-fall",
            "2",
            "--health-check-rise",
            "2",
        ],
    );
    let mut admin = AdminConn::connect(gw.admin_socket()).unwrap();
    for a in &addrs {
        wait_state(&mut admin, "default", *a, "up", Duration::from_secs(5));
    }
    let load = PostLoad::start(gw.addr(), 4);
    thread::sleep(Duration::from_secs(1));
    let victim = addrs[1];
    let warm = load.since(Instant::now().checked_sub(Duration::from_secs(1)).unwrap());
    assert!(
        warm.iter().any(|(_, r)| r == &Ok(victim.port())),
        "the victim took POSTs before it was killed"
    );
    drop(nodes.remove(1)); // SIGKILL
    let killed = Instant::now();
    let detected = wait_state(
        &mut admin,
        "default",
        victim,
        "down",
        Duration::from_secs(3),
    );
    thread::sleep(Duration::from_secs(2));
    let after_bound = load.since(killed + Duration::from_secs(1));
    let failed: Vec<&Sample> = after_bound.iter().filter(|(_, r)| r.is_err()).collect();
    assert!(
        after_bound.len() > 100,
        "the load kept going: {}",
        after_bound.len()
    );
    assert!(
        failed.is_empty(),
        "{} of {} POSTs failed after the detection bound: {:?}",
        failed.len(),
        after_bound.len(),
        failed.iter().take(5).collect::<Vec<_>>()
    );
    eprintln!("killed endpoint marked down {detected:?} after the kill");
    // Back on the same port: up after `rise` passed checks, and POSTs reach it again.
    nodes.push(ServerProc::node_on(victim.port()));
    let restarted = Instant::now();
    wait_state(&mut admin, "default", victim, "up", Duration::from_secs(3));
    let e = endpoint(&mut admin, "default", victim);
    assert!(
        e["check"]["consecutive_passed"].as_u64() >= Some(2),
        "up only after rise (2) passed checks in a row: {e}"
    );
    thread::sleep(Duration::from_secs(1));
    let samples = load.finish();
    let since_restart: Vec<&Sample> = samples.iter().filter(|(t, _)| *t >= restarted).collect();
    assert!(
        since_restart.iter().any(|(_, r)| r == &Ok(victim.port())),
        "the restarted endpoint takes POSTs again"
    );
    let late_failures: Vec<&Sample> = samples
        .iter()
        .filter(|(t, r)| *t >= killed + Duration::from_secs(1) && r.is_err())
        .collect();
    assert!(late_failures.is_empty(), "{late_failures:?}");
    let early = samples.iter().filter(|(_, r)| r.is_err()).count();
    eprintln!(
        "{} POSTs, {early} failed, all within 1 s of the kill",
        samples.len()
    );
}

/// Three endpoints, two answering 503 to everything: passive detection (3 in a row)
/// ejects one of them, and only one, since `max_ejection_percent = 50` of three is one;
/// the other is counted as skipped. Healed, the ejected one is back after its ejection
/// time (1 s) and serves again.
#[test]
fn endpoints_answering_503_are_ejected_within_max_ejection_percent_and_come_back() {
    let ups: Vec<TunableUpstream> = ["a", "b", "c"]
        .into_iter()
        .map(TunableUpstream::start)
        .collect();
    for u in &ups[1..] {
        u.set_fail_status(503);
        u.set_fail_per_mille(1000);
    }
    let list = ups
        .iter()
        .map(TunableUpstream::addr_str)
        .collect::<Vec<_>>()
        .join(",");
    let dir = TempDir::new("health-eject");
    let sock = dir.path().join("admin.sock");
    let gw = start_gw(
        &list,
        &[
            "--workers",
            "1",
            "--admin-socket",
            sock.to_str().unwrap(),
            "--metrics-listen",
            "127.0.0.1:0",
            "--outlier-consecutive-5xx",
            "3",
            "--outlier-base-ejection-time",
            "1s",
            "--outlier-max-ejection-percent",
            "50",
        ],
    );
    let mut admin = AdminConn::connect(gw.admin_socket()).unwrap();
    let mut c = Client::connect(gw.addr()).unwrap();
    let mut statuses = Vec::new();
    for _ in 0..30 {
        statuses.push(c.get("/").unwrap().status);
        thread::sleep(Duration::from_millis(15));
    }
    let items = endpoints(&mut admin, "default");
    let ejected: Vec<&Value> = items.iter().filter(|i| i["state"] == "ejected").collect();
    assert_eq!(
        ejected.len(),
        1,
        "one of the two bad endpoints is ejected: {items:#?}"
    );
    let ejected_addr: SocketAddr = ejected[0]["endpoint"].as_str().unwrap().parse().unwrap();
    assert_ne!(
        ejected_addr.to_string(),
        ups[0].addr_str(),
        "the good one stays"
    );
    let other_bad = items
        .iter()
        .find(|i| i["endpoint"] != ejected[0]["endpoint"] && i["endpoint"] != ups[0].addr_str())
        .unwrap();
    assert_eq!(other_bad["state"], "up");
    assert!(
        other_bad["ejections_skipped"].as_u64().unwrap() >= 1,
        "the second bad endpoint crossed the threshold but was not ejected: {other_bad}"
    );
    let prom = gw.scrape();
    let labels = [
        ("route", "default"),
        ("variant", "stable"),
        ("endpoint", &*ejected_addr.to_string()),
    ];
    assert_eq!(prom.int("canarygate_endpoint_ejections_total", &labels), 1);
    assert_eq!(prom.int("canarygate_endpoint_up", &labels), 0);
    // Healed: back after the ejection time, and serving.
    for u in &ups {
        u.set_fail_per_mille(0);
    }
    let back = wait_state(
        &mut admin,
        "default",
        ejected_addr,
        "up",
        Duration::from_secs(3),
    );
    assert!(
        back <= Duration::from_millis(1300),
        "back after its 1 s ejection: {back:?}"
    );
    let before: Vec<u64> = ups.iter().map(TunableUpstream::requests).collect();
    for _ in 0..9 {
        assert_eq!(c.get("/").unwrap().status, 200);
    }
    for (u, b) in ups.iter().zip(before) {
        assert!(
            u.requests() > b,
            "every endpoint serves again: {} -> {}",
            b,
            u.requests()
        );
    }
}

/// Both stable endpoints fail their checks (the check path answers 503) while serving `/`
/// fine: panic mode sends requests to both rather than to none, and says so in `show
/// endpoints`, the metrics and the log. A canary whose only endpoint refuses stays the
/// canary's failure: a request forced to the canary gets 502, never stable's answer.
#[test]
fn panic_mode_serves_from_endpoints_that_are_all_down_and_says_so() {
    let (a, b) = (TestUpstream::start("a"), TestUpstream::start("b"));
    let canary = refused_addr();
    let dir = TempDir::new("health-panic");
    let sock = dir.path().join("admin.sock");
    let stable = format!("{},{}", a.addr(), b.addr());
    let canary_list = canary.to_string();
    let gw = start_gw(
        &stable,
        &[
            "--canary",
            &canary_list,
            "--admin-socket",
            sock.to_str().unwrap(),
            "--metrics-listen",
            "127.0.0.1:0",
            "--health-check-path",
            "/status?code=503",
            "--health-check-interval",
            "100ms",
            "--health-check-fall",
            "1",
        ],
    );
    let mut admin = AdminConn::connect(gw.admin_socket()).unwrap();
    wait_state(
        &mut admin,
        "default",
        a.addr(),
        "down",
        Duration::from_secs(3),
    );
    wait_state(
        &mut admin,
        "default",
        b.addr(),
        "down",
        Duration::from_secs(3),
    );
    let t0 = Instant::now();
    while !endpoints(&mut admin, "default")
        .iter()
        .all(|i| i["panic"] == true)
    {
        assert!(t0.elapsed() < Duration::from_secs(2), "panic mode reported");
        thread::sleep(Duration::from_millis(20));
    }
    let mut c = Client::connect(gw.addr()).unwrap();
    let mut served = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let r = c.get("/").unwrap();
        assert_eq!(r.status, 200, "{}", r.describe());
        served.insert(r.text());
    }
    assert_eq!(served.len(), 2, "both down endpoints serve: {served:?}");
    let text = admin.ok("show endpoints default");
    assert!(text.contains("PANIC"), "{text}");
    let prom = gw.scrape();
    assert_eq!(
        prom.int(
            "canarygate_deployment_panic",
            &[("route", "default"), ("variant", "stable")]
        ),
        1
    );
    assert!(gw.stderr().contains("panic mode"), "{}", gw.stderr());
    // The canary: down too (panic there as well), and its requests stay its own.
    admin.ok("set canary default percent 100");
    for _ in 0..4 {
        // Stable would answer 200: a 502 is the canary's own failure.
        let r = c.get("/").unwrap();
        assert_eq!(r.status, 502, "{}", r.describe());
        if !r.connection_has("keep-alive") {
            c = Client::connect(gw.addr()).unwrap();
        }
    }
    // Counted once recorded (an error answer may reach the client just before).
    let t0 = Instant::now();
    loop {
        let stats = admin.cmd("show stats default json").json();
        let fivexx = stats["routes"][0]["canary"]["stats"]["responses"]["5xx"].as_u64();
        if fivexx >= Some(4) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "the canary's failures are the canary's: {stats}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// An endpoint set to drain while a streamed response and a WebSocket run through it:
/// both finish; no new request reaches it (they go to the other endpoint, and a new
/// WebSocket on a route whose only endpoint drains gets 503); its pooled connections
/// close; set ready, it serves again.
#[test]
fn drain_lets_streams_and_websockets_finish_and_sends_nothing_new() {
    let (up_a, up_b) = (TestUpstream::start("a"), TestUpstream::start("b"));
    let ws = WsEchoUpstream::start();
    let file = ConfigFile::new("");
    let sock = file.sibling("admin.sock");
    file.write(&format!(
        r#"
[server]
workers = 1
admin_socket = "{sock}"

[[stage]]
name = "s"
listen = "127.0.0.1:0"

[[stage.route]]
name = "api"
stable = {{ id = "v1", endpoints = ["{a}", "{b}"] }}

[[stage.route]]
name = "ws"
path_prefix = "/ws"
stable = {{ id = "ws1", endpoints = ["{ws}"] }}
"#,
        sock = sock.display(),
        a = up_a.addr(),
        b = up_b.addr(),
        ws = ws.addr()
    ));
    let gw = GatewayProc::start_config(file.path(), &Expect::stages(1).with_admin(), &[]);
    let mut admin = AdminConn::connect(gw.admin_socket()).unwrap();
    let mut client = Client::connect(gw.addr()).unwrap();
    for _ in 0..4 {
        assert_eq!(client.get("/").unwrap().status, 200);
    }
    assert!(up_a.open_connections() >= 1, "a has a pooled connection");
    let mut socket = ws_connect(gw.addr(), "/ws/chat").unwrap();
    socket.send(tungstenite::Message::text("one")).unwrap();
    assert_eq!(socket.read().unwrap().into_text().unwrap().as_str(), "one");
    // Two long responses, one on each endpoint (one worker: round robin alternates).
    let (tx, rx) = std::sync::mpsc::channel();
    let streams: Vec<_> = (0..2)
        .map(|_| {
            let tx = tx.clone();
            let addr = gw.addr();
            let started = thread::spawn(move || {
                let mut s = std::net::TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                s.write_all(&get_request("/stall?cl=300000&n=1000&ms=1500"))
                    .unwrap();
                let mut got = Vec::new();
                let mut buf = vec![0u8; 65536];
                let mut told = false;
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                    if !told && got.windows(4).any(|w| w == b"\r\n\r\n") {
                        told = true;
                        tx.send(()).unwrap();
                    }
                    let text = String::from_utf8_lossy(&got);
                    if let Some(h) = text.find("\r\n\r\n")
                        && got.len() - h - 4 >= 300_000
                    {
                        break;
                    }
                }
                got
            });
            thread::sleep(Duration::from_millis(50));
            started
        })
        .collect();
    for _ in 0..2 {
        rx.recv_timeout(Duration::from_secs(5))
            .expect("both streams started");
    }
    assert!(
        admin
            .ok(&format!("set endpoint api {} drain", up_a.addr()))
            .contains("drain")
    );
    assert!(
        admin
            .ok(&format!("set endpoint ws {} drain", ws.addr()))
            .contains("drain")
    );
    let drained_at = up_a.requests();
    let e = endpoint(&mut admin, "api", up_a.addr());
    assert_eq!(e["state"], "draining", "{e}");
    // Nothing new reaches it.
    for _ in 0..10 {
        let r = client.get("/").unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "b"));
    }
    assert_eq!(
        up_a.requests(),
        drained_at,
        "no new request reached the draining endpoint"
    );
    match ws_connect(gw.addr(), "/ws/chat") {
        Err(e) => assert!(e.contains("503"), "{e}"),
        Ok(_) => panic!("a new WebSocket reached the draining endpoint"),
    }
    // What was in flight finishes.
    socket.send(tungstenite::Message::text("two")).unwrap();
    assert_eq!(socket.read().unwrap().into_text().unwrap().as_str(), "two");
    for s in streams {
        let got = s.join().unwrap();
        let text = String::from_utf8_lossy(&got);
        let h = text.find("\r\n\r\n").expect("a response head");
        assert!(text.starts_with("HTTP/1.1 200"), "{}", &text[..h]);
        assert_eq!(got.len() - h - 4, 300_000, "the streamed body is complete");
    }
    socket.close(None).unwrap();
    // Its pooled connections close (the sweep runs every 250 ms).
    let t0 = Instant::now();
    while up_a.open_connections() > 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "a's connections closed"
        );
        thread::sleep(Duration::from_millis(50));
    }
    // The gauges follow within a sweep (250 ms).
    let t0 = Instant::now();
    loop {
        let e = endpoint(&mut admin, "api", up_a.addr());
        if (e["in_flight"].as_u64(), e["idle_connections"].as_u64()) == (Some(0), Some(0)) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "nothing in flight or idle: {e}"
        );
        thread::sleep(Duration::from_millis(50));
    }
    assert!(
        admin
            .ok(&format!("set endpoint api {} ready", up_a.addr()))
            .contains("ready")
    );
    let mut seen_a = false;
    for _ in 0..4 {
        seen_a |= client.get("/").unwrap().text() == "a";
    }
    assert!(seen_a, "ready again, it serves");
    assert!(gw.stderr().contains("set endpoint api"), "audit-logged");
}

/// 1,000 endpoints, each checked over HTTP every second by the one gateway (not per
/// worker, not once per worker): all stay up, each is checked about once a second, and
/// one turned bad goes down within `fall x interval + timeout`. The checkers' CPU cost
/// over 10 s without traffic is printed (a speed figure for the notes, not asserted: it
/// depends on the machine and on the tests running beside this one).
#[test]
fn a_thousand_endpoints_are_each_checked_once_a_second_by_one_checker() {
    let servers = ManyPorts::start(1000);
    let list = servers
        .ports
        .iter()
        .map(|p| format!("\"127.0.0.1:{p}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let file = ConfigFile::new("");
    let sock = file.sibling("admin.sock");
    file.write(&format!(
        r#"
[server]
workers = 2
admin_socket = "{}"

[[stage]]
name = "s"
listen = "127.0.0.1:0"

[[stage.route]]
name = "many"
health_check = {{ path = "/healthz", interval = "1s", timeout = "1s", fall = 2 }}
stable = {{ id = "v1", endpoints = [{list}] }}
"#,
        sock.display()
    ));
    let gw = GatewayProc::start_config(file.path(), &Expect::stages(1).with_admin(), &[]);
    let mut admin = AdminConn::connect(gw.admin_socket()).unwrap();
    // Every checker has run at least once (they start spread over the first second).
    thread::sleep(Duration::from_secs(3));
    let checks = |admin: &mut AdminConn| -> u64 {
        endpoints(admin, "many")
            .iter()
            .map(|i| i["check"]["checks"].as_u64().unwrap_or(0))
            .sum()
    };
    let (cpu0, checks0, t0) = (gw.cpu_time(), checks(&mut admin), Instant::now());
    thread::sleep(Duration::from_secs(10));
    let (cpu1, checks1, elapsed) = (gw.cpu_time(), checks(&mut admin), t0.elapsed());
    let cpu = cpu1.saturating_sub(cpu0);
    let share = cpu.as_secs_f64() / elapsed.as_secs_f64();
    let rate = (checks1 - checks0) as f64 / elapsed.as_secs_f64();
    eprintln!(
        "1,000 endpoints checked every 1 s: {rate:.0} checks/s, gateway CPU {:.2}% of one core ({:.1} µs per check)",
        share * 100.0,
        cpu.as_secs_f64() * 1e6 / (checks1 - checks0).max(1) as f64
    );
    assert!(
        (800.0..=1100.0).contains(&rate),
        "about one check per endpoint per second: {rate}"
    );
    let items = endpoints(&mut admin, "many");
    assert_eq!(items.iter().filter(|i| i["state"] == "up").count(), 1000);
    // A bad one is noticed: down within fall x interval + timeout (3 s), with margin.
    let bad: SocketAddr = ([127, 0, 0, 1], servers.ports[500]).into();
    let mut c = Client::connect(bad).unwrap();
    assert_eq!(c.get("/down").unwrap().status, 503);
    wait_state(&mut admin, "many", bad, "down", Duration::from_secs(5));
}
