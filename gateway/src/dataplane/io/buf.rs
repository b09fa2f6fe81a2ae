//! The read buffer each connection owns for its whole life.
//!
//! monoio takes ownership of buffers for the duration of an I/O; [`InBuf`] hands its
//! `Vec` to the kernel and takes it back, reading after the bytes not yet consumed and
//! compacting only when the end is reached, so steady-state reads allocate nothing.

use std::io;

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};

/// A fixed-capacity receive buffer: unconsumed bytes live in `buf[start..]`.
#[derive(Debug)]
pub(crate) struct InBuf {
    buf: Vec<u8>,
    start: usize,
    capacity: usize,
}

impl InBuf {
    /// A buffer holding up to `capacity` bytes.
    pub(crate) fn new(capacity: usize) -> Self {
        InBuf {
            buf: Vec::with_capacity(capacity),
            start: 0,
            capacity,
        }
    }

    /// Bytes received but not consumed yet.
    #[inline]
    pub(crate) fn data(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// True when nothing is buffered.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.start == self.buf.len()
    }

    /// Marks `n` bytes as consumed.
    #[inline]
    pub(crate) fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.buf.len());
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }

    /// True when the buffer is full of unconsumed bytes (nothing more can be read).
    pub(crate) fn is_full(&self) -> bool {
        self.start == 0 && self.buf.len() >= self.capacity
    }

    /// Reads more bytes from `stream` after the buffered ones; `Ok(0)` means end of
    /// stream. Must not be called when [`InBuf::is_full`].
    pub(crate) async fn fill(&mut self, stream: &mut impl AsyncReadRent) -> io::Result<usize> {
        if self.buf.capacity() == 0 {
            // A read cancelled by a timeout kept the old buffer; start afresh.
            self.buf = Vec::with_capacity(self.capacity);
            self.start = 0;
        }
        if self.buf.len() == self.buf.capacity() {
            if self.start == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::OutOfMemory,
                    "read buffer full",
                ));
            }
            self.buf.copy_within(self.start.., 0);
            self.buf.truncate(self.buf.len() - self.start);
            self.start = 0;
        }
        let len = self.buf.len();
        let buf = std::mem::take(&mut self.buf);
        let (res, slice) = stream.read(buf.slice_mut(len..)).await;
        self.buf = slice.into_inner();
        res
    }

    /// Writes `buf[start..start + n]` (buffered bytes) to `dst` without copying them,
    /// then consumes them.
    pub(crate) async fn write_to(
        &mut self,
        dst: &mut impl AsyncWriteRent,
        n: usize,
    ) -> io::Result<()> {
        let (begin, end) = (self.start, self.start + n);
        let buf = std::mem::take(&mut self.buf);
        let (res, slice) = dst.write_all(buf.slice(begin..end)).await;
        self.buf = slice.into_inner();
        res?;
        self.consume(n);
        Ok(())
    }
}

/// Writes all of `out` to `dst` and clears it, keeping its allocation.
pub(crate) async fn flush(out: &mut Vec<u8>, dst: &mut impl AsyncWriteRent) -> io::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    let buf = std::mem::take(out);
    let (res, mut buf) = dst.write_all(buf).await;
    buf.clear();
    *out = buf;
    res.map(|_| ())
}
