//! TLS for the driver's client (rustls, with ring as provider, as the subscription
//! service's TLS): the settings built from `nats.tls_ca_file` or, without it, from the
//! system's certificate authorities, and reading and writing through a TLS session over the
//! non-blocking socket.
//!
//! NATS starts in plain text: the server's `INFO` says it requires TLS, then the client
//! starts the handshake and sends everything else (`CONNECT` first) through the session.
//! What the client writes before the handshake ends waits in rustls and goes out after it.

use std::io::{self, Read as _, Write as _};
use std::path::Path;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use crate::sync::plain::Arc;

/// The client settings trusting the certificate authorities of `ca` (PEM).
///
/// # Errors
///
/// The file cannot be read, holds no certificate, or one is not a usable CA; the message
/// names `nats.tls_ca_file`.
pub(in crate::transport::nats) fn client_config(ca: &Path) -> io::Result<Arc<ClientConfig>> {
    let bad = |kind: io::ErrorKind, problem: String| {
        io::Error::new(kind, format!("nats.tls_ca_file: {problem}"))
    };
    let certs = CertificateDer::pem_file_iter(ca)
        .map_err(|e| {
            bad(
                io::ErrorKind::NotFound,
                format!("{} is not a readable file: {e}", ca.display()),
            )
        })?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            bad(
                io::ErrorKind::InvalidData,
                format!("{} is not PEM: {e}", ca.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(bad(
            io::ErrorKind::InvalidData,
            format!("{} holds no CERTIFICATE block", ca.display()),
        ));
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| {
            bad(
                io::ErrorKind::InvalidData,
                format!("{}: not a usable CA certificate: {e}", ca.display()),
            )
        })?;
    }
    trusting(roots)
}

/// The client settings trusting the system's certificate authorities (what
/// `rustls-native-certs` finds: the platform's store, or `SSL_CERT_FILE` / `SSL_CERT_DIR`
/// where set), for TLS without `nats.tls_ca_file`.
///
/// # Errors
///
/// The system has no usable certificate authority; the message says to set
/// `nats.tls_ca_file` or to install the system's store.
pub(in crate::transport::nats) fn system_config() -> io::Result<Arc<ClientConfig>> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or_else(|| "none found".to_owned(), ToString::to_string);
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "nats.tls_ca_file: TLS is wanted and the system has no certificate authority                  to trust ({why}): set nats.tls_ca_file to the authority that signed the                  servers' certificates, or install the system's store (Debian: ca-certificates)"
            ),
        ));
    }
    trusting(roots)
}

fn trusting(roots: RootCertStore) -> io::Result<Arc<ClientConfig>> {
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| {
                io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("nats: no TLS version available: {e}"),
                )
            })?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(Arc::new(config))
}

/// What a TLS error means for the operator: a refused certificate says what to set.
fn explain(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(why) => format!(
            "TLS: the server's certificate is not trusted ({why}): set nats.tls_ca_file to \
             the authority that signed it (without it, the system's authorities are trusted)"
        ),
        other => format!("TLS: {other}"),
    }
}

/// A session with the server `host` (a name or an IP address, as in `nats.servers`).
pub(super) fn session(config: &Arc<ClientConfig>, host: &str) -> Result<ClientConnection, String> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| format!("{host:?} cannot be checked against a certificate: {e}"))?;
    ClientConnection::new(Arc::clone(config), name).map_err(|e| format!("TLS: {e}"))
}

/// Reads what the socket has through the session and appends the plain text to `inbuf`:
/// whether anything came, or why the connection is lost.
pub(super) fn read(
    session: &mut ClientConnection,
    stream: &mut mio::net::TcpStream,
    inbuf: &mut bytes::BytesMut,
) -> Result<bool, String> {
    let mut progress = false;
    let mut closed = false;
    loop {
        match session.read_tls(stream) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(_) => {
                progress = true;
                if let Err(e) = session.process_new_packets() {
                    // The alert that says why goes out before the connection is dropped.
                    let _ = write_pending(session, stream);
                    return Err(explain(&e));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    // Handshake messages and alerts go out at once.
    write_pending(session, stream)?;
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match session.reader().read(&mut chunk) {
            Ok(0) => return Err("the server closed the TLS session".into()),
            Ok(n) => inbuf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(format!("TLS: {e}")),
        }
    }
    if closed {
        return Err("the server closed the connection".into());
    }
    Ok(progress)
}

/// Hands `plain` to the session and writes what the session has for the socket: how much
/// of `plain` it took, or why the connection is lost.
pub(super) fn write(
    session: &mut ClientConnection,
    stream: &mut mio::net::TcpStream,
    plain: &[u8],
) -> Result<usize, String> {
    let taken = if plain.is_empty() {
        0
    } else {
        session
            .writer()
            .write(plain)
            .map_err(|e| format!("TLS: {e}"))?
    };
    write_pending(session, stream)?;
    Ok(taken)
}

fn write_pending(
    session: &mut ClientConnection,
    stream: &mut mio::net::TcpStream,
) -> Result<(), String> {
    while session.wants_write() {
        match session.write_tls(stream) {
            Ok(0) => return Err("the connection takes no more bytes".into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}
