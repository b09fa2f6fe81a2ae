//! Bodies through the real binary: 0 B, 1 B, 64 KiB and 10 MiB, framed with Content-Length
//! and chunked, in the request and the response direction, compared byte-exactly; chunked
//! responses keep their chunking; and the gateway's memory does not grow with body size
//! (it streams instead of buffering).

use std::thread;
use std::time::Duration;

use tests::upstream::RESPONSE_CHUNK_SIZES;
use tests::{
    Client, Digest, Framing, GatewayProc, HOST, Response, TestUpstream, first_pattern_mismatch,
    pattern_bytes, post_request,
};

use crate::start_gw;

const MIB: usize = 1024 * 1024;
const SIZES: [usize; 4] = [0, 1, 64 * 1024, 10 * MIB];

fn gateway() -> (TestUpstream, GatewayProc) {
    let up = TestUpstream::start("stable");
    let gw = start_gw(&up.addr_str(), &[]);
    (up, gw)
}

/// Checks the request body the upstream saw (length and hash headers it echoes).
fn assert_upstream_saw(resp: &Response, sent: &[u8], what: &str) {
    assert_eq!(resp.status, 200, "{what}: {}", resp.describe());
    let want = Digest::of(sent);
    assert_eq!(
        resp.header("x-body-len"),
        Some(want.len.to_string().as_str()),
        "{what}: upstream received a body of the wrong length"
    );
    assert_eq!(
        resp.header("x-body-hash"),
        Some(want.hex().as_str()),
        "{what}: upstream received different bytes"
    );
}

fn assert_pattern_body(resp: &Response, n: usize, what: &str) {
    assert_eq!(resp.status, 200, "{what}: {}", resp.describe());
    assert_eq!(resp.body.len(), n, "{what}: body length");
    assert_eq!(
        first_pattern_mismatch(&resp.body),
        None,
        "{what}: first corrupted byte offset"
    );
}

fn upload(client: &mut Client, path: &str, size: usize, framing: Framing, extra: &str) {
    let body = pattern_bytes(size);
    let what = format!("POST {path} {size} B {framing:?} {extra:?}");
    let resp = client
        .request(&post_request(path, &body, framing, extra))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_upstream_saw(&resp, &body, &what);
    if path.starts_with("/echo") {
        assert_eq!(
            Digest::of(&resp.body),
            Digest::of(&body),
            "{what}: echoed body differs"
        );
    }
}

fn download(client: &mut Client, size: usize, chunked: bool) -> Response {
    let path = format!("/big?n={size}{}", if chunked { "&chunked=1" } else { "" });
    let resp = client
        .get(&path)
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_pattern_body(&resp, size, &format!("GET {path}"));
    resp
}

#[test]
fn request_bodies_content_length_byte_exact() {
    let (_up, gw) = gateway();
    let mut c = Client::connect(gw.addr()).unwrap();
    for size in SIZES {
        upload(&mut c, "/echo", size, Framing::Length, "");
    }
}

#[test]
fn request_bodies_chunked_byte_exact() {
    let (_up, gw) = gateway();
    let mut c = Client::connect(gw.addr()).unwrap();
    for size in SIZES {
        upload(&mut c, "/echo", size, Framing::Chunked, "");
    }
}

#[test]
fn response_bodies_content_length_byte_exact() {
    let (_up, gw) = gateway();
    let mut c = Client::connect(gw.addr()).unwrap();
    for size in SIZES {
        let r = download(&mut c, size, false);
        assert_eq!(
            r.header("content-length"),
            Some(size.to_string().as_str()),
            "Content-Length of a Content-Length response"
        );
    }
}

#[test]
fn response_bodies_chunked_byte_exact() {
    let (_up, gw) = gateway();
    let mut c = Client::connect(gw.addr()).unwrap();
    for size in SIZES {
        let r = download(&mut c, size, true);
        assert!(
            r.chunk_sizes.is_some(),
            "a chunked upstream response must reach an HTTP/1.1 client chunked: {}",
            r.describe()
        );
    }
}

#[test]
fn chunked_response_chunks_passed_through_verbatim() {
    let (_up, gw) = gateway();
    let mut c = Client::connect(gw.addr()).unwrap();
    let size = 300_000_usize;
    let r = download(&mut c, size, true);
    let mut want = Vec::new();
    let mut left = size;
    for &s in RESPONSE_CHUNK_SIZES.iter().cycle() {
        if left == 0 {
            break;
        }
        let n = s.min(left);
        want.push(n as u64);
        left -= n;
    }
    assert_eq!(
        r.chunk_sizes.as_deref(),
        Some(want.as_slice()),
        "chunk sizes seen by the client differ from those the upstream sent"
    );
}

#[test]
fn echo_chunked_both_directions_byte_exact() {
    let (_up, gw) = gateway();
    let mut c = Client::connect(gw.addr()).unwrap();
    for size in SIZES {
        upload(
            &mut c,
            "/echo",
            size,
            Framing::Chunked,
            "x-resp-chunked: 1\r\n",
        );
        upload(
            &mut c,
            "/echo",
            size,
            Framing::Length,
            "x-resp-chunked: 1\r\n",
        );
    }
}

/// Downloads `size` bytes but starts reading only after `pause`, so a gateway without
/// back-pressure would have to hold the whole body.
fn lazy_download(gw: &GatewayProc, size: usize, chunked: bool, pause: Duration) {
    let mut c = Client::connect(gw.addr()).unwrap();
    let path = format!("/big?n={size}{}", if chunked { "&chunked=1" } else { "" });
    c.send(format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    thread::sleep(pause);
    let r = c.read_response(false).unwrap();
    assert_pattern_body(&r, size, &format!("lazy GET {path}"));
}

#[test]
fn gateway_memory_does_not_grow_with_body_size() {
    let (_up, gw) = gateway();
    // Warm up every path with small bodies so buffers and pools exist.
    let mut c = Client::connect(gw.addr()).unwrap();
    for _ in 0..20 {
        for size in [0, 1, 64 * 1024] {
            upload(&mut c, "/", size, Framing::Length, "");
            upload(&mut c, "/", size, Framing::Chunked, "");
            download(&mut c, size, false);
            download(&mut c, size, true);
        }
    }
    lazy_download(&gw, 64 * 1024, false, Duration::from_millis(50));
    let (base, base_peak) = (gw.rss_kib(), gw.peak_rss_kib());
    for round in 0..3 {
        upload(&mut c, "/", 10 * MIB, Framing::Length, "");
        upload(&mut c, "/", 10 * MIB, Framing::Chunked, "");
        // The upstream waits before reading: the gateway must not soak up the body.
        upload(&mut c, "/?delay_body_ms=300", 10 * MIB, Framing::Length, "");
        download(&mut c, 10 * MIB, false);
        download(&mut c, 10 * MIB, true);
        lazy_download(&gw, 10 * MIB, round % 2 == 0, Duration::from_millis(300));
    }
    let (after, after_peak) = (gw.rss_kib(), gw.peak_rss_kib());
    eprintln!(
        "gateway VmRSS {base} -> {after} KiB, peak VmHWM {base_peak} -> {after_peak} KiB \
         (small bodies -> 10 MiB bodies)"
    );
    let growth = after.saturating_sub(base);
    assert!(
        growth < 4 * 1024,
        "gateway RSS grew by {growth} KiB ({base} -> {after}) while streaming 10 MiB bodies"
    );
    let peak_growth = after_peak.saturating_sub(base_peak);
    assert!(
        peak_growth < 4 * 1024,
        "gateway peak RSS grew by {peak_growth} KiB ({base_peak} -> {after_peak}): a 10 MiB \
         body was held in memory at some point"
    );
    // The connection still works after all that.
    assert_eq!(c.get("/").unwrap().text(), "stable");
}

#[test]
fn chunked_trailers_keep_framing_in_sync() {
    let (up, gw) = gateway();
    let mut c = Client::connect(gw.addr()).unwrap();
    // Request direction: a trailer section, then a pipelined request right behind it.
    c.send(
        format!(
            "POST /echo HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n\
             5\r\nhello\r\n0\r\nx-trailer: one\r\n\r\nGET /?id=2 HTTP/1.1\r\nHost: {HOST}\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    let r = c.read_response(false).unwrap();
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "hello"),
        "{}",
        r.describe()
    );
    let r = c.read_response(false).unwrap();
    assert_eq!(
        (r.status, r.header("x-id")),
        (200, Some("2")),
        "request after a chunked body with trailers: {}",
        r.describe()
    );
    assert_eq!(up.requests(), 2);
    // Response direction.
    let r = c.get("/big?n=100000&chunked=1&trailer=1").unwrap();
    assert_eq!(r.body.len(), 100_000);
    assert_eq!(first_pattern_mismatch(&r.body), None);
    assert_eq!(
        c.get("/").unwrap().text(),
        "stable",
        "request after a response with trailers"
    );
    assert_eq!(
        String::from_utf8_lossy(&r.trailers),
        "x-checksum: 1234abcd\r\nx-note: end\r\n",
        "response trailers not passed through verbatim"
    );
}
