//! The chunked transfer coding (RFC 9112 §7.1): a streaming, strict decoder and the
//! normalised re-framing the gateway sends on instead of the sender's bytes.
//!
//! The decoder is fed whatever bytes have arrived and reports one [`Piece`] at a time: a
//! chunk's size, chunk data (a range of the input, so data is never copied here), a
//! trailer field, or the end of the body. A size or trailer line is consumed only once it
//! is complete, so the caller keeps partial lines in its read buffer. Anything ambiguous
//! is an error: bare LF or CR, whitespace after a size without an extension, a size
//! without digits or over 2^60, control bytes in extensions, a trailer line that is not
//! `name: value` (such as the next request's head after a last chunk that lacks its final
//! CRLF), obs-fold — the request-smuggling defences of RFC 9112 §11.2.
//!
//! [`Reframer`] writes what the decoder reported in the one form the gateway sends: the
//! size in lower-case hex without leading zeros, no extensions, the data, CRLF; then
//! `0`, the trailer fields that may travel in a trailer section (see
//! [`trailer_allowed`]), and the final CRLF.

use std::ops::Range;

/// Longest chunk-size line (size plus extensions) or trailer line accepted, CRLF excluded.
const MAX_LINE: usize = 4096;
/// Most trailer field lines accepted after the last chunk.
const MAX_TRAILERS: usize = 64;
/// Most hex digits in a chunk size (2^60 - 1 at most).
const MAX_SIZE_DIGITS: usize = 15;

/// Why a chunked body was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// The chunk size is missing, not hexadecimal, too large, or followed by something
    /// other than an extension.
    #[error("invalid chunk size")]
    Size,
    /// A line is not terminated by CRLF, or contains a forbidden byte.
    #[error("invalid chunk framing")]
    Framing,
    /// A trailer line is not a valid field line.
    #[error("invalid trailer field")]
    Trailer,
    /// A chunk-size or trailer line is longer than 4 KiB, or there are too many trailers.
    #[error("chunk line too long")]
    LineTooLong,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// At the start of a chunk-size line.
    Size,
    /// Inside chunk data; `remaining` bytes to come.
    Data,
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// At the start of a trailer line or the final empty line.
    Trailers,
    /// The body is complete.
    Done,
}

/// One thing found in a chunked body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    /// A chunk-size line: the chunk's size (0: the last chunk, trailers follow).
    Size(u64),
    /// Chunk data, as a range of the input; `ends_chunk` when it completes its chunk.
    Data {
        /// Where the data lies in the input.
        range: Range<usize>,
        /// The chunk's data is complete with this piece.
        ends_chunk: bool,
    },
    /// A valid trailer field line: the name and the value (trimmed) as input ranges.
    Trailer {
        /// The field name.
        name: Range<usize>,
        /// The field value without surrounding whitespace.
        value: Range<usize>,
    },
    /// The final empty line: the body is complete.
    End,
}

impl Piece {
    /// The same piece with its ranges moved `by` bytes later in the input.
    fn shifted(self, by: usize) -> Piece {
        let shift = |r: Range<usize>| r.start + by..r.end + by;
        match self {
            Piece::Data { range, ends_chunk } => Piece::Data {
                range: shift(range),
                ends_chunk,
            },
            Piece::Trailer { name, value } => Piece::Trailer {
                name: shift(name),
                value: shift(value),
            },
            other => other,
        }
    }
}

/// Incremental decoder state for one chunked body.
#[derive(Clone, Debug)]
pub struct ChunkedDecoder {
    state: State,
    /// Bytes of the current chunk's data still to come.
    remaining: u64,
    /// Trailer lines seen.
    trailers: usize,
    /// Data bytes seen so far (for body limits).
    data_total: u64,
}

/// What one call to [`ChunkedDecoder::decode`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of the input that were consumed (framing and data).
    pub consumed: usize,
    /// What the consumed bytes held; `None` when more input is needed.
    pub piece: Option<Piece>,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    /// A decoder at the start of a chunked body.
    pub fn new() -> Self {
        ChunkedDecoder {
            state: State::Size,
            remaining: 0,
            trailers: 0,
            data_total: 0,
        }
    }

    /// True once the last chunk, the trailers and the final CRLF have been consumed.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Chunk data bytes seen so far.
    pub fn data_total(&self) -> u64 {
        self.data_total
    }

    /// Consumes the next piece from the start of `input`. `piece: None` means `input`
    /// ends inside a line: drop the `consumed` bytes (framing) and call again once more
    /// bytes are there.
    pub fn decode(&mut self, input: &[u8]) -> Result<Progress, ChunkError> {
        const NEED_MORE: Progress = Progress {
            consumed: 0,
            piece: None,
        };
        match self.state {
            State::Done => Ok(NEED_MORE),
            State::Size => {
                let Some(line) = line(input)? else {
                    return Ok(NEED_MORE);
                };
                let size = parse_size(&input[..line])?;
                self.remaining = size;
                self.state = if size == 0 {
                    State::Trailers
                } else {
                    State::Data
                };
                Ok(Progress {
                    consumed: line + 2,
                    piece: Some(Piece::Size(size)),
                })
            }
            State::Data => {
                if input.is_empty() {
                    return Ok(NEED_MORE);
                }
                let take = (input.len() as u64).min(self.remaining) as usize;
                self.remaining -= take as u64;
                self.data_total += take as u64;
                let ends_chunk = self.remaining == 0;
                if ends_chunk {
                    self.state = State::DataEnd;
                }
                Ok(Progress {
                    consumed: take,
                    piece: Some(Piece::Data {
                        range: 0..take,
                        ends_chunk,
                    }),
                })
            }
            State::DataEnd => match input {
                [] | [b'\r'] => Ok(NEED_MORE),
                [b'\r', b'\n', ..] => {
                    self.state = State::Size;
                    // Report the next piece at once when it is there already.
                    let next = self.decode(&input[2..])?;
                    Ok(Progress {
                        consumed: next.consumed + 2,
                        piece: next.piece.map(|p| p.shifted(2)),
                    })
                }
                _ => Err(ChunkError::Framing),
            },
            State::Trailers => {
                let Some(line) = line(input)? else {
                    return Ok(NEED_MORE);
                };
                if line == 0 {
                    self.state = State::Done;
                    return Ok(Progress {
                        consumed: 2,
                        piece: Some(Piece::End),
                    });
                }
                self.trailers += 1;
                if self.trailers > MAX_TRAILERS {
                    return Err(ChunkError::LineTooLong);
                }
                let (name, value) = parse_field(&input[..line])?;
                Ok(Progress {
                    consumed: line + 2,
                    piece: Some(Piece::Trailer { name, value }),
                })
            }
        }
    }
}

/// The length of the line at the start of `input` (CRLF excluded) once the whole line is
/// there; `None` while it is incomplete. A bare LF, or a CR not followed by LF, is an
/// error.
fn line(input: &[u8]) -> Result<Option<usize>, ChunkError> {
    let window = &input[..input.len().min(MAX_LINE + 2)];
    match window.iter().position(|&b| b == b'\r' || b == b'\n') {
        Some(i) if window[i] == b'\n' => Err(ChunkError::Framing),
        Some(i) => match window.get(i + 1) {
            Some(b'\n') => Ok(Some(i)),
            Some(_) => Err(ChunkError::Framing),
            None => Ok(None),
        },
        None if window.len() > MAX_LINE => Err(ChunkError::LineTooLong),
        None => Ok(None),
    }
}

/// `1*HEXDIG [ *( BWS ";" ext ) ]`: the size, extensions checked for forbidden bytes
/// and dropped.
fn parse_size(line: &[u8]) -> Result<u64, ChunkError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > MAX_SIZE_DIGITS {
        return Err(ChunkError::Size);
    }
    let size = line[..digits]
        .iter()
        .fold(0u64, |acc, &b| (acc << 4) | u64::from(hex(b)));
    let rest = &line[digits..];
    let ext = rest.trim_ascii_start();
    if rest.is_empty() {
        return Ok(size);
    }
    // Whitespace is allowed only before an extension (BWS ";").
    if !ext.starts_with(b";") {
        return Err(ChunkError::Size);
    }
    if ext
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80)
    {
        Ok(size)
    } else {
        Err(ChunkError::Framing)
    }
}

/// `field-name ":" OWS field-value OWS` (RFC 9110 §5): a token, a colon with no
/// whitespace before it, a value of visible bytes, spaces and tabs. A line starting with
/// whitespace (obs-fold) is refused.
fn parse_field(line: &[u8]) -> Result<(Range<usize>, Range<usize>), ChunkError> {
    let name_len = line.iter().take_while(|&&b| is_tchar(b)).count();
    if name_len == 0 || line.get(name_len) != Some(&b':') {
        return Err(ChunkError::Trailer);
    }
    let raw = &line[name_len + 1..];
    if !raw
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80)
    {
        return Err(ChunkError::Trailer);
    }
    let lead = raw.len() - raw.trim_ascii_start().len();
    let value = raw.trim_ascii();
    let start = name_len + 1 + lead;
    Ok((0..name_len, start..start + value.len()))
}

/// `tchar` of RFC 9110 §5.6.2.
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whether a trailer field named `name` is forwarded. Fields that frame the message,
/// route it, authenticate, or change how the content is processed must not come from a
/// trailer section (RFC 9110 §6.5.1); they are dropped, as are hop-by-hop fields.
pub fn trailer_allowed(name: &[u8]) -> bool {
    const DENIED: [&[u8]; 28] = [
        b"content-length",
        b"transfer-encoding",
        b"content-encoding",
        b"content-type",
        b"content-range",
        b"trailer",
        b"te",
        b"host",
        b"connection",
        b"keep-alive",
        b"upgrade",
        b"proxy-connection",
        b"authorization",
        b"proxy-authorization",
        b"www-authenticate",
        b"proxy-authenticate",
        b"cookie",
        b"set-cookie",
        b"expect",
        b"max-forwards",
        b"range",
        b"if-match",
        b"if-none-match",
        b"if-modified-since",
        b"if-unmodified-since",
        b"cache-control",
        b"location",
        b"forwarded",
    ];
    !(DENIED.iter().any(|d| name.eq_ignore_ascii_case(d))
        || name.len() > 6 && name[..6].eq_ignore_ascii_case(b"proxy-")
        || name.len() > 12 && name[..12].eq_ignore_ascii_case(b"x-forwarded-"))
}

/// Writes the normalised chunked framing for the pieces a [`ChunkedDecoder`] reports.
#[derive(Clone, Copy, Debug, Default)]
pub struct Reframer;

impl Reframer {
    /// Appends the framing (and, for trailers, the field) of `piece` to `out`. Chunk
    /// data is the caller's to append, right after `Piece::Size` and before the CRLF that
    /// [`Reframer::end_data`] writes. `input` is the slice `piece`'s ranges refer to.
    pub fn frame(out: &mut Vec<u8>, piece: &Piece, input: &[u8]) {
        match piece {
            Piece::Size(n) => {
                write_hex(out, *n);
                out.extend_from_slice(b"\r\n");
            }
            Piece::Data { .. } => {}
            Piece::Trailer { name, value } => {
                let name = &input[name.clone()];
                if trailer_allowed(name) {
                    out.extend_from_slice(name);
                    out.extend_from_slice(b": ");
                    out.extend_from_slice(&input[value.clone()]);
                    out.extend_from_slice(b"\r\n");
                }
            }
            Piece::End => out.extend_from_slice(b"\r\n"),
        }
    }

    /// Appends the CRLF that ends a chunk's data.
    pub fn end_data(out: &mut Vec<u8>) {
        out.extend_from_slice(b"\r\n");
    }
}

/// `n` in lower-case hex without leading zeros.
fn write_hex(out: &mut Vec<u8>, n: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 16];
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = DIGITS[(n & 0xf) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

#[inline]
fn hex(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

/// A whole chunked body, decoded and re-framed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reframed {
    /// The normalised chunked bytes the gateway would send.
    pub framed: Vec<u8>,
    /// The chunk data.
    pub data: Vec<u8>,
    /// Bytes of the input the body took.
    pub used: usize,
}

impl Reframed {
    /// Adds what `piece` (found at the start of `at`) contributes: framing, and data.
    fn push(&mut self, piece: &Piece, at: &[u8]) {
        if let Piece::Data { range, ends_chunk } = piece {
            self.framed.extend_from_slice(&at[range.clone()]);
            self.data.extend_from_slice(&at[range.clone()]);
            if *ends_chunk {
                Reframer::end_data(&mut self.framed);
            }
        } else {
            Reframer::frame(&mut self.framed, piece, at);
        }
    }
}

/// Decodes a whole chunked body held in `input` and re-frames it, as the relay does.
/// `None` while `input` ends before the body does.
pub fn reframe(input: &[u8]) -> Result<Option<Reframed>, ChunkError> {
    let mut d = ChunkedDecoder::new();
    let mut out = Reframed::default();
    while !d.is_done() {
        let at = &input[out.used..];
        let p = d.decode(at)?;
        out.used += p.consumed;
        let Some(piece) = p.piece else {
            return Ok(None);
        };
        out.push(&piece, at);
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests;
