//! The upstream response head parser on arbitrary bytes, for every kind of request: never
//! a panic; an accepted final head is rewritten into a head that ends with an empty line
//! and carries at most one framing header.
#![no_main]

use gateway::dataplane::h1::head::{BodyKind, RequestHead, Version};
use gateway::dataplane::h1::response::parse_response;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, data)) = data.split_first() else {
        return;
    };
    let req = RequestHead {
        head_len: 0,
        version: if flags & 1 == 0 { Version::Http11 } else { Version::Http10 },
        body: BodyKind::None,
        is_head: flags & 2 != 0,
        idempotent: true,
        keep_alive: flags & 4 != 0,
        expect_continue: false,
        upgrade: flags & 8 != 0,
    };
    let mut out = Vec::new();
    if let Ok(Some(resp)) = parse_response(data, &req, Some(("x-variant", "stable")), &mut out) {
        assert!(resp.head_len <= data.len());
        if !(100..200).contains(&resp.status) || resp.upgraded {
            assert!(out.ends_with(b"\r\n\r\n"));
            let text = String::from_utf8_lossy(&out).to_ascii_lowercase();
            let framing = text
                .split("\r\n")
                .filter(|l| l.starts_with("content-length:") || l.starts_with("transfer-encoding:"))
                .count();
            assert!(framing <= 1, "{text}");
        }
    }
});
