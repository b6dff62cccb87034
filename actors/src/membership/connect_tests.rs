//! Whom the reconnect tick targets, and how back-off spaces the attempts.

use std::time::Duration;

use ractor::ActorId;
use tokio::time::Instant;

use super::connect::{Attempt, Reconnector, Target};
use super::sessions::{SessionEvent, SessionEventKind, SessionTracker};
use super::table::{MemberTable, Timing};
use super::types::MemberInfo;

const SECOND: Duration = Duration::from_secs(1);

fn info(name: &str, port: u16) -> MemberInfo {
    MemberInfo {
        name: name.to_string(),
        pid: 1,
        cluster_addr: ([127, 0, 0, 1], port).into(),
        http_addr: ([127, 0, 0, 1], 1).into(),
        tags: Vec::new(),
        started_at_ms: 1,
        incarnation: 1,
        catalog: Vec::new(),
        holds_registry: false,
        max_instances: None,
        version: "0.1.0".to_string(),
    }
}

/// b alive, c dead, as seen at `t0 + 5 s`.
fn table(t0: Instant) -> MemberTable {
    let timing = Timing {
        suspect_after: SECOND,
        dead_after: 3 * SECOND,
    };
    let mut table = MemberTable::new(info("me", 7000), timing);
    table.on_heartbeat(info("c", 7002), t0);
    table.on_heartbeat(info("b", 7001), t0 + 5 * SECOND);
    table.tick(t0 + 5 * SECOND);
    table
}

fn names(targets: &[Target]) -> Vec<String> {
    targets.iter().map(Target::address).collect()
}

fn fail_all(reconnect: &mut Reconnector, targets: &[Target], now: Instant) {
    for target in targets {
        reconnect.done(target, &Attempt::Failed("refused".into()), now);
    }
}

#[test]
fn seeds_live_members_every_tick_and_dead_ones_with_back_off() {
    let t0 = Instant::now();
    let (table, sessions) = (table(t0), SessionTracker::default());
    let mut reconnect = Reconnector::new(vec!["seed:9".to_string()]);
    let now = t0 + 5 * SECOND;

    let first = reconnect.plan(&table, &sessions, now);
    assert_eq!(
        names(&first),
        ["seed:9", "127.0.0.1:7001", "127.0.0.1:7002"]
    );
    assert!(
        reconnect.plan(&table, &sessions, now).is_empty(),
        "all in flight"
    );
    fail_all(&mut reconnect, &first, now);

    let second = reconnect.plan(&table, &sessions, now + SECOND);
    assert_eq!(
        names(&second),
        ["seed:9", "127.0.0.1:7001", "127.0.0.1:7002"]
    );
    fail_all(&mut reconnect, &second, now + SECOND);

    // Back-off doubled for the seed and the dead member; the live one is tried every tick.
    let third = reconnect.plan(&table, &sessions, now + 2 * SECOND);
    assert_eq!(names(&third), ["127.0.0.1:7001"]);
    fail_all(&mut reconnect, &third, now + 2 * SECOND);
    let fourth = reconnect.plan(&table, &sessions, now + 3 * SECOND);
    assert_eq!(
        names(&fourth),
        ["seed:9", "127.0.0.1:7001", "127.0.0.1:7002"]
    );
}

#[test]
fn nothing_is_tried_while_connected_and_seeds_rest_once_joined() {
    let t0 = Instant::now();
    let table = table(t0);
    let mut sessions = SessionTracker::default();
    for (id, node, port) in [(1, "b@127.0.0.1", 7001), (2, "c@127.0.0.1", 7002)] {
        let event = SessionEvent {
            kind: SessionEventKind::Authenticated,
            id: ActorId::Local(id),
            peer_addr: format!("127.0.0.1:{}", 40000 + id),
            is_server: true,
            peer_node: Some(node.to_string()),
            connection_string: Some(format!("127.0.0.1:{port}")),
        };
        sessions.apply(&event, t0);
    }
    let mut reconnect = Reconnector::new(vec!["seed:9".to_string()]);
    assert!(reconnect
        .plan(&table, &sessions, t0 + 5 * SECOND)
        .is_empty());
}

#[test]
fn a_seed_that_is_this_node_is_dropped_and_an_opened_one_remembered() {
    let t0 = Instant::now();
    let mut reconnect = Reconnector::new(vec!["me:1".to_string(), "other:2".to_string()]);
    let addr = "127.0.0.1:7100".parse().unwrap();
    reconnect.done(&Target::Seed("me:1".into()), &Attempt::OwnAddress, t0);
    reconnect.done(&Target::Seed("other:2".into()), &Attempt::Opened(addr), t0);
    assert!(reconnect.has_seeds());
    assert!(reconnect.is_seed_addr("127.0.0.1:7100"));
    reconnect.done(&Target::Seed("other:2".into()), &Attempt::OwnAddress, t0);
    assert!(!reconnect.has_seeds());
}

/// Members a peer named (cluster TLS gossip) are dialed with the seeds' back-off until they are
/// in the table; a member already known is not learned again.
#[test]
fn learned_members_are_dialed_until_known() {
    let t0 = Instant::now();
    let now = t0 + 5 * SECOND;
    let (mut table, sessions) = (table(t0), SessionTracker::default());
    let mut reconnect = Reconnector::new(Vec::new());
    reconnect.learn("d".to_string(), ([127, 0, 0, 1], 7003).into());
    let first = reconnect.plan(&table, &sessions, now);
    assert!(
        names(&first).contains(&"127.0.0.1:7003".to_string()),
        "{first:?}"
    );
    fail_all(&mut reconnect, &first, now);
    // Backed off: not on the next tick.
    let next = reconnect.plan(&table, &sessions, now + SECOND / 2);
    assert!(
        !names(&next).contains(&"127.0.0.1:7003".to_string()),
        "{next:?}"
    );
    fail_all(&mut reconnect, &next, now + SECOND / 2);
    // Once its heartbeat arrived it is a member like the others, no longer a learned target.
    table.on_heartbeat(info("d", 7003), now + 2 * SECOND);
    let later = reconnect.plan(&table, &sessions, now + 10 * SECOND);
    assert!(
        !later.iter().any(|t| matches!(t, Target::Learned { .. })),
        "{later:?}"
    );
}
