//! The admin command parser on arbitrary lines: an error or a request, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(line) = std::str::from_utf8(data) {
        if let Ok(req) = gateway::parse_admin_command(line) {
            // `expect N` only makes sense on a command that changes something.
            let _ = req.command.mutates();
            assert!(req.expect.is_none() || req.command.mutates() || line.contains("expect"));
        }
    }
});
