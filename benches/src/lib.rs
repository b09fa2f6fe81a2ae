//! Benchmarks of canarygate's hot path. The criterion benches live in `benches/`; this
//! library holds the inputs they share.

/// A typical browser request head with `extra` additional headers.
pub fn request_head(extra: usize) -> Vec<u8> {
    let mut head = b"GET /api/v1/items?page=2 HTTP/1.1\r\nHost: shop.example\r\n\
        User-Agent: Mozilla/5.0\r\nAccept: */*\r\nConnection: keep-alive\r\n"
        .to_vec();
    for i in 0..extra {
        head.extend_from_slice(format!("X-Extra-{i}: value-{i}\r\n").as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    head
}
