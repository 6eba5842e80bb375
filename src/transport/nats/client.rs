//! The NATS side of [`NatsTransport`](super::NatsTransport): the `async-nats` client on a
//! one-thread tokio runtime, its two subscriptions (which the driver reads itself), and the
//! publisher draining the outbound queue.

use std::io;
use std::thread::JoinHandle;
use std::time::Duration;

use async_nats::{ConnectErrorKind, ConnectOptions, Event, Subject, Subscriber};
use tokio::sync::mpsc;

use super::threaded::{Outbound, Shared};
use super::{NatsAuth, NatsConfig};
use crate::sync::plain::{Arc, Ordering};

/// How long closing waits for queued frames to reach the server.
const CLOSE_FLUSH: Duration = Duration::from_secs(1);

/// The reconnection delay after `attempts` failed tries: 0 first, then doubling from 50 ms
/// up to 2 s (a restarted server is found quickly; a dead one is not hammered).
pub(super) fn reconnect_delay(attempts: usize) -> Duration {
    match attempts {
        0 | 1 => Duration::ZERO,
        n => {
            let exp = u32::try_from(n - 2).unwrap_or(u32::MAX).min(6);
            Duration::from_millis(50 << exp).min(Duration::from_secs(2))
        }
    }
}

type Started = (mpsc::Sender<Outbound>, [Subscriber; 2], JoinHandle<()>);

/// Connects, subscribes and starts the client thread.
pub(super) fn start(
    config: &NatsConfig,
    cluster: &str,
    node: u64,
    shared: &Arc<Shared>,
) -> io::Result<Started> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let cluster_subject = Subject::from(config.cluster_subject(cluster));
    let node_subject = Subject::from(config.node_subject(cluster, node));
    let servers = config.servers.join(", ");
    let client = runtime.block_on(async {
        let options = options(config, cluster, node, shared).await?;
        let client = options
            .connect(config.servers.as_slice())
            .await
            .map_err(|e| connect_error(&e, &servers))?;
        Ok::<_, io::Error>(client)
    })?;
    shared.stats.0.connected.store(true, Ordering::Relaxed);
    let subscriptions = runtime.block_on(async {
        let all = client.subscribe(cluster_subject.clone()).await;
        let mine = client.subscribe(node_subject).await;
        // Send the subscriptions now (peers still learn of this node by its frames).
        let _ = client.flush().await;
        all.and_then(|a| mine.map(|m| [a, m]))
    });
    let inbound = subscriptions.map_err(|e| io::Error::other(format!("nats subscribe: {e}")))?;
    let (out_tx, out_rx) = mpsc::channel(config.queue_frames);
    let queue_frames = config.queue_frames;
    let shared = Arc::clone(shared);
    let thread = std::thread::Builder::new()
        .name("herald-nats".into())
        .spawn(move || {
            runtime.block_on(async move {
                let publishing = std::pin::pin!(publish(
                    client,
                    cluster_subject,
                    out_rx,
                    queue_frames,
                    &shared
                ));
                // Closing normally ends `publish`; `abandon` ends it when no server is there
                // to take what is queued.
                let abandoned = std::pin::pin!(shared.abandon.notified());
                let _ = futures_util::future::select(publishing, abandoned).await;
            });
        })?;
    Ok((out_tx, inbound, thread))
}

/// Publishes what the driver queues, one message per frame, until the driver closes the
/// queue; then flushes what is left (for at most a second). No flush per frame or batch: the
/// client writes to the socket as soon as it runs out of queued commands, so a frame waits
/// neither for a timer nor for a round trip between this task and the client's.
async fn publish(
    client: async_nats::Client,
    cluster: Subject,
    mut rx: mpsc::Receiver<Outbound>,
    queue_frames: usize,
    shared: &Shared,
) {
    let c = &shared.stats.0;
    while let Some((subject, frame)) = rx.recv().await {
        let len = frame.len() as u64;
        let subject = subject.unwrap_or_else(|| cluster.clone());
        match client.publish(subject, frame).await {
            Ok(()) => {
                c.published.fetch_add(1, Ordering::Relaxed);
                c.bytes_out.fetch_add(len, Ordering::Relaxed);
            }
            Err(e) => {
                c.publish_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "nats publish failed");
            }
        }
        if shared.held.load(Ordering::Relaxed)
            && rx.len() <= queue_frames / 4
            && shared.held.swap(false, Ordering::AcqRel)
        {
            // The driver held back for us: it may send again.
            if let Some(w) = shared.waker.get() {
                w.wake();
            }
        }
    }
    let _ = tokio::time::timeout(CLOSE_FLUSH, client.flush()).await;
}

/// The client's options: credentials, TLS, reconnection, and events counted into the stats.
async fn options(
    config: &NatsConfig,
    cluster: &str,
    node: u64,
    shared: &Arc<Shared>,
) -> io::Result<ConnectOptions> {
    let mut o =
        match &config.auth {
            NatsAuth::None => ConnectOptions::new(),
            NatsAuth::UserPassword { user, password } => {
                ConnectOptions::with_user_and_password(user.clone(), password.clone())
            }
            NatsAuth::Token(token) => ConnectOptions::with_token(token.clone()),
            NatsAuth::NkeySeed(seed) => ConnectOptions::with_nkey(seed.clone()),
            NatsAuth::NkeySeedFile(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("nats.nkey_seed_file: cannot read {}: {e}", path.display()),
                    )
                })?;
                let seed = text.lines().next().unwrap_or_default().trim().to_owned();
                ConnectOptions::with_nkey(seed)
            }
            NatsAuth::CredsFile(path) => ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("nats.creds_file: cannot use {}: {e}", path.display()),
                    )
                })?,
        };
    if let Some(ca) = &config.tls_ca_file {
        if !ca.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("nats.tls_ca_file: {} is not a readable file", ca.display()),
            ));
        }
        o = o.add_root_certificates(ca.clone()).require_tls(true);
    }
    let events = Arc::clone(shared);
    Ok(o.name(format!("herald {cluster} node {node}"))
        // A node's own frames are of no use to it.
        .no_echo()
        .connection_timeout(config.connect_timeout)
        // The driver reads the subscriptions' queues; past this many frames waiting in one,
        // the client drops what comes and reports a slow consumer.
        .subscription_capacity(config.inbound_frames)
        .reconnect_delay_callback(reconnect_delay)
        .event_callback(move |event| {
            let shared = Arc::clone(&events);
            async move { on_event(&shared, &event) }
        }))
}

/// Counts and logs what the client reports.
fn on_event(shared: &Shared, event: &Event) {
    let c = &shared.stats.0;
    match event {
        Event::Connected => {
            c.connected.store(true, Ordering::Relaxed);
            if c.connects.fetch_add(1, Ordering::Relaxed) > 0 {
                tracing::info!("nats reconnected");
            }
        }
        Event::Disconnected => {
            c.connected.store(false, Ordering::Relaxed);
            c.disconnects.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("nats connection lost; reconnecting with backoff");
        }
        Event::SlowConsumer(sid) => {
            // The driver fell behind and a subscription's queue was full.
            c.inbound_dropped.fetch_add(1, Ordering::Relaxed);
            c.slow_consumer.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                subscription = sid,
                "nats slow consumer: messages were dropped (herald recovers them or reports \
                 them as missed)"
            );
        }
        Event::ServerError(e) => {
            c.server_errors.fetch_add(1, Ordering::Relaxed);
            let text = e.to_string();
            if text.to_lowercase().contains("slow consumer") {
                c.slow_consumer.fetch_add(1, Ordering::Relaxed);
            }
            if let Ok(mut log) = shared.error_log.lock() {
                log.log(&"async-nats", &text);
            }
        }
        Event::ClientError(e) => tracing::warn!(error = %e, "nats client error"),
        Event::LameDuckMode => tracing::info!("nats server entering lame duck mode"),
        other => tracing::debug!(event = %other, "nats event"),
    }
}

/// A first connection's error as an I/O error saying what to check.
fn connect_error(e: &async_nats::ConnectError, servers: &str) -> io::Error {
    let (kind, hint) = match e.kind() {
        ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => (
            io::ErrorKind::PermissionDenied,
            "the server refused the credentials: check nats.user and nats.password, \
             nats.token, nats.creds_file or nats.nkey_seed_file",
        ),
        ConnectErrorKind::ServerParse => (
            io::ErrorKind::InvalidInput,
            "nats.servers: write each as nats://host:port",
        ),
        ConnectErrorKind::Tls => (
            io::ErrorKind::InvalidData,
            "TLS failed: check nats.tls_ca_file and that the servers speak TLS",
        ),
        ConnectErrorKind::TimedOut => (
            io::ErrorKind::TimedOut,
            "no server answered in time: check nats.servers and that they run",
        ),
        _ => (
            io::ErrorKind::ConnectionRefused,
            "no server could be reached: check nats.servers and that they run",
        ),
    };
    io::Error::new(kind, format!("nats connect to {servers}: {e}: {hint}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnection_backs_off_to_two_seconds() {
        assert_eq!(reconnect_delay(1), Duration::ZERO);
        assert_eq!(reconnect_delay(2), Duration::from_millis(50));
        assert_eq!(reconnect_delay(3), Duration::from_millis(100));
        assert_eq!(reconnect_delay(7), Duration::from_millis(1600));
        assert_eq!(reconnect_delay(8), Duration::from_secs(2));
        assert_eq!(reconnect_delay(usize::MAX), Duration::from_secs(2));
    }
}
