//! `herald tail`: join the cluster and print each event and each Missed as it arrives.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use herald::EventId;

use crate::CliError;
use crate::common::{self, ConfigArgs};
use crate::json;

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

pub(crate) fn run_tail(args: &TailArgs) -> Result<(), CliError> {
    let (config, dir) = common::load(&args.config)?;
    let path = crate::control::socket_path(&config, &args.config.config);
    if let Some(client) = crate::control::Client::connect(&path)? {
        return tail_through(client, args);
    }
    common::init_logging(&config, args.config.log_format);
    eprintln!(
        "herald tail: no node answers at {} (the control socket of a node running with this \
         config): joining the cluster as a node of its own",
        path.display()
    );
    // A person reading a tail wants every event: let it queue far more than a node does,
    // about a million events while the terminal or pipe catches up (it still never slows the
    // sockets; past this it reports local_overflow, or a LOST line for its own channel).
    let builder = common::router_builder(&config, &args.config.config)?
        .dispatch_queue(1 << 16)
        .channel_capacity(1 << 20);
    let builder = common::with_secret(builder, &config, &dir)?;
    let router = common::build(builder)?;
    let names = Names::default();
    names.learn(&args.event);
    let stop = common::stop_flag()?;
    stream(
        &router,
        &names,
        &args.event,
        args.json,
        &mut |line| {
            say!("{line}");
            true
        },
        &|| !stop.load(Ordering::Relaxed),
    );
    router.shutdown();
    Ok(())
}

/// `herald tail` beside a running node: the node streams the lines, this prints them.
#[cfg(unix)]
fn tail_through(client: crate::control::Client, args: &TailArgs) -> Result<(), CliError> {
    use std::io::BufRead as _;
    let reader = client.ask(&crate::control::Request::Tail {
        events: args.event.clone(),
        json: args.json,
    })?;
    for line in reader.lines() {
        match line {
            Ok(line) => say!("{line}"),
            Err(e) => return Err(CliError::usage(format!("the node's control socket: {e}"))),
        }
    }
    Err(CliError::usage(
        "the node stopped (its control socket closed)",
    ))
}

#[cfg(not(unix))]
fn tail_through(_client: crate::control::Client, _args: &TailArgs) -> Result<(), CliError> {
    Err(CliError::usage("no control socket on this platform"))
}

/// Event names a node has learned (it hears only ids): from the names tools raise and
/// tail through its control socket. Bounded; shared between the socket's clients.
#[derive(Clone, Default)]
pub(crate) struct Names(Arc<RwLock<HashMap<EventId, String>>>);

impl Names {
    /// The most names kept, and the longest.
    const MAX: usize = 10_000;
    const MAX_LEN: usize = 1024;

    pub(crate) fn learn(&self, names: &[String]) {
        let mut map = self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for n in names.iter().filter(|n| n.len() <= Self::MAX_LEN) {
            if map.len() >= Self::MAX {
                map.clear();
            }
            map.insert(EventId::from_name(n), n.clone());
        }
    }

    fn name(&self, id: &EventId) -> Option<String> {
        let map = self
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(id).cloned()
    }
}

/// What the tail's subscriptions hand over, in the library's order.
enum Item {
    Event(herald::Message),
    Missed(herald::Missed),
}

/// Streams events (only `filter`'s when it names any), Missed notices and membership
/// changes as lines to `out`, in the order the library delivers them, until `out` returns
/// false or `alive` does (asked at least every 200 ms).
pub(crate) fn stream(
    router: &herald::Router,
    names: &Names,
    filter: &[String],
    json: bool,
    out: &mut dyn FnMut(&str) -> bool,
    alive: &dyn Fn() -> bool,
) {
    let wanted: Vec<EventId> = filter.iter().map(|n| EventId::from_name(n)).collect();
    // One channel for both, fed on the dispatcher thread (and by local raises): a Missed
    // comes after the events of the frames before it, as the library delivers them.
    // At most about a million items wait while the output catches up; past that, events
    // are counted and said in a LOST line.
    const MAX_QUEUED: usize = 1 << 20;
    let (tx, rx) = crossbeam_channel::unbounded::<Item>();
    let lost = Arc::new(AtomicU64::new(0));
    let push = {
        let (tx, lost) = (tx.clone(), Arc::clone(&lost));
        move |item: Item| {
            if tx.len() >= MAX_QUEUED || tx.send(item).is_err() {
                lost.fetch_add(1, Ordering::Relaxed);
            }
        }
    };
    drop(tx);
    let push_event = push.clone();
    let _events = router.subscribe_all(move |d| {
        if wanted.is_empty() || wanted.contains(&d.event()) {
            push_event(Item::Event(d.to_message()));
        }
    });
    let _missed = router.on_missed(move |m| push(Item::Missed(m.clone())));
    // With [membership]: joins, leaves, failures, suspicions and refutations too.
    let members_rx = router.member_events();
    // Who was already there (changes before the subscription are not sent again).
    for m in router.members() {
        if m.node != router.node_id()
            && !out(&format_member(
                "present",
                m.node,
                m.incarnation,
                m.addr,
                json,
            ))
        {
            return;
        }
    }
    let mut asked = router.metrics().recovery("naks_sent");
    let mut looked = std::time::Instant::now();
    while alive() {
        // Frames lost on the way here and sent again on request: said once a second at most.
        if looked.elapsed() >= Duration::from_secs(1) {
            looked = std::time::Instant::now();
            let now_asked = router.metrics().recovery("naks_sent");
            if now_asked > asked {
                if !out(&format_recovered(now_asked - asked, json)) {
                    return;
                }
                asked = now_asked;
            }
        }
        let line = crossbeam_channel::select! {
            recv(rx) -> item => match item {
                Ok(Item::Event(m)) => Some(format_event(&m, names.name(&m.event).as_deref(), json)),
                Ok(Item::Missed(m)) => Some(format_missed(&m, names, json)),
                Err(_) => return,
            },
            recv(members_rx) -> e => e.ok().map(|e| {
                format_member(change_name(e.kind), e.node, e.incarnation, e.addr, json)
            }),
            default(Duration::from_millis(200)) => None,
        };
        let dropped = lost.swap(0, Ordering::Relaxed);
        if dropped > 0 && !out(&format_lost(dropped, json)) {
            return;
        }
        if let Some(line) = line
            && !out(&line)
        {
            return;
        }
    }
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

fn format_event(m: &herald::Message, name: Option<&str>, json: bool) -> String {
    let event = name.map_or_else(|| m.event.to_string(), str::to_owned);
    let text = as_text(&m.payload);
    if json {
        json::line(&json::TailEvent {
            time: &now_rfc3339(),
            kind: "event",
            node: m.node,
            incarnation: m.frame.0,
            event: &event,
            sequence: m.frame.1,
            payload: text,
            payload_hex: text.is_none().then(|| hex(&m.payload)),
        })
    } else {
        let payload = text.map_or_else(|| format!("0x{}", hex(&m.payload)), |t| format!("{t:?}"));
        format!("{} node {} {event} {payload}", now_rfc3339(), m.node)
    }
}

/// A line for events this tail dropped itself because it could not print them fast enough.
fn format_lost(count: u64, json: bool) -> String {
    if json {
        json::line(&json::TailLost {
            time: &now_rfc3339(),
            kind: "lost",
            count,
            reason: "tail_too_slow",
        })
    } else {
        format!(
            "{} LOST {count} events: this tail fell behind (its output is read too slowly)",
            now_rfc3339()
        )
    }
}

fn change_name(kind: herald::membership::MemberEventKind) -> &'static str {
    use herald::membership::MemberEventKind;
    match kind {
        MemberEventKind::Joined => "joined",
        MemberEventKind::Left => "left",
        MemberEventKind::Failed => "failed",
        MemberEventKind::Suspect => "suspect",
        MemberEventKind::Alive => "refuted",
    }
}

fn format_member(
    what: &str,
    node: u64,
    incarnation: u64,
    addr: Option<std::net::SocketAddr>,
    json: bool,
) -> String {
    let addr = addr.map(|a| a.to_string());
    if json {
        json::line(&json::TailMember {
            time: &now_rfc3339(),
            kind: "member",
            change: what,
            node,
            incarnation,
            addr,
        })
    } else {
        format!(
            "{} MEMBER {what}: node {} at {}",
            now_rfc3339(),
            node,
            addr.as_deref().unwrap_or("-")
        )
    }
}

/// A Missed line: the lost frames, and the events they carried when the sender still knew
/// them (by name where this tail was given the name, else by id).
fn format_missed(m: &herald::Missed, names: &Names, json: bool) -> String {
    let events: Option<Vec<String>> = m.events.as_ref().map(|ids| {
        ids.iter()
            .map(|id| names.name(id).unwrap_or_else(|| id.to_string()))
            .collect()
    });
    if json {
        json::line(&json::TailMissed {
            time: &now_rfc3339(),
            kind: "missed",
            node: m.node,
            incarnation: m.incarnation,
            reason: m.reason.name(),
            range: m.range.map(|(a, b)| [a, b]),
            events,
        })
    } else {
        let range = m.range.map(|(a, b)| format!("{a}..={b}"));
        let scope = events.map_or_else(
            || " (events unknown: drop whatever came from that node)".to_owned(),
            |e| format!(" events {}", e.join(", ")),
        );
        format!(
            "{} MISSED from node {} ({}){}{scope}",
            now_rfc3339(),
            m.node,
            m.reason,
            range.map(|r| format!(" frames {r}")).unwrap_or_default()
        )
    }
}

/// A line when this node recovered lost frames since the last such line: frames the senders
/// sent again after it asked (none of them became a Missed).
fn format_recovered(asked: u64, json: bool) -> String {
    if json {
        json::line(&json::TailRecovered {
            time: &now_rfc3339(),
            kind: "recovered",
            requests: asked,
        })
    } else {
        format!(
            "{} RECOVERED lost frames: asked senders {asked} time(s) to send them again",
            now_rfc3339()
        )
    }
}
