//! Borrowed read and write halves of one [`Split`] stream, for a phase that reads from
//! a peer while it writes to it: a request body streaming up while the response comes
//! down. monoio splits only owned streams ([`monoio::io::Splitable`]); these halves are
//! the same idea over `&mut`, so the stream stays where it lives (a [`Client`] or an
//! upstream connection) and is whole again when both halves are dropped.
//!
//! [`Client`]: crate::dataplane::session::Client

use std::marker::PhantomData;

use monoio::BufResult;
use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, Split};

/// The reading half of a borrowed stream.
pub(crate) struct ReadHalf<'a, T>(*mut T, PhantomData<&'a mut T>);

/// The writing half of a borrowed stream.
pub(crate) struct WriteHalf<'a, T>(*mut T, PhantomData<&'a mut T>);

/// Both halves of `stream`, each usable while the other is.
pub(crate) fn split<T: Split>(stream: &mut T) -> (ReadHalf<'_, T>, WriteHalf<'_, T>) {
    let p: *mut T = stream;
    (ReadHalf(p, PhantomData), WriteHalf(p, PhantomData))
}

impl<T: AsyncReadRent> AsyncReadRent for ReadHalf<'_, T> {
    async fn read<B: IoBufMut>(&mut self, buf: B) -> BufResult<usize, B> {
        // SAFETY: the pointer comes from a `&mut T` that both halves borrow for `'a`, so
        // it is valid; `T: Split` promises that its reads may run while its writes do
        // (monoio's own owned halves make the same two `&mut` from one `UnsafeCell`).
        unsafe { &mut *self.0 }.read(buf).await
    }

    async fn readv<B: IoVecBufMut>(&mut self, buf: B) -> BufResult<usize, B> {
        // SAFETY: as in `read`.
        unsafe { &mut *self.0 }.readv(buf).await
    }
}

impl<T: AsyncWriteRent> AsyncWriteRent for WriteHalf<'_, T> {
    async fn write<B: IoBuf>(&mut self, buf: B) -> BufResult<usize, B> {
        // SAFETY: as in `ReadHalf::read`, for the writing side.
        unsafe { &mut *self.0 }.write(buf).await
    }

    async fn writev<B: IoVecBuf>(&mut self, buf: B) -> BufResult<usize, B> {
        // SAFETY: as in `ReadHalf::read`.
        unsafe { &mut *self.0 }.writev(buf).await
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        // SAFETY: as in `ReadHalf::read`.
        unsafe { &mut *self.0 }.flush().await
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        // SAFETY: as in `ReadHalf::read`.
        unsafe { &mut *self.0 }.shutdown().await
    }
}
