//! `[service]`: the subscription service's section of the configuration.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Address, millis, redacted};
use crate::error::ConfigError;

/// `[service]`: the subscription service (see docs/service.md).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSection {
    /// Where Redis clients connect, such as `"127.0.0.1:6380"` or `"localhost:6380"`
    /// (required in the section).
    pub listen: Address,
    /// A password clients must give with `AUTH` before anything else. Prefer
    /// `password_file`; `herald check` prints this one redacted.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "redacted"
    )]
    pub password: Option<String>,
    /// A file holding the password (its first line), relative to the config file's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// A client without subscriptions that sends nothing, not even `PING`, for this long
    /// is disconnected (subscribers never are). Default 120000.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// The most bytes of pushes and replies waiting for one client; past it the client is
    /// disconnected and counted. Default 8388608 (8 MiB).
    #[serde(default = "default_output_buffer_limit")]
    pub output_buffer_limit: usize,
    /// The most clients at once. Default 10000.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// The most channels and patterns per client. Default 10000.
    #[serde(default = "default_max_subscriptions")]
    pub max_subscriptions_per_client: usize,
    /// The longest channel name or pattern in bytes. Default 1024.
    #[serde(default = "default_max_name_len")]
    pub max_name_len: usize,
    /// The most bytes of channel names and patterns all clients hold. Default 67108864.
    #[serde(default = "default_name_memory_limit")]
    pub name_memory_limit: usize,
    /// Where TLS clients connect, beside `listen`; needs `tls_cert` and `tls_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_listen: Option<SocketAddr>,
    /// The PEM certificate chain for `tls_listen`, relative to the config file's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key for `tls_listen`, relative to the config file's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates: when set, TLS clients must present a certificate they issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_ca: Option<PathBuf>,
    /// Event names known from the start, so patterns match events raised on other nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub event_names: Vec<String>,
}

impl fmt::Debug for ServiceSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceSection")
            .field("listen", &self.listen)
            .field("password", &self.password.as_ref().map(|_| "(redacted)"))
            .field("password_file", &self.password_file)
            .field("idle_timeout_ms", &self.idle_timeout_ms)
            .field("output_buffer_limit", &self.output_buffer_limit)
            .field("max_connections", &self.max_connections)
            .field(
                "max_subscriptions_per_client",
                &self.max_subscriptions_per_client,
            )
            .field("max_name_len", &self.max_name_len)
            .field("name_memory_limit", &self.name_memory_limit)
            .field("tls_listen", &self.tls_listen)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("tls_client_ca", &self.tls_client_ca)
            .field("event_names", &self.event_names)
            .finish()
    }
}

/// The TLS listener of `[service]`, if `tls_listen` is set, with its files resolved against
/// the config file's directory.
pub(super) fn service_tls(
    svc: &ServiceSection,
    config_dir: &Path,
) -> Result<Option<crate::service::ServiceTls>, ConfigError> {
    let need = |key: &str| ConfigError {
        key: format!("service.{key}"),
        problem: "missing: service.tls_listen needs tls_cert and tls_key (PEM files)".into(),
    };
    let Some(listen) = svc.tls_listen else {
        if let Some(key) = [
            ("tls_cert", svc.tls_cert.is_some()),
            ("tls_key", svc.tls_key.is_some()),
            ("tls_client_ca", svc.tls_client_ca.is_some()),
        ]
        .iter()
        .find_map(|(k, set)| set.then_some(*k))
        {
            return Err(ConfigError {
                key: format!("service.{key}"),
                problem:
                    "is set but service.tls_listen is not: add the address TLS clients connect to"
                        .into(),
            });
        }
        return Ok(None);
    };
    let cert = svc.tls_cert.as_ref().ok_or_else(|| need("tls_cert"))?;
    let key = svc.tls_key.as_ref().ok_or_else(|| need("tls_key"))?;
    let mut tls =
        crate::service::ServiceTls::new(listen, config_dir.join(cert), config_dir.join(key));
    tls.client_ca = svc.tls_client_ca.as_ref().map(|p| config_dir.join(p));
    Ok(Some(tls))
}

fn default_idle_timeout_ms() -> u64 {
    millis(crate::service::DEFAULT_IDLE_TIMEOUT)
}
fn default_output_buffer_limit() -> usize {
    crate::service::DEFAULT_OUTPUT_BUFFER_LIMIT
}
fn default_max_connections() -> usize {
    crate::service::DEFAULT_MAX_CONNECTIONS
}
fn default_max_subscriptions() -> usize {
    crate::service::DEFAULT_MAX_SUBSCRIPTIONS
}
fn default_max_name_len() -> usize {
    crate::service::DEFAULT_MAX_NAME_LEN
}
fn default_name_memory_limit() -> usize {
    crate::service::DEFAULT_NAME_MEMORY_LIMIT
}
