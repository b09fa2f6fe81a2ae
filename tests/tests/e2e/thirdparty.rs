//! Real third-party peers: nginx as the upstream behind the gateway, curl as the client in
//! front of it (GET, POST of a file, chunked upload), and curl -> gateway -> nginx.

use std::fs;

use tests::thirdparty::{NGINX_BLOB_LEN, write_file};
use tests::{
    Client, Framing, Nginx, TempDir, TestUpstream, curl, first_pattern_mismatch, pattern_bytes,
    post_request,
};

use crate::start_gw;

#[test]
fn nginx_as_upstream() {
    let nginx = Nginx::start();
    let gw = start_gw(&nginx.addr().to_string(), &[]);
    let mut c = Client::connect(gw.addr()).unwrap();
    for i in 0..200 {
        let r = c.get("/").unwrap();
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "nginx\n"),
            "request {i}: {}",
            r.describe()
        );
    }
    let r = c.get("/blob").unwrap();
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(r.body.len(), NGINX_BLOB_LEN);
    assert_eq!(first_pattern_mismatch(&r.body), None);
    for framing in [Framing::Length, Framing::Chunked] {
        let body = pattern_bytes(5 * 1024 * 1024);
        let r = c
            .request(&post_request("/upload", &body, framing, ""))
            .unwrap();
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "got\n"),
            "{framing:?}: {}",
            r.describe()
        );
    }
    c.send(b"HEAD /blob HTTP/1.1\r\nHost: canarygate.test\r\n\r\n")
        .unwrap();
    let r = c.read_response(true).unwrap();
    assert_eq!(
        r.header("content-length"),
        Some(NGINX_BLOB_LEN.to_string().as_str())
    );
    assert_eq!(c.get("/").unwrap().text(), "nginx\n");
}

fn curl_ok(args: &[&str]) -> String {
    let out = curl(args);
    assert!(
        out.status.success(),
        "curl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn curl_as_client() {
    let up = TestUpstream::start("stable");
    let gw = start_gw(&up.addr_str(), &[]);
    let base = tests::tls::base_url(gw.addr());
    let dir = TempDir::new("curl");

    assert_eq!(curl_ok(&[&format!("{base}/")]), "stable");
    let code = curl_ok(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-I",
        &format!("{base}/"),
    ]);
    assert_eq!(code, "200");

    let data = pattern_bytes(3 * 1024 * 1024 + 5);
    let file = write_file(&dir, "upload.bin", &data);
    let file_arg = format!("@{}", file.display());
    let out_path = dir.path().join("echo.bin");
    let out_arg = out_path.display().to_string();

    let code = curl_ok(&[
        "--data-binary",
        &file_arg,
        "-H",
        "Content-Type: application/octet-stream",
        "-o",
        &out_arg,
        "-w",
        "%{http_code}",
        &format!("{base}/echo"),
    ]);
    assert_eq!(code, "200");
    let echoed = fs::read(&out_path).unwrap();
    assert_eq!(echoed.len(), data.len(), "curl POST echo length");
    assert_eq!(
        first_pattern_mismatch(&echoed),
        None,
        "curl POST echo bytes"
    );
    let seen = up.last_request().unwrap();
    assert_eq!(
        (seen.method.as_str(), seen.body.len),
        ("POST", data.len() as u64)
    );

    let code = curl_ok(&[
        "--data-binary",
        &file_arg,
        "-H",
        "Transfer-Encoding: chunked",
        "-o",
        &out_arg,
        "-w",
        "%{http_code}",
        &format!("{base}/echo"),
    ]);
    assert_eq!(code, "200");
    let echoed = fs::read(&out_path).unwrap();
    assert_eq!(echoed.len(), data.len(), "curl chunked upload echo length");
    assert_eq!(
        first_pattern_mismatch(&echoed),
        None,
        "curl chunked upload echo bytes"
    );
    let seen = up.last_request().unwrap();
    assert_eq!(seen.body.len, data.len() as u64);

    // A chunked response to curl, decoded by curl.
    let out_arg2 = dir.path().join("big.bin").display().to_string();
    let code = curl_ok(&[
        "-o",
        &out_arg2,
        "-w",
        "%{http_code}",
        &format!("{base}/big?n=1000000&chunked=1"),
    ]);
    assert_eq!(code, "200");
    let big = fs::read(&out_arg2).unwrap();
    assert_eq!((big.len(), first_pattern_mismatch(&big)), (1_000_000, None));
}

#[test]
fn curl_through_gateway_to_nginx() {
    let nginx = Nginx::start();
    let gw = start_gw(&nginx.addr().to_string(), &[]);
    let dir = TempDir::new("curl-nginx");
    let out = dir.path().join("blob");
    let out_arg = out.display().to_string();
    let url = format!("{}/blob", tests::tls::base_url(gw.addr()));
    // Two transfers on one curl connection (keep-alive reuse through the gateway).
    let code = curl_ok(&[
        "-o",
        &out_arg,
        "-w",
        "%{http_code}",
        &url,
        "-o",
        &out_arg,
        &url,
    ]);
    assert_eq!(code, "200200");
    let blob = fs::read(&out).unwrap();
    assert_eq!(
        (blob.len(), first_pattern_mismatch(&blob)),
        (NGINX_BLOB_LEN, None)
    );
    let data = pattern_bytes(2 * 1024 * 1024);
    let file = write_file(&dir, "up.bin", &data);
    let body = curl_ok(&[
        "--data-binary",
        &format!("@{}", file.display()),
        "-H",
        "Transfer-Encoding: chunked",
        &format!("{}/upload", tests::tls::base_url(gw.addr())),
    ]);
    assert_eq!(body, "got\n");
}

/// nginx refuses an 8 MiB upload to `/` (its default `client_max_body_size` is 1 MiB)
/// with 413 as soon as it has the head, while curl is still sending: the client gets
/// nginx's own 413 through the gateway, not a 502 or a reset, and the gateway keeps
/// serving.
#[test]
fn upstream_refusing_an_upload_early_reaches_curl() {
    let nginx = Nginx::start();
    let gw = start_gw(&nginx.addr().to_string(), &[]);
    let dir = TempDir::new("curl-413");
    let big = write_file(&dir, "big.bin", &pattern_bytes(8 * 1024 * 1024));
    let url = format!("{}/", tests::tls::base_url(gw.addr()));
    let data = format!("@{}", big.display());
    for expect in ["Expect:", "Expect: 100-continue"] {
        let out = curl_ok(&[
            "-sS",
            "-w",
            "\n%{http_code}",
            "--data-binary",
            &data,
            "-H",
            expect,
            &url,
        ]);
        let (body, code) = out.rsplit_once('\n').unwrap();
        assert_eq!(code, "413", "{expect}: {out}");
        assert!(body.contains("nginx"), "{expect}: not nginx's page: {body}");
    }
    assert_eq!(curl_ok(&["-sS", &url]), "nginx\n");
}
