//! The agent's small HTTP endpoint: `GET /status` (JSON), `GET /metrics` (Prometheus),
//! `GET /v1/health`, and `POST /v1/gossip` where peer agents report what they have seen.

use std::future::Future;

use warp::http::StatusCode;
use warp::Filter;

use super::{Board, Metrics};
use crate::gossip::{Digest, Heard};

/// Serves until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    board: Board,
    metrics: Metrics,
    heard: Heard,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let status = warp::get()
        .and(warp::path!("status"))
        .map(move || warp::reply::json(&board.to_json()));
    let metrics_route = {
        let metrics = metrics.clone();
        warp::get().and(warp::path!("metrics")).map(move || {
            warp::reply::with_header(
                metrics.render(),
                "content-type",
                "text/plain; version=0.0.4",
            )
        })
    };
    let health = warp::get()
        .and(warp::path!("v1" / "health"))
        .map(|| warp::reply::json(&serde_json::json!({"ok": true})));
    let gossip = warp::post()
        .and(warp::path!("v1" / "gossip"))
        .and(warp::body::content_length_limit(1 << 20))
        .and(warp::body::json())
        .map(move |digest: Digest| {
            metrics.gossip("received");
            heard.record(&digest);
            warp::reply::with_status(warp::reply::json(&serde_json::json!({})), StatusCode::OK)
        });
    let routes = status.or(metrics_route).or(health).or(gossip);
    warp::serve(routes)
        .incoming(listener)
        .graceful(shutdown)
        .run()
        .await;
}
