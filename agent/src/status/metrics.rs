//! The agent's Prometheus metrics (`GET /metrics`):
//!
//! | metric | meaning |
//! |---|---|
//! | `lathe_agent_registry_requests_total{kind}` | requests to the registry: `sse` streams opened, `poll` blocking queries, `list` reads |
//! | `lathe_agent_stream_events_total` | events received from the registry |
//! | `lathe_agent_reconnects_total{reason}` | sessions ended: `unreachable`, `stalled`, `closed`, `bad_stream`, `resync` |
//! | `lathe_agent_stream_index` | the last registry index received |
//! | `lathe_agent_watch_index{watch}` | the index of each watch's current state |
//! | `lathe_agent_behind{watch}` | 1 while a peer has seen newer changes under the watch |
//! | `lathe_agent_actions_total{watch,action,result}` | action runs: `applied`, `unchanged`, `rejected`, `failed` |
//! | `lathe_agent_action_seconds{watch,action}` | how long runs took (histogram) |
//! | `lathe_agent_reloads_total{watch,action}` | reloads of the served program (HAProxy, a reload command) |
//! | `lathe_agent_runtime_updates_total{watch,action}` | HAProxy runtime API changes applied without a reload |
//! | `lathe_agent_gossip_messages_total{direction}` | gossip `sent`, `received`, `failed`, `refused` (a body that is not a digest), `unconfirmed` (a claim no registry node confirmed) |

use std::sync::Arc;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

struct Inner {
    registry: Registry,
    requests: IntCounterVec,
    events: IntCounter,
    reconnects: IntCounterVec,
    stream_index: IntGauge,
    watch_index: IntGaugeVec,
    behind: IntGaugeVec,
    actions: IntCounterVec,
    action_seconds: HistogramVec,
    reloads: IntCounterVec,
    runtime_updates: IntCounterVec,
    gossip: IntCounterVec,
}

/// Shared, cheap to clone.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric = IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("a metric registered once");
    metric
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let metric = IntGaugeVec::new(Opts::new(name, help), labels).expect("a valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("a metric registered once");
    metric
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let events = IntCounter::new(
            "lathe_agent_stream_events_total",
            "registry events received",
        )
        .expect("a valid metric");
        registry
            .register(Box::new(events.clone()))
            .expect("registered once");
        let stream_index =
            IntGauge::new("lathe_agent_stream_index", "last registry index received")
                .expect("a valid metric");
        registry
            .register(Box::new(stream_index.clone()))
            .expect("registered once");
        let action_seconds = HistogramVec::new(
            HistogramOpts::new("lathe_agent_action_seconds", "duration of action runs").buckets(
                vec![0.005, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0],
            ),
            &["watch", "action"],
        )
        .expect("a valid metric");
        registry
            .register(Box::new(action_seconds.clone()))
            .expect("registered once");
        Metrics(Arc::new(Inner {
            requests: counter_vec(
                &registry,
                "lathe_agent_registry_requests_total",
                "requests to the registry",
                &["kind"],
            ),
            reconnects: counter_vec(
                &registry,
                "lathe_agent_reconnects_total",
                "registry sessions ended",
                &["reason"],
            ),
            watch_index: gauge_vec(
                &registry,
                "lathe_agent_watch_index",
                "index of each watch's state",
                &["watch"],
            ),
            behind: gauge_vec(
                &registry,
                "lathe_agent_behind",
                "1 while a peer has seen newer changes",
                &["watch"],
            ),
            actions: counter_vec(
                &registry,
                "lathe_agent_actions_total",
                "action runs by result",
                &["watch", "action", "result"],
            ),
            reloads: counter_vec(
                &registry,
                "lathe_agent_reloads_total",
                "reloads of the served program",
                &["watch", "action"],
            ),
            runtime_updates: counter_vec(
                &registry,
                "lathe_agent_runtime_updates_total",
                "HAProxy runtime API changes",
                &["watch", "action"],
            ),
            gossip: counter_vec(
                &registry,
                "lathe_agent_gossip_messages_total",
                "gossip messages",
                &["direction"],
            ),
            events,
            stream_index,
            action_seconds,
            registry,
        }))
    }

    pub fn registry_request(&self, kind: &str) {
        self.0.requests.with_label_values(&[kind]).inc();
    }

    pub fn stream_event(&self) {
        self.0.events.inc();
    }

    pub fn stream_index(&self, index: u64) {
        self.0.stream_index.set(index as i64);
    }

    pub fn reconnect(&self, reason: &str) {
        self.0.reconnects.with_label_values(&[reason]).inc();
    }

    pub fn watch_index(&self, watch: &str, index: u64) {
        self.0
            .watch_index
            .with_label_values(&[watch])
            .set(index as i64);
    }

    pub fn behind(&self, watch: &str, behind: bool) {
        self.0
            .behind
            .with_label_values(&[watch])
            .set(i64::from(behind));
    }

    pub fn action(&self, watch: &str, action: &str, result: &str, seconds: f64) {
        self.0
            .actions
            .with_label_values(&[watch, action, result])
            .inc();
        self.0
            .action_seconds
            .with_label_values(&[watch, action])
            .observe(seconds);
    }

    pub fn reload(&self, watch: &str, action: &str) {
        self.0.reloads.with_label_values(&[watch, action]).inc();
    }

    pub fn runtime_updates(&self, watch: &str, action: &str, count: u64) {
        self.0
            .runtime_updates
            .with_label_values(&[watch, action])
            .inc_by(count);
    }

    pub fn gossip(&self, direction: &str) {
        self.0.gossip.with_label_values(&[direction]).inc();
    }

    /// The Prometheus text format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let families = self.0.registry.gather();
        if let Err(e) = TextEncoder::new().encode(&families, &mut buffer) {
            return format!("# cannot encode metrics: {e}\n");
        }
        String::from_utf8_lossy(&buffer).into_owned()
    }
}
