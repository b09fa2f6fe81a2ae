//! TLS for the end-to-end tests: a test CA made once per test process (in memory; no key
//! is ever committed), leaf certificates it issues into a test's own directory, and a
//! rustls client that trusts it.
//!
//! With `CANARYGATE_E2E_TLS=1` the whole harness speaks TLS to the gateway: every
//! [`GatewayProc::start`](crate::GatewayProc::start) adds `--tls-cert/--tls-key`, and
//! [`Client`](crate::Client), [`one_shot`](crate::one_shot) and
//! [`ws_connect`](crate::ws_connect) connect over TLS, so the HTTP/1.1 behaviour tests
//! run unchanged over `https://` and `wss://` (`cargo xtask test` runs them both ways).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SerialNumber,
};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// The name the harness's gateway certificate is issued for (and clients ask for).
pub const TEST_NAME: &str = "gateway.test";

/// Whether the harness speaks TLS to the gateway (`CANARYGATE_E2E_TLS=1`).
pub fn over_tls() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("CANARYGATE_E2E_TLS").is_ok_and(|v| v == "1"))
}

/// Listeners the harness started with TLS (the gateways' data ports; their metrics
/// endpoints and every upstream stay plain), each with the pid of the gateway holding it.
static TLS_LISTENERS: std::sync::Mutex<Vec<(SocketAddr, u32)>> = std::sync::Mutex::new(Vec::new());

fn tls_listeners() -> std::sync::MutexGuard<'static, Vec<(SocketAddr, u32)>> {
    TLS_LISTENERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Notes that `addr`, held by gateway `pid`, terminates TLS, so harness clients connect
/// to it over TLS.
pub fn register_listener(addr: SocketAddr, pid: u32) {
    tls_listeners().push((addr, pid));
}

/// Forgets `addr` as gateway `pid`'s (it stopped); a later holder's entry stays.
pub fn unregister_listener(addr: SocketAddr, pid: u32) {
    tls_listeners().retain(|&e| e != (addr, pid));
}

/// Forgets every entry for `addr`: a plain gateway holds the port now, so they are all
/// stale (the kernel hands ports out again).
pub fn forget_listener(addr: SocketAddr) {
    tls_listeners().retain(|&(a, _)| a != addr);
}

fn is_tls_listener(addr: SocketAddr) -> bool {
    tls_listeners().iter().any(|&(a, _)| a == addr)
}

/// For tests that write or read raw bytes on the socket beside the client (a second
/// thread dripping bytes, a raw read): true, after saying so, when the harness runs over
/// TLS, where those bytes would not be TLS records. Such a test returns at once then;
/// it runs in the plain pass, and TLS has tests of its own for the same concern.
pub fn plain_only(what: &str) -> bool {
    if over_tls() {
        eprintln!(
            "{what}: runs in the plain pass only (it writes raw bytes beside the TLS session)"
        );
    }
    over_tls()
}

/// A connection to `addr` as the harness makes them: TLS to a gateway listener it
/// started with TLS, plain TCP to anything else. For tests that write raw bytes.
pub fn connect(addr: SocketAddr) -> io::Result<Sock> {
    let tcp = TcpStream::connect_timeout(&addr, crate::IO_TIMEOUT)?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(crate::IO_TIMEOUT))?;
    tcp.set_write_timeout(Some(crate::IO_TIMEOUT))?;
    Sock::harness(tcp, addr)
}

/// `http://ADDR` or, to a TLS listener of the harness, `https://ADDR`.
pub fn base_url(addr: SocketAddr) -> String {
    if over_tls() && is_tls_listener(addr) {
        format!("https://{addr}")
    } else {
        format!("http://{addr}")
    }
}

/// The harness CA's certificate as a file (written once per test process), for curl's
/// `--cacert` and Node's `NODE_EXTRA_CA_CERTS`.
pub fn ca_file() -> &'static Path {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let path =
            std::env::temp_dir().join(format!("canarygate-e2e-ca-{}.pem", std::process::id()));
        std::fs::write(&path, ca().pem()).expect("write the harness CA");
        path
    })
}

/// Key algorithm of an issued certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA P-256.
    Ecdsa,
    /// RSA 2048.
    Rsa,
}

/// A certificate authority for tests.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TestCa")
    }
}

/// Files of one issued certificate.
#[derive(Clone, Debug)]
pub struct Issued {
    /// PEM chain: the leaf, then the CA.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8).
    pub key: PathBuf,
    /// Serial number as lower-case hex bytes separated by `:` (as `show tls` prints it).
    pub serial: String,
}

impl TestCa {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("CA key");
        Self {
            issuer: CertifiedIssuer::self_signed(params, key).expect("CA certificate"),
        }
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// The CA certificate, DER.
    pub fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// Writes the CA certificate to `dir/NAME` and returns its path.
    pub fn write_pem(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, self.pem()).expect("write CA");
        path
    }

    /// How [`Issued::serial`] (and `show tls`) write `serial`.
    pub fn serial_text(serial: u64) -> String {
        // DER's minimal INTEGER: no leading zero bytes, but one when the top bit is set
        // (serials are positive).
        let bytes = serial.to_be_bytes();
        let first = bytes.iter().position(|&b| b != 0).unwrap_or(7);
        let mut der = bytes[first..].to_vec();
        if der[0] & 0x80 != 0 {
            der.insert(0, 0);
        }
        serial_hex(&der)
    }

    /// Issues a certificate for `names` (DNS names or IP addresses) with `serial`, and
    /// writes it as `dir/STEM.crt` and `dir/STEM.key`.
    pub fn issue(
        &self,
        dir: &Path,
        stem: &str,
        names: &[&str],
        kind: KeyKind,
        serial: u64,
    ) -> Issued {
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or("test"));
        params.serial_number = Some(SerialNumber::from(serial));
        let key = match kind {
            KeyKind::Ecdsa => KeyPair::generate().expect("leaf key"),
            KeyKind::Rsa => KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).expect("RSA key"),
        };
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        let cert_path = dir.join(format!("{stem}.crt"));
        let key_path = dir.join(format!("{stem}.key"));
        std::fs::write(&cert_path, format!("{}{}", cert.pem(), self.pem())).expect("write cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        Issued {
            cert: cert_path,
            key: key_path,
            serial: Self::serial_text(serial),
        }
    }
}

/// `show tls`'s rendering of serial bytes.
fn serial_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The serial number of the leaf certificate `conn` was served, in [`Issued::serial`]'s
/// format.
pub fn peer_serial(conn: &ClientConnection) -> Option<String> {
    let der = conn.peer_certificates()?.first()?;
    let (_, x) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(x.raw_serial_as_string())
}

/// The harness's CA (one per test process).
pub fn ca() -> &'static TestCa {
    static CA: OnceLock<TestCa> = OnceLock::new();
    CA.get_or_init(|| TestCa::new("canarygate e2e CA"))
}

/// A client configuration trusting `roots`, offering `alpn`, without session
/// resumption (every handshake is full and shows the server's current certificate).
pub fn client_config(roots: &[CertificateDer<'static>], alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut c = Arc::unwrap_or_clone(resuming_client_config(roots, alpn));
    c.resumption = rustls::client::Resumption::disabled();
    Arc::new(c)
}

/// [`client_config`] that resumes sessions (tickets, in memory).
pub fn resuming_client_config(
    roots: &[CertificateDer<'static>],
    alpn: &[&[u8]],
) -> Arc<ClientConfig> {
    let mut store = RootCertStore::empty();
    for r in roots {
        store.add(r.clone()).expect("root");
    }
    let mut c = ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(store)
    .with_no_client_auth();
    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(c)
}

/// A blocking TLS connection over `tcp` to `name`, handshake done.
pub fn handshake(
    tcp: TcpStream,
    config: Arc<ClientConfig>,
    name: &str,
) -> io::Result<StreamOwned<ClientConnection, TcpStream>> {
    let server = ServerName::try_from(name.to_owned())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let conn = ClientConnection::new(config, server).map_err(io::Error::other)?;
    let mut s = StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    Ok(s)
}

/// The harness's TLS client connection to `addr` (trusting [`ca`], asking for
/// [`TEST_NAME`], offering `http/1.1`).
pub fn connect_harness(tcp: TcpStream) -> io::Result<StreamOwned<ClientConnection, TcpStream>> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| client_config(&[ca().der()], &[b"http/1.1"]));
    handshake(tcp, Arc::clone(config), TEST_NAME)
}

/// The flags that make a gateway started by the harness terminate TLS with a fresh
/// certificate from [`ca`] in `dir`.
pub fn harness_flags(dir: &Path) -> Vec<String> {
    let issued = ca().issue(dir, "gateway", &[TEST_NAME, "127.0.0.1"], KeyKind::Ecdsa, 1);
    vec![
        "--tls-cert".into(),
        issued.cert.to_string_lossy().into_owned(),
        "--tls-key".into(),
        issued.key.to_string_lossy().into_owned(),
    ]
}

/// A client socket: plain, or TLS over it.
#[derive(Debug)]
pub enum Sock {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Sock {
    /// Connects to `addr` the way the harness talks to gateways: TLS when
    /// [`over_tls`], plain otherwise. `tcp` is already connected.
    pub fn harness(tcp: TcpStream, addr: SocketAddr) -> io::Result<Sock> {
        if over_tls() && is_tls_listener(addr) {
            Ok(Sock::Tls(Box::new(connect_harness(tcp)?)))
        } else {
            Ok(Sock::Plain(tcp))
        }
    }

    /// Ends the sending direction: `close_notify` then a TCP half-close over TLS, a
    /// TCP half-close otherwise.
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        if let Sock::Tls(s) = self {
            s.conn.send_close_notify();
            s.flush()?;
        }
        self.tcp().shutdown(std::net::Shutdown::Write)
    }

    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Sock::Plain(s) => s,
            Sock::Tls(s) => &s.sock,
        }
    }
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Plain(s) => s.read(buf),
            Sock::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sock::Plain(s) => s.write(buf),
            Sock::Tls(s) => {
                let n = s.write(buf)?;
                s.flush()?;
                Ok(n)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sock::Plain(s) => s.flush(),
            Sock::Tls(s) => s.flush(),
        }
    }
}
