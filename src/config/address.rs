//! `host:port` addresses in the config: an IP address or a host name, resolved at start.

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An address from the config file: `IP:port` (`127.0.0.1:7700`, `[::1]:7700`) or
/// `host:port` (`localhost:7700`, `node-2.internal:7700`). A host name is resolved when the
/// node starts ([`Address::resolve`]); `herald check` resolves it too.
///
/// ```
/// let a: herald::Address = "localhost:7700".parse().unwrap();
/// assert_eq!(a.host(), "localhost");
/// assert_eq!(a.resolve().unwrap().port(), 7700);
/// assert!("localhost".parse::<herald::Address>().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Address {
    host: String,
    port: u16,
    literal: Option<SocketAddr>,
}

impl Address {
    /// The host part: an IP address or a name.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address itself when the host is an IP address, `None` for a host name.
    pub fn ip_addr(&self) -> Option<SocketAddr> {
        self.literal
    }

    /// The socket address: the IP address as written, or the host name looked up (the first
    /// IPv4 address it has, else the first IPv6 one).
    ///
    /// # Errors
    ///
    /// The lookup's error, or [`io::ErrorKind::NotFound`] when the name has no address.
    pub fn resolve(&self) -> io::Result<SocketAddr> {
        if let Some(a) = self.literal {
            return Ok(a);
        }
        let all: Vec<SocketAddr> = (self.host.as_str(), self.port).to_socket_addrs()?.collect();
        all.iter()
            .find(|a| a.is_ipv4())
            .or_else(|| all.first())
            .copied()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the name has no address"))
    }
}

impl From<SocketAddr> for Address {
    fn from(a: SocketAddr) -> Self {
        Self {
            host: a.ip().to_string(),
            port: a.port(),
            literal: Some(a),
        }
    }
}

/// Why a string is not an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not an address: write IP:port or host:port, such as 127.0.0.1:7700 or node-2.internal:7700"
)]
pub struct AddressError(String);

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(a.into());
        }
        let bad = || AddressError(s.to_owned());
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        // A name: letters, digits, '-', '.' and '_' (as in SRV-style names); an IPv6 address
        // without brackets or a stray character is refused here rather than by the resolver.
        let name_ok = !host.is_empty()
            && host.len() <= 253
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
        if !name_ok {
            return Err(bad());
        }
        Ok(Self {
            host: host.to_owned(),
            port,
            literal: None,
        })
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.literal {
            Some(a) => a.fmt(f),
            None => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

impl Serialize for Address {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_names_and_garbage() {
        let a: Address = "[::1]:7700".parse().unwrap();
        assert_eq!(a.ip_addr(), Some("[::1]:7700".parse().unwrap()));
        assert_eq!(a.to_string(), "[::1]:7700");
        let n: Address = "node-2.internal:7701".parse().unwrap();
        assert_eq!(
            (n.host(), n.port(), n.ip_addr()),
            ("node-2.internal", 7701, None)
        );
        assert_eq!(n.to_string(), "node-2.internal:7701");
        for bad in [
            "",
            "nowhere",
            ":7700",
            "host:",
            "host:70000",
            "a b:1",
            "::1:7700x",
            "h:-1",
        ] {
            assert!(bad.parse::<Address>().is_err(), "{bad}");
        }
    }

    #[test]
    fn localhost_resolves_and_an_unknown_name_does_not() {
        let a: Address = "localhost:7700".parse().unwrap();
        assert!(a.resolve().unwrap().ip().is_loopback());
        // `.invalid` is reserved never to resolve (RFC 6761).
        let b: Address = "no-such-host.invalid:7700".parse().unwrap();
        assert!(b.resolve().is_err());
    }
}
