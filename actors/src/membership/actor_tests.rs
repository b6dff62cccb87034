//! In-process tests of one membership node: start, list itself, metrics, leave, errors.
//! (Several nodes need several processes: see `actors/tests/membership.rs`.)

use std::net::{SocketAddr, TcpListener};

use ractor::ActorStatus;

use super::{start_membership, JoinState, MemberStatus, MembershipConfig};

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

fn config(name: &str, cluster_addr: SocketAddr) -> MembershipConfig {
    MembershipConfig::new(
        name,
        cluster_addr,
        "127.0.0.1:7500".parse().unwrap(),
        "cookie",
    )
}

fn gauge(registry: &prometheus::Registry, status: &str) -> Option<f64> {
    registry
        .gather()
        .iter()
        .filter(|family| family.name() == "lathe_cluster_members")
        .flat_map(|family| family.get_metric().iter())
        .find(|m| m.get_label().iter().any(|l| l.value() == status))
        .map(|m| m.get_gauge().get_value())
}

#[tokio::test]
async fn a_lone_node_founds_a_cluster_lists_itself_and_leaves_cleanly() {
    let addr = free_addr();
    let registry = prometheus::Registry::new();
    let handle = start_membership(config("solo", addr), registry.clone(), None)
        .await
        .expect("start");

    let published = handle.subscribe().borrow().clone();
    assert_eq!(
        published.len(),
        1,
        "the first list is published before start returns"
    );
    let members = handle.members().await;
    assert_eq!(members.len(), 1);
    let me = &members[0];
    assert!(me.is_self && me.status == MemberStatus::Alive && me.cluster_addr == addr);
    assert_eq!(me.pid, std::process::id());
    assert_eq!(*handle.join_state().borrow(), JoinState::Founding);
    assert!(!handle.is_fenced() && handle.refusals().is_empty());
    assert_eq!(gauge(&registry, "alive"), Some(1.0));
    assert_eq!(gauge(&registry, "dead"), Some(0.0));

    handle.shutdown().await;
    assert_eq!(handle.actor().get_status(), ActorStatus::Stopped);
    assert_eq!(
        handle.members().await.len(),
        1,
        "members() falls back to the last list"
    );

    // Everything was torn down: the cluster port can be bound again.
    let again = start_membership(config("solo", addr), prometheus::Registry::new(), None).await;
    again.expect("restart on the same port").shutdown().await;
}

#[tokio::test]
async fn an_unreachable_seed_keeps_the_node_joining() {
    let seed = free_addr();
    let mut config = config("lonely", free_addr());
    config.join = vec![seed.to_string()];
    let handle = start_membership(config, prometheus::Registry::new(), None)
        .await
        .expect("start");
    assert_eq!(*handle.join_state().borrow(), JoinState::Joining);
    assert_eq!(handle.members().await.len(), 1);
    handle.shutdown().await;
}

#[tokio::test]
async fn a_node_whose_only_seed_is_itself_founds_the_cluster() {
    let addr = free_addr();
    let mut config = config("self-seeded", addr);
    config.join = vec![addr.to_string()];
    let handle = start_membership(config, prometheus::Registry::new(), None)
        .await
        .expect("start");
    let mut join = handle.join_state();
    let founding = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        join.wait_for(|j| *j == JoinState::Founding),
    );
    assert!(founding.await.is_ok_and(|r| r.is_ok()));
    handle.shutdown().await;
}

#[tokio::test]
async fn a_taken_cluster_port_fails_the_start_naming_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let err = start_membership(config("clash", addr), prometheus::Registry::new(), None)
        .await
        .err();
    let message = err.expect("the start fails").to_string();
    assert!(message.contains(&addr.to_string()), "{message}");
}

#[tokio::test]
async fn the_metric_is_registered_once_per_registry() {
    let registry = prometheus::Registry::new();
    let first = start_membership(config("m1", free_addr()), registry.clone(), None)
        .await
        .expect("start");
    let second = start_membership(config("m2", free_addr()), registry, None).await;
    assert!(second.is_err_and(|e| e.to_string().contains("lathe_cluster_members")));
    first.shutdown().await;
}

#[test]
fn bad_configs_are_rejected_with_the_setting_named() {
    let addr = free_addr();
    let mut bad = config("a@b", addr);
    assert!(bad.validate().unwrap_err().to_string().contains("name"));
    bad = config("a/b", addr);
    assert!(bad.validate().is_err(), "a name is a zookeeper node name");
    bad = config("a", "127.0.0.1:0".parse().unwrap());
    assert!(bad.validate().unwrap_err().to_string().contains("port"));
    bad = config("a", addr);
    bad.dead_after = bad.suspect_after;
    assert!(bad
        .validate()
        .unwrap_err()
        .to_string()
        .contains("dead after"));
    bad = config("a", addr);
    bad.join = vec!["nohost".to_string()];
    assert!(bad.validate().unwrap_err().to_string().contains("nohost"));
    assert!(config("a", addr).validate().is_ok());
}
