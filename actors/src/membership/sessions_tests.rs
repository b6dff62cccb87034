//! The refusal rule and session bookkeeping.

use std::time::Duration;

use ractor::ActorId;
use tokio::time::Instant;

use super::sessions::{
    classify_unauthenticated_close, member_name, Applied, CloseVerdict, Closed, SessionEvent,
    SessionEventKind, SessionTracker, UnauthenticatedClose, REFUSAL_GRACE,
};

const OWN: &str = "a@127.0.0.1";

fn event(kind: SessionEventKind, id: u64, is_server: bool, peer: Option<&str>) -> SessionEvent {
    SessionEvent {
        kind,
        id: ActorId::Local(id),
        peer_addr: format!("127.0.0.1:{}", 7000 + id),
        is_server,
        peer_node: peer.map(str::to_string),
        connection_string: peer.map(|p| format!("{}:7100", p.split('@').nth(1).unwrap_or("?"))),
    }
}

fn close(peer: Option<&str>) -> UnauthenticatedClose {
    UnauthenticatedClose {
        peer_addr: "127.0.0.1:7001".to_string(),
        is_server: true,
        peer_node: peer.map(str::to_string),
        connection_string: None,
        lifetime: Duration::from_millis(5),
        closed_at: Instant::now(),
    }
}

#[test]
fn the_refusal_rule() {
    assert_eq!(
        classify_unauthenticated_close(&close(Some("b@h")), OWN, false),
        CloseVerdict::Refused
    );
    assert_eq!(
        classify_unauthenticated_close(&close(Some("b@h")), OWN, true),
        CloseVerdict::Superseded
    );
    assert_eq!(
        classify_unauthenticated_close(&close(Some(OWN)), OWN, false),
        CloseVerdict::SelfConnection
    );
    assert_eq!(
        classify_unauthenticated_close(&close(None), OWN, false),
        CloseVerdict::Dropped
    );
    assert_eq!(
        classify_unauthenticated_close(&close(None), OWN, true),
        CloseVerdict::Superseded
    );
}

#[test]
fn member_names_drop_the_host() {
    assert_eq!(member_name("node-1@10.0.0.1"), "node-1");
    assert_eq!(member_name("plain"), "plain");
}

#[test]
fn a_wrong_cookie_is_refused_after_the_grace() {
    let (mut s, t0) = (SessionTracker::default(), Instant::now());
    s.apply(&event(SessionEventKind::Opened, 1, true, None), t0);
    let applied = s.apply(
        &event(SessionEventKind::Closed, 1, true, Some("bad@127.0.0.1")),
        t0 + Duration::from_millis(5),
    );
    assert_eq!(applied, Applied::Closed(Closed::Unauthenticated));
    assert!(
        s.take_due(OWN, t0 + Duration::from_millis(10)).is_empty(),
        "not before the grace"
    );
    let due = s.take_due(OWN, t0 + REFUSAL_GRACE + Duration::from_millis(10));
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].1, CloseVerdict::Refused);
    assert_eq!(due[0].0.lifetime, Duration::from_millis(5));
    assert!(!s.has_pending());
}

#[test]
fn a_lost_election_is_not_a_refusal() {
    let (mut s, t0) = (SessionTracker::default(), Instant::now());
    s.apply(&event(SessionEventKind::Opened, 1, true, None), t0);
    s.apply(&event(SessionEventKind::Opened, 2, false, None), t0);
    s.apply(&event(SessionEventKind::Closed, 1, true, Some("b@h")), t0);
    let up = s.apply(
        &event(SessionEventKind::Authenticated, 2, false, Some("b@h")),
        t0 + Duration::from_millis(300),
    );
    assert_eq!(up, Applied::Up(Some("b".to_string())));
    let due = s.take_due(OWN, t0 + REFUSAL_GRACE);
    assert_eq!(due[0].1, CloseVerdict::Superseded);
}

#[test]
fn closing_an_established_session_names_the_member_unless_another_remains() {
    let (mut s, t0) = (SessionTracker::default(), Instant::now());
    for id in [1, 2] {
        s.apply(&event(SessionEventKind::Opened, id, id == 1, None), t0);
        s.apply(
            &event(SessionEventKind::Authenticated, id, id == 1, Some("b@h")),
            t0,
        );
    }
    assert!(s.is_connected("b", "nowhere"));
    let first = s.apply(&event(SessionEventKind::Closed, 1, true, Some("b@h")), t0);
    assert_eq!(first, Applied::Closed(Closed::Established { member: None }));
    let second = s.apply(&event(SessionEventKind::Closed, 2, false, Some("b@h")), t0);
    assert_eq!(
        second,
        Applied::Closed(Closed::Established {
            member: Some("b".to_string())
        })
    );
    assert!(!s.is_connected("b", "h:7100") && !s.any_established());
    assert_eq!(
        s.apply(&event(SessionEventKind::Closed, 9, false, None), t0),
        Applied::Closed(Closed::Unknown)
    );
}

#[test]
fn an_outgoing_handshake_counts_as_connecting_for_a_while() {
    let (mut s, t0) = (SessionTracker::default(), Instant::now());
    s.apply(&event(SessionEventKind::Opened, 3, false, None), t0);
    assert!(s.is_handshaking("127.0.0.1:7003", t0 + Duration::from_secs(1)));
    assert!(!s.is_handshaking("127.0.0.1:7003", t0 + Duration::from_secs(60)));
    assert!(!s.is_handshaking("127.0.0.1:7004", t0));
}
