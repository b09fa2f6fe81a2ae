//! The read buffer each connection owns for its whole life.
//!
//! monoio takes ownership of buffers for the duration of an I/O; [`InBuf`] hands its
//! `Vec` to the kernel and takes it back, reading after the bytes not yet consumed and
//! compacting only when the end is reached, so steady-state reads allocate nothing.

use std::cell::RefCell;
use std::io;

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{
    AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, CancelHandle, CancelableAsyncReadRent,
};

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

    /// The most bytes it holds.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// True when the buffer is full of unconsumed bytes (nothing more can be read).
    pub(crate) fn is_full(&self) -> bool {
        self.start == 0 && self.buf.len() >= self.capacity
    }

    /// Reads more bytes from `stream` after the buffered ones; `Ok(0)` means end of
    /// stream. Must not be called when [`InBuf::is_full`].
    pub(crate) async fn fill(&mut self, stream: &mut impl AsyncReadRent) -> io::Result<usize> {
        let len = self.ready_to_read()?;
        let buf = std::mem::take(&mut self.buf);
        let (res, slice) = stream.read(buf.slice_mut(len..)).await;
        self.buf = slice.into_inner();
        res
    }

    /// [`InBuf::fill`] as a read that `cancel` can end: it then fails with `ECANCELED`,
    /// or returns the bytes it had received, and the buffer is back either way.
    pub(crate) async fn fill_cancelable(
        &mut self,
        stream: &mut impl CancelableAsyncReadRent,
        cancel: CancelHandle,
    ) -> io::Result<usize> {
        let len = self.ready_to_read()?;
        let buf = std::mem::take(&mut self.buf);
        let (res, slice) = stream.cancelable_read(buf.slice_mut(len..), cancel).await;
        self.buf = slice.into_inner();
        res
    }

    /// Frees the memory of an empty buffer; the next read allocates it again.
    pub(crate) fn release(&mut self) {
        if self.is_empty() {
            self.buf = Vec::new();
            self.start = 0;
        }
    }

    /// Makes room for a read after the buffered bytes; returns where it goes.
    fn ready_to_read(&mut self) -> io::Result<usize> {
        if self.buf.capacity() == 0 {
            // No buffer: released while parked, or kept by a read a timeout dropped.
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
        Ok(self.buf.len())
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

/// Size of a [`BulkBufs`] buffer: one read moves up to this much of a long body.
pub(crate) const BULK: usize = 256 * 1024;
/// Buffers a worker keeps for the next long bodies; more are freed when returned.
const BULK_KEEP: usize = 4;

/// Large buffers a worker lends to a connection for the middle of a long body, so that
/// a body of megabytes moves in reads and writes of [`BULK`] bytes instead of the
/// connection's own 16 KiB: a sixteenth of the kernel crossings and wake-ups, while an
/// idle connection keeps only its small buffer. One per worker thread, never shared.
#[derive(Debug, Default)]
pub(crate) struct BulkBufs {
    free: RefCell<Vec<Vec<u8>>>,
}

impl BulkBufs {
    /// A buffer of [`BULK`] bytes' capacity: a kept one, else a new one.
    pub(crate) fn take(&self) -> Vec<u8> {
        self.free
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(BULK))
    }

    /// Returns a buffer from [`BulkBufs::take`]; kept for the next body unless enough are.
    pub(crate) fn give(&self, mut buf: Vec<u8>) {
        let mut free = self.free.borrow_mut();
        if buf.capacity() >= BULK && free.len() < BULK_KEEP {
            buf.clear();
            free.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_buffers_are_kept_up_to_a_few() {
        let bulk = BulkBufs::default();
        let taken: Vec<Vec<u8>> = (0..BULK_KEEP + 2).map(|_| bulk.take()).collect();
        assert!(taken.iter().all(|b| b.capacity() >= BULK && b.is_empty()));
        for mut b in taken {
            b.extend_from_slice(b"left over");
            bulk.give(b);
        }
        assert_eq!(bulk.free.borrow().len(), BULK_KEEP);
        // A kept buffer comes back empty, without a new allocation.
        let again = bulk.take();
        assert!(again.is_empty() && again.capacity() >= BULK);
        assert_eq!(bulk.free.borrow().len(), BULK_KEEP - 1);
        // A buffer that shrank (or is not one of ours) is not kept.
        bulk.give(Vec::with_capacity(16));
        assert_eq!(bulk.free.borrow().len(), BULK_KEEP - 1);
    }
}
