//! TLS for the service (rustls, with ring as the crypto provider): the settings, loading the
//! PEM files into a `rustls::ServerConfig`, and moving bytes between a client's socket and
//! its TLS session without blocking.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use mio::net::TcpStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};

use super::ServiceError;
use crate::sync::plain::Arc;

/// A TLS listener of the service, beside the plain one (config `service.tls_listen`,
/// `service.tls_cert`, `service.tls_key`, `service.tls_client_ca`).
///
/// ```no_run
/// use herald::service::{ServiceConfig, ServiceTls};
/// let mut config = ServiceConfig::new("127.0.0.1:6380".parse().unwrap());
/// config.tls = Some(ServiceTls::new(
///     "0.0.0.0:6381".parse().unwrap(),
///     "/etc/herald/service.crt",
///     "/etc/herald/service.key",
/// ));
/// // redis-cli -p 6381 --tls --cacert ca.crt SUBSCRIBE product.changed
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServiceTls {
    /// The address TLS clients connect to.
    pub listen: SocketAddr,
    /// The server's certificate chain, PEM (the server's certificate first).
    pub cert: PathBuf,
    /// The server's private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// When set, clients must present a certificate issued by one of these CAs (PEM):
    /// mutual TLS. A client without one is refused during the handshake.
    pub client_ca: Option<PathBuf>,
}

impl fmt::Debug for ServiceTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceTls")
            .field("listen", &self.listen)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("client_ca", &self.client_ca)
            .finish()
    }
}

impl ServiceTls {
    /// TLS on `listen` with this certificate chain and key, no client certificates.
    pub fn new(listen: SocketAddr, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        Self {
            listen,
            cert: cert.into(),
            key: key.into(),
            client_ca: None,
        }
    }
}

fn certs(field: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ServiceError> {
    let bad = |problem: String| ServiceError::invalid(field, problem);
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("{} is not PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(bad(format!(
            "{} holds no CERTIFICATE block: give a PEM file",
            path.display()
        )));
    }
    Ok(certs)
}

/// Loads the PEM files and builds the TLS server settings.
///
/// # Errors
///
/// [`ServiceError::Invalid`] naming `service.tls_cert`, `service.tls_key` or
/// `service.tls_client_ca`, with the file and what is wrong with it.
pub(crate) fn server_config(tls: &ServiceTls) -> Result<Arc<ServerConfig>, ServiceError> {
    let chain = certs("service.tls_cert", &tls.cert)?;
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|e| {
        ServiceError::invalid(
            "service.tls_key",
            format!(
                "cannot read a PEM private key from {}: {e}",
                tls.key.display()
            ),
        )
    })?;
    warn_if_readable(&tls.key);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| {
            ServiceError::invalid("service.tls_cert", format!("no TLS version available: {e}"))
        })?;
    let builder = match &tls.client_ca {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for ca in certs("service.tls_client_ca", path)? {
                roots.add(ca).map_err(|e| {
                    ServiceError::invalid(
                        "service.tls_client_ca",
                        format!("{}: not a usable CA certificate: {e}", path.display()),
                    )
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| {
                    ServiceError::invalid(
                        "service.tls_client_ca",
                        format!("{}: {e}", path.display()),
                    )
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder.with_single_cert(chain, key).map_err(|e| {
        ServiceError::invalid(
            "service.tls_key",
            format!(
                "{} does not go with the certificate in {}: {e}",
                tls.key.display(),
                tls.cert.display()
            ),
        )
    })?;
    Ok(Arc::new(config))
}

fn warn_if_readable(path: &Path) {
    if let Ok(meta) = std::fs::metadata(path)
        && crate::auth::private_file::too_open(&meta, path).is_some()
    {
        tracing::warn!(
            key = %path.display(),
            "service.tls_key: group or others may read the private key; chmod 600 it"
        );
    }
}

/// How a read of TLS records ended.
#[derive(Debug)]
pub(crate) enum TlsRead {
    /// Plaintext is waiting (and the socket may hold more records).
    Plaintext,
    /// The socket has nothing more for now.
    Blocked,
    /// The peer closed the connection (with or without `close_notify`); plaintext from
    /// before the close may still be waiting.
    Closed,
    /// The records or the handshake were bad (a plain-text client, a missing or untrusted
    /// client certificate): rustls has queued an alert; write it, then close.
    Failed(rustls::Error),
    /// The socket failed.
    Io,
}

/// Reads TLS records from the socket into the session until the socket would block or
/// plaintext is waiting.
pub(crate) fn read_records(tls: &mut ServerConnection, stream: &mut TcpStream) -> TlsRead {
    loop {
        match tls.read_tls(stream) {
            Ok(0) => {
                return match tls.process_new_packets() {
                    Ok(_) => TlsRead::Closed,
                    Err(e) => TlsRead::Failed(e),
                };
            }
            Ok(_) => match tls.process_new_packets() {
                Ok(state) if state.plaintext_bytes_to_read() > 0 => return TlsRead::Plaintext,
                Ok(_) => {}
                Err(e) => return TlsRead::Failed(e),
            },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return TlsRead::Blocked,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return TlsRead::Io,
        }
    }
}

/// Takes up to `buf.len()` bytes of plaintext: `Ok(0)` when none is waiting.
pub(crate) fn read_plaintext(tls: &mut ServerConnection, buf: &mut [u8]) -> io::Result<usize> {
    match tls.reader().read(buf) {
        Ok(n) => Ok(n),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
        // The peer closed without close_notify: the data before it was read already.
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
        Err(e) => Err(e),
    }
}

/// Hands `out` to the session (as much as its buffer takes) and writes records to the socket
/// until it would block. Returns how many bytes of `out` the session took.
///
/// # Errors
///
/// The socket's error.
pub(crate) fn write(
    tls: &mut ServerConnection,
    stream: &mut TcpStream,
    out: &[u8],
) -> io::Result<usize> {
    let mut taken = 0;
    loop {
        let mut progressed = false;
        if taken < out.len() {
            let n = tls.writer().write(&out[taken..])?;
            taken += n;
            progressed |= n > 0;
        }
        if tls.wants_write() {
            match tls.write_tls(stream) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => progressed = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(taken),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => progressed = true,
                Err(e) => return Err(e),
            }
        }
        if !progressed {
            return Ok(taken);
        }
    }
}
