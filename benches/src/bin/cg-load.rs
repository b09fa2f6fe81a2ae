//! `cg-load`: the command line of the load generator in [`benches::load`]. Parses flags,
//! runs, prints the report (text, or JSON on stdout with `--json`). Exit code 1 when the
//! split test fails, no request succeeded, or (scale mode) a connection did not survive.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use benches::load::{self, LoadConfig, Target, idle};
use benches::parse_duration;
use clap::Parser;

/// HTTP/1.1 keep-alive load generator with HDR latency, coordinated-omission correction
/// and a chi-square test of the canary split.
#[derive(Debug, Parser)]
#[command(name = "cg-load", version, about)]
struct Cli {
    /// Target, `http://host[:port][/path]`.
    url: String,
    /// Keep-alive connections.
    #[arg(short, long, default_value_t = 16)]
    connections: usize,
    /// Threads, each a monoio runtime; connections are spread evenly over them.
    #[arg(short, long, default_value_t = 1)]
    threads: usize,
    /// Run time (500ms, 10s, 1m); 10s when neither this nor --requests is given.
    #[arg(short, long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Total requests to send, spread evenly over the connections.
    #[arg(short = 'n', long)]
    requests: Option<u64>,
    /// Open loop: total requests per second, latency measured from each request's
    /// intended send time (coordinated-omission correction). Closed loop without it.
    #[arg(short = 'R', long)]
    rate: Option<f64>,
    /// Time a request may take (connect included) before it counts as a timeout.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    timeout: Duration,
    /// Extra request header, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    headers: Vec<String>,
    /// Response header naming the variant (`stable`/`canary`); counts the split.
    #[arg(long, value_name = "NAME")]
    variant_header: Option<String>,
    /// Expected canary share in percent; runs a chi-square test (1 dof) on the split.
    #[arg(long, value_name = "P", requires = "variant_header")]
    expect_canary_percent: Option<f64>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// No progress lines on stderr.
    #[arg(short, long)]
    quiet: bool,
    /// Scale mode: open this many keep-alive connections, one request each, hold them
    /// idle for --hold, then check each answers again.
    #[arg(long, value_name = "N")]
    idle_connections: Option<usize>,
    /// Scale mode: how long to hold the connections idle.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    hold: Duration,
    /// Scale mode: server process whose VmRSS is read before and with the connections.
    #[arg(long, value_name = "PID")]
    watch_pid: Option<u32>,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("cg-load: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<bool> {
    let target = Target::parse(&cli.url)?;
    if let Some(n) = cli.idle_connections {
        let report = idle::run(&idle::IdleConfig {
            target,
            connections: n,
            threads: cli.threads,
            hold: cli.hold,
            timeout: cli.timeout,
            headers: cli.headers,
            watch_pid: cli.watch_pid,
            progress: !cli.quiet,
        })?;
        if cli.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", report.human());
        }
        return Ok(report.ok());
    }
    let duration = match (cli.duration, cli.requests) {
        (None, None) => Some(Duration::from_secs(10)),
        (d, _) => d,
    };
    let report = load::run(&LoadConfig {
        target,
        connections: cli.connections,
        threads: cli.threads,
        duration,
        requests: cli.requests,
        rate: cli.rate,
        timeout: cli.timeout,
        headers: cli.headers,
        variant_header: cli.variant_header,
        expect_canary_percent: cli.expect_canary_percent,
        progress: !cli.quiet,
    })?;
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.human());
    }
    Ok(report.ok())
}
