//! The tree as supervisors report it: nesting, restarts, sync, drills and metrics.

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use ractor_cluster::RactorMessage;
use tokio::sync::mpsc;

use super::*;

#[derive(RactorMessage)]
enum IdleMsg {}

/// An actor that does nothing; a parent that reports its children's deaths.
struct Idle(Option<mpsc::UnboundedSender<String>>);

impl Actor for Idle {
    type Msg = IdleMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<IdleMsg>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<IdleMsg>,
        event: SupervisionEvent,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        if let (Some(deaths), SupervisionEvent::ActorTerminated(_, _, reason)) = (&self.0, event) {
            let _ = deaths.send(reason.unwrap_or_default());
        }
        Ok(())
    }
}

async fn idle() -> ActorCell {
    Actor::spawn(None, Idle(None), ())
        .await
        .unwrap()
        .0
        .get_cell()
}

#[tokio::test]
async fn supervisors_report_a_nested_tree_with_restarts() {
    let tree = ActorTree::new("n1");
    let root = tree.root(ActorKind::NodeSupervisor, &idle().await);
    let registry = root.child("registry");
    registry.started("feed", ActorKind::RegistryFeed, &idle().await);
    registry.started("shard-0", ActorKind::RegistryShard, &idle().await);
    root.started("registry", ActorKind::RegistrySupervisor, &idle().await);
    registry.restarting("shard-0", ActorKind::RegistryShard, "killed");
    let during = tree.root_snapshot().unwrap();
    let shard = during.find("node/registry/shard-0").unwrap();
    assert_eq!((shard.status, shard.restarts), (ActorStatus::Restarting, 1));
    registry.started("shard-0", ActorKind::RegistryShard, &idle().await);

    let snapshot = tree.root_snapshot().unwrap();
    let paths: Vec<&str> = snapshot.flatten().iter().map(|a| a.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "node",
            "node/registry",
            "node/registry/feed",
            "node/registry/shard-0"
        ]
    );
    let shard = snapshot.find("node/registry/shard-0").unwrap();
    assert_eq!((shard.status, shard.restarts), (ActorStatus::Running, 1));
    assert_eq!(tree.restarts_of(ActorKind::RegistryShard), 1);
    let json = serde_json::to_value(&snapshot).unwrap();
    assert_eq!(json["kind"], "node-supervisor");
    assert_eq!(json["children"][0]["children"][1]["kind"], "registry-shard");
    assert_eq!(json["children"][0]["children"][1]["status"], "running");

    root.removed("registry");
    assert_eq!(tree.root_snapshot().unwrap().flatten().len(), 1);
}

#[tokio::test]
async fn sync_replaces_the_children_of_one_kind() {
    let tree = ActorTree::new("n1");
    let root = tree.root(ActorKind::NodeSupervisor, &idle().await);
    let tasks = root.child("tasks");
    root.started("tasks", ActorKind::TaskSupervisor, &idle().await);
    let report = |name: &str, status, cell: Option<ActorCell>| ChildReport {
        name: name.into(),
        status,
        restarts: 2,
        reason: None,
        cell,
    };
    let cell = idle().await;
    tasks.sync(
        ActorKind::Task,
        &[
            report("g/0", ActorStatus::Running, Some(cell)),
            report("g/1", ActorStatus::Failed, None),
        ],
    );
    tasks.sync(ActorKind::Task, &[report("g/1", ActorStatus::Failed, None)]);
    let snapshot = tree.root_snapshot().unwrap();
    let paths: Vec<&str> = snapshot.flatten().iter().map(|a| a.path.as_str()).collect();
    assert_eq!(paths, ["node", "node/tasks", "node/tasks/g/1"]);
    assert_eq!(
        tree.kill("node/tasks/g/1"),
        Err(KillError::NotRunning {
            path: "node/tasks/g/1".into(),
            status: "failed"
        })
    );
    assert_eq!(
        tree.kill("node/nothing"),
        Err(KillError::Unknown("node/nothing".into()))
    );
}

#[tokio::test]
async fn a_drill_kills_the_actor_and_its_supervisor_sees_it() {
    let (deaths, mut died) = mpsc::unbounded_channel();
    let (parent, _) = Actor::spawn(None, Idle(Some(deaths)), ()).await.unwrap();
    let (child, _) = Actor::spawn_linked(None, Idle(None), (), parent.get_cell())
        .await
        .unwrap();
    let tree = ActorTree::new("n1");
    let root = tree.root(ActorKind::NodeSupervisor, &parent.get_cell());
    root.started("scheduler", ActorKind::Scheduler, &child.get_cell());
    assert_eq!(tree.kill("node/scheduler"), Ok(ActorKind::Scheduler));
    let reason = tokio::time::timeout(Duration::from_secs(5), died.recv())
        .await
        .expect("the supervisor hears of it")
        .unwrap();
    assert_eq!(reason, "killed");
}

#[tokio::test]
async fn metrics_show_live_actors_statuses_and_restarts() {
    let tree = ActorTree::new("n1");
    let root = tree.root(ActorKind::NodeSupervisor, &idle().await);
    root.started("scheduler", ActorKind::Scheduler, &idle().await);
    root.restarting("scheduler", ActorKind::Scheduler, "killed");
    let registry = prometheus::Registry::new();
    TreeMetrics::register(tree.clone(), &registry).unwrap();
    let text = {
        use prometheus::Encoder;
        let mut buffer = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&registry.gather(), &mut buffer)
            .unwrap();
        String::from_utf8(buffer).unwrap()
    };
    assert!(
        text.contains(
            r#"lathe_actor_info{kind="node-supervisor",node="n1",parent="",path="node"} 1"#
        ),
        "{text}"
    );
    assert!(
        !text.contains(r#"lathe_actor_info{kind="scheduler""#),
        "{text}"
    );
    assert!(
        text.contains(
            r#"lathe_actor_restarts{kind="scheduler",node="n1",path="node/scheduler"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"lathe_actors{kind="scheduler",node="n1",status="restarting"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"lathe_actor_restarts_total{kind="scheduler",node="n1"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"lathe_actor_restarts_total{kind="task",node="n1"} 0"#),
        "{text}"
    );
}
