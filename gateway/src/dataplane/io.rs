//! I/O helpers over monoio streams, above the codecs and below everything that talks to a
//! peer: the read buffer each connection owns ([`buf`]), socket options and liveness
//! probes ([`socket`]), waiting between requests without buffers ([`park`]), the poll-based view of a
//! stream the `h2` crate drives ([`poll`]), streaming a body or an upgraded connection from one peer to the
//! other ([`relay`]), and the wall clock ([`clock`]).
//!
//! Every function here is generic over the stream it reads or writes, so the same code
//! serves plain TCP today and a TLS stream or an HTTP/2 stream once those layers exist.

pub(crate) mod buf;
pub(crate) mod clock;
pub(crate) mod halves;
pub(crate) mod park;
pub(crate) mod poll;
pub(crate) mod relay;
pub(crate) mod socket;

use monoio::io::{AsyncReadRent, AsyncWriteRent, Split};

/// What the session reads requests from and writes responses to: a byte stream that can
/// be split in two for a tunnel. Plain TCP today; a TLS stream is one too.
pub(crate) trait Stream: AsyncReadRent + AsyncWriteRent + Split + 'static {}

impl<T: AsyncReadRent + AsyncWriteRent + Split + 'static> Stream for T {}
