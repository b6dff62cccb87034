//! A Server-Sent-Events parser (the subset `GET /v1/watch` uses: `data:` lines, comments as
//! keep-alives, events ended by a blank line) and the registry events it carries.

use lathe::{Change, Entry, KeyPath};
use serde::Deserialize;
use serde_json::Value;

/// One event of a registry watch.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// The whole watched prefix as of `index`.
    Snapshot { index: u64, entries: Vec<Entry> },
    /// One change (a delete has no value).
    Change(Change),
}

impl StreamEvent {
    /// The registry index this event brings its receiver to.
    pub fn index(&self) -> u64 {
        match self {
            StreamEvent::Snapshot { index, .. } => *index,
            StreamEvent::Change(change) => change.version,
        }
    }
}

#[derive(Deserialize)]
struct WireEvent {
    op: String,
    key: Option<KeyPath>,
    #[serde(default)]
    value: Value,
    version: Option<u64>,
    index: Option<u64>,
    entries: Option<Vec<Entry>>,
}

/// Why a watch stream is dropped: an event too large, or one that is not a watch event.
#[derive(Debug, thiserror::Error)]
pub enum SseError {
    /// The event being read grew over the parser's limit.
    #[error("an event of the stream is over {limit} bytes: dropping the stream")]
    TooLarge { limit: usize },
    /// A payload that is not the JSON of a watch event.
    #[error("bad watch event {data:?}: {source}")]
    BadJson {
        data: String,
        #[source]
        source: serde_json::Error,
    },
    /// A watch event without a field its op needs.
    #[error("watch event without {field}: {data}")]
    Missing { field: &'static str, data: String },
    #[error("watch event with unknown op {0:?}")]
    UnknownOp(String),
}

/// Parses the JSON of one `data:` payload.
pub fn parse_event(data: &str) -> Result<StreamEvent, SseError> {
    let wire: WireEvent = serde_json::from_str(data).map_err(|source| SseError::BadJson {
        data: data.to_string(),
        source,
    })?;
    let missing = |field: &'static str| SseError::Missing {
        field,
        data: data.to_string(),
    };
    match wire.op.as_str() {
        "snapshot" => Ok(StreamEvent::Snapshot {
            index: wire.index.ok_or_else(|| missing("index"))?,
            entries: wire.entries.ok_or_else(|| missing("entries"))?,
        }),
        "put" | "delete" => Ok(StreamEvent::Change(Change {
            key: wire.key.ok_or_else(|| missing("key"))?,
            value: (wire.op == "put").then_some(wire.value),
            version: wire.version.ok_or_else(|| missing("version"))?,
        })),
        other => Err(SseError::UnknownOp(other.to_string())),
    }
}

/// The largest event (all its lines) a stream may send: a snapshot of a whole subtree is one
/// event, so this is generous; past it the stream is dropped rather than buffered without end.
pub const MAX_EVENT_BYTES: usize = 256 * 1024 * 1024;

/// Splits a byte stream into SSE event payloads.
#[derive(Debug)]
pub struct SseParser {
    line: Vec<u8>,
    data: Option<String>,
    max_event_bytes: usize,
}

impl Default for SseParser {
    fn default() -> Self {
        SseParser::with_max_event_bytes(MAX_EVENT_BYTES)
    }
}

impl SseParser {
    /// A parser refusing events over `bytes`.
    pub fn with_max_event_bytes(bytes: usize) -> Self {
        SseParser {
            line: Vec::new(),
            data: None,
            max_event_bytes: bytes,
        }
    }

    /// Feeds bytes; returns the payloads of the events they complete, or an error once the event
    /// being read is over the limit (the stream is then to be dropped).
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<String>, SseError> {
        let mut events = Vec::new();
        for &byte in chunk {
            if byte != b'\n' {
                self.line.push(byte);
                let pending = self.line.len() + self.data.as_ref().map_or(0, String::len);
                if pending > self.max_event_bytes {
                    return Err(SseError::TooLarge {
                        limit: self.max_event_bytes,
                    });
                }
                continue;
            }
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if let Some(event) = self.line_done(&String::from_utf8_lossy(&line)) {
                events.push(event);
            }
        }
        Ok(events)
    }

    fn line_done(&mut self, line: &str) -> Option<String> {
        if line.is_empty() {
            return self.data.take();
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        if field == "data" {
            let value = value.strip_prefix(' ').unwrap_or(value);
            match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_and_keepalives_are_skipped() {
        let mut parser = SseParser::default();
        assert!(parser.feed(b":\n\nid: 3\ndata: {\"a\"").unwrap().is_empty());
        let events = parser.feed(b":1}\r\n\r\ndata: x\ndata: y\n\n").unwrap();
        assert_eq!(events, vec!["{\"a\":1}".to_string(), "x\ny".to_string()]);
    }

    /// A node (or anything posing as one) sending an endless line, or endless `data:` lines
    /// without the blank line that ends an event, is cut off at the limit (seen failing before:
    /// the parser buffered all of it).
    #[test]
    fn an_event_over_the_limit_drops_the_stream() {
        let mut parser = SseParser::with_max_event_bytes(1024);
        assert!(parser.feed(&[b'x'; 1000]).unwrap().is_empty());
        let error = parser.feed(&[b'x'; 100]).unwrap_err();
        assert!(error.to_string().contains("over 1024 bytes"), "{error}");
        let mut parser = SseParser::with_max_event_bytes(1024);
        let line = format!("data: {}\n", "y".repeat(100));
        let mut result = Ok(Vec::new());
        for _ in 0..20 {
            result = parser.feed(line.as_bytes());
            if result.is_err() {
                break;
            }
        }
        assert!(result.is_err(), "data lines without an end were buffered");
        // Events under the limit pass as before.
        let mut parser = SseParser::with_max_event_bytes(1024);
        let events = parser.feed(line.repeat(3).as_bytes()).unwrap();
        assert!(events.is_empty());
        assert_eq!(parser.feed(b"\n").unwrap().len(), 1);
    }

    #[test]
    fn parses_changes_deletes_and_snapshots() {
        let put = parse_event(r#"{"key":"/a/b","value":{"x":1},"version":7,"op":"put"}"#).unwrap();
        assert_eq!(put.index(), 7);
        let StreamEvent::Change(change) = put else {
            panic!()
        };
        assert_eq!(change.value, Some(serde_json::json!({"x": 1})));
        let delete = parse_event(r#"{"key":"/a/b","value":null,"version":8,"op":"delete"}"#);
        let Ok(StreamEvent::Change(change)) = delete else {
            panic!()
        };
        assert_eq!(change.value, None);
        let snapshot = parse_event(
            r#"{"op":"snapshot","index":9,"entries":[{"key":"/a","value":1,"version":2}]}"#,
        )
        .unwrap();
        assert!(
            matches!(snapshot, StreamEvent::Snapshot { index: 9, ref entries }
                if entries.len() == 1)
        );
        assert!(parse_event(r#"{"op":"what"}"#).is_err());
    }
}
