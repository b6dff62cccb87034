//! The REST port's limits against a real node: connections past `--http-max-connections` get 503
//! with `Retry-After`; half-open connections (slowloris: a request head never finished, or
//! nothing sent at all) are closed after `--http-header-timeout`, after which the node answers
//! again; `/v1/watch` streams past `--max-watchers` get 503 with `Retry-After`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use lathe_tests::http::{self, SseReader};
use lathe_tests::node::NodeBuilder;
use lathe_tests::scenario::metric_value;
use lathe_tests::wait::wait_until;

const HEADER_TIMEOUT_SECS: u64 = 3;
const MAX_CONNECTIONS: usize = 6;
const DEADLINE: Duration = Duration::from_secs(60);

/// Whether the server has closed `socket` (EOF or reset); `false` while it is still open.
fn closed_by_server(socket: &mut TcpStream) -> bool {
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut buffer = [0u8; 512];
    match socket.read(&mut buffer) {
        Ok(0) => true,
        // A 408 or similar before closing is fine: keep reading until EOF.
        Ok(_) => false,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            false
        }
        Err(_) => true,
    }
}

#[test]
fn half_open_connections_are_closed_and_caps_answer_503_with_retry_after() {
    let node = NodeBuilder::new()
        .name("limits")
        .arg("--http-header-timeout")
        .arg(HEADER_TIMEOUT_SECS.to_string())
        .arg("--http-max-connections")
        .arg(MAX_CONNECTIONS.to_string())
        .arg("--max-watchers")
        .arg("2")
        .start();
    let addr = node.http_addr().to_string();

    // Slowloris: some connections start a request head and never finish it, others send nothing.
    let opened = Instant::now();
    let mut held: Vec<TcpStream> = (0..MAX_CONNECTIONS)
        .map(|i| {
            let mut socket = TcpStream::connect(&addr).expect("connect");
            if i % 2 == 0 {
                socket
                    .write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                    .unwrap();
            }
            socket
        })
        .collect();
    // With every connection slot held, a new connection is refused at once, saying why.
    // (A fresh connection each time: a pooled client connection would be one of those held.)
    let refused = wait_until("a connection past the cap to get 503", DEADLINE, || {
        let answer = raw_get(&addr, "/v1/health");
        if answer.starts_with("HTTP/1.1 503") {
            Ok(answer)
        } else {
            Err(answer)
        }
    });
    let lower = refused.to_ascii_lowercase();
    assert!(lower.contains("retry-after: 1"), "{refused}");
    assert!(lower.contains("too many connections"), "{refused}");

    // The held connections are closed by the header timeout (seen failing before: they stayed
    // open for good), not before it.
    wait_until("the half-open connections to be closed", DEADLINE, || {
        held.retain_mut(|socket| !closed_by_server(socket));
        held.is_empty()
    });
    let took = opened.elapsed();
    assert!(
        took >= Duration::from_secs(HEADER_TIMEOUT_SECS - 1),
        "closed after {took:?}, before the {HEADER_TIMEOUT_SECS} s header timeout"
    );
    println!("{MAX_CONNECTIONS} half-open connections closed after {took:?}");
    wait_until("the node to answer again", DEADLINE, || {
        http::is_healthy(&addr)
    });

    // Watchers: two streams are fine, the third is refused.
    let first = SseReader::connect(&addr, "/v1/watch/app");
    let _second = SseReader::connect(&addr, "/v1/watch/app");
    let third = SseReader::try_connect(&addr, "/v1/watch/app")
        .err()
        .expect("refused");
    assert!(third.contains("503"), "{third}");
    assert!(third.contains("too many watchers"), "{third}");
    let raw = raw_get(&addr, "/v1/watch/app");
    assert!(raw.starts_with("HTTP/1.1 503"), "{raw}");
    assert!(raw.to_ascii_lowercase().contains("retry-after: 1"), "{raw}");
    let refused_total = metric_value(&addr, "lathe_api_refused_total").unwrap();
    assert!(
        refused_total >= 3.0,
        "lathe_api_refused_total {refused_total}"
    );
    // A closed stream frees its slot (once the node notices the close).
    first.close();
    wait_until("a watcher slot to be free again", DEADLINE, || {
        SseReader::try_connect(&addr, "/v1/watch/app").ok()
    });
}

/// The answer to `GET path` on a fresh connection, as text.
fn raw_get(addr: &str, path: &str) -> String {
    let mut socket = TcpStream::connect(addr).expect("connect");
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        socket,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    // Read to the close: the head, and the body of an error (a stream is cut by the timeout).
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 1024];
    loop {
        match socket.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
        }
    }
    String::from_utf8_lossy(&answer).to_string()
}
