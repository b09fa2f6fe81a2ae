//! The TLS material of `compare --tls`, made at run time in the run's directory (never
//! kept in the repository): one self-signed ECDSA P-256 certificate for `localhost`
//! that every proxy serves, an `OPENSSL_CONF` file that pins what wrk's OpenSSL offers
//! to what cg-handshake offers (TLS 1.3, one suite, X25519), and the check that reads
//! back, with `openssl s_client` under that file, what a proxy actually negotiates.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};
use serde::Serialize;

use crate::compare::procs::TlsFiles;
use crate::step::{display, run};

/// The name on the certificate, sent as SNI and Host by every client.
pub(crate) const SERVER_NAME: &str = "localhost";

/// Makes the certificate and key (`openssl req`) and HAProxy's combined file in `dir`.
pub(crate) fn make(dir: &Path) -> Result<TlsFiles> {
    let files = TlsFiles {
        cert: dir.join("tls-cert.pem"),
        key: dir.join("tls-key.pem"),
        combined: dir.join("tls-combined.pem"),
    };
    let mut cmd = Command::new("openssl");
    cmd.args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "7"])
        .arg("-keyout")
        .arg(&files.key)
        .arg("-out")
        .arg(&files.cert)
        .args(["-subj", &format!("/CN={SERVER_NAME}")])
        .args(["-addext", &format!("subjectAltName=DNS:{SERVER_NAME}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    run(&mut cmd)?;
    let mut combined = fs::read_to_string(&files.cert)?;
    combined.push_str(&fs::read_to_string(&files.key)?);
    fs::write(&files.combined, combined)?;
    Ok(files)
}

/// Writes the `OPENSSL_CONF` that makes an OpenSSL client offer TLS 1.3 only, `suite`
/// only and X25519 only.
pub(crate) fn pin_conf(dir: &Path, suite: &str) -> Result<PathBuf> {
    let path = dir.join("openssl-client-pin.cnf");
    fs::write(
        &path,
        format!(
            "# What wrk and openssl s_client offer in cargo xtask compare --tls.\n\
             openssl_conf = pin\n[pin]\nssl_conf = ssl_pin\n[ssl_pin]\nsystem_default = tls_pin\n\
             [tls_pin]\nMinProtocol = TLSv1.3\nCiphersuites = {suite}\nGroups = X25519\n"
        ),
    )?;
    Ok(path)
}

/// What an OpenSSL client under the pin negotiated with a proxy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct OpensslView {
    pub(crate) protocol: String,
    pub(crate) suite: String,
    pub(crate) group: String,
    pub(crate) signature: String,
}

/// One handshake with `openssl s_client -brief` under `conf` against loopback `port`.
pub(crate) fn openssl_view(conf: &Path, cert: &Path, port: u16) -> Result<OpensslView> {
    let mut cmd = Command::new("timeout");
    cmd.args(["10", "openssl", "s_client", "-brief", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-servername", SERVER_NAME, "-CAfile"])
        .arg(cert)
        .env("OPENSSL_CONF", conf)
        .stdin(std::process::Stdio::null());
    let shown = display(&cmd);
    let out = cmd
        .output()
        .with_context(|| format!("could not start `{shown}`"))?;
    // -brief reports on stderr.
    let text = String::from_utf8_lossy(&out.stderr);
    let view = parse_brief(&text);
    if !out.status.success() || view.protocol.is_empty() {
        bail!("`{shown}` failed ({}):\n{text}", out.status);
    }
    Ok(view)
}

/// Reads `openssl s_client -brief`'s summary lines.
fn parse_brief(text: &str) -> OpensslView {
    let mut v = OpensslView::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "Protocol version" => value.clone_into(&mut v.protocol),
            "Ciphersuite" => value.clone_into(&mut v.suite),
            // `X25519, 253 bits`
            "Server Temp Key" | "Peer Temp Key" => {
                value
                    .split(',')
                    .next()
                    .unwrap_or_default()
                    .clone_into(&mut v.group);
            }
            "Signature type" => value.clone_into(&mut v.signature),
            _ => {}
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_brief() {
        let text = "depth=0 CN = localhost\nCONNECTION ESTABLISHED\nProtocol version: TLSv1.3\n\
                    Ciphersuite: TLS_AES_128_GCM_SHA256\nPeer certificate: CN = localhost\n\
                    Hash used: SHA256\nSignature type: ECDSA\nVerification: OK\n\
                    Server Temp Key: X25519, 253 bits\nDONE\n";
        let v = parse_brief(text);
        assert_eq!(v.protocol, "TLSv1.3");
        assert_eq!(v.suite, "TLS_AES_128_GCM_SHA256");
        assert_eq!(v.group, "X25519");
        assert_eq!(v.signature, "ECDSA");
    }
}
