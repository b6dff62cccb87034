//! Property tests over input anyone can send: registry paths and their derived records, topology
//! files, and REST requests through the real server in-process. No input panics; every refusal
//! is a 4xx with a JSON error naming the problem.

use std::sync::Arc;

use lathe::layout;
use lathe::KeyPath;
use lathe_store::embedded::EmbeddedStore;
use lathe_tests::http;
use proptest::prelude::*;

use super::{serve, ApiContext, ApiLimits, MemberDirectory};
use crate::registry::{start_registry, RegistryConfig};
use crate::tree::ActorTree;

/// Path-ish text: segments of allowed and disallowed characters, of all lengths up to past the
/// key limit.
fn path_text() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        "[A-Za-z0-9._-]{1,12}",
        "[a-z]{200,400}",
        "[ -~]{0,6}",
        Just("..".to_string()),
        Just("lathe".to_string()),
        "\\PC{1,3}",
    ];
    proptest::collection::vec(segment, 0..8).prop_map(|s| s.join("/"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any path either parses, and then every record derived from it is valid, or is refused
    /// with a message.
    #[test]
    fn paths_parse_or_are_refused_and_derived_records_never_panic(raw in path_text()) {
        match KeyPath::parse(&raw) {
            Ok(key) => {
                if !key.is_reserved() && !key.is_root() {
                    prop_assert!(layout::shift(&key).is_reserved());
                }
                // A group's name is its path with dots: its segments (TOML table names) have none.
                if !key.is_reserved() && !key.is_root() && !key.as_str().contains('.') {
                    let group = key.as_str()[1..].replace('/', ".");
                    prop_assert!(layout::rollout(&group).is_reserved());
                    prop_assert!(layout::endpoint(&group, u32::MAX).is_reserved());
                    prop_assert!(layout::assignment("n1", &group, u32::MAX).is_reserved());
                }
            }
            Err(error) => prop_assert!(error.to_string().len() > 10),
        }
    }

    /// Topology text made of group headers (some with odd names) and key lines: parsed or
    /// refused with `file:line:column`, never a panic.
    #[test]
    fn topologies_parse_or_name_the_problem(
        names in proptest::collection::vec(path_text(), 1..4),
        lines in proptest::collection::vec(prop_oneof![
            Just("crate = \"http_frontpage\"".to_string()),
            Just("version = \"4.2.1\"".to_string()),
            Just("task = \"my::FrontPage\"".to_string()),
            Just("tasks = 3".to_string()),
            "tasks = -?[0-9]{1,12}",
            "tags = \\[\"[a-z]{0,5}\"\\]",
            "[a-z_]{1,8} = [0-9]{1,3}",
            "[ -~]{0,20}",
        ], 0..12),
    ) {
        let mut text = String::new();
        for (i, name) in names.iter().enumerate() {
            text.push_str(&format!("[{}]\n", name.replace('/', ".")));
            for line in lines.iter().skip(i).step_by(names.len()) {
                text.push_str(line);
                text.push('\n');
            }
        }
        if let Err(error) = lathe::topology::parse("fuzz.toml", &text) {
            prop_assert!(error.to_string().starts_with("fuzz.toml:"), "{}", error);
        }
    }
}

struct NoMembers;

#[async_trait::async_trait]
impl MemberDirectory for NoMembers {
    async fn members_json(&self) -> serde_json::Value {
        serde_json::json!({"members": []})
    }
}

/// Random requests against the real REST server: never a 5xx or a dropped connection, and
/// every 4xx is `{"error": "..."}` with a message.
#[test]
fn rest_requests_are_answered_or_refused_with_a_4xx_naming_the_problem() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let addr = runtime.block_on(async {
        let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let metrics = prometheus::Registry::new();
        let (registry, _) = start_registry(RegistryConfig::default(), store, &metrics, None)
            .await
            .unwrap();
        let context = ApiContext {
            node_name: "fuzz".to_string(),
            registry,
            members: Arc::new(NoMembers),
            metrics,
            max_value_bytes: 4096,
            tree: ActorTree::new("fuzz"),
            enable_chaos: false,
            limits: ApiLimits::default(),
            acl: crate::acl::Acl::disabled(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(serve(listener, context, std::future::pending()));
        addr
    });
    let route = prop_oneof![
        Just("/v1/kv"),
        Just("/v1/watch"),
        Just("/v1/shifts"),
        Just("/v1/rollouts"),
        Just("/v1/services"),
        Just("/v1/tree"),
        Just("/v1/topology"),
        Just("/v1/nope"),
    ];
    let query = prop_oneof![
        Just(String::new()),
        "(recurse|index|wait|cas|node|file|x)=[ -~&&[^#& ]]{0,8}",
        "index=[0-9]{1,20}",
    ];
    let method = prop_oneof![Just("GET"), Just("PUT"), Just("DELETE"), Just("POST")];
    let body = prop_oneof![Just("1".to_string()), "[ -~]{0,40}", Just(String::new())];
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(200));
    runner
        .run(
            &(method, route, path_text(), query, body),
            |(method, route, path, query, body)| {
                // Percent-encode what a URL cannot carry as it is.
                let path: String = path
                    .bytes()
                    .map(|b| match b {
                        b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-' | b'/' => {
                            (b as char).to_string()
                        }
                        _ => format!("%{b:02X}"),
                    })
                    .collect();
                let query = query.replace(['#', ' '], "");
                // Blocking queries and watches wait; keep them short or skip them.
                if route == "/v1/watch" && method == "GET" {
                    return Ok(());
                }
                // A blocking query waits at most 10 ms here.
                let mut parts: Vec<&str> = query
                    .split('&')
                    .filter(|p| !p.is_empty() && !p.starts_with("wait="))
                    .collect();
                if parts.iter().any(|p| p.starts_with("index=")) {
                    parts.push("wait=10ms");
                }
                let query = parts.join("&");
                let url = format!("{route}/{path}?{query}");
                // A body only where the route reads one: after an unread body hyper closes the
                // keep-alive connection, and the test client's pool would then hit its EOF.
                let body = matches!(method, "PUT" | "POST").then_some(body.as_str());
                let reply = http::try_request(method, &addr, &url, body)
                    .map_err(|e| TestCaseError::fail(format!("{method} {url}: {e}")))?;
                prop_assert!(
                    reply.status < 500,
                    "{method} {url}: {} {}",
                    reply.status,
                    reply.text
                );
                if reply.status >= 400 {
                    let message = reply.error().unwrap_or_default();
                    prop_assert!(message.len() >= 10, "{method} {url}: {}", reply.text);
                }
                Ok(())
            },
        )
        .unwrap();
}
