//! TLS and the hardening of the ports, against real `lathe-node`, `lathe`, `lathe-agent` and
//! ZooKeeper processes, with certificates made at test time (rcgen): REST over HTTPS trusted
//! through `--ca`, plain HTTP and untrusted clients refused, mutual TLS, a TLS handshake that
//! never comes closed in time, the cluster port closing connections that never authenticate,
//! ZooKeeper digest ACLs that keep a foreign client out, the CLI and the agent with `--ca`, and
//! the refusal to expose a port unsafely without `--insecure`.

#[path = "agent/support/mod.rs"]
mod agent_support;

use std::io::Read;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_support::{free_addr, toml_str, AgentProcess};
use lathe_tests::node::{free_port, node_binary, run_cli, NodeBuilder, NodeProcess};
use lathe_tests::scenario::metric_value;
use lathe_tests::wait::{try_wait_until, wait_until};
use lathe_tests::zk::ZkServer;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(60);
/// Generous: the machine may be busy; what matters is "closed", not "open for good".
const CLOSE_DEADLINE: Duration = Duration::from_secs(20);

/// A CA, a server certificate for 127.0.0.1/localhost and a client certificate signed by it, and
/// a second CA that signed neither.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("a scratch dir");
        let (ca_params, ca_key) = ca("lathe test ca");
        std::fs::write(
            dir.path().join("ca.pem"),
            ca_params.self_signed(&ca_key).unwrap().pem(),
        )
        .unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let both = || {
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ]
        };
        for (name, purposes) in [
            ("server", vec![ExtendedKeyUsagePurpose::ServerAuth]),
            ("client", vec![ExtendedKeyUsagePurpose::ClientAuth]),
            // A cluster node accepts and connects with the same certificate.
            ("node", both()),
        ] {
            let key = KeyPair::generate().unwrap();
            let mut params =
                CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                    .unwrap();
            params
                .distinguished_name
                .push(DnType::CommonName, format!("lathe test {name}"));
            params.extended_key_usages = purposes;
            let cert = params.signed_by(&key, &issuer).unwrap();
            std::fs::write(dir.path().join(format!("{name}.pem")), cert.pem()).unwrap();
            std::fs::write(
                dir.path().join(format!("{name}-key.pem")),
                key.serialize_pem(),
            )
            .unwrap();
        }
        let (other_params, other_key) = ca("another ca");
        let other = other_params.self_signed(&other_key).unwrap();
        std::fs::write(dir.path().join("other-ca.pem"), other.pem()).unwrap();
        // A client certificate the node's CA did not sign.
        let other_issuer = Issuer::new(other_params, other_key);
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        params.extended_key_usages = both();
        let cert = params.signed_by(&key, &other_issuer).unwrap();
        std::fs::write(dir.path().join("stranger.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("stranger-key.pem"), key.serialize_pem()).unwrap();
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// `--tls-cert` and `--tls-key` of a node.
    fn server_args(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.arg("server.pem"),
            "--tls-key".into(),
            self.arg("server-key.pem"),
        ]
    }
}

fn ca(name: &str) -> (CertificateParams, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    (params, key)
}

/// An HTTPS client trusting `ca` (none: nothing), presenting `identity` (certificate, key).
fn https(ca: Option<PathBuf>, identity: Option<(PathBuf, PathBuf)>) -> ureq::Agent {
    let files = lathe_tls::ClientTlsFiles {
        ca,
        identity: identity.map(|(certificate, key)| lathe_tls::Identity { certificate, key }),
    };
    let config = files.client_config().expect("a client config");
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .tls_connector(Arc::new(lathe_tls::UreqTls(config)))
        .build()
}

/// `GET https://addr/path`: the status and body, or the transport error.
fn get(agent: &ureq::Agent, addr: &str, path: &str) -> Result<(u16, String), String> {
    match agent.get(&format!("https://{addr}{path}")).call() {
        Ok(response) => Ok((
            response.status(),
            response.into_string().unwrap_or_default(),
        )),
        Err(ureq::Error::Status(status, response)) => {
            Ok((status, response.into_string().unwrap_or_default()))
        }
        Err(ureq::Error::Transport(transport)) => Err(transport.to_string()),
    }
}

/// Spawns a node serving REST over TLS and waits until it answers over HTTPS.
fn start_tls_node(builder: NodeBuilder, client: &ureq::Agent) -> NodeProcess {
    let mut node = builder.spawn();
    let addr = node.http_addr().to_string();
    wait_until("the node to serve over https", DEADLINE, || {
        if let Some(status) = node.exit_status() {
            panic!("the node exited ({status}):\n{}", node.log_tail(30));
        }
        matches!(get(client, &addr, "/v1/health"), Ok((200, _)))
    });
    node
}

fn with_args(mut builder: NodeBuilder, args: Vec<String>) -> NodeBuilder {
    for arg in args {
        builder = builder.arg(arg);
    }
    builder
}

/// The value of a metric line (`name{labels}`) in a `/metrics` text.
fn metric_in(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Reads until the peer closes; how long that took (panics if still open after the deadline).
fn until_closed(mut socket: TcpStream) -> Duration {
    let started = Instant::now();
    socket.set_read_timeout(Some(CLOSE_DEADLINE)).unwrap();
    let mut buffer = [0u8; 1024];
    loop {
        match socket.read(&mut buffer) {
            Ok(0) => return started.elapsed(),
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("still open after {CLOSE_DEADLINE:?}")
            }
            // A reset is a close too.
            Err(_) => return started.elapsed(),
        }
    }
}

#[test]
fn rest_serves_https_only_and_closes_silent_handshakes() {
    let pki = Pki::new();
    let trusted = https(Some(pki.path("ca.pem")), None);
    let builder = NodeBuilder::new()
        .name("tls-rest")
        .arg("--http-header-timeout")
        .arg("1");
    let node = start_tls_node(with_args(builder, pki.server_args()), &trusted);
    let addr = node.http_addr().to_string();

    let (status, body) = get(&trusted, &addr, "/v1/members").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("tls-rest"), "{body}");
    // Not trusted without the CA, nor through another CA.
    let error = get(&https(None, None), &addr, "/v1/health").unwrap_err();
    assert!(error.contains("UnknownIssuer"), "{error}");
    let error = get(
        &https(Some(pki.path("other-ca.pem")), None),
        &addr,
        "/v1/health",
    );
    assert!(error.is_err(), "{error:?}");
    // Plain HTTP on the TLS port gets no answer.
    let plain = lathe_tests::http::try_get_json(&addr, "/v1/health");
    assert!(plain.is_err(), "plain http answered: {plain:?}");
    // A connection that never starts its handshake is closed after the deadline (1 s).
    let silent = TcpStream::connect(&addr).unwrap();
    let took = until_closed(silent);
    assert!(took >= Duration::from_millis(500), "closed after {took:?}");

    wait_until("handshakes counted by outcome", DEADLINE, || {
        let (_, text) = get(&trusted, &addr, "/metrics").unwrap();
        let series = |result: &str| {
            metric_in(
                &text,
                &format!("lathe_api_tls_handshakes_total{{result=\"{result}\"}}"),
            )
        };
        let counts = (series("ok"), series("failed"), series("timeout"));
        (counts.0 >= 1.0 && counts.1 >= 2.0 && counts.2 >= 1.0)
            .then_some(())
            .ok_or(format!("{counts:?}"))
    });
}

#[test]
fn the_cli_reaches_an_https_node_with_its_ca() {
    let pki = Pki::new();
    let trusted = https(Some(pki.path("ca.pem")), None);
    let node = start_tls_node(
        with_args(NodeBuilder::new().name("tls-cli"), pki.server_args()),
        &trusted,
    );
    let url = format!("https://{}", node.http_addr());
    let ca = pki.arg("ca.pem");
    let put = run_cli(&url, &["--ca", &ca, "kv", "put", "app/tls", "\"secret\""]);
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let got = run_cli(&url, &["--ca", &ca, "kv", "get", "app/tls"]);
    let out = String::from_utf8_lossy(&got.stdout);
    assert!(got.status.success() && out.contains("secret"), "{out}");
    // Without --ca the node's certificate is not trusted: exit 1, one line saying why.
    let refused = run_cli(&url, &["kv", "get", "app/tls"]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{err}");
    assert!(err.contains("UnknownIssuer"), "{err}");
}

#[test]
fn mutual_tls_requires_a_client_certificate_from_the_ca() {
    let pki = Pki::new();
    let client = || Some((pki.path("client.pem"), pki.path("client-key.pem")));
    let with_cert = https(Some(pki.path("ca.pem")), client());
    let mut args = pki.server_args();
    args.extend(["--tls-client-ca".to_string(), pki.arg("ca.pem")]);
    let node = start_tls_node(
        with_args(NodeBuilder::new().name("tls-mtls"), args),
        &with_cert,
    );
    let addr = node.http_addr().to_string();
    assert_eq!(get(&with_cert, &addr, "/v1/health").unwrap().0, 200);
    // Seen failing before --tls-client-ca: a client without a certificate was served.
    let anonymous = get(&https(Some(pki.path("ca.pem")), None), &addr, "/v1/health");
    assert!(anonymous.is_err(), "{anonymous:?}");
    let stranger = https(
        Some(pki.path("ca.pem")),
        Some((pki.path("stranger.pem"), pki.path("stranger-key.pem"))),
    );
    let stranger = get(&stranger, &addr, "/v1/health");
    assert!(stranger.is_err(), "{stranger:?}");
    // The CLI with --cert/--key.
    let url = format!("https://{addr}");
    let (ca, cert, key) = (
        pki.arg("ca.pem"),
        pki.arg("client.pem"),
        pki.arg("client-key.pem"),
    );
    let status = run_cli(
        &url,
        &["--ca", &ca, "--cert", &cert, "--key", &key, "status"],
    );
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
}

#[test]
fn the_agent_follows_an_https_registry_with_its_ca() {
    let pki = Pki::new();
    let trusted = https(Some(pki.path("ca.pem")), None);
    let node = start_tls_node(
        with_args(NodeBuilder::new().name("tls-agent"), pki.server_args()),
        &trusted,
    );
    let addr = node.http_addr().to_string();
    let put = trusted
        .put(&format!("https://{addr}/v1/kv/app/conf/mode"))
        .send_string("\"over-tls\"")
        .expect("a PUT over https");
    assert_eq!(put.status(), 200);
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("app.conf.j2");
    std::fs::write(&template, "mode = {{ values[\"/app/conf/mode\"] }}\n").unwrap();
    let destination = dir.path().join("app.conf");
    let status = free_addr();
    let config = format!(
        r#"
registry = [{registry}]
[status]
listen = {status}
[[watch]]
name = "app"
prefix = "/app/conf"
wait = {{ min = "100ms", max = "1s" }}
[[watch.action]]
type = "template"
name = "app"
template = {template}
destination = {destination}
"#,
        registry = toml_str(format!("https://{addr}")),
        status = toml_str(&status),
        template = toml_str(template.display().to_string()),
        destination = toml_str(destination.display().to_string()),
    );
    let ca = pki.arg("ca.pem");
    let _agent = AgentProcess::start_with_args(dir.path(), "tls", &status, &config, &["--ca", &ca]);
    wait_until(
        "the template rendered from the https registry",
        DEADLINE,
        || {
            std::fs::read_to_string(&destination)
                .unwrap_or_default()
                .contains("mode = over-tls")
        },
    );
}

#[test]
fn the_cluster_port_closes_connections_that_never_authenticate() {
    let node = NodeBuilder::new()
        .name("handshake")
        .arg("--cluster-handshake-timeout")
        .arg("1")
        .start();
    // Seen failing before the guard: the connection stayed open until the read timed out.
    let silent = TcpStream::connect(node.cluster_addr()).unwrap();
    let took = until_closed(silent);
    assert!(took >= Duration::from_millis(500), "closed after {took:?}");
    wait_until("the timeout counted", DEADLINE, || {
        metric_value(node.http_addr(), "lathe_cluster_handshake_timeouts_total")
            .is_ok_and(|n| n >= 1.0)
    });
    // Peers that do authenticate are not affected: a second node joins and stays.
    let joiner = NodeBuilder::new()
        .name("handshake-2")
        .join(node.cluster_addr())
        .arg("--cluster-handshake-timeout")
        .arg("1")
        .start();
    let alive = || {
        lathe_tests::http::get_json(node.http_addr(), "/v1/members").body["members"]
            .as_array()
            .map_or(0, |m| m.iter().filter(|m| m["status"] == "alive").count())
    };
    wait_until("both nodes alive", DEADLINE, || alive() == 2);
    // Past several handshake deadlines the session is still up.
    let stayed = try_wait_until(Duration::from_secs(3), || alive() != 2);
    assert!(stayed.is_err(), "a member was dropped");
    drop(joiner);
}

#[test]
fn zookeeper_digest_acl_keeps_a_foreign_client_out() {
    let zk = ZkServer::start().expect("zookeeper");
    let auth = "lathe:s3cret";
    let first = NodeBuilder::new()
        .name("zk-acl-1")
        .zookeeper(zk.connect_string())
        .arg("--zookeeper-auth")
        .arg(auth)
        .start();
    let second = NodeBuilder::new()
        .name("zk-acl-2")
        .zookeeper(zk.connect_string())
        .join(first.cluster_addr())
        .env("LATHE_ZOOKEEPER_AUTH", auth)
        .start();
    lathe_tests::scenario::put_ok(first.http_addr(), "/app/secret", &serde_json::json!(42));
    wait_until("the other node reads it", DEADLINE, || {
        lathe_tests::http::get_json(second.http_addr(), "/v1/kv/app/secret").body["value"]
            == serde_json::json!(42)
    });

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        use zookeeper_client::{Acls, Client, CreateMode, Error};
        let plain = Client::connector()
            .connect(&zk.connect_string())
            .await
            .expect("a plain zookeeper session");
        let key = "/lathe/registry/kv/app/secret";
        // Seen failing before --zookeeper-auth: the plain client read and wrote everything.
        assert_eq!(plain.get_data(key).await.unwrap_err(), Error::NoAuth);
        assert_eq!(
            plain.set_data(key, b"1", None).await.unwrap_err(),
            Error::NoAuth
        );
        assert_eq!(
            plain.list_children("/lathe/registry/kv").await.unwrap_err(),
            Error::NoAuth
        );
        let create = CreateMode::Persistent.with_acls(Acls::anyone_all());
        assert_eq!(
            plain
                .create("/lathe/registry/kv/app/intruder", b"1", &create)
                .await
                .unwrap_err(),
            Error::NoAuth
        );
        assert_eq!(
            plain.list_children("/lathe/members").await.unwrap_err(),
            Error::NoAuth
        );
        // With the credentials the same reads work: the ACL is the identity's.
        let authed = Client::connector()
            .with_auth("digest", auth.as_bytes())
            .connect(&zk.connect_string())
            .await
            .unwrap();
        let (data, _) = authed.get_data(key).await.unwrap();
        assert!(!data.is_empty());
        let (acls, _) = authed.get_acl(key).await.unwrap();
        assert_eq!(acls.len(), 1, "{acls:?}");
        assert_eq!(acls[0].scheme(), "digest", "{acls:?}");
    });
}

#[test]
fn public_ports_without_protection_are_refused_unless_insecure() {
    let scratch = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let mut child = Command::new(node_binary())
            .args(args)
            .args(["--data-dir", &scratch.path().display().to_string()])
            .env_remove("LATHE_COOKIE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let status = try_wait_until(Duration::from_secs(30), || child.try_wait().unwrap());
        let _ = child.kill();
        let output = child.wait_with_output().unwrap();
        (
            status.ok(),
            String::from_utf8_lossy(&output.stderr).to_string(),
        )
    };
    let loopback = format!("127.0.0.1:{}", free_port());
    let public_http = format!("0.0.0.0:{}", free_port());
    // Seen failing before the check: the node started and served anyone in plain HTTP.
    let (status, stderr) = run(&["--bind", &loopback, "--http", &public_http]);
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("lathe-node: --http: 0.0.0.0:")
            && stderr.contains("--tls-cert/--tls-key or --acl, or --insecure"),
        "{stderr}"
    );
    let public_bind = format!("0.0.0.0:{}", free_port());
    let http = format!("127.0.0.1:{}", free_port());
    let (status, stderr) = run(&["--bind", &public_bind, "--http", &http]);
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{stderr}");
    assert!(
        stderr.contains("--bind: ") && stderr.contains("built-in default"),
        "{stderr}"
    );
}

#[test]
fn lathe_up_starts_its_nodes_with_tls_and_trusts_them_through_ca() {
    let pki = Pki::new();
    let trusted = https(Some(pki.path("ca.pem")), None);
    let data = tempfile::tempdir().unwrap();
    let (http, cluster) = (free_port(), free_port());
    let mut up = Command::new(lathe_tests::node::cli_binary())
        .args(["--ca", &pki.arg("ca.pem"), "up", "--nodes", "1"])
        .args(["--http-base", &http.to_string()])
        .args(["--cluster-base", &cluster.to_string()])
        .args(["--data-dir", &data.path().display().to_string()])
        .args(pki.server_args())
        .env_remove("LATHE_ADDR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run lathe up");
    let addr = format!("127.0.0.1:{http}");
    let output = Arc::new(std::sync::Mutex::new(String::new()));
    let mut stdout = std::io::BufReader::new(up.stdout.take().unwrap());
    let collected = output.clone();
    std::thread::spawn(move || {
        let mut line = String::new();
        while std::io::BufRead::read_line(&mut stdout, &mut line).unwrap_or(0) > 0 {
            collected.lock().unwrap().push_str(&line);
            line.clear();
        }
    });
    // `lathe up` says a node serves once its own health check over https (through --ca) passed.
    let serving = format!("local-0 serving at https://{addr}");
    let served = try_wait_until(DEADLINE, || {
        if let Ok(Some(status)) = up.try_wait() {
            return Some(Err(status));
        }
        output.lock().unwrap().contains(&serving).then_some(Ok(()))
    });
    let answered = get(&trusted, &addr, "/v1/health");
    let _ = Command::new("kill")
        .args(["-TERM", &up.id().to_string()])
        .status();
    let stopped = try_wait_until(DEADLINE, || up.try_wait().ok().flatten());
    if stopped.is_err() {
        let _ = up.kill();
    }
    let output = output.lock().unwrap().clone();
    assert!(matches!(served, Ok(Ok(()))), "{served:?}\n{output}");
    assert!(matches!(answered, Ok((200, _))), "{answered:?}");
    assert!(stopped.is_ok_and(|status| status.success()), "{output}");
}

/// `--cluster-tls-*` with a certificate, its key and the CA peers must chain to.
fn cluster_tls(builder: NodeBuilder, pki: &Pki, cert: &str, key: &str, ca: &str) -> NodeBuilder {
    let args = [
        "--cluster-tls-cert".to_string(),
        pki.arg(cert),
        "--cluster-tls-key".to_string(),
        pki.arg(key),
        "--cluster-tls-ca".to_string(),
        pki.arg(ca),
    ];
    with_args(builder, args.to_vec())
}

/// Members `addr` holds alive, by name.
fn alive_members(addr: &str) -> Vec<String> {
    let reply = lathe_tests::http::get_json(addr, "/v1/members");
    reply.body["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["status"] == "alive")
        .filter_map(|m| m["name"].as_str().map(String::from))
        .collect()
}

#[test]
fn a_cluster_over_tls_places_instances_and_keeps_other_cas_out() {
    let pki = Pki::new();
    let zk = ZkServer::start().expect("zookeeper");
    let node = |name: &str| {
        let builder = NodeBuilder::new().name(name).zookeeper(zk.connect_string());
        cluster_tls(builder, &pki, "node.pem", "node-key.pem", "ca.pem")
    };
    let first = node("ctls-1").start();
    let second = node("ctls-2").join(first.cluster_addr()).start();
    let third = node("ctls-3").join(first.cluster_addr()).start();
    for member in [&first, &second, &third] {
        wait_until("every node alive everywhere over TLS", DEADLINE, || {
            alive_members(member.http_addr()).len() == 3
        });
    }
    let seed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/my_topology.toml"
    ))
    .unwrap();
    let reply = lathe_tests::http::put_text(
        first.http_addr(),
        "/v1/topology?file=my_topology.toml",
        "application/toml",
        &seed,
    );
    assert_eq!(reply.status, 200, "{}", reply.text);
    wait_until("13 instances running on the 3 nodes", DEADLINE, || {
        let tasks = lathe_tests::http::get_json(second.http_addr(), "/v1/tasks").body;
        let running: Vec<&Value> = tasks
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["status"] == "running")
            .collect();
        let mut nodes: Vec<&str> = running.iter().filter_map(|t| t["node"].as_str()).collect();
        nodes.sort();
        nodes.dedup();
        (running.len() == 13 && nodes.len() == 3)
            .then_some(())
            .ok_or(format!("{} running on {nodes:?}", running.len()))
    });

    // A node whose certificate another CA signed (and that trusts only that CA) finds the
    // others through ZooKeeper but never gets a session with them.
    let stranger = cluster_tls(
        NodeBuilder::new()
            .name("ctls-x")
            .zookeeper(zk.connect_string())
            .join(first.cluster_addr()),
        &pki,
        "stranger.pem",
        "stranger-key.pem",
        "other-ca.pem",
    )
    .start();
    let joined = try_wait_until(Duration::from_secs(5), || {
        alive_members(first.http_addr())
            .iter()
            .any(|name| name == "ctls-x")
    });
    assert!(joined.is_err(), "a node of another CA joined");
    assert_eq!(alive_members(stranger.http_addr()), ["ctls-x"]);
    assert!(
        stranger.log_contents().contains("Encryption")
            || first
                .log_contents()
                .contains("cluster TLS handshake refused"),
        "{}",
        first.log_tail(20)
    );
}

/// Without ZooKeeper, nodes under cluster TLS that only know one seed still reach each other:
/// membership dials (over TLS) every member it learns from its peers.
#[test]
fn a_cluster_over_tls_without_zookeeper_meshes_through_one_seed() {
    let pki = Pki::new();
    let node = |name: &str| {
        cluster_tls(
            NodeBuilder::new().name(name),
            &pki,
            "node.pem",
            "node-key.pem",
            "ca.pem",
        )
    };
    let first = node("mesh-1").start();
    let second = node("mesh-2").join(first.cluster_addr()).start();
    let third = node("mesh-3").join(first.cluster_addr()).start();
    for member in [&first, &second, &third] {
        wait_until("every node alive everywhere over TLS", DEADLINE, || {
            alive_members(member.http_addr()).len() == 3
        });
    }
    // The two joiners hold a session with each other, not only with the seed: with the seed
    // gone, each still sees the other alive.
    drop(first);
    for (member, other) in [(&second, "mesh-3"), (&third, "mesh-2")] {
        wait_until("the joiners still see each other", DEADLINE, || {
            alive_members(member.http_addr()).iter().any(|n| n == other)
        });
    }
}
