//! `canarygate demo`: the whole product on one machine in one command. Two built-in
//! upstreams answer "v1" (stable) and "v2" (canary); the gateway runs in front at 5 %
//! canary; a burst of requests shows the split and the latencies; then it keeps serving
//! so a newcomer can `curl` it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use gateway_common::Variant;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};

use crate::cli::DemoArgs;
use crate::config::value::format_percent;
use crate::config::{CLI_KERNEL_ACCOUNTING, Config};
use crate::metrics::{Histogram, new_histogram};

/// Connections the demo's burst uses.
const BURST_CONNECTIONS: usize = 8;
/// Canary share of the demo, in ppm (5 %).
const DEMO_PPM: u32 = 50_000;

/// Runs the demo.
pub(crate) fn run(args: &DemoArgs) -> anyhow::Result<()> {
    let v1 = spawn_upstream("v1\n").context("starting the built-in stable upstream")?;
    let v2 = spawn_upstream("v2\n").context("starting the built-in canary upstream")?;
    let mut config = Config::single_route(args.listen, vec![v1], vec![v2], DEMO_PPM);
    // The same server settings as `canarygate run` without flags.
    config.server.kernel_accounting = CLI_KERNEL_ACCOUNTING;
    config.server.variant_header = Some("x-canarygate-variant".into());
    let gateway = crate::runtime::start(config).map_err(|e| anyhow::anyhow!("--listen: {e}"))?;
    let addr = gateway.local_addr();
    println!("canarygate demo");
    println!("  stable deployment  v1 at http://{v1}");
    println!("  canary deployment  v2 at http://{v2}");
    println!(
        "  gateway            http://{addr}  ({} workers, {}), canary share {}%",
        gateway.workers(),
        gateway.driver(),
        format_percent(gateway.split().ppm())
    );
    println!();

    let burst = burst(addr, args.requests)?;
    let n = burst.stable + burst.canary;
    let secs = burst.elapsed.as_secs_f64();
    println!(
        "burst: {n} requests over {BURST_CONNECTIONS} keep-alive connections in {secs:.2} s ({:.0} req/s)",
        n as f64 / secs
    );
    let expected = f64::from(DEMO_PPM) / 1e6;
    let share = burst.canary as f64 / n.max(1) as f64;
    let sd = (n as f64 * expected * (1.0 - expected)).sqrt();
    let within = (burst.canary as f64 - n as f64 * expected).abs() <= 3.291 * sd + 1.0;
    println!(
        "  observed split: stable {} ({:.2}%), canary {} ({:.2}%); configured {}% -> {}",
        burst.stable,
        (1.0 - share) * 100.0,
        burst.canary,
        share * 100.0,
        format_percent(DEMO_PPM),
        if within {
            "within the 99.9% binomial bound"
        } else {
            "OUTSIDE the 99.9% binomial bound"
        }
    );
    print_latency("  client-observed latency (all)", &burst.latency);
    let stats = gateway.stats();
    let kernel = gateway.kernel_stats();
    for v in Variant::ALL {
        let s = stats.variant(v);
        print_latency(
            &format!("  gateway {:<6} upstream head", v.as_str()),
            &s.upstream_latency,
        );
        if let Some(k) = &kernel {
            println!("  kernel  {:<6} {}", v.as_str(), k.variant(v).summary());
            print_latency(
                &format!("  kernel  {:<6} TCP RTT", v.as_str()),
                &k.variant(v).rtt,
            );
        }
    }
    match (&kernel, gateway.kernel_status()) {
        (Some(k), _) => println!("  kernel  clients {}", k.downstream.summary()),
        (None, crate::kernel::KernelStatus::Off(why)) => println!("  kernel accounting off: {why}"),
        (None, crate::kernel::KernelStatus::On(_)) => {}
    }
    println!();
    if args.exit {
        return Ok(());
    }
    println!("serving until Ctrl-C; try:  curl -i http://{addr}/");
    let _ = crate::cli::wait_for_signal();
    Ok(())
}

fn print_latency(label: &str, h: &Histogram<u64>) {
    if h.is_empty() {
        println!("{label}: no samples");
        return;
    }
    println!(
        "{label}: p50 {} µs, p90 {} µs, p99 {} µs, p99.9 {} µs, max {} µs ({} samples)",
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.9),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max(),
        h.len()
    );
}

struct Burst {
    stable: u64,
    canary: u64,
    latency: Histogram<u64>,
    elapsed: Duration,
}

/// Sends `total` GETs over a few keep-alive connections and tallies the answers.
fn burst(addr: SocketAddr, total: u64) -> anyhow::Result<Burst> {
    let start = Instant::now();
    let per = total.div_ceil(BURST_CONNECTIONS as u64);
    let handles: Vec<_> = (0..BURST_CONNECTIONS)
        .map(|_| std::thread::spawn(move || client_loop(addr, per)))
        .collect();
    let mut out = Burst {
        stable: 0,
        canary: 0,
        latency: new_histogram(),
        elapsed: Duration::ZERO,
    };
    for h in handles {
        let (s, c, lat) = h
            .join()
            .map_err(|_| anyhow::anyhow!("burst client panicked"))??;
        out.stable += s;
        out.canary += c;
        out.latency.add(&lat).context("merging latency")?;
    }
    out.elapsed = start.elapsed();
    Ok(out)
}

fn client_loop(addr: SocketAddr, n: u64) -> anyhow::Result<(u64, u64, Histogram<u64>)> {
    let mut s = TcpStream::connect(addr).context("connecting to the demo gateway")?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut lat = new_histogram();
    let (mut stable, mut canary) = (0, 0);
    let mut buf = vec![0u8; 4096];
    for _ in 0..n {
        let t = Instant::now();
        s.write_all(b"GET / HTTP/1.1\r\nHost: demo\r\n\r\n")?;
        let mut len = 0;
        let body = loop {
            let r = s.read(&mut buf[len..])?;
            anyhow::ensure!(r > 0, "gateway closed the connection");
            len += r;
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut resp = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(h) = resp.parse(&buf[..len])? {
                anyhow::ensure!(resp.code == Some(200), "unexpected status {:?}", resp.code);
                let cl = resp
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.parse::<usize>().ok())
                    .context("response without Content-Length")?;
                if len >= h + cl {
                    break &buf[h..h + cl];
                }
            }
        };
        match body {
            b"v1\n" => stable += 1,
            b"v2\n" => canary += 1,
            other => anyhow::bail!("unexpected body {:?}", String::from_utf8_lossy(other)),
        }
        let _ = lat.record(t.elapsed().as_micros().max(1) as u64);
    }
    Ok((stable, canary, lat))
}

/// Starts a keep-alive HTTP/1.1 server answering every request with `body`, on its own
/// thread and monoio runtime, on a free loopback port.
pub(crate) fn spawn_upstream(body: &'static str) -> std::io::Result<SocketAddr> {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    std_listener.set_nonblocking(true)?;
    let addr = std_listener.local_addr()?;
    std::thread::Builder::new().name("demo-upstream".into()).spawn(move || {
        let rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new().enable_timer().build();
        let Ok(mut rt) = rt else { return };
        rt.block_on(async move {
            let Ok(listener) = monoio::net::TcpListener::from_std(std_listener) else { return };
            let response: &'static [u8] = Box::leak(
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                )
                .into_bytes()
                .into_boxed_slice(),
            );
            while let Ok((stream, _)) = listener.accept().await {
                monoio::spawn(upstream_conn(stream, response));
            }
        });
    })?;
    Ok(addr)
}

/// Answers requests on one connection; request bodies (Content-Length) are discarded.
async fn upstream_conn(mut stream: monoio::net::TcpStream, response: &'static [u8]) {
    let _ = stream.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut skip: usize = 0;
    loop {
        let mut answered = 0;
        let mut pos = 0;
        loop {
            if skip > 0 {
                let n = skip.min(buf.len() - pos);
                pos += n;
                skip -= n;
                if skip > 0 {
                    break;
                }
            }
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf[pos..]) {
                Ok(httparse::Status::Complete(n)) => {
                    skip = req
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                        .unwrap_or(0);
                    pos += n;
                    answered += 1;
                }
                Ok(httparse::Status::Partial) => break,
                Err(_) => return,
            }
        }
        buf.drain(..pos);
        for _ in 0..answered {
            let (res, _) = stream.write_all(response).await;
            if res.is_err() {
                return;
            }
        }
        if buf.len() == buf.capacity() {
            return;
        }
        let len = buf.len();
        let (res, slice) = stream
            .read(monoio::buf::IoBufMut::slice_mut(buf, len..))
            .await;
        buf = slice.into_inner();
        if !matches!(res, Ok(n) if n > 0) {
            return;
        }
    }
}
