//! `herald raise`: raise one event (or a counted series) cluster-wide, then exit.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use herald::EventId;

use crate::CliError;
use crate::common::{self, ConfigArgs};
use crate::control;

/// Arguments of `herald raise`.
#[derive(Debug, clap::Args)]
pub(crate) struct RaiseArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// The event's name.
    #[arg(long, value_name = "NAME")]
    event: String,
    /// The payload as text.
    #[arg(long, value_name = "TEXT", conflicts_with_all = ["payload_hex", "stdin"])]
    payload: Option<String>,
    /// The payload as hex digits.
    #[arg(long, value_name = "HEX", conflicts_with = "stdin")]
    payload_hex: Option<String>,
    /// Read the payload from standard input.
    #[arg(value_name = "-", value_parser = clap::builder::PossibleValuesParser::new(["-"]))]
    stdin: Option<String>,
    /// Raise the event this many times; with `--count`, each payload ends with the 8-byte
    /// little-endian index (for load tests and audits).
    #[arg(long, default_value_t = 1, value_name = "N")]
    count: u64,
    /// Send as this node id (default: a fresh id per run, so `raise` never collides with the
    /// node it runs beside). Setting it makes a second run a restart of the same node.
    #[arg(long, value_name = "ID")]
    node_id: Option<u64>,
    /// With `--count`: at most this many events per second (default: as fast as the ring
    /// takes them).
    #[arg(long, value_name = "EVENTS_PER_SEC")]
    rate: Option<u64>,
    /// How long to wait for the receivers to acknowledge the events, in milliseconds.
    #[arg(long, default_value_t = 2000, value_name = "MS")]
    wait_ms: u64,
    /// Print the outcome as one JSON object (ids as strings).
    #[arg(long)]
    json: bool,
}

pub(crate) fn parse_hex(s: &str) -> Result<Vec<u8>, CliError> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(CliError::usage(
            "--payload-hex: give an even number of hex digits, such as 00ff10",
        ));
    }
    Ok((0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap_or(0))
        .collect())
}

/// An ephemeral address on the same side as `bind`, so `raise` can run beside the node.
fn ephemeral(bind: SocketAddr) -> SocketAddr {
    let ip = match bind.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        ip => ip,
    };
    SocketAddr::new(ip, 0)
}

pub(crate) fn run(args: &RaiseArgs) -> Result<(), CliError> {
    let (mut config, dir) = common::load(&args.config)?;
    let payload = match (&args.payload, &args.payload_hex, &args.stdin) {
        (Some(t), _, _) => t.clone().into_bytes(),
        (_, Some(h), _) => parse_hex(h)?,
        (_, _, Some(_)) => {
            let mut v = Vec::new();
            std::io::stdin()
                .read_to_end(&mut v)
                .map_err(|e| CliError::usage(format!("cannot read the payload from stdin: {e}")))?;
            v
        }
        _ => Vec::new(),
    };
    let path = control::socket_path(&config, &args.config.config);
    if args.node_id.is_none()
        && let Some(client) = control::Client::connect(&path)?
    {
        let line = client.call(&control::Request::Raise(control::RaiseRequest {
            event: args.event.clone(),
            payload_hex: payload.iter().map(|b| format!("{b:02x}")).collect(),
            count: args.count,
            rate: args.rate,
            wait_ms: args.wait_ms,
            want_ack: peers_configured(&config),
        }))?;
        let reply: control::RaiseReply = serde_json::from_str(&line)
            .map_err(|e| CliError::usage(format!("the node answered something else: {e}")))?;
        return report(args, &reply, true, peers_configured(&config));
    }
    common::init_logging(&config, args.config.log_format);
    // No node runs with this config: a sender of its own, with its own node id and no
    // listening (unless --node-id makes it that node).
    config.node_id = args.node_id;
    if let Some(udp) = &mut config.udp {
        let bind = match &udp.bind {
            Some(a) => a
                .resolve()
                .map_err(|e| CliError::usage(format!("udp.bind: cannot resolve {a}: {e}")))?,
            None => SocketAddr::from(([0, 0, 0, 0], 0)),
        };
        udp.bind = Some(ephemeral(bind).into());
        if let Some(m) = udp.multicast.take() {
            udp.peers.push(SocketAddr::V4(m.group).into());
            udp.bind = Some(SocketAddr::new(IpAddr::V4(m.interface), 0).into());
        }
    }
    if let Some(tcp) = &mut config.tcp {
        tcp.listen = None;
    }
    let builder = common::router_builder(&config, &args.config.config)?;
    let builder = common::with_secret(builder, &config, &dir)?;
    let router = common::build(builder)?;
    let event = router.event(EventId::from_name(&args.event));
    let mut buf = payload.clone();
    let started = std::time::Instant::now();
    let mut reply = control::RaiseReply::default();
    for i in 0..args.count {
        if let Some(rate) = args.rate.filter(|r| *r > 0) {
            let due = started + std::time::Duration::from_secs_f64(i as f64 / rate as f64);
            if let Some(wait) = due.checked_duration_since(std::time::Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        if args.count > 1 {
            buf.truncate(payload.len());
            buf.extend_from_slice(&i.to_le_bytes());
        }
        loop {
            match event.raise(&buf) {
                Ok(()) => break,
                Err(herald::RaiseError::Full) => {
                    std::thread::sleep(std::time::Duration::from_micros(100))
                }
                Err(e) => {
                    router.shutdown();
                    return Err(CliError::usage(format!(
                        "{e}; the payload may be at most {} bytes (raise max_frame_len in the config for more)",
                        router.max_payload()
                    )));
                }
            }
        }
        reply.accepted += 1;
    }
    // A sender of its own does not listen on TCP: TCP peers cannot acknowledge to it.
    let can_hear = peers_configured(&config)
        && (config.udp.is_some() || config.nats.is_some() || config.membership.is_some());
    let flushed = control::flush_for_report(
        &router,
        std::time::Duration::from_millis(args.wait_ms),
        can_hear,
    );
    reply.flushed = control::FlushReport::from(&flushed);
    router.shutdown();
    report(args, &reply, false, can_hear)
}

/// Whether the config names anyone to send to.
fn peers_configured(config: &herald::Config) -> bool {
    config
        .udp
        .as_ref()
        .is_some_and(|u| !u.peers.is_empty() || u.multicast.is_some())
        || config.tcp.as_ref().is_some_and(|t| !t.peers.is_empty())
        || config.nats.is_some()
        || config.membership.is_some()
}

/// Says what happened; an error (exit status 1) when events were refused, or when peers
/// are configured and not one receiver acknowledged, or some did not in time.
fn report(
    args: &RaiseArgs,
    reply: &control::RaiseReply,
    through_node: bool,
    peers_configured: bool,
) -> Result<(), CliError> {
    if let Some(e) = &reply.error {
        return Err(CliError::usage(format!(
            "raise --event {}: {e}",
            args.event
        )));
    }
    let f = &reply.flushed;
    let list = |v: &[control::Receiver]| {
        v.iter()
            .map(|r| match &r.addr {
                Some(a) => format!("node {} ({a})", r.node),
                None => format!("node {}", r.node),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    if args.json {
        crate::json::print(reply);
    } else {
        say!(
            "raised {} × {} {}: {} accepted, {} refused (ring full); frames up to #{} {}",
            args.count,
            args.event,
            if through_node {
                "through the running node"
            } else {
                "as a sender of its own (no node runs with this config)"
            },
            reply.accepted,
            reply.refused,
            f.sequence,
            if f.sent { "sent" } else { "not all sent yet" }
        );
        if !f.acknowledged.is_empty() {
            say!("acknowledged by {}", list(&f.acknowledged));
        }
        if !f.behind.is_empty() {
            say!(
                "NOT acknowledged within {} ms by {}",
                args.wait_ms,
                list(&f.behind)
            );
        }
    }
    if reply.refused > 0 {
        return Err(CliError::usage(format!(
            "{} event(s) refused: the node's ring stayed full (its peers are not keeping up: \
             see `herald status`)",
            reply.refused
        )));
    }
    if !f.behind.is_empty() || !f.sent {
        return Err(CliError::usage(format!(
            "not every receiver acknowledged within {} ms (see `herald status`; --wait-ms \
             waits longer)",
            args.wait_ms
        )));
    }
    if peers_configured && f.acknowledged.is_empty() {
        return Err(CliError::usage(
            "no receiver acknowledged: no peer is listening, or recovery is off on them (see \
             `herald status`)",
        ));
    }
    Ok(())
}
