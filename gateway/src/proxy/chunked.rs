//! A streaming, strict decoder for the chunked transfer coding (RFC 9112 §7.1).
//!
//! It is fed whatever bytes have arrived and says how many it consumed and where the
//! chunk data lies, so the relay can forward the framing verbatim (pass-through) or only
//! the data (de-chunking for HTTP/1.0 clients). Anything ambiguous is an error: bare LF or
//! CR, a size without digits or over 2^60, control bytes in extensions or trailers —
//! the request-smuggling defences of RFC 9112 §11.2.

use std::ops::Range;

/// Longest chunk-size line (size plus extensions) or trailer line accepted.
const MAX_LINE: usize = 4096;

/// Why a chunked body was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// The chunk size is missing, not hexadecimal or too large.
    #[error("invalid chunk size")]
    Size,
    /// A line is not terminated by CRLF, or contains a forbidden byte.
    #[error("invalid chunk framing")]
    Framing,
    /// A chunk-size or trailer line is longer than 4 KiB.
    #[error("chunk line too long")]
    LineTooLong,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading hex digits of the size; `digits` seen so far.
    Size { digits: u8 },
    /// After the size: optional whitespace, then `;` or CR.
    ExtStart,
    /// Inside `;ext` up to CR.
    Ext,
    /// Expecting the LF of the size line.
    SizeLf,
    /// Inside chunk data.
    Data,
    /// Expecting the CR after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// At the start of a trailer line, or the final CRLF.
    TrailerStart,
    /// Inside a trailer field line.
    Trailer,
    /// Expecting the LF that ends a trailer line.
    TrailerLf,
    /// Expecting the LF of the final empty line.
    EndLf,
    /// The body is complete.
    Done,
}

/// Incremental decoder state for one chunked body.
#[derive(Clone, Debug)]
pub struct ChunkedDecoder {
    state: State,
    /// Size of the chunk being read, then bytes of it still to come.
    remaining: u64,
    /// Bytes in the current size or trailer line.
    line: usize,
    /// Data bytes seen so far (for body limits).
    data_total: u64,
}

/// What one call to [`ChunkedDecoder::decode`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of the input that were consumed (framing and data).
    pub consumed: usize,
    /// Chunk data inside the consumed bytes, if the call stopped on data.
    pub data: Option<Range<usize>>,
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
            state: State::Size { digits: 0 },
            remaining: 0,
            line: 0,
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

    /// Consumes framing from `input` until it reaches chunk data (returned as a range of
    /// `input`), the end of the body, or the end of `input`. Call again with the rest.
    pub fn decode(&mut self, input: &[u8]) -> Result<Progress, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Size { digits } => match hex(b) {
                    Some(d) => {
                        if digits >= 15 {
                            return Err(ChunkError::Size);
                        }
                        self.remaining = (self.remaining << 4) | u64::from(d);
                        self.state = State::Size { digits: digits + 1 };
                        self.bump_line()?;
                    }
                    None if digits == 0 => return Err(ChunkError::Size),
                    None => {
                        self.state = State::ExtStart;
                        continue;
                    }
                },
                State::ExtStart => {
                    match b {
                        b' ' | b'\t' => {}
                        b';' => self.state = State::Ext,
                        b'\r' => self.state = State::SizeLf,
                        _ => return Err(ChunkError::Size),
                    }
                    self.bump_line()?;
                }
                State::Ext => {
                    match b {
                        b'\r' => self.state = State::SizeLf,
                        b'\t' | b' '..=b'~' | 0x80..=0xff => {}
                        _ => return Err(ChunkError::Framing),
                    }
                    self.bump_line()?;
                }
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkError::Framing);
                    }
                    self.line = 0;
                    self.state = if self.remaining == 0 {
                        State::TrailerStart
                    } else {
                        State::Data
                    };
                }
                State::Data => {
                    let avail = (input.len() - i) as u64;
                    let take = avail.min(self.remaining) as usize;
                    self.remaining -= take as u64;
                    self.data_total += take as u64;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                    return Ok(Progress {
                        consumed: i + take,
                        data: Some(i..i + take),
                    });
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err(ChunkError::Framing);
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkError::Framing);
                    }
                    self.state = State::Size { digits: 0 };
                }
                State::TrailerStart => {
                    if b == b'\r' {
                        self.state = State::EndLf;
                    } else {
                        self.state = State::Trailer;
                        continue;
                    }
                }
                State::Trailer => {
                    match b {
                        b'\r' => self.state = State::TrailerLf,
                        b'\t' | b' '..=b'~' | 0x80..=0xff => {}
                        _ => return Err(ChunkError::Framing),
                    }
                    self.bump_line()?;
                }
                State::TrailerLf => {
                    if b != b'\n' {
                        return Err(ChunkError::Framing);
                    }
                    self.line = 0;
                    self.state = State::TrailerStart;
                }
                State::EndLf => {
                    if b != b'\n' {
                        return Err(ChunkError::Framing);
                    }
                    self.state = State::Done;
                    return Ok(Progress {
                        consumed: i + 1,
                        data: None,
                    });
                }
                State::Done => break,
            }
            i += 1;
        }
        Ok(Progress {
            consumed: i,
            data: None,
        })
    }

    fn bump_line(&mut self) -> Result<(), ChunkError> {
        self.line += 1;
        if self.line > MAX_LINE {
            Err(ChunkError::LineTooLong)
        } else {
            Ok(())
        }
    }
}

#[inline]
fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `step` bytes; returns the data and bytes consumed.
    fn run(input: &[u8], step: usize) -> Result<(Vec<u8>, usize, bool), ChunkError> {
        let mut d = ChunkedDecoder::new();
        let mut data = Vec::new();
        let mut pos = 0;
        while pos < input.len() && !d.is_done() {
            let end = (pos + step).min(input.len());
            let mut piece = &input[pos..end];
            while !piece.is_empty() && !d.is_done() {
                let p = d.decode(piece)?;
                if let Some(r) = p.data {
                    data.extend_from_slice(&piece[r]);
                }
                pos += p.consumed;
                piece = &piece[p.consumed..];
                if p.consumed == 0 {
                    break;
                }
            }
        }
        Ok((data, pos, d.is_done()))
    }

    #[test]
    fn decodes_in_any_split() {
        let body = b"5\r\nhello\r\n1;ext=1\r\n \r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for step in 1..body.len() {
            let (data, consumed, done) = run(body, step).unwrap();
            assert_eq!(data, b"hello ");
            assert!(done);
            assert_eq!(consumed, body.len() - 4, "step {step}");
        }
    }

    #[test]
    fn rejects_smuggling_shapes() {
        for bad in [
            &b"\r\n"[..],
            b"g\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"5\r\nhelloX\r\n",
            b"-5\r\n",
            b"0x5\r\nhello\r\n",
            b"1000000000000000\r\n",
            b"5\r\x00\nhello",
            b"0\r\nX: a\rb\r\n\r\n",
            b"0\r\n\r\r",
        ] {
            assert!(run(bad, 64).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn counts_data_and_limits_lines() {
        let mut d = ChunkedDecoder::new();
        let p = d.decode(b"a\r\n0123456789\r\n0\r\n\r\n").unwrap();
        assert_eq!(p.data, Some(3..13));
        assert_eq!(d.data_total(), 10);
        let mut d = ChunkedDecoder::new();
        let long = [b"1;".as_slice(), &[b'x'; 5000]].concat();
        assert_eq!(d.decode(&long), Err(ChunkError::LineTooLong));
    }
}
