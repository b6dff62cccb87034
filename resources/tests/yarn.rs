//! The YARN backend and its REST client against the ResourceManager double of `lathe-tests`
//! (no YARN can be installed here): requests, capacity, and every way a container ends.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use lathe_resources::yarn::{
    AppState, Commands, ContainerLaunchContext, Entries, Resource, SubmissionContext, YarnBackend,
    YarnClient, YarnConfig, APPLICATION_TYPE,
};
use lathe_resources::{ContainerId, ContainerState, NodeLaunch, ResourceError, ResourceManager};
use lathe_tests::wait::wait_until;
use lathe_tests::yarn::ResourceManagerDouble;

const DEADLINE: Duration = Duration::from_secs(30);

/// A "node" that is `sh -c SCRIPT`.
fn launch(name: &str, script: &str) -> NodeLaunch {
    NodeLaunch {
        name: name.to_string(),
        program: PathBuf::from("/bin/sh"),
        args: vec!["-c".into(), script.to_string()],
        env: vec![("LATHE_COOKIE".into(), "s3cret".into())],
    }
}

fn backend(rm: &ResourceManagerDouble) -> YarnBackend {
    let mut config = YarnConfig::new(rm.url());
    config.memory_mb = 256;
    config.user = Some("lathe".into());
    YarnBackend::new(config)
}

/// Polls `backend` until `id` reaches a state `wanted` accepts; returns it.
fn wait_for(
    backend: &mut YarnBackend,
    seen: &mut BTreeMap<ContainerId, ContainerState>,
    id: &ContainerId,
    what: &str,
    wanted: impl Fn(&ContainerState) -> bool,
) -> ContainerState {
    wait_until(what, DEADLINE, || {
        for event in backend.poll().expect("poll") {
            seen.insert(event.id, event.state);
        }
        seen.get(id).filter(|state| wanted(state)).cloned()
    })
}

const FOREVER: &str =
    "trap 'exit 0' TERM; echo cookie=$LATHE_COOKIE; while true; do sleep 0.05; done";

#[test]
fn a_request_runs_the_command_with_its_environment_and_a_release_kills_it() {
    let rm = ResourceManagerDouble::start();
    let mut yarn = backend(&rm);
    let mut seen = BTreeMap::new();
    let id = yarn.request(&launch("yarn-1", FOREVER)).unwrap();
    wait_for(&mut yarn, &mut seen, &id, "running", |s| {
        *s == ContainerState::Running
    });
    let app = rm.app(id.as_str()).unwrap();
    assert_eq!(app.name, "yarn-1");
    assert_eq!(app.application_type, APPLICATION_TYPE);
    assert_eq!(app.queue, "default");
    assert_eq!(app.user, "lathe");
    assert_eq!((app.memory_mb, app.vcores, app.max_attempts), (256, 1, 1));
    assert_eq!(
        app.env.get("LATHE_COOKIE").map(String::as_str),
        Some("s3cret")
    );
    assert!(!app.command.contains("s3cret"), "{}", app.command);
    wait_until("the container's output", DEADLINE, || {
        rm.container_output(id.as_str()).contains("cookie=s3cret")
    });
    // Nothing changed: nothing to report.
    assert!(yarn.poll().unwrap().is_empty());

    yarn.release(&id).unwrap();
    let end = wait_for(
        &mut yarn,
        &mut seen,
        &id,
        "killed",
        ContainerState::is_terminal,
    );
    assert_eq!(end.name(), "killed", "{end:?}");
    assert_eq!(rm.app(id.as_str()).unwrap().state, "KILLED");
    assert!(matches!(
        yarn.release(&id),
        Err(ResourceError::UnknownContainer(_))
    ));
    assert!(yarn.poll().unwrap().is_empty(), "forgotten once ended");
}

#[test]
fn requests_wait_accepted_while_the_cluster_is_full() {
    let rm = ResourceManagerDouble::start();
    rm.set_capacity(Some(1));
    let mut yarn = backend(&rm);
    let mut seen = BTreeMap::new();
    let first = yarn.request(&launch("yarn-1", FOREVER)).unwrap();
    let second = yarn.request(&launch("yarn-2", FOREVER)).unwrap();
    wait_for(&mut yarn, &mut seen, &first, "the first running", |s| {
        *s == ContainerState::Running
    });
    assert_eq!(seen.get(&second), Some(&ContainerState::Requested));
    assert_eq!(rm.app(second.as_str()).unwrap().state, "ACCEPTED");
    // The first container dies: its room goes to the second.
    assert!(rm.fail_container(first.as_str()));
    let end = wait_for(
        &mut yarn,
        &mut seen,
        &first,
        "the first failed",
        ContainerState::is_terminal,
    );
    let ContainerState::Failed { diagnostics } = end else {
        panic!("{end:?}")
    };
    assert!(diagnostics.contains("exitCode: 137"), "{diagnostics}");
    wait_for(&mut yarn, &mut seen, &second, "the second running", |s| {
        *s == ContainerState::Running
    });
}

#[test]
fn exits_finish_or_fail_with_the_containers_last_words() {
    let rm = ResourceManagerDouble::start();
    let mut yarn = backend(&rm);
    let mut seen = BTreeMap::new();
    let fine = yarn.request(&launch("yarn-1", "exit 0")).unwrap();
    let broken = yarn
        .request(&launch(
            "yarn-2",
            "echo 'lathe-node: --join: refused' >&2; exit 2",
        ))
        .unwrap();
    let stopped = yarn.request(&launch("yarn-3", FOREVER)).unwrap();
    let end = wait_for(
        &mut yarn,
        &mut seen,
        &fine,
        "finished",
        ContainerState::is_terminal,
    );
    assert_eq!(end.name(), "finished", "{end:?}");
    let end = wait_for(
        &mut yarn,
        &mut seen,
        &broken,
        "failed",
        ContainerState::is_terminal,
    );
    let diagnostics = end.diagnostics().unwrap_or_default();
    assert_eq!(end.name(), "failed");
    assert!(diagnostics.contains("exitCode: 2"), "{diagnostics}");
    assert!(diagnostics.contains("--join: refused"), "{diagnostics}");
    // SIGTERM: the node drains and exits 0.
    wait_for(&mut yarn, &mut seen, &stopped, "running", |s| {
        *s == ContainerState::Running
    });
    assert!(rm.stop_container(stopped.as_str()));
    let end = wait_for(
        &mut yarn,
        &mut seen,
        &stopped,
        "finished",
        ContainerState::is_terminal,
    );
    assert_eq!(end.name(), "finished", "{end:?}");
}

#[test]
fn an_unknown_queue_a_lost_application_and_a_kill_by_someone_else_are_reported() {
    let rm = ResourceManagerDouble::start();
    let mut config = YarnConfig::new(rm.url());
    config.queue = "nowhere".into();
    let mut misrouted = YarnBackend::new(config);
    let mut seen = BTreeMap::new();
    let id = misrouted.request(&launch("yarn-1", FOREVER)).unwrap();
    let end = wait_for(
        &mut misrouted,
        &mut seen,
        &id,
        "failed",
        ContainerState::is_terminal,
    );
    assert_eq!(end.name(), "failed");
    assert!(
        end.diagnostics()
            .unwrap()
            .contains("unknown queue: nowhere"),
        "{end:?}"
    );

    let mut yarn = backend(&rm);
    let lost = yarn.request(&launch("yarn-2", FOREVER)).unwrap();
    let killed = yarn.request(&launch("yarn-3", FOREVER)).unwrap();
    for id in [&lost, &killed] {
        wait_for(&mut yarn, &mut seen, id, "running", |s| {
            *s == ContainerState::Running
        });
    }
    rm.forget(lost.as_str());
    let end = wait_for(
        &mut yarn,
        &mut seen,
        &lost,
        "lost",
        ContainerState::is_terminal,
    );
    assert_eq!(end.name(), "failed");
    assert!(
        end.diagnostics().unwrap().contains("does not know"),
        "{end:?}"
    );
    assert!(matches!(rm.kill_through_api(killed.as_str()), 200 | 202));
    let end = wait_for(
        &mut yarn,
        &mut seen,
        &killed,
        "killed",
        ContainerState::is_terminal,
    );
    assert_eq!(end.name(), "killed", "{end:?}");
}

#[test]
fn an_unavailable_or_unreachable_rm_and_an_oversized_container_are_errors() {
    let rm = ResourceManagerDouble::start();
    let mut yarn = backend(&rm);
    let id = yarn.request(&launch("yarn-1", FOREVER)).unwrap();
    rm.set_unavailable(true);
    match yarn.poll() {
        Err(ResourceError::Refused {
            status, exception, ..
        }) => {
            assert_eq!(
                (status, exception.as_str()),
                (503, "ServiceUnavailableException")
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(yarn.request(&launch("yarn-2", FOREVER)).is_err());
    rm.set_unavailable(false);
    let mut seen = BTreeMap::new();
    wait_for(&mut yarn, &mut seen, &id, "running again", |s| {
        *s == ContainerState::Running
    });

    let mut config = YarnConfig::new(rm.url());
    config.memory_mb = 1 << 20;
    let mut huge = YarnBackend::new(config);
    assert!(matches!(
        huge.request(&launch("yarn-3", FOREVER)),
        Err(ResourceError::Launch { .. })
    ));

    let nowhere = format!("http://127.0.0.1:{}", lathe_tests::node::free_port());
    let mut gone = YarnBackend::new(YarnConfig::new(nowhere));
    assert!(matches!(
        gone.request(&launch("yarn-4", FOREVER)),
        Err(ResourceError::Unreachable { .. })
    ));
}

#[test]
fn a_new_backend_adopts_the_containers_of_an_old_one() {
    let rm = ResourceManagerDouble::start();
    let mut old = backend(&rm);
    let id = old.request(&launch("yarn-1", FOREVER)).unwrap();
    drop(old);
    let mut new = backend(&rm);
    new.adopt(&id).unwrap();
    let mut seen = BTreeMap::new();
    wait_for(&mut new, &mut seen, &id, "running", |s| {
        *s == ContainerState::Running
    });
    rm.fail_container(id.as_str());
    let end = wait_for(
        &mut new,
        &mut seen,
        &id,
        "failed",
        ContainerState::is_terminal,
    );
    assert_eq!(end.name(), "failed");
}

#[test]
fn the_client_reports_remote_exceptions() {
    let rm = ResourceManagerDouble::start();
    let client = YarnClient::new(&rm.url(), None, Duration::from_secs(5));
    assert_eq!(client.application("application_1_9999").unwrap(), None);
    match client.state("application_1_9999") {
        Err(ResourceError::Refused {
            status, exception, ..
        }) => assert_eq!((status, exception.as_str()), (404, "NotFoundException")),
        other => panic!("{other:?}"),
    }
    let context = |id: &str, command: &str, memory: u64| SubmissionContext {
        application_id: id.to_string(),
        application_name: "x".into(),
        queue: "default".into(),
        application_type: APPLICATION_TYPE.into(),
        am_container_spec: ContainerLaunchContext {
            commands: Commands {
                command: command.into(),
            },
            environment: Entries { entry: Vec::new() },
        },
        resource: Resource { memory, vcores: 1 },
        max_app_attempts: 1,
        unmanaged_am: false,
        keep_containers_across_application_attempts: false,
    };
    // An id the RM never handed out.
    let refused = client.submit(&context("application_1_0042", "true", 128));
    assert!(
        matches!(&refused, Err(ResourceError::Refused { status: 400, exception, .. })
            if exception == "BadRequestException"),
        "{refused:?}"
    );
    let id = client.new_application().unwrap().application_id;
    let refused = client.submit(&context(&id, "", 128));
    assert!(
        matches!(refused, Err(ResourceError::Refused { status: 400, .. })),
        "{refused:?}"
    );
    let refused = client.submit(&context(&id, "true", 1 << 20));
    assert!(
        matches!(&refused, Err(ResourceError::Refused { status: 400, exception, .. })
            if exception == "InvalidResourceRequestException"),
        "{refused:?}"
    );
    client.submit(&context(&id, "sleep 30", 128)).unwrap();
    // Submitting again is idempotent.
    client.submit(&context(&id, "sleep 30", 128)).unwrap();
    assert_eq!(rm.apps().len(), 1);
    wait_until("running", DEADLINE, || {
        client.state(&id).unwrap() == AppState::Running
    });
    let live = client
        .applications(&[APPLICATION_TYPE], &AppState::LIVE)
        .unwrap();
    assert_eq!(live.len(), 1);
    assert!(client
        .applications(&["MAPREDUCE"], &AppState::LIVE)
        .unwrap()
        .is_empty());
    // Only KILLED is a state one may ask for.
    let url = format!("{}/ws/v1/cluster/apps/{id}/state", rm.url());
    match ureq::put(&url).send_json(serde_json::json!({"state": "RUNNING"})) {
        Err(ureq::Error::Status(400, response)) => {
            let body: serde_json::Value = response.into_json().unwrap();
            assert_eq!(
                body["RemoteException"]["javaClassName"],
                "org.apache.hadoop.yarn.webapp.BadRequestException"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(client.kill(&id).unwrap(), AppState::Running);
    wait_until("killed", DEADLINE, || {
        client.state(&id).unwrap() == AppState::Killed
    });
    assert_eq!(client.kill(&id).unwrap(), AppState::Killed);
}
