//! `[nats]`: herald over NATS (see docs/operations.md, "herald on NATS").

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::redacted;
use crate::error::ConfigError;

/// `[nats]`: carry frames over NATS servers (the binary is built with the `nats` feature).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSection {
    /// Servers, such as `["nats://10.0.0.5:4222", "nats://10.0.0.6:4222"]` (required).
    pub servers: Vec<String>,
    /// A user name; give `password` with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The user's password (`herald check` prints it redacted).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "redacted"
    )]
    pub password: Option<String>,
    /// A token, instead of a user (`herald check` prints it redacted).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "redacted"
    )]
    pub token: Option<String>,
    /// A `.creds` file (user JWT and NKey seed), relative to the config file's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creds_file: Option<PathBuf>,
    /// A file holding an NKey seed (`SU...`), relative to the config file's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nkey_seed_file: Option<PathBuf>,
    /// A PEM file of certificate authorities for TLS to the servers (TLS is then required),
    /// relative to the config file's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<PathBuf>,
    /// The subjects' first tokens: frames go to `<prefix>.<cluster>.frames` and
    /// `<prefix>.<cluster>.node.<id>`. Default `herald`.
    #[serde(default = "default_prefix")]
    pub subject_prefix: String,
    /// How long the first connection may take at start. Default 5000.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Which client carries the frames: `auto` (herald's own on the driver's poll, as
    /// `driver`), `driver` or `async-nats`. Default `auto`.
    #[serde(default = "default_client")]
    pub client: String,
}

fn default_client() -> String {
    "auto".to_owned()
}

fn default_prefix() -> String {
    "herald".to_owned()
}
fn default_connect_timeout_ms() -> u64 {
    5000
}

impl fmt::Debug for NatsSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hide = |v: &Option<String>| v.as_ref().map(|_| "(redacted)");
        f.debug_struct("NatsSection")
            .field("servers", &self.servers)
            .field("user", &self.user)
            .field("password", &hide(&self.password))
            .field("token", &hide(&self.token))
            .field("creds_file", &self.creds_file)
            .field("nkey_seed_file", &self.nkey_seed_file)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("subject_prefix", &self.subject_prefix)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("client", &self.client)
            .finish()
    }
}

impl NatsSection {
    /// Checks the section, naming the key at fault.
    pub(super) fn check(&self, cluster: &str) -> Result<(), ConfigError> {
        let bad = |key: &str, problem: String| {
            Err(ConfigError {
                key: key.to_owned(),
                problem,
            })
        };
        if cfg!(not(feature = "nats")) {
            return bad(
                "nats",
                "this herald was built without the `nats` feature: rebuild with \
                 `--features nats`, or remove the section"
                    .into(),
            );
        }
        if self.servers.is_empty() {
            return bad(
                "nats.servers",
                "is empty: list at least one server, such as [\"nats://127.0.0.1:4222\"]".into(),
            );
        }
        for (i, s) in self.servers.iter().enumerate() {
            let host = s.split_once("://").map_or(s.as_str(), |(_, rest)| rest);
            if host.is_empty() || s.contains(char::is_whitespace) {
                return bad(
                    &format!("nats.servers[{i}]"),
                    format!("{s:?} is not a server: write nats://host:port"),
                );
            }
        }
        match (&self.user, &self.password) {
            (Some(_), None) => return bad("nats.password", "missing: nats.user needs it".into()),
            (None, Some(_)) => return bad("nats.user", "missing: nats.password needs it".into()),
            _ => {}
        }
        let ways = [
            self.user.is_some(),
            self.token.is_some(),
            self.creds_file.is_some(),
            self.nkey_seed_file.is_some(),
        ];
        if ways.iter().filter(|w| **w).count() > 1 {
            return bad(
                "nats.token",
                "give one way to authenticate: user and password, token, creds_file or \
                 nkey_seed_file"
                    .into(),
            );
        }
        if self.connect_timeout_ms == 0 {
            return bad("nats.connect_timeout_ms", "must be more than 0".into());
        }
        if !matches!(self.client.as_str(), "auto" | "driver" | "async-nats") {
            return bad(
                "nats.client",
                format!(
                    "{:?} is not a NATS client: use \"auto\" (the default), \"driver\" or \
                     \"async-nats\"",
                    self.client
                ),
            );
        }
        #[cfg(feature = "nats")]
        if let Err((key, problem)) = self.transport_config(Path::new(".")).check(cluster) {
            return bad(key, problem);
        }
        let _ = cluster;
        Ok(())
    }

    /// Paths of the section resolved against the config file's directory.
    pub(super) fn resolve_paths(&mut self, dir: &Path) {
        for p in [
            &mut self.creds_file,
            &mut self.nkey_seed_file,
            &mut self.tls_ca_file,
        ]
        .into_iter()
        .flatten()
        {
            *p = dir.join(&*p);
        }
    }

    /// The transport's settings (relative paths taken from `dir`).
    #[cfg(feature = "nats")]
    pub fn transport_config(&self, dir: &Path) -> crate::transport::NatsConfig {
        use crate::transport::NatsAuth;
        let mut c = crate::transport::NatsConfig::new(self.servers.iter().cloned());
        c.auth = match (&self.user, &self.password, &self.token) {
            (Some(user), Some(password), _) => NatsAuth::UserPassword {
                user: user.clone(),
                password: password.clone(),
            },
            (_, _, Some(token)) => NatsAuth::Token(token.clone()),
            _ => match (&self.creds_file, &self.nkey_seed_file) {
                (Some(creds), _) => NatsAuth::CredsFile(dir.join(creds)),
                (None, Some(seed)) => NatsAuth::NkeySeedFile(dir.join(seed)),
                (None, None) => NatsAuth::None,
            },
        };
        c.tls_ca_file = self.tls_ca_file.as_ref().map(|p| dir.join(p));
        c.subject_prefix.clone_from(&self.subject_prefix);
        c.connect_timeout = std::time::Duration::from_millis(self.connect_timeout_ms);
        // `check` has refused any other name.
        c.client = self.client.parse().unwrap_or_default();
        c
    }
}

#[cfg(all(test, feature = "nats"))]
mod tests {
    use crate::Config;

    fn err(nats: &str) -> String {
        let text = format!("cluster = \"c\"\n[nats]\n{nats}\n");
        Config::from_toml(&text).unwrap_err().to_string()
    }

    #[test]
    fn a_nats_section_alone_is_a_transport_and_secrets_never_print() {
        let text = "cluster = \"c\"\n[nats]\nservers = [\"nats://127.0.0.1:4222\"]\nuser = \"u\"\npassword = \"hunter2\"\n";
        let c = Config::from_toml(text).unwrap();
        let nats = c.nats.as_ref().unwrap();
        assert_eq!(nats.subject_prefix, "herald");
        assert!(!c.to_toml().contains("hunter2"), "{}", c.to_toml());
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn nats_errors_name_the_key() {
        let s = "servers = [\"nats://127.0.0.1:4222\"]";
        assert!(err("servers = []").starts_with("nats.servers:"));
        assert!(err("servers = [\"nats://\"]").starts_with("nats.servers[0]:"));
        assert!(err(&format!("{s}\nuser = \"u\"")).starts_with("nats.password:"));
        assert!(err(&format!("{s}\npassword = \"p\"")).starts_with("nats.user:"));
        assert!(
            err(&format!("{s}\ntoken = \"t\"\ncreds_file = \"c.creds\""))
                .starts_with("nats.token:")
        );
        assert!(err(&format!("{s}\nsubject_prefix = \"a b\"")).starts_with("nats.subject_prefix:"));
        assert!(
            err(&format!("{s}\nconnect_timeout_ms = 0")).starts_with("nats.connect_timeout_ms:")
        );
        assert!(err(&format!("{s}\ncolour = 1")).starts_with("nats.colour:"));
        assert!(err(&format!("{s}\nclient = \"tokio\"")).starts_with("nats.client:"));
        for ca in ["", "tls_ca_file = \"/ca.pem\"\n"] {
            let tls = format!(
                "cluster = \"c\"\n[nats]\nservers = [\"tls://127.0.0.1:4222\"]\nclient = \"driver\"\n{ca}"
            );
            assert!(
                Config::from_toml(&tls).is_ok(),
                "TLS with either client, with the CA file or the system's: {ca:?}"
            );
        }
        assert!(err("user = \"u\"").starts_with("nats.servers:"));
        let dotted = "cluster = \"a.b\"\n[nats]\nservers = [\"nats://127.0.0.1:4222\"]\n";
        assert!(
            Config::from_toml(dotted)
                .unwrap_err()
                .to_string()
                .starts_with("cluster:")
        );
    }

    #[test]
    fn paths_are_relative_to_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.toml");
        std::fs::write(
            &path,
            "cluster = \"c\"\n[nats]\nservers = [\"nats://127.0.0.1:4222\"]\ncreds_file = \"n.creds\"\ntls_ca_file = \"/etc/ca.pem\"\n",
        )
        .unwrap();
        let c = Config::load(&path).unwrap();
        let nats = c.nats.as_ref().unwrap();
        assert_eq!(
            nats.creds_file.as_deref(),
            Some(dir.path().join("n.creds").as_path())
        );
        assert_eq!(nats.tls_ca_file.as_deref(), Some(Path::new("/etc/ca.pem")));
    }

    use std::path::Path;
}
