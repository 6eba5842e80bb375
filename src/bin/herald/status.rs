//! `herald status`: the running node as it sees itself and the cluster: who it is, what it
//! counted, and each source of frames it hears (alive, rejected with the reason and a hint,
//! or silent). Asked of the node through its control socket.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use herald::Router;
use serde::{Deserialize, Serialize};

use crate::CliError;
use crate::common::{self, ConfigArgs};
use crate::control::{self, Request};

/// Arguments of `herald status`.
#[derive(Debug, clap::Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Print the node's JSON answer (ids as strings).
    #[arg(long)]
    json: bool,
}

/// The node's answer.
#[cfg_attr(not(unix), allow(dead_code))]
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct StatusReply {
    /// Its node id (a string: ids go above 2^53).
    pub(crate) node: String,
    pub(crate) cluster: String,
    pub(crate) version: String,
    pub(crate) uptime_s: u64,
    /// Where it listens (`udp 0.0.0.0:7700`, `service 127.0.0.1:6380`, ...).
    pub(crate) listen: Vec<String>,
    /// Whom it sends to, as configured.
    pub(crate) sends_to: Vec<String>,
    pub(crate) keys: String,
    pub(crate) signing_key: u32,
    pub(crate) fingerprints: String,
    pub(crate) events_raised: u64,
    pub(crate) events_delivered: u64,
    pub(crate) missed: u64,
    pub(crate) frames_dropped: u64,
    pub(crate) send_errors: u64,
    /// Every source of frames heard, most recent first.
    pub(crate) peers: Vec<PeerRow>,
    /// Configured UDP peers nothing has come from.
    pub(crate) never_heard: Vec<String>,
    #[serde(skip)]
    pub(crate) started: Option<Instant>,
    #[serde(skip)]
    pub(crate) udp_peers: Vec<SocketAddr>,
}

/// One source of frames.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct PeerRow {
    pub(crate) transport: String,
    pub(crate) addr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) node: Option<String>,
    /// `alive`, `rejected` or `silent`.
    pub(crate) state: String,
    pub(crate) last_heard_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) last_accepted_ms: Option<u64>,
    pub(crate) accepted: u64,
    /// Frames dropped by reason (only reasons that occurred).
    pub(crate) drops: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) hint: Option<String>,
}

/// Fills in the live parts of the answer.
#[cfg_attr(not(unix), allow(dead_code))]
pub(crate) fn fill(reply: &mut StatusReply, router: &Router) {
    let m = router.metrics();
    reply.node = router.node_id().to_string();
    reply.version = env!("CARGO_PKG_VERSION").to_owned();
    reply.uptime_s = reply.started.map_or(0, |s| s.elapsed().as_secs());
    reply.events_raised = m.raised;
    reply.events_delivered = m.events_delivered;
    reply.missed = m.missed_total();
    reply.frames_dropped = m.drops_total();
    reply.send_errors = m.send_errors;
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let peers = router.peers();
    reply.never_heard = reply
        .udp_peers
        .iter()
        .filter(|a| {
            !peers
                .iter()
                .any(|p| p.addr == herald::transport::PeerAddr::Socket(**a))
        })
        .map(|a| format!("udp {a}"))
        .collect();
    reply.peers = peers
        .into_iter()
        .map(|p| PeerRow {
            transport: p.transport.clone(),
            addr: control::peer_addr_text(&p.addr),
            node: p.node.map(|n| n.to_string()),
            state: p.state.name().to_owned(),
            last_heard_ms: ms(p.last_heard),
            last_accepted_ms: p.last_accepted.map(ms),
            accepted: p.accepted,
            drops: p.drops.iter().map(|(r, n)| ((*r).to_owned(), *n)).collect(),
            hint: p.hint.map(str::to_owned),
        })
        .collect();
}

pub(crate) fn run(args: &StatusArgs) -> Result<(), CliError> {
    let (config, _) = common::load(&args.config)?;
    let path = control::socket_path(&config, &args.config.config);
    let Some(client) = control::Client::connect(&path)? else {
        return Err(CliError::usage(format!(
            "no node answers at {} (the control socket of a node running with {}); start \
             it with `herald node --config {}`",
            path.display(),
            args.config.config.display(),
            args.config.config.display()
        )));
    };
    let line = client.call(&Request::Status)?;
    if args.json {
        print!("{line}");
        return Ok(());
    }
    let s: StatusReply = serde_json::from_str(&line)
        .map_err(|e| CliError::usage(format!("the node answered something else: {e}")))?;
    say!(
        "node {} of cluster {:?}, herald {}, up {}",
        s.node,
        s.cluster,
        s.version,
        uptime(s.uptime_s)
    );
    say!(
        "keys {} (signing {}), fingerprints {}",
        s.keys,
        s.signing_key,
        s.fingerprints
    );
    say!("listens on {}", or_none(&s.listen));
    say!("sends to   {}", or_none(&s.sends_to));
    say!(
        "events raised {}, delivered {}; missed notices {}; frames dropped {}; send errors {}",
        s.events_raised,
        s.events_delivered,
        s.missed,
        s.frames_dropped,
        s.send_errors
    );
    say!("");
    say!(
        "{:<9} {:<22} {:<20} {:<9} {:>11} {:>10}  DROPS",
        "TRANSPORT",
        "FROM",
        "NODE",
        "STATE",
        "LAST HEARD",
        "ACCEPTED"
    );
    for p in &s.peers {
        let drops = if p.drops.is_empty() {
            "-".to_owned()
        } else {
            p.drops
                .iter()
                .map(|(r, n)| format!("{r} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        say!(
            "{:<9} {:<22} {:<20} {:<9} {:>11} {:>10}  {drops}",
            p.transport,
            p.addr,
            p.node.as_deref().unwrap_or("-"),
            p.state,
            format!("{:.1} s ago", p.last_heard_ms as f64 / 1000.0),
            p.accepted
        );
        if let Some(h) = &p.hint {
            say!("          hint: {h}");
        }
    }
    if s.peers.is_empty() {
        say!("(nothing heard from any other node yet)");
    }
    for n in &s.never_heard {
        say!("never heard from configured peer {n}");
    }
    Ok(())
}

fn or_none(v: &[String]) -> String {
    if v.is_empty() {
        "nothing".to_owned()
    } else {
        v.join(", ")
    }
}

fn uptime(s: u64) -> String {
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, s / 60 % 60),
    }
}
