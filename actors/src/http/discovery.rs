//! `GET /v1/prometheus/targets`: Prometheus HTTP service discovery (`http_sd_configs`), so a
//! Prometheus pointed at any node scrapes the whole cluster and follows its membership with no
//! edit of its configuration. The answer is `[{"targets": ["host:port"], "labels": {...}}]`:
//!
//! - every member this node knows (alive, suspect or dead: a dead node stays listed so that its
//!   `up` is 0 until it is back), at its HTTP address, `/metrics`; labels `lathe_role="node"`,
//!   `node`, `version` (the Lathe version it runs).
//! - every `lathe-agent` registered under `/v1/agents` and not expired, at its status address;
//!   labels `lathe_role="agent"`, `agent` (its name).
//! - the running instances of groups whose topology sets the metadata key
//!   `metrics_path = "/some/path"` (HTTP tasks that serve their own metrics), at their endpoint;
//!   labels `lathe_role="task"`, `node`, `group`, `version` (the crate version), `instance`
//!   (`group/index`) and `__metrics_path__`.

use std::collections::BTreeMap;

use lathe::layout::{self, InstanceState, InstanceStatus};
use lathe::topology::GroupSpec;
use lathe::KeyPath;
use serde::Serialize;
use serde_json::Value;
use warp::reply::Response;
use warp::Reply;

use super::agents::{self, AgentRecord};
use super::tree::{member, Member};
use super::{query, ApiContext, ApiError};
use crate::scheduler::deploy;

pub(crate) const TARGETS_PATH: &str = "/v1/prometheus/targets";
/// The group metadata key naming the path an HTTP task serves its metrics on.
pub(crate) const METRICS_PATH_KEY: &str = "metrics_path";

/// One entry of the `http_sd_configs` answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct TargetGroup {
    pub(crate) targets: Vec<String>,
    pub(crate) labels: BTreeMap<String, String>,
}

impl TargetGroup {
    fn new(target: String, labels: &[(&str, &str)]) -> Self {
        TargetGroup {
            targets: vec![target],
            labels: labels
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect(),
        }
    }
}

pub(crate) async fn targets(context: &ApiContext, query: &str) -> Result<Response, ApiError> {
    query::parse(query, &[])?;
    let listed = context.members.members_json().await;
    let members: Vec<Member> = listed
        .get("members")
        .and_then(Value::as_array)
        .map(|all| all.iter().filter_map(member).collect())
        .unwrap_or_default();
    let groups = deploy::current(&context.registry)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map(|(record, _)| record.topology.groups)
        .unwrap_or_default();
    let instances = if groups.iter().any(|g| metrics_path(g).is_some()) {
        let prefix =
            KeyPath::parse(layout::INSTANCES).map_err(|e| ApiError::internal(e.to_string()))?;
        let (entries, _) = context.registry.list(&prefix).await?;
        entries
            .into_iter()
            .filter_map(|e| serde_json::from_value::<InstanceStatus>(e.value).ok())
            .collect()
    } else {
        Vec::new()
    };
    let registered = agents::live(context, agents::unix_ms_now()).await?;
    let mut answer = node_targets(&members);
    answer.extend(agent_targets(&registered));
    answer.extend(task_targets(&groups, &instances));
    Ok(warp::reply::json(&answer).into_response())
}

/// One target per member with a usable HTTP address, in the order given.
pub(crate) fn node_targets(members: &[Member]) -> Vec<TargetGroup> {
    members
        .iter()
        .filter_map(|m| {
            let addr = m.http_addr?;
            let mut labels = vec![("lathe_role", "node"), ("node", m.name.as_str())];
            if !m.version.is_empty() {
                labels.push(("version", m.version.as_str()));
            }
            Some(TargetGroup::new(addr.to_string(), &labels))
        })
        .collect()
}

/// One target per registered agent.
pub(crate) fn agent_targets(agents: &[AgentRecord]) -> Vec<TargetGroup> {
    agents
        .iter()
        .map(|a| {
            TargetGroup::new(
                a.addr.clone(),
                &[("lathe_role", "agent"), ("agent", &a.name)],
            )
        })
        .collect()
}

/// The path a group's instances serve metrics on, if its topology says so.
fn metrics_path(group: &GroupSpec) -> Option<&str> {
    group
        .metadata
        .get(METRICS_PATH_KEY)
        .and_then(Value::as_str)
        .filter(|path| path.starts_with('/'))
}

/// One target per running instance with an endpoint, of groups that set `metrics_path`.
pub(crate) fn task_targets(groups: &[GroupSpec], instances: &[InstanceStatus]) -> Vec<TargetGroup> {
    let mut answer = Vec::new();
    for group in groups {
        let Some(path) = metrics_path(group) else {
            continue;
        };
        let mut running: Vec<&InstanceStatus> = instances
            .iter()
            .filter(|i| i.group == group.name && i.status == InstanceState::Running)
            .collect();
        running.sort_by_key(|i| i.index);
        for instance in running {
            let Some(endpoint) = &instance.endpoint else {
                continue;
            };
            let name = format!("{}/{}", group.name, instance.index);
            answer.push(TargetGroup::new(
                endpoint.clone(),
                &[
                    ("lathe_role", "task"),
                    ("node", instance.node.as_deref().unwrap_or("")),
                    ("group", &group.name),
                    ("version", &instance.task_type.version),
                    ("instance", &name),
                    ("__metrics_path__", path),
                ],
            ));
        }
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;
    use lathe::TaskType;

    const TOPOLOGY: &str = r#"
[task.web]
crate = "web"
version = "1.2.0"
task = "my::Web"
tasks = 3
metrics_path = "/metrics"

[task.quiet]
crate = "quiet"
version = "0.1.0"
task = "my::Quiet"
tasks = 1
"#;

    fn instance(group: &str, index: u32, status: InstanceState, endpoint: &str) -> InstanceStatus {
        InstanceStatus {
            group: group.to_string(),
            index,
            node: Some(format!("n{index}")),
            task_type: TaskType::new("web", "1.2.0", "my::Web"),
            status,
            endpoint: Some(endpoint.to_string()).filter(|e| !e.is_empty()),
            restarts: 0,
            reason: None,
        }
    }

    #[test]
    fn every_member_with_an_address_is_a_node_target() {
        let listed = [
            serde_json::json!({"name": "n1", "status": "alive", "is_self": true, "version": "0.1.0",
                "http_addr": "127.0.0.1:7500", "cluster_addr": "127.0.0.1:7400"}),
            serde_json::json!({"name": "n2", "status": "dead",
                "http_addr": "0.0.0.0:7501", "cluster_addr": "10.0.0.2:7401"}),
            serde_json::json!({"name": "n3", "status": "alive", "http_addr": "nowhere"}),
        ];
        let members: Vec<Member> = listed.iter().filter_map(member).collect();
        let targets = node_targets(&members);
        let json = serde_json::to_value(&targets).unwrap();
        assert_eq!(
            json,
            serde_json::json!([
                {"targets": ["127.0.0.1:7500"],
                 "labels": {"lathe_role": "node", "node": "n1", "version": "0.1.0"}},
                {"targets": ["10.0.0.2:7501"], "labels": {"lathe_role": "node", "node": "n2"}},
            ])
        );
    }

    #[test]
    fn registered_agents_are_agent_targets() {
        let agents = [AgentRecord {
            name: "edge-1".into(),
            addr: "10.0.0.5:7610".into(),
            expires_at_ms: 1,
        }];
        assert_eq!(
            serde_json::to_value(agent_targets(&agents)).unwrap(),
            serde_json::json!([{"targets": ["10.0.0.5:7610"],
                "labels": {"lathe_role": "agent", "agent": "edge-1"}}])
        );
    }

    #[test]
    fn running_instances_of_groups_with_a_metrics_path_are_task_targets() {
        let topology = lathe::topology::parse("t.toml", TOPOLOGY).unwrap();
        let instances = [
            instance("task.web", 2, InstanceState::Running, "127.0.0.1:9002"),
            instance("task.web", 0, InstanceState::Running, "127.0.0.1:9000"),
            instance("task.web", 1, InstanceState::Restarting, "127.0.0.1:9001"),
            instance("task.web", 3, InstanceState::Running, ""),
            instance("task.quiet", 0, InstanceState::Running, "127.0.0.1:9100"),
        ];
        let targets = task_targets(&topology.groups, &instances);
        let addresses: Vec<&str> = targets.iter().map(|t| t.targets[0].as_str()).collect();
        assert_eq!(addresses, ["127.0.0.1:9000", "127.0.0.1:9002"]);
        let labels = &targets[1].labels;
        assert_eq!(labels["lathe_role"], "task");
        assert_eq!(labels["group"], "task.web");
        assert_eq!(labels["version"], "1.2.0");
        assert_eq!(labels["instance"], "task.web/2");
        assert_eq!(labels["node"], "n2");
        assert_eq!(labels["__metrics_path__"], "/metrics");
    }

    #[test]
    fn a_metrics_path_that_is_not_a_path_lists_nothing() {
        let text = TOPOLOGY.replace("\"/metrics\"", "\"metrics\"");
        let topology = lathe::topology::parse("t.toml", &text).unwrap();
        let instances = [instance(
            "task.web",
            0,
            InstanceState::Running,
            "127.0.0.1:9000",
        )];
        assert!(task_targets(&topology.groups, &instances).is_empty());
    }
}
