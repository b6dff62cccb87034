//! `RegistryWatcher` against fake registry nodes (warp on port 0): a dead node is skipped, and a
//! node that answers but cannot stream is polled instead (`auto` mode).

use std::time::Duration;

use lathe::KeyPath;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::mpsc;
use warp::Filter;

use super::route::Route;
use super::watcher::{RegistryWatcher, WatcherArgs};
use crate::config::{Addr, StreamMode, Window};
use crate::status::{Board, Metrics};
use crate::watch::WatchMsg;

/// Forwards the snapshots a watch would receive.
struct Probe;

impl Actor for Probe {
    type Msg = WatchMsg;
    type State = mpsc::UnboundedSender<(u64, usize)>;
    type Arguments = mpsc::UnboundedSender<(u64, usize)>;

    async fn pre_start(
        &self,
        _myself: ActorRef<WatchMsg>,
        sender: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(sender)
    }

    async fn handle(
        &self,
        _myself: ActorRef<WatchMsg>,
        message: WatchMsg,
        sender: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let WatchMsg::Snapshot { index, entries } = message {
            let _ = sender.send((index, entries.len()));
        }
        Ok(())
    }
}

/// A node whose `/v1/watch` answers plain text (as a buffering proxy might) while its blocking
/// queries work: the entry `/app/x` at index 5.
async fn node_without_streams() -> String {
    let watch = warp::path!("v1" / "watch" / ..).map(|| "no streams here");
    let kv =
        warp::path!("v1" / "kv" / ..)
            .and(warp::query::raw())
            .then(|query: String| async move {
                if query.contains("index=5") {
                    // Nothing after 5: a blocking query waits.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                let body = serde_json::json!([{"key": "/app/x", "value": 1, "version": 5}]);
                warp::reply::with_header(warp::reply::json(&body), "x-lathe-index", "5")
            });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(warp::serve(watch.or(kv)).incoming(listener).run());
    addr
}

#[tokio::test]
async fn skips_dead_nodes_and_polls_a_node_that_cannot_stream() {
    let good = node_without_streams().await;
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let (sender, mut snapshots) = mpsc::unbounded_channel();
    let (probe, _) = Actor::spawn(None, Probe, sender).await.unwrap();
    let prefix = KeyPath::parse("/app").unwrap();
    let board = Board::new("test");
    let args = WatcherArgs {
        registry: vec![Addr(dead), Addr(good.clone())],
        prefix: prefix.clone(),
        routes: vec![Route {
            name: "app".into(),
            prefix,
            actor: probe.clone(),
        }],
        mode: StreamMode::Auto,
        stall_timeout: Duration::from_secs(5),
        poll_wait: Duration::from_secs(1),
        retry: Window::new(Duration::from_millis(10), Duration::from_millis(50)),
        board: board.clone(),
        metrics: Metrics::new(),
        headers: Default::default(),
    };
    let (watcher, _) = Actor::spawn(None, RegistryWatcher, args).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), snapshots.recv()).await;
    assert_eq!(first.unwrap(), Some((5, 1)));
    let status = board.to_json();
    assert_eq!(status["registry"]["transport"], "poll", "{status:#}");
    assert_eq!(status["registry"]["addr"], good.as_str());
    watcher.stop(None);
    probe.stop(None);
}
