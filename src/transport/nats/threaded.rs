//! The `async-nats` client on a thread of its own (`NatsClient::AsyncNats`): the driver
//! hands it frames through a bounded queue, and takes received frames straight from the
//! client's subscription queues, which wake the driver with the [`DriverWaker`] when a frame
//! arrives while it sleeps.

use std::fmt;
use std::io;
use std::thread::JoinHandle;
use std::time::Duration;

use std::task::Poll;

use bytes::Bytes;
use futures_util::Stream as _;

use super::{CLOSE_WAIT, NatsConfig, NatsStats, RECV_BUDGET, client, sender_node};
use crate::sync::plain::{Arc, AtomicBool, Ordering};
use crate::transport::{
    DriverWaker, FrameBatch, PeerAddr, RecvStatus, Registry, SendError, Token, Transport,
};

/// What the runtime thread and the driver share.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) stats: NatsStats,
    pub(super) waker: std::sync::OnceLock<DriverWaker>,
    /// The driver was told of backpressure: wake it when the publish queue drains.
    pub(super) held: AtomicBool,
    /// Tells the client thread to stop publishing at once (closing without a server).
    pub(super) abandon: tokio::sync::Notify,
    /// Server errors, logged once a second at most.
    pub(super) error_log: std::sync::Mutex<super::ErrorLog>,
}

/// Wakes the driver when a subscription queue gets a frame while the driver waits for one:
/// the queue keeps this waker from the `recv` that found it empty and calls it once.
#[derive(Debug)]
struct WakeDriver(DriverWaker);

impl std::task::Wake for WakeDriver {
    fn wake(self: Arc<Self>) {
        self.0.wake();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.wake();
    }
}

/// One frame for the publisher: the subject (`None`: the cluster's) and the bytes.
pub(super) type Outbound = (Option<async_nats::Subject>, Bytes);

/// The transport over the `async-nats` client.
pub(super) struct Threaded {
    shared: Arc<Shared>,
    outbound: Option<tokio::sync::mpsc::Sender<Outbound>>,
    /// The cluster's subscription and this node's, read by the driver itself.
    inbound: [async_nats::Subscriber; 2],
    /// Which subscription `recv` reads first (they take turns, so neither starves the other).
    first: usize,
    /// Rings the driver; `None` until [`Transport::register`].
    waker: Option<std::task::Waker>,
    queue_frames: usize,
    cluster: String,
    prefix: String,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for Threaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Threaded")
            .field("cluster", &self.cluster)
            .field("prefix", &self.prefix)
            .field("stats", &self.shared.stats)
            .finish_non_exhaustive()
    }
}

impl Threaded {
    /// Connects to one of `config.servers`, subscribes to the cluster's subject and to node
    /// `node`'s, and starts the client's thread. Later losses of the connection are repaired
    /// in the background (reconnection with backoff, failover across the servers).
    ///
    /// # Errors
    ///
    /// An invalid setting ([`io::ErrorKind::InvalidInput`], naming it), credentials the
    /// server refuses ([`io::ErrorKind::PermissionDenied`]), or no server reachable within
    /// [`connect_timeout`](NatsConfig::connect_timeout).
    pub(super) fn connect(config: &NatsConfig, cluster: &str, node: u64) -> io::Result<Self> {
        config.check(cluster).map_err(|(key, problem)| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("{key}: {problem}"))
        })?;
        let shared = Arc::new(Shared {
            stats: config.stats(),
            waker: std::sync::OnceLock::new(),
            held: AtomicBool::new(false),
            abandon: tokio::sync::Notify::new(),
            error_log: std::sync::Mutex::default(),
        });
        let (outbound, inbound, thread) = client::start(config, cluster, node, &shared)?;
        Ok(Self {
            shared,
            outbound: Some(outbound),
            inbound,
            first: 0,
            waker: None,
            queue_frames: config.queue_frames,
            cluster: cluster.to_owned(),
            prefix: config.subject_prefix.clone(),
            thread: Some(thread),
        })
    }

    fn queue(&self, subject: Option<async_nats::Subject>, frame: Bytes) -> Result<(), io::Error> {
        let Some(tx) = &self.outbound else {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "nats transport closed",
            ));
        };
        tx.try_send((subject, frame)).map_err(|e| {
            self.shared
                .stats
                .0
                .publish_errors
                .fetch_add(1, Ordering::Relaxed);
            match e {
                tokio::sync::mpsc::error::TrySendError::Full(_) => io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "nats publish queue full: no server connected, or the server is slow",
                ),
                tokio::sync::mpsc::error::TrySendError::Closed(_) => {
                    io::Error::new(io::ErrorKind::NotConnected, "nats client thread ended")
                }
            }
        })
    }
}

impl Transport for Threaded {
    fn name(&self) -> &str {
        "nats"
    }

    fn register(&mut self, _: &Registry, _: Token, waker: DriverWaker) -> io::Result<()> {
        self.waker = Some(std::task::Waker::from(Arc::new(WakeDriver(waker.clone()))));
        // Frames may have arrived before there was a waker to call.
        waker.wake();
        let _ = self.shared.waker.set(waker);
        Ok(())
    }

    fn send(&mut self, frame: &[u8]) -> Result<(), SendError> {
        self.queue(None, Bytes::copy_from_slice(frame))
            .map_err(|last| SendError { failed: 1, last })
    }

    fn send_batch(&mut self, batch: &FrameBatch<'_>) -> Result<(), SendError> {
        // One NATS message per frame; the client thread flushes once per batch it takes.
        // One copy of the whole batch, which the frames' messages share.
        let bytes = Bytes::copy_from_slice(batch.as_bytes());
        let mut failed = 0;
        let mut last = None;
        let mut start = 0;
        for &len in batch.lens() {
            let frame = bytes.slice(start..start + len);
            start += len;
            if let Err(e) = self.queue(None, frame) {
                failed += 1;
                last = Some(e);
            }
        }
        match last {
            None => Ok(()),
            Some(last) => Err(SendError { failed, last }),
        }
    }

    fn send_to(&mut self, peer: &PeerAddr, frame: &[u8]) -> Result<(), SendError> {
        let subject = match peer {
            PeerAddr::Channel(node) => Some(async_nats::Subject::from(format!(
                "{}.{}.node.{node}",
                self.prefix, self.cluster
            ))),
            _ => None,
        };
        self.queue(subject, Bytes::copy_from_slice(frame))
            .map_err(|last| SendError { failed: 1, last })
    }

    fn recv(&mut self, deliver: &mut dyn FnMut(Bytes, PeerAddr)) -> io::Result<RecvStatus> {
        let Some(waker) = &self.waker else {
            return Ok(RecvStatus::Drained);
        };
        // Polled on the driver thread: a queue found empty keeps the waker and calls it for
        // the next frame, so the client thread hands a frame over with one wake of the driver
        // and no task of its own in between.
        let mut cx = std::task::Context::from_waker(waker);
        let c = &self.shared.stats.0;
        let mut taken = 0;
        let mut empty = [false; 2];
        let mut i = self.first;
        while taken < RECV_BUDGET && !(empty[0] && empty[1]) {
            if !empty[i] {
                match std::pin::Pin::new(&mut self.inbound[i]).poll_next(&mut cx) {
                    Poll::Ready(Some(msg)) => {
                        taken += 1;
                        c.received.fetch_add(1, Ordering::Relaxed);
                        c.bytes_in
                            .fetch_add(msg.payload.len() as u64, Ordering::Relaxed);
                        let from =
                            sender_node(&msg.payload).map_or(PeerAddr::Unknown, PeerAddr::Channel);
                        deliver(msg.payload, from);
                    }
                    // Pending: the waker is kept. Ended: the client is closing.
                    Poll::Ready(None) | Poll::Pending => empty[i] = true,
                }
            }
            i = 1 - i;
        }
        self.first = 1 - self.first;
        Ok(if empty[0] && empty[1] {
            RecvStatus::Drained
        } else {
            RecvStatus::MoreWaiting
        })
    }

    fn backpressure(&self) -> bool {
        let Some(tx) = &self.outbound else {
            return false;
        };
        // Half the queue waiting: the server is gone or slow. The client thread wakes the
        // driver once the queue has drained to a quarter.
        let held = tx.capacity() < self.queue_frames / 2;
        if held {
            self.shared.held.store(true, Ordering::Release);
        }
        held
    }
}

impl Drop for Threaded {
    fn drop(&mut self) {
        // Closing the queue ends the client thread once it has published what is queued
        // (bounded by a flush timeout when no server is reachable).
        self.outbound = None;
        if let Some(thread) = self.thread.take() {
            let deadline = std::time::Instant::now() + CLOSE_WAIT;
            while !thread.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if !thread.is_finished() {
                tracing::warn!(
                    "nats: frames still queued at shutdown were not published (no server)"
                );
                self.shared.abandon.notify_one();
            }
            let _ = thread.join();
        }
    }
}
