//! `my::LoadBalancer`: forwards every request to a group chosen by `backend_distribution`.
//!
//! See the crate README. The parsed distribution is cached per metadata generation (the counter of
//! [`lathe::TaskContext::metadata_changed`]), so a request costs one counter read unless the
//! metadata changed since the previous one.

pub mod distribution;

pub use distribution::{Distribution, DistributionError};

/// The group metadata key the load balancer reads.
pub const DISTRIBUTION_KEY: &str = "backend_distribution";

pub mod my {
    use std::sync::{Arc, RwLock};

    use lathe::http::{HttpTask, Request, Response};
    use lathe::TaskContext;

    use crate::distribution::{Distribution, DistributionError};
    use crate::DISTRIBUTION_KEY;

    /// The distribution as of one metadata generation.
    type Parsed = Arc<Result<Distribution, DistributionError>>;

    /// The seed's load balancer.
    #[derive(Debug, Default)]
    pub struct LoadBalancer {
        /// The parsed distribution and the metadata generation it was parsed at. A read lock
        /// on every request (never contended: requests only read), a write lock when the
        /// metadata changed; a mutex here made the request threads queue behind each other.
        cached: RwLock<Option<(u64, Parsed)>>,
    }

    impl LoadBalancer {
        /// The current distribution: parsed again only when the group's metadata changed.
        fn distribution(&self, ctx: &TaskContext) -> Parsed {
            // Read the generation before the value: a change landing in between only makes the
            // next request parse again.
            let generation = *ctx.metadata_changed().borrow();
            {
                let cached = self.cached.read().unwrap_or_else(|e| e.into_inner());
                if let Some((seen, parsed)) = cached.as_ref() {
                    if *seen == generation {
                        return parsed.clone();
                    }
                }
            }
            let mut cached = self.cached.write().unwrap_or_else(|e| e.into_inner());
            if let Some((seen, parsed)) = cached.as_ref() {
                if *seen == generation {
                    return parsed.clone();
                }
            }
            let parsed = match ctx.lookup_value(DISTRIBUTION_KEY) {
                Some(value) => Distribution::from_value(&value),
                None => Err(DistributionError::Missing),
            };
            match &parsed {
                Ok(distribution) => tracing::info!(
                    group = %ctx.identity().group,
                    groups = ?distribution.groups(),
                    generation,
                    "backend distribution in use"
                ),
                Err(error) => tracing::warn!(
                    group = %ctx.identity().group,
                    generation,
                    "{error}: answering 503 until the metadata is fixed"
                ),
            }
            let parsed = Arc::new(parsed);
            *cached = Some((generation, parsed.clone()));
            parsed
        }
    }

    #[async_trait::async_trait]
    impl HttpTask for LoadBalancer {
        async fn handle(&self, ctx: &TaskContext, request: Request) -> Response {
            let parsed = self.distribution(ctx);
            let distribution = match parsed.as_ref() {
                Ok(distribution) => distribution,
                Err(error) => return unavailable(&error.to_string()),
            };
            let group = distribution.pick(fastrand::f64());
            match ctx.get_ref(group).await {
                Ok(target) => ctx.forward(request, &target).await,
                Err(error) => unavailable(&format!("cannot resolve group {group}: {error}")),
            }
        }
    }

    fn unavailable(reason: &str) -> Response {
        lathe::http::json(503, &serde_json::json!({ "error": reason }))
    }

    /// A count kept in the instance's persistent state (`ctx.state()`): `POST /count` adds one,
    /// `GET /count` reads it; both answer `{"count": N, "instance": "<group>/<index>"}`. The count
    /// outlives crashes of the instance and restarts of its node (same `--data-dir`).
    #[derive(Debug, Default)]
    pub struct Counter {
        /// Serializes read-modify-write of the count between concurrent requests (held across
        /// no await: state operations are synchronous).
        lock: std::sync::Mutex<()>,
    }

    /// The state key of the count.
    const COUNT: &str = "count";

    #[async_trait::async_trait]
    impl HttpTask for Counter {
        async fn handle(&self, ctx: &TaskContext, request: Request) -> Response {
            use lathe::RequestExt;
            if request.path_segments() != ["count"] {
                return lathe::http::text(400, "invalid request");
            }
            let state = match ctx.state() {
                Ok(state) => state,
                Err(error) => return unavailable(&error.to_string()),
            };
            let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            let count = match state.get_json::<u64>(COUNT) {
                Ok(count) => count.unwrap_or(0),
                Err(error) => return unavailable(&error.to_string()),
            };
            let count = match request.method().as_str() {
                "GET" => count,
                "POST" => {
                    if let Err(error) = state.put_json(COUNT, &(count + 1)) {
                        return unavailable(&error.to_string());
                    }
                    count + 1
                }
                _ => return lathe::http::text(405, "GET or POST /count"),
            };
            let identity = ctx.identity();
            lathe::http::json(
                200,
                &serde_json::json!({
                    "count": count,
                    "instance": format!("{}/{}", identity.group, identity.index),
                }),
            )
        }
    }

    /// Values through the group's distributed cache (`ctx.cache`): `GET /cache/<key>` answers
    /// `{"value": "value of <key>, loaded by <group>/<index>"}` — whichever instance is asked, the
    /// key's owner loaded it, once; `GET /stats` answers this instance's cache counters.
    #[derive(Debug, Default)]
    pub struct Cached {
        cache: std::sync::OnceLock<lathe::Cache>,
        loads: std::sync::Arc<std::sync::atomic::AtomicU64>,
    }

    /// The loader of `my::Cached`: names the instance that loaded the value.
    struct Values {
        instance: String,
        loads: std::sync::Arc<std::sync::atomic::AtomicU64>,
    }

    #[async_trait::async_trait]
    impl lathe::CacheLoader for Values {
        async fn load(&self, key: &str) -> Result<Vec<u8>, String> {
            self.loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(format!("value of {key}, loaded by {}", self.instance).into_bytes())
        }
    }

    #[async_trait::async_trait]
    impl HttpTask for Cached {
        async fn start(&self, ctx: &TaskContext) -> lathe::TaskResult {
            let identity = ctx.identity();
            let loader = std::sync::Arc::new(Values {
                instance: format!("{}/{}", identity.group, identity.index),
                loads: self.loads.clone(),
            });
            let cache = ctx.cache("values", 1 << 20, loader)?;
            let _ = self.cache.set(cache);
            Ok(())
        }

        async fn handle(&self, _ctx: &TaskContext, request: Request) -> Response {
            use lathe::RequestExt;
            let Some(cache) = self.cache.get() else {
                return unavailable("the cache is not started");
            };
            match request.path_segments().as_slice() {
                ["cache", key] => match cache.get(key).await {
                    Ok(value) => lathe::http::json(
                        200,
                        &serde_json::json!({ "value": String::from_utf8_lossy(&value) }),
                    ),
                    Err(error) => unavailable(&error.to_string()),
                },
                ["stats"] => {
                    let stats = cache.stats();
                    lathe::http::json(
                        200,
                        &serde_json::json!({
                            "loads": stats.loads,
                            "gets": stats.gets,
                            "hits": stats.hits,
                            "hot_hits": stats.hot_hits,
                            "peer_gets": stats.peer_gets,
                            "served": stats.served,
                        }),
                    )
                }
                _ => lathe::http::text(400, "invalid request"),
            }
        }
    }

    /// `POST /emit/<stream>/<key>` emits the request's body to `<stream>` under `<key>`
    /// (`ctx.emit`) and answers `{"taken_by": ["<group>/<index>", ...]}`: 404 when no group
    /// consumes the stream, 400 for a bad stream, key or body, 503 when a group did not take it.
    #[derive(Debug, Default)]
    pub struct Emitter;

    #[async_trait::async_trait]
    impl HttpTask for Emitter {
        async fn handle(&self, ctx: &TaskContext, request: Request) -> Response {
            use lathe::RequestExt;
            let (stream, key) = match (
                request.method().as_str(),
                request.path_segments().as_slice(),
            ) {
                ("POST", ["emit", stream, key]) => (stream.to_string(), key.to_string()),
                _ => return lathe::http::text(400, "invalid request"),
            };
            match ctx.emit(&stream, &key, request.body().clone()).await {
                Ok(delivery) => {
                    let position = delivery.position.map(
                        |p| serde_json::json!({ "partition": p.partition, "offset": p.offset }),
                    );
                    lathe::http::json(
                        200,
                        &serde_json::json!({ "taken_by": delivery.taken_by, "position": position }),
                    )
                }
                Err(error) => {
                    let status = match error {
                        lathe::FlowError::NoConsumer { .. } => 404,
                        lathe::FlowError::BadStream(_)
                        | lathe::FlowError::KeyTooLarge { .. }
                        | lathe::FlowError::PayloadTooLarge { .. } => 400,
                        _ => 503,
                    };
                    lathe::http::json(status, &serde_json::json!({ "error": error.to_string() }))
                }
            }
        }
    }

    /// Counts the messages of its group's input streams per key, in its persistent state;
    /// `GET /tally` answers `{"counts": {"<key>": N, ...}, "instance": "<group>/<index>"}`.
    /// Over Kafka it counts each message once: the last offset it counted of each partition is
    /// written with the count, in one batch, and a message at or below it is skipped.
    #[derive(Debug, Default)]
    pub struct Tally;

    /// The handler `my::Tally` gives `ctx.consume`.
    struct Counts {
        state: lathe::StateStore,
        /// Serializes read-modify-write of a count (held across no await).
        lock: std::sync::Mutex<()>,
    }

    #[async_trait::async_trait]
    impl lathe::FlowHandler for Counts {
        async fn handle(&self, message: lathe::FlowMessage) -> Result<(), String> {
            let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            let key = format!("tally/{}", message.key);
            let count: u64 = self
                .state
                .get_json(&key)
                .map_err(|e| e.to_string())?
                .unwrap_or(0);
            let mut batch = self.state.batch();
            if let Some(position) = message.position {
                let done = format!("offset/{}/{}", message.stream, position.partition);
                let last: Option<i64> = self.state.get_json(&done).map_err(|e| e.to_string())?;
                if last.is_some_and(|last| position.offset <= last) {
                    return Ok(()); // counted before (handed over again after a crash)
                }
                let last = serde_json::to_vec(&position.offset).map_err(|e| e.to_string())?;
                batch.put(done, last).map_err(|e| e.to_string())?;
            }
            let count = serde_json::to_vec(&(count + 1)).map_err(|e| e.to_string())?;
            batch.put(key, count).map_err(|e| e.to_string())?;
            batch.commit().map_err(|e| e.to_string())
        }
    }

    #[async_trait::async_trait]
    impl HttpTask for Tally {
        async fn start(&self, ctx: &TaskContext) -> lathe::TaskResult {
            let handler = Counts {
                state: ctx.state()?,
                lock: std::sync::Mutex::new(()),
            };
            ctx.consume(std::sync::Arc::new(handler))?;
            Ok(())
        }

        async fn handle(&self, ctx: &TaskContext, request: Request) -> Response {
            use lathe::RequestExt;
            if request.path_segments() != ["tally"] {
                return lathe::http::text(400, "invalid request");
            }
            let entries = match ctx.state().and_then(|state| state.scan("tally/", 100_000)) {
                Ok(entries) => entries,
                Err(error) => return unavailable(&error.to_string()),
            };
            let counts: serde_json::Map<String, serde_json::Value> = entries
                .into_iter()
                .filter_map(|(key, value)| {
                    let key = String::from_utf8(key).ok()?;
                    let count: u64 = serde_json::from_slice(&value).ok()?;
                    Some((key.trim_start_matches("tally/").to_string(), count.into()))
                })
                .collect();
            let identity = ctx.identity();
            lathe::http::json(
                200,
                &serde_json::json!({
                    "counts": counts,
                    "instance": format!("{}/{}", identity.group, identity.index),
                }),
            )
        }
    }

    /// A task that always fails: it panics in `start`. For failure drills and tests — a group of
    /// crashers ends `failed` after its restart intensity, and the rest of the node is unharmed.
    #[derive(Debug, Default)]
    pub struct Crasher;

    #[async_trait::async_trait]
    impl HttpTask for Crasher {
        async fn start(&self, _ctx: &TaskContext) -> lathe::TaskResult {
            panic!("my::Crasher always fails to start, on purpose")
        }

        async fn handle(&self, _ctx: &TaskContext, _request: Request) -> Response {
            lathe::http::text(500, "my::Crasher never serves")
        }
    }

    /// A front page that fails a share of its requests: `GET /get/index` answers 200 `:)`, except
    /// for `fail_percent` (group metadata, 0 to 100, default 0) of them, spread evenly, which
    /// answer 500. For metric-gated roll-outs: a version whose error ratio is over the gate.
    #[derive(Debug, Default)]
    pub struct Flaky {
        answered: std::sync::atomic::AtomicU64,
    }

    /// The group metadata key `my::Flaky` reads.
    pub const FAIL_PERCENT_KEY: &str = "fail_percent";

    #[async_trait::async_trait]
    impl HttpTask for Flaky {
        async fn handle(&self, ctx: &TaskContext, request: Request) -> Response {
            use lathe::RequestExt;
            if request.path_segments() != ["get", "index"] {
                return lathe::http::text(400, "invalid request");
            }
            let percent = ctx
                .lookup::<u64>(FAIL_PERCENT_KEY)
                .and_then(Result::ok)
                .unwrap_or(0)
                .min(100);
            let n = self
                .answered
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // Request n fails when the count of failures due by n + 1 goes up: `percent` of every
            // 100, evenly spread.
            if (n + 1) * percent / 100 > n * percent / 100 {
                lathe::http::text(500, "my::Flaky failed this one, on purpose")
            } else {
                lathe::http::text(200, ":)")
            }
        }
    }
}

/// The task types of this crate, for a node's catalog: the load balancer, `my::Crasher` for
/// failure drills, `my::Flaky`, which fails a share of its requests, `my::Counter`, which keeps a
/// count in its persistent state, and `my::Cached`, which serves values through the group's
/// distributed cache, and a flow: `my::Emitter` sends what it is POSTed to a stream, `my::Tally`
/// counts each key's messages of its input streams.
pub fn tasks() -> Vec<lathe::TaskDescriptor> {
    vec![
        lathe::http_task!("my::LoadBalancer", my::LoadBalancer::default),
        lathe::http_task!("my::Crasher", my::Crasher::default),
        lathe::http_task!("my::Flaky", my::Flaky::default),
        lathe::http_task!("my::Counter", my::Counter::default),
        lathe::http_task!("my::Cached", my::Cached::default),
        lathe::http_task!("my::Emitter", my::Emitter::default),
        lathe::http_task!("my::Tally", my::Tally::default),
    ]
}
