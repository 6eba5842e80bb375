//! `herald demo`: the pipeline that exists today, in one process.
//!
//! Three nodes, each with a small cache of product prices. A price change on one node raises
//! `product.changed` into that node's ring; the node batches the ring into frames, signs them,
//! and the other nodes parse, verify and apply them, dropping the stale entry from their
//! caches. Forged, foreign and truncated frames are shown being refused. Then a throughput run
//! moves 64-byte events through ring, encoder, signer, parser and verifier for a few seconds.
//!
//! Sockets, sessions and Missed arrive with the router; until then the frames travel between
//! the nodes in memory.

use std::collections::BTreeMap;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use herald::auth::{Key, Keyring};
use herald::ringbuf::{self, Consumer, Producer};
use herald::wire::{
    ClusterId, DEFAULT_UDP_FRAME_LEN, FRAME_OVERHEAD, Flags, Frame, FrameKind, FrameWriter,
    HeaderFields,
};
use herald::{EventId, Reject};

use crate::CliError;

/// Arguments of `herald demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// How long the throughput run lasts, in seconds (0 skips it).
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    /// Producer threads in the throughput run.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    producers: u16,
}

const RING_CAPACITY: usize = 1 << 20;
const FRAME_LEN: usize = DEFAULT_UDP_FRAME_LEN;

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// One node of the demo: a cache, a ring, and what it needs to sign and check frames.
struct Node {
    name: &'static str,
    id: u64,
    incarnation: u64,
    sequence: u64,
    cluster: ClusterId,
    producer: Producer,
    consumer: Consumer,
    cache: BTreeMap<String, u32>,
}

impl Node {
    fn new(name: &'static str, id: u64, cluster: ClusterId) -> Result<Self, CliError> {
        let (producer, consumer) =
            ringbuf::ring(RING_CAPACITY, FRAME_LEN - FRAME_OVERHEAD).map_err(CliError::usage)?;
        let cache = [("sku-1", 999), ("sku-2", 1999), ("sku-42", 420)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        Ok(Self {
            name,
            id,
            incarnation: id.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            sequence: 0,
            cluster,
            producer,
            consumer,
            cache,
        })
    }

    /// Changes a price in the database and here, and raises `product.changed` for the others.
    fn change_price(&mut self, db: &mut Db, sku: &str, cents: u32) -> Result<(), CliError> {
        db.insert(sku.to_owned(), cents);
        let old = self.cache.insert(sku.to_owned(), cents);
        say!(
            "  {}: {sku} {} -> {}; raises product.changed \"{sku}\" into its ring",
            self.name,
            price(old),
            price(Some(cents)),
        );
        self.producer
            .push(&EventId::from_name("product.changed"), sku.as_bytes())
            .map_err(|e| CliError::usage(format!("raise failed: {e}")))
    }

    /// Drains the ring into signed frames.
    fn flush(&mut self, keyring: &Keyring) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        let mut buf = vec![0u8; FRAME_LEN];
        loop {
            let header = self.header();
            let Some(frame) = next_frame(&mut self.consumer, &mut buf, header, keyring) else {
                break;
            };
            self.sequence += 1;
            frames.push(frame.to_vec());
        }
        frames
    }

    fn header(&self) -> HeaderFields {
        HeaderFields {
            kind: FrameKind::Data,
            flags: Flags::EMPTY,
            key_id: 0,
            cluster: self.cluster,
            node: self.id,
            incarnation: self.incarnation,
            sequence: self.sequence + 1,
            timestamp_ns: now_ns(),
        }
    }

    /// Checks a frame from the network and applies its events to the cache.
    fn receive(&mut self, bytes: &[u8], keyring: &Keyring, db: &Db) -> Result<usize, Reject> {
        let frame = Frame::parse(bytes)?;
        if frame.cluster() != self.cluster {
            return Err(Reject::ForeignCluster);
        }
        let verified = keyring.verify(frame)?;
        let frame = verified.frame();
        for record in frame.records() {
            let sku = String::from_utf8_lossy(record.payload());
            let stale = self.cache.remove(sku.as_ref());
            let fresh = db.get(sku.as_ref()).copied();
            if let Some(cents) = fresh {
                self.cache.insert(sku.clone().into_owned(), cents);
            }
            say!(
                "  {}: frame #{} from node {} verified; drops {sku} {} and reloads {}",
                self.name,
                frame.sequence(),
                frame.node(),
                price(stale),
                price(fresh)
            );
        }
        Ok(frame.records().len())
    }
}

/// The shared database behind the caches.
type Db = BTreeMap<String, u32>;

fn price(cents: Option<u32>) -> String {
    cents.map_or_else(
        || "(not cached)".to_owned(),
        |c| format!("${}.{:02}", c / 100, c % 100),
    )
}

/// Reads as many committed records as one frame holds and finishes the frame, or `None` if the
/// ring is empty.
fn next_frame<'b>(
    consumer: &mut Consumer,
    buf: &'b mut [u8],
    header: HeaderFields,
    keyring: &Keyring,
) -> Option<&'b [u8]> {
    let mut writer = FrameWriter::new(buf, &header).ok()?;
    let run = consumer.read(writer.remaining())?;
    writer.push_encoded(run.bytes(), run.record_count()).ok()?;
    run.release();
    Some(writer.finish(keyring))
}

pub(crate) fn run(args: &DemoArgs) -> Result<(), CliError> {
    let key = Key::generate().map_err(CliError::usage)?;
    let keyring = Keyring::new(1, key).map_err(CliError::usage)?;
    let cluster = ClusterId::from_name("demo-shop");
    say!(
        "herald demo: three nodes of cluster \"demo-shop\", one fresh 256-bit key (kept in memory)."
    );
    say!("Frames travel between the nodes in memory: the socket driver arrives with the router.\n");

    let mut nodes = [
        Node::new("node-a", 1, cluster)?,
        Node::new("node-b", 2, cluster)?,
        Node::new("node-c", 3, cluster)?,
    ];
    let mut db: Db = nodes[0].cache.clone();
    say!("Every node caches: {}\n", cache_line(&nodes[0]));

    for (from, sku, cents) in [(0, "sku-42", 450), (1, "sku-1", 899), (0, "sku-2", 2099)] {
        nodes[from].change_price(&mut db, sku, cents)?;
        let frames = nodes[from].flush(&keyring);
        for frame in &frames {
            say!(
                "  {}: sends frame #{} ({} bytes, HMAC-SHA256 signed)",
                nodes[from].name,
                Frame::parse(frame).map_or(0, |f| f.sequence()),
                frame.len()
            );
            for (i, node) in nodes.iter_mut().enumerate() {
                if i != from {
                    node.receive(frame, &keyring, &db)
                        .map_err(CliError::usage)?;
                }
            }
        }
        say!();
    }

    say!("Frames that must not be trusted are refused, counted by reason, and change nothing:");
    nodes[0].change_price(&mut db, "sku-1", 1099)?;
    let frame = nodes[0].flush(&keyring).pop().unwrap_or_default();
    let mut forged = frame.clone();
    if let Some(byte) = forged.get_mut(64 + 24) {
        *byte ^= 0x01; // one bit of the payload: "sku-1" becomes "rku-1"
    }
    let foreign_keyring =
        Keyring::new(1, Key::generate().map_err(CliError::usage)?).map_err(CliError::usage)?;
    let mut foreign = Node::new("other", 9, ClusterId::from_name("other-shop"))?;
    foreign
        .producer
        .push(&EventId::from_name("product.changed"), b"sku-1")
        .map_err(CliError::usage)?;
    let foreign_frame = foreign.flush(&foreign_keyring).pop().unwrap_or_default();
    let mut garbage = b"GET /metrics HTTP/1.1\r\nHost: node-c\r\n\r\n".to_vec();
    garbage.resize(200, b' ');
    let cases: [(&str, &[u8]); 4] = [
        ("with one bit flipped in transit", &forged),
        ("from another cluster", &foreign_frame),
        ("cut short", &frame[..frame.len().saturating_sub(5)]),
        ("that is not herald's", &garbage),
    ];
    for (what, bytes) in cases {
        match nodes[2].receive(bytes, &keyring, &db) {
            Err(reason) => say!(
                "  node-c: a frame {what}: refused ({}: {reason})",
                reason.name()
            ),
            Ok(_) => return Err(CliError::usage(format!("BUG: a frame {what} was accepted"))),
        }
    }
    say!("  node-c still caches: {}", cache_line(&nodes[2]));
    for i in [1, 2] {
        nodes[i]
            .receive(&frame, &keyring, &db)
            .map_err(CliError::usage)?;
    }
    for node in &nodes {
        if node.cache != db {
            return Err(CliError::usage(format!(
                "BUG: {} disagrees with the database",
                node.name
            )));
        }
    }
    say!(
        "Every node now caches what the database holds: {}\n",
        cache_line(&nodes[0])
    );

    if args.seconds > 0 {
        throughput(args, &keyring, cluster)?;
    }
    Ok(())
}

fn cache_line(node: &Node) -> String {
    let items: Vec<String> = node
        .cache
        .iter()
        .map(|(k, v)| format!("{k} {}", price(Some(*v))))
        .collect();
    items.join(", ")
}

/// Producers raise 64-byte events as fast as they can; one thread batches them into signed
/// frames and, standing in for the receiving node, parses and verifies each frame.
fn throughput(args: &DemoArgs, keyring: &Keyring, cluster: ClusterId) -> Result<(), CliError> {
    let duration = Duration::from_secs(args.seconds);
    say!(
        "Throughput: {} producer thread(s) raise 64-byte events for {}s; one thread batches, signs, parses and verifies.",
        args.producers,
        args.seconds
    );
    let (producer, mut consumer) =
        ringbuf::ring(RING_CAPACITY, FRAME_LEN - FRAME_OVERHEAD).map_err(CliError::usage)?;
    let id = EventId::from_name("bench.event");
    let payload = [0x5au8; 64];
    let deadline = Instant::now() + duration;

    let (raised, full, frames, delivered, bytes_out, elapsed) = thread::scope(|s| {
        let workers: Vec<_> = (0..args.producers)
            .map(|_| {
                let producer = producer.clone();
                s.spawn(move || {
                    let (mut ok, mut full) = (0u64, 0u64);
                    while Instant::now() < deadline {
                        for _ in 0..256 {
                            match producer.push(&id, &payload) {
                                Ok(()) => ok += 1,
                                Err(_) => {
                                    full += 1;
                                    thread::yield_now();
                                }
                            }
                        }
                    }
                    (ok, full)
                })
            })
            .collect();

        let start = Instant::now();
        let mut buf = vec![0u8; FRAME_LEN];
        let (mut frames, mut delivered, mut sequence, mut bytes_out) = (0u64, 0u64, 0u64, 0u64);
        loop {
            let header = HeaderFields {
                kind: FrameKind::Data,
                flags: Flags::EMPTY,
                key_id: 0,
                cluster,
                node: 1,
                incarnation: 1,
                sequence: sequence + 1,
                timestamp_ns: now_ns(),
            };
            match next_frame(&mut consumer, &mut buf, header, keyring) {
                Some(bytes) => {
                    sequence += 1;
                    frames += 1;
                    bytes_out += bytes.len() as u64;
                    let frame = Frame::parse(bytes)
                        .ok()
                        .and_then(|f| keyring.verify(f).ok());
                    delivered += frame.map_or(0, |v| v.frame().records().len() as u64);
                }
                None if Instant::now() >= deadline && workers.iter().all(|w| w.is_finished()) => {
                    break;
                }
                None => std::hint::spin_loop(),
            }
        }
        let elapsed = start.elapsed();
        let (raised, full) = workers
            .into_iter()
            .map(|w| w.join().unwrap_or((0, 0)))
            .fold((0, 0), |(a, b), (c, d)| (a + c, b + d));
        (raised, full, frames, delivered, bytes_out, elapsed)
    });

    let secs = elapsed.as_secs_f64().max(1e-9);
    say!();
    say!("  {:<34} {:>14}", "events raised", raised);
    say!("  {:<34} {:>14}", "events delivered (verified)", delivered);
    say!(
        "  {:<34} {:>14}",
        "raises refused (ring full, retried)",
        full
    );
    say!("  {:<34} {:>14}", "frames signed and verified", frames);
    say!(
        "  {:<34} {:>14.1}",
        "events per frame",
        delivered as f64 / frames.max(1) as f64
    );
    say!("  {:<34} {:>14.0}", "events/s", delivered as f64 / secs);
    say!(
        "  {:<34} {:>14.1}",
        "MB/s of signed frames",
        bytes_out as f64 / secs / 1e6
    );
    if raised != delivered {
        return Err(CliError::usage(format!(
            "BUG: {raised} events raised but {delivered} delivered"
        )));
    }
    say!("\nNo event lost: every one raised was delivered, in frames that verified.");
    Ok(())
}
