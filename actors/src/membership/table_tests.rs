//! Status transitions of the member table, driven by an injected clock.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use super::table::{DeathCause, HeartbeatOutcome, MemberTable, Timing};
use super::types::{MemberInfo, MemberStatus};
use super::zookeeper::ZkMember;

const SUSPECT: Duration = Duration::from_secs(1);
const DEAD: Duration = Duration::from_secs(3);

fn info(name: &str, incarnation: u64) -> MemberInfo {
    let port = 7000 + name.len() as u16;
    MemberInfo {
        name: name.to_string(),
        pid: 42,
        cluster_addr: ([127, 0, 0, 1], port).into(),
        http_addr: ([127, 0, 0, 1], port + 100).into(),
        tags: vec!["t".to_string()],
        started_at_ms: 1_000,
        incarnation,
        catalog: Vec::new(),
        holds_registry: false,
        max_instances: None,
        version: "0.1.0".to_string(),
    }
}

fn table() -> MemberTable {
    MemberTable::new(
        info("me", 1),
        Timing {
            suspect_after: SUSPECT,
            dead_after: DEAD,
        },
    )
}

fn member(info: MemberInfo, czxid: i64) -> ZkMember {
    ZkMember {
        info: Some(info),
        czxid,
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn a_first_heartbeat_admits_an_alive_member() {
    let (mut t, t0) = (table(), Instant::now());
    let (outcome, changes) = t.on_heartbeat(info("b", 5), t0);
    assert_eq!(outcome, HeartbeatOutcome::Accepted);
    assert_eq!(changes.len(), 1);
    assert_eq!(
        (changes[0].from, changes[0].to),
        (None, MemberStatus::Alive)
    );
    assert_eq!(t.status("b"), Some(MemberStatus::Alive));
    assert_eq!(t.status("me"), Some(MemberStatus::Alive));
}

#[test]
fn silence_turns_alive_into_suspect_then_dead() {
    let (mut t, t0) = (table(), Instant::now());
    t.on_heartbeat(info("b", 5), t0);
    assert!(t.tick(t0 + ms(999)).is_empty());
    let changes = t.tick(t0 + SUSPECT);
    assert_eq!(changes[0].to, MemberStatus::Suspect);
    assert!(t.tick(t0 + DEAD - ms(1)).is_empty());
    let changes = t.tick(t0 + DEAD);
    assert_eq!(
        (changes[0].to, changes[0].cause),
        (MemberStatus::Dead, Some(DeathCause::Silence))
    );
    assert!(
        t.tick(t0 + DEAD * 10).is_empty(),
        "dead stays dead and listed"
    );
    assert_eq!(t.views(t0 + DEAD * 10).len(), 2);
}

#[test]
fn a_closed_session_makes_suspect_at_once_and_a_heartbeat_brings_it_back() {
    let (mut t, t0) = (table(), Instant::now());
    t.on_heartbeat(info("b", 5), t0);
    assert_eq!(
        t.on_session_closed("b", t0 + ms(10))[0].to,
        MemberStatus::Suspect
    );
    assert!(
        t.tick(t0 + ms(500)).is_empty(),
        "still suspect while the session is closed"
    );
    t.on_heartbeat(info("b", 5), t0 + ms(600));
    assert_eq!(t.status("b"), Some(MemberStatus::Alive));
}

#[test]
fn a_dead_member_comes_back_only_with_a_newer_incarnation() {
    let (mut t, t0) = (table(), Instant::now());
    t.on_heartbeat(info("b", 5), t0);
    t.tick(t0 + DEAD);
    let later = t0 + DEAD + ms(100);
    let (outcome, changes) = t.on_heartbeat(info("b", 5), later);
    assert_eq!(outcome, HeartbeatOutcome::Refute { incarnation: 5 });
    assert!(changes.is_empty());
    assert_eq!(t.status("b"), Some(MemberStatus::Dead));
    let (outcome, changes) = t.on_heartbeat(info("b", 6), later);
    assert_eq!(outcome, HeartbeatOutcome::Accepted);
    assert_eq!(changes[0].to, MemberStatus::Alive);
}

#[test]
fn heartbeats_from_an_older_process_are_ignored() {
    let (mut t, t0) = (table(), Instant::now());
    t.on_heartbeat(info("b", 9), t0);
    let mut old = info("b", 3);
    old.pid = 7;
    assert_eq!(t.on_heartbeat(old, t0 + ms(10)).0, HeartbeatOutcome::Stale);
    assert_eq!(t.views(t0)[0].pid, 42);
}

#[test]
fn leaving_is_dead_at_once() {
    let (mut t, t0) = (table(), Instant::now());
    t.on_heartbeat(info("b", 5), t0);
    let changes = t.on_leave("b", 5);
    assert_eq!(
        (changes[0].to, changes[0].cause),
        (MemberStatus::Dead, Some(DeathCause::Left))
    );
    assert!(
        t.on_session_closed("b", t0 + ms(5)).is_empty(),
        "a later session close changes nothing"
    );
    assert!(t.on_leave("nobody", 1).is_empty());
}

#[test]
fn zookeeper_lists_members_and_their_vanishing_kills() {
    let (mut t, t0) = (table(), Instant::now());
    let listing = |names: &[&str]| -> BTreeMap<String, ZkMember> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.to_string(), member(info(n, 5), i as i64)))
            .collect()
    };
    let changes = t.on_zookeeper(Some(listing(&["me", "b"])), t0);
    assert_eq!(
        (changes.len(), changes[0].to),
        (1, MemberStatus::Suspect),
        "known from zookeeper only"
    );
    assert_eq!(t.views(t0)[0].last_heartbeat_ms_ago, None);
    t.on_heartbeat(info("b", 5), t0 + ms(100));
    assert_eq!(t.status("b"), Some(MemberStatus::Alive));

    assert!(
        t.on_zookeeper(None, t0 + ms(200)).is_empty(),
        "zookeeper down proves nothing"
    );
    let changes = t.on_zookeeper(Some(listing(&["me"])), t0 + ms(300));
    assert_eq!(changes[0].cause, Some(DeathCause::ZookeeperVanished));
    // Newer heartbeats do not revive it while its member node is still gone...
    assert_eq!(
        t.on_heartbeat(info("b", 6), t0 + ms(400)).0,
        HeartbeatOutcome::Stale
    );
    // ...but its member node re-created with a newer incarnation does.
    let mut back = listing(&["me"]);
    back.insert("b".to_string(), member(info("b", 6), 9));
    t.on_zookeeper(Some(back), t0 + ms(500));
    t.on_heartbeat(info("b", 6), t0 + ms(600));
    assert_eq!(t.status("b"), Some(MemberStatus::Alive));
}

#[test]
fn members_never_seen_in_zookeeper_are_not_killed_by_a_listing() {
    let (mut t, t0) = (table(), Instant::now());
    t.on_heartbeat(info("b", 5), t0);
    assert!(t
        .on_zookeeper(Some(BTreeMap::new()), t0 + ms(10))
        .is_empty());
    assert_eq!(t.status("b"), Some(MemberStatus::Alive));
}

#[test]
fn views_are_sorted_with_self_and_counted() {
    let (mut t, t0) = (table(), Instant::now());
    t.on_heartbeat(info("zed", 5), t0);
    t.on_heartbeat(info("abe", 5), t0);
    t.on_leave("zed", 5);
    let views = t.views(t0 + ms(20));
    let names: Vec<_> = views.iter().map(|v| (v.name.as_str(), v.is_self)).collect();
    assert_eq!(names, [("abe", false), ("me", true), ("zed", false)]);
    assert_eq!(views[0].last_heartbeat_ms_ago, Some(20));
    assert_eq!(views[1].last_heartbeat_ms_ago, None);
    assert!(!views[0].leader && views[0].catalog.is_empty());
    let json = serde_json::to_value(&views[2]).unwrap();
    assert_eq!(json["status"], "dead");
    assert_eq!(json["cluster_addr"], "127.0.0.1:7003");
    let counts = t.counts();
    assert_eq!(counts.map(|(_, n)| n), [2, 0, 1]);
}

#[test]
fn a_local_pause_is_not_held_against_peers() {
    let (mut t, t0) = (table(), Instant::now());
    t.on_heartbeat(info("b", 5), t0);
    t.on_local_pause(Duration::from_secs(10));
    assert!(t.tick(t0 + Duration::from_secs(10) + ms(500)).is_empty());
    assert_eq!(t.status("b"), Some(MemberStatus::Alive));
    assert_eq!(
        t.tick(t0 + Duration::from_secs(10) + DEAD)[0].to,
        MemberStatus::Dead
    );
}

#[test]
fn the_oldest_zookeeper_member_leads_and_keeps_leading_while_zookeeper_is_away() {
    let (mut t, t0) = (table(), Instant::now());
    assert_eq!(
        t.leader(),
        None,
        "no zookeeper listing and no registry holder"
    );
    let listing: BTreeMap<String, ZkMember> = [("me", 20), ("b", 10), ("c", 30)]
        .iter()
        .map(|(n, z)| (n.to_string(), member(info(n, 5), *z)))
        .collect();
    t.on_zookeeper(Some(listing), t0);
    assert_eq!(t.leader().as_deref(), Some("b"));
    assert!(
        t.views(t0).iter().all(|v| v.name == "me"),
        "members known only from zookeeper are not listed before they are heard"
    );
    t.on_heartbeat(info("b", 5), t0);
    let views = t.views(t0);
    assert_eq!(
        views
            .iter()
            .filter(|v| v.leader)
            .map(|v| v.name.as_str())
            .collect::<Vec<_>>(),
        vec!["b"]
    );
    t.on_zookeeper(None, t0 + ms(10));
    assert_eq!(
        t.leader().as_deref(),
        Some("b"),
        "no new leader without zookeeper"
    );
    let without_b: BTreeMap<String, ZkMember> = [("me", 20), ("c", 30)]
        .iter()
        .map(|(n, z)| (n.to_string(), member(info(n, 5), *z)))
        .collect();
    t.on_zookeeper(Some(without_b), t0 + ms(20));
    assert_eq!(t.leader().as_deref(), Some("me"));
}

#[test]
fn without_zookeeper_the_registry_holder_leads() {
    let (mut t, t0) = (table(), Instant::now());
    let mut founder = info("f", 5);
    founder.holds_registry = true;
    t.on_heartbeat(founder, t0);
    assert_eq!(t.leader().as_deref(), Some("f"));
}

#[test]
fn a_closed_session_and_silence_mean_dead_sooner_than_silence_alone() {
    let (mut t, t0) = (table(), Instant::now());
    t.on_heartbeat(info("b", 5), t0);
    t.on_heartbeat(info("c", 5), t0);
    t.on_session_closed("b", t0 + ms(10));
    // b: closed and silent for 1.5 × suspect_after; c: silent as long, session open.
    t.tick(t0 + SUSPECT * 3 / 2);
    assert_eq!(t.status("b"), Some(MemberStatus::Dead));
    assert_eq!(t.status("c"), Some(MemberStatus::Suspect));
    t.tick(t0 + DEAD);
    assert_eq!(t.status("c"), Some(MemberStatus::Dead));
}

#[test]
fn reachability_counts_alive_peers_against_all_but_those_that_left_or_vanished() {
    let (mut t, t0) = (table(), Instant::now());
    assert_eq!(t.reachability(), (1, 1), "alone: a majority of itself");
    let listing = |names: &[&str]| -> BTreeMap<String, ZkMember> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.to_string(), member(info(n, 5), i as i64)))
            .collect()
    };
    t.on_zookeeper(Some(listing(&["me", "b", "c", "d", "e", "f"])), t0);
    for name in ["b", "c", "d", "e", "f"] {
        t.on_heartbeat(info(name, 5), t0);
    }
    assert_eq!(t.reachability(), (6, 6));
    // d leaves gracefully: it no longer counts; the others fall silent except b.
    t.on_leave("d", 5);
    t.on_heartbeat(info("b", 5), t0 + DEAD);
    t.tick(t0 + DEAD);
    assert_eq!(t.reachability(), (2, 5), "me and b of me, b, c, e, f");
    // Cut off from everyone (ZooKeeper away: its last listing stands): a minority.
    t.on_zookeeper(None, t0 + DEAD);
    t.tick(t0 + DEAD * 3);
    assert_eq!(t.reachability(), (1, 5));
    // Back in ZooKeeper: the members whose nodes are gone no longer count.
    t.on_heartbeat(info("b", 5), t0 + DEAD * 3);
    t.on_zookeeper(Some(listing(&["me", "b"])), t0 + DEAD * 3);
    assert_eq!(
        t.reachability(),
        (1, 2),
        "b is still dead here: it came back with the same incarnation"
    );
}

#[test]
fn a_dead_leader_is_passed_over_before_its_zookeeper_node_goes_but_not_by_a_minority() {
    let (mut t, t0) = (table(), Instant::now());
    let listing: BTreeMap<String, ZkMember> = [("b", 10), ("me", 20), ("c", 30)]
        .iter()
        .map(|(n, z)| (n.to_string(), member(info(n, 5), *z)))
        .collect();
    t.on_zookeeper(Some(listing), t0);
    t.on_heartbeat(info("b", 5), t0);
    t.on_heartbeat(info("c", 5), t0);
    assert_eq!(t.leader().as_deref(), Some("b"));
    // b falls silent (SIGKILL): dead by heartbeats while its member node is still listed.
    t.on_heartbeat(info("c", 5), t0 + DEAD);
    t.tick(t0 + DEAD);
    assert_eq!(t.status("b"), Some(MemberStatus::Dead));
    assert_eq!(
        t.leader().as_deref(),
        Some("me"),
        "me and c are a majority of 3"
    );
    // c falls silent too: me alone is a minority and must not pass over b.
    t.tick(t0 + DEAD * 3);
    assert_eq!(t.leader(), None);
}
