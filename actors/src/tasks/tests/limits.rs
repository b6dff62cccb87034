//! An HTTP instance's server within its limits: a connection that never finishes its request
//! head, or sends nothing, is closed after the header timeout; a body over the limit is a 413.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::tasks::{catalog, echo_type, Probes};
use super::{eventually, http_get, start_node_with, TestNode, PATIENCE};
use crate::tasks::TaskHttpLimits;

const HEADER_TIMEOUT: Duration = Duration::from_secs(1);
/// Generous: the machine may be busy.
const CLOSE_DEADLINE: Duration = Duration::from_secs(30);

/// Reads until the server closes the connection; the time that took, and what was read.
async fn until_closed(socket: &mut TcpStream) -> (Duration, Vec<u8>) {
    let started = Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(CLOSE_DEADLINE, socket.read_to_end(&mut answer)).await;
    assert!(
        read.is_ok(),
        "the connection is still open after {CLOSE_DEADLINE:?}"
    );
    (started.elapsed(), answer)
}

/// A node running one echo instance whose HTTP server has `limits`, and where it serves.
async fn echo_within(name: &str, limits: TaskHttpLimits) -> (TestNode, SocketAddr) {
    let node = start_node_with(name, catalog(&Probes::default()), vec![], |config| {
        config.http_limits = limits;
    })
    .await;
    node.assign("t.echo", 0, &echo_type()).await;
    let addr = node.serving("t.echo", 0).await;
    (node, addr)
}

#[tokio::test]
async fn half_open_connections_are_closed_and_big_bodies_refused() {
    let (_node, addr) = echo_within(
        "limits-n1",
        TaskHttpLimits {
            header_timeout: HEADER_TIMEOUT,
            max_body_bytes: 64,
            ..TaskHttpLimits::default()
        },
    )
    .await;

    // Seen failing before the fix: with no timer, both stayed open for good.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let (slow_took, _) = until_closed(&mut slow).await;
    let (silent_took, _) = until_closed(&mut silent).await;
    assert!(
        slow_took >= HEADER_TIMEOUT / 2,
        "closed after {slow_took:?}"
    );
    assert!(silent_took <= CLOSE_DEADLINE, "{silent_took:?}");
    // The instance still serves.
    let answer = http_get(addr, "/anything").await.expect("an answer");
    assert_eq!(answer.status, 200);

    let mut big = TcpStream::connect(addr).await.unwrap();
    let body = "b".repeat(100);
    let request = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    big.write_all(request.as_bytes()).await.unwrap();
    let (_, answer) = until_closed(&mut big).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("over 64 bytes"), "{answer}");
}

#[tokio::test]
async fn connections_past_the_cap_are_refused_with_503() {
    let (node, addr) = echo_within(
        "limits-n2",
        TaskHttpLimits {
            max_connections: 2,
            ..TaskHttpLimits::default()
        },
    )
    .await;

    // Two idle keep-alive connections hold the cap (each answered once, so both are accepted).
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut socket = TcpStream::connect(addr).await.unwrap();
        socket
            .write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut head = [0u8; 12];
        socket.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
        held.push(socket);
    }
    // Seen failing before the fix: the third connection was served like the others.
    let mut third = TcpStream::connect(addr).await.unwrap();
    third
        .write_all(b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (_, answer) = until_closed(&mut third).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("limit 2"), "{answer}");
    let group = [("group", "t.echo")];
    assert_eq!(
        node.metric("lathe_task_http_refused_total", &group),
        Some(1.0)
    );
    assert_eq!(
        node.metric("lathe_task_http_connections", &group),
        Some(2.0)
    );

    // Closing one frees its place.
    drop(held.pop());
    eventually("a connection accepted again", PATIENCE, || async {
        http_get(addr, "/b").await.ok().filter(|a| a.status == 200)
    })
    .await;
}

#[tokio::test]
async fn at_the_cap_a_connection_without_a_request_makes_room() {
    let (node, addr) = echo_within(
        "limits-n3",
        TaskHttpLimits {
            max_connections: 2,
            ..TaskHttpLimits::default()
        },
    )
    .await;

    // Two connections hold the cap without a request: half a head, and nothing at all.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let silent = TcpStream::connect(addr).await.unwrap();
    // Seen failing before: 503 until the header timeout (10 s) closed them.
    let answer = http_get(addr, "/a").await.expect("an answer");
    assert_eq!(answer.status, 200, "{}", answer.body);
    // The oldest of them (the slow one) was closed to make room.
    let (took, _) = until_closed(&mut slow).await;
    assert!(took < Duration::from_secs(5), "closed after {took:?}");
    assert_eq!(
        node.metric("lathe_task_http_refused_total", &[("group", "t.echo")]),
        Some(0.0)
    );
    drop(silent);
}
