//! The request head parser and upstream-head writer on arbitrary bytes: never a panic, and
//! an accepted head always produces an upstream head that ends with an empty line.
#![no_main]

use gateway::proxy::head::{Forwarding, Parsed, parse_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut out = Vec::new();
    let fwd = Forwarding::new(std::net::IpAddr::from([10, 0, 0, 1]));
    if let Ok(Parsed::Complete(head)) = parse_request(data, 16 * 1024, fwd, &mut out) {
        assert!(head.head_len <= data.len());
        assert!(out.ends_with(b"\r\n\r\n"));
    }
});
