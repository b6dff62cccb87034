//! Access control (`lathe-node --acl`) on real nodes: 401 without a token, 403 without the
//! permission, bootstrap once (also when two nodes race), revocation reaching another node within
//! a deadline, with ZooKeeper and with the embedded store (whose joined nodes forward writes to the
//! founding node, which checks the caller again); the CLI and the agent with `--token`; and
//! browsers refused when they try to change state cross-origin, with or without `--acl`.
//!
//! Nodes with `--acl` are started one by one (`NodeBuilder`), since `Cluster` waits on
//! `/v1/members`, which needs a token there.

#[path = "agent/support/mod.rs"]
mod agent_support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lathe_tests::http::Reply;
use lathe_tests::node::{cli_binary, free_port, node_binary, run_cli, NodeBuilder, NodeProcess};
use lathe_tests::scenario::{assert_error, metric_value, TEST_COOKIE};
use lathe_tests::wait::wait_until;
use lathe_tests::zk::ZkServer;
use serde_json::{json, Value};

/// How long an ACL change may take to reach another node (the registry's fan-out; at worst the
/// nodes' 5 s periodic refresh).
const REACH_OTHER_NODES: Duration = Duration::from_secs(8);
const CONVERGE: Duration = Duration::from_secs(60);

/// One request with extra headers (the harness's helpers send none).
fn call(
    method: &str,
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, &str)>,
) -> Reply {
    let url = format!("http://{addr}{path}");
    let mut request = ureq::request(method, &url).timeout(Duration::from_secs(30));
    for (name, value) in headers {
        request = request.set(name, value);
    }
    let result = match body {
        Some((content_type, body)) => request.set("Content-Type", content_type).send_string(body),
        None => request.call(),
    };
    let response = match result {
        Ok(response) | Err(ureq::Error::Status(_, response)) => response,
        Err(error) => panic!("{method} {url}: {error}"),
    };
    let status = response.status();
    let headers = response
        .headers_names()
        .into_iter()
        .filter_map(|n| {
            response
                .header(&n)
                .map(|v| (n.to_ascii_lowercase(), v.to_string()))
        })
        .collect();
    let text = response.into_string().unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        text,
        body,
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn get(addr: &str, path: &str, token: &str) -> Reply {
    call(
        "GET",
        addr,
        path,
        &[("Authorization", &bearer(token))],
        None,
    )
}

fn send_json(method: &str, addr: &str, path: &str, token: &str, body: &Value) -> Reply {
    let body = body.to_string();
    call(
        method,
        addr,
        path,
        &[("Authorization", &bearer(token))],
        Some(("application/json", &body)),
    )
}

fn bootstrap(addr: &str) -> String {
    let reply = call("POST", addr, "/v1/acl/bootstrap", &[], None);
    assert_eq!(reply.status, 200, "bootstrap: {}", reply.text);
    assert_eq!(reply.body["management"], true, "{}", reply.text);
    reply.body["secret"]
        .as_str()
        .expect("the bootstrap answer carries the secret")
        .to_string()
}

/// Stores policy `name` with `rules` and makes a token carrying it; returns (accessor, secret).
fn token_with(addr: &str, management: &str, name: &str, rules: Value) -> (String, String) {
    let path = format!("/v1/acl/policies/{name}");
    let reply = send_json("PUT", addr, &path, management, &json!({ "rules": rules }));
    assert_eq!(reply.status, 200, "policy {name}: {}", reply.text);
    let reply = send_json(
        "POST",
        addr,
        "/v1/acl/tokens",
        management,
        &json!({ "policies": [name] }),
    );
    assert_eq!(reply.status, 200, "token for {name}: {}", reply.text);
    let field = |f: &str| {
        reply.body[f]
            .as_str()
            .expect("accessor and secret")
            .to_string()
    };
    (field("accessor"), field("secret"))
}

fn acl_node(name: &str) -> NodeBuilder {
    NodeBuilder::new()
        .name(name)
        .cookie(TEST_COOKIE)
        .arg("--acl")
}

#[test]
fn tokens_and_policies_decide_what_a_request_may_do() {
    let node = acl_node("acl-rest").start();
    let addr = node.http_addr();

    // Open without a token: health, metrics, the dashboard page.
    for path in ["/v1/health", "/metrics", "/ui"] {
        assert_eq!(call("GET", addr, path, &[], None).status, 200, "GET {path}");
    }
    // Everything else: 401 with a JSON error, without a token or with an unknown one.
    let message = assert_error(
        &call("GET", addr, "/v1/kv/app/x", &[], None),
        401,
        "no token",
    );
    assert!(message.contains("token"), "{message}");
    assert_error(
        &get(addr, "/v1/members", "not-a-token"),
        401,
        "unknown token",
    );
    assert_error(
        &call(
            "PUT",
            addr,
            "/v1/kv/app/x",
            &[],
            Some(("application/json", "1")),
        ),
        401,
        "no token, write",
    );

    // Bootstrap once; the second time is a 409 that says why.
    let root = bootstrap(addr);
    let again = assert_error(
        &call("POST", addr, "/v1/acl/bootstrap", &[], None),
        409,
        "bootstrap again",
    );
    assert!(again.contains("bootstrap"), "{again}");

    // The management token may do everything.
    assert_eq!(
        send_json("PUT", addr, "/v1/kv/app/x", &root, &json!({"beta": true})).status,
        200
    );
    assert_eq!(get(addr, "/v1/members", &root).status, 200);
    assert_eq!(get(addr, "/v1/acl/tokens", &root).status, 200);

    // A read-only token reads its prefix, and is refused (403, naming the permission) elsewhere.
    let (reader_accessor, reader) = token_with(
        addr,
        &root,
        "reader",
        json!([{"resource": "key", "prefix": "/app", "access": "read"}]),
    );
    let read = get(addr, "/v1/kv/app/x", &reader);
    assert_eq!(
        (read.status, &read.body["value"]),
        (200, &json!({"beta": true})),
        "{}",
        read.text
    );
    let via_header = call(
        "GET",
        addr,
        "/v1/kv/app/x",
        &[("X-Lathe-Token", &reader)],
        None,
    );
    assert_eq!(via_header.status, 200, "X-Lathe-Token: {}", via_header.text);
    let refused = assert_error(
        &send_json("PUT", addr, "/v1/kv/app/x", &reader, &json!(1)),
        403,
        "read-only write",
    );
    assert!(refused.contains("key write on /app/x"), "{refused}");
    assert_error(
        &get(addr, "/v1/kv/other", &reader),
        403,
        "read outside the prefix",
    );
    assert_error(
        &get(addr, "/v1/kv/lathe/acl/bootstrap", &reader),
        403,
        "the acl records",
    );
    let deploy = call(
        "PUT",
        addr,
        "/v1/topology",
        &[("Authorization", &bearer(&reader))],
        Some(("application/toml", "")),
    );
    let refused = assert_error(&deploy, 403, "deploy with a read-only token");
    assert!(refused.contains("topology write"), "{refused}");
    assert_error(
        &send_json(
            "POST",
            addr,
            "/v1/acl/tokens",
            &reader,
            &json!({"management": true}),
        ),
        403,
        "minting",
    );

    // Denials are counted by reason.
    let denied = metric_value(addr, "lathe_api_denied_total").expect("lathe_api_denied_total");
    assert!(denied >= 6.0, "lathe_api_denied_total = {denied}");

    // The CLI sends --token (or LATHE_TOKEN).
    let out = run_cli(addr, &["--token", &reader, "kv", "get", "app/x"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("beta"));
    let out = run_cli(addr, &["kv", "get", "app/x"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("token"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(cli_binary())
        .args(["--addr", addr, "kv", "put", "app/y", "2"])
        .env("LATHE_TOKEN", &root)
        .output()
        .expect("run lathe");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run_cli(addr, &["--token", &reader, "kv", "put", "app/y", "3"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("lacks key write"),
        "{out:?}"
    );
    let out = run_cli(
        addr,
        &[
            "--token",
            &root,
            "acl",
            "policy",
            "put",
            "ops",
            "--rule",
            "operator:write",
            "--rule",
            "cluster:read",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run_cli(
        addr,
        &[
            "--token", &root, "--json", "acl", "token", "create", "--policy", "ops",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: Value = serde_json::from_slice(&out.stdout).expect("json");
    let ops = created["secret"].as_str().expect("a secret");
    assert_eq!(get(addr, "/v1/tasks", ops).status, 200);
    let out = run_cli(addr, &["--token", &root, "acl", "token", "list"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains(&reader_accessor) && !listed.contains(&reader),
        "{listed}"
    );

    // Revoked on this node: refused at once.
    let out = run_cli(
        addr,
        &["--token", &root, "acl", "token", "delete", &reader_accessor],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_error(&get(addr, "/v1/kv/app/x", &reader), 401, "a revoked token");
}

#[test]
fn with_zookeeper_bootstrap_happens_once_and_revocation_reaches_every_node() {
    let zk = ZkServer::start().unwrap_or_else(|e| panic!("cannot start zookeeper: {e:#}"));
    let first = acl_node("acl-zk-0").zookeeper(zk.connect_string()).start();
    let second = acl_node("acl-zk-1")
        .zookeeper(zk.connect_string())
        .join(first.cluster_addr())
        .start();
    let (a, b) = (
        first.http_addr().to_string(),
        second.http_addr().to_string(),
    );

    // Two nodes bootstrapping at the same moment: exactly one wins.
    let racers: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .map(|addr| std::thread::spawn(move || call("POST", &addr, "/v1/acl/bootstrap", &[], None)))
        .collect();
    let answers: Vec<Reply> = racers
        .into_iter()
        .map(|r| r.join().expect("a racer"))
        .collect();
    let mut statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
    statuses.sort();
    assert_eq!(statuses, [200, 409], "{answers:?}");
    let root = answers
        .iter()
        .find_map(|r| r.body["secret"].as_str())
        .expect("the winner's secret")
        .to_string();

    revocation_reaches_the_other_node(&a, &b, &root);
}

#[test]
fn with_the_embedded_store_forwarded_writes_are_checked_and_revocation_spreads() {
    let founder = acl_node("acl-emb-0").start();
    let joined = acl_node("acl-emb-1").join(founder.cluster_addr()).start();
    let (a, b) = (
        founder.http_addr().to_string(),
        joined.http_addr().to_string(),
    );
    // Bootstrap through the joined node: its write travels to the founder's store.
    let root = wait_until("bootstrap through the joined node", CONVERGE, || {
        let reply = call("POST", &b, "/v1/acl/bootstrap", &[], None);
        (reply.status == 200)
            .then(|| reply.body["secret"].as_str().map(str::to_string))
            .flatten()
    });
    assert_error(
        &call("POST", &a, "/v1/acl/bootstrap", &[], None),
        409,
        "bootstrap on the founder",
    );
    // A write made for a REST caller on the joined node carries the caller; the founder checks it.
    wait_until(
        "the joined node to know the management token",
        REACH_OTHER_NODES,
        || get(&b, "/v1/kv/app/x", &root).status == 404,
    );
    let written = send_json("PUT", &b, "/v1/kv/app/forwarded", &root, &json!("ok"));
    assert_eq!(written.status, 200, "{}", written.text);
    // The cluster's tree: the node asks the other member with the caller's token.
    wait_until("both trees, without an error", CONVERGE, || {
        let tree = get(&a, "/v1/tree", &root);
        let nodes = tree.body["nodes"].as_array().cloned().unwrap_or_default();
        (nodes.len() == 2 && nodes.iter().all(|n| n.get("error").is_none()))
            .then_some(())
            .ok_or(tree.text)
    });
    revocation_reaches_the_other_node(&a, &b, &root);
}

/// A token made on node `a` works on node `b` once `b` has seen it; deleted on `a`, `b` refuses it
/// within [`REACH_OTHER_NODES`].
fn revocation_reaches_the_other_node(a: &str, b: &str, root: &str) {
    for node in [a, b] {
        wait_until(
            "every node to know the management token",
            REACH_OTHER_NODES,
            || get(node, "/v1/acl/tokens", root).status == 200,
        );
    }
    let (accessor, writer) = token_with(
        a,
        root,
        "app-writer",
        json!([{"resource": "key", "prefix": "/app", "access": "write"}]),
    );
    wait_until(
        "the other node to accept the new token",
        REACH_OTHER_NODES,
        || send_json("PUT", b, "/v1/kv/app/k", &writer, &json!(1)).status == 200,
    );
    let deleted = send_json(
        "DELETE",
        a,
        &format!("/v1/acl/tokens/{accessor}"),
        root,
        &json!(null),
    );
    assert_eq!(deleted.status, 200, "{}", deleted.text);
    let revoked = Instant::now();
    wait_until(
        "the other node to refuse the revoked token",
        REACH_OTHER_NODES,
        || get(b, "/v1/kv/app/k", &writer).status == 401,
    );
    eprintln!(
        "revocation reached the other node in {:?}",
        revoked.elapsed()
    );
}

#[test]
fn browsers_cannot_change_state_cross_origin_even_without_acl() {
    let node = NodeBuilder::new()
        .name("acl-origin")
        .cookie(TEST_COOKIE)
        .start();
    let addr = node.http_addr();
    let json = Some(("application/json", "1"));
    let evil = [("Origin", "http://evil.example")];
    let refused = assert_error(
        &call("PUT", addr, "/v1/kv/app/x", &evil, json),
        403,
        "cross-origin PUT",
    );
    assert!(refused.contains("cross-origin"), "{refused}");
    let kill = Some(("application/json", r#"{"path": "node"}"#));
    assert_error(
        &call("POST", addr, "/v1/actors/kill", &evil, kill),
        403,
        "cross-origin kill",
    );
    let site = [("Sec-Fetch-Site", "cross-site")];
    assert_error(
        &call("POST", addr, "/v1/shifts/app/x/pause", &site, None),
        403,
        "cross-site fetch",
    );
    // A simple (preflight-free) request body from a browser: refused whatever its origin.
    let form = Some(("text/plain", r#"{"to": "x"}"#));
    let browser = [("User-Agent", "Mozilla/5.0 (X11; Linux x86_64)")];
    assert_error(
        &call("POST", addr, "/v1/shifts/app/x", &browser, form),
        415,
        "text/plain POST",
    );
    // curl -d labels its body a form: outside a browser that is not refused (a JSON body).
    let curl = [("User-Agent", "curl/7.88.1")];
    let curl_form = Some(("application/x-www-form-urlencoded", "7"));
    assert_eq!(
        call("PUT", addr, "/v1/kv/app/y", &curl, curl_form).status,
        200
    );
    // The node's own origin (the dashboard) and clients without Origin are served; reads too.
    let own = format!("http://{addr}");
    assert_eq!(
        call("PUT", addr, "/v1/kv/app/x", &[("Origin", &own)], json).status,
        200
    );
    assert_eq!(call("PUT", addr, "/v1/kv/app/x", &[], json).status, 200);
    assert_eq!(call("GET", addr, "/v1/kv/app/x", &evil, None).status, 200);
    assert_eq!(call("GET", addr, "/ui", &[], None).status, 200);
    assert!(metric_value(addr, "lathe_api_denied_total").expect("the counter") >= 4.0);
}

/// A raw HTTP/1.1 request with the given `Host` and a browser's user agent: the status code.
fn browser_status(addr: &str, host: &str, method: &str, path: &str) -> u16 {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the node");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: Mozilla/5.0 (X11; Linux)\r\n\
         Content-Type: application/json\r\nContent-Length: 1\r\nConnection: close\r\n\r\n1"
    );
    stream.write_all(head.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"))
}

/// DNS rebinding: a page whose name now resolves to the node is "same-origin" with it, so a
/// browser's request by a name the node does not know is refused (reads too); by IP address,
/// localhost or a name given to --http-allowed-hosts it is served. Other clients use any name.
#[test]
fn browsers_reach_a_node_only_by_ip_localhost_or_an_allowed_name() {
    let node = NodeBuilder::new()
        .name("acl-rebind")
        .cookie(TEST_COOKIE)
        .arg("--http-allowed-hosts")
        .arg("lathe.test")
        .start();
    let addr = node.http_addr();
    let port = addr.rsplit(':').next().unwrap();
    let rebound = format!("evil.example:{port}");
    assert_eq!(
        browser_status(addr, &rebound, "GET", "/v1/kv/?recurse"),
        403
    );
    assert_eq!(browser_status(addr, &rebound, "GET", "/ui"), 403);
    assert_eq!(browser_status(addr, &rebound, "PUT", "/v1/kv/app/x"), 403);
    assert_eq!(browser_status(addr, addr, "PUT", "/v1/kv/app/x"), 200);
    let local = format!("localhost:{port}");
    assert_eq!(browser_status(addr, &local, "GET", "/v1/kv/app/x"), 200);
    let allowed = format!("lathe.test:{port}");
    assert_eq!(browser_status(addr, &allowed, "GET", "/ui"), 200);
    // The CLI, agents and curl are not browsers: any name.
    let curl = call("GET", addr, "/v1/kv/app/x", &[("Host", &rebound)], None);
    assert_eq!(curl.status, 200, "{}", curl.text);
    let refused = call(
        "GET",
        addr,
        "/v1/kv/app/x",
        &[("Host", &rebound), ("User-Agent", "Mozilla/5.0")],
        None,
    );
    let message = assert_error(&refused, 403, "a rebound browser read");
    assert!(message.contains("--http-allowed-hosts"), "{message}");
    let bad = std::process::Command::new(node_binary())
        .args(["--http-allowed-hosts", "evil.example:80"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("--http-allowed-hosts"), "{stderr}");
}

const FRONTPAGE: &str = r#"
[task.http.frontpage.v4-2-1]
crate = "http_frontpage"
version = "4.2.1"
task = "my::FrontPage"
tasks = 1
"#;

#[test]
fn an_agent_with_a_token_follows_endpoints() {
    let node: NodeProcess = acl_node("acl-agent").start();
    let addr = node.http_addr();
    let root = bootstrap(addr);
    let deploy = call(
        "PUT",
        addr,
        "/v1/topology",
        &[("Authorization", &bearer(&root))],
        Some(("application/toml", FRONTPAGE)),
    );
    assert_eq!(deploy.status, 200, "{}", deploy.text);
    let (_, agent_token) = token_with(
        addr,
        &root,
        "agents",
        json!([{"resource": "agent", "access": "write"}]),
    );
    // The agent's token reads endpoints and nothing else.
    let services = get(addr, "/v1/services/http/frontpage/v4-2-1", &agent_token);
    assert!(![401, 403].contains(&services.status), "{}", services.text);
    assert_error(
        &get(addr, "/v1/kv/app", &agent_token),
        403,
        "an agent token reading keys",
    );

    let dir = tempfile::tempdir().expect("a scratch dir");
    let template = dir.path().join("endpoints.j2");
    std::fs::write(&template, "{% for e in entries %}{{ e.key }}\n{% endfor %}").expect("template");
    let output = dir.path().join("endpoints");
    let status = agent_support::free_addr();
    let config = format!(
        "registry = {}\n[status]\nlisten = {}\n[[watch]]\nname = \"fp\"\n\
            prefix = \"/lathe/endpoints/task/http/frontpage\"\n\
         wait = {{ min = \"50ms\", max = \"500ms\" }}\n[[watch.action]]\ntype = \"template\"\n\
             template = {}\ndestination = {}\n",
        agent_support::registry_list(&[addr.to_string()]),
        agent_support::toml_str(&status),
        agent_support::toml_str(template.display().to_string()),
        agent_support::toml_str(output.display().to_string()),
    );
    let config_path = dir.path().join("agent.toml");
    std::fs::write(&config_path, config).expect("agent config");
    let log = std::fs::File::create(dir.path().join("agent.log")).expect("agent log");
    let agent = KillOnDrop(
        Command::new(agent_support::agent_binary())
            .arg("--config")
            .arg(&config_path)
            .arg("--token")
            .arg(&agent_token)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn lathe-agent"),
    );
    wait_until("the agent to render the endpoint", CONVERGE, || {
        std::fs::read_to_string(&output)
            .unwrap_or_default()
            .contains("/lathe/endpoints/task/http/frontpage/v4-2-1/0")
    });
    drop(agent);
}

#[test]
fn lathe_up_with_acl_bootstraps_and_prints_the_management_token() {
    let dir = tempfile::tempdir().expect("a scratch dir");
    let (http, cluster) = (free_port(), free_port());
    let log = dir.path().join("up.log");
    let mut command = Command::new(cli_binary());
    command
        .args(["up", "--nodes", "1", "--acl"])
        .args([
            "--http-base",
            &http.to_string(),
            "--cluster-base",
            &cluster.to_string(),
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--node-bin")
        .arg(node_binary())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).expect("log"))
        .stderr(Stdio::null());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("LATHE_") {
            command.env_remove(name);
        }
    }
    let mut up = KillOnDrop(command.spawn().expect("run lathe up"));
    let token = wait_until("lathe up to print the management token", CONVERGE, || {
        let printed = std::fs::read_to_string(&log).unwrap_or_default();
        let line = printed.lines().find(|l| l.contains("management token: "))?;
        line.rsplit(' ').next().map(str::to_string)
    });
    let addr = format!("127.0.0.1:{http}");
    assert_error(
        &call("GET", &addr, "/v1/members", &[], None),
        401,
        "lathe up --acl, no token",
    );
    assert_eq!(get(&addr, "/v1/members", &token).status, 200);
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(up.0.id().to_string())
        .status();
    wait_until("lathe up to stop its node", CONVERGE, || {
        up.0.try_wait().ok().flatten()
    });
}

#[test]
fn the_dashboard_takes_its_token_from_the_url_fragment() {
    let node = acl_node("acl-ui").start();
    let addr = node.http_addr();
    let root = bootstrap(addr);
    let browser = lathe_tests::browser::Browser::start("acl_ui");
    browser.open(&format!("http://{addr}/ui#token={root}"));
    wait_until(
        "the dashboard to show the node with the token",
        CONVERGE,
        || {
            let text = browser.eval("return document.body.innerText");
            let text = text.as_str().unwrap_or_default().to_string();
            (text.contains("acl-ui") && !text.contains("token"))
                .then_some(())
                .ok_or(text)
        },
    );
    wait_until(
        "the page's change stream to connect with the token",
        CONVERGE,
        || browser.eval("return document.getElementById('conn').textContent") == json!("connected"),
    );
    assert_eq!(
        browser.eval("return window.location.hash"),
        json!(""),
        "the token left the URL"
    );
    assert_eq!(browser.console_errors(), Vec::<Value>::new());
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
