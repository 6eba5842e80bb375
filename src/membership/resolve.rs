//! Discovery by DNS: a name resolved to many addresses (a Kubernetes headless Service, a
//! Consul or Cloud Map name), again every refresh interval. The resolver is a trait so that
//! tests (and users with their own service registry) can supply the addresses.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Turns a `host:port` name into addresses.
pub trait Resolver: Send {
    /// The addresses `name` (`host:port`) resolves to now.
    ///
    /// # Errors
    ///
    /// The resolver's error (no such name, no answer).
    fn resolve(&mut self, name: &str) -> io::Result<Vec<SocketAddr>>;
}

/// The system's resolver (`getaddrinfo`: `/etc/hosts`, then DNS).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn resolve(&mut self, name: &str) -> io::Result<Vec<SocketAddr>> {
        Ok(name.to_socket_addrs()?.collect())
    }
}

/// A DNS name re-resolved periodically: the seeds it gives go to
/// [`Membership::set_discovered`](super::Membership::set_discovered).
pub struct DnsSeeds {
    name: String,
    refresh: Duration,
    next: Instant,
    resolver: Box<dyn Resolver>,
    /// The last error, for the log.
    last_error: Option<String>,
}

impl std::fmt::Debug for DnsSeeds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsSeeds")
            .field("name", &self.name)
            .field("refresh", &self.refresh)
            .finish_non_exhaustive()
    }
}

impl DnsSeeds {
    /// Resolves `name` (`host:port`) with `resolver` at `now` and every `refresh` after.
    pub fn new(
        name: impl Into<String>,
        refresh: Duration,
        resolver: Box<dyn Resolver>,
        now: Instant,
    ) -> Self {
        Self {
            name: name.into(),
            refresh,
            next: now,
            resolver,
            last_error: None,
        }
    }

    /// When the name is next resolved.
    pub fn next_refresh(&self) -> Instant {
        self.next
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The error of the last resolution, if it failed.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// Resolves the name if it is due: `Some(addresses)` (sorted, without duplicates) when it
    /// was, `None` when it was not due or failed (then the previous addresses stay in use).
    pub fn poll(&mut self, now: Instant) -> Option<Vec<SocketAddr>> {
        if now < self.next {
            return None;
        }
        self.next = now + self.refresh;
        match self.resolver.resolve(&self.name) {
            Ok(mut addrs) => {
                addrs.sort_unstable();
                addrs.dedup();
                self.last_error = None;
                Some(addrs)
            }
            Err(e) => {
                self.last_error = Some(e.to_string());
                None
            }
        }
    }
}
