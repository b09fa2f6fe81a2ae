//! `cg-floor`: the command line of the relay in [`benches::floor`], the physical floor of
//! `cargo xtask compare`. Prints `listening on ADDR` once every worker accepts, then
//! relays until killed. Exit code 2 when it cannot start.

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use benches::floor::{self, DEFAULT_BUFFER, FloorConfig};
use clap::Parser;

/// The cheapest relay of the same bytes: io_uring, one fixed upstream, no HTTP parsing,
/// the gateway's buffer size and socket options.
#[derive(Debug, Parser)]
#[command(name = "cg-floor", version, about)]
struct Cli {
    /// Upstream, `HOST:PORT`; every client connection gets its own connection to it.
    #[arg(long, value_name = "HOST:PORT")]
    upstream: String,
    /// Listen address; port 0 picks a free port.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Worker threads, each pinned to a core, with its own SO_REUSEPORT listener and
    /// io_uring runtime.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    workers: u16,
    /// Relay buffer per direction per connection, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_BUFFER, value_parser = positive)]
    buffer: usize,
}

/// A whole number of at least 1.
fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{s:?} is not a positive whole number")),
    }
}

fn main() -> ExitCode {
    match run(&Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cg-floor: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: &Cli) -> Result<()> {
    let upstream = cli
        .upstream
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve --upstream {}", cli.upstream))?
        .next()
        .with_context(|| format!("--upstream {} has no address", cli.upstream))?;
    let running = floor::start(&FloorConfig {
        listen: cli.listen,
        upstream,
        workers: usize::from(cli.workers),
        buffer: cli.buffer,
    })?;
    floor::announce(running.local_addr).context("cannot write to stdout")?;
    running.wait();
    Ok(())
}
