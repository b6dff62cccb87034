//! The agent's small HTTP endpoint: `GET /status` (JSON), `GET /metrics` (Prometheus),
//! `GET /v1/health`, and `POST /v1/gossip` where peer agents report what they have seen. Every
//! refusal is a 4xx with `{"error": "..."}` naming what is wrong (a gossip body that is not a
//! digest, too large, an unknown path or method).

use std::convert::Infallible;
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
        .and(warp::body::content_length_limit(MAX_GOSSIP_BYTES))
        .and(warp::body::bytes())
        .map(move |body: bytes::Bytes| {
            let recorded = serde_json::from_slice::<Digest>(&body)
                .map_err(|error| format!("gossip body is not a digest: {error}"))
                .and_then(|digest| heard.record(&digest).map_err(|error| error.to_string()));
            match recorded {
                Ok(_) => {
                    metrics.gossip("received");
                    reply(StatusCode::OK, serde_json::json!({}))
                }
                Err(error) => {
                    metrics.gossip("refused");
                    reply(
                        StatusCode::BAD_REQUEST,
                        serde_json::json!({ "error": error }),
                    )
                }
            }
        });
    let routes = status
        .or(metrics_route)
        .or(health)
        .or(gossip)
        .recover(refusal);
    warp::serve(routes)
        .incoming(listener)
        .graceful(shutdown)
        .run()
        .await;
}

/// The largest gossip body read, in bytes (a digest of every watched prefix is far smaller).
const MAX_GOSSIP_BYTES: u64 = 1 << 20;

fn reply(status: StatusCode, body: serde_json::Value) -> warp::reply::Response {
    use warp::Reply;
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}

/// warp's rejections as `{"error"}` answers naming the problem.
async fn refusal(rejection: warp::Rejection) -> Result<warp::reply::Response, Infallible> {
    let (status, error) = if rejection.is_not_found() {
        (
            StatusCode::NOT_FOUND,
            "no such endpoint (GET /status, /metrics, /v1/health; POST /v1/gossip)".to_string(),
        )
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("gossip body over {MAX_GOSSIP_BYTES} bytes"),
        )
    } else if rejection.find::<warp::reject::LengthRequired>().is_some() {
        (
            StatusCode::LENGTH_REQUIRED,
            "gossip body without a content-length".to_string(),
        )
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed here (GET /status, /metrics, /v1/health; POST /v1/gossip)"
                .to_string(),
        )
    } else {
        (
            StatusCode::BAD_REQUEST,
            format!("bad request: {rejection:?}"),
        )
    };
    Ok(reply(status, serde_json::json!({ "error": error })))
}

#[cfg(test)]
mod tests {
    //! Gossip bodies and paths as an attacker would send them, against the real endpoint: every
    //! answer is a 2xx or a 4xx naming the problem, never a 5xx or a dropped connection, and
    //! nothing but the watched prefix is ever kept.

    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    /// Starts the endpoint on a free loopback port (watching `/a`), in a runtime of its own.
    fn start() -> (String, Heard, tokio::runtime::Runtime) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let heard = Heard::watching(["/a".to_string()]);
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (board, metrics) = (Board::new("fuzz"), Metrics::new());
        runtime.spawn(serve(
            listener,
            board,
            metrics,
            heard.clone(),
            std::future::pending(),
        ));
        (addr, heard, runtime)
    }

    /// `method path` with `body` on a new connection: the status and the body.
    fn send(addr: &str, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        send_declaring(addr, method, path, body, body.len())
    }

    /// Like `send`, with a `Content-Length` of `length` whatever `body` is.
    fn send_declaring(
        addr: &str,
        method: &str,
        path: &str,
        body: &[u8],
        length: usize,
    ) -> (u16, String) {
        let mut socket = TcpStream::connect(addr).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {length}\r\nConnection: close\r\n\r\n"
        );
        socket.write_all(head.as_bytes()).unwrap();
        socket.write_all(body).unwrap();
        let mut answer = Vec::new();
        socket
            .read_to_end(&mut answer)
            .expect("an answer, not a reset");
        let text = String::from_utf8_lossy(&answer).to_string();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {text:?}"));
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        (status, body)
    }

    fn digest_like() -> impl Strategy<Value = Vec<u8>> {
        let prefix = prop_oneof![Just("/a".to_string()), "/[a-z]{1,8}", ".{0,20}"];
        let version = prop_oneof![
            any::<u64>().prop_map(|v| v.to_string()),
            Just("-1".to_string()),
            Just("1e400".to_string()),
            Just("\"7\"".to_string()),
            Just("null".to_string()),
        ];
        let from = prop_oneof![".{0,12}", Just("x".repeat(300)), Just(String::new())];
        (
            from,
            proptest::collection::vec((prefix, version), 0..6),
            any::<bool>(),
        )
            .prop_map(|(from, prefixes, quoted_from)| {
                let entries: Vec<String> = prefixes
                    .iter()
                    .map(|(p, v)| format!("{}: {v}", serde_json::to_string(p).unwrap()))
                    .collect();
                let from = if quoted_from {
                    serde_json::to_string(&from).unwrap()
                } else {
                    "12".to_string()
                };
                format!(
                    r#"{{"from": {from}, "prefixes": {{{}}}}}"#,
                    entries.join(", ")
                )
                .into_bytes()
            })
    }

    fn any_body() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            digest_like(),
            proptest::collection::vec(any::<u8>(), 0..200),
            Just(b"[]".to_vec()),
            Just(b"{\"from\": \"x\"}".to_vec()),
            Just(vec![b'['; 10_000]),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        #[test]
        fn gossip_bodies_get_a_2xx_or_a_4xx_naming_the_problem(
            bodies in proptest::collection::vec(any_body(), 1..8),
        ) {
            let (addr, heard, _runtime) = start();
            for body in &bodies {
                let (status, text) = send(&addr, "POST", "/v1/gossip", body);
                prop_assert!(status == 200 || status == 400, "{status} {text}");
                if status == 400 {
                    let error: serde_json::Value = serde_json::from_str(&text).unwrap();
                    prop_assert!(error["error"].as_str().unwrap().contains("gossip"), "{text}");
                }
                prop_assert!(heard.len() <= 1, "only the watched prefix is kept");
            }
        }

        #[test]
        fn paths_and_methods_get_a_4xx_naming_the_endpoints(
            path in "/[a-z0-9/%._-]{0,40}",
            method in prop_oneof![Just("GET"), Just("PUT"), Just("DELETE"), Just("PATCH")],
        ) {
            let (addr, _heard, _runtime) = start();
            let (status, text) = send(&addr, method, &path, b"");
            let known = ["/status", "/metrics", "/v1/health"].contains(&path.as_str());
            if method == "GET" && known {
                prop_assert_eq!(status, 200);
            } else {
                prop_assert!((400..500).contains(&status), "{status} {text}");
                let error: serde_json::Value = serde_json::from_str(&text).unwrap();
                prop_assert!(error["error"].as_str().is_some(), "{text}");
            }
        }
    }

    #[test]
    fn an_oversized_gossip_body_is_a_413() {
        let (addr, heard, _runtime) = start();
        // The head alone: the endpoint answers from the declared length without reading a body
        // (sending one could meet the closed connection and lose the answer).
        let length = MAX_GOSSIP_BYTES as usize + 1;
        let (status, text) = send_declaring(&addr, "POST", "/v1/gossip", b"", length);
        assert_eq!(status, 413, "{text}");
        assert!(text.contains("over 1048576 bytes"), "{text}");
        assert!(heard.is_empty());
    }
}
