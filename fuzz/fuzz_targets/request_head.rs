//! The request head parser and upstream-head writer on arbitrary bytes: never a panic, and
//! an accepted head always produces an upstream head that ends with an empty line.
#![no_main]

use gateway::dataplane::h1::head::{Forwarding, MAX_HEADERS, Rewrite, parse, write_upstream};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut out = Vec::new();
    let fwd = Forwarding::new(std::net::IpAddr::from([10, 0, 0, 1]), false);
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    if let Ok(Some(req)) = parse(data, 16 * 1024, &mut headers) {
        write_upstream(&req, &Rewrite::default(), &fwd, &mut out);
        assert!(req.head.head_len <= data.len());
        assert!(out.ends_with(b"\r\n\r\n"));
    }
});
