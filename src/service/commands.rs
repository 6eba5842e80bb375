//! The commands: what each does to a client's [`Session`] and the service's [`Index`], and
//! what it replies.

use std::ops::Range;
use std::time::Instant;

use super::conn::Session;
use super::index::{Index, shrink_map};
use super::introspect;
use super::metrics::{Counters, Disconnect};
use super::resp::Writer;
use super::{MISSED_CHANNEL, ServiceConfig, channel_event};
use crate::router::WeakRouter;

/// One command's arguments: ranges of the connection's input buffer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Args<'a> {
    pub(crate) buf: &'a [u8],
    pub(crate) ranges: &'a [Range<usize>],
}

impl<'a> Args<'a> {
    pub(crate) fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Argument `i`, or empty bytes past the end (callers check the count first).
    pub(crate) fn get(&self, i: usize) -> &'a [u8] {
        self.ranges
            .get(i)
            .and_then(|r| self.buf.get(r.clone()))
            .unwrap_or_default()
    }

    fn iter(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        (1..self.len()).map(|i| self.get(i))
    }
}

/// At most one log line a second for things clients do wrong, with the count since the last.
#[derive(Debug, Default)]
pub(crate) struct LogLimit {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimit {
    /// `Some(suppressed)` when a line may be logged now.
    pub(crate) fn allow(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|t| now.duration_since(t).as_secs() < 1)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// What the service needs to run a command for one client.
pub(crate) struct Ctx<'a> {
    pub(crate) index: &'a mut Index,
    pub(crate) router: &'a WeakRouter,
    pub(crate) config: &'a ServiceConfig,
    pub(crate) counters: &'a Counters,
    pub(crate) log: &'a mut LogLimit,
    pub(crate) token: usize,
    pub(crate) conn_id: u64,
    pub(crate) now: Instant,
    /// When the service started.
    pub(crate) started: Instant,
    /// This node's id.
    pub(crate) node: u64,
    /// The plain listener's port.
    pub(crate) port: u16,
}

/// Commands a RESP2 client may send while it is subscribed to something.
const SUBSCRIBED_MODE: &[&str] = &[
    "subscribe",
    "unsubscribe",
    "psubscribe",
    "punsubscribe",
    "ping",
    "quit",
    "reset",
];

/// Runs one command, writing its reply into `out`. `Some(reason)`: close the connection once
/// the reply is written.
pub(crate) fn execute(
    ctx: &mut Ctx<'_>,
    session: &mut Session,
    out: &mut Vec<u8>,
    args: Args<'_>,
) -> Option<Disconnect> {
    Counters::add(&ctx.counters.commands, 1);
    let mut name_buf = [0u8; 16];
    let raw = args.get(0);
    let name = match name_buf.get_mut(..raw.len()) {
        Some(buf) => {
            buf.copy_from_slice(raw);
            buf.make_ascii_lowercase();
            std::str::from_utf8(buf).unwrap_or("?")
        }
        None => "?",
    };
    let w = &mut Writer {
        out,
        resp3: session.resp3,
    };
    if !session.authed && !matches!(name, "auth" | "hello" | "quit") {
        w.error("NOAUTH Authentication required.");
        return None;
    }
    if session.count() > 0 && !session.resp3 && !SUBSCRIBED_MODE.contains(&name) {
        w.error(&format!(
            "ERR Can't execute '{}': only (P)SUBSCRIBE / (P)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
            printable(raw)
        ));
        return None;
    }
    let arity_ok = match name {
        "ping" => args.len() <= 2,
        "auth" => (2..=3).contains(&args.len()),
        "subscribe" | "psubscribe" => args.len() >= 2,
        "publish" => args.len() == 3,
        "client" => args.len() >= 2,
        "quit" | "reset" => args.len() == 1,
        "select" | "echo" => args.len() == 2,
        _ => true,
    };
    if !arity_ok {
        w.error(&format!(
            "ERR wrong number of arguments for '{name}' command"
        ));
        return None;
    }
    match name {
        "ping" => ping(session, w, args),
        "echo" => w.bulk(args.get(1)),
        // Pub/sub ignores the database; clients configured with `/0` in their URL select it.
        "select" => match args.get(1) {
            b"0" => w.simple("OK"),
            _ => w.error(
                "ERR DB index is out of range (herald has only database 0, and pub/sub ignores it)",
            ),
        },
        "auth" => {
            let (user, pass) = if args.len() == 3 {
                (Some(args.get(1)), args.get(2))
            } else {
                (None, args.get(1))
            };
            if auth(ctx, session, w, user, pass) {
                w.simple("OK");
            }
        }
        "hello" => hello(ctx, session, w, args),
        "subscribe" => subscribe(ctx, session, w, args),
        "unsubscribe" => unsubscribe(ctx, session, w, args),
        "psubscribe" => psubscribe(ctx, session, w, args),
        "punsubscribe" => punsubscribe(ctx, session, w, args),
        "publish" => publish(ctx, w, args),
        "client" => client(ctx, session, w, args),
        "info" => introspect::info(ctx, w, args),
        "command" => introspect::command(w, args),
        "quit" => {
            w.simple("OK");
            return Some(Disconnect::Quit);
        }
        "reset" => {
            forget_subscriptions(ctx.index, ctx.token, session);
            *session = Session {
                authed: ctx.config.password.is_none(),
                ..Session::default()
            };
            w.resp3 = false;
            w.simple("RESET");
        }
        _ => {
            Counters::add(&ctx.counters.unknown_commands, 1);
            let mut text = format!(
                "ERR unknown command '{}', with args beginning with:",
                printable(raw)
            );
            for a in args.iter().take(3) {
                text.push_str(&format!(" '{}'", printable(a)));
            }
            w.error(&text);
        }
    }
    None
}

/// Up to 64 bytes of a client's argument, for an error message.
pub(crate) fn printable(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(64)])
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Removes every subscription of a client from the service's index.
pub(crate) fn forget_subscriptions(index: &mut Index, token: usize, session: &Session) {
    for (channel, event) in &session.channels {
        index.release_name(*event, channel);
    }
    for event in session.by_event.keys() {
        index.remove_event(*event, token);
    }
    for pattern in index.patterns_of(token).to_vec() {
        index.remove_pattern(token, &pattern);
    }
    index.set_missed(token, false);
    index.session_bytes_changed(0, session.name_bytes());
}

fn ping(session: &Session, w: &mut Writer<'_>, args: Args<'_>) {
    if session.count() > 0 && !w.resp3 {
        w.array(2);
        w.bulk(b"pong");
        w.bulk(args.get(1));
    } else if args.len() == 2 {
        w.bulk(args.get(1));
    } else {
        w.simple("PONG");
    }
}

/// Checks a password; on failure writes the error reply and returns false.
fn auth(
    ctx: &mut Ctx<'_>,
    session: &mut Session,
    w: &mut Writer<'_>,
    user: Option<&[u8]>,
    pass: &[u8],
) -> bool {
    let Some(expected) = ctx.config.password.as_deref() else {
        w.error("ERR AUTH called without any password configured: set service.password in the config, or do not send AUTH");
        return false;
    };
    let user_ok = user.is_none_or(|u| u == b"default");
    if user_ok && same_secret(expected.as_bytes(), pass) {
        session.authed = true;
        return true;
    }
    Counters::add(&ctx.counters.auth_failures, 1);
    if let Some(suppressed) = ctx.log.allow(ctx.now) {
        tracing::warn!(client = ctx.conn_id, suppressed, "service: wrong password");
    }
    w.error("WRONGPASS invalid username-password pair or user is disabled.");
    false
}

/// Compares SHA-256 digests in constant time, so the time taken says nothing about the
/// password (not even its length).
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    let da = ring::digest::digest(&ring::digest::SHA256, a);
    let db = ring::digest::digest(&ring::digest::SHA256, b);
    da.as_ref()
        .iter()
        .zip(db.as_ref())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

fn hello(ctx: &mut Ctx<'_>, session: &mut Session, w: &mut Writer<'_>, args: Args<'_>) {
    let mut resp3 = session.resp3;
    if args.len() >= 2 {
        match args.get(1) {
            b"2" => resp3 = false,
            b"3" => resp3 = true,
            _ => {
                w.error("NOPROTO unsupported protocol version");
                return;
            }
        }
    }
    let mut i = 2;
    let mut name = None;
    while i < args.len() {
        let option = args.get(i).to_ascii_lowercase();
        if option == b"auth" && i + 2 < args.len() {
            if !auth(ctx, session, w, Some(args.get(i + 1)), args.get(i + 2)) {
                return;
            }
            i += 3;
        } else if option == b"setname" && i + 1 < args.len() {
            name = Some(args.get(i + 1).to_vec());
            i += 2;
        } else {
            w.error(&format!(
                "ERR syntax error in HELLO option '{}'",
                printable(args.get(i))
            ));
            return;
        }
    }
    if !session.authed {
        w.error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
        return;
    }
    if name.is_some() {
        session.name = name;
    }
    session.resp3 = resp3;
    w.resp3 = resp3;
    w.map(7);
    w.bulk(b"server");
    w.bulk(b"herald");
    w.bulk(b"version");
    w.bulk(env!("CARGO_PKG_VERSION").as_bytes());
    w.bulk(b"proto");
    w.integer(if resp3 { 3 } else { 2 });
    w.bulk(b"id");
    w.integer(i64::try_from(ctx.conn_id).unwrap_or(i64::MAX));
    w.bulk(b"mode");
    w.bulk(b"standalone");
    w.bulk(b"role");
    w.bulk(b"master");
    w.bulk(b"modules");
    w.array(0);
}

fn confirm(w: &mut Writer<'_>, kind: &[u8], channel: Option<&[u8]>, count: usize) {
    w.push(3);
    w.bulk(kind);
    match channel {
        Some(c) => w.bulk(c),
        None => w.null(),
    }
    w.integer(count as i64);
}

fn limit_reached(ctx: &Ctx<'_>, w: &mut Writer<'_>) {
    w.error(&format!(
        "ERR max_subscriptions_per_client ({}) reached: unsubscribe first, or raise service.max_subscriptions_per_client",
        ctx.config.max_subscriptions_per_client
    ));
}

/// Whether a channel name or pattern is within `service.max_name_len`; if not, writes the
/// error reply (the connection stays open).
fn name_fits(ctx: &Ctx<'_>, w: &mut Writer<'_>, what: &str, name: &[u8]) -> bool {
    if name.len() <= ctx.config.max_name_len {
        return true;
    }
    Counters::add(&ctx.counters.names_refused, 1);
    w.error(&format!(
        "ERR {what} is {} bytes, longer than service.max_name_len ({}): use a shorter name, or raise the limit",
        name.len(),
        ctx.config.max_name_len
    ));
    false
}

/// Whether `more` bytes of names fit the service-wide `service.name_memory_limit`; if not,
/// writes the error reply.
fn memory_fits(ctx: &Ctx<'_>, w: &mut Writer<'_>, more: usize) -> bool {
    if ctx.index.held_bytes().saturating_add(more) <= ctx.config.name_memory_limit {
        return true;
    }
    Counters::add(&ctx.counters.names_refused, 1);
    w.error(&format!(
        "ERR the service holds {} bytes of channel names and patterns, service.name_memory_limit is {}: unsubscribe elsewhere, or raise the limit",
        ctx.index.held_bytes(),
        ctx.config.name_memory_limit
    ));
    false
}

fn subscribe(ctx: &mut Ctx<'_>, session: &mut Session, w: &mut Writer<'_>, args: Args<'_>) {
    for channel in args.iter() {
        if channel == MISSED_CHANNEL.as_bytes() {
            if !session.missed && session.count() >= ctx.config.max_subscriptions_per_client {
                limit_reached(ctx, w);
                continue;
            }
            session.missed = true;
            ctx.index.set_missed(ctx.token, true);
        } else if !session.channels.contains_key(channel) {
            if !name_fits(ctx, w, "channel name", channel) {
                continue;
            }
            if session.count() >= ctx.config.max_subscriptions_per_client {
                limit_reached(ctx, w);
                continue;
            }
            // Kept twice in the session, once more in the index's names.
            if !memory_fits(ctx, w, 3 * channel.len()) {
                continue;
            }
            let Some(event) = channel_event(channel) else {
                w.error(
                    "ERR channel names must be UTF-8 (an event name, or an event id as a UUID)",
                );
                continue;
            };
            session.channels.insert(channel.to_vec(), event);
            let names = session.by_event.entry(event).or_default();
            if names.is_empty() {
                ctx.index.add_event(event, ctx.token);
            }
            names.push(channel.to_vec());
            ctx.index.hold_name(event, channel);
            ctx.index.session_bytes_changed(2 * channel.len(), 0);
        }
        confirm(w, b"subscribe", Some(channel), session.count());
    }
}

fn unsubscribe(ctx: &mut Ctx<'_>, session: &mut Session, w: &mut Writer<'_>, args: Args<'_>) {
    let mut channels: Vec<Vec<u8>> = args.iter().map(<[u8]>::to_vec).collect();
    if channels.is_empty() {
        channels.extend(session.channels.keys().cloned());
        if session.missed {
            channels.push(MISSED_CHANNEL.as_bytes().to_vec());
        }
        if channels.is_empty() {
            confirm(w, b"unsubscribe", None, session.count());
            return;
        }
    }
    for channel in channels {
        if channel == MISSED_CHANNEL.as_bytes() {
            session.missed = false;
            ctx.index.set_missed(ctx.token, false);
        } else if let Some(event) = session.channels.remove(&channel) {
            if let Some(names) = session.by_event.get_mut(&event) {
                names.retain(|n| *n != channel);
                if names.is_empty() {
                    session.by_event.remove(&event);
                    ctx.index.remove_event(event, ctx.token);
                }
            }
            ctx.index.release_name(event, &channel);
            ctx.index.session_bytes_changed(0, 2 * channel.len());
            shrink_map(&mut session.channels);
            shrink_map(&mut session.by_event);
        }
        confirm(w, b"unsubscribe", Some(&channel), session.count());
    }
}

fn psubscribe(ctx: &mut Ctx<'_>, session: &mut Session, w: &mut Writer<'_>, args: Args<'_>) {
    for pattern in args.iter() {
        let is_new = !ctx
            .index
            .patterns_of(ctx.token)
            .iter()
            .any(|p| **p == *pattern);
        if is_new {
            if !name_fits(ctx, w, "pattern", pattern) {
                continue;
            }
            if session.count() >= ctx.config.max_subscriptions_per_client {
                limit_reached(ctx, w);
                continue;
            }
            if !memory_fits(ctx, w, pattern.len()) {
                continue;
            }
            if ctx.index.add_pattern(ctx.token, pattern) {
                session.patterns += 1;
            }
        }
        confirm(w, b"psubscribe", Some(pattern), session.count());
    }
}

fn punsubscribe(ctx: &mut Ctx<'_>, session: &mut Session, w: &mut Writer<'_>, args: Args<'_>) {
    let patterns: Vec<Vec<u8>> = if args.len() == 1 {
        let all: Vec<Vec<u8>> = ctx
            .index
            .patterns_of(ctx.token)
            .iter()
            .map(|p| p.to_vec())
            .collect();
        if all.is_empty() {
            confirm(w, b"punsubscribe", None, session.count());
            return;
        }
        all
    } else {
        args.iter().map(<[u8]>::to_vec).collect()
    };
    for pattern in patterns {
        if ctx.index.remove_pattern(ctx.token, &pattern) {
            session.patterns = session.patterns.saturating_sub(1);
        }
        confirm(w, b"punsubscribe", Some(&pattern), session.count());
    }
}

fn publish(ctx: &mut Ctx<'_>, w: &mut Writer<'_>, args: Args<'_>) {
    let channel = args.get(1);
    if channel == MISSED_CHANNEL.as_bytes() {
        w.error("ERR herald:missed is reserved: herald publishes Missed notices there");
        return;
    }
    if !name_fits(ctx, w, "channel name", channel) {
        return;
    }
    let Some(event) = channel_event(channel) else {
        w.error("ERR channel names must be UTF-8 (an event name, or an event id as a UUID)");
        return;
    };
    ctx.index.learn_published(event, channel);
    let receivers = ctx.index.receivers(&event, &ctx.index.name_of(&event));
    // The service holds the router weakly, so that it never keeps alive a node its owner
    // dropped.
    let Some(router) = ctx.router.upgrade() else {
        w.error("ERR the node is shutting down");
        return;
    };
    match router.event(event).raise(args.get(2)) {
        Ok(()) => w.integer(receivers as i64),
        Err(e) => w.error(&format!("ERR {e}")),
    }
}

fn client(ctx: &mut Ctx<'_>, session: &mut Session, w: &mut Writer<'_>, args: Args<'_>) {
    let sub = args.get(1).to_ascii_lowercase();
    match (sub.as_slice(), args.len()) {
        (b"setname", 3) => {
            let name = args.get(2);
            if name.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
                w.error("ERR Client names cannot contain spaces, newlines or special characters.");
            } else {
                session.name = (!name.is_empty()).then(|| name.to_vec());
                w.simple("OK");
            }
        }
        (b"getname", 2) => match &session.name {
            Some(n) => w.bulk(n),
            None => w.null(),
        },
        (b"id", 2) => w.integer(i64::try_from(ctx.conn_id).unwrap_or(i64::MAX)),
        // Client libraries announce themselves; herald has no use for it but says yes.
        (b"setinfo", 4) => w.simple("OK"),
        _ => w.error(&format!(
            "ERR unknown subcommand or wrong number of arguments for 'client|{}': herald knows SETNAME, GETNAME, ID, SETINFO",
            printable(args.get(1))
        )),
    }
}
