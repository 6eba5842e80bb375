//! `herald child` (hidden): one node that `demo` and `bench` start as a child process of the
//! same binary and drive over its standard input and output, one line each way.
//!
//! | parent writes | the child answers |
//! |---|---|
//! | (nothing: at start) | `ready NODE_ID` |
//! | `set SKU CENTS` | `set SKU OLD NEW` (`-` when it was not cached), and raises `product.changed` |
//! | (another node changed a product) | `dropped SKU OLD FROM_NODE` |
//! | `cache` | `cache SKU=CENTS …` |
//! | `load PAYLOAD PRODUCERS SECONDS RATE` | `progress SENT` about every 100 ms, then `loaded SENT MICROS REFUSED` |
//! | `drops` | `drops REASON=COUNT …`: frames refused, by reason (only reasons that occurred) |
//! | `stats` | `stats` and `load::Report` as one JSON object |
//! | `members` | `members N`: the live members this node sees, itself included (0 without membership) |
//! | `quit`, or end of input | exits 0 after a clean shutdown |
//!
//! The child ends when its standard input closes, so it never outlives its parent. It ignores
//! SIGINT: a Ctrl-C at the terminal reaches the whole process group, and the parent, which
//! owns the cleanup, stops its children itself.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use herald::EventId;
use parking_lot::Mutex;

use crate::CliError;
use crate::common::{self, ConfigArgs};
use crate::load::{self, Load, Recorder};

/// The event a price change raises; its payload is the product's name.
pub(crate) const PRODUCT_CHANGED: &str = "product.changed";

/// What every node caches at start.
pub(crate) const PRICES: [(&str, u32); 3] = [("sku-1", 999), ("sku-2", 1999), ("sku-42", 420)];

/// Arguments of `herald child`.
#[derive(Debug, clap::Args)]
pub(crate) struct ChildArgs {
    #[command(flatten)]
    config: ConfigArgs,
}

fn cents(c: Option<u32>) -> String {
    c.map_or_else(|| "-".to_owned(), |c| c.to_string())
}

pub(crate) fn run(args: &ChildArgs) -> Result<(), CliError> {
    let (config, dir) = common::load(&args.config)?;
    common::init_logging(&config, args.config.log_format);
    // Registering a handler replaces the default action (exit) with setting a flag nobody
    // reads: the parent decides when this node stops.
    signal_hook::flag::register(
        signal_hook::consts::SIGINT,
        Arc::new(AtomicBool::new(false)),
    )
    .map_err(|e| CliError::usage(format!("cannot handle signals: {e}")))?;
    let builder = common::router_builder(&config, &args.config.config)?.dispatch_queue(1 << 16);
    let router = common::build(common::with_secret(builder, &config, &dir)?)?;

    let cache: Arc<Mutex<BTreeMap<String, u32>>> = Arc::new(Mutex::new(
        PRICES.iter().map(|&(k, v)| (k.to_owned(), v)).collect(),
    ));
    let changed = router.event(EventId::from_name(PRODUCT_CHANGED));
    let c = Arc::clone(&cache);
    let _invalidate = changed.subscribe(move |d| {
        if d.is_local() {
            return;
        }
        let sku = String::from_utf8_lossy(d.payload());
        let old = c.lock().remove(sku.as_ref());
        say!("dropped {sku} {} {}", cents(old), d.node());
    });
    let recorder = Recorder::new();
    let _recording = recorder.attach(&router);

    // Standard input on a thread of its own, so a load in progress stops when it closes.
    let closed = Arc::new(AtomicBool::new(false));
    let (tx, commands) = crossbeam_channel::unbounded::<String>();
    let flag = Arc::clone(&closed);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
        flag.store(true, Ordering::Relaxed);
    });

    say!("ready {}", router.node_id());
    for line in commands {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["set", sku, price] => {
                let Ok(price) = price.parse::<u32>() else {
                    say!("error set: the price is a whole number of cents");
                    continue;
                };
                let old = cache.lock().insert((*sku).to_owned(), price);
                match changed.raise(sku.as_bytes()) {
                    Ok(()) => say!("set {sku} {} {price}", cents(old)),
                    Err(e) => say!("error set: {e}"),
                }
            }
            ["cache"] => {
                let items: Vec<String> = cache
                    .lock()
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                say!("cache {}", items.join(" "));
            }
            ["load", rest @ ..] => match Load::parse(rest) {
                Some(l) if l.payload <= router.max_payload() => {
                    let done = load::generate(&router, &l, &closed, |n| say!("progress {n}"));
                    say!(
                        "loaded {} {} {}",
                        done.sent,
                        done.elapsed.as_micros(),
                        done.refused
                    );
                }
                _ => say!("error load: PAYLOAD (8..=max) PRODUCERS (>0) SECONDS RATE"),
            },
            ["stats"] => say!("{}", recorder.report(&router).to_line()),
            ["drops"] => {
                let drops: Vec<String> = router
                    .metrics()
                    .drops
                    .iter()
                    .filter(|(_, n)| *n > 0)
                    .map(|(reason, n)| format!("{reason}={n}"))
                    .collect();
                say!("drops {}", drops.join(" "));
            }
            ["members"] => say!("members {}", router.members().len()),
            ["quit"] => break,
            _ => say!("error unknown command: {line}"),
        }
    }
    router.shutdown();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::Report;

    #[test]
    fn protocol_lines_round_trip() {
        let r = Report {
            delivered: 5,
            missed: 1,
            missed_overflow: 4,
            missed_frames: 2,
            dropped: 3,
            p50_us: 40,
            p99_us: 90,
            p999_us: 200,
        };
        assert_eq!(Report::parse(&r.to_line()), Some(r));
        let l = Load {
            payload: 64,
            producers: 2,
            duration: std::time::Duration::from_millis(1500),
            rate: Some(1000),
        };
        let line = l.to_line();
        let words: Vec<&str> = line.split(' ').collect();
        let back = Load::parse(&words[1..]).expect("parses");
        assert_eq!(
            (back.payload, back.producers, back.duration, back.rate),
            (64, 2, l.duration, Some(1000))
        );
        assert!(Load::parse(&["4", "1", "1", "0"]).is_none(), "payload < 8");
    }
}
