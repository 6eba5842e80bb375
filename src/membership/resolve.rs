//! Discovery by DNS: a name resolved to many addresses (a Kubernetes headless Service, a
//! Consul or Cloud Map name), again every refresh interval. The resolver is a trait so that
//! tests (and users with their own service registry) can supply the addresses.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};
use parking_lot::Mutex;

use crate::sync::plain::Arc;

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
///
/// By default each lookup runs on the calling thread, which suits simulations with a
/// resolver that answers at once. A node's driver uses [`in_background`](Self::in_background)
/// instead: `getaddrinfo` may wait seconds for a DNS server that does not answer, and a
/// driver that waited with it would stop sending heartbeats and be declared dead by its peers.
pub struct DnsSeeds {
    name: String,
    refresh: Duration,
    next: Instant,
    resolver: Arc<Mutex<Box<dyn Resolver>>>,
    background: bool,
    /// The lookup running on its own thread, and when to look for its answer next.
    pending: Option<(Receiver<io::Result<Vec<SocketAddr>>>, Instant)>,
    /// The last error, for the log.
    last_error: Option<String>,
    /// Whether `last_error` is news (see [`take_failure`](Self::take_failure)).
    failure_unread: bool,
}

/// While a background lookup runs, how often `poll` looks for its answer.
const LOOKUP_CHECK: Duration = Duration::from_millis(5);

impl std::fmt::Debug for DnsSeeds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsSeeds")
            .field("name", &self.name)
            .field("refresh", &self.refresh)
            .field("background", &self.background)
            .field("pending", &self.pending.is_some())
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
            resolver: Arc::new(Mutex::new(resolver)),
            background: false,
            pending: None,
            last_error: None,
            failure_unread: false,
        }
    }

    /// Runs each lookup on a thread of its own: [`poll`](Self::poll) starts it and returns at
    /// once, and a later `poll` hands over its answer. At most one lookup runs at a time; one
    /// that takes longer than the refresh interval delays the next, it does not pile up.
    #[must_use]
    pub fn in_background(mut self) -> Self {
        self.background = true;
        self
    }

    /// When [`poll`](Self::poll) next has work: the next refresh, or, while a background
    /// lookup runs, a few milliseconds on to collect its answer.
    pub fn next_refresh(&self) -> Instant {
        match &self.pending {
            Some((_, check)) => (*check).min(self.next),
            None => self.next,
        }
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The error of the last resolution, if it failed.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// The error of a resolution that failed since the last call, once: what to log.
    pub fn take_failure(&mut self) -> Option<&str> {
        if std::mem::take(&mut self.failure_unread) {
            self.last_error.as_deref()
        } else {
            None
        }
    }

    /// Resolves the name if it is due: `Some(addresses)` (sorted, without duplicates) when a
    /// resolution ended now, `None` when none was due, it failed (then the previous addresses
    /// stay in use) or, in the background, it still runs.
    pub fn poll(&mut self, now: Instant) -> Option<Vec<SocketAddr>> {
        if let Some((answer, check)) = &mut self.pending {
            return match answer.try_recv() {
                Ok(result) => {
                    self.pending = None;
                    self.settle(result)
                }
                Err(TryRecvError::Empty) => {
                    *check = now + LOOKUP_CHECK;
                    None
                }
                Err(TryRecvError::Disconnected) => {
                    self.pending = None;
                    self.settle(Err(io::Error::other(
                        "the lookup thread ended without an answer",
                    )))
                }
            };
        }
        if now < self.next {
            return None;
        }
        self.next = now + self.refresh;
        if !self.background {
            let result = self.resolver.lock().resolve(&self.name);
            return self.settle(result);
        }
        let resolver = Arc::clone(&self.resolver);
        match spawn_lookup(self.name.clone(), move |name| resolver.lock().resolve(name)) {
            Ok(rx) => {
                self.pending = Some((rx, now + LOOKUP_CHECK));
                None
            }
            Err(e) => self.settle(Err(io::Error::other(format!(
                "cannot start a thread for the lookup: {e}"
            )))),
        }
    }

    fn settle(&mut self, result: io::Result<Vec<SocketAddr>>) -> Option<Vec<SocketAddr>> {
        match result {
            Ok(mut addrs) => {
                addrs.sort_unstable();
                addrs.dedup();
                self.last_error = None;
                self.failure_unread = false;
                Some(addrs)
            }
            Err(e) => {
                self.last_error = Some(e.to_string());
                self.failure_unread = true;
                None
            }
        }
    }
}

/// Runs `resolve(name)` on a thread of its own: the receiver gets its answer (or is
/// disconnected if the thread died). For callers that must not wait for DNS.
///
/// # Errors
///
/// No thread could be started.
pub(crate) fn spawn_lookup(
    name: String,
    resolve: impl FnOnce(&str) -> io::Result<Vec<SocketAddr>> + Send + 'static,
) -> io::Result<Receiver<io::Result<Vec<SocketAddr>>>> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::Builder::new()
        .name("herald-dns".into())
        .spawn(move || {
            let _ = tx.send(resolve(&name));
        })?;
    Ok(rx)
}
