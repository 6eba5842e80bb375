//! Membership on the deterministic in-memory network: join convergence, failure detection,
//! no false verdicts under loss and a paused node, bounded traffic. Prints its figures.

use std::time::Duration;

use herald::membership::sim::MemberSim;
use herald::membership::{MemberEventKind, MemberState};

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
