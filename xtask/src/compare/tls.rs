//! `cargo xtask compare --tls`: canarygate, nginx and HAProxy terminating TLS with the
//! same certificate (ECDSA P-256, made for the run, [`certs`]) in front of the same two
//! nginx upstreams as the plain comparison, with 1 and 2 workers. Three loads, each
//! measured like a plain run ([`Bench`]: quiet machine, proxy CPU from /proc, redone
//! when disturbed):
//!
//! - full handshakes/s: `cg-handshake`, every connection a new TLS 1.3 handshake and
//!   one request, no resumption;
//! - resumed handshakes/s: the same with the ticket of the connection before;
//! - keep-alive req/s over TLS: `wrk -t1` on https://, handshakes amortised away.
//!
//! Both clients offer one thing only: TLS 1.3, `--tls-suite`, X25519 (cg-handshake by
//! its rustls configuration, wrk through an `OPENSSL_CONF` file), so no proxy can
//! negotiate something cheaper than another; what each one did negotiate is read back
//! before measuring and reported. Round by round the proxies take turns in a rotating
//! order. Medians, canarygate over the best peer for every figure, and whether it is
//! ahead of both go to the terminal and `target/compare/tls.{json,md}` ([`report`]).

mod certs;
mod report;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use super::bench::{Bench, Sample, Target};
use super::loadgen::{Handshakes, Load, Loadgen, LoadgenKind, parse_cg_handshake};
use super::procs::{Proc, TlsFiles, Upstreams};
use super::{
    CompareArgs, HAPROXY, NGINX, RUN_OVERHEAD_S, Setup, WARMUP, WRK, check_counts, clock_ticks,
    machine, setup, start_proxy,
};
use crate::step::Plan;
use crate::tools::Package;
use report::{Negotiation, Shape, TlsResults};

const OPENSSL: Package = Package {
    name: "openssl",
    program: "/usr/bin/openssl",
};

/// Length of the handshake run that reads back what a proxy negotiates.
const CHECK: Duration = Duration::from_millis(300);

/// The three loads, each with its client and the client counts it runs at.
struct Loads {
    full: Handshakes,
    resumed: Handshakes,
    keepalive: Loadgen,
    /// `--handshake-clients`.
    clients: usize,
    /// Keep-alive connection counts.
    connections: Vec<usize>,
}

impl Loads {
    fn of(&self, shape: Shape) -> (&dyn Load, Vec<usize>) {
        match shape {
            Shape::Full => (&self.full, vec![self.clients]),
            Shape::Resumed => (&self.resumed, vec![self.clients]),
            Shape::KeepAlive => (&self.keepalive, self.connections.clone()),
        }
    }
}

/// Runs the TLS comparison.
pub(crate) fn run(root: &Path, args: &CompareArgs) -> Result<()> {
    check_counts(args)?;
    if args.loadgen != LoadgenKind::Wrk {
        bail!("--tls: keep-alive load over TLS is wrk's (cg-load speaks plain HTTP only)");
    }
    if args.handshake_clients == 0 {
        bail!("--handshake-clients: counts start at 1");
    }
    let (proxies, connections) = (args.proxies(), args.connections());
    let per_round = proxies.len() * (2 + connections.len());
    let runs = per_round * args.rounds * args.workers.len();
    let warmups = 2 * proxies.len() * args.workers.len();
    let secs = runs as f64 * (args.duration.as_secs_f64() + RUN_OVERHEAD_S)
        + warmups as f64 * WARMUP.as_secs_f64();
    eprintln!(
        "xtask: compare --tls: {runs} measured runs of {:.1} s ({} rounds x {} worker counts x {} \
         proxies x (full, resumed, keep-alive at {connections:?})), expected about {:.1} min after \
         the build (longer if the machine is busy)",
        args.duration.as_secs_f64(),
        args.rounds,
        args.workers.len(),
        proxies.len(),
        secs / 60.0
    );
    let mut plan = Plan::new(5 + args.workers.len());
    let setup = setup(root, args, &mut plan, &[NGINX, HAPROXY, WRK, OPENSSL])?;
    let mut made = None;
    plan.step(
        "certificate",
        "ECDSA P-256 for localhost (openssl req), client pin (OPENSSL_CONF)",
        || {
            made = Some((
                certs::make(&setup.run)?,
                certs::pin_conf(&setup.run, &args.tls_suite)?,
            ));
            Ok(())
        },
    )?;
    let (files, pin) = made.context("no certificate")?;
    let handshakes = |resume| Handshakes {
        bin: setup.cg_handshake.clone(),
        cert: files.cert.clone(),
        server_name: certs::SERVER_NAME,
        suite: args.tls_suite.clone(),
        resume,
    };
    let loads = Loads {
        full: handshakes(false),
        resumed: handshakes(true),
        keepalive: Loadgen {
            openssl_conf: Some(pin.clone()),
            ..Loadgen::new(
                LoadgenKind::Wrk,
                setup.cg_load.clone(),
                args.loadgen_cpus.clone(),
            )
        },
        clients: args.handshake_clients,
        connections,
    };
    let mut upstreams = None;
    plan.step("upstreams", "two nginx, 1 worker each", || {
        upstreams = Some(Upstreams::start(&setup.run)?);
        Ok(())
    })?;
    let up = upstreams.context("upstreams did not start")?;
    let hz = clock_ticks();
    let mut samples: Vec<(Shape, Sample)> = Vec::new();
    let mut negotiated = Vec::new();
    for &w in &args.workers {
        let names: Vec<&str> = proxies.iter().map(|p| p.name()).collect();
        let detail = format!(
            "{} with {w} worker{}: full and resumed handshakes ({} clients), keep-alive at {:?}, {} rounds",
            names.join(", "),
            if w == 1 { "" } else { "s" },
            loads.clients,
            loads.connections,
            args.rounds
        );
        plan.step(&format!("measure w{w}"), &detail, || {
            let ctx = Ctx {
                args,
                setup: &setup,
                up: &up,
                files: &files,
                pin: &pin,
                loads: &loads,
                hz,
            };
            let m = measure_workers(&ctx, w)?;
            samples.extend(m.samples);
            negotiated.extend(m.negotiated);
            Ok(())
        })?;
    }
    let mut m = machine(args, &setup.canarygate);
    m.loadgen = format!(
        "cg-handshake -c{} (rustls), wrk -t1 (OpenSSL)",
        args.handshake_clients
    );
    let results = TlsResults::new(
        m,
        args.tls_suite.clone(),
        args.handshake_clients,
        negotiated,
        samples,
    );
    plan.step("report", "target/compare/tls.json and tls.md", || {
        let md = results.markdown();
        fs::write(setup.out.join("tls.md"), &md)?;
        fs::write(
            setup.out.join("tls.json"),
            serde_json::to_string_pretty(&results)?,
        )?;
        println!("{md}");
        Ok(())
    })?;
    drop(up);
    plan.finish();
    Ok(())
}

/// What every worker count's measurement shares.
struct Ctx<'a> {
    args: &'a CompareArgs,
    setup: &'a Setup,
    up: &'a Upstreams,
    files: &'a TlsFiles,
    pin: &'a PathBuf,
    loads: &'a Loads,
    hz: f64,
}

/// One worker count's runs, and what each proxy negotiated.
struct Measured {
    samples: Vec<(Shape, Sample)>,
    negotiated: Vec<Negotiation>,
}

/// Starts the proxies with `w` workers and TLS, reads back what each negotiates, warms
/// them up, and measures every round.
fn measure_workers(ctx: &Ctx<'_>, w: usize) -> Result<Measured> {
    let args = ctx.args;
    let mut procs: Vec<(&'static str, Proc, u16)> = Vec::new();
    for kind in args.proxies() {
        let (p, port) = start_proxy(kind, args, ctx.setup, ctx.up, w, Some(ctx.files))?;
        procs.push((kind.name(), p, port));
    }
    let targets: Vec<Target<'_>> = procs
        .iter()
        .map(|(name, p, port)| Target {
            proxy: name,
            workers: w,
            url: format!("https://127.0.0.1:{port}/"),
            proc: Some(p),
        })
        .collect();
    let mut negotiated = Vec::new();
    for (t, (_, _, port)) in targets.iter().zip(&procs) {
        let n = negotiation(ctx, t, *port)
            .with_context(|| format!("reading what {} negotiates", t.proxy))?;
        eprintln!(
            "xtask:   w{w} {:<20} rustls client: {} ({} of {} handshakes resumed); OpenSSL client: {} {} {} {}",
            t.proxy,
            n.rustls.join("; "),
            n.check_resumed,
            n.check_connections,
            n.openssl.protocol,
            n.openssl.suite,
            n.openssl.group,
            n.openssl.signature
        );
        negotiated.push(n);
    }
    for t in &targets {
        ctx.loads
            .keepalive
            .run(&t.url, 64, WARMUP)
            .and_then(|_| ctx.loads.full.run(&t.url, ctx.loads.clients, WARMUP))
            .with_context(|| format!("warming up {}", t.proxy))?;
    }
    let mut ours: Vec<&Proc> = procs.iter().map(|(_, p, _)| p).collect();
    ours.extend(ctx.up.procs());
    let bench = |load| Bench {
        shape: super::shape::Shape::Keepalive,
        loadgen: load,
        duration: args.duration,
        ours: ours.clone(),
        idle_wait: Duration::from_secs(args.idle_wait),
        hz: ctx.hz,
        retries: args.retries,
    };
    let total: usize = Shape::ALL
        .iter()
        .map(|s| ctx.loads.of(*s).1.len())
        .sum::<usize>()
        * args.rounds
        * targets.len();
    let mut samples = Vec::with_capacity(total);
    for round in 0..args.rounds {
        for (si, &shape) in Shape::ALL.iter().enumerate() {
            let (load, counts) = ctx.loads.of(shape);
            let bench = bench(load);
            for (ci, &c) in counts.iter().enumerate() {
                let n = targets.len();
                for k in 0..n {
                    let t = &targets[(k + round + si + ci) % n];
                    let s = bench.measure(t, c, round + 1)?;
                    eprintln!(
                        "xtask:   [{:>3}/{total}] w{w} {:<10} c{c:<3} round {} {:<20} {:>8.0}/s  p99 {:>6.0} µs  CPU {} µs each{}  (loadgen {:.1} µs, other {:.1}%{})",
                        samples.len() + 1,
                        shape.short(),
                        round + 1,
                        t.proxy,
                        s.rps,
                        s.p99_us,
                        s.proxy_cpu_us_per_req
                            .map_or_else(|| "-".into(), |v| format!("{v:.1}")),
                        s.resumed_pct
                            .map_or_else(String::new, |p| format!(", {p:.1}% resumed")),
                        s.loadgen_cpu_us_per_req,
                        s.other_cpu_pct,
                        if s.errors > 0 {
                            format!(", {} errors", s.errors)
                        } else {
                            String::new()
                        }
                    );
                    samples.push((shape, s));
                }
            }
        }
    }
    drop(targets);
    for (_, p, _) in &mut procs {
        p.check_alive()?;
    }
    Ok(Measured {
        samples,
        negotiated,
    })
}

/// What `t` negotiates with each client: a short resumed handshake run (rustls, so
/// resumption is seen working too) and one `openssl s_client` handshake under the pin.
fn negotiation(ctx: &Ctx<'_>, t: &Target<'_>, port: u16) -> Result<Negotiation> {
    let v = ctx.loads.resumed.report(&t.url, 1, CHECK)?;
    let r = parse_cg_handshake(&v)?;
    if r.requests == 0 {
        bail!("no handshake completed: {v}");
    }
    let rustls = v
        .get("negotiated")
        .and_then(serde_json::Value::as_array)
        .map(|all| {
            all.iter()
                .map(|n| {
                    ["protocol", "suite", "group"]
                        .map(|k| n.get(k).and_then(serde_json::Value::as_str).unwrap_or("?"))
                        .join(" ")
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Negotiation {
        proxy: t.proxy,
        workers: t.workers,
        rustls,
        check_connections: r.requests,
        check_resumed: r.resumed.unwrap_or(0),
        openssl: certs::openssl_view(ctx.pin, &ctx.files.cert, port)?,
    })
}
