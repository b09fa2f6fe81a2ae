//! Command line: `canarygate run` (the gateway) and `canarygate demo` (a self-contained
//! tour). Every flag is validated here; a bad one ends the process with exit code 2 and
//! one line on stderr that names it.

use std::fmt;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

mod docs;
mod fleet;
mod health;
mod logging;

use clap::builder::PossibleValue;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::KernelAccounting;
use crate::config::value::{
    format_duration, format_percent, parse_addr, parse_duration, parse_duration_or_zero,
    parse_header_name, parse_percent,
};
use crate::config::{
    CLI_KERNEL_ACCOUNTING, Config, ConfigError, DriverChoice, Limits, LogFormat, ServerConfig,
    StageTls, Timeouts, TlsCert, TlsVersion,
};

/// canarygate: an io_uring L7 load balancer that sends an exact share of traffic to a
/// canary deployment and keeps everything about that share separate.
#[derive(Debug, Parser)]
#[command(name = "canarygate", version, about, long_about = None)]
pub(crate) struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
#[expect(clippy::large_enum_variant, reason = "parsed once per process")]
pub(crate) enum Command {
    /// Run the gateway in front of a stable and a canary deployment.
    Run(RunArgs),
    /// Start two built-in upstreams ("v1" stable, "v2" canary) and the gateway in front
    /// at 5% canary, send a burst of requests, print the split and latencies, keep serving.
    Demo(DemoArgs),
    /// Check a configuration file without starting anything.
    CheckConfig {
        /// The TOML configuration file.
        file: PathBuf,
    },
    /// Send an admin command to a running gateway (try: canarygate ctl help).
    Ctl(CtlArgs),
    /// Move a fleet's configuration into or out of etcd (fleet mode, see run --etcd).
    #[command(subcommand)]
    Fleet(fleet::FleetCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish or powershell) on stdout.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write the man pages (canarygate.1 and one per subcommand) into DIR
    /// (`cargo xtask package` runs this on the binary it packages).
    #[command(hide = true)]
    Manpage {
        /// Output directory (created if missing).
        dir: PathBuf,
    },
}

/// Flags of `canarygate ctl`.
#[derive(Debug, Args)]
pub(crate) struct CtlArgs {
    /// Admin socket of the gateway.
    #[arg(long, value_name = "PATH", env = "CANARYGATE_ADMIN_SOCKET", default_value = crate::admin::ctl::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// The command and its words, e.g. `set canary api percent 10`.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
}

/// Flags of `canarygate run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// TOML configuration file with stages, routes and server settings (instead of
    /// --listen/--stable/--canary); re-read by the admin `reload` command and on SIGHUP.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["listen", "stable", "canary"])]
    pub config: Option<PathBuf>,
    /// Address to listen on, e.g. 0.0.0.0:8080 (port 0 picks a free port).
    #[arg(long, value_name = "ADDR", value_parser = parse_addr, required_unless_present_any = ["config", "etcd"])]
    pub listen: Option<SocketAddr>,
    /// Stable deployment endpoints, comma-separated host:port (round-robin).
    #[arg(long, value_name = "ADDR[,ADDR..]", value_parser = parse_addr, value_delimiter = ',', required_unless_present_any = ["config", "etcd"], requires = "listen")]
    pub stable: Vec<SocketAddr>,
    /// Canary deployment endpoints, comma-separated host:port (round-robin).
    #[arg(long, value_name = "ADDR[,ADDR..]", value_parser = parse_addr, value_delimiter = ',')]
    pub canary: Vec<SocketAddr>,
    /// Unix socket for the admin commands (created mode 0600; see `canarygate ctl help`).
    #[arg(long, value_name = "PATH")]
    pub admin_socket: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    pub metrics_listen: Option<SocketAddr>,
    /// Serve a live dashboard at http://ADDR/dashboard on the --metrics-listen address.
    #[arg(long)]
    pub dashboard: bool,
    /// Append a JSON line per request to this file.
    #[arg(long, value_name = "PATH")]
    pub access_log: Option<PathBuf>,
    /// Append a JSON line per canary request to this file (the canary's own log stream).
    #[arg(long, value_name = "PATH")]
    pub canary_access_log: Option<PathBuf>,
    /// Send an idempotent canary request (GET, HEAD, ... without a body) to stable when
    /// the canary upstream fails before answering; the failure still counts against the
    /// canary (metrics, judge, kill switch). With --config: `retry_on_stable = true` in a
    /// route.
    #[arg(long, conflicts_with = "config")]
    pub canary_retry_on_stable: bool,
    /// On SIGTERM or SIGINT: how long to let requests in flight (and upgraded
    /// connections) finish after new connections stop being accepted; each response in
    /// that time carries `Connection: close`. A second signal, or `0s`, stops at once.
    #[arg(long, value_name = "DUR", value_parser = parse_duration_or_zero, default_value = "30s")]
    pub drain_timeout: Duration,
    /// Binary upgrade: take the listening sockets over from the gateway whose admin
    /// socket is PATH (start with its flags plus this one); once this one accepts, that
    /// one stops accepting, drains (--drain-timeout) and exits. No connection is refused.
    #[arg(long, value_name = "PATH")]
    pub takeover: Option<PathBuf>,
    /// Terminate TLS on --listen with this certificate chain (PEM: leaf first, then its
    /// chain); with --config: `tls = [{ cert, key, server_names }]` on a stage.
    /// `reload tls` and SIGHUP re-read it.
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_key",
        conflicts_with = "config"
    )]
    pub tls_cert: Option<PathBuf>,
    /// Private key of --tls-cert (PEM: PKCS#8, PKCS#1 RSA or SEC1 EC).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Lowest TLS version accepted with --tls-cert: 1.2 (default) or 1.3.
    #[arg(long, value_name = "VERSION", value_parser = |s: &str| s.parse::<TlsVersion>(), requires = "tls_cert")]
    pub tls_min_version: Option<TlsVersion>,
    /// Serve HTTP/2 too: ALPN `h2` beside `http/1.1` with --tls-cert, else h2c with prior
    /// knowledge (a client's `Upgrade: h2c` is not taken; it is answered over HTTP/1.1).
    #[arg(long, conflicts_with = "config")]
    pub http2: bool,
    /// Format of the log lines on stderr (not the access log); with --config the
    /// default is the file's `[server] log_format`, else text.
    #[arg(long, value_name = "FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    #[command(flatten)]
    pub tuning: Tuning,
    #[command(flatten)]
    pub health: health::HealthArgs,
    #[command(flatten)]
    pub fleet: fleet::FleetArgs,
}

/// Flags of `canarygate demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Address the demo gateway listens on.
    #[arg(long, value_name = "ADDR", value_parser = parse_addr, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Requests in the demo's opening burst.
    #[arg(long, value_name = "N", default_value_t = 20_000)]
    pub requests: u64,
    /// Address of `/metrics` and the live dashboard (`/dashboard`).
    #[arg(long, value_name = "ADDR", value_parser = parse_addr, default_value = "127.0.0.1:9090")]
    pub metrics_listen: SocketAddr,
    /// Admin socket of the demo gateway (default: canarygate-demo-PID.sock in the temp dir).
    #[arg(long, value_name = "PATH")]
    pub admin_socket: Option<PathBuf>,
    /// Exit after the demo instead of serving until interrupted.
    #[arg(long)]
    pub exit: bool,
}

/// Split, worker and limit flags of `run`. Defaults are the configuration's
/// ([`Timeouts::default`], [`Limits::default`], [`DriverChoice::default`]).
#[derive(Debug, Args)]
pub(crate) struct Tuning {
    /// Share of requests sent to the canary, in percent (0..=100, up to 4 decimals: 5, 0.5, 12.25).
    #[arg(long, value_name = "P", value_parser = parse_percent, default_value = "0", allow_negative_numbers = true)]
    canary_percent: u32,
    /// Worker threads, one pinned per core (default: number of cores).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    workers: Option<u16>,
    /// I/O driver: io_uring when available (auto), io-uring only, or epoll.
    #[arg(long, value_name = "DRIVER", value_enum, default_value_t)]
    io_driver: DriverChoice,
    /// Per-variant TCP accounting in the kernel (eBPF): when privileges allow (auto),
    /// required (on), or never (off).
    #[arg(long, value_name = "MODE", value_enum, default_value_t = CLI_KERNEL_ACCOUNTING)]
    kernel_accounting: KernelAccounting,
    /// Add this response header naming the variant that served the request (off by default).
    #[arg(long, value_name = "NAME", value_parser = parse_header_name)]
    variant_header: Option<String>,
    /// Time a client has to send a complete request head (408 after).
    #[arg(long, value_name = "DUR", value_parser = Dur::parse, default_value_t = Dur(Timeouts::default().header))]
    header_timeout: Dur,
    /// Time an idle keep-alive client connection is kept open.
    #[arg(long, value_name = "DUR", value_parser = Dur::parse, default_value_t = Dur(Timeouts::default().keepalive))]
    keepalive_timeout: Dur,
    /// Time allowed to connect to an upstream endpoint (504 after).
    #[arg(long, value_name = "DUR", value_parser = Dur::parse, default_value_t = Dur(Timeouts::default().connect))]
    connect_timeout: Dur,
    /// Time the upstream may take to answer, and between reads of a body (504 after).
    #[arg(long, value_name = "DUR", value_parser = Dur::parse, default_value_t = Dur(Timeouts::default().response))]
    response_timeout: Dur,
    /// A client (or upstream) that takes none of the bytes sent to it for this long is
    /// disconnected (TCP_USER_TIMEOUT; covers a peer that stops reading).
    #[arg(long, value_name = "DUR", value_parser = Dur::parse, default_value_t = Dur(Timeouts::default().send))]
    send_timeout: Dur,
    /// Idle upstream connections older than this are closed.
    #[arg(long, value_name = "DUR", value_parser = Dur::parse, default_value_t = Dur(Timeouts::default().pool_idle))]
    pool_idle_timeout: Dur,
    /// Idle upstream connections kept per endpoint and per worker.
    #[arg(long, value_name = "N", default_value_t = Limits::default().pool_max_idle)]
    pool_max_idle: usize,
    /// Largest request head in bytes (431 above).
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u32).range(1024..=1_048_576), default_value_t = Limits::default().max_header_bytes as u32)]
    max_header_bytes: u32,
    /// Largest request body in bytes, 0 for unlimited (413 above).
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_body_bytes)]
    max_body_bytes: u64,
    /// Time a client has to complete its TLS handshake (closed after).
    #[arg(long, value_name = "DUR", value_parser = Dur::parse, default_value_t = Dur(Timeouts::default().tls_handshake))]
    tls_handshake_timeout: Dur,
    /// TLS handshakes in progress per worker; connections beyond it are closed at once.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..), default_value_t = Limits::default().max_tls_handshakes as u32)]
    max_tls_handshakes: u32,
    /// Streams one HTTP/2 client may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..), default_value_t = Limits::default().h2_max_concurrent_streams)]
    h2_max_concurrent_streams: u32,
}

/// A duration flag's value, shown in `--help` the way it is written (`10s`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Dur(Duration);

impl Dur {
    fn parse(text: &str) -> Result<Dur, String> {
        parse_duration(text).map(Dur)
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

// The configuration's enumerated settings as flag values: the names are the
// configuration's own (`DriverChoice::name`, `KernelAccounting::name`), the texts are
// what `--help` says about each.
impl ValueEnum for DriverChoice {
    fn value_variants<'a>() -> &'a [Self] {
        &DriverChoice::ALL
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        let help = match self {
            DriverChoice::Auto => {
                "io_uring when the kernel allows it, else epoll (said at startup)"
            }
            DriverChoice::IoUring => "io_uring or refuse to start",
            DriverChoice::Epoll => {
                "epoll, even where io_uring works (e.g. to compare, or under a seccomp filter)"
            }
        };
        Some(PossibleValue::new(self.name()).help(help))
    }
}

impl ValueEnum for KernelAccounting {
    fn value_variants<'a>() -> &'a [Self] {
        &KernelAccounting::ALL
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        let help = match self {
            KernelAccounting::Auto => {
                "Use eBPF when the kernel and privileges allow it; otherwise run without it and log why"
            }
            KernelAccounting::On => "Refuse to start without it",
            KernelAccounting::Off => "Never load anything into the kernel",
        };
        Some(PossibleValue::new(self.name()).help(help))
    }
}

impl ValueEnum for LogFormat {
    fn value_variants<'a>() -> &'a [Self] {
        &LogFormat::ALL
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        let help = match self {
            LogFormat::Text => "[TIME LEVEL target] message, for people",
            LogFormat::Json => {
                "One JSON object per line: ts, level, target, msg (journald, Loki, jq)"
            }
        };
        Some(PossibleValue::new(self.name()).help(help))
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{}", one_line(&e.render().to_string()));
            return ExitCode::from(2);
        }
    };
    // `run` starts the logger itself once it knows the format (flag or file).
    if !matches!(cli.command, Command::Run(_)) {
        logging::init(LogFormat::Text);
    }
    let result = match cli.command {
        Command::Run(args) => run(&args),
        Command::Demo(args) => crate::demo::run(&args),
        Command::CheckConfig { file } => check_config(&file),
        Command::Ctl(args) => return ctl(&args),
        Command::Fleet(command) => fleet::run(&command),
        Command::Completions { shell } => {
            docs::completions(shell);
            Ok(())
        }
        Command::Manpage { dir } => docs::manpages(&dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if logging::is_json() {
                log::error!("{e:#}");
            } else {
                eprintln!("error: {e:#}");
            }
            // Flags that parse but do not fit together are invalid flags too.
            ExitCode::from(if e.is::<BadFlag>() { 2 } else { 1 })
        }
    }
}

/// A flag value that parsed but is not acceptable with the others (exit code 2, like
/// clap's own errors); the message names the flag.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct BadFlag(String);

fn run(args: &RunArgs) -> anyhow::Result<()> {
    let mut config = if let Some(path) = &args.config {
        let loaded = crate::config::file::load(path);
        let from_file = loaded.as_ref().map(|c| c.server.log_format);
        logging::init(args.log_format.or(from_file.ok()).unwrap_or_default());
        loaded.map_err(|e| anyhow::anyhow!("--config {e}"))?
    } else {
        logging::init(args.log_format.unwrap_or_default());
        if args.tuning.canary_percent > 0 && args.canary.is_empty() {
            return Err(BadFlag(
                "--canary: a --canary-percent above 0 needs at least one canary endpoint".into(),
            )
            .into());
        }
        let Some(listen) = args.listen else {
            // Fleet mode without local stages: they come from etcd.
            let mut c = Config::default();
            args.fleet.apply(&mut c).map_err(BadFlag)?;
            return serve(args, c);
        };
        let mut c = Config::single_route(
            listen,
            args.stable.clone(),
            args.canary.clone(),
            args.tuning.canary_percent,
        );
        if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
            c.stages[0].tls = Some(StageTls {
                certs: vec![TlsCert {
                    cert: cert.clone(),
                    key: key.clone(),
                    server_names: Vec::new(),
                    default: true,
                }],
                min_version: args.tls_min_version.unwrap_or_default(),
            });
        }
        c.stages[0].http2 = args.http2;
        let health = args.health.config().map_err(BadFlag)?;
        for route in c.stages.iter_mut().flat_map(|s| &mut s.routes) {
            route.retry_on_stable = args.canary_retry_on_stable;
            route.stable.health = health.clone();
            if let Some(canary) = &mut route.canary {
                canary.deployment.health = health.clone();
            }
        }
        c
    };
    if args.tls_cert.is_some() {
        // A certificate or key the gateway cannot use is a bad flag value.
        crate::control::tls::TlsState::load(&config, None)
            .map_err(|e| BadFlag(format!("--tls-cert: {e}")))?;
    }
    args.fleet.apply(&mut config).map_err(BadFlag)?;
    serve(args, config)
}

/// Puts the server flags over `config`, joins the fleet in fleet mode, starts the gateway
/// and serves until a signal.
fn serve(args: &RunArgs, mut config: Config) -> anyhow::Result<()> {
    args.tuning.apply_explicit(&mut config.server);
    let server = &mut config.server;
    if args.admin_socket.is_some() {
        server.admin_socket.clone_from(&args.admin_socket);
    }
    if args.metrics_listen.is_some() {
        server.metrics_listen = args.metrics_listen;
    }
    if args.dashboard {
        if server.metrics_listen.is_none() {
            return Err(BadFlag(
                "--dashboard: it is served on the metrics listener; give --metrics-listen ADDR too"
                    .into(),
            )
            .into());
        }
        server.dashboard = true;
    }
    if let Some(f) = args.log_format {
        server.log_format = f;
    }
    if args.access_log.is_some() {
        server.access_log.clone_from(&args.access_log);
    }
    if args.canary_access_log.is_some() {
        server.canary_access_log.clone_from(&args.canary_access_log);
    }
    server.takeover.clone_from(&args.takeover);
    let joined = match &config.server.fleet {
        Some(_) => {
            let joined = crate::fleet::join(&config).map_err(|e| anyhow::anyhow!(e))?;
            config = joined.config.clone();
            Some(joined)
        }
        None => None,
    };
    let gateway = crate::runtime::start_in(config, joined)
        .map_err(|e| anyhow::anyhow!("{}", start_error(&e)))?;
    // Watched before anyone hears that the gateway is up (the `listening on` lines,
    // READY=1): a SIGTERM sent right after must drain, not kill with the default action.
    let signals = watch_signals();
    log::info!(
        "{} workers on {}, {} stage(s), canary {}% on the first route",
        gateway.workers(),
        gateway.driver(),
        gateway.local_addrs().len(),
        format_percent(gateway.split().ppm()),
    );
    if gateway.driver() == crate::Driver::Epoll && args.tuning.io_driver == DriverChoice::Auto {
        log::warn!("io_uring is unavailable here (kernel, sysctl or seccomp); running on epoll");
    }
    for addr in gateway.local_addrs() {
        println!("listening on {addr}");
    }
    if let Some(cp) = gateway.control_plane() {
        if let Some(p) = cp.admin_socket() {
            println!("admin socket {}", p.display());
        }
        if let Some(a) = cp.metrics_addr() {
            println!("metrics on {a}");
        }
    }
    // `runtime::start` returned: every worker accepts connections.
    let listening: Vec<String> = gateway
        .local_addrs()
        .iter()
        .map(ToString::to_string)
        .collect();
    let status = format!(
        "serving on {} with {} workers",
        listening.join(", "),
        gateway.workers()
    );
    crate::notify::notify(&[("READY", "1"), ("STATUS", &status)]);
    let (signals, handed_over) = wait_for_stop(&gateway, signals);
    if handed_over {
        log::info!("a successor took the listening sockets over: draining");
    }
    crate::notify::notify(&[("STOPPING", "1"), ("STATUS", "draining")]);
    drain(&gateway, args.drain_timeout, signals);
    log::info!("stopping");
    drop(gateway);
    Ok(())
}

/// Graceful stop: stops accepting, then waits until nothing is in flight, `timeout`
/// passes, or another SIGINT/SIGTERM arrives.
fn drain(
    gateway: &crate::Gateway,
    timeout: Duration,
    mut signals: Option<signal_hook::iterator::Signals>,
) {
    if timeout.is_zero() {
        return;
    }
    gateway.begin_drain();
    let busy = gateway.busy();
    if busy == 0 {
        return;
    }
    log::info!(
        "draining: {busy} request(s) or tunnel(s) in flight, waiting up to {timeout:?} (signal again to stop now)"
    );
    let deadline = std::time::Instant::now() + timeout;
    loop {
        std::thread::sleep(Duration::from_millis(10));
        let busy = gateway.busy();
        if busy == 0 {
            log::info!("drained");
            return;
        }
        if signals
            .as_mut()
            .is_some_and(|s| s.pending().next().is_some())
        {
            log::warn!("second signal: stopping with {busy} request(s) or tunnel(s) in flight");
            return;
        }
        if std::time::Instant::now() >= deadline {
            log::warn!(
                "--drain-timeout {timeout:?} passed: stopping with {busy} request(s) or tunnel(s) in flight"
            );
            return;
        }
    }
}

/// Names the flag behind a start failure.
fn start_error(e: &crate::StartError) -> String {
    match e {
        crate::StartError::Bind { .. } => format!("--listen: {e}"),
        crate::StartError::Config(ConfigError::NoCanary { .. }) => format!("--canary: {e}"),
        crate::StartError::Config(ConfigError::NoStable { .. }) => format!("--stable: {e}"),
        crate::StartError::AccessLog(_) => format!("--access-log: {e}"),
        crate::StartError::Kernel(_) => format!("--kernel-accounting on: {e}"),
        _ => e.to_string(),
    }
}

fn check_config(file: &std::path::Path) -> anyhow::Result<()> {
    let c = crate::config::file::load(file).map_err(|e| anyhow::anyhow!("{e}"))?;
    crate::control::tls::TlsState::load(&c, None)
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let routes: usize = c.stages.iter().map(|s| s.routes.len()).sum();
    println!(
        "{}: ok ({} stage(s), {routes} route(s))",
        file.display(),
        c.stages.len()
    );
    Ok(())
}

fn ctl(args: &CtlArgs) -> ExitCode {
    match crate::admin::ctl::send(&args.socket, &args.command.join(" ")) {
        Ok((ok, text)) => {
            // A reader that stopped (`ctl show fleet | head`) is not an error here.
            let _ = writeln!(std::io::stdout(), "{text}");
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Blocks until SIGINT or SIGTERM, or until a successor took the listening sockets over
/// (`--takeover`; then true). Returns the handle that sees later signals.
fn wait_for_stop(
    gateway: &crate::Gateway,
    signals: Option<signal_hook::iterator::Signals>,
) -> (Option<signal_hook::iterator::Signals>, bool) {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let handover = std::sync::Arc::clone(gateway.handover());
    let Some(mut signals) = signals else {
        // Signals cannot be caught (logged): only a takeover ends the wait.
        handover.wait();
        return (None, true);
    };
    let handle = signals.handle();
    let waiter = std::sync::Arc::clone(&handover);
    let spawned = std::thread::Builder::new()
        .name("canarygate-handover".into())
        .spawn(move || {
            waiter.wait();
            handle.close();
        });
    if spawned.is_err() {
        log::warn!("cannot watch for a takeover; stop this gateway with SIGTERM after one");
    }
    if signals.forever().next().is_some() {
        return (Some(signals), false);
    }
    // Closed by the handover: a fresh handle sees a signal sent during the drain.
    (
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).ok(),
        handover.is_done(),
    )
}

/// Blocks until SIGINT or SIGTERM, then returns the handle that sees later ones. SIGHUP
/// is left to the control plane (reload).
pub(crate) fn wait_for_signal() -> signal_hook::iterator::Signals {
    wait_on(watch_signals())
}

/// Starts catching SIGINT and SIGTERM (from now on they no longer end the process by
/// their default action); `None`, logged, when they cannot be caught.
fn watch_signals() -> Option<signal_hook::iterator::Signals> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    match signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) {
        Ok(signals) => Some(signals),
        Err(e) => {
            log::warn!("cannot watch SIGINT/SIGTERM ({e}); stop the process with SIGKILL");
            None
        }
    }
}

/// Blocks until `signals` sees SIGINT or SIGTERM (one caught since [`watch_signals`]
/// counts), then returns it; without it, forever.
fn wait_on(signals: Option<signal_hook::iterator::Signals>) -> signal_hook::iterator::Signals {
    let Some(mut signals) = signals else {
        loop {
            std::thread::park();
        }
    };
    let _ = signals.forever().next();
    signals
}

/// Collapses clap's multi-line message into one line that still names the flag.
fn one_line(rendered: &str) -> String {
    let mut parts = Vec::new();
    for line in rendered.lines() {
        let line = line.trim();
        if line.starts_with("Usage:") || line.starts_with("For more information") {
            break;
        }
        if !line.is_empty() {
            parts.push(line);
        }
    }
    parts.join(" ")
}

impl Tuning {
    /// Puts these flags into `c`, the file's `[server]` settings or the defaults: every
    /// flag set to something other than its default overrides, `--kernel-accounting`
    /// always decides (the file has no such setting).
    fn apply_explicit(&self, c: &mut ServerConfig) {
        if let Some(w) = self.workers {
            c.workers = usize::from(w);
        }
        if self.io_driver != DriverChoice::default() {
            c.io_driver = self.io_driver;
        }
        c.kernel_accounting = self.kernel_accounting;
        if self.variant_header.is_some() {
            c.variant_header.clone_from(&self.variant_header);
        }
        let d = Timeouts::default();
        let t = &mut c.timeouts;
        for (mine, default, theirs) in [
            (self.header_timeout, d.header, &mut t.header),
            (self.keepalive_timeout, d.keepalive, &mut t.keepalive),
            (self.connect_timeout, d.connect, &mut t.connect),
            (self.response_timeout, d.response, &mut t.response),
            (self.send_timeout, d.send, &mut t.send),
            (self.pool_idle_timeout, d.pool_idle, &mut t.pool_idle),
            (
                self.tls_handshake_timeout,
                d.tls_handshake,
                &mut t.tls_handshake,
            ),
        ] {
            if mine.0 != default {
                *theirs = mine.0;
            }
        }
        let d = Limits::default();
        if self.pool_max_idle != d.pool_max_idle {
            c.limits.pool_max_idle = self.pool_max_idle;
        }
        if self.max_header_bytes as usize != d.max_header_bytes {
            c.limits.max_header_bytes = self.max_header_bytes as usize;
        }
        if self.max_body_bytes != d.max_body_bytes {
            c.limits.max_body_bytes = self.max_body_bytes;
        }
        if self.max_tls_handshakes as usize != d.max_tls_handshakes {
            c.limits.max_tls_handshakes = self.max_tls_handshakes as usize;
        }
        if self.h2_max_concurrent_streams != d.h2_max_concurrent_streams {
            c.limits.h2_max_concurrent_streams = self.h2_max_concurrent_streams;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    fn run_args(extra: &[&str]) -> RunArgs {
        let argv = [
            "canarygate",
            "run",
            "--listen",
            "127.0.0.1:0",
            "--stable",
            "127.0.0.1:1",
        ];
        match Cli::try_parse_from(argv.iter().chain(extra)) {
            Ok(Cli {
                command: Command::Run(args),
            }) => args,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn flag_defaults_are_the_configuration_defaults() {
        let mut server = ServerConfig::default();
        run_args(&[]).tuning.apply_explicit(&mut server);
        assert_eq!(server.timeouts, Timeouts::default());
        assert_eq!(server.limits, Limits::default());
        assert_eq!(server.io_driver, DriverChoice::default());
        assert_eq!(server.kernel_accounting, CLI_KERNEL_ACCOUNTING);
        let help = Cli::command()
            .find_subcommand_mut("run")
            .map(|c| c.render_help().to_string())
            .unwrap_or_default();
        for shown in ["[default: 10s]", "[default: 16384]", "[default: auto]"] {
            assert!(help.contains(shown), "{shown} missing from\n{help}");
        }
    }

    #[test]
    fn explicit_flags_override_the_file() {
        let mut server = ServerConfig::default();
        server.timeouts.header = Duration::from_secs(5);
        server.limits.pool_max_idle = 7;
        run_args(&["--connect-timeout", "1s", "--io-driver", "epoll"])
            .tuning
            .apply_explicit(&mut server);
        assert_eq!(server.timeouts.header, Duration::from_secs(5));
        assert_eq!(server.timeouts.connect, Duration::from_secs(1));
        assert_eq!(server.limits.pool_max_idle, 7);
        assert_eq!(server.io_driver, DriverChoice::Epoll);
    }

    #[test]
    fn log_format_takes_text_or_json_and_names_the_flag_otherwise() {
        assert_eq!(run_args(&[]).log_format, None);
        assert_eq!(
            run_args(&["--log-format", "json"]).log_format,
            Some(LogFormat::Json)
        );
        let argv = ["canarygate", "run", "--listen", "127.0.0.1:0"];
        let err = Cli::try_parse_from(argv.iter().chain(&[
            "--stable",
            "127.0.0.1:1",
            "--log-format",
            "xml",
        ]))
        .unwrap_err();
        let line = one_line(&err.render().to_string());
        assert!(
            line.contains("--log-format") && line.contains("'xml'"),
            "{line}"
        );
    }

    #[test]
    fn errors_fit_on_one_line_and_name_the_flag() {
        for args in [
            &[
                "canarygate",
                "run",
                "--listen",
                "127.0.0.1:0",
                "--stable",
                "127.0.0.1:1",
                "--canary-percent",
                "150",
            ][..],
            &[
                "canarygate",
                "run",
                "--listen",
                "127.0.0.1:0",
                "--stable",
                "nope",
            ],
            &["canarygate", "run", "--listen", "127.0.0.1:0"],
        ] {
            let err = Cli::try_parse_from(args).unwrap_err();
            let line = one_line(&err.render().to_string());
            assert!(!line.contains('\n'));
            assert!(
                line.contains("--canary-percent") || line.contains("--stable"),
                "{line}"
            );
        }
    }
}
