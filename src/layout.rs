//! Where Lathe keeps its own state in the registry (all under the reserved `/lathe`), and the
//! records stored there. The scheduler, the task supervisors, the REST API and `lathe-agent` agree
//! on these paths through this module.
//!
//! ```text
//! /lathe/topology                          the deployed topology (source TOML and parsed groups)
//! /lathe/scheduler/leader                  {"node": NAME} of the live scheduler
//! /lathe/assignments/<node>/<group>/<i>    Assignment: instance i of group runs on node
//! /lathe/instances/<group>/<i>             InstanceStatus, written by the node running it
//! /lathe/endpoints/<group path>/<i>        Endpoint of a running instance (service discovery)
//! /lathe/resources/<backend>/<container>   a node container the scheduler leader asked for (YARN)
//! /lathe/rollouts/<group>                  RolloutRecord: a group moving to a new task type
//! /lathe/shifts/<metadata key path>        ShiftRecord: a weighted split moving to one group
//! /<group path>/<key>                      group metadata (`backend_distribution`, ...)
//! ```
//!
//! A group's name is its TOML table path (`task.http.frontpage.v4-2-1`); its path replaces the dots
//! with slashes (`/task/http/frontpage/v4-2-1`).

use serde::{Deserialize, Serialize};

use crate::catalog::TaskType;
use crate::registry::{KeyPath, KeyPathError, DERIVED_PATH_ROOM, MAX_NODE_NAME_LEN};

pub const TOPOLOGY: &str = "/lathe/topology";
pub const SCHEDULER_LEADER: &str = "/lathe/scheduler/leader";
pub const ASSIGNMENTS: &str = "/lathe/assignments";
pub const INSTANCES: &str = "/lathe/instances";
pub const ENDPOINTS: &str = "/lathe/endpoints";
pub const RESOURCES: &str = "/lathe/resources";
pub const ROLLOUTS: &str = "/lathe/rollouts";
pub const SHIFTS: &str = "/lathe/shifts";

/// The most a derived path adds to a user path (a group's path is its name plus a leading `/`):
/// `/lathe/assignments/<node>/<group>/<index>` is the longest, with a node name of
/// [`MAX_NODE_NAME_LEN`] and a `u32` index. [`KeyPath::parse`] keeps user paths
/// [`DERIVED_PATH_ROOM`] bytes short of the key limit, so no derived path can exceed it.
const LONGEST_DERIVATION: usize =
    ASSIGNMENTS.len() + "/".len() + MAX_NODE_NAME_LEN + "/".len() + "/".len() + 10;
const _: () = assert!(LONGEST_DERIVATION <= DERIVED_PATH_ROOM);
const _: () = assert!(SHIFTS.len() <= DERIVED_PATH_ROOM);

fn path(raw: String) -> KeyPath {
    // Callers pass node names checked by `registry::check_node_name` and group names and keys
    // that are valid user paths; by the one length rule above their derived paths are valid.
    KeyPath::parse(&raw).unwrap_or_else(|e| panic!("invalid registry path {raw:?}: {e}"))
}

/// `task.http.lb` → `/task/http/lb`.
pub fn group_path(group: &str) -> Result<KeyPath, KeyPathError> {
    KeyPath::parse(&group.replace('.', "/"))
}

/// `/lathe/assignments/<node>`: every assignment of one node.
pub fn node_assignments(node: &str) -> KeyPath {
    path(format!("{ASSIGNMENTS}/{node}"))
}

pub fn assignment(node: &str, group: &str, index: u32) -> KeyPath {
    path(format!("{ASSIGNMENTS}/{node}/{group}/{index}"))
}

pub fn instance(group: &str, index: u32) -> KeyPath {
    path(format!("{INSTANCES}/{group}/{index}"))
}

/// `/lathe/endpoints/<group path>`: the live endpoints of one group.
pub fn group_endpoints(group: &str) -> KeyPath {
    path(format!("{ENDPOINTS}/{}", group.replace('.', "/")))
}

pub fn endpoint(group: &str, index: u32) -> KeyPath {
    path(format!("{ENDPOINTS}/{}/{index}", group.replace('.', "/")))
}

/// `/lathe/resources/<backend>`: the containers a resource manager backend was asked for.
pub fn resources(backend: &str) -> KeyPath {
    path(format!("{RESOURCES}/{backend}"))
}

/// `/lathe/resources/<backend>/<container>` (a YARN application id).
pub fn resource(backend: &str, container: &str) -> KeyPath {
    path(format!("{RESOURCES}/{backend}/{container}"))
}

/// `/lathe/rollouts/<group>`: the roll-out of one group.
pub fn rollout(group: &str) -> KeyPath {
    path(format!("{ROLLOUTS}/{group}"))
}

/// Where a roll-out is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RolloutState {
    /// Replacing instances a batch at a time.
    Rolling,
    /// Stopped by a person or by a failed batch (`on_failure = "pause"`): nothing more is
    /// replaced until `resume` or `undo`.
    Paused,
    /// Every instance runs the new task type.
    Done,
    /// Putting every instance back on the old task type (a failed batch, or `undo`).
    RollingBack,
    /// Every instance runs the old task type again; `resume` tries the roll-out once more.
    RolledBack,
}

impl RolloutState {
    pub fn name(self) -> &'static str {
        match self {
            RolloutState::Rolling => "rolling",
            RolloutState::Paused => "paused",
            RolloutState::Done => "done",
            RolloutState::RollingBack => "rolling-back",
            RolloutState::RolledBack => "rolled-back",
        }
    }

    /// Whether the scheduler still has work to do.
    pub fn is_moving(self) -> bool {
        matches!(self, RolloutState::Rolling | RolloutState::RollingBack)
    }
}

/// A group moving from one task type to another, kept by the scheduler leader (any leader
/// carries it on: times are wall-clock milliseconds since the Unix epoch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutRecord {
    pub group: String,
    /// What the group ran before.
    pub from: TaskType,
    /// What the deployed topology asks for.
    pub to: TaskType,
    pub state: RolloutState,
    /// The instances being replaced now.
    #[serde(default)]
    pub batch: Vec<u32>,
    /// When the current batch started.
    #[serde(default)]
    pub batch_started_ms: Option<u64>,
    /// Since when every instance of the batch has run the new type without a restart.
    #[serde(default)]
    pub healthy_since_ms: Option<u64>,
    /// The batch's restarts when `healthy_since_ms` was set: any more and the clock starts over.
    #[serde(default)]
    pub healthy_restarts: u32,
    /// Why it paused or rolls back.
    #[serde(default)]
    pub reason: Option<String>,
    pub started_ms: u64,
    pub updated_ms: u64,
    /// The group's response counters when the batch became healthy (only under a metric gate,
    /// `rollout.max_error_ratio` / `max_p99_ms`): the gate judges what was answered since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate_baseline: Option<Traffic>,
}

/// A group's response counters summed over the cluster's nodes, as a metric gate reads them from
/// `lathe_http_requests_total{group,code}` and `lathe_http_request_duration_seconds{group}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traffic {
    /// Answers, every code.
    pub requests: u64,
    /// Answers with a 5xx code.
    pub errors: u64,
    /// The answer-time histogram: (upper bound in microseconds, `u64::MAX` for +Inf; cumulative
    /// count), by increasing bound.
    pub buckets: Vec<(u64, u64)>,
}

/// `/lathe/shifts/<key>`: the traffic shift of the metadata key `key` (a path outside `/lathe`).
pub fn shift(key: &KeyPath) -> KeyPath {
    path(format!("{SHIFTS}{}", key.as_str()))
}

/// A weighted split (`[[groups], [weights]]`, like the seed's `backend_distribution`) moving its
/// traffic to one group a step at a time, kept by the scheduler leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShiftRecord {
    /// The metadata key holding the split.
    pub key: String,
    /// The group the traffic moves to.
    pub to: String,
    /// Percentage points moved to `to` per step.
    pub step: u32,
    /// Seconds between steps; each step waits for `to`'s instances to be healthy.
    pub every_seconds: u32,
    /// The split before the shift, put back by an undo or a failed health check.
    pub original: serde_json::Value,
    /// The split the shift wrote last (a different value in the key means a person changed it).
    pub written: serde_json::Value,
    /// The split before the last step: the key still holding it means the step's write is not
    /// visible yet (or was lost), not a change by hand.
    #[serde(default)]
    pub previous: serde_json::Value,
    /// `to`'s share now, in percent.
    pub percent: u32,
    pub state: ShiftState,
    /// `to`'s restarts when the current step began: more means it is not healthy.
    #[serde(default)]
    pub restarts: u32,
    #[serde(default)]
    pub reason: Option<String>,
    pub last_step_ms: u64,
    pub started_ms: u64,
    pub updated_ms: u64,
    /// `to`'s response counters when the current step began (only under a metric gate of `to`'s
    /// `rollout` table): the gate judges what was answered since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate_baseline: Option<Traffic>,
}

/// Where a traffic shift is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ShiftState {
    Shifting,
    Paused,
    /// `to` has all the traffic.
    Done,
    /// The original split is back (an undo, or `to` was not healthy).
    RolledBack,
}

impl ShiftState {
    pub fn name(self) -> &'static str {
        match self {
            ShiftState::Shifting => "shifting",
            ShiftState::Paused => "paused",
            ShiftState::Done => "done",
            ShiftState::RolledBack => "rolled-back",
        }
    }
}

/// Instance `index` of `group` is to run on `node`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub group: String,
    pub index: u32,
    pub node: String,
    pub task_type: TaskType,
}

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    /// Not placed: no live node can run it (the reason says why).
    Pending,
    Starting,
    Running,
    /// Crashed and is being restarted.
    Restarting,
    /// Beyond its restart intensity: not restarted until redeployed or retried.
    Failed,
    Stopped,
}

/// What the node running an instance reports about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceStatus {
    pub group: String,
    pub index: u32,
    pub node: Option<String>,
    pub task_type: TaskType,
    pub status: InstanceState,
    /// `HOST:PORT` of an HTTP instance.
    pub endpoint: Option<String>,
    pub restarts: u32,
    /// Why it is pending or failed.
    pub reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_group_name() {
        assert_eq!(
            group_path("task.http.frontpage.v4-2-1").unwrap().as_str(),
            "/task/http/frontpage/v4-2-1"
        );
        assert_eq!(
            endpoint("task.http.lb", 2).as_str(),
            "/lathe/endpoints/task/http/lb/2"
        );
        assert_eq!(
            assignment("n1", "task.http.lb", 0).as_str(),
            "/lathe/assignments/n1/task.http.lb/0"
        );
        assert!(instance("task.http.lb", 1).is_reserved());
        assert_eq!(
            rollout("task.http.frontpage.v4-2-1").as_str(),
            "/lathe/rollouts/task.http.frontpage.v4-2-1"
        );
    }

    /// The longest valid group name and key, with the longest node name and index, still give
    /// valid derived paths (a group name of 1015 bytes used to panic `rollout`).
    #[test]
    fn derived_paths_of_the_longest_valid_names_are_valid() {
        use crate::registry::{check_node_name, MAX_USER_KEY_LEN};
        // A group path `/g.../g` of the longest valid length, as a dotted name.
        let segment = "g".repeat(99);
        let mut longest = String::new();
        while longest.len() + 1 + segment.len() <= MAX_USER_KEY_LEN {
            longest.push('/');
            longest.push_str(&segment);
        }
        let tail = MAX_USER_KEY_LEN - longest.len();
        if tail > 1 {
            longest.push('/');
            longest.push_str(&"t".repeat(tail - 1));
        }
        assert_eq!(longest.len(), MAX_USER_KEY_LEN);
        let key = KeyPath::parse(&longest).expect("the longest user path is valid");
        let group = longest[1..].replace('/', ".");
        assert_eq!(group_path(&group).unwrap(), key);
        let node = "n".repeat(MAX_NODE_NAME_LEN);
        check_node_name(&node).unwrap();
        let derived = [
            node_assignments(&node),
            assignment(&node, &group, u32::MAX),
            instance(&group, u32::MAX),
            group_endpoints(&group),
            endpoint(&group, u32::MAX),
            rollout(&group),
            shift(&key),
        ];
        for path in derived {
            assert!(path.is_reserved(), "{path}");
        }
        // One byte more is refused where the name is checked, before any path is derived.
        assert!(KeyPath::parse(&format!("{longest}x")).is_err());
    }
}
