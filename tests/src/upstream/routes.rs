//! The test upstream's answers, chosen by request path (the table is in the parent
//! module's docs): plain, echoed, chunked, streamed, slow, stalled, close-delimited, and one
//! that sends an unrequested extra response.

use std::fmt::Write as _;
use std::io::{self, BufWriter, Write};
use std::thread;
use std::time::Duration;

use super::{Head, Shared, param, split_target};
use crate::wire::{BufConn, Digest, fill_pattern};

/// What `/extra` writes right after its (complete) response: a second, unrequested
/// response that must never reach any client.
pub const POISON: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\nx-upstream: poison\r\n\r\nsmuggled";

/// How `/big?chunked=1&trailer=1` ends its body: the last chunk plus a trailer section.
pub const TRAILER: &[u8] = b"0\r\nx-checksum: 1234abcd\r\nx-note: end\r\n\r\n";

/// Chunk sizes (cycled) used when the upstream answers with a chunked body.
pub const RESPONSE_CHUNK_SIZES: [usize; 5] = [1, 100, 4096, 65_536, 7777];

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Whatever",
    }
}

/// Writes the answer for one request; `Ok(false)` means close the connection afterwards.
pub(super) fn respond(
    shared: &Shared,
    conn: &BufConn,
    head: &Head,
    raw: &[u8],
    body: &[u8],
    digest: Digest,
) -> io::Result<bool> {
    let (path, params) = split_target(&head.target);
    let is_head = head.method.eq_ignore_ascii_case("HEAD");
    let conn_tokens = head.tokens("connection");
    let keep = if head.minor == 0 {
        conn_tokens.iter().any(|t| t == "keep-alive")
    } else {
        !conn_tokens.iter().any(|t| t == "close")
    } && path != "/close"
        && path != "/until-close";
    let mut common = format!(
        "x-upstream: {}\r\nx-body-len: {}\r\nx-body-hash: {}\r\n",
        shared.name,
        digest.len,
        digest.hex()
    );
    if let Some(id) = param(&params, "id") {
        let _ = write!(common, "x-id: {id}\r\n");
    }
    if !keep {
        common.push_str("connection: close\r\n");
    }
    let mut out = BufWriter::with_capacity(64 * 1024, conn.stream());
    let resp_chunked = head
        .values("x-resp-chunked")
        .any(|v| v.trim_ascii() == b"1")
        || param(&params, "chunked") == Some("1");
    match path {
        "/" | "/close" => simple(&mut out, 200, &common, shared.name.as_bytes(), is_head)?,
        "/echo" if resp_chunked => chunked(&mut out, &common, body, is_head)?,
        "/echo" => simple(&mut out, 200, &common, body, is_head)?,
        "/headers" => simple(&mut out, 200, &common, raw, is_head)?,
        "/slow" => {
            let ms = param(&params, "ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1000);
            thread::sleep(Duration::from_millis(ms));
            simple(&mut out, 200, &common, b"slow", is_head)?;
        }
        "/status" => {
            let code = param(&params, "code")
                .and_then(|v| v.parse().ok())
                .unwrap_or(200);
            if code == 204 || code == 304 {
                write!(out, "HTTP/1.1 {code} {}\r\n{common}\r\n", reason(code))?;
            } else {
                let text = format!("status {code}");
                simple(&mut out, code, &common, text.as_bytes(), is_head)?;
            }
        }
        "/big" => {
            let n: u64 = param(&params, "n")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let trailer = param(&params, "trailer") == Some("1");
            big(&mut out, &common, n, resp_chunked, is_head, trailer)?;
        }
        "/extra" => {
            simple(&mut out, 200, &common, b"hello", is_head)?;
            out.write_all(POISON)?;
        }
        "/until-close" => {
            let n: usize = param(&params, "n")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            write!(out, "HTTP/1.1 200 OK\r\n{common}\r\n")?;
            if !is_head {
                let mut body = vec![0; n];
                fill_pattern(0, &mut body);
                out.write_all(&body)?;
            }
        }
        "/stall" => {
            let total: u64 = param(&params, "cl")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let first: usize = param(&params, "n")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let ms = param(&params, "ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            write!(
                out,
                "HTTP/1.1 200 OK\r\ncontent-length: {total}\r\n{common}\r\n"
            )?;
            let mut body = vec![0; usize::try_from(total).unwrap_or(0)];
            fill_pattern(0, &mut body);
            let first = first.min(body.len());
            out.write_all(&body[..first])?;
            out.flush()?;
            thread::sleep(Duration::from_millis(ms));
            out.write_all(&body[first..])?;
        }
        _ => simple(&mut out, 404, &common, b"no such path", is_head)?,
    }
    out.flush()?;
    Ok(keep)
}

fn simple(
    out: &mut impl Write,
    code: u16,
    common: &str,
    body: &[u8],
    is_head: bool,
) -> io::Result<()> {
    write!(
        out,
        "HTTP/1.1 {code} {}\r\ncontent-type: application/octet-stream\r\ncontent-length: {}\r\n{common}\r\n",
        reason(code),
        body.len()
    )?;
    if !is_head {
        out.write_all(body)?;
    }
    Ok(())
}

fn chunked(out: &mut impl Write, common: &str, body: &[u8], is_head: bool) -> io::Result<()> {
    write!(
        out,
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n{common}\r\n"
    )?;
    if is_head {
        return Ok(());
    }
    let mut pos = 0;
    for &size in RESPONSE_CHUNK_SIZES.iter().cycle() {
        if pos >= body.len() {
            break;
        }
        let n = size.min(body.len() - pos);
        write!(out, "{n:x}\r\n")?;
        out.write_all(&body[pos..pos + n])?;
        out.write_all(b"\r\n")?;
        pos += n;
    }
    out.write_all(b"0\r\n\r\n")
}

fn big(
    out: &mut impl Write,
    common: &str,
    n: u64,
    chunked: bool,
    is_head: bool,
    trailer: bool,
) -> io::Result<()> {
    if chunked {
        write!(
            out,
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n{common}\r\n"
        )?;
    } else {
        write!(
            out,
            "HTTP/1.1 200 OK\r\ncontent-length: {n}\r\n{common}\r\n"
        )?;
    }
    if is_head {
        return Ok(());
    }
    let mut buf = vec![0_u8; 65_536];
    let mut pos = 0_u64;
    let mut sizes = RESPONSE_CHUNK_SIZES.iter().cycle();
    while pos < n {
        let want = if chunked {
            sizes.next().copied().unwrap_or(4096)
        } else {
            buf.len()
        };
        let len = usize::try_from(n - pos).map_or(want, |left| left.min(want));
        let piece = &mut buf[..len];
        fill_pattern(pos, piece);
        if chunked {
            write!(out, "{len:x}\r\n")?;
            out.write_all(piece)?;
            out.write_all(b"\r\n")?;
        } else {
            out.write_all(piece)?;
        }
        pos += len as u64;
    }
    if chunked && trailer {
        out.write_all(TRAILER)?;
    } else if chunked {
        out.write_all(b"0\r\n\r\n")?;
    }
    Ok(())
}
