//! REST calls to one lathe-node, and the mapping of HTTP and transport failures to one-line errors.

use std::fmt;
use std::io::Read;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::Value;

/// How long to wait for a TCP connection to the node.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait for a whole answer (not used for streams).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Everything that makes a command fail; printed as `lathe: <one line>` with exit code 1.
#[derive(Debug)]
pub(crate) enum CliError {
    /// No TCP connection (refused, DNS, timeout) to the node.
    Unreachable { addr: String, detail: String },
    /// The server answered an error status; `message` is its `{"error": ...}` text when it sent
    /// one.
    Server { status: u16, message: String },
    /// The server does not know the route (404): an older lathe-node.
    NotAvailable { command: String, route: String },
    /// A local failure: an unreadable file, an answer that is not the expected JSON.
    Local(String),
    /// Stdout was closed (e.g. `lathe kv watch /x | head -1`): stop quietly.
    BrokenPipe,
}

impl CliError {
    /// The message on a single line (server messages may contain line breaks).
    pub(crate) fn one_line(&self) -> String {
        self.to_string()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Turns a 404 from a route that newer servers have into [`CliError::NotAvailable`].
    pub(crate) fn not_found_means_not_available(self, command: &str, route: &str) -> Self {
        match self {
            CliError::Server { status: 404, .. } => CliError::NotAvailable {
                command: command.to_string(),
                route: route.to_string(),
            },
            other => other,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Unreachable { addr, detail } => {
                write!(f, "cannot reach lathe-node at {addr}: {detail}")
            }
            CliError::Server { message, .. } => f.write_str(message),
            CliError::NotAvailable { command, route } => write!(
                f,
                "`lathe {command}` is not available in this version of the server ({route} \
                    answered 404)"
            ),
            CliError::Local(message) => f.write_str(message),
            CliError::BrokenPipe => f.write_str("broken pipe"),
        }
    }
}

/// A successful answer: its body (JSON; `Null` if empty, a string if not JSON).
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) body: Value,
}

/// The TLS settings of every client of this process (`--ca`, `--cert`, `--key`), set once by
/// `main` before any request; without them an `https://` node is not trusted.
static TLS: OnceLock<Arc<lathe_tls::rustls::ClientConfig>> = OnceLock::new();

/// Reads `--ca`, `--cert` and `--key` once for every [`Client`] of the process.
pub(crate) fn configure_tls(files: &lathe_tls::ClientTlsFiles) -> Result<(), CliError> {
    let config = files
        .client_config()
        .map_err(|e| CliError::Local(e.to_string()))?;
    let _ = TLS.set(config);
    Ok(())
}

/// A client of one node's REST API.
pub(crate) struct Client {
    addr: String,
    /// `http` or `https`.
    scheme: &'static str,
    agent: ureq::Agent,
    stream_agent: ureq::Agent,
    /// `--token`: sent as `Authorization: Bearer` with every request.
    token: Option<String>,
}

impl Client {
    /// `addr` is `HOST:PORT`, `http://HOST:PORT` or `https://HOST:PORT` (TLS, trusted through
    /// `--ca`); a trailing `/` is tolerated.
    pub(crate) fn new(addr: &str) -> Self {
        Client::with_timeouts(addr, CONNECT_TIMEOUT, REQUEST_TIMEOUT)
    }

    /// Like [`Client::new`], with other timeouts for the connection and the whole answer (e.g.
    /// short ones to poll a node that is starting).
    pub(crate) fn with_timeouts(addr: &str, connect: Duration, request: Duration) -> Self {
        let addr = addr.trim().trim_end_matches('/');
        let (scheme, addr) = match addr.strip_prefix("https://") {
            Some(rest) => ("https", rest),
            None => ("http", addr.trim_start_matches("http://")),
        };
        let builder = || {
            let builder = ureq::AgentBuilder::new().timeout_connect(connect);
            let config = TLS.get_or_init(|| {
                lathe_tls::ClientTlsFiles::default()
                    .client_config()
                    .expect("a client config without files")
            });
            builder.tls_connector(Arc::new(lathe_tls::UreqTls(config.clone())))
        };
        Client {
            addr: addr.to_string(),
            scheme,
            agent: builder().timeout(request).build(),
            stream_agent: builder().build(),
            token: None,
        }
    }

    /// The same client, sending `token` (an ACL token) with every request.
    pub(crate) fn with_token(mut self, token: Option<&str>) -> Self {
        self.token = token
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        self
    }

    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    /// `GET path` (path includes the query, e.g. `/v1/kv/a?recurse=true`).
    pub(crate) fn get(&self, path: &str) -> Result<Reply, CliError> {
        self.finish(self.authorized(self.agent.get(&self.url(path))).call())
    }

    /// `PUT path` with a JSON body.
    pub(crate) fn put_json(&self, path: &str, body: &Value) -> Result<Reply, CliError> {
        let request = self
            .authorized(self.agent.put(&self.url(path)))
            .set("Content-Type", "application/json");
        self.finish(request.send_string(&body.to_string()))
    }

    /// `PUT path` with a text body of the given content type (e.g. a topology TOML).
    pub(crate) fn put_text(
        &self,
        path: &str,
        content_type: &str,
        body: &str,
    ) -> Result<Reply, CliError> {
        self.finish(
            self.authorized(self.agent.put(&self.url(path)))
                .set("Content-Type", content_type)
                .send_string(body),
        )
    }

    /// `POST path` with a JSON body.
    pub(crate) fn post_json(&self, path: &str, body: &Value) -> Result<Reply, CliError> {
        let request = self
            .authorized(self.agent.post(&self.url(path)))
            .set("Content-Type", "application/json");
        self.finish(request.send_string(&body.to_string()))
    }

    /// `POST path` with no body (a command such as `/v1/rollouts/{group}/pause`).
    pub(crate) fn post(&self, path: &str) -> Result<Reply, CliError> {
        self.finish(self.authorized(self.agent.post(&self.url(path))).call())
    }

    pub(crate) fn delete(&self, path: &str) -> Result<Reply, CliError> {
        self.finish(self.authorized(self.agent.delete(&self.url(path))).call())
    }

    /// `GET path` answered by a stream (Server-Sent Events): the body, read as it arrives, with no
    /// read timeout.
    pub(crate) fn stream(&self, path: &str) -> Result<Box<dyn Read + Send + Sync>, CliError> {
        let request = self
            .authorized(self.stream_agent.get(&self.url(path)))
            .set("Accept", "text/event-stream");
        match request.call() {
            Ok(response) => Ok(response.into_reader()),
            Err(err) => Err(self.map_error(err)),
        }
    }

    fn authorized(&self, request: ureq::Request) -> ureq::Request {
        match &self.token {
            Some(token) => request.set("Authorization", &format!("Bearer {token}")),
            None => request,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}://{}{}", self.scheme, self.addr, path)
    }

    fn finish(&self, result: Result<ureq::Response, ureq::Error>) -> Result<Reply, CliError> {
        let response = result.map_err(|err| self.map_error(err))?;
        let text = response.into_string().map_err(|err| {
            CliError::Local(format!("cannot read the answer of {}: {err}", self.addr))
        })?;
        Ok(Reply {
            body: parse_body(&text),
        })
    }

    fn map_error(&self, err: ureq::Error) -> CliError {
        match err {
            ureq::Error::Status(status, response) => {
                let text = response.into_string().unwrap_or_default();
                CliError::Server {
                    status,
                    message: server_message(status, &text),
                }
            }
            ureq::Error::Transport(transport) => CliError::Unreachable {
                addr: self.addr.clone(),
                detail: transport_detail(&transport),
            },
        }
    }
}

fn parse_body(text: &str) -> Value {
    if text.trim().is_empty() {
        return Value::Null;
    }
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

/// The server's `{"error": "..."}` text, or a short description of a body that is not one.
pub(crate) fn server_message(status: u16, body: &str) -> String {
    if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(body) {
        if let Some(Value::String(message)) = map.get("error") {
            return message.clone();
        }
    }
    let first_line = body
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    if first_line.is_empty() {
        format!("server answered {status}")
    } else {
        format!(
            "server answered {status}: {}",
            crate::table::truncate(first_line, 200)
        )
    }
}

/// The useful part of a transport error: the underlying I/O error if any (e.g. `Connection refused
/// (os error 111)`), else ureq's message or kind, without the URL.
fn transport_detail(transport: &ureq::Transport) -> String {
    if let Some(source) = std::error::Error::source(transport) {
        return source.to_string();
    }
    match transport.message() {
        Some(message) => format!("{}: {message}", transport.kind()),
        None => transport.kind().to_string(),
    }
}

/// The URL path of a registry key under `prefix` (`/v1/kv` or `/v1/watch`): leading and trailing
/// `/` are dropped and anything outside `[A-Za-z0-9._~/-]` is percent-encoded, so the server sees
/// (and rejects) odd keys instead of the HTTP library.
pub(crate) fn key_route(prefix: &str, key: &str) -> String {
    let key = key.trim_matches('/');
    let mut route = format!("{prefix}/");
    for byte in key.bytes() {
        if byte.is_ascii_alphanumeric() || b"._~/-".contains(&byte) {
            route.push(byte as char);
        } else {
            route.push_str(&format!("%{byte:02X}"));
        }
    }
    route
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_routes_drop_outer_slashes_and_encode_odd_bytes() {
        assert_eq!(key_route("/v1/kv", "/task/http/lb/"), "/v1/kv/task/http/lb");
        assert_eq!(key_route("/v1/kv", "task.x/a-b_c"), "/v1/kv/task.x/a-b_c");
        assert_eq!(key_route("/v1/kv", "/"), "/v1/kv/");
        assert_eq!(key_route("/v1/watch", "a b?c"), "/v1/watch/a%20b%3Fc");
    }

    #[test]
    fn server_messages_come_from_the_error_field() {
        assert_eq!(
            server_message(409, r#"{"error": "version mismatch"}"#),
            "version mismatch"
        );
        assert_eq!(server_message(404, ""), "server answered 404");
        assert_eq!(
            server_message(502, "Bad gateway\nmore"),
            "server answered 502: Bad gateway"
        );
    }

    #[test]
    fn errors_print_on_one_line() {
        let err = CliError::Server {
            status: 400,
            message: "bad topology\n  at 3:7\n".into(),
        };
        assert_eq!(err.one_line(), "bad topology at 3:7");
        let err = CliError::Server {
            status: 404,
            message: "no route".into(),
        }
        .not_found_means_not_available("tasks", "GET /v1/tasks");
        assert_eq!(
            err.one_line(),
            "`lathe tasks` is not available in this version of the server (GET /v1/tasks answered \
                404)"
        );
    }

    #[test]
    fn connection_refused_names_the_address() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let client = Client::new(&format!("http://127.0.0.1:{port}/"));
        let err = client.get("/v1/health").unwrap_err();
        let message = err.one_line();
        assert!(
            message.starts_with(&format!("cannot reach lathe-node at 127.0.0.1:{port}: ")),
            "{message}"
        );
    }

    #[test]
    fn bodies_that_are_not_json_are_kept_as_text() {
        assert_eq!(parse_body(""), Value::Null);
        assert_eq!(parse_body("{\"a\":1}"), serde_json::json!({"a": 1}));
        assert_eq!(parse_body("ok"), Value::String("ok".into()));
    }
}
