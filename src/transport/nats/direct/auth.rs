//! What the driver's client needs before it connects: the server addresses of the config
//! (`nats://host:port`), and the credentials, read once from the config or its files.

use std::fmt;
use std::io;

use super::super::NatsAuth;

/// Credentials, read once when the transport is built.
pub(super) enum Credentials {
    None,
    User(String, String),
    Token(String),
    /// An NKey, and the user JWT that goes with it (from a `.creds` file).
    Nkey(Box<nkeys::KeyPair>, Option<String>),
}

/// `nats://host:port`, `host:port` or `host` (port 4222) as host and port.
pub(super) fn host_port(server: &str) -> Result<(String, u16), String> {
    let rest = match server.split_once("://") {
        // TLS or not follows nats.tls_ca_file and the server's INFO.
        Some(("nats" | "tls", rest)) => rest,
        Some((scheme, _)) => {
            return Err(format!(
                "{server:?}: write nats://host:port or tls://host:port, not {scheme}://"
            ));
        }
        None => server,
    };
    // Credentials in the URL are not supported here: the [nats] keys hold them.
    if rest.contains('@') {
        return Err(format!(
            "{server:?}: put credentials in nats.user / nats.password or nats.token, not in \
             the URL"
        ));
    }
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => {
            match port.parse::<u16>() {
                Ok(port) => (host, port),
                Err(_) => return Err(format!("{server:?}: the port is not a number")),
            }
        }
        _ => (rest, 4222),
    };
    if host.is_empty() {
        return Err(format!("{server:?} names no host"));
    }
    Ok((host.to_owned(), port))
}

/// Reads the credentials the config names.
pub(super) fn credentials(auth: &NatsAuth) -> io::Result<Credentials> {
    let invalid = |key: &str, e: &dyn fmt::Display| {
        io::Error::new(io::ErrorKind::InvalidData, format!("{key}: {e}"))
    };
    Ok(match auth {
        NatsAuth::None => Credentials::None,
        NatsAuth::UserPassword { user, password } => {
            Credentials::User(user.clone(), password.clone())
        }
        NatsAuth::Token(token) => Credentials::Token(token.clone()),
        NatsAuth::NkeySeed(seed) => Credentials::Nkey(
            Box::new(
                nkeys::KeyPair::from_seed(seed.trim())
                    .map_err(|e| invalid("nats.nkey_seed", &e))?,
            ),
            None,
        ),
        NatsAuth::NkeySeedFile(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("nats.nkey_seed_file: cannot read {}: {e}", path.display()),
                )
            })?;
            let seed = text.lines().next().unwrap_or_default().trim();
            Credentials::Nkey(
                Box::new(
                    nkeys::KeyPair::from_seed(seed)
                        .map_err(|e| invalid("nats.nkey_seed_file", &e))?,
                ),
                None,
            )
        }
        NatsAuth::CredsFile(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("nats.creds_file: cannot use {}: {e}", path.display()),
                )
            })?;
            let (jwt, seed) = parse_creds(&text).ok_or_else(|| {
                invalid(
                    "nats.creds_file",
                    &format!(
                        "{} holds no user JWT and NKey seed (as `nsc` writes them)",
                        path.display()
                    ),
                )
            })?;
            Credentials::Nkey(
                Box::new(
                    nkeys::KeyPair::from_seed(&seed).map_err(|e| invalid("nats.creds_file", &e))?,
                ),
                Some(jwt),
            )
        }
    })
}

/// The user JWT and the NKey seed of a `.creds` file: the first line of text after the
/// `BEGIN NATS USER JWT` marker and after the `BEGIN USER NKEY SEED` marker.
fn parse_creds(text: &str) -> Option<(String, String)> {
    let after = |marker: &str| {
        let mut lines = text.lines().skip_while(|l| !l.contains(marker));
        lines.next()?;
        lines
            .map(str::trim)
            .find(|l| !l.is_empty())
            .filter(|l| !l.starts_with('-'))
            .map(str::to_owned)
    };
    Some((
        after("BEGIN NATS USER JWT")?,
        after("BEGIN USER NKEY SEED")?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses_parse_with_a_default_port() {
        assert_eq!(
            host_port("nats://10.0.0.5:4223"),
            Ok(("10.0.0.5".into(), 4223))
        );
        assert_eq!(host_port("localhost"), Ok(("localhost".into(), 4222)));
        assert_eq!(host_port("nats://[::1]:5000"), Ok(("[::1]".into(), 5000)));
        assert_eq!(host_port("tls://x:1"), Ok(("x".into(), 1)));
        assert!(host_port("ws://x:1").unwrap_err().contains("ws://"));
        assert!(
            host_port("nats://u:p@x:1")
                .unwrap_err()
                .contains("nats.user")
        );
        assert!(host_port("nats://x:port").is_err());
        assert!(host_port("nats://:1").is_err());
    }

    #[test]
    fn a_creds_file_gives_its_jwt_and_seed() {
        let text = "-----BEGIN NATS USER JWT-----\neyJ0eXAi.abc.def\n------END NATS USER JWT------\n\n\
                    ************************* IMPORTANT *************************\n\
                    NKEY Seed printed below can be used to sign and prove identity.\n\n\
                    -----BEGIN USER NKEY SEED-----\nSUAEXAMPLE\n------END USER NKEY SEED------\n";
        assert_eq!(
            parse_creds(text),
            Some(("eyJ0eXAi.abc.def".into(), "SUAEXAMPLE".into()))
        );
        assert_eq!(parse_creds("nothing here"), None);
        assert_eq!(
            parse_creds("-----BEGIN NATS USER JWT-----\n------END NATS USER JWT------\n"),
            None
        );
    }
}
