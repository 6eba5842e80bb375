//! What the node's HTTP side answers: `/metrics` (Prometheus text), `/healthz` (the process
//! is up and its driver runs) and `/readyz` (the node can do its job: keys loaded, sockets bound,
//! a peer heard, connected to NATS when NATS carries its frames).

use std::fmt::Write as _;
use std::sync::Arc;

use herald::Router;
use herald::service::Service;

use crate::http::Reply;
use crate::keys::{self, SharedKeyStatus};

/// The build's version, and its git revision when the build set `HERALD_GIT_SHA`.
const VERSION: &str = env!("CARGO_PKG_VERSION");
const GIT_SHA: Option<&str> = option_env!("HERALD_GIT_SHA");

/// The parts of a running node the HTTP side reads.
#[derive(Debug)]
pub(crate) struct Health {
    pub(crate) router: Router,
    pub(crate) service: Option<Arc<Service>>,
    pub(crate) keys: SharedKeyStatus,
    /// Whether the config names peers to hear from (unicast peers or a multicast group).
    pub(crate) peers_configured: bool,
    /// The number of unicast peers the config names (UDP and TCP).
    pub(crate) unicast_peers: usize,
    /// The NATS transport's connection, when the config has `[nats]`.
    #[cfg(feature = "nats")]
    pub(crate) nats: Option<NatsLink>,
}

/// What readiness looks at of a NATS transport.
#[cfg(feature = "nats")]
#[derive(Debug)]
pub(crate) struct NatsLink {
    /// The transport's counters (its connection state among them).
    pub(crate) stats: herald::transport::NatsStats,
    /// Whether NATS is the node's only transport: then a lost connection cuts the node off.
    pub(crate) only_transport: bool,
}

impl Health {
    /// The reply for a `GET` of `path`.
    pub(crate) fn reply(&self, path: &str) -> Reply {
        match path {
            "/metrics" => Reply {
                status: 200,
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                body: self.metrics(),
            },
            "/healthz" if self.router.is_running() => Reply::text(200, "ok\n"),
            "/healthz" => Reply::text(
                503,
                "the node's driver has stopped (see the log): restart the process\n",
            ),
            "/readyz" => match self.readiness() {
                Ok(text) => Reply::text(200, text),
                Err(text) => Reply::text(503, text),
            },
            "/members" => match crate::members::members_json(&self.router) {
                Some(body) => Reply {
                    status: 200,
                    content_type: "application/json",
                    body,
                },
                None => Reply::text(
                    404,
                    "membership is off: add a [membership] section to the node's config\n",
                ),
            },
            _ => Reply::text(404, "not found: try /metrics, /healthz or /readyz\n"),
        }
    }

    /// Ready: the router runs (its sockets are bound: it would not have started otherwise),
    /// the secret file's keys are in use, a peer has been heard, or none is configured, and
    /// the NATS client is connected when NATS is the node's only transport.
    /// `Ok` or `Err` holds the text to answer, one line per check.
    fn readiness(&self) -> Result<String, String> {
        let mut ready = true;
        let mut text = String::new();
        let keys = keys::read(&self.keys);
        match &keys.error {
            None => {
                let _ = writeln!(
                    text,
                    "keys: ok (ids {}, signing with {})",
                    keys.ids_text(),
                    keys.signing
                );
            }
            Some(e) => {
                ready = false;
                let _ = writeln!(text, "keys: not ready: {e}");
            }
        }
        if self.router.is_running() {
            let _ = writeln!(text, "sockets: bound, node running");
        } else {
            ready = false;
            let _ = writeln!(text, "sockets: not ready: the node's driver has stopped");
        }
        let heard = self.router.senders_heard();
        if heard > 0 {
            let _ = writeln!(text, "peers: {heard} heard");
        } else if self.peers_configured {
            ready = false;
            let _ = writeln!(
                text,
                "peers: not ready: no peer heard yet (are they running, with the same cluster \
                 and secret?)"
            );
        } else {
            let _ = writeln!(text, "peers: none configured");
        }
        #[cfg(feature = "nats")]
        if let Some(nats) = &self.nats {
            ready &= nats_readiness(nats, &mut text);
        }
        if ready { Ok(text) } else { Err(text) }
    }

    /// The router's and the service's counters, and the node's gauges.
    fn metrics(&self) -> String {
        let mut text = self.router.metrics().to_prometheus();
        if let Some(s) = &self.service {
            text.push_str(&s.metrics().to_prometheus());
        }
        let revision = GIT_SHA.unwrap_or("unknown");
        let _ = writeln!(
            text,
            "# HELP herald_build_info The herald build this node runs (the value is always 1).\n\
             # TYPE herald_build_info gauge\n\
             herald_build_info{{version=\"{VERSION}\",revision=\"{revision}\"}} 1"
        );
        let _ = writeln!(
            text,
            "# HELP herald_sender_sessions Other nodes this node keeps a session for (it \
             verified a frame from them; silent ones included until they are forgotten).\n\
             # TYPE herald_sender_sessions gauge\n\
             herald_sender_sessions {}\n\
             # HELP herald_peers_configured Unicast peers in the config (udp.peers and \
             tcp.peers).\n\
             # TYPE herald_peers_configured gauge\n\
             herald_peers_configured {}",
            self.router.senders_heard(),
            self.unicast_peers
        );
        let keys = keys::read(&self.keys);
        let _ = writeln!(
            text,
            "# HELP herald_signing_key_id The key id this node signs with.\n\
             # TYPE herald_signing_key_id gauge\n\
             herald_signing_key_id {}\n\
             # HELP herald_secret_file_ok 1 if the secret file's last load succeeded, else 0 \
             (the node keeps the keys it had).\n\
             # TYPE herald_secret_file_ok gauge\n\
             herald_secret_file_ok {}",
            keys.signing,
            u8::from(keys.error.is_none())
        );
        text
    }
}

/// Writes the NATS line of `/readyz`; false when the node is cut off: NATS is its only
/// transport and the client is not connected to any server.
#[cfg(feature = "nats")]
fn nats_readiness(nats: &NatsLink, text: &mut String) -> bool {
    let stats = &nats.stats;
    if stats.connected() {
        let _ = writeln!(
            text,
            "nats: connected (reconnections so far: {})",
            stats.reconnects()
        );
        return true;
    }
    let reason = "not connected to any server of nats.servers; the client reconnects with \
                  backoff (are the servers running and reachable?)";
    if nats.only_transport {
        let _ = writeln!(
            text,
            "nats: not ready: {reason}; NATS is this node's only transport, so it can neither \
             send nor receive"
        );
        false
    } else {
        let _ = writeln!(text, "nats: {reason}; frames still travel over UDP/TCP");
        true
    }
}
