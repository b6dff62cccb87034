//! HTTP helpers for tests: blocking REST calls to a node (`get_json`, `put_json`, ...) and
//! [`SseReader`], a Server-Sent Events client for `/v1/watch/...` that reads on a background
//! thread.
//!
//! Addresses are `HOST:PORT` (as [`crate::node::NodeProcess::http_addr`] gives them), paths start
//! with `/` and carry their query. The panicking helpers suit test bodies; the `try_` ones return
//! transport errors as `Err`, for polling a node that may be down.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;

/// The longest a REST call may take (blocking queries wait up to 30 s).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest a connection, or an SSE stream's response head, may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// An HTTP answer: status, headers (names lowercased), the body as text and as JSON (`Null` if not
/// JSON).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub text: String,
    pub body: Value,
}

impl Reply {
    /// A header's value, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The registry index of a read: the `X-Lathe-Index` header.
    pub fn index(&self) -> Option<u64> {
        self.header("x-lathe-index")
            .and_then(|v| v.trim().parse().ok())
    }

    /// The `{"error": "..."}` message of an error answer.
    pub fn error(&self) -> Option<&str> {
        self.body.get("error").and_then(Value::as_str)
    }
}

/// `GET path`, panicking on a transport error.
pub fn get_json(addr: &str, path: &str) -> Reply {
    request("GET", addr, path, None)
}

/// `GET path`, with transport errors (e.g. connection refused) as `Err`.
pub fn try_get_json(addr: &str, path: &str) -> Result<Reply, String> {
    try_request("GET", addr, path, None)
}

/// `PUT path` with a JSON body.
pub fn put_json(addr: &str, path: &str, body: &Value) -> Reply {
    request("PUT", addr, path, Some(&body.to_string()))
}

/// `POST path` with a JSON body.
pub fn post_json(addr: &str, path: &str, body: &Value) -> Reply {
    request("POST", addr, path, Some(&body.to_string()))
}

/// `PUT path` with a text body of the given content type (e.g. a topology TOML).
pub fn put_text(addr: &str, path: &str, content_type: &str, body: &str) -> Reply {
    send(
        "PUT",
        addr,
        path,
        Some((content_type, body)),
        REQUEST_TIMEOUT,
    )
    .unwrap_or_else(|err| panic!("{err}"))
}

/// `DELETE path` (put `?recurse=true&cas=V` in the path).
pub fn delete(addr: &str, path: &str) -> Reply {
    request("DELETE", addr, path, None)
}

/// Any method, with an optional body sent as `application/json` as it is (so tests can send bad
/// JSON); panics on a transport error.
pub fn request(method: &str, addr: &str, path: &str, body: Option<&str>) -> Reply {
    try_request(method, addr, path, body).unwrap_or_else(|err| panic!("{err}"))
}

/// Like [`request`], with transport errors as `Err`.
pub fn try_request(
    method: &str,
    addr: &str,
    path: &str,
    body: Option<&str>,
) -> Result<Reply, String> {
    send(
        method,
        addr,
        path,
        body.map(|b| ("application/json", b)),
        REQUEST_TIMEOUT,
    )
}

/// Whether `GET /v1/health` answers 200 within two seconds.
pub fn is_healthy(addr: &str) -> bool {
    matches!(send("GET", addr, "/v1/health", None, Duration::from_secs(2)),
        Ok(reply) if reply.status == 200)
}

fn send(
    method: &str,
    addr: &str,
    path: &str,
    body: Option<(&str, &str)>,
    timeout: Duration,
) -> Result<Reply, String> {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    let agent = AGENT.get_or_init(|| {
        ureq::AgentBuilder::new()
            .timeout_connect(CONNECT_TIMEOUT)
            .build()
    });
    let url = format!("http://{}{path}", addr.trim_start_matches("http://"));
    let request = agent.request(method, &url).timeout(timeout);
    let result = match body {
        Some((content_type, body)) => request.set("Content-Type", content_type).send_string(body),
        None => request.call(),
    };
    let response = match result {
        Ok(response) | Err(ureq::Error::Status(_, response)) => response,
        Err(ureq::Error::Transport(err)) => return Err(format!("{method} {url} failed: {err}")),
    };
    let status = response.status();
    let headers = response
        .headers_names()
        .into_iter()
        .filter_map(|name| {
            response
                .header(&name)
                .map(|v| (name.to_ascii_lowercase(), v.to_string()))
        })
        .collect();
    let text = response
        .into_string()
        .map_err(|err| format!("{method} {url}: cannot read the body: {err}"))?;
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Ok(Reply {
        status,
        headers,
        text,
        body,
    })
}

/// One Server-Sent Event; `data` joins its `data:` lines with `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub id: Option<String>,
    pub data: String,
}

impl SseEvent {
    /// The data as JSON (a JSON string holding the data when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|_| Value::String(self.data.clone()))
    }
}

/// The SSE line protocol: feed lines, get the events that blank lines complete (comments and
/// data-less events are skipped, as the specification says).
#[derive(Debug, Default)]
pub struct SseParser {
    event: Option<String>,
    id: Option<String>,
    data: Vec<String>,
}

impl SseParser {
    pub fn push_line(&mut self, line: &str) -> Option<SseEvent> {
        let line = line.strip_suffix('\n').unwrap_or(line);
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            let (event, id) = (self.event.take(), self.id.take());
            return (!self.data.is_empty()).then(|| SseEvent {
                event,
                id,
                data: std::mem::take(&mut self.data).join("\n"),
            });
        }
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value).to_string();
        match name {
            "data" => self.data.push(value),
            "event" => self.event = Some(value),
            "id" => self.id = Some(value),
            _ => {} // comments (empty name) and unknown fields
        }
        None
    }
}

enum StreamMessage {
    Event(SseEvent),
    Closed(String),
}

/// A subscription to an SSE route, read on a background thread. Once [`SseReader::connect`]
/// returns, the server has answered the request's head, so changes made afterwards are in the
/// stream.
pub struct SseReader {
    url: String,
    socket: TcpStream,
    messages: Receiver<StreamMessage>,
    closed: Option<String>,
    reader_thread: Option<JoinHandle<()>>,
}

impl SseReader {
    /// Subscribes to `GET path` at `addr`; panics unless the server answers 200.
    pub fn connect(addr: &str, path: &str) -> SseReader {
        SseReader::try_connect(addr, path).unwrap_or_else(|err| panic!("{err}"))
    }

    /// Like [`SseReader::connect`], with failures (refused, non-200 status) as `Err`.
    pub fn try_connect(addr: &str, path: &str) -> Result<SseReader, String> {
        let url = format!("http://{addr}{path}");
        let fail = |err: io::Error| format!("GET {url} failed: {err}");
        let socket_addr = addr
            .to_socket_addrs()
            .map_err(fail)?
            .next()
            .ok_or_else(|| format!("{addr}: no address"))?;
        let mut socket = TcpStream::connect_timeout(&socket_addr, CONNECT_TIMEOUT).map_err(fail)?;
        socket
            .set_read_timeout(Some(CONNECT_TIMEOUT))
            .map_err(fail)?;
        let head = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\
                Connection: close\r\n\r\n"
        );
        socket.write_all(head.as_bytes()).map_err(fail)?;
        let mut reader = BufReader::new(socket.try_clone().map_err(fail)?);
        let (status, headers) = read_head(&mut reader).map_err(fail)?;
        let chunked = headers
            .get("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let body: Box<dyn Read + Send> = if chunked {
            Box::new(ChunkedDecoder::new(reader))
        } else {
            Box::new(reader)
        };
        if status != 200 {
            let mut text = String::new();
            body.take(4096).read_to_string(&mut text).ok();
            return Err(format!("GET {url} answered {status}: {}", text.trim()));
        }
        socket.set_read_timeout(None).map_err(fail)?;
        let (sender, messages) = mpsc::channel();
        let reader_thread = std::thread::Builder::new()
            .name("sse-reader".into())
            .spawn(move || read_events(BufReader::new(body), &sender))
            .map_err(|err| format!("cannot start the sse reader thread: {err}"))?;
        Ok(SseReader {
            url,
            socket,
            messages,
            closed: None,
            reader_thread: Some(reader_thread),
        })
    }

    /// The next event's data as JSON, or `None` if none came within `timeout` or the stream is
    /// closed.
    pub fn next_event(&mut self, timeout: Duration) -> Option<Value> {
        self.next_raw(timeout).map(|event| event.json())
    }

    /// The next event as it came (event name, id, data).
    pub fn next_raw(&mut self, timeout: Duration) -> Option<SseEvent> {
        if self.closed.is_some() {
            return None;
        }
        match self.messages.recv_timeout(timeout) {
            Ok(StreamMessage::Event(event)) => Some(event),
            Ok(StreamMessage::Closed(reason)) => {
                self.closed = Some(reason);
                None
            }
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                self.closed = Some("the reader thread stopped".into());
                None
            }
        }
    }

    /// The next event's JSON; panics naming the URL if none comes within `timeout`.
    pub fn expect_event(&mut self, timeout: Duration) -> Value {
        match self.next_event(timeout) {
            Some(event) => event,
            None => panic!(
                "no event from {} within {timeout:?}{}",
                self.url,
                self.closed_note()
            ),
        }
    }

    /// The next `count` events; panics (showing those received) if they do not all come within
    /// `timeout`.
    pub fn expect_events(&mut self, count: usize, timeout: Duration) -> Vec<Value> {
        let deadline = std::time::Instant::now() + timeout;
        let mut events = Vec::with_capacity(count);
        while events.len() < count {
            match self.next_event(deadline.saturating_duration_since(std::time::Instant::now())) {
                Some(event) => events.push(event),
                None => panic!(
                    "got {} of {count} events from {} within {timeout:?}{}: {events:?}",
                    events.len(),
                    self.url,
                    self.closed_note()
                ),
            }
        }
        events
    }

    /// Why the stream ended (`None` while it is open as far as this reader knows).
    pub fn closed_reason(&self) -> Option<&str> {
        self.closed.as_deref()
    }

    /// Closes the connection (the server sees its subscriber go) and stops the reader thread.
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.socket.shutdown(Shutdown::Both).ok();
        if let Some(thread) = self.reader_thread.take() {
            thread.join().ok();
        }
    }

    fn closed_note(&self) -> String {
        self.closed
            .as_ref()
            .map(|reason| format!(" (stream closed: {reason})"))
            .unwrap_or_default()
    }
}

impl Drop for SseReader {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn read_events(mut body: impl BufRead, sender: &Sender<StreamMessage>) {
    let mut parser = SseParser::default();
    let mut line = Vec::new();
    let reason = loop {
        line.clear();
        match body.read_until(b'\n', &mut line) {
            Ok(0) => break "end of stream".to_string(),
            Err(err) => break err.to_string(),
            Ok(_) => {}
        }
        if let Some(event) = parser.push_line(&String::from_utf8_lossy(&line)) {
            if sender.send(StreamMessage::Event(event)).is_err() {
                return; // the SseReader is gone
            }
        }
    };
    sender.send(StreamMessage::Closed(reason)).ok();
}

/// Reads a response's status line and headers (names lowercased).
fn read_head(reader: &mut impl BufRead) -> io::Result<(u16, BTreeMap<String, String>)> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad status line {:?}", line.trim_end()),
            )
        })?;
    let mut headers = BTreeMap::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            return Ok((status, headers));
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
}

/// The body of a `Transfer-Encoding: chunked` response.
struct ChunkedDecoder<R> {
    inner: R,
    remaining: usize,
    done: bool,
}

impl<R: BufRead> ChunkedDecoder<R> {
    fn new(inner: R) -> Self {
        ChunkedDecoder {
            inner,
            remaining: 0,
            done: false,
        }
    }
}

impl<R: BufRead> Read for ChunkedDecoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.remaining == 0 {
            let mut line = String::new();
            while line.trim().is_empty() {
                line.clear();
                if self.inner.read_line(&mut line)? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
            let size = line.trim().split(';').next().unwrap_or("");
            self.remaining = usize::from_str_radix(size.trim(), 16).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad chunk size {size:?}"),
                )
            })?;
            if self.remaining == 0 {
                self.done = true;
                return Ok(0);
            }
        }
        let wanted = buf.len().min(self.remaining);
        let read = self.inner.read(&mut buf[..wanted])?;
        if read == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.remaining -= read;
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn sse_lines_make_events() {
        let mut parser = SseParser::default();
        let text = ": keep-alive\n\nevent: change\nid: 3\ndata: {\"key\":\"/a\",\n\
            data: \"version\":3}\r\n\r\ndata: x\n";
        let events: Vec<SseEvent> = text
            .split_inclusive('\n')
            .filter_map(|l| parser.push_line(l))
            .collect();
        assert_eq!(
            events.len(),
            1,
            "the unfinished last event is not dispatched"
        );
        assert_eq!(events[0].event.as_deref(), Some("change"));
        assert_eq!(events[0].id.as_deref(), Some("3"));
        assert_eq!(
            events[0].json(),
            serde_json::json!({"key": "/a", "version": 3})
        );
    }

    #[test]
    fn chunked_bodies_are_decoded() {
        let wire = "5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n";
        let mut text = String::new();
        ChunkedDecoder::new(wire.as_bytes())
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "hello, world");
    }

    /// Serves one SSE response (chunked, split mid-line) and keeps the connection open until the
    /// client closes.
    fn fake_sse_server() -> (String, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().unwrap();
            let mut request_line = String::new();
            BufReader::new(socket.try_clone().unwrap())
                .read_line(&mut request_line)
                .unwrap();
            let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                transfer-encoding: chunked\r\n\r\n";
            socket.write_all(head.as_bytes()).unwrap();
            for piece in [
                "data: {\"op\":\"put\",",
                "\"version\":1}\n\n",
                ":\n\ndata: {\"op\":\"delete\",\"version\":2}\n\n",
            ] {
                socket
                    .write_all(format!("{:x}\r\n{piece}\r\n", piece.len()).as_bytes())
                    .unwrap();
                socket.flush().unwrap();
            }
            let mut rest = Vec::new();
            socket.read_to_end(&mut rest).ok(); // returns when the client shuts the connection
            request_line
        });
        (addr, server)
    }

    #[test]
    fn sse_reader_receives_events_and_closes() {
        let (addr, server) = fake_sse_server();
        let mut reader = SseReader::connect(&addr, "/v1/watch/a?index=0");
        let events = reader.expect_events(2, Duration::from_secs(5));
        assert_eq!(events[0]["version"], 1);
        assert_eq!(events[1]["op"], "delete");
        assert_eq!(reader.next_event(Duration::from_millis(50)), None);
        reader.close();
        assert_eq!(
            server.join().unwrap().trim_end(),
            "GET /v1/watch/a?index=0 HTTP/1.1"
        );
    }

    #[test]
    fn sse_reader_reports_error_statuses_and_refusals() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().unwrap();
            let body = "{\"error\":\"bad path\"}";
            let answer = format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            socket.write_all(answer.as_bytes()).unwrap();
        });
        let err = SseReader::try_connect(&addr, "/v1/watch/a%20b")
            .err()
            .unwrap();
        assert!(
            err.ends_with("answered 400: {\"error\":\"bad path\"}"),
            "{err}"
        );
        let closed_port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string();
        let refused = SseReader::try_connect(&closed_port, "/v1/watch/a")
            .err()
            .unwrap();
        assert!(refused.contains("failed"), "{refused}");
        assert!(try_get_json(&closed_port, "/v1/health").is_err());
        assert!(!is_healthy(&closed_port));
    }

    #[test]
    fn rest_helpers_read_status_headers_and_json() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(socket.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
                line.clear();
            }
            let body = "{\"error\":\"absent\"}";
            let answer = format!(
                "HTTP/1.1 404 Not Found\r\nX-Lathe-Index: 42\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            socket.write_all(answer.as_bytes()).unwrap();
        });
        let reply = get_json(&addr, "/v1/kv/a");
        assert_eq!(
            (reply.status, reply.index(), reply.error()),
            (404, Some(42), Some("absent"))
        );
    }
}
