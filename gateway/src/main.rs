//! The `canarygate` binary: parse flags, then run the gateway or the demo.

use std::process::ExitCode;

fn main() -> ExitCode {
    gateway::main()
}
