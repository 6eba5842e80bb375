//! `INFO` and `COMMAND`: what client libraries ask a server before they call it ready
//! (ioredis sends `INFO` and reads `loading`, go-redis and redis-py may read `COMMAND`, Jedis
//! and redis-cli ask `COMMAND DOCS`/`COMMAND COUNT`). herald answers with its own figures and
//! its own commands, in the shapes Redis 7 uses.

use super::commands::{Args, Ctx};
use super::resp::Writer;

/// The Redis version herald's protocol corresponds to (RESP3, `HELLO`, `CLIENT SETINFO`),
/// reported as `redis_version` because clients parse that field.
pub(crate) const REDIS_VERSION: &str = "7.2.0";

/// One command herald runs, as `COMMAND` describes it.
struct Spec {
    name: &'static str,
    /// Redis's arity: exactly `n` arguments (the name included), or at least `-n`.
    arity: i64,
    flags: &'static [&'static str],
    group: &'static str,
    summary: &'static str,
}

const COMMANDS: &[Spec] = &[
    Spec {
        name: "auth",
        arity: -2,
        flags: &[
            "noscript",
            "loading",
            "stale",
            "fast",
            "no_auth",
            "allow_busy",
        ],
        group: "connection",
        summary: "Authenticates the connection with the service's password.",
    },
    Spec {
        name: "client",
        arity: -2,
        flags: &["loading", "stale"],
        group: "connection",
        summary: "SETNAME, GETNAME, ID, SETINFO of this connection.",
    },
    Spec {
        name: "command",
        arity: -1,
        flags: &["loading", "stale"],
        group: "server",
        summary: "Describes the commands herald runs.",
    },
    Spec {
        name: "echo",
        arity: 2,
        flags: &["fast"],
        group: "connection",
        summary: "Answers the message.",
    },
    Spec {
        name: "hello",
        arity: -1,
        flags: &[
            "noscript",
            "loading",
            "stale",
            "fast",
            "no_auth",
            "allow_busy",
        ],
        group: "connection",
        summary: "Chooses RESP2 or RESP3, optionally authenticating and naming the client.",
    },
    Spec {
        name: "info",
        arity: -1,
        flags: &["loading", "stale"],
        group: "server",
        summary: "herald's figures: server, clients, stats sections.",
    },
    Spec {
        name: "ping",
        arity: -1,
        flags: &["fast"],
        group: "connection",
        summary: "Answers PONG (or the message).",
    },
    Spec {
        name: "psubscribe",
        arity: -2,
        flags: &["pubsub", "noscript", "loading", "stale"],
        group: "pubsub",
        summary: "Pushes every event whose name matches a glob pattern.",
    },
    Spec {
        name: "publish",
        arity: 3,
        flags: &["pubsub", "loading", "stale", "fast"],
        group: "pubsub",
        summary: "Raises an event cluster-wide.",
    },
    Spec {
        name: "punsubscribe",
        arity: -1,
        flags: &["pubsub", "noscript", "loading", "stale"],
        group: "pubsub",
        summary: "Stops pattern subscriptions.",
    },
    Spec {
        name: "quit",
        arity: -1,
        flags: &[
            "noscript",
            "loading",
            "stale",
            "fast",
            "no_auth",
            "allow_busy",
        ],
        group: "connection",
        summary: "Closes the connection.",
    },
    Spec {
        name: "reset",
        arity: 1,
        flags: &[
            "noscript",
            "loading",
            "stale",
            "fast",
            "no_auth",
            "allow_busy",
        ],
        group: "connection",
        summary: "Drops every subscription and returns to RESP2.",
    },
    Spec {
        name: "select",
        arity: 2,
        flags: &["loading", "stale", "fast"],
        group: "connection",
        summary: "Accepts database 0 (pub/sub ignores databases).",
    },
    Spec {
        name: "subscribe",
        arity: -2,
        flags: &["pubsub", "noscript", "loading", "stale"],
        group: "pubsub",
        summary: "Pushes every raise of the named events.",
    },
    Spec {
        name: "unsubscribe",
        arity: -1,
        flags: &["pubsub", "noscript", "loading", "stale"],
        group: "pubsub",
        summary: "Stops channel subscriptions.",
    },
];

fn find(name: &[u8]) -> Option<&'static Spec> {
    COMMANDS
        .iter()
        .find(|c| c.name.as_bytes().eq_ignore_ascii_case(name))
}

/// One command's `COMMAND INFO` entry: the ten fields of Redis 7.
fn describe(w: &mut Writer<'_>, spec: &Spec) {
    w.array(10);
    w.bulk(spec.name.as_bytes());
    w.integer(spec.arity);
    w.set(spec.flags.len());
    for f in spec.flags {
        w.simple(f);
    }
    // herald's commands take no keys: first key, last key, step.
    w.integer(0);
    w.integer(0);
    w.integer(0);
    w.set(1);
    w.simple(&format!("@{}", spec.group));
    w.set(0); // tips
    w.array(0); // key specs
    w.array(0); // subcommands
}

/// One command's `COMMAND DOCS` entry.
fn document(w: &mut Writer<'_>, spec: &Spec) {
    w.bulk(spec.name.as_bytes());
    w.map(3);
    w.bulk(b"summary");
    w.bulk(spec.summary.as_bytes());
    w.bulk(b"since");
    w.bulk(b"1.0.0");
    w.bulk(b"group");
    w.bulk(spec.group.as_bytes());
}

/// `COMMAND`, `COMMAND COUNT`, `COMMAND INFO name…`, `COMMAND DOCS [name…]`,
/// `COMMAND LIST`.
pub(crate) fn command(w: &mut Writer<'_>, args: Args<'_>) {
    if args.len() == 1 {
        w.array(COMMANDS.len());
        for spec in COMMANDS {
            describe(w, spec);
        }
        return;
    }
    let sub = args.get(1).to_ascii_lowercase();
    let names = (2..args.len()).map(|i| args.get(i));
    match sub.as_slice() {
        b"count" if args.len() == 2 => w.integer(COMMANDS.len() as i64),
        b"list" if args.len() == 2 => {
            w.array(COMMANDS.len());
            for spec in COMMANDS {
                w.bulk(spec.name.as_bytes());
            }
        }
        b"info" => {
            if args.len() == 2 {
                w.array(COMMANDS.len());
                COMMANDS.iter().for_each(|s| describe(w, s));
            } else {
                w.array(args.len() - 2);
                for name in names {
                    match find(name) {
                        Some(spec) => describe(w, spec),
                        None => w.null(),
                    }
                }
            }
        }
        b"docs" => {
            if args.len() == 2 {
                w.map(COMMANDS.len());
                COMMANDS.iter().for_each(|s| document(w, s));
            } else {
                let known: Vec<&Spec> = names.filter_map(find).collect();
                w.map(known.len());
                known.into_iter().for_each(|s| document(w, s));
            }
        }
        _ => w.error(&format!(
            "ERR unknown subcommand or wrong number of arguments for 'command|{}': herald knows COUNT, DOCS, INFO, LIST",
            super::commands::printable(args.get(1))
        )),
    }
}

/// The sections `INFO` knows, in order; plain `INFO` gives them all.
const SECTIONS: [&str; 5] = ["server", "clients", "stats", "persistence", "replication"];

/// `INFO [section…]`: `# Section` headers and `key:value` lines, as Redis writes them.
pub(crate) fn info(ctx: &Ctx<'_>, w: &mut Writer<'_>, args: Args<'_>) {
    let wanted: Vec<Vec<u8>> = (1..args.len())
        .map(|i| args.get(i).to_ascii_lowercase())
        .collect();
    let everything = wanted.is_empty()
        || wanted
            .iter()
            .any(|s| matches!(s.as_slice(), b"all" | b"default" | b"everything"));
    let mut text = String::new();
    for section in SECTIONS {
        if everything || wanted.iter().any(|s| s == section.as_bytes()) {
            if !text.is_empty() {
                text.push_str("\r\n");
            }
            write_section(ctx, section, &mut text);
        }
    }
    w.bulk(text.as_bytes());
}

fn write_section(ctx: &Ctx<'_>, section: &str, text: &mut String) {
    use std::fmt::Write as _;
    let m = ctx.counters.snapshot();
    let sizes = ctx.index.sizes();
    let header = match section {
        "server" => "Server",
        "clients" => "Clients",
        "stats" => "Stats",
        "persistence" => "Persistence",
        _ => "Replication",
    };
    let _ = write!(text, "# {header}\r\n");
    let mut line = |key: &str, value: &dyn std::fmt::Display| {
        let _ = write!(text, "{key}:{value}\r\n");
    };
    let uptime = ctx.now.saturating_duration_since(ctx.started).as_secs();
    match section {
        "server" => {
            line("redis_version", &REDIS_VERSION);
            line("herald_version", &env!("CARGO_PKG_VERSION"));
            line("redis_mode", &"standalone");
            line("os", &std::env::consts::OS);
            line("arch_bits", &(usize::BITS));
            line("process_id", &std::process::id());
            line("tcp_port", &ctx.port);
            line("uptime_in_seconds", &uptime);
            line("uptime_in_days", &(uptime / 86_400));
            line("herald_node_id", &ctx.node);
        }
        "clients" => {
            line("connected_clients", &m.connections_open);
            line("maxclients", &ctx.config.max_connections);
            line("blocked_clients", &0);
        }
        "stats" => {
            line("total_connections_received", &m.connections_accepted);
            line("total_commands_processed", &m.commands);
            line("rejected_connections", &m.connections_refused);
            line("pubsub_channels", &sizes.events);
            line("pubsub_patterns", &sizes.patterns);
            line("herald_pushes", &m.pushes);
            line("herald_queue_dropped", &m.queue_dropped);
            line("herald_protocol_errors", &m.protocol_errors);
            line("herald_unknown_commands", &m.unknown_commands);
            line("herald_auth_failures", &m.auth_failures);
            line("herald_names_refused", &m.names_refused);
            line("herald_names_known", &sizes.names);
            line("herald_name_bytes", &sizes.name_bytes);
        }
        "persistence" => {
            line("loading", &0);
        }
        _ => {
            line("role", &"master");
            line("connected_slaves", &0);
        }
    }
}
