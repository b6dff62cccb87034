//! The registry's Prometheus metrics.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Registry};

#[derive(Clone)]
pub(crate) struct RegistryMetrics {
    pub(crate) changes_total: IntCounter,
    pub(crate) subscribers: IntGauge,
    pub(crate) fanout_seconds: Histogram,
}

impl RegistryMetrics {
    pub(crate) fn register(registry: &Registry) -> prometheus::Result<Self> {
        let changes_total = IntCounter::new(
            "lathe_registry_changes_total",
            "Registry changes applied on this node",
        )?;
        let subscribers = IntGauge::new(
            "lathe_registry_subscribers",
            "Live registry subscriptions on this node",
        )?;
        let fanout_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "lathe_registry_fanout_seconds",
                "Time from a change reaching this node to its fan-out to every subscriber",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ]),
        )?;
        registry.register(Box::new(changes_total.clone()))?;
        registry.register(Box::new(subscribers.clone()))?;
        registry.register(Box::new(fanout_seconds.clone()))?;
        Ok(RegistryMetrics {
            changes_total,
            subscribers,
            fanout_seconds,
        })
    }
}
