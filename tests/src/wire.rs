//! Byte-level HTTP/1.1 framing shared by the test client and the test upstream.
//!
//! [`BufConn`] is a buffered reader/writer over one `TcpStream` that reads a message head,
//! a Content-Length body, a chunked body (decoded, remembering every chunk size so tests
//! can check that chunking was passed through verbatim) or a body delimited by close.
//! Nothing here trusts the peer: every length is bounded and every malformed frame is an
//! `io::ErrorKind::InvalidData` error, never a panic. The deterministic body [`pattern`]
//! and the [`Digest`] checksum let tests compare multi-megabyte bodies byte-exactly without
//! keeping both copies around.

use std::io::{self, Read, Write};
use std::net::TcpStream;

use crate::tls::Sock;

/// Largest message head either side accepts before calling the peer broken.
pub const MAX_HEAD: usize = 1 << 20;

/// Longest chunk-size line (size, extensions, CRLF) accepted in a chunked body.
const MAX_CHUNK_LINE: usize = 4096;

/// Size of the read buffer; reads never ask the kernel for more than this at once.
const BUF_SIZE: usize = 64 * 1024;

/// Builds the `InvalidData` error used for every framing violation.
pub fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// The byte at `offset` of the deterministic body pattern served by `/big`.
///
/// Mixes the offset so that a dropped, duplicated or reordered block of any power-of-two
/// size shows up as a mismatch.
#[inline]
pub fn pattern(offset: u64) -> u8 {
    let x = offset.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((x >> 56) ^ (offset >> 13) ^ offset) as u8
}

/// Fills `out` with the pattern starting at `offset`.
pub fn fill_pattern(offset: u64, out: &mut [u8]) {
    for (i, b) in out.iter_mut().enumerate() {
        *b = pattern(offset + i as u64);
    }
}

/// `len` bytes of the pattern, starting at offset 0.
pub fn pattern_bytes(len: usize) -> Vec<u8> {
    let mut v = vec![0; len];
    fill_pattern(0, &mut v);
    v
}

/// Offset of the first byte of `body` that differs from the pattern, if any.
pub fn first_pattern_mismatch(body: &[u8]) -> Option<usize> {
    body.iter()
        .enumerate()
        .find(|&(i, &b)| b != pattern(i as u64))
        .map(|(i, _)| i)
}

/// Streaming 64-bit FNV-1a checksum plus length: enough to tell two bodies apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Digest {
    /// FNV-1a over every byte seen.
    pub hash: u64,
    /// Number of bytes seen.
    pub len: u64,
}

impl Default for Digest {
    fn default() -> Self {
        Self::new()
    }
}

impl Digest {
    /// The digest of the empty body.
    pub const fn new() -> Self {
        Self {
            hash: 0xcbf2_9ce4_8422_2325,
            len: 0,
        }
    }

    /// Adds `data` to the digest.
    pub fn update(&mut self, data: &[u8]) {
        let mut h = self.hash;
        for &b in data {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.hash = h;
        self.len += data.len() as u64;
    }

    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Self {
        let mut d = Self::new();
        d.update(data);
        d
    }

    /// `hash` as 16 lower-case hex digits (the form used in `x-body-hash` headers).
    pub fn hex(&self) -> String {
        format!("{:016x}", self.hash)
    }
}

/// What a chunked body looked like on the wire.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChunkedInfo {
    /// Size of every data chunk in order (the final zero-size chunk is not included).
    pub sizes: Vec<u64>,
    /// Raw trailer section (without the final empty line); usually empty.
    pub trailers: Vec<u8>,
}

/// A buffered HTTP/1.x connection: reads frames, writes raw bytes.
#[derive(Debug)]
pub struct BufConn {
    stream: Sock,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl BufConn {
    /// Wraps `stream` (whose timeouts the caller has already set).
    pub fn new(stream: TcpStream) -> Self {
        Self::over(Sock::Plain(stream))
    }

    /// Wraps a plain or TLS client socket.
    pub fn over(stream: Sock) -> Self {
        Self {
            stream,
            buf: vec![0; BUF_SIZE].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    /// The underlying socket, e.g. to change timeouts or shut it down.
    pub fn stream(&self) -> &TcpStream {
        self.stream.tcp()
    }

    /// The client socket (plain or TLS).
    pub fn sock(&self) -> &Sock {
        &self.stream
    }

    /// Whether the connection runs TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.stream, Sock::Tls(_))
    }

    /// Reads what arrives next (through TLS when it runs) into the buffer; `Ok(0)` once
    /// the peer closed. A TLS peer that closes without `close_notify` counts as closed.
    pub fn read_more(&mut self) -> io::Result<usize> {
        match self.fill() {
            Err(e) if self.is_tls() && e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
            r => r,
        }
    }

    /// Bytes received but not consumed yet.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Drops every buffered byte.
    pub fn take_buffered(&mut self) {
        self.consume(self.end - self.start);
    }

    /// Drops `n` buffered bytes.
    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Reads more bytes from the socket into the buffer; `Ok(0)` at end of stream.
    fn fill(&mut self) -> io::Result<usize> {
        if self.end == self.buf.len() {
            if self.start == 0 {
                return Err(invalid("read buffer full"));
            }
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        loop {
            match self.stream.read(&mut self.buf[self.end..]) {
                Ok(n) => {
                    self.end += n;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes all of `data` to the socket.
    pub fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.stream.write_all(data)
    }

    /// Reads one message head, up to and including the blank line that ends it.
    ///
    /// Returns `Ok(None)` when the peer closed cleanly before sending any byte of a head
    /// (the normal end of a keep-alive connection). A close in the middle of a head is an
    /// `UnexpectedEof` error. A head longer than `max` bytes is `InvalidData`.
    pub fn read_head(&mut self, max: usize) -> io::Result<Option<Vec<u8>>> {
        let mut head: Vec<u8> = Vec::new();
        loop {
            let old_len = head.len();
            let avail_len = self.end - self.start;
            head.extend_from_slice(&self.buf[self.start..self.end]);
            if let Some(pos) = find_head_end(&head, old_len.saturating_sub(3)) {
                self.consume(pos - old_len);
                head.truncate(pos);
                return Ok(Some(head));
            }
            self.consume(avail_len);
            if head.len() > max {
                return Err(invalid(format!("head longer than {max} bytes")));
            }
            if self.fill()? == 0 {
                if head.is_empty() {
                    return Ok(None);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "peer closed in the middle of a message head: {:?}",
                        String::from_utf8_lossy(&head[..head.len().min(200)])
                    ),
                ));
            }
        }
    }

    /// Reads exactly `len` body bytes, handing them to `sink` piece by piece.
    pub fn read_exact_body(&mut self, len: u64, sink: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        let mut left = len;
        while left > 0 {
            if self.start == self.end && self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("peer closed with {left} of {len} body bytes missing"),
                ));
            }
            let avail = self.end - self.start;
            let take = usize::try_from(left).map_or(avail, |l| l.min(avail));
            sink(&self.buf[self.start..self.start + take]);
            self.consume(take);
            left -= take as u64;
        }
        Ok(())
    }

    /// Reads one CRLF-terminated line of at most `max` bytes, returning it without CRLF.
    fn read_line(&mut self, max: usize) -> io::Result<Vec<u8>> {
        loop {
            let avail = &self.buf[self.start..self.end];
            if let Some(pos) = avail.iter().position(|&b| b == b'\n') {
                if pos == 0 || avail[pos - 1] != b'\r' {
                    return Err(invalid("line not terminated by CRLF"));
                }
                let line = avail[..pos - 1].to_vec();
                self.consume(pos + 1);
                return Ok(line);
            }
            if avail.len() > max {
                return Err(invalid(format!("line longer than {max} bytes")));
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed in the middle of a chunked body",
                ));
            }
        }
    }

    /// Reads and decodes a whole chunked body (through the trailers), handing the data
    /// to `sink`. Bad framing is `InvalidData`.
    pub fn read_chunked(&mut self, sink: &mut dyn FnMut(&[u8])) -> io::Result<ChunkedInfo> {
        let mut info = ChunkedInfo::default();
        loop {
            let line = self.read_line(MAX_CHUNK_LINE)?;
            let size = parse_chunk_size(&line)?;
            if size == 0 {
                break;
            }
            self.read_exact_body(size, sink)?;
            let crlf = self.read_line(2)?;
            if !crlf.is_empty() {
                return Err(invalid("chunk data not followed by CRLF"));
            }
            info.sizes.push(size);
        }
        loop {
            let line = self.read_line(MAX_CHUNK_LINE)?;
            if line.is_empty() {
                return Ok(info);
            }
            if info.trailers.len() + line.len() > MAX_HEAD {
                return Err(invalid("trailer section too large"));
            }
            info.trailers.extend_from_slice(&line);
            info.trailers.extend_from_slice(b"\r\n");
        }
    }

    /// Reads until the peer closes, handing everything to `sink`; returns the byte count.
    pub fn read_to_close(&mut self, sink: &mut dyn FnMut(&[u8])) -> io::Result<u64> {
        let mut total = 0;
        loop {
            if self.start < self.end {
                let n = self.end - self.start;
                sink(&self.buf[self.start..self.end]);
                self.consume(n);
                total += n as u64;
            }
            if self.fill()? == 0 {
                return Ok(total);
            }
        }
    }
}

/// Index just past the first CRLFCRLF in `data` at or after `from`.
fn find_head_end(data: &[u8], from: usize) -> Option<usize> {
    data.get(from..)?
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| from + p + 4)
}

/// Parses a chunk-size line (`1a2b;ext=1`) into the size; rejects empty, non-hex and
/// overflowing sizes.
pub fn parse_chunk_size(line: &[u8]) -> io::Result<u64> {
    let digits_end = line
        .iter()
        .position(|&b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    if digits_end == 0 {
        return Err(invalid(format!(
            "bad chunk size line {:?}",
            String::from_utf8_lossy(line)
        )));
    }
    let rest = &line[digits_end..];
    let rest_ok = rest.is_empty()
        || rest[0] == b';'
        || rest.iter().all(|&b| b == b' ' || b == b'\t')
        || (rest[0] == b' ' || rest[0] == b'\t') && rest.contains(&b';');
    if !rest_ok {
        return Err(invalid(format!(
            "bad chunk size line {:?}",
            String::from_utf8_lossy(line)
        )));
    }
    let mut size: u64 = 0;
    for &b in &line[..digits_end] {
        let d = u64::from(match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => b - b'A' + 10,
        });
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(d))
            .ok_or_else(|| invalid("chunk size overflows u64"))?;
    }
    Ok(size)
}

/// Encodes `body` as a chunked body, cutting it into chunks whose sizes cycle through
/// `sizes` (each must be non-zero), ending with the last chunk and an empty trailer.
pub fn encode_chunked(body: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / 64 + 64);
    let mut pos = 0;
    let mut i = 0;
    while pos < body.len() {
        let n = sizes[i % sizes.len()].max(1).min(body.len() - pos);
        out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        out.extend_from_slice(&body[pos..pos + n]);
        out.extend_from_slice(b"\r\n");
        pos += n;
        i += 1;
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_size_lines() {
        assert_eq!(parse_chunk_size(b"1a").unwrap(), 26);
        assert_eq!(parse_chunk_size(b"0;x=y").unwrap(), 0);
        assert_eq!(parse_chunk_size(b"10 ;x").unwrap(), 16);
        assert!(parse_chunk_size(b"").is_err());
        assert!(parse_chunk_size(b"zz").is_err());
        assert!(parse_chunk_size(b"1z").is_err());
        assert!(parse_chunk_size(b"fffffffffffffffff").is_err());
    }

    #[test]
    fn pattern_is_not_periodic_in_small_powers_of_two() {
        for shift in [1_u64, 2, 4, 256, 4096, 65536] {
            let same = (0..10_000)
                .filter(|&i| pattern(i) == pattern(i + shift))
                .count();
            assert!(same < 200, "shift {shift}: {same} equal bytes");
        }
    }

    #[test]
    fn chunked_encoding_roundtrip_sizes() {
        use std::net::{TcpListener, TcpStream};
        let body = pattern_bytes(100_000);
        let enc = encode_chunked(&body, &[1, 7, 65_536]);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut tx = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (rx, _) = listener.accept().unwrap();
        let writer = std::thread::spawn(move || {
            tx.write_all(&enc).unwrap();
            tx.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        });
        let mut conn = BufConn::new(rx);
        let mut got = Vec::new();
        let info = conn
            .read_chunked(&mut |d| got.extend_from_slice(d))
            .unwrap();
        writer.join().unwrap();
        assert_eq!(Digest::of(&got), Digest::of(&body));
        assert_eq!(first_pattern_mismatch(&got), None);
        assert_eq!(&info.sizes[..4], &[1, 7, 65_536, 1]);
        let head = conn.read_head(MAX_HEAD).unwrap().unwrap();
        assert_eq!(head, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    }
}
