//! `herald raise`: raise one event (or a counted series) cluster-wide, then exit.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use herald::EventId;

use crate::CliError;
use crate::common::{self, ConfigArgs};

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
}

fn parse_hex(s: &str) -> Result<Vec<u8>, CliError> {
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
    common::init_logging(&config, args.config.log_format);
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
    // Run as a sender of its own beside the node: its own node id, no listening.
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
                    return Err(CliError::usage(format!(
                        "{e}; the payload may be at most {} bytes (raise max_frame_len in the config for more)",
                        router.max_payload()
                    )));
                }
            }
        }
    }
    // TCP peers connect in the background: give them a moment before the goodbye.
    if config.tcp.is_some() {
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    router.shutdown();
    let m = router.metrics();
    say!(
        "raised {} × {} ({} frame(s) sent)",
        args.count,
        args.event,
        m.frames_sent
    );
    Ok(())
}
