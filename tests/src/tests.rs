//! Tests of the harness itself, without the gateway: the client against the test upstream
//! directly, the WebSocket pair, nginx, curl and etcd. If these fail, e2e failures mean
//! nothing.

use std::time::Duration;

use tungstenite::Message;

use crate::upstream::RESPONSE_CHUNK_SIZES;
use crate::{
    Behavior, Client, Digest, Etcd, Framing, HOST, Nginx, TestUpstream, WsEchoUpstream, curl,
    first_pattern_mismatch, get_request, pattern_bytes, pipelined_gets, post_request,
    thirdparty::NGINX_BLOB_LEN, ws_connect,
};

#[test]
fn upstream_paths_and_keepalive() {
    let up = TestUpstream::start("stable");
    let mut c = Client::connect(up.addr()).unwrap();
    assert_eq!(c.get("/").unwrap().text(), "stable");
    let r = c.get("/big?n=100000&chunked=1").unwrap();
    assert_eq!(
        (r.body.len(), first_pattern_mismatch(&r.body)),
        (100_000, None)
    );
    assert_eq!(r.chunk_sizes.as_ref().unwrap()[..3], [1, 100, 4096]);
    assert_eq!(RESPONSE_CHUNK_SIZES[0], 1);
    let r = c.get("/big?n=3000000").unwrap();
    assert_eq!(
        (r.body.len(), first_pattern_mismatch(&r.body)),
        (3_000_000, None)
    );
    for framing in [Framing::Length, Framing::Chunked] {
        let body = pattern_bytes(200_000);
        let r = c
            .request(&post_request(
                "/echo?id=7",
                &body,
                framing,
                "x-resp-chunked: 1\r\n",
            ))
            .unwrap();
        assert_eq!(r.body, body);
        assert_eq!(r.header("x-id"), Some("7"));
        assert_eq!(r.header("x-body-hash").unwrap(), Digest::of(&body).hex());
        assert!(r.chunk_sizes.is_some());
    }
    c.send(format!("HEAD /big?n=5 HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
        .unwrap();
    let r = c.read_response(true).unwrap();
    assert_eq!(r.header("content-length"), Some("5"));
    assert_eq!(c.get("/status?code=204").unwrap().status, 204);
    assert_eq!(c.get("/status?code=304").unwrap().status, 304);
    assert_eq!(c.get("/slow?ms=10").unwrap().text(), "slow");
    let r = c.get("/headers").unwrap();
    assert_eq!(r.body, get_request("/headers"));
    assert_eq!(up.accepted(), 1);
    assert_eq!(up.requests(), 10);
    let r = c.get("/close").unwrap();
    assert!(r.connection_has("close"));
    c.wait_closed(Duration::from_secs(2)).unwrap();
    let id = up.last_request().unwrap().conn_id;
    assert!(up.wait_closed(id, Duration::from_secs(2)));
}

#[test]
fn upstream_http10_and_load() {
    let up = TestUpstream::start("u");
    let mut c = Client::connect(up.addr()).unwrap();
    let r = c.request(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(r.text(), "u");
    c.wait_closed(Duration::from_secs(2)).unwrap();
    let report = pipelined_gets(up.addr(), "/", 3, 1000, 7);
    assert!(report.all_ok(), "{report:?}");
    assert_eq!(report.count("u"), 1000);
}

#[test]
fn upstream_fault_behaviors() {
    for b in [
        Behavior::Malformed,
        Behavior::CloseBeforeResponse,
        Behavior::ResetBeforeResponse,
    ] {
        let up = TestUpstream::with_behavior("x", b);
        let mut c = Client::connect(up.addr()).unwrap();
        assert!(c.get("/").is_err(), "{b:?}");
        assert_eq!(up.requests(), 1);
    }
}

#[test]
fn websocket_pair() {
    let up = WsEchoUpstream::start();
    let mut ws = ws_connect(up.addr(), "/ws").unwrap();
    ws.send(Message::Text("hi".into())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::Text("hi".into()));
    ws.close(None).unwrap();
}

#[test]
fn nginx_and_curl() {
    let nginx = Nginx::start();
    let mut c = Client::connect(nginx.addr()).unwrap();
    assert_eq!(c.get("/").unwrap().text(), "nginx\n");
    let r = c.get("/blob").unwrap();
    assert_eq!(
        (r.body.len(), first_pattern_mismatch(&r.body)),
        (NGINX_BLOB_LEN, None)
    );
    let r = c
        .request(&post_request(
            "/upload",
            &pattern_bytes(100_000),
            Framing::Chunked,
            "",
        ))
        .unwrap();
    assert_eq!(r.text(), "got\n");
    let out = curl(&[&format!("http://{}/", nginx.addr())]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "nginx\n");
}

#[test]
fn prometheus_parser_accepts_good_text_and_rejects_bad() {
    let good = crate::parse_prometheus(
        "# HELP x_total An x.\n# TYPE x_total counter\nx_total{a=\"b\"} 3\n",
    )
    .unwrap();
    assert_eq!(good.families.get("x").map(String::as_str), Some("counter"));
    assert_eq!(good.int("x_total", &[("a", "b")]), 3);
    for bad in [
        "x_total{a=\"b\" 3\n",
        "x_total{a=b} 3\n",
        "x{a=\"b\"} abc\n",
    ] {
        assert!(crate::parse_prometheus(bad).is_err(), "{bad:?} parsed");
    }
}

#[test]
fn etcd_keeps_keys_across_a_restart() {
    let mut etcd = Etcd::start();
    let url = etcd.url();
    assert_eq!(url, format!("http://{}", etcd.addr()));
    etcd.put("/canarygate/e2e/key", "v1 with spaces");
    assert_eq!(
        etcd.get("/canarygate/e2e/key").as_deref(),
        Some("v1 with spaces")
    );
    assert_eq!(etcd.get("/canarygate/e2e/absent"), None);
    etcd.stop();
    assert_eq!(etcd.pid(), None);
    let refused = std::net::TcpStream::connect_timeout(&etcd.addr(), Duration::from_secs(1));
    assert!(
        refused.is_err(),
        "{url} still accepts connections after stop"
    );
    etcd.start_again();
    assert_eq!(etcd.url(), url, "start_again moved the client port");
    assert_eq!(
        etcd.get("/canarygate/e2e/key").as_deref(),
        Some("v1 with spaces")
    );
    etcd.kill();
    etcd.start_again();
    let out = etcd.etcdctl(&["endpoint", "health"]);
    assert!(
        out.status.success(),
        "etcdctl endpoint health: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
