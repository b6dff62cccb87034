//! A value under the 1 MiB value limit whose ZooKeeper request would exceed `jute.maxbuffer`,
//! through the REST API of a real node on a real ZooKeeper: 413 naming the limit, and the node's
//! session survives (it used to be dropped by ZooKeeper, failing every write in flight).

use lathe_tests::http;
use lathe_tests::node::NodeBuilder;
use lathe_tests::scenario::{assert_error, put_ok, TEST_COOKIE};
use lathe_tests::zk::ZkServer;
use serde_json::json;

#[test]
fn a_value_too_big_for_zookeeper_is_a_413_and_the_session_survives() {
    // ZooKeeper's default jute.maxbuffer, which the node assumes by default.
    let zk = ZkServer::start_with_max_buffer(1048575).expect("zookeeper");
    let node = NodeBuilder::new()
        .name("zklimit")
        .zookeeper(zk.connect_string())
        .cookie(TEST_COOKIE)
        .start();
    let addr = node.http_addr();
    put_ok(addr, "/before", &json!(1));

    // Writes beside the big one must not fail with it.
    // Its JSON is just under the 1 MiB value limit, and its key long (both allowed): together,
    // with the request's framing, over ZooKeeper's limit.
    let big = json!("x".repeat(1024 * 1024 - 12));
    let big_key = format!("/v1/kv/big/{}", "k".repeat(700));
    let (reply, beside) = std::thread::scope(|scope| {
        let beside: Vec<_> = (0..8)
            .map(|i| {
                scope.spawn(move || http::put_json(addr, &format!("/v1/kv/beside/{i}"), &json!(i)))
            })
            .collect();
        let reply = http::put_json(addr, &big_key, &big);
        let beside: Vec<_> = beside.into_iter().map(|t| t.join().unwrap()).collect();
        (reply, beside)
    });
    let message = assert_error(&reply, 413, "a value too big for a zookeeper request");
    assert!(message.contains("over the limit of"), "{message}");
    for reply in beside {
        assert_eq!(
            reply.status, 200,
            "a write beside the big one: {}",
            reply.text
        );
    }

    // Nothing was stored, and the same session serves the next write (seen failing before the
    // fix: zookeeper dropped the connection and the node logged the disconnection).
    put_ok(addr, "/after", &json!(2));
    assert_eq!(http::get_json(addr, &big_key).status, 404);
    assert!(
        !node.log_contents().contains("zookeeper disconnected"),
        "the zookeeper connection dropped: {}",
        node.log_tail(30)
    );
}
