//! The double's HTTP: a minimal HTTP/1.1 server (one request per connection, `Content-Length`
//! bodies, `Connection: close`), enough for the REST clients that talk to a ResourceManager.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request accepted (a submission context is a few KB).
const MAX_REQUEST: usize = 1 << 20;

/// One request: method, path without the query, the decoded query, the body.
#[derive(Debug, Clone)]
pub(super) struct Request {
    pub(super) method: String,
    pub(super) path: String,
    pub(super) query: BTreeMap<String, String>,
    pub(super) body: Vec<u8>,
}

/// One answer: status, JSON body (none for `Null`), extra headers.
#[derive(Debug, Clone)]
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) body: Value,
    pub(super) headers: Vec<(String, String)>,
}

impl Answer {
    pub(super) fn json(status: u16, body: Value) -> Answer {
        Answer {
            status,
            body,
            headers: Vec::new(),
        }
    }

    /// A `RemoteException`, as every RM error answer is.
    pub(super) fn error(status: u16, exception: &str, java_class: &str, message: &str) -> Answer {
        Answer::json(
            status,
            serde_json::json!({"RemoteException": {
                "exception": exception,
                "message": message,
                "javaClassName": java_class,
            }}),
        )
    }

    pub(super) fn bad_request(message: &str) -> Answer {
        Answer::error(
            400,
            "BadRequestException",
            "org.apache.hadoop.yarn.webapp.BadRequestException",
            &format!("java.lang.Exception: {message}"),
        )
    }

    pub(super) fn not_found(message: &str) -> Answer {
        Answer::error(
            404,
            "NotFoundException",
            "org.apache.hadoop.yarn.webapp.NotFoundException",
            &format!("java.lang.Exception: {message}"),
        )
    }
}

/// Accepts connections on `listener` until `stop`, answering each with `handle`. Whoever sets
/// `stop` connects once to wake the blocked accept.
pub(super) fn serve(
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    handle: impl Fn(Request) -> Answer,
) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        if let Ok(stream) = stream {
            let _ = answer_one(stream, &handle);
        }
    }
}

fn answer_one(mut stream: TcpStream, handle: &impl Fn(Request) -> Answer) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    let answer = match read_request(&mut stream) {
        Ok(request) => handle(request),
        Err(reason) => Answer::bad_request(&reason),
    };
    let reason = match answer.status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "",
    };
    let body = if answer.body.is_null() {
        Vec::new()
    } else {
        serde_json::to_vec(&answer.body).unwrap_or_default()
    };
    let mut head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
            Connection: close\r\n",
        answer.status,
        body.len()
    );
    for (name, value) in &answer.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(&body)?;
    stream.flush()
}

fn read_request(stream: &mut TcpStream) -> Result<Request, String> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = find(&buffer, b"\r\n\r\n") {
            break end;
        }
        if buffer.len() > MAX_REQUEST {
            return Err("request head too large".into());
        }
        let n = stream.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed before the request ended".into());
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split_whitespace();
    let (method, target) = match (first.next(), first.next()) {
        (Some(method), Some(target)) => (method.to_string(), target.to_string()),
        _ => return Err("bad request line".into()),
    };
    let length = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .map(|(_, value)| value.trim().parse::<usize>())
        .transpose()
        .map_err(|_| "bad Content-Length".to_string())?
        .unwrap_or(0);
    if length > MAX_REQUEST {
        return Err("request body too large".into());
    }
    let mut body = buffer[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed before the body ended".into());
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    Ok(Request {
        method,
        path: decode(path),
        query: query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                (decode(name), decode(value))
            })
            .collect(),
        body,
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Percent-decoding (and `+` as a space) of a URL part.
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(high), Some(low)) => {
                        out.push((high * 16 + low) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).to_string()
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn decodes_query_parts() {
        assert_eq!(decode("NEW%2CRUNNING"), "NEW,RUNNING");
        assert_eq!(decode("a+b"), "a b");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz"), "%zz");
    }
}
