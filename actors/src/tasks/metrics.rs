//! The task runtime's Prometheus metrics: HTTP traffic of task instances, instance counts, and
//! how long a crashed instance takes to run again (`lathe_task_restart_seconds`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

/// `(group, version, status)` → number of instances.
pub(crate) type InstanceCounts = BTreeMap<(String, String, &'static str), i64>;

#[derive(Clone)]
pub(crate) struct TaskMetrics {
    pub(crate) http_requests: IntCounterVec,
    pub(crate) http_duration: HistogramVec,
    pub(crate) handler_panics: IntCounterVec,
    instances: IntGaugeVec,
    restart: HistogramVec,
    /// `lathe_state_restore_seconds{group}`: restores of instance state from the changelog.
    restore: HistogramVec,
    /// `lathe_forward_total{way}`: requests `forward` sent in-process (`local`) or over the
    /// network (`network`).
    pub(crate) forwarded: IntCounterVec,
    /// `lathe_cache_gets_total{group,cache,outcome}`: `ctx.cache(..).get` calls.
    pub(crate) cache_gets: IntCounterVec,
    /// `lathe_task_http_connections{group}`: connections open to HTTP instances.
    pub(crate) http_connections: IntGaugeVec,
    /// `lathe_task_http_refused_total{group}`: connections refused (503) past an instance's
    /// `--task-http-max-connections`.
    pub(crate) http_refused: IntCounterVec,
}

impl TaskMetrics {
    pub(crate) fn register(registry: &Registry) -> prometheus::Result<Self> {
        let http_requests = IntCounterVec::new(
            Opts::new(
                "lathe_http_requests_total",
                "Requests answered by HTTP task instances on this node",
            ),
            &["group", "code"],
        )?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "lathe_http_request_duration_seconds",
                "Time HTTP task instances on this node took to answer a request",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 10.0,
            ]),
            &["group"],
        )?;
        let handler_panics = IntCounterVec::new(
            Opts::new(
                "lathe_task_handler_panics_total",
                "Requests whose handler panicked (answered 500) on this node",
            ),
            &["group"],
        )?;
        let instances = IntGaugeVec::new(
            Opts::new(
                "lathe_task_instances",
                "Task instances assigned to this node, by state",
            ),
            &["group", "version", "status"],
        )?;
        let restart = HistogramVec::new(
            HistogramOpts::new(
                "lathe_task_restart_seconds",
                "From the task supervisor learning that an instance crashed to the restarted \
                 instance running (an HTTP task serving on its port), back-off included",
            )
            .buckets(vec![
                0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25,
                0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["group"],
        )?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_duration.clone()))?;
        registry.register(Box::new(handler_panics.clone()))?;
        registry.register(Box::new(instances.clone()))?;
        let forwarded = IntCounterVec::new(
            Opts::new(
                "lathe_forward_total",
                "Requests forwarded by tasks of this node: way=local to an instance in this \
                 process (a direct call), way=network to an instance elsewhere",
            ),
            &["way"],
        )?;
        let cache_gets = IntCounterVec::new(
            Opts::new(
                "lathe_cache_gets_total",
                "Cache gets by instances of this node: outcome=hit (main cache), hot (hot copy), \
                 peer (answered by the key's owner), load (own key, loaded), fallback (owner out \
                 of reach, loaded here), error",
            ),
            &["group", "cache", "outcome"],
        )?;
        let restore = HistogramVec::new(
            HistogramOpts::new(
                "lathe_state_restore_seconds",
                "Time an instance took to restore its state from its group's changelog before \
                 its start ran",
            )
            .buckets(vec![
                0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
            ]),
            &["group"],
        )?;
        registry.register(Box::new(restart.clone()))?;
        registry.register(Box::new(restore.clone()))?;
        registry.register(Box::new(forwarded.clone()))?;
        registry.register(Box::new(cache_gets.clone()))?;
        let http_connections = IntGaugeVec::new(
            Opts::new(
                "lathe_task_http_connections",
                "Connections open to HTTP task instances on this node",
            ),
            &["group"],
        )?;
        let http_refused = IntCounterVec::new(
            Opts::new(
                "lathe_task_http_refused_total",
                "Connections to HTTP task instances refused with 503 past \
                 --task-http-max-connections",
            ),
            &["group"],
        )?;
        registry.register(Box::new(http_connections.clone()))?;
        registry.register(Box::new(http_refused.clone()))?;
        Ok(TaskMetrics {
            http_connections,
            http_refused,
            http_requests,
            http_duration,
            handler_panics,
            instances,
            restart,
            restore,
            forwarded,
            cache_gets,
        })
    }

    /// An instance of `group` restored its state from the changelog in `seconds`.
    pub(crate) fn observe_restore(&self, group: &str, seconds: f64) {
        self.restore.with_label_values(&[group]).observe(seconds);
    }

    /// One crashed instance of `group` runs again, `took` after its crash was seen.
    pub(crate) fn observe_restart(&self, group: &str, took: Duration) {
        self.restart
            .with_label_values(&[group])
            .observe(took.as_secs_f64());
    }

    /// Removes every `lathe_task_instances` series (a restarted supervisor counts afresh).
    pub(crate) fn clear_instances(&self) {
        self.instances.reset();
    }

    /// Sets `lathe_task_instances` to `counts`; label sets no longer present are removed.
    pub(crate) fn set_instances(&self, previous: &InstanceCounts, counts: &InstanceCounts) {
        let current: BTreeSet<_> = counts.keys().collect();
        for gone in previous.keys().filter(|key| !current.contains(key)) {
            let _ = self
                .instances
                .remove_label_values(&[gone.0.as_str(), gone.1.as_str(), gone.2]);
        }
        for ((group, version, status), count) in counts {
            self.instances
                .with_label_values(&[group.as_str(), version.as_str(), status])
                .set(*count);
        }
    }
}
