//! Metrics the node exports from parts that keep their own counters and states.

use std::sync::Arc;

use lathe_store::zk::{ZkConnection, ZkStore};
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

/// `lathe_zookeeper_connected`: 1 while the ZooKeeper session is connected, 0 while it is
/// reconnecting or being rebuilt after an expiry; read at scrape time.
pub(crate) struct ZkConnected {
    store: Arc<ZkStore>,
    gauge: IntGauge,
}

impl ZkConnected {
    pub(crate) fn new(store: Arc<ZkStore>) -> prometheus::Result<Self> {
        let gauge = IntGauge::new(
            "lathe_zookeeper_connected",
            "1 while this node's ZooKeeper session is connected, else 0",
        )?;
        Ok(ZkConnected { store, gauge })
    }
}

impl Collector for ZkConnected {
    fn desc(&self) -> Vec<&Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let connected = matches!(self.store.connection(), ZkConnection::Connected);
        self.gauge.set(i64::from(connected));
        self.gauge.collect()
    }
}
