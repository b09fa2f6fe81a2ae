//! `cg-handshake`: the command line of the TLS handshake load generator in
//! [`benches::handshake`]. Parses flags, runs, prints the report (text, or JSON on
//! stdout with `--json`). Exit code 1 when no connection completed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result};
use benches::handshake::{self, HandshakeConfig, client::ClientSettings};
use benches::parse_duration;
use clap::Parser;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

/// TLS handshakes per second: each client connects, completes a TLS 1.3 handshake
/// (one pinned suite, X25519), sends one request with `Connection: close`, reads the
/// response and closes; with `--resume` it resumes the previous connection's session.
#[derive(Debug, Parser)]
#[command(name = "cg-handshake", version, about)]
struct Cli {
    /// Target, `https://host[:port][/path]`.
    url: String,
    /// The server's certificate (PEM): the only one accepted.
    #[arg(long, value_name = "FILE")]
    cert: PathBuf,
    /// SNI and Host header; the URL's host when not given.
    #[arg(long, value_name = "NAME")]
    server_name: Option<String>,
    /// Concurrent clients, one thread each.
    #[arg(short, long, default_value_t = 16)]
    clients: usize,
    /// Run time (500ms, 10s, 1m).
    #[arg(short, long, value_parser = parse_duration, default_value = "5s")]
    duration: Duration,
    /// Resume sessions with the tickets the server sends (else every handshake is full).
    #[arg(long)]
    resume: bool,
    /// The one TLS 1.3 cipher suite offered.
    #[arg(long, default_value = handshake::client::SUITES[0])]
    suite: String,
    /// Also check the server's CertificateVerify signature (costs client CPU).
    #[arg(long)]
    verify: bool,
    /// Time each connect, read and write may take.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    timeout: Duration,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("cg-handshake: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<bool> {
    let (addr, host, path) = handshake::parse_url(&cli.url).map_err(anyhow::Error::msg)?;
    let cert = CertificateDer::from_pem_file(&cli.cert)
        .with_context(|| format!("reading a certificate from {}", cli.cert.display()))?;
    let report = handshake::run(&HandshakeConfig {
        addr,
        server_name: cli.server_name.unwrap_or(host),
        path,
        clients: cli.clients,
        duration: cli.duration,
        timeout: cli.timeout,
        settings: ClientSettings {
            cert,
            suite: cli.suite,
            resume: cli.resume,
            verify: cli.verify,
        },
    })?;
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.human());
    }
    Ok(report.connections > 0)
}
