//! `herald node`: run a node until SIGINT or SIGTERM; reload its keys on SIGHUP or when the
//! secret file changes.

use std::sync::Arc;
use std::time::Duration;

#[cfg(unix)]
use crossbeam_channel::RecvTimeoutError;
use herald::Config;
#[cfg(unix)]
use herald::Router;
use herald::service::Service;
use signal_hook::consts::SIGTERM;
#[cfg(unix)]
use signal_hook::consts::{SIGHUP, SIGINT};

/// Windows has no SIGHUP: keys are reloaded when the file changes.
#[cfg(not(unix))]
const SIGHUP: i32 = -1;

use crate::CliError;
use crate::common::{self, ConfigArgs};
use crate::health::Health;
use crate::http::{Handler, HttpServer};
use crate::keys::KeyWatch;

/// How often the secret file is looked at for changes.
const KEY_POLL: Duration = Duration::from_secs(1);

/// Arguments of `herald node`.
#[derive(Debug, clap::Args)]
pub(crate) struct NodeArgs {
    #[command(flatten)]
    config: ConfigArgs,
}

pub(crate) fn run_node(args: &NodeArgs) -> Result<(), CliError> {
    let (config, dir) = common::load(&args.config)?;
    common::init_logging(&config, args.config.log_format);
    // Every check `herald check` makes, before anything binds.
    let prepared = common::prepare(&config, &dir, &args.config.config)?;
    let control_path = crate::control::socket_path(&config, &args.config.config);
    if config.control.enabled && crate::control::Client::connect(&control_path)?.is_some() {
        return Err(CliError::usage(format!(
            "another node already runs with this config: its control socket {} answers; \
             stop it first (use `herald status`, `raise` and `tail` to work beside it)",
            control_path.display()
        )));
    }
    // Signals first: a SIGTERM during start-up then stops the node cleanly once it runs.
    let signals = Signals::start()?;
    let service_config = prepared.service.clone();
    let (builder, secret) = prepared.into_parts()?;
    let mut watch = KeyWatch::new(config.secret_path(&dir), &secret);
    let builder = builder.keyring(secret.keyring());
    #[cfg(feature = "nats")]
    let nats_stats = builder.nats_stats();
    let router = common::build(builder)?;
    let service = match service_config {
        Some(c) => Some(Arc::new(Service::start(&router, c).map_err(|e| {
            CliError::usage(format!(
                "{e}; change [service] in the config (or free the port)"
            ))
        })?)),
        None => None,
    };
    let http = match &config.metrics {
        None => None,
        Some(m) => {
            let health = Health {
                router: router.clone(),
                service: service.clone(),
                keys: watch.status(),
                peers_configured: peers_configured(&config),
                unicast_peers: unicast_peers(&config),
                #[cfg(feature = "nats")]
                nats: nats_stats.clone().map(|stats| crate::health::NatsLink {
                    stats,
                    only_transport: config.udp.is_none() && config.tcp.is_none(),
                }),
            };
            let handler: Handler = Arc::new(move |path: &str| {
                #[allow(unused_mut)]
                let mut reply = health.reply(path);
                #[cfg(feature = "nats")]
                if let (Some(stats), "/metrics", 200) = (&nats_stats, path, reply.status) {
                    reply.body.push_str(&stats.to_prometheus());
                }
                reply
            });
            Some(HttpServer::start(m.listen, handler).map_err(|e| {
                CliError::usage(format!(
                    "metrics.listen {}: {e}; change metrics.listen in the config or free the port",
                    m.listen
                ))
            })?)
        }
    };
    let (listen, sends_to) = describe(&config, service.as_deref(), http.as_ref());
    let keys = crate::keys::read(&watch.status());
    tracing::info!(
        node = router.node_id(),
        cluster = %config.cluster,
        keys = %keys.ids_text(),
        signing_key = keys.signing,
        fingerprints = %keys.fingerprints,
        listen = %or_none(&listen),
        peers = %or_none(&sends_to),
        "node running"
    );
    #[cfg(unix)]
    let control = start_control(&config, &control_path, &router, &watch, listen, sends_to);
    loop {
        match signals.next(KEY_POLL) {
            Some(SIGHUP) => watch.reload(&router, "SIGHUP"),
            Some(_) => break,
            None => watch.poll(&router),
        }
    }
    tracing::info!("stopping: flushing and saying goodbye");
    #[cfg(unix)]
    if let Some(c) = control {
        c.stop();
    }
    if let Some(s) = &service {
        s.shutdown();
    }
    router.shutdown();
    if let Some(http) = http {
        http.stop();
    }
    signals.close();
    Ok(())
}

/// Whether the node has peers to hear from: unicast peers, or a multicast group.
fn peers_configured(config: &Config) -> bool {
    unicast_peers(config) > 0 || config.udp.as_ref().is_some_and(|u| u.multicast.is_some())
}

fn unicast_peers(config: &Config) -> usize {
    config.udp.as_ref().map_or(0, |u| u.peers.len())
        + config.tcp.as_ref().map_or(0, |t| t.peers.len())
}

/// Where the node listens and whom it sends to, for the start-up log and `herald status`.
fn describe(
    config: &Config,
    service: Option<&Service>,
    http: Option<&HttpServer>,
) -> (Vec<String>, Vec<String>) {
    let mut listen = Vec::new();
    let mut peers = Vec::new();
    if let Some(udp) = &config.udp {
        if let Some(bind) = &udp.bind {
            listen.push(format!("udp {bind}"));
        }
        if let Some(m) = &udp.multicast {
            listen.push(format!("udp multicast {} on {}", m.group, m.interface));
            peers.push(format!("udp multicast {}", m.group));
        }
        peers.extend(udp.peers.iter().map(|p| format!("udp {p}")));
    }
    if let Some(m) = &config.membership {
        let seeds: Vec<String> = m.seeds.iter().map(ToString::to_string).collect();
        peers.push(format!(
            "membership (seeds: {}{})",
            if seeds.is_empty() {
                "none".to_owned()
            } else {
                seeds.join(" ")
            },
            m.dns
                .as_ref()
                .map(|d| format!(", dns {d}"))
                .unwrap_or_default()
        ));
    }
    if let Some(tcp) = &config.tcp {
        if let Some(l) = &tcp.listen {
            listen.push(format!("tcp {l}"));
        }
        peers.extend(tcp.peers.iter().map(|p| format!("tcp {p}")));
    }
    if let Some(nats) = &config.nats {
        let subject = format!("{}.{}", nats.subject_prefix, config.cluster);
        peers.push(format!("nats {} ({subject}.>)", nats.servers.join(" ")));
    }
    if let Some(s) = service {
        listen.push(format!("service {}", s.local_addr()));
    }
    if let Some(h) = http {
        listen.push(format!(
            "http {} (/metrics /healthz /readyz /members)",
            h.local_addr()
        ));
    }
    (listen, peers)
}

fn or_none(v: &[String]) -> String {
    if v.is_empty() {
        "none".to_owned()
    } else {
        v.join(", ")
    }
}

/// Opens the control socket for `herald raise`, `tail`, `status` and `members`; a node
/// that cannot runs on without it, and says so.
#[cfg(unix)]
fn start_control(
    config: &Config,
    path: &std::path::Path,
    router: &Router,
    watch: &KeyWatch,
    listen: Vec<String>,
    sends_to: Vec<String>,
) -> Option<crate::control::Server> {
    if !config.control.enabled {
        return None;
    }
    let keys = watch.status();
    let cluster = config.cluster.clone();
    let started = std::time::Instant::now();
    let udp_peers: Vec<std::net::SocketAddr> = config
        .udp
        .iter()
        .flat_map(|u| u.peers.iter())
        .filter_map(|a| a.resolve().ok())
        .collect();
    let status = Box::new(move || {
        let k = crate::keys::read(&keys);
        crate::status::StatusReply {
            cluster: cluster.clone(),
            listen: listen.clone(),
            sends_to: sends_to.clone(),
            keys: k.ids_text(),
            signing_key: k.signing,
            fingerprints: k.fingerprints.clone(),
            started: Some(started),
            udp_peers: udp_peers.clone(),
            ..Default::default()
        }
    });
    let context = crate::control::ServerContext {
        router: router.clone(),
        names: crate::tail::Names::default(),
        status,
    };
    match crate::control::Server::start(path, context) {
        Ok(server) => {
            tracing::info!(socket = %server.path().display(), "control socket open: `herald raise`, `tail`, `status` and `members` with this config talk to this node");
            Some(server)
        }
        Err(e) => {
            tracing::warn!("{e}; `herald raise`, `tail` and `status` cannot reach this node");
            None
        }
    }
}

/// SIGINT, SIGTERM and SIGHUP, handed over on a channel by a thread of their own, so the
/// node's main thread sleeps until one arrives (or its timeout) rather than polling a flag.
#[cfg(unix)]
struct Signals {
    handle: signal_hook::iterator::Handle,
    received: crossbeam_channel::Receiver<i32>,
}

#[cfg(unix)]
impl Signals {
    fn start() -> Result<Self, CliError> {
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
            .map_err(|e| CliError::usage(format!("cannot handle signals: {e}")))?;
        let handle = signals.handle();
        let (tx, received) = crossbeam_channel::unbounded();
        std::thread::Builder::new()
            .name("herald-signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    if tx.send(signal).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| CliError::usage(format!("cannot start the signal thread: {e}")))?;
        Ok(Self { handle, received })
    }

    /// The next signal, or `None` after `timeout`.
    fn next(&self, timeout: Duration) -> Option<i32> {
        match self.received.recv_timeout(timeout) {
            Ok(signal) => Some(signal),
            Err(RecvTimeoutError::Timeout) => None,
            // The thread is gone: treat it as a request to stop.
            Err(RecvTimeoutError::Disconnected) => Some(SIGTERM),
        }
    }

    fn close(self) {
        self.handle.close();
    }
}

/// Ctrl-C and termination on Windows, where signal-hook has flags but no iterator: the
/// flag is looked at every 20 ms.
#[cfg(not(unix))]
struct Signals {
    stop: Arc<std::sync::atomic::AtomicBool>,
}

#[cfg(not(unix))]
impl Signals {
    fn start() -> Result<Self, CliError> {
        Ok(Self {
            stop: common::stop_flag()?,
        })
    }

    /// `SIGTERM` once a stop was asked for, or `None` after `timeout`.
    fn next(&self, timeout: Duration) -> Option<i32> {
        let until = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < until {
            if self.stop.load(std::sync::atomic::Ordering::Relaxed) {
                return Some(SIGTERM);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn close(self) {}
}
