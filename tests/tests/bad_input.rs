//! Bad input gets a clear `{"error": ...}` with the right status and changes nothing stored (bad
//! JSON, bad paths, oversized values, unknown routes and parameters, wrong methods, writes under
//! `/lathe/`); bad `lathe-node` flags are one line naming the flag and exit code 2, before any port
//! is bound.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use lathe_tests::http::{self, Reply};
use lathe_tests::node::{node_binary, NodeBuilder};
use lathe_tests::scenario::{
    assert_error, entries_under, put_ok, version_of, without_reserved, TEST_COOKIE,
};
use lathe_tests::wait::try_wait_until;
use lathe_tests::zk::ZkServer;
use serde_json::json;

/// How long `lathe-node` may take to refuse bad flags.
const EXIT_DEADLINE: Duration = Duration::from_secs(30);

#[test]
fn bad_requests_get_a_clear_error_and_change_nothing() {
    let zk = ZkServer::start().expect("zookeeper");
    let node = NodeBuilder::new()
        .name("strict")
        .zookeeper(zk.connect_string())
        .cookie(TEST_COOKIE)
        .arg("--max-value-bytes")
        .arg("1024")
        .start();
    let addr = node.http_addr();
    put_ok(addr, "/keep", &json!({"v": 1}));
    put_ok(addr, "/keep/child", &json!("c"));
    // Just under the limit is fine (the limit is not "refuse everything").
    let near_limit = json!("x".repeat(1000));
    put_ok(addr, "/keep/big", &near_limit);
    let before = without_reserved(entries_under(addr, "/"));
    assert_eq!(before.len(), 3, "{before:?}");

    let oversized = json!("y".repeat(2048)).to_string();
    #[rustfmt::skip]
    let cases: Vec<(&str, &str, Option<&str>, u16, &str)> = vec![
        // (method, path, body, status, what)
        ("PUT", "/v1/kv/keep", Some("{not json"), 400, "bad JSON"),
        ("PUT", "/v1/kv/newkey", Some("{\"a\": }"), 400, "bad JSON on a new key"),
        ("PUT", "/v1/kv/newkey", Some(""), 400, "an empty body"),
        ("PUT", "/v1/kv/a%20b", Some("1"), 400, "a space in a path"),
        ("GET", "/v1/kv/a%20b", None, 400, "GET of a path with a space"),
        ("PUT", "/v1/kv/a//b", Some("1"), 400, "an empty path segment"),
        ("GET", "/v1/kv/a//b", None, 400, "GET of an empty path segment"),
        ("DELETE", "/v1/kv/keep//child", None, 400, "DELETE of an empty segment"),
        ("PUT", "/v1/kv/a$b", Some("1"), 400, "a bad character in a path"),
        ("GET", "/v1/watch/a%20b", None, 400, "a watch of a bad path"),
        ("GET", "/v1/nope", None, 404, "an unknown route"),
        ("GET", "/v2/kv/keep", None, 404, "an unknown API version"),
        ("PUT", "/nope/keep", Some("1"), 404, "PUT to an unknown route"),
        ("POST", "/v1/kv/keep", Some("1"), 405, "POST on a key"),
        ("PATCH", "/v1/kv/keep", Some("1"), 405, "PATCH on a key"),
        ("DELETE", "/v1/members", None, 405, "DELETE of the members"),
        ("PUT", "/v1/health", Some("1"), 405, "PUT on health"),
        ("POST", "/v1/watch/keep", Some("1"), 405, "POST on a watch"),
        ("GET", "/v1/kv/keep?bogus=1", None, 400, "an unknown query parameter"),
        ("PUT", "/v1/kv/keep?recurse=true", Some("2"), 400, "recurse on a PUT"),
        ("DELETE", "/v1/kv/keep?index=3", None, 400, "index on a DELETE"),
        ("PUT", "/v1/kv/keep?cas=abc", Some("2"), 400, "a non-numeric cas"),
        ("GET", "/v1/kv/keep?index=1&wait=soon", None, 400, "a bad wait"),
        ("GET", "/v1/watch/keep?bogus=1", None, 400, "an unknown watch parameter"),
        ("PUT", "/v1/kv/lathe/nodes/evil", Some("1"), 403, "a write under /lathe/"),
        ("PUT", "/v1/kv/lathe", Some("1"), 403, "a write of /lathe"),
        ("DELETE", "/v1/kv/lathe?recurse=true", None, 403, "a recursive delete of /lathe"),
        ("DELETE", "/v1/kv/lathe/members/strict", None, 403, "a delete under /lathe/"),
        ("PUT", "/v1/kv/keep", Some(&oversized), 413, "a 2 KiB value over a 1 KiB limit"),
        ("PUT", "/v1/kv/newbig", Some(&oversized), 413, "an oversized new value"),
    ];
    for (method, path, body, status, what) in &cases {
        let reply = one_shot_request(addr, method, path, *body);
        let message = assert_error(&reply, *status, &format!("{what} ({method} {path})"));
        assert!(
            message.len() >= 10,
            "{what}: an error message should say what is wrong: {message:?}"
        );
    }
    // The messages name what is wrong.
    let unknown = http::get_json(addr, "/v1/kv/keep?bogus=1");
    assert!(
        unknown.error().unwrap_or_default().contains("bogus"),
        "the unknown parameter is not named: {}",
        unknown.text
    );
    let too_big = one_shot_request(addr, "PUT", "/v1/kv/keep", Some(&oversized));
    assert!(
        too_big.error().unwrap_or_default().contains("1024"),
        "the 413 does not name the limit: {}",
        too_big.text
    );

    // Nothing stored changed: same keys, values and versions, and none of the rejected keys exist.
    let after = without_reserved(entries_under(addr, "/"));
    assert_eq!(after, before, "the store changed after rejected requests");
    for key in ["/newkey", "/newbig", "/a", "/lathe/nodes/evil"] {
        let reply = http::get_json(addr, &format!("/v1/kv{key}"));
        assert_eq!(reply.status, 404, "{key} exists: {}", reply.text);
    }
    // The node still serves writes.
    let reply: Reply = http::put_json(addr, "/v1/kv/keep", &json!({"v": 2}));
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(version_of(&reply).unwrap() > before["/keep"].1);
}

/// What a `lathe-node` run with bad flags did.
struct Refusal {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `lathe-node ARGS` with `--http` on a port this test holds and `--data-dir` in a fresh
/// directory: with bad flags it must exit before binding anything (binding the held port would fail
/// with another message and code), and without creating the data dir.
fn run_with_bad_flags(args: &[&str], env: &[(&str, &str)]) -> Refusal {
    let held = TcpListener::bind("127.0.0.1:0").expect("a port to hold");
    let http_addr = held.local_addr().unwrap().to_string();
    let scratch = tempfile::tempdir().expect("a scratch dir");
    let data_dir = scratch.path().join("never-created");
    let mut command = Command::new(node_binary());
    command
        .args(["--http", &http_addr, "--data-dir"])
        .arg(&data_dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("LATHE_") {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().copied());
    let mut child = command.spawn().expect("run lathe-node");
    let status = try_wait_until(EXIT_DEADLINE, || child.try_wait().expect("waitpid"));
    let status = match status {
        Ok(status) => status,
        Err(_) => {
            child.kill().ok();
            child.wait().ok();
            panic!(
                "lathe-node {args:?} still runs after {EXIT_DEADLINE:?}: bad flags were accepted"
            );
        }
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .ok();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .ok();
    assert!(
        !data_dir.exists(),
        "lathe-node {args:?} created its data dir before refusing its flags"
    );
    drop(held);
    Refusal {
        code: status.code(),
        stdout,
        stderr,
    }
}

/// Exit code 2, nothing on stdout, one line on stderr that names `flag`.
fn check_refusal(refusal: &Refusal, flag: &str, what: &str) {
    assert_eq!(
        refusal.code,
        Some(2),
        "{what}: exit code; stderr: {}",
        refusal.stderr
    );
    let lines: Vec<&str> = refusal
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "{what}: expected one line on stderr, got {lines:?}"
    );
    assert!(
        lines[0].contains(flag),
        "{what}: stderr does not name {flag}: {:?}",
        lines[0]
    );
    assert!(
        refusal.stdout.trim().is_empty(),
        "{what}: unexpected stdout {:?}",
        refusal.stdout
    );
}

#[test]
fn bad_flags_are_one_line_naming_the_flag_and_exit_code_2_before_binding() {
    let refusal = run_with_bad_flags(&["--bind", "nowhere"], &[]);
    check_refusal(&refusal, "--bind", "--bind nowhere");

    let refusal = run_with_bad_flags(&["--frobnicate"], &[]);
    check_refusal(&refusal, "--frobnicate", "an unknown flag");

    let refusal = run_with_bad_flags(&["--zookeeper", "127.0.0.1:not-a-port"], &[]);
    check_refusal(&refusal, "--zookeeper", "a bad --zookeeper");

    let refusal = run_with_bad_flags(&["--max-value-bytes", "0"], &[]);
    check_refusal(&refusal, "--max-value-bytes", "a zero --max-value-bytes");

    let refusal = run_with_bad_flags(&["--join", "no-port-here"], &[]);
    check_refusal(&refusal, "--join", "a bad --join");

    let refusal = run_with_bad_flags(&["--workers", "0"], &[]);
    check_refusal(&refusal, "--workers", "zero --workers");

    // The environment is read like the flags.
    let refusal = run_with_bad_flags(&[], &[("LATHE_BIND", "nowhere")]);
    check_refusal(&refusal, "--bind", "LATHE_BIND=nowhere");
}

/// An HTTP/1.1 response read off a socket: status, lowercased headers, body.
type RawResponse = (u16, Vec<(String, String)>, String);

/// Reads one HTTP/1.1 response (body by `Content-Length`) from `reader`.
fn read_response(reader: &mut impl BufRead) -> std::io::Result<RawResponse> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let Some((name, value)) = line.trim_end().split_once(':') else {
            break;
        };
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok((status, headers, String::from_utf8_lossy(&body).into_owned()))
}

/// Sends one request on a fresh connection (`Connection: close`) and reads the answer, so that each
/// bad request is judged on its own whatever the server does with the connection afterwards (see
/// the keep-alive test below).
fn one_shot_request(addr: &str, method: &str, path: &str, body: Option<&str>) -> Reply {
    let mut socket = TcpStream::connect(addr).expect("connect");
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("a read timeout");
    let body = body.unwrap_or("");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    socket.write_all(head.as_bytes()).expect("send the head");
    // The server may answer (and close) before reading the body: a failed write is not the test's
    // concern.
    socket.write_all(body.as_bytes()).ok();
    let mut reader = BufReader::new(socket);
    let (status, headers, text) = read_response(&mut reader)
        .unwrap_or_else(|err| panic!("{method} {path}: no answer: {err}"));
    Reply {
        status,
        headers: headers.into_iter().collect(),
        body: serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        text,
    }
}

/// Some errors are answered before the request's body is read (413 over the limit, 405, 403 under
/// `/lathe/`). If the server then closes the keep-alive connection, the answer must say so
/// (`Connection: close`); otherwise a client that pools connections sends its next request into a
/// closed socket (ureq, for one, fails the next POST with "Unexpected EOF").
#[test]
fn errors_answered_before_the_body_keep_the_connection_usable_or_announce_its_close() {
    let node = NodeBuilder::new()
        .name("keepalive")
        .arg("--max-value-bytes")
        .arg("1024")
        .start();
    let addr = node.http_addr();
    let body = format!("\"{}\"", "y".repeat(200_000));
    let mut broken = Vec::new();
    for (method, path, status) in [
        ("PUT", "/v1/kv/huge", 413),
        ("POST", "/v1/kv/huge", 405),
        ("PUT", "/v1/kv/lathe/huge", 403),
    ] {
        let mut socket = TcpStream::connect(addr).expect("connect");
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("a read timeout");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        );
        socket.write_all(head.as_bytes()).expect("send the head");
        socket
            .write_all(&body.as_bytes()[..1500])
            .expect("send the start of the body");
        let mut reader = BufReader::new(socket.try_clone().expect("a second handle"));
        let (answered, headers, text) = read_response(&mut reader).expect("the error answer");
        assert_eq!(answered, status, "{method} {path}: {text}");
        let announces_close = headers
            .iter()
            .any(|(n, v)| n == "connection" && v.eq_ignore_ascii_case("close"));
        if announces_close {
            continue;
        }
        // No `Connection: close`: the connection is kept alive, so it must serve the next request.
        let get = format!("GET /v1/health HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        let next = socket
            .write_all(&body.as_bytes()[1500..])
            .and_then(|()| socket.write_all(get.as_bytes()))
            .and_then(|()| read_response(&mut reader));
        match next {
            Ok((200, _, _)) => {}
            Ok((other, _, text)) => broken.push(format!(
                "{method} {path} → {status}, then GET /v1/health → {other} {text}"
            )),
            Err(err) => broken.push(format!(
                "{method} {path} → {status} with headers {headers:?} (no `Connection: close`), \
                    then the \
                 connection was closed: {err}"
            )),
        }
    }
    assert!(
        broken.is_empty(),
        "keep-alive connections broken after errors answered before the body: {broken:#?}"
    );
}
