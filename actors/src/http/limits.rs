//! What one node's REST port lets clients hold: how long a connection may take to send a request
//! head (new, or idle between requests), how many connections, Server-Sent Event watchers and
//! blocking queries may be open at once. Past a cap the answer is 503 with `Retry-After`, and
//! every refusal is counted in `lathe_api_refused_total{reason}`; the open ones are gauges
//! (`lathe_api_connections`, `lathe_api_watchers`, `lathe_api_blocking_queries`).

use std::sync::Arc;
use std::time::Duration;

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use warp::http::StatusCode;

use super::idle::Unproven;
use super::ApiError;

/// Default of `--http-header-timeout`.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of `--http-max-connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default of `--max-watchers`.
pub const DEFAULT_MAX_WATCHERS: usize = 2048;
/// Default of `--max-blocking-queries`.
pub const DEFAULT_MAX_BLOCKING_QUERIES: usize = 2048;
/// Default of `--max-keys`: keys outside `/lathe` a PUT may bring the registry to.
pub const DEFAULT_MAX_KEYS: usize = 1_000_000;
/// Default of `--max-registry-bytes`: the values' total a PUT may bring the registry to.
pub const DEFAULT_MAX_REGISTRY_BYTES: usize = 1024 * 1024 * 1024;
/// What a 503 past a cap asks the client to wait, in seconds.
pub(crate) const RETRY_AFTER_SECONDS: u64 = 1;

/// The REST port's limits, and the permits counted against them.
#[derive(Clone)]
pub struct ApiLimits {
    /// A connection that has not sent a complete request head this long after it opened or
    /// after its last answer is closed (slowloris, idle keep-alive).
    pub header_timeout: Duration,
    connections: Cap,
    watchers: Cap,
    blocking: Cap,
    /// The registry quota REST writes are held to (Lathe's own records are not).
    pub max_keys: usize,
    pub max_registry_bytes: usize,
    /// Host names (besides IP addresses and `localhost`) a browser may address this node by
    /// (`--http-allowed-hosts`); see `guard.rs` on DNS rebinding.
    pub allowed_hosts: Vec<String>,
    /// Connections closed at the cap because they had sent no request.
    evicted: Arc<std::sync::OnceLock<prometheus::IntCounter>>,
}

impl ApiLimits {
    pub fn new(
        header_timeout: Duration,
        max_connections: usize,
        max_watchers: usize,
        max_blocking_queries: usize,
    ) -> Self {
        ApiLimits {
            header_timeout,
            connections: Cap::new("connections", max_connections),
            watchers: Cap::new("watchers", max_watchers),
            blocking: Cap::new("blocking queries", max_blocking_queries),
            max_keys: DEFAULT_MAX_KEYS,
            max_registry_bytes: DEFAULT_MAX_REGISTRY_BYTES,
            allowed_hosts: Vec::new(),
            evicted: Arc::default(),
        }
    }

    /// The same limits with a registry quota of `keys` keys and `bytes` of values.
    pub fn with_quota(mut self, keys: usize, bytes: usize) -> Self {
        self.max_keys = keys;
        self.max_registry_bytes = bytes;
        self
    }

    /// The same limits letting browsers address the node by `hosts` too.
    pub fn with_allowed_hosts(mut self, hosts: Vec<String>) -> Self {
        self.allowed_hosts = hosts;
        self
    }

    /// Registers the gauges and the refusal counter in `registry` (a warning if it has them).
    pub(crate) fn register(&self, registry: &Registry) {
        let refused = IntCounterVec::new(
            Opts::new(
                "lathe_api_refused_total",
                "Requests and connections the REST port refused at a cap (503), by reason",
            ),
            &["reason"],
        )
        .expect("a valid metric definition");
        for (cap, name, help, reason) in [
            (
                &self.connections,
                "lathe_api_connections",
                "Open REST connections",
                "connections",
            ),
            (
                &self.watchers,
                "lathe_api_watchers",
                "Open /v1/watch streams",
                "watchers",
            ),
            (
                &self.blocking,
                "lathe_api_blocking_queries",
                "Blocking queries waiting (?index=)",
                "blocking",
            ),
        ] {
            let gauge = IntGauge::new(name, help).expect("a valid metric definition");
            if let Err(error) = registry.register(Box::new(gauge.clone())) {
                tracing::warn!(%error, "{name} not registered");
            }
            cap.metrics(gauge, refused.with_label_values(&[reason]));
        }
        if let Err(error) = registry.register(Box::new(refused)) {
            tracing::warn!(%error, "lathe_api_refused_total not registered");
        }
        let evicted = prometheus::IntCounter::new(
            "lathe_api_idle_evicted_total",
            "REST connections closed at the connection cap because they had not sent a request",
        )
        .expect("a valid metric definition");
        if let Err(error) = registry.register(Box::new(evicted.clone())) {
            tracing::warn!(%error, "lathe_api_idle_evicted_total not registered");
        }
        let _ = self.evicted.set(evicted);
    }

    pub(crate) fn max_connections(&self) -> usize {
        self.connections.limit
    }

    /// A connection's permit, if one is free (not counted as refused when none is: the caller
    /// may evict a connection, see [`ApiLimits::connection_after_eviction`]).
    pub(crate) fn connection(&self) -> Option<Permit> {
        self.connections.try_take_quietly()
    }

    /// At the connection cap: the oldest connection without a request in `unproven` makes room
    /// (counted as evicted). `None` (counted as refused) when there is none or its place did not
    /// come free in time.
    pub(crate) async fn connection_after_eviction(&self, unproven: &Unproven) -> Option<Permit> {
        if let Some(permit) = unproven.make_room(&self.connections.permits).await {
            if let Some(evicted) = self.evicted.get() {
                evicted.inc();
            }
            return Some(self.connections.permit(permit));
        }
        self.connections.try_take()
    }

    pub(crate) fn watcher(&self) -> Result<Permit, ApiError> {
        self.watchers.take_or_refuse()
    }

    pub(crate) fn blocking_query(&self) -> Result<Permit, ApiError> {
        self.blocking.take_or_refuse()
    }
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits::new(
            DEFAULT_HEADER_TIMEOUT,
            DEFAULT_MAX_CONNECTIONS,
            DEFAULT_MAX_WATCHERS,
            DEFAULT_MAX_BLOCKING_QUERIES,
        )
    }
}

/// One capped resource.
#[derive(Clone)]
struct Cap {
    what: &'static str,
    limit: usize,
    permits: Arc<Semaphore>,
    metrics: Arc<std::sync::OnceLock<(IntGauge, prometheus::IntCounter)>>,
}

impl Cap {
    fn new(what: &'static str, limit: usize) -> Self {
        Cap {
            what,
            limit,
            permits: Arc::new(Semaphore::new(limit)),
            metrics: Arc::default(),
        }
    }

    fn metrics(&self, open: IntGauge, refused: prometheus::IntCounter) {
        let _ = self.metrics.set((open, refused));
    }

    fn try_take(&self) -> Option<Permit> {
        let taken = self.try_take_quietly();
        if taken.is_none() {
            if let Some((_, refused)) = self.metrics.get() {
                refused.inc();
            }
        }
        taken
    }

    /// A permit if one is free, without counting a refusal when none is.
    fn try_take_quietly(&self) -> Option<Permit> {
        let permit = self.permits.clone().try_acquire_owned().ok()?;
        Some(self.permit(permit))
    }

    fn permit(&self, permit: OwnedSemaphorePermit) -> Permit {
        let open = self.metrics.get().map(|(open, _)| open.clone());
        if let Some(open) = &open {
            open.inc();
        }
        Permit {
            _permit: permit,
            open,
        }
    }

    fn take_or_refuse(&self) -> Result<Permit, ApiError> {
        self.try_take()
            .ok_or_else(|| refusal(self.what, self.limit))
    }
}

/// The 503 past a cap.
pub(crate) fn refusal(what: &str, limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "too many {what} open on this node (limit {limit}): retry later or use another node"
        ),
    )
    .retry_after(RETRY_AFTER_SECONDS)
}

/// A connection, watcher or blocking query counted against its cap until dropped.
pub(crate) struct Permit {
    _permit: OwnedSemaphorePermit,
    open: Option<IntGauge>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(open) = &self.open {
            open.dec();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cap_refuses_past_its_limit_and_frees_on_drop() {
        let limits = ApiLimits::new(DEFAULT_HEADER_TIMEOUT, 1, 2, 1);
        let registry = Registry::new();
        limits.register(&registry);
        let first = limits.watcher().unwrap();
        let _second = limits.watcher().unwrap();
        let refused = limits.watcher().err().unwrap();
        assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(refused.message.contains("limit 2"), "{}", refused.message);
        drop(first);
        assert!(limits.watcher().is_ok());
        assert!(limits.connection().is_some());
        let text = {
            use prometheus::Encoder;
            let mut buffer = Vec::new();
            prometheus::TextEncoder::new()
                .encode(&registry.gather(), &mut buffer)
                .unwrap();
            String::from_utf8(buffer).unwrap()
        };
        assert!(
            text.contains("lathe_api_refused_total{reason=\"watchers\"} 1"),
            "{text}"
        );
        assert!(text.contains("lathe_api_watchers 1"), "{text}");
    }
}
