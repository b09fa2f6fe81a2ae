//! Waiting between requests without holding buffers.
//!
//! On io_uring a read in flight owns its buffer, so a keep-alive connection that waits
//! for its next request in a read keeps its receive buffer (and, in the session's task,
//! the whole request state) for as long as the client stays quiet. A connection that
//! has been quiet for [`PARK_AFTER`] is parked instead: the read is cancelled (safely:
//! a read that completed meanwhile still hands over its bytes), the buffers are freed,
//! and a small task waits for readiness (`POLL_ADD`), which holds no memory of ours.
//! Busy connections keep their read in flight and pay nothing for it.
//!
//! Parking and waking cost a wake-up of the worker and two task starts (~20 µs), so a
//! connection whose requests come at a steady pace a little slower than the delay would
//! pay that on every request: [`next_delay`] doubles its delay each time it was woken
//! soon after parking (up to [`PARK_AFTER_MAX`]), and a long quiet spell sets it back.

use std::io;
use std::time::Duration;

use monoio::io::Canceller;
use monoio::net::TcpStream;

use super::Stream;
use super::buf::InBuf;

/// How long a keep-alive connection may be quiet before it is parked, at first.
pub(crate) const PARK_AFTER: Duration = Duration::from_millis(10);
/// The longest delay [`next_delay`] grows it to.
pub(crate) const PARK_AFTER_MAX: Duration = Duration::from_secs(1);

/// The park delay after a connection parked with `delay` was woken `parked_for` later:
/// doubled when a wait a few times longer would have spared the park (the client's pace
/// is just slower than the delay), else back to [`PARK_AFTER`].
pub(crate) fn next_delay(delay: Duration, parked_for: Duration) -> Duration {
    if parked_for < delay * 3 {
        (delay * 2).min(PARK_AFTER_MAX)
    } else {
        PARK_AFTER
    }
}

/// What [`Park::next_bytes`] saw.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Woke {
    /// The client is sending: its bytes are in the buffer, or readable now.
    Data,
    /// Quiet for the whole wait, and no byte was taken: park it.
    Quiet,
    /// The client closed, or the connection failed.
    Closed,
}

/// A client connection that can wait for its next request with no buffer lent to the
/// kernel. Implemented by plain TCP and by TLS over TCP.
pub(crate) trait Park: Stream + Sized {
    /// Waits up to `wait` for the client's next bytes (`buf` is empty). Reads them into
    /// `buf` when that can be undone without losing a byte if the wait ends first;
    /// `cancel` is the connection's canceller, kept across calls so that a wait does not
    /// allocate one.
    async fn next_bytes(&mut self, buf: &mut InBuf, wait: Duration, cancel: &mut Canceller)
    -> Woke;

    /// Frees the buffers it can rebuild (nothing is buffered).
    fn shed(&mut self);

    /// Waits until the socket is readable (or closed), holding no buffer.
    async fn readable(&self) -> io::Result<()>;

    /// Ends the connection the way its protocol wants (TLS: `close_notify`).
    async fn close(self);
}

impl Park for TcpStream {
    async fn next_bytes(
        &mut self,
        buf: &mut InBuf,
        wait: Duration,
        cancel: &mut Canceller,
    ) -> Woke {
        let read = buf.fill_cancelable(self, cancel.handle());
        let mut read = std::pin::pin!(read);
        monoio::select! {
            r = &mut read => return woke(r),
            () = monoio::time::sleep(wait) => {}
        }
        // Cancelled, the read ends with ECANCELED, or with the bytes it had already
        // received: either way it ends, and the buffer comes back.
        *cancel = std::mem::take(cancel).cancel();
        woke(read.await)
    }

    fn shed(&mut self) {}

    async fn readable(&self) -> io::Result<()> {
        TcpStream::readable(self, false).await
    }

    async fn close(self) {}
}

/// A cancelable read's result as a [`Woke`].
fn woke(r: io::Result<usize>) -> Woke {
    match r {
        Ok(0) => Woke::Closed,
        Ok(_) => Woke::Data,
        Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => Woke::Quiet,
        Err(_) => Woke::Closed,
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn pair() -> (TcpStream, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let client = std::net::TcpStream::connect(addr).unwrap();
        let (s, _) = l.accept().unwrap();
        s.set_nonblocking(true).unwrap();
        (TcpStream::from_std(s).unwrap(), client)
    }

    #[test]
    fn the_delay_grows_for_steady_clients_and_resets_after_long_quiet() {
        let ms = Duration::from_millis;
        // A client every 16 ms: parked after 10, woken 6 later; then 20 covers it.
        assert_eq!(next_delay(PARK_AFTER, ms(6)), ms(20));
        assert_eq!(next_delay(ms(640), ms(100)), PARK_AFTER_MAX);
        assert_eq!(next_delay(PARK_AFTER_MAX, ms(5)), PARK_AFTER_MAX);
        // Quiet for long after parking: back to the start.
        assert_eq!(next_delay(ms(40), ms(120)), PARK_AFTER);
        assert_eq!(next_delay(PARK_AFTER, Duration::from_secs(30)), PARK_AFTER);
    }

    #[test]
    fn a_quiet_wait_parks_and_loses_nothing_on_io_uring_and_epoll() {
        if let Ok(mut rt) = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .enable_timer()
            .build()
        {
            rt.block_on(quiet_then_busy());
        }
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
            .block_on(quiet_then_busy());
    }

    async fn quiet_then_busy() {
        {
            let (mut s, mut client) = pair();
            let mut buf = InBuf::new(1024);
            let mut cancel = Canceller::new();
            let w = s
                .next_bytes(&mut buf, Duration::from_millis(20), &mut cancel)
                .await;
            assert_eq!(w, Woke::Quiet);
            assert!(buf.is_empty());
            // The canceller is ready for the next wait; bytes sent now are read.
            client.write_all(b"GET / HTTP/1.1\r\n").unwrap();
            Park::readable(&s).await.unwrap();
            let w = s
                .next_bytes(&mut buf, Duration::from_secs(5), &mut cancel)
                .await;
            assert_eq!(w, Woke::Data);
            assert_eq!(buf.data(), b"GET / HTTP/1.1\r\n");
            // Bytes already there when the wait starts are read at once.
            buf.consume(buf.data().len());
            client.write_all(b"x").unwrap();
            std::thread::sleep(Duration::from_millis(10));
            let w = s
                .next_bytes(&mut buf, Duration::from_millis(1), &mut cancel)
                .await;
            assert_eq!((w, buf.data()), (Woke::Data, &b"x"[..]));
            buf.consume(1);
            drop(client);
            let w = s
                .next_bytes(&mut buf, Duration::from_secs(5), &mut cancel)
                .await;
            assert_eq!(w, Woke::Closed);
        }
    }
}
