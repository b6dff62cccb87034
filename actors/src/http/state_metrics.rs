//! Cluster state that lives in the registry, read when `/metrics` is scraped (for half a second
//! at most), for dashboards and alerts (every node reports the same cluster-wide values;
//! aggregate with `max by`):
//!
//! - `lathe_rollouts{group,state}` = 1 for each group's roll-out, labelled with its state now
//!   (`rolling`, `paused`, `done`, `rolling-back`, `rolled-back`);
//! - `lathe_shifts{key,to,state}` = 1 for each traffic shift, labelled with its state now
//!   (`shifting`, `paused`, `done`, `rolled-back`);
//! - `lathe_shift_percent{key,to}`: the share of the split a shift has moved to its target;
//! - `lathe_cluster_instances{group,status}`: the task instances of the cluster by state, pending
//!   ones included (which no node's `lathe_task_instances` counts); every state of every group is
//!   present, 0 when no instance is in it;
//! - `lathe_group_restart_limit{group}` and `lathe_group_restart_window_seconds{group}`: each
//!   deployed group's restart intensity (`restart.max_restarts` within `restart.within_seconds`:
//!   one crash more in the window and the instance is failed).

use std::collections::BTreeMap;

use lathe::layout::{self, InstanceStatus, RolloutRecord, ShiftRecord};
use lathe::topology::GroupSpec;
use lathe::KeyPath;
use prometheus::{IntGaugeVec, Opts, Registry};

use crate::registry::RegistryHandle;
use crate::scheduler::deploy;

#[derive(Clone)]
pub(crate) struct StateMetrics {
    rollouts: IntGaugeVec,
    shifts: IntGaugeVec,
    shift_percent: IntGaugeVec,
    instances: IntGaugeVec,
    restart_limit: IntGaugeVec,
    restart_window: IntGaugeVec,
}

/// The longest a scrape waits for the registry's records.
const REFRESH_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// Every state an instance can be in, as `lathe_cluster_instances` labels it.
const INSTANCE_STATES: [&str; 6] = [
    "pending",
    "starting",
    "running",
    "restarting",
    "failed",
    "stopped",
];

impl StateMetrics {
    /// The gauges, registered in `registry` (left unregistered, with a warning, when it has
    /// them already: one API server per registry is the rule).
    pub(crate) fn register(registry: &Registry) -> Self {
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let gauge =
                IntGaugeVec::new(Opts::new(name, help), labels).expect("a valid metric definition");
            if let Err(error) = registry.register(Box::new(gauge.clone())) {
                tracing::warn!(%error, "{name} not registered");
            }
            gauge
        };
        StateMetrics {
            rollouts: gauge(
                "lathe_rollouts",
                "Roll-outs of the deployed groups: 1 per group, labelled with its state",
                &["group", "state"],
            ),
            shifts: gauge(
                "lathe_shifts",
                "Traffic shifts: 1 per split key, labelled with its target and state",
                &["key", "to", "state"],
            ),
            shift_percent: gauge(
                "lathe_shift_percent",
                "Share of a split (percent) a traffic shift has moved to its target",
                &["key", "to"],
            ),
            instances: gauge(
                "lathe_cluster_instances",
                "Task instances of the whole cluster, by group and state (pending included)",
                &["group", "status"],
            ),
            restart_limit: gauge(
                "lathe_group_restart_limit",
                "Restarts an instance of the group may have within its window before it is failed",
                &["group"],
            ),
            restart_window: gauge(
                "lathe_group_restart_window_seconds",
                "The window of the group's restart intensity, in seconds",
                &["group"],
            ),
        }
    }

    /// Reads the records, for at most [`REFRESH_WAIT`]: `/metrics` never waits on a busy
    /// registry shard (one held up by a write while ZooKeeper is away, say). On a registry error
    /// or a timeout the gauges keep their last values.
    pub(crate) async fn refresh(&self, registry: &RegistryHandle) {
        if tokio::time::timeout(REFRESH_WAIT, self.read_and_set(registry))
            .await
            .is_err()
        {
            tracing::debug!("registry state metrics not refreshed: the registry is slow");
        }
    }

    async fn read_and_set(&self, registry: &RegistryHandle) {
        let (Ok(rollouts), Ok(shifts), Ok(instances)) = (
            records::<RolloutRecord>(registry, layout::ROLLOUTS).await,
            records::<ShiftRecord>(registry, layout::SHIFTS).await,
            records::<InstanceStatus>(registry, layout::INSTANCES).await,
        ) else {
            return;
        };
        self.set(&rollouts, &shifts);
        self.set_instances(&instances);
        if let Ok(topology) = deploy::current(registry).await {
            let groups = topology.map(|(record, _)| record.topology.groups);
            self.set_intensities(&groups.unwrap_or_default());
        }
    }

    fn set_intensities(&self, groups: &[GroupSpec]) {
        self.restart_limit.reset();
        self.restart_window.reset();
        for group in groups {
            let name = [group.name.as_str()];
            self.restart_limit
                .with_label_values(&name)
                .set(i64::from(group.restart.max_restarts));
            self.restart_window
                .with_label_values(&name)
                .set(i64::from(group.restart.within_seconds));
        }
    }

    fn set_instances(&self, instances: &[InstanceStatus]) {
        let mut counts: BTreeMap<(&str, String), i64> = BTreeMap::new();
        for instance in instances {
            for state in INSTANCE_STATES {
                counts
                    .entry((&instance.group, state.to_string()))
                    .or_insert(0);
            }
            let state = serde_json::to_value(instance.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            *counts.entry((&instance.group, state)).or_insert(0) += 1;
        }
        self.instances.reset();
        for ((group, state), count) in counts {
            self.instances
                .with_label_values(&[group, state.as_str()])
                .set(count);
        }
    }

    fn set(&self, rollouts: &[RolloutRecord], shifts: &[ShiftRecord]) {
        self.rollouts.reset();
        for record in rollouts {
            self.rollouts
                .with_label_values(&[record.group.as_str(), record.state.name()])
                .set(1);
        }
        self.shifts.reset();
        self.shift_percent.reset();
        for record in shifts {
            let labels = [record.key.as_str(), record.to.as_str()];
            self.shifts
                .with_label_values(&[labels[0], labels[1], record.state.name()])
                .set(1);
            self.shift_percent
                .with_label_values(&labels)
                .set(i64::from(record.percent));
        }
    }
}

async fn records<T: serde::de::DeserializeOwned>(
    registry: &RegistryHandle,
    prefix: &str,
) -> anyhow::Result<Vec<T>> {
    let (entries, _) = registry.list(&KeyPath::parse(prefix)?).await?;
    Ok(entries
        .into_iter()
        .filter_map(|e| serde_json::from_value(e.value).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lathe::layout::{RolloutState, ShiftState};
    use lathe::TaskType;

    fn rollout(group: &str, state: RolloutState) -> RolloutRecord {
        RolloutRecord {
            group: group.to_string(),
            from: TaskType::new("web", "1.0.0", "my::Web"),
            to: TaskType::new("web", "1.1.0", "my::Web"),
            state,
            batch: Vec::new(),
            batch_started_ms: None,
            healthy_since_ms: None,
            healthy_restarts: 0,
            reason: None,
            started_ms: 1,
            updated_ms: 2,
            gate_baseline: None,
        }
    }

    #[test]
    fn instances_are_counted_by_group_and_state_with_zeros() {
        let registry = Registry::new();
        let metrics = StateMetrics::register(&registry);
        let instance = |index: u32, status: &str| -> InstanceStatus {
            serde_json::from_value(serde_json::json!({
                "group": "task.web", "index": index, "node": null,
                "task_type": {"crate": "web", "version": "1.0.0", "task": "my::Web"},
                "status": status, "endpoint": null, "restarts": 0, "reason": null
            }))
            .unwrap()
        };
        metrics.set_instances(&[
            instance(0, "running"),
            instance(1, "running"),
            instance(2, "pending"),
        ]);
        let text = text(&registry);
        assert!(text.contains(r#"lathe_cluster_instances{group="task.web",status="running"} 2"#));
        assert!(text.contains(r#"lathe_cluster_instances{group="task.web",status="pending"} 1"#));
        assert!(text.contains(r#"lathe_cluster_instances{group="task.web",status="failed"} 0"#));
    }

    #[test]
    fn each_group_reports_its_restart_intensity() {
        let registry = Registry::new();
        let metrics = StateMetrics::register(&registry);
        let topology = lathe::topology::parse(
            "t.toml",
            "[task.web]\ncrate = \"web\"\nversion = \"1.0.0\"\ntask = \"my::Web\"\ntasks = 2\n\
             restart = { max_restarts = 3, within_seconds = 20 }\n",
        )
        .unwrap();
        metrics.set_intensities(&topology.groups);
        let text = text(&registry);
        assert!(
            text.contains(r#"lathe_group_restart_limit{group="task.web"} 3"#),
            "{text}"
        );
        assert!(text.contains(r#"lathe_group_restart_window_seconds{group="task.web"} 20"#));
    }

    fn text(registry: &Registry) -> String {
        use prometheus::Encoder;
        let mut buffer = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&registry.gather(), &mut buffer)
            .unwrap();
        String::from_utf8(buffer).unwrap()
    }

    #[test]
    fn each_record_is_one_series_labelled_with_its_state_now() {
        let registry = Registry::new();
        let metrics = StateMetrics::register(&registry);
        let shift: ShiftRecord = serde_json::from_value(serde_json::json!({
            "key": "/task/http/lb/backend_distribution", "to": "task.http.frontpage.v4-2-2",
            "step": 10, "every_seconds": 30, "original": [], "written": [], "percent": 40,
            "state": "shifting", "last_step_ms": 1, "started_ms": 1, "updated_ms": 1
        }))
        .unwrap();
        metrics.set(
            &[rollout("task.a", RolloutState::Rolling)],
            std::slice::from_ref(&shift),
        );
        metrics.set(
            &[
                rollout("task.a", RolloutState::RolledBack),
                rollout("task.b", RolloutState::Done),
            ],
            &[ShiftRecord {
                state: ShiftState::Done,
                percent: 100,
                ..shift
            }],
        );
        let text = text(&registry);
        assert!(text.contains(r#"lathe_rollouts{group="task.a",state="rolled-back"} 1"#));
        assert!(text.contains(r#"lathe_rollouts{group="task.b",state="done"} 1"#));
        assert!(!text.contains(r#"state="rolling""#), "{text}");
        assert!(text.contains(r#"state="done",to="task.http.frontpage.v4-2-2"} 1"#));
        assert!(!text.contains(r#"state="shifting""#), "{text}");
        assert!(text.contains(
            r#"lathe_shift_percent{key="/task/http/lb/backend_distribution",to="task.http.frontpage.v4-2-2"} 100"#
        ));
    }
}
