//! TLS on the workers, just above [`super::io`]: a client connection's handshake
//! (bounded in time, its failure classified for the metrics) and an upstream
//! connection's, both with rustls driven by monoio-rustls on the worker's io_uring.
//!
//! rustls' own state machine is fed from the worker's owned buffers ([`stream`]), so the
//! handshake and the records run on the worker's ring with no second runtime and no
//! copy into a blocking adapter; the stream implements monoio's `Split`, which the
//! tunnel of an upgraded connection (WebSocket over `wss://`) needs, and survives reads
//! dropped by a timeout.
//!
//! What comes out is an [`io::Stream`](super::io::Stream) like a plain socket, so every
//! layer above runs unchanged over TLS. The socket underneath is tagged for kernel
//! accounting before the handshake, so the kernel counts TLS records (handshake and
//! framing overhead included), not the plaintext the session sees.

use std::io;
use std::sync::Arc;
use std::time::Duration;

pub(crate) mod stream;

use monoio::net::TcpStream;
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, Error as RustlsError, PeerIncompatible, ServerConnection};
use stream::TlsStream;

use crate::metrics::TlsFailure;

/// A client connection after its handshake.
pub(crate) type ServerStream = TlsStream<ServerConnection>;
/// An upstream connection after its handshake.
pub(crate) type ClientStream = TlsStream<ClientConnection>;

/// Runs the server side of a handshake on `tcp` with `config`, for at most `timeout`.
pub(crate) async fn accept(
    config: Arc<rustls::ServerConfig>,
    tcp: TcpStream,
    timeout: Duration,
) -> Result<ServerStream, TlsFailure> {
    let conn = ServerConnection::new(config).map_err(|_| TlsFailure::Other)?;
    let mut stream = TlsStream::new(tcp, conn);
    match monoio::time::timeout(timeout, stream.handshake()).await {
        Err(_) => Err(TlsFailure::Timeout),
        Ok(Ok(())) => Ok(stream),
        Ok(Err(e)) => {
            log::debug!("TLS handshake failed: {e:?}");
            Err(classify(&e))
        }
    }
}

/// Runs the client side of a handshake with an upstream on `tcp`, verifying its
/// certificate for `name`. The caller bounds the time.
pub(crate) async fn connect(
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
    tcp: TcpStream,
) -> io::Result<ClientStream> {
    let conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
    let mut stream = TlsStream::new(tcp, conn);
    stream.handshake().await?;
    Ok(stream)
}

/// The rustls error inside `e`, if there is one.
pub(crate) fn rustls_error(e: &io::Error) -> Option<&RustlsError> {
    e.get_ref()?.downcast_ref::<RustlsError>()
}

/// Whether `e` is the peer's TLS alert.
pub(crate) fn is_alert(e: &io::Error) -> bool {
    matches!(rustls_error(e), Some(RustlsError::AlertReceived(_)))
}

/// Why a handshake failed, for `canarygate_tls_handshake_failures_total`.
fn classify(e: &io::Error) -> TlsFailure {
    let Some(rustls) = rustls_error(e) else {
        return match e.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted => TlsFailure::Closed,
            io::ErrorKind::TimedOut => TlsFailure::Timeout,
            _ => TlsFailure::Other,
        };
    };
    let rustls = Some(rustls);
    match rustls {
        Some(RustlsError::PeerIncompatible(p)) => match p {
            PeerIncompatible::SupportedVersionsExtensionRequired
            | PeerIncompatible::Tls12NotOffered
            | PeerIncompatible::Tls12NotOfferedOrEnabled
            | PeerIncompatible::ServerTlsVersionIsDisabledByOurConfig
            | PeerIncompatible::ServerDoesNotSupportTls12Or13
            // What a TLS 1.0 / 1.1 ClientHello runs into first: it cannot carry the
            // signature_algorithms extension that TLS 1.2 introduced.
            | PeerIncompatible::SignatureAlgorithmsExtensionRequired => TlsFailure::Version,
            _ => TlsFailure::NoCommonParams,
        },
        Some(RustlsError::NoApplicationProtocol) => TlsFailure::NoCommonParams,
        Some(RustlsError::AlertReceived(_)) => TlsFailure::Alert,
        Some(
            RustlsError::InvalidMessage(_)
            | RustlsError::InappropriateMessage { .. }
            | RustlsError::InappropriateHandshakeMessage { .. }
            | RustlsError::PeerMisbehaved(_)
            | RustlsError::DecryptError,
        ) => TlsFailure::Protocol,
        _ => TlsFailure::Other,
    }
}
