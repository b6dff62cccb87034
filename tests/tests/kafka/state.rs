//! State that follows its instance, on real nodes, a real ZooKeeper and a real Kafka-protocol
//! broker process: `my::Tally` (2 instances, `state = { changelog = true }`) counts the keyed
//! messages `my::Emitter` keeps emitting; the node of one tally is SIGKILLed mid-stream, the
//! instance moves to another node, restores its counts and offsets from the changelog before it
//! starts, and the counts end equal to exactly the acknowledged messages.

use crate::support::*;
use lathe_tests::kafka::KafkaBroker;
use lathe_tests::scenario::zk_cluster_with;
use lathe_tests::wait::wait_until;

#[test]
fn a_tally_whose_node_is_killed_mid_stream_moves_with_its_state_and_counts_stay_exact() {
    let broker = KafkaBroker::new().expect("start the kafka broker");
    let (_zk, mut cluster) = zk_cluster_with(3, kafka_node("kmove", &broker));
    let addr = cluster.node(0).http_addr().to_string();
    let topology = format!("{TOPOLOGY}{CHANGELOG}");
    let emitter = deploy(&addr, &topology);

    let producer = Producer::start(&emitter);
    wait_until("messages flowing", CONVERGE, || producer.total() >= 30);
    // A node that runs a tally but neither the emitter nor our REST address.
    let emitter_node = placed(&addr, "task.emitter").unwrap()[&0].0.clone();
    let tallies = placed(&addr, "task.tally").unwrap();
    let names: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|n| n.name().to_string())
        .collect();
    let (index, (victim, _)) = tallies
        .iter()
        .find(|(_, (node, _))| *node != emitter_node && *node != names[0])
        .map(|(i, p)| (*i, p.clone()))
        .unwrap_or_else(|| panic!("no tally alone on a node: {tallies:?}, emitter {emitter_node}"));
    let before = counts(&addr).expect("counts before the kill");
    assert!(
        before.values().sum::<u64>() > 0,
        "the tallies counted: {before:?}"
    );

    let position = names.iter().position(|n| *n == victim).expect("the victim");
    cluster.node_mut(position).kill();
    let moved = wait_until("the tally runs on another node", CONVERGE, || {
        let now = placed(&addr, "task.tally")?;
        match now.get(&index) {
            Some((node, _)) if *node != victim => Ok(node.clone()),
            other => Err(format!("{other:?}")),
        }
    });
    let at_kill = producer.total();
    wait_until("more messages after the move", CONVERGE, || {
        producer.total() >= at_kill + 30
    });
    let (acknowledged, refusals) = producer.finish();
    assert!(refusals.is_empty(), "emits refused: {refusals:?}");
    wait_for_counts(&addr, &acknowledged);

    let mover = cluster
        .nodes()
        .iter()
        .find(|n| n.name() == moved)
        .expect("the node the tally moved to");
    let restores = metric(
        mover.http_addr(),
        "lathe_state_restore_seconds_count",
        "group=\"task.tally\"",
    );
    assert!(restores >= 1.0, "the moved tally restored its state first");
    eprintln!(
        "moved task.tally/{index} from {victim} to {moved}; {} acknowledged, counted exactly",
        acknowledged.values().sum::<u64>()
    );
}
