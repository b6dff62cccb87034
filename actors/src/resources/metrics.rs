//! The resource manager's metrics: `lathe_resource_containers{state}` (the leader's containers:
//! `requested` — waiting for the cluster or for an answer —, `running` — granted, its node not
//! alive in the cluster —, `joined` — its node is an alive member), and
//! `lathe_resource_container_ends_total{state}` (`finished`, `failed`, `killed`; `released`
//! when the leader stopped it).

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

/// The states of the gauge.
pub(crate) const GAUGE_STATES: [&str; 3] = ["requested", "running", "joined"];

#[derive(Clone)]
pub struct ResourceMetrics {
    containers: IntGaugeVec,
    ends: IntCounterVec,
    requests: IntCounterVec,
}

impl ResourceMetrics {
    /// Registers the metrics (once per process).
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let containers = IntGaugeVec::new(
            Opts::new(
                "lathe_resource_containers",
                "Node containers the scheduler leader asked its resource manager for, by state",
            ),
            &["state"],
        )?;
        let ends = IntCounterVec::new(
            Opts::new(
                "lathe_resource_container_ends_total",
                "Node containers that ended, by how (released: stopped by the leader)",
            ),
            &["state"],
        )?;
        let requests = IntCounterVec::new(
            Opts::new(
                "lathe_resource_container_requests_total",
                "Node containers requested from the resource manager, by outcome",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(containers.clone()))?;
        registry.register(Box::new(ends.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        for state in GAUGE_STATES {
            containers.with_label_values(&[state]).set(0);
        }
        Ok(ResourceMetrics {
            containers,
            ends,
            requests,
        })
    }

    /// Sets the gauge: `counts` in the order of [`GAUGE_STATES`].
    pub(crate) fn set_containers(&self, counts: [usize; 3]) {
        for (state, count) in GAUGE_STATES.iter().zip(counts) {
            self.containers
                .with_label_values(&[state])
                .set(count as i64);
        }
    }

    pub(crate) fn ended(&self, state: &str) {
        self.ends.with_label_values(&[state]).inc();
    }

    pub(crate) fn requested(&self, ok: bool) {
        let outcome = if ok { "accepted" } else { "error" };
        self.requests.with_label_values(&[outcome]).inc();
    }
}
