//! Active health checks: one task per endpoint on the control-plane runtime (not per
//! worker), every `interval`, within `timeout`: a TCP connect, or an HTTP/1.1 `GET` of
//! `path` with a recognisable `User-Agent` on a kept-alive connection (a connection the
//! endpoint closed while idle is replaced once within the same check). `rise` passes
//! in a row bring an endpoint up, `fall` failures take it down; the result is published
//! to the workers at once. Checkers start spread over their first interval, so a
//! thousand endpoints do not all connect at the same instant. HTTP checks of `https://`
//! endpoints run over TLS with the deployment's own settings (trust roots, name, client
//! certificate), so a certificate the data path would refuse fails the check too.

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::{Admin, CHECK_BUCKETS, Entry, LastCheck};
use crate::config::health::{CHECK_USER_AGENT, HealthCheck};
use crate::dataplane::upstream::UpTls;

/// What a checker runs with: the check, and the TLS settings of the endpoint's
/// deployment (their id tells a change).
pub(crate) type Settings = (Option<HealthCheck>, Option<u64>);

/// A check connection: plain, or TLS over TCP.
enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A new check connection to `addr`, over TLS with `tls`.
async fn open(addr: SocketAddr, tls: Option<&UpTls>) -> Result<Conn, String> {
    let s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = s.set_nodelay(true);
    let Some(t) = tls else {
        return Ok(Conn::Plain(s));
    };
    let name = t
        .name
        .clone()
        .unwrap_or(rustls::pki_types::ServerName::IpAddress(addr.ip().into()));
    tokio_rustls::TlsConnector::from(Arc::clone(&t.config))
        .connect(name, s)
        .await
        .map(|s| Conn::Tls(Box::new(s)))
        .map_err(|e| format!("TLS: {e}"))
}

/// A running checker; stopping it aborts the task.
#[derive(Debug)]
pub(crate) struct Handle(tokio::task::AbortHandle);

impl Handle {
    pub(crate) fn stop(self) {
        self.0.abort();
    }
}

/// Largest check response head read; larger is a failed check.
const MAX_HEAD: usize = 16 * 1024;
/// Largest check response body read to keep the connection; larger closes it.
const MAX_BODY: usize = 64 * 1024;

/// Makes `e`'s checker match `check`: started when missing or when the settings changed,
/// stopped when there is no check. Needs the control-plane runtime (does nothing
/// outside one).
pub(crate) fn ensure(e: &Arc<Entry>, check: Option<&HealthCheck>, tls: Option<&Arc<UpTls>>) {
    let mut slot = e
        .checker
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let settings: Settings = (check.cloned(), tls.map(|t| t.id));
    if slot.as_ref().map(|(_, s)| s) == Some(&settings) {
        return;
    }
    if let Some((old, _)) = slot.take() {
        old.stop();
    }
    let Some(check) = check else { return };
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let task = rt.spawn(run(
        Arc::downgrade(e),
        check.clone(),
        e.addr(),
        tls.cloned(),
    ));
    *slot = Some((Handle(task.abort_handle()), settings));
}

/// The first check's delay: one of up to [`SLOTS`] evenly spaced points of the interval
/// (at least [`SLOT_WIDTH`] apart), chosen from the address. Checks spread over the
/// interval, and the ones sharing a point run on one wake-up of the control-plane
/// thread: with a thousand endpoints, waking once per check cost more than the checks.
fn offset(addr: SocketAddr, interval: Duration) -> Duration {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    addr.hash(&mut h);
    let slots = (interval.as_millis() / SLOT_WIDTH.as_millis()).clamp(1, SLOTS) as u32;
    let slot = (h.finish() % u64::from(slots)) as u32;
    interval / slots * slot
}

/// Most distinct start points of checks within an interval.
const SLOTS: u128 = 100;
/// Least time between two start points.
const SLOT_WIDTH: Duration = Duration::from_millis(10);

async fn run(entry: Weak<Entry>, check: HealthCheck, addr: SocketAddr, tls: Option<Arc<UpTls>>) {
    let request = request_bytes(&check, addr);
    let start = tokio::time::Instant::now() + offset(addr, check.interval);
    let mut every = tokio::time::interval_at(start, check.interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut conn: Option<Conn> = None;
    let mut buf = Vec::with_capacity(1024);
    loop {
        every.tick().await;
        match entry.upgrade() {
            None => return,
            Some(e) if e.ctl().admin == Admin::Maint => {
                conn = None;
                continue;
            }
            Some(_) => {}
        }
        let t0 = Instant::now();
        let result = tokio::time::timeout(
            check.timeout,
            probe(
                &mut conn,
                &mut buf,
                request.as_deref(),
                addr,
                tls.as_deref(),
                &check,
            ),
        )
        .await
        .unwrap_or_else(|_| {
            conn = None;
            Err(format!(
                "no answer within {}",
                crate::config::value::format_duration(check.timeout)
            ))
        });
        let took = t0.elapsed();
        let Some(e) = entry.upgrade() else { return };
        record(&e, &check, result, took);
    }
}

/// The bytes of the check request (`None`: a TCP check).
fn request_bytes(check: &HealthCheck, addr: SocketAddr) -> Option<Vec<u8>> {
    let path = check.path.as_ref()?;
    let host = check.host.clone().unwrap_or_else(|| addr.to_string());
    Some(
        format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {CHECK_USER_AGENT}\r\nAccept: */*\r\n\r\n"
        )
        .into_bytes(),
    )
}

/// One check: `Ok` with the status (`None` for a TCP check) when it passed.
async fn probe(
    conn: &mut Option<Conn>,
    buf: &mut Vec<u8>,
    request: Option<&[u8]>,
    addr: SocketAddr,
    tls: Option<&UpTls>,
    check: &HealthCheck,
) -> Result<Option<u16>, String> {
    let Some(request) = request else {
        return TcpStream::connect(addr)
            .await
            .map(|_| None)
            .map_err(|e| format!("connect: {e}"));
    };
    // A kept connection the endpoint closed while idle fails on first use: one more try
    // on a new connection, within the same timeout.
    let reused = conn.is_some();
    match exchange(conn, buf, check, request, addr, tls).await {
        Err(Failure::Io(_)) if reused => {
            *conn = None;
            exchange(conn, buf, check, request, addr, tls).await
        }
        r => r,
    }
    .map_err(|f| match f {
        Failure::Io(e) | Failure::Status(e) => e,
    })
}

enum Failure {
    /// The connection failed (a reused one may just have been closed while idle).
    Io(String),
    /// The endpoint answered, wrongly.
    Status(String),
}

async fn exchange(
    conn: &mut Option<Conn>,
    buf: &mut Vec<u8>,
    check: &HealthCheck,
    request: &[u8],
    addr: SocketAddr,
    tls: Option<&UpTls>,
) -> Result<Option<u16>, Failure> {
    let io = |what: &str, e: std::io::Error| Failure::Io(format!("{what}: {e}"));
    if conn.is_none() {
        *conn = Some(open(addr, tls).await.map_err(Failure::Io)?);
    }
    let Some(s) = conn.as_mut() else {
        return Err(Failure::Io("no connection".into()));
    };
    s.write_all(request).await.map_err(|e| io("write", e))?;
    buf.clear();
    let (status, head_len, body, close) = loop {
        if buf.len() >= MAX_HEAD {
            *conn = None;
            return Err(Failure::Status("response head too large".into()));
        }
        buf.reserve(4096);
        let n = s.read_buf(buf).await.map_err(|e| io("read", e))?;
        if n == 0 {
            *conn = None;
            return Err(Failure::Io("closed before a response".into()));
        }
        match parse_head(buf) {
            Ok(Some(head)) if head.0 < 200 => {
                // An interim response: skip it and read on.
                buf.drain(..head.1);
            }
            Ok(Some(head)) => break head,
            Ok(None) => {}
            Err(e) => {
                *conn = None;
                return Err(Failure::Status(e));
            }
        }
    };
    // Keep the connection only when the body's end is known and small.
    let keep = !close
        && match body {
            Some(len) if len <= MAX_BODY => {
                let have = buf.len() - head_len;
                let mut rest = len.saturating_sub(have);
                while rest > 0 {
                    buf.clear();
                    buf.reserve(4096);
                    let n = s.read_buf(buf).await.map_err(|e| io("read", e))?;
                    if n == 0 {
                        break;
                    }
                    rest = rest.saturating_sub(n);
                }
                rest == 0 && have <= len
            }
            _ => false,
        };
    if !keep {
        *conn = None;
    }
    if check.expect.contains(status) {
        Ok(Some(status))
    } else {
        Err(Failure::Status(format!("status {status}")))
    }
}

/// A parsed check response head: status, head length, body length if known (`None`:
/// chunked or until close), and whether the connection closes after it.
type Head = (u16, usize, Option<usize>, bool);

/// Parses a response head.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("not an HTTP response: {e}")),
    };
    let status = resp.code.unwrap_or(0);
    let mut length = None;
    let mut chunked = false;
    let mut close = resp.version == Some(0);
    for h in resp.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or("").trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<usize>().ok();
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = true;
        } else if h.name.eq_ignore_ascii_case("connection") {
            close = value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("close"));
        }
    }
    let body = if status == 204 || status == 304 {
        Some(0)
    } else if chunked {
        None
    } else {
        length
    };
    Ok(Some((status, head_len, body, close)))
}

/// Counts a check and applies rise and fall.
fn record(e: &Entry, check: &HealthCheck, result: Result<Option<u16>, String>, took: Duration) {
    let mut ctl = e.ctl();
    let secs = took.as_secs_f64();
    let bucket = CHECK_BUCKETS
        .iter()
        .position(|b| secs <= *b)
        .unwrap_or(CHECK_BUCKETS.len());
    ctl.buckets[bucket] += 1;
    ctl.took_sum += secs;
    ctl.checks += 1;
    let passed = result.is_ok();
    let (status, error) = match result {
        Ok(status) => (status, None),
        Err(e) => (None, Some(e)),
    };
    if passed {
        ctl.successes = ctl.successes.saturating_add(1);
        ctl.failures = 0;
        if !ctl.check_up && ctl.successes >= check.rise {
            ctl.check_up = true;
            log::info!(
                "route {} endpoint {} ({}): up after {} passed checks",
                e.route,
                e.addr(),
                e.deployment,
                ctl.successes
            );
        }
    } else {
        ctl.checks_failed += 1;
        ctl.failures = ctl.failures.saturating_add(1);
        ctl.successes = 0;
        if ctl.check_up && ctl.failures >= check.fall {
            ctl.check_up = false;
            log::warn!(
                "route {} endpoint {} ({}): down after {} failed checks: {}",
                e.route,
                e.addr(),
                e.deployment,
                ctl.failures,
                error.as_deref().unwrap_or_default()
            );
        }
    }
    ctl.last = Some(LastCheck {
        at: SystemTime::now(),
        status,
        error,
        took,
    });
    e.publish(&ctl, Instant::now());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_read_for_status_length_and_close() {
        let h = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        assert_eq!(
            parse_head(h).unwrap(),
            Some((200, h.len() - 2, Some(2), false))
        );
        let h = b"HTTP/1.1 503 No\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
        assert_eq!(parse_head(h).unwrap(), Some((503, h.len(), None, true)));
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\n").unwrap(), None);
        assert!(parse_head(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        let h = b"HTTP/1.0 204 No Content\r\n\r\n";
        assert_eq!(parse_head(h).unwrap(), Some((204, h.len(), Some(0), true)));
    }

    #[test]
    fn the_request_names_the_checker() {
        let mut c = HealthCheck::tcp();
        assert!(request_bytes(&c, "127.0.0.1:80".parse().unwrap()).is_none());
        c.path = Some("/healthz".into());
        let r =
            String::from_utf8(request_bytes(&c, "127.0.0.1:80".parse().unwrap()).unwrap()).unwrap();
        assert!(
            r.starts_with("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:80\r\n"),
            "{r}"
        );
        assert!(r.contains("User-Agent: canarygate-health-check/"), "{r}");
    }

    #[test]
    fn offsets_spread_within_the_interval() {
        let i = Duration::from_secs(1);
        let offs: std::collections::HashSet<_> = (0..100u16)
            .map(|p| offset(([127, 0, 0, 1], 9000 + p).into(), i))
            .collect();
        assert!(offs.len() > 40 && offs.len() <= 100 && offs.iter().all(|o| *o < i));
        // Short intervals get fewer, wider slots.
        let short = Duration::from_millis(100);
        let offs: std::collections::HashSet<_> = (0..100u16)
            .map(|p| offset(([127, 0, 0, 1], 9000 + p).into(), short))
            .collect();
        assert!(offs.len() <= 10 && offs.iter().all(|o| *o < short));
    }
}
