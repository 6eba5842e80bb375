use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16))
}

/// A few nodes passing messages by hand, with no loss; `down` nodes hear nothing.
struct Net {
    now: Instant,
    nodes: Vec<Membership>,
    down: Vec<bool>,
    /// Runs its timers but hears nothing and is heard by nobody.
    isolated: Vec<bool>,
    events: Vec<(usize, MemberEvent)>,
}

impl Net {
    fn new(n: usize) -> Self {
        let now = Instant::now();
        let nodes = (0..n)
            .map(|i| {
                let mut c = MembershipConfig::new(i as u64 + 1, 100);
                c.advertise = Some(addr(i));
                c.seeds = vec![addr(0)];
                Membership::new(c, now)
            })
            .collect();
        Self {
            now,
            nodes,
            down: vec![false; n],
            isolated: vec![false; n],
            events: Vec::new(),
        }
    }

    fn pump(&mut self) {
        loop {
            let mut moved = false;
            for i in 0..self.nodes.len() {
                while let Some(e) = self.nodes[i].poll_event() {
                    self.events.push((i, e));
                }
                while let Some((to, msg)) = self.nodes[i].poll_message() {
                    moved = true;
                    let Some(j) = (0..self.nodes.len()).find(|&j| addr(j) == to) else {
                        continue;
                    };
                    if self.down[j] || self.down[i] || self.isolated[i] || self.isolated[j] {
                        continue;
                    }
                    let me = *self.nodes[i].me();
                    self.nodes[j].handle_message(
                        self.now,
                        addr(i),
                        (me.node, me.incarnation),
                        &msg,
                    );
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn run(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now += Duration::from_millis(5);
            for i in 0..self.nodes.len() {
                if !self.down[i] && self.nodes[i].poll_timeout().is_some_and(|t| t <= self.now) {
                    self.nodes[i].handle_timeout(self.now);
                }
            }
            self.pump();
        }
    }

    fn saw(&self, observer: usize, kind: MemberEventKind, node: u64) -> bool {
        self.events
            .iter()
            .any(|(o, e)| *o == observer && e.kind == kind && e.node == node)
    }
}

#[test]
fn nodes_join_through_one_seed_and_list_each_other() {
    let mut net = Net::new(4);
    net.run(Duration::from_secs(1));
    for (i, m) in net.nodes.iter().enumerate() {
        let nodes: Vec<u64> = m.members().iter().map(|r| r.node).collect();
        assert_eq!(nodes, [1, 2, 3, 4], "node {i}");
        assert_eq!(m.counts(), (4, 0));
        let mut peers = m.live_addrs();
        peers.push(addr(i));
        peers.sort();
        assert_eq!(peers, (0..4).map(addr).collect::<Vec<_>>());
    }
    assert!(net.saw(3, MemberEventKind::Joined, 2));
    assert_eq!(net.nodes[0].stats().joins, 3);
}

#[test]
fn a_silent_node_is_suspected_then_failed_and_a_restart_rejoins() {
    let mut net = Net::new(4);
    net.run(Duration::from_secs(1));
    net.down[2] = true;
    net.run(Duration::from_secs(4));
    for i in [0, 1, 3] {
        assert!(net.saw(i, MemberEventKind::Suspect, 3), "node {i}");
        assert!(net.saw(i, MemberEventKind::Failed, 3), "node {i}");
        assert_eq!(net.nodes[i].state_of(3), Some(MemberState::Failed));
        assert!(!net.nodes[i].live_addrs().contains(&addr(2)));
    }
    // The node starts again: a new incarnation overrides the failure.
    let mut c = net.nodes[2].config().clone();
    c.incarnation = 200;
    net.nodes[2] = Membership::new(c, net.now);
    net.down[2] = false;
    net.events.clear();
    net.run(Duration::from_secs(1));
    for i in [0, 1, 3] {
        assert!(net.saw(i, MemberEventKind::Joined, 3), "node {i}");
        let r = net.nodes[i].members().into_iter().find(|r| r.node == 3);
        assert_eq!(r.map(|r| r.incarnation), Some(200));
    }
}

#[test]
fn a_suspected_node_refutes_and_stays() {
    let mut net = Net::new(3);
    net.run(Duration::from_secs(1));
    // Node 1 hears (from node 2) that node 3 is suspect, as if node 2's probe had failed.
    let me3 = *net.nodes[2].me();
    let rumour = Message {
        kind: GossipKind::Notify,
        seq: 0,
        target_node: 0,
        target_incarnation: 0,
        target_addr: None,
        entries: vec![MemberRecord {
            state: MemberState::Suspect,
            ..me3
        }],
    };
    let now = net.now;
    net.nodes[0].handle_message(now, addr(1), (2, 100), &rumour);
    assert_eq!(net.nodes[0].state_of(3), Some(MemberState::Suspect));
    net.run(Duration::from_secs(3));
    assert_eq!(net.nodes[2].stats().self_refutations, 1);
    assert!(net.nodes[2].me().counter >= 1);
    assert!(net.saw(0, MemberEventKind::Alive, 3));
    assert_eq!(net.nodes[0].stats().refuted, 1);
    assert!(
        !net.events
            .iter()
            .any(|(_, e)| e.kind == MemberEventKind::Failed)
    );
    assert_eq!(net.nodes[0].state_of(3), Some(MemberState::Alive));
}

#[test]
fn a_graceful_leave_is_seen_at_once_and_old_news_cannot_revive_it() {
    let mut net = Net::new(3);
    net.run(Duration::from_secs(1));
    let before = *net.nodes[1].me();
    net.nodes[1].leave();
    net.pump();
    net.down[1] = true;
    for i in [0, 2] {
        assert!(net.saw(i, MemberEventKind::Left, 2), "node {i}");
        assert_eq!(net.nodes[i].state_of(2), Some(MemberState::Left));
    }
    // A late gossip of its old alive record changes nothing.
    let stale = Message {
        kind: GossipKind::Notify,
        seq: 0,
        target_node: 0,
        target_incarnation: 0,
        target_addr: None,
        entries: vec![before],
    };
    let now = net.now;
    net.nodes[0].handle_message(now, addr(2), (3, 100), &stale);
    assert_eq!(net.nodes[0].state_of(2), Some(MemberState::Left));
    net.run(Duration::from_secs(3));
    assert!(
        !net.events
            .iter()
            .any(|(_, e)| e.kind == MemberEventKind::Failed)
    );
}

#[test]
fn a_stale_verdict_is_answered_with_the_newer_record() {
    let mut net = Net::new(2);
    net.run(Duration::from_millis(100));
    let me2 = *net.nodes[1].me();
    let failed = Message {
        kind: GossipKind::Notify,
        seq: 0,
        target_node: 0,
        target_incarnation: 0,
        target_addr: None,
        entries: vec![MemberRecord {
            state: MemberState::Failed,
            ..me2
        }],
    };
    let now = net.now;
    // Told of its own failure, node 2 refutes and tells the teller.
    net.nodes[1].handle_message(now, addr(0), (1, 100), &failed);
    let (to, answer) = net.nodes[1].poll_message().unwrap();
    assert_eq!(to, addr(0));
    assert_eq!(answer.entries[0].state, MemberState::Alive);
    assert_eq!(answer.entries[0].counter, me2.counter + 1);
}

#[test]
fn traffic_per_probe_interval_does_not_depend_on_cluster_size() {
    for n in [3, 12] {
        let mut net = Net::new(n);
        net.run(Duration::from_secs(2));
        let before: u64 = net.nodes.iter().map(|m| m.stats().messages_sent).sum();
        net.run(Duration::from_secs(2));
        let after: u64 = net.nodes.iter().map(|m| m.stats().messages_sent).sum();
        let per_node = (after - before) as f64 / n as f64 / 2.0;
        // One ping and one ack per 200 ms interval.
        assert!((9.0..=11.0).contains(&per_node), "{n} nodes: {per_node}");
    }
}

struct FakeResolver(Vec<SocketAddr>, u32);

impl Resolver for FakeResolver {
    fn resolve(&mut self, name: &str) -> io::Result<Vec<SocketAddr>> {
        self.1 += 1;
        if name == "herald.test:7000" {
            Ok(self.0.clone())
        } else {
            Err(io::Error::new(io::ErrorKind::NotFound, "no such name"))
        }
    }
}

#[test]
fn dns_seeds_are_resolved_every_refresh_and_joined() {
    let now = Instant::now();
    let addrs = vec![addr(2), addr(1), addr(1)];
    let mut dns = DnsSeeds::new(
        "herald.test:7000",
        Duration::from_secs(5),
        Box::new(FakeResolver(addrs, 0)),
        now,
    );
    assert_eq!(dns.poll(now), Some(vec![addr(1), addr(2)]));
    assert_eq!(dns.poll(now + Duration::from_secs(1)), None);
    assert!(dns.poll(now + Duration::from_secs(5)).is_some());

    let mut m = Membership::new(MembershipConfig::new(9, 1), now);
    m.set_discovered(now, vec![addr(1), addr(2)]);
    let joins: Vec<SocketAddr> = std::iter::from_fn(|| m.poll_message())
        .filter(|(_, msg)| msg.kind == GossipKind::Join)
        .map(|(to, _)| to)
        .collect();
    assert_eq!(joins, [addr(1), addr(2)]);

    let mut bad = DnsSeeds::new(
        "nothing.test:1",
        Duration::from_secs(5),
        Box::new(FakeResolver(Vec::new(), 0)),
        now,
    );
    assert_eq!(bad.poll(now), None);
    assert!(bad.last_error().is_some());
}

/// A resolver that answers only when the test lets it (or gives up after 5 s).
struct Gated(crossbeam_channel::Receiver<()>, Vec<SocketAddr>);

impl Resolver for Gated {
    fn resolve(&mut self, _name: &str) -> io::Result<Vec<SocketAddr>> {
        self.0
            .recv_timeout(Duration::from_secs(5))
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "never let through"))?;
        Ok(self.1.clone())
    }
}

#[test]
fn background_lookups_never_hold_up_the_poll() {
    let now = Instant::now();
    let (gate, gated) = crossbeam_channel::unbounded();
    let mut dns = DnsSeeds::new(
        "herald.test:7000",
        Duration::from_secs(5),
        Box::new(Gated(gated, vec![addr(3)])),
        now,
    )
    .in_background();
    let started = Instant::now();
    assert_eq!(dns.poll(now), None, "the lookup runs; nothing yet");
    assert!(
        dns.next_refresh() < now + Duration::from_secs(1),
        "the caller comes back soon for the answer"
    );
    assert_eq!(
        dns.poll(now),
        None,
        "still running: no second lookup, no wait"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "poll waited for the resolver"
    );
    gate.send(()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let found = loop {
        if let Some(found) = dns.poll(now) {
            break found;
        }
        assert!(Instant::now() < deadline, "the answer never came");
        std::thread::sleep(Duration::from_millis(1));
    };
    assert_eq!(found, [addr(3)]);
    assert_eq!(dns.next_refresh(), now + Duration::from_secs(5));
    assert_eq!(dns.take_failure(), None);
}

#[test]
fn the_system_resolver_resolves_localhost_to_loopback() {
    let addrs = SystemResolver.resolve("localhost:7700").unwrap();
    assert!(!addrs.is_empty());
    assert!(
        addrs
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == 7700)
    );
}

#[test]
fn a_node_whose_probes_fail_slows_its_own_probing_and_recovers() {
    let mut net = Net::new(3);
    net.run(Duration::from_secs(1));
    assert_eq!(net.nodes[0].awareness(), 0);
    // Node 1 hears nothing (its network is down, or it is overloaded): every probe fails.
    net.isolated[0] = true;
    let sent = |net: &Net| net.nodes[0].stats().messages_sent;
    let before = sent(&net);
    net.run(Duration::from_secs(2));
    let first = sent(&net) - before;
    assert!(
        net.nodes[0].awareness() >= 2,
        "{}",
        net.nodes[0].awareness()
    );
    let before = sent(&net);
    net.run(Duration::from_secs(2));
    let second = sent(&net) - before;
    assert!(
        second < first,
        "probing slows down: {first} then {second} messages"
    );
    // Back on the network, after everyone declared everyone failed: the partition heals (a
    // failed member is asked to join again now and then), and answered probes bring the
    // score down again.
    assert_eq!(net.nodes[1].state_of(1), Some(MemberState::Failed));
    assert_eq!(net.nodes[0].state_of(2), Some(MemberState::Failed));
    net.isolated[0] = false;
    net.run(Duration::from_secs(10));
    assert_eq!(net.nodes[0].awareness(), 0);
    for m in &net.nodes {
        assert_eq!(m.counts(), (3, 0), "{:?}", m.members());
    }
}
