//! The allocation budget of the request hot path: with a warm gateway, forwarding a request
//! must not allocate.
//!
//! A counting `#[global_allocator]` wraps the system allocator for this whole binary but
//! only counts while [`COUNTING`] is on. Other tests allocate concurrently in the same
//! process, so the test re-executes this binary for itself alone
//! (`--exact alloc::... --test-threads=1`) with [`CHILD_ENV`] set; the child runs an
//! in-process gateway (1 worker), an upstream and a client that use fixed buffers and a
//! static response, warms up, and counts allocations over 20,000 requests of 64 headers.

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::in_process_config;

/// Set in the re-executed child, which does the measurement.
const CHILD_ENV: &str = "CANARYGATE_E2E_ALLOC_CHILD";
/// This test's full name, for `--exact`.
const TEST_NAME: &str = "alloc::hot_path_does_not_allocate";
const WARMUP: u32 = 2_000;
const MEASURED: u32 = 20_000;
const HEADERS: usize = 64;
/// The upstream's only answer.
static RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok";

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

/// The system allocator plus a counter of allocations (alloc, `alloc_zeroed`, realloc).
struct CountingAlloc;

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract holds exactly as it does for `System`; counting touches only atomics
// and never allocates.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` through this allocator with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: `ptr` came from `System` through this allocator with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

#[test]
fn hot_path_does_not_allocate() {
    if std::env::var_os(CHILD_ENV).is_some() {
        measure();
        return;
    }
    let child = Command::new(std::env::current_exe().expect("current_exe"))
        .args(["--exact", TEST_NAME, "--test-threads=1", "--nocapture"])
        .env(CHILD_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("re-execute the test binary");
    let pid = child.id();
    let watchdog_done = std::sync::Arc::new(AtomicBool::new(false));
    let watchdog = {
        let done = watchdog_done.clone();
        thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_mins(1);
            while !done.load(Ordering::SeqCst) {
                if Instant::now() > deadline {
                    // Kill only the child we started, by its PID.
                    let _ = Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .status();
                    return;
                }
                thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let out = child
        .wait_with_output()
        .expect("wait for the measuring child");
    watchdog_done.store(true, Ordering::SeqCst);
    watchdog.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stdout
        .lines()
        .chain(stderr.lines())
        .find_map(|l| l.find("alloc-measure:").map(|i| l[i..].to_owned()));
    assert!(
        out.status.success() && line.is_some(),
        "measuring child failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    eprintln!("{}", line.unwrap_or_default());
}

/// Serves one gateway connection: reads heads into a fixed buffer, answers each with the
/// static response. Allocation-free after the thread starts.
fn upstream_conn(mut s: TcpStream) {
    let _ = s.set_nodelay(true);
    let mut buf = vec![0_u8; 65_536];
    let mut filled = 0;
    loop {
        let Ok(n) = s.read(&mut buf[filled..]) else {
            return;
        };
        if n == 0 {
            return;
        }
        filled += n;
        let mut start = 0;
        while let Some(end) = find(&buf[start..filled], b"\r\n\r\n") {
            start += end + 4;
            if s.write_all(RESPONSE).is_err() {
                return;
            }
        }
        buf.copy_within(start..filled, 0);
        filled -= start;
        if filled == buf.len() {
            return;
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One request/response on the client side with fixed buffers.
fn round_trip(s: &mut TcpStream, req: &[u8], buf: &mut [u8]) {
    s.write_all(req).expect("write request");
    let mut filled = 0;
    loop {
        let n = s.read(&mut buf[filled..]).expect("read response");
        assert!(n > 0, "gateway closed the connection");
        filled += n;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(head_len) =
            resp.parse(&buf[..filled]).expect("parse response")
        {
            assert_eq!(resp.code, Some(200));
            let cl = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok())
                .and_then(|v| v.trim().parse::<usize>().ok())
                .expect("Content-Length in the response");
            if filled >= head_len + cl {
                assert_eq!(filled, head_len + cl, "extra bytes after the response");
                assert_eq!(&buf[head_len..filled], b"ok");
                return;
            }
        }
    }
}

fn measure() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let up_addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for s in listener.incoming().flatten() {
            thread::spawn(move || upstream_conn(s));
        }
    });
    let mut cfg = in_process_config(vec![up_addr], Vec::new());
    cfg.server.workers = 1;
    let gw = gateway::start(cfg).expect("start in-process gateway");

    let mut req = String::from("GET /hot HTTP/1.1\r\nHost: canarygate.test\r\n");
    for i in 1..HEADERS {
        let _ = write!(
            req,
            "X-Header-{i:02}: value-{i:02}-abcdefghijklmnopqrstuvwxyz\r\n"
        );
    }
    req.push_str("\r\n");
    let req = req.into_bytes();
    let mut buf = vec![0_u8; 65_536];
    let mut client = TcpStream::connect(gw.local_addr()).unwrap();
    client.set_nodelay(true).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    client
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();

    // The counter must see allocations, or a zero below would mean nothing.
    COUNTING.store(true, Ordering::SeqCst);
    drop(std::hint::black_box(vec![1_u8; 10]));
    COUNTING.store(false, Ordering::SeqCst);
    assert!(
        ALLOCATIONS.swap(0, Ordering::SeqCst) >= 1,
        "the counting allocator did not count"
    );

    for _ in 0..WARMUP {
        round_trip(&mut client, &req, &mut buf);
    }
    ALLOCATIONS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    for _ in 0..MEASURED {
        round_trip(&mut client, &req, &mut buf);
    }
    COUNTING.store(false, Ordering::SeqCst);
    let allocations = ALLOCATIONS.load(Ordering::SeqCst);
    let per_request = allocations as f64 / f64::from(MEASURED);
    println!(
        "alloc-measure: {allocations} allocations over {MEASURED} requests with {HEADERS} headers \
         = {per_request:.5} per request"
    );
    assert!(
        per_request < 0.01,
        "{per_request:.5} allocations per request ({allocations} over {MEASURED})"
    );
}
