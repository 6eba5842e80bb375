//! Routers over real UDP sockets with seeded faults injected in the socket layer: loss
//! (uniform and in bursts), duplication and reordering. What must hold: no event delivered
//! twice or out of order, and every event that is not delivered lies in a frame some `Missed`
//! covers, each lost frame covered once.
#![allow(clippy::disallowed_types)]

mod util;

use std::time::Duration;

use herald::Router;
use herald::transport::FaultInjection;

fn run(faults: &FaultInjection, n: u64) {
    let addrs = util::free_udp_addrs(3);
    let routers: Vec<Router> = (0..3)
        .map(|i| {
            let mut b = Router::builder()
                .cluster("faults")
                .node_id(i as u64 + 1)
                .keyring(util::test_keyring())
                .ring_capacity(8 << 20)
                .udp_bind(addrs[i])
                .udp_fault_injection(FaultInjection {
                    seed: faults.seed + i as u64,
                    ..faults.clone()
                });
            for (j, a) in addrs.iter().enumerate() {
                if j != i {
                    b = b.udp_peer(*a);
                }
            }
            b.build().expect("router builds")
        })
        .collect();
    let label = format!(
        "hook: loss {:.0}% burst {} dup {:.0}% reorder {:.0}%",
        faults.loss * 100.0,
        faults.burst_len,
        faults.duplicate * 100.0,
        faults.reorder * 100.0,
    );
    let outcome = util::audit::raise_and_audit(&routers, n, &label, |_| {});
    if faults.duplicate > 0.0 {
        assert!(
            outcome.duplicates_dropped > 0,
            "duplicates were injected and must be counted"
        );
    }
}

fn faults(seed: u64, loss: f64, burst: f64) -> FaultInjection {
    FaultInjection {
        seed,
        loss,
        burst,
        burst_len: 5,
        duplicate: 0.05,
        reorder: 0.05,
        reorder_delay: Duration::from_millis(10),
    }
}

#[test]
fn one_percent_loss() {
    run(&faults(1, 0.01, 0.0), 20_000);
}

#[test]
fn five_percent_loss() {
    run(&faults(2, 0.05, 0.0), 20_000);
}

#[test]
fn twenty_percent_loss() {
    run(&faults(3, 0.20, 0.0), 20_000);
}

#[test]
fn loss_in_bursts() {
    run(&faults(4, 0.02, 0.5), 20_000);
}
