//! Metrics the node exports from parts that keep their own counters.

use std::sync::Arc;

use lathe_store::zk::ZkStore;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounterVec, IntGauge, Opts};

/// `lathe_node_workers`: the async runtime's worker threads (`--workers`, else one per CPU).
pub(crate) fn register_workers(metrics: &prometheus::Registry) -> prometheus::Result<()> {
    let workers = IntGauge::new(
        "lathe_node_workers",
        "Threads of this node that run async work (--workers)",
    )?;
    let count = tokio::runtime::Handle::current().metrics().num_workers();
    workers.set(i64::try_from(count).unwrap_or(i64::MAX));
    metrics.register(Box::new(workers))
}

/// `lathe_zookeeper_requests_total{op}`, read from the ZooKeeper store's counters at scrape time.
pub(crate) struct ZkRequests {
    store: Arc<ZkStore>,
    template: IntCounterVec,
}

impl ZkRequests {
    pub(crate) fn new(store: Arc<ZkStore>) -> prometheus::Result<Self> {
        let template = IntCounterVec::new(
            Opts::new(
                "lathe_zookeeper_requests_total",
                "Requests the registry sent to ZooKeeper, by operation",
            ),
            &["op"],
        )?;
        Ok(ZkRequests { store, template })
    }
}

impl Collector for ZkRequests {
    fn desc(&self) -> Vec<&Desc> {
        self.template.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.template.reset();
        for (op, count) in self.store.request_counts() {
            self.template.with_label_values(&[op]).inc_by(count);
        }
        self.template.collect()
    }
}
