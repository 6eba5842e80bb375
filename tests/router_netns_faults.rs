//! Routers over UDP on 127.0.0.1 with faults made by nftables rules in the kernel, inside a
//! network namespace of the test's own (`unshare -n`), so no rule touches the machine's own
//! network: loss of 1, 5 and 20 %, loss in bursts (by packet count, and a drop-everything rule
//! switched on for 30 ms at a time), and duplication (`dup to lo` on the ingress hook). The
//! audit is the one the in-process fault tests use (`util::audit`): no event delivered twice
//! or out of order, every event not delivered lies in a frame some `Missed` covers, and each
//! lost frame is covered once. With recovery, what the kernel drops is asked for and sent
//! again: the loss tests require requests and resends, and no frame reported missed.
//!
//! Reordering is not covered here: nftables has no delay action, queueing to user space
//! (NFQUEUE) needs a program of our own, and this kernel has no netem. The in-process hook
//! tests (`router_faults.rs`) cover it.
//!
//! The outer test re-runs this binary's `inside_netns_*` tests, one at a time, inside the
//! namespace. It needs root (CI runs as root) and `nft` (the nftables package): without root
//! it says why it skipped; without `nft` it skips too, except under `CI=true`, where it fails.
#![allow(clippy::disallowed_types)]

mod util;

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use herald::Router;

#[test]
fn kernel_rule_faults_in_a_network_namespace() {
    if !util::netns::is_root_or_skip() {
        return;
    }
    let has_nft = Command::new("nft")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_nft {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "nft is missing: install the nftables package (.ci/run does)"
        );
        eprintln!("SKIPPED: nft is missing (apt-get install nftables)");
        return;
    }
    util::netns::run_inside("ip link set lo up", "inside_netns_", 5);
}

/// Runs an nft script (`nft -f -`); panics with nft's message if it fails.
fn nft(script: &str) {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nft runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("write the nft script");
    let out = child.wait_with_output().expect("nft ends");
    assert!(
        out.status.success(),
        "nft failed on:\n{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The packets the rules with counters matched.
fn nft_counted() -> u64 {
    let out = Command::new("nft")
        .args(["list", "ruleset"])
        .output()
        .expect("nft runs");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|l| {
            let rest = l.split("counter packets ").nth(1)?;
            rest.split(' ').next()?.parse::<u64>().ok()
        })
        .sum()
}

/// Three routers on 127.0.0.1, each a peer of the others, and the ports as an nft set.
fn routers() -> (Vec<Router>, String) {
    util::netns::assert_inside();
    nft("flush ruleset\n");
    let addrs: Vec<SocketAddr> = util::free_udp_addrs(3);
    let routers = (0..3)
        .map(|i| {
            let mut b = Router::builder()
                .cluster("netns-faults")
                .node_id(i as u64 + 1)
                .keyring(util::test_keyring())
                .ring_capacity(8 << 20)
                .udp_bind(addrs[i]);
            for (j, a) in addrs.iter().enumerate() {
                if j != i {
                    b = b.udp_peer(*a);
                }
            }
            b.build().expect("router builds")
        })
        .collect();
    let ports: Vec<String> = addrs.iter().map(|a| a.port().to_string()).collect();
    (routers, format!("{{ {} }}", ports.join(", ")))
}

const EVENTS: u64 = 20_000;

/// Drops incoming datagrams to the routers with `match_` (an nft expression), audits, and
/// checks the rule dropped something that was reported.
fn loss(label: &str, match_: &str) {
    let (routers, ports) = routers();
    nft(&format!(
        "table inet herald_faults {{\n  chain in {{\n    type filter hook input priority 0; policy accept;\n    udp dport {ports} {match_} counter drop\n  }}\n}}\n"
    ));
    let outcome = util::audit::raise_and_audit(&routers, EVENTS, label, |_| {});
    let dropped = nft_counted();
    let asked: u64 = routers
        .iter()
        .map(|r| r.metrics().recovery("naks_sent"))
        .sum();
    let resent: u64 = routers
        .iter()
        .map(|r| r.metrics().recovery("frames_resent"))
        .sum();
    eprintln!(
        "{label}: the kernel rule dropped {dropped} datagrams; {asked} requests, {resent} frames sent again"
    );
    assert!(dropped > 0, "the rule dropped nothing");
    // Recovery: what the kernel dropped was asked for and sent again, so nothing is missed.
    assert!(asked > 0 && resent > 0, "the losses were not asked for");
    assert_eq!(outcome.lost_frames, 0, "frames were reported missed");
}

#[test]
#[ignore = "run by kernel_rule_faults_in_a_network_namespace inside a namespace"]
fn inside_netns_one_percent_loss() {
    loss("nft: 1% loss", "numgen random mod 100 < 1");
}

#[test]
#[ignore = "run by kernel_rule_faults_in_a_network_namespace inside a namespace"]
fn inside_netns_five_percent_loss() {
    loss("nft: 5% loss", "numgen random mod 100 < 5");
}

#[test]
#[ignore = "run by kernel_rule_faults_in_a_network_namespace inside a namespace"]
fn inside_netns_twenty_percent_loss() {
    loss("nft: 20% loss", "numgen random mod 100 < 20");
}

#[test]
#[ignore = "run by kernel_rule_faults_in_a_network_namespace inside a namespace"]
fn inside_netns_loss_in_bursts() {
    // Bursts by count: 8 datagrams in a row out of every 400 (the count is over all three
    // routers' ports together).
    loss("nft: bursts of 8 in 400", "numgen inc mod 400 < 8");

    // Bursts in time: a rule that drops everything, switched on for 30 ms every 250 ms while
    // the routers raise.
    let (routers, ports) = routers();
    nft(
        "table inet herald_faults {\n  chain in {\n    type filter hook input priority 0; policy accept;\n  }\n}\n",
    );
    let outcome = util::audit::raise_and_audit(
        &routers,
        EVENTS,
        "nft: 30 ms blackouts",
        |done: &AtomicBool| {
            while !done.load(Ordering::Relaxed) {
                nft(&format!(
                    "add rule inet herald_faults in udp dport {ports} counter drop\n"
                ));
                std::thread::sleep(Duration::from_millis(30));
                nft("flush chain inet herald_faults in\n");
                std::thread::sleep(Duration::from_millis(250));
            }
        },
    );
    // What each blackout swallowed, requests and resends included, is asked for again once
    // it lifts.
    let asked: u64 = routers
        .iter()
        .map(|r| r.metrics().recovery("naks_sent"))
        .sum();
    assert!(asked > 0, "the blackouts' losses were not asked for");
    assert_eq!(outcome.lost_frames, 0, "frames were reported missed");
}

#[test]
#[ignore = "run by kernel_rule_faults_in_a_network_namespace inside a namespace"]
fn inside_netns_duplication() {
    let (routers, ports) = routers();
    // On lo's ingress hook, 10 % of the routers' datagrams are copied back to lo (a copy can
    // be copied again, with the same odds).
    nft(&format!(
        "table netdev herald_dup {{\n  chain ingress {{\n    type filter hook ingress device lo priority 0; policy accept;\n    udp dport {ports} numgen random mod 100 < 10 counter dup to lo\n  }}\n}}\n"
    ));
    let outcome = util::audit::raise_and_audit(&routers, EVENTS, "nft: 10% duplication", |_| {});
    let copies = nft_counted();
    eprintln!("nft: 10% duplication: the kernel rule copied {copies} datagrams");
    assert!(copies > 0, "the rule copied nothing");
    assert!(
        outcome.duplicates_dropped > 0,
        "duplicates were injected and must be dropped and counted"
    );
}
