//! Membership on the deterministic in-memory network: join convergence, failure detection,
//! no false verdicts under loss and a paused node, bounded traffic. Prints its figures.

use std::time::Duration;

use herald::membership::sim::MemberSim;
use herald::membership::{MemberEventKind, MemberState, MembershipConfig};

const PROBE: Duration = Duration::from_millis(200);

#[test]
fn hundred_nodes_join_detect_and_stay_calm_under_loss() {
    let mut sim = MemberSim::new(100, 42);
    let join = sim
        .run_until(Duration::from_secs(30), MemberSim::converged)
        .expect("100 nodes converge");
    println!("100 nodes, one seed: every node sees all 100 alive after {join:?}");

    // A killed node is declared failed by every other node.
    sim.kill(57);
    let first = sim
        .run_until(Duration::from_secs(20), |s| {
            s.count_events(MemberEventKind::Failed, |n| n == 57) > 0
        })
        .expect("someone declares the killed node failed");
    let rest = sim
        .run_until(Duration::from_secs(20), |s| {
            s.all_see(57, MemberState::Failed)
        })
        .expect("every node declares the killed node failed");
    println!(
        "killed node: first failed verdict after {first:?}, all 99 after {:?}",
        first + rest
    );

    // 10% loss and one node paused for two probe intervals: no live node declared failed.
    sim.loss = 0.10;
    sim.run_for(Duration::from_secs(5));
    sim.pause(13, 2 * PROBE);
    sim.run_for(Duration::from_secs(30));
    sim.pause(71, 2 * PROBE);
    sim.run_for(Duration::from_secs(30));
    let false_failed = sim.count_events(MemberEventKind::Failed, |n| n != 57);
    let suspicions = sim.count_events(MemberEventKind::Suspect, |n| n != 57);
    let refuted = sim.count_events(MemberEventKind::Alive, |n| n != 57);
    println!(
        "65 s at 10% loss, two nodes paused 400 ms: {false_failed} false failed, \
         {suspicions} suspicion events, {refuted} refutations seen"
    );
    assert_eq!(false_failed, 0, "a live node was declared failed");
    assert!(sim.nodes.iter().enumerate().all(|(i, n)| i == 57
        || n.membership.state_of(58) == Some(MemberState::Failed)
        || n.membership.state_of(58).is_none()));
}

#[test]
fn traffic_per_node_is_bounded_in_cluster_size() {
    let mut figures = Vec::new();
    for n in [10, 100] {
        let mut sim = MemberSim::new(n, 7);
        sim.run_until(Duration::from_secs(30), MemberSim::converged)
            .expect("converges");
        // Past the gossip of the joins themselves: the steady state.
        sim.run_for(Duration::from_secs(15));
        let (msgs, bytes) = sim.traffic(Duration::from_secs(20));
        println!("{n} nodes: {msgs:.1} messages and {bytes:.0} bytes per node per second");
        figures.push((msgs, bytes));
    }
    // One probe and its answer per interval, a few indirect probes: the same at 10 and 100.
    let (small, large) = (figures[0], figures[1]);
    assert!(
        large.0 < small.0 * 1.5,
        "messages per node grow with the cluster: {figures:?}"
    );
    assert!(
        large.1 < small.1 * 2.0,
        "bytes per node grow with the cluster: {figures:?}"
    );
}

/// Whether nodes `side` hold every node of `other` as failed (or have forgotten it).
fn side_lost_other(
    sim: &MemberSim,
    side: std::ops::Range<usize>,
    other: std::ops::Range<usize>,
) -> bool {
    side.clone().all(|i| {
        other.clone().all(|j| {
            let state = sim.nodes[i].membership.state_of(j as u64 + 1);
            matches!(state, None | Some(MemberState::Failed))
        })
    })
}

#[test]
fn a_partition_longer_than_the_suspicion_time_heals_to_one_view() {
    let mut sim = MemberSim::new(20, 5);
    sim.run_until(Duration::from_secs(30), MemberSim::converged)
        .expect("converges");
    // Two halves, the seed (node 0) in the first, apart for 10 s (suspicion: 1 to 3 s).
    sim.partition = Some(10);
    sim.run_for(Duration::from_secs(10));
    assert!(side_lost_other(&sim, 0..10, 10..20) && side_lost_other(&sim, 10..20, 0..10));
    // Healed, with 10% loss: one view again.
    sim.partition = None;
    sim.loss = 0.10;
    let took = sim
        .run_until(Duration::from_secs(30), MemberSim::converged)
        .expect("the halves converge to one membership view");
    println!("20 nodes, halves apart 10 s: one view {took:?} after the heal (10% loss)");
}

/// A partition that outlasts the memory of failed members (60 s) leaves no trace of the
/// other side; the periodic full-state exchange with a seed that is not a live member
/// brings the halves together. Without it they would stay apart for good.
#[test]
fn a_partition_longer_than_the_failed_members_memory_heals_through_push_pull() {
    let run = |sync_interval: Duration| {
        let mut template = MembershipConfig::new(0, 0);
        template.sync_interval = sync_interval;
        let mut sim = MemberSim::with_config(20, 9, template);
        sim.run_until(Duration::from_secs(30), MemberSim::converged)
            .expect("converges");
        sim.partition = Some(10);
        sim.run_for(Duration::from_secs(75));
        let forgotten = (10..20).all(|i| sim.nodes[i].membership.state_of(1).is_none());
        assert!(forgotten, "the second half forgot the first");
        assert!(side_lost_other(&sim, 0..10, 10..20));
        sim.partition = None;
        sim.run_until(Duration::from_secs(60), MemberSim::converged)
    };
    let took = run(Duration::from_secs(30)).expect("the halves converge after the heal");
    println!("20 nodes, halves apart 75 s: one view {took:?} after the heal");
    assert!(
        run(Duration::ZERO).is_none(),
        "without the exchange the halves stay apart (this test would prove nothing)"
    );
}
