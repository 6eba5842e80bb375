//! `herald node` and `herald tail`: run a node until SIGINT or SIGTERM.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use herald::service::Service;
use herald::{EventId, Router};

use crate::CliError;
use crate::common::{self, ConfigArgs};

/// Arguments of `herald node`.
#[derive(Debug, clap::Args)]
pub(crate) struct NodeArgs {
    #[command(flatten)]
    config: ConfigArgs,
}

/// Arguments of `herald tail`.
#[derive(Debug, clap::Args)]
pub(crate) struct TailArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Only this event (by name); repeat for several. Default: every event.
    #[arg(long, value_name = "NAME")]
    event: Vec<String>,
    /// One JSON object per line instead of text.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run_node(args: &NodeArgs) -> Result<(), CliError> {
    let (config, dir) = common::load(&args.config)?;
    common::init_logging(&config, args.config.log_format);
    let builder = common::with_secret(config.router_builder(), &config, &dir, true)?;
    let service_config = config.service_config(&dir).map_err(CliError::usage)?;
    let router = common::build(builder)?;
    // Before anything a client can see, so a SIGTERM right after the first connection
    // still stops the node cleanly.
    let stop = common::stop_flag()?;
    let service = match service_config {
        Some(c) => Some(Arc::new(Service::start(&router, c).map_err(|e| {
            CliError::usage(format!(
                "{e}; change [service] in the config (or free the port)"
            ))
        })?)),
        None => None,
    };
    if let Some(m) = &config.metrics {
        serve_metrics(m.listen, router.clone(), service.clone())?;
    }
    tracing::info!(node = router.node_id(), cluster = %config.cluster, "node running");
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
    }
    tracing::info!("stopping: flushing and saying goodbye");
    if let Some(s) = &service {
        s.shutdown();
    }
    router.shutdown();
    Ok(())
}

pub(crate) fn run_tail(args: &TailArgs) -> Result<(), CliError> {
    let (config, dir) = common::load(&args.config)?;
    common::init_logging(&config, args.config.log_format);
    // A person reading a tail wants every event: let it queue far more than a node does,
    // about a million events while the terminal or pipe catches up (it still never slows the
    // sockets; past this it reports local_overflow, or a LOST line for its own channel).
    let builder = config
        .router_builder()
        .dispatch_queue(1 << 16)
        .channel_capacity(1 << 20);
    let builder = common::with_secret(builder, &config, &dir, false)?;
    let router = common::build(builder)?;
    let names: Vec<(EventId, String)> = args
        .event
        .iter()
        .map(|n| (EventId::from_name(n), n.clone()))
        .collect();
    let json = args.json;
    let (_events, rx) = router.receiver_all();
    let (_missed, missed_rx) = router.missed_receiver();
    let stop = common::stop_flag()?;
    while !stop.load(Ordering::Relaxed) {
        crossbeam_channel::select! {
            recv(rx) -> m => if let Ok(m) = m {
                if m.lost_before > 0 {
                    // This process printed too slowly and its queue overflowed.
                    say!("{}", format_lost(m.lost_before, json));
                }
                let name = names.iter().find(|(id, _)| *id == m.event).map(|(_, n)| n.as_str());
                if !names.is_empty() && name.is_none() {
                    continue;
                }
                say!("{}", format_event(&m, name, json));
            },
            recv(missed_rx) -> m => if let Ok(m) = m {
                say!("{}", format_missed(&m, json));
            },
            default(Duration::from_millis(50)) => {}
        }
    }
    router.shutdown();
    Ok(())
}

fn now_rfc3339() -> String {
    // Seconds and milliseconds since the epoch, UTC, without a date library.
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, mo, da) = civil_from_days(days as i64);
    format!(
        "{y:04}-{mo:02}-{da:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Year, month, day of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Printable text, or `None` if the payload is not plain UTF-8 without control characters
/// (which could forge log lines).
fn as_text(payload: &[u8]) -> Option<&str> {
    std::str::from_utf8(payload)
        .ok()
        .filter(|s| !s.chars().any(char::is_control))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn format_event(m: &herald::Message, name: Option<&str>, json: bool) -> String {
    let event = name.map_or_else(|| m.event.to_string(), str::to_owned);
    let text = as_text(&m.payload);
    if json {
        let payload = match text {
            Some(t) => format!("\"payload\":{}", json_string(t)),
            None => format!("\"payload_hex\":\"{}\"", hex(&m.payload)),
        };
        format!(
            "{{\"time\":\"{}\",\"type\":\"event\",\"node\":{},\"incarnation\":{},\"event\":{},\"sequence\":{},{payload}}}",
            now_rfc3339(),
            m.node,
            m.frame.0,
            json_string(&event),
            m.frame.1
        )
    } else {
        let payload = text.map_or_else(|| format!("0x{}", hex(&m.payload)), |t| format!("{t:?}"));
        format!("{} node {} {event} {payload}", now_rfc3339(), m.node)
    }
}

/// A line for events this tail dropped itself because it could not print them fast enough.
fn format_lost(count: u64, json: bool) -> String {
    if json {
        format!(
            "{{\"time\":\"{}\",\"type\":\"lost\",\"count\":{count},\"reason\":\"tail_too_slow\"}}",
            now_rfc3339()
        )
    } else {
        format!(
            "{} LOST {count} events: this tail fell behind (its output is read too slowly)",
            now_rfc3339()
        )
    }
}

fn format_missed(m: &herald::Missed, json: bool) -> String {
    let range = m.range.map(|(a, b)| format!("{a}..={b}"));
    if json {
        let range = m
            .range
            .map_or_else(|| "null".to_owned(), |(a, b)| format!("[{a},{b}]"));
        format!(
            "{{\"time\":\"{}\",\"type\":\"missed\",\"node\":{},\"incarnation\":{},\"reason\":\"{}\",\"range\":{range}}}",
            now_rfc3339(),
            m.node,
            m.incarnation,
            m.reason.name()
        )
    } else {
        format!(
            "{} MISSED from node {} ({}){}",
            now_rfc3339(),
            m.node,
            m.reason,
            range.map(|r| format!(" frames {r}")).unwrap_or_default()
        )
    }
}

/// Serves `GET /metrics` on `addr` from a thread of its own.
fn serve_metrics(
    addr: SocketAddr,
    router: Router,
    service: Option<Arc<Service>>,
) -> Result<(), CliError> {
    let listener = TcpListener::bind(addr).map_err(|e| {
        CliError::usage(format!(
            "metrics.listen {addr}: {e}; change metrics.listen in the config or free the port"
        ))
    })?;
    std::thread::Builder::new()
        .name("herald-metrics".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                let mut reader = BufReader::new(&conn);
                let mut request = String::new();
                if reader.read_line(&mut request).is_err() {
                    continue;
                }
                // Drain the headers.
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let (status, body) = if request.starts_with("GET /metrics ") {
                    let mut text = router.metrics().to_prometheus();
                    if let Some(s) = &service {
                        text.push_str(&s.metrics().to_prometheus());
                    }
                    ("200 OK", text)
                } else {
                    ("404 Not Found", "try GET /metrics\n".to_owned())
                };
                let mut w = &conn;
                let _ = write!(
                    w,
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        })
        .map_err(|e| CliError::usage(format!("cannot start the metrics thread: {e}")))?;
    Ok(())
}
