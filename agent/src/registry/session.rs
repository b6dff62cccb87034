//! One session with one registry node: an SSE watch (`GET /v1/watch{prefix}?index=N`) or a loop
//! of blocking queries (`GET /v1/kv{prefix}?recurse=true&index=N&wait=..`), from index `from`.
//! It hands every event to `emit` and returns why it ended; the watcher picks what comes next.

use std::time::Duration;

use futures::StreamExt;
use lathe::{Entry, KeyPath};

use super::sse::{parse_event, SseParser, StreamEvent};
use crate::config::Addr;
use crate::status::Metrics;

/// The pause after a blocking query that brought nothing new.
const IDLE_POLL_PAUSE: Duration = Duration::from_millis(250);

/// How a session talks to its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Sse,
    Poll,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Sse => "sse",
            Transport::Poll => "poll",
        }
    }
}

/// What to open.
#[derive(Debug, Clone)]
pub struct Session {
    pub addr: Addr,
    pub prefix: KeyPath,
    pub from: u64,
    pub transport: Transport,
    /// SSE: the longest silence (keep-alives count) before the stream is dead.
    pub stall_timeout: Duration,
    /// Polling: how long one blocking query waits.
    pub poll_wait: Duration,
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEnd {
    /// No connection, or a connection error before any answer.
    Unreachable(String),
    /// The node answered, but not with a usable event stream (try polling).
    BadStream(String),
    /// Nothing arrived for the stall timeout.
    Stalled,
    /// The stream ended or broke after it had started.
    Closed(String),
    /// The receiver of the events is gone.
    Stopped,
}

/// Runs `session` until it ends; `emit` returns false once nobody listens.
pub async fn run(
    http: &reqwest::Client,
    metrics: &Metrics,
    session: Session,
    emit: impl FnMut(StreamEvent) -> bool,
) -> SessionEnd {
    match session.transport {
        Transport::Sse => run_sse(http, metrics, &session, emit).await,
        Transport::Poll => run_poll(http, metrics, &session, emit).await,
    }
}

async fn run_sse(
    http: &reqwest::Client,
    metrics: &Metrics,
    session: &Session,
    mut emit: impl FnMut(StreamEvent) -> bool,
) -> SessionEnd {
    let url = session.addr.url(&format!(
        "/v1/watch{}?index={}",
        session.prefix.as_str(),
        session.from
    ));
    metrics.registry_request("sse");
    let response = match tokio::time::timeout(session.stall_timeout, http.get(&url).send()).await {
        Err(_) => return SessionEnd::Unreachable(format!("GET {url}: no answer")),
        Ok(Err(e)) => return SessionEnd::Unreachable(format!("GET {url}: {}", error_chain(&e))),
        Ok(Ok(response)) => response,
    };
    let status = response.status();
    if status.is_server_error() {
        return SessionEnd::Unreachable(format!("GET {url}: HTTP {status}"));
    }
    let is_stream = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if !status.is_success() || !is_stream {
        return SessionEnd::BadStream(format!("GET {url}: HTTP {status}, not an event stream"));
    }
    let mut body = response.bytes_stream();
    let mut parser = SseParser::default();
    loop {
        let chunk = match tokio::time::timeout(session.stall_timeout, body.next()).await {
            Err(_) => return SessionEnd::Stalled,
            Ok(None) => return SessionEnd::Closed("the node ended the stream".to_string()),
            Ok(Some(Err(e))) => return SessionEnd::Closed(error_chain(&e)),
            Ok(Some(Ok(chunk))) => chunk,
        };
        let events = match parser.feed(&chunk) {
            Ok(events) => events,
            Err(e) => return SessionEnd::BadStream(e.to_string()),
        };
        for data in events {
            match parse_event(&data) {
                Ok(event) => {
                    if !emit(event) {
                        return SessionEnd::Stopped;
                    }
                }
                Err(e) => return SessionEnd::BadStream(e.to_string()),
            }
        }
    }
}

async fn run_poll(
    http: &reqwest::Client,
    metrics: &Metrics,
    session: &Session,
    mut emit: impl FnMut(StreamEvent) -> bool,
) -> SessionEnd {
    let mut from = session.from;
    loop {
        let (index, entries) = match list(http, metrics, session, Some(from)).await {
            Ok(answer) => answer,
            Err(end) => return end,
        };
        // A node that is behind what this agent has seen answers with an older index: wait for
        // it (and never spin, should a node answer without blocking).
        if index > from || from == 0 {
            from = index;
            if !emit(StreamEvent::Snapshot { index, entries }) {
                return SessionEnd::Stopped;
            }
        } else {
            tokio::time::sleep(IDLE_POLL_PAUSE).await;
        }
    }
}

/// `GET /v1/kv{prefix}?recurse=true` (blocking after `index` when given): (index, entries).
pub async fn list(
    http: &reqwest::Client,
    metrics: &Metrics,
    session: &Session,
    index: Option<u64>,
) -> Result<(u64, Vec<Entry>), SessionEnd> {
    let mut url = session
        .addr
        .url(&format!("/v1/kv{}?recurse=true", session.prefix.as_str()));
    let mut timeout = Duration::from_secs(10);
    if let Some(index) = index {
        url.push_str(&format!(
            "&index={index}&wait={}ms",
            session.poll_wait.as_millis()
        ));
        timeout += session.poll_wait;
    }
    metrics.registry_request(if index.is_some() { "poll" } else { "list" });
    let response = match http.get(&url).timeout(timeout).send().await {
        Ok(response) => response,
        Err(e) => {
            return Err(SessionEnd::Unreachable(format!(
                "GET {url}: {}",
                error_chain(&e)
            )))
        }
    };
    let status = response.status();
    if !status.is_success() {
        return Err(SessionEnd::Unreachable(format!("GET {url}: HTTP {status}")));
    }
    let index = response
        .headers()
        .get("x-lathe-index")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let Some(index) = index else {
        return Err(SessionEnd::BadStream(format!(
            "GET {url}: no X-Lathe-Index header"
        )));
    };
    match response.json::<Vec<Entry>>().await {
        Ok(entries) => Ok((index, entries)),
        Err(e) => Err(SessionEnd::Closed(format!(
            "GET {url}: {}",
            error_chain(&e)
        ))),
    }
}

/// An error and its causes on one line.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    message
}
