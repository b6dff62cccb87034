//! `TaskActor`: one task instance, linked to the node's `TaskSupervisor`.
//!
//! ```text
//! TaskActor      start job → serving → (Stop) draining → stops itself ("stopped")
//! ├── (http)     HttpServer on <node ip>:0 — an HttpTask's requests
//! └── (thread)   a plain Task's start / run / stop
//! ```
//!
//! Starting (metadata load, bind, `start`) and draining run as jobs that report back by message.
//! A failed start or a crashed `run` fails the actor, and its supervisor decides about a restart.
//! The actor publishes its endpoint once it serves and withdraws it before it drains.

use std::net::IpAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use lathe::catalog::{TaskDescriptor, TaskFactory};
use lathe::layout::Assignment;
use lathe::{Endpoint, HttpTask, LookupError, TaskContext, TaskError, TaskIdentity};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::RactorMessage;

use super::changelog::{restore_before_start, RestoreError, RestoreProgress};
use super::http_server::{panic_message, HttpInstance, HttpServer};
use super::mirror::AbortOnDrop;
use super::plain::spawn_plain;
use super::runtime::{InstanceRuntime, NodeServices, StopOnDrop};
use super::supervisor::TaskSupervisorMsg;

/// How long an instance waits for its group's metadata before its start fails.
const METADATA_LOAD_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an HTTP instance keeps serving after withdrawing its endpoint, so that load balancers
/// elsewhere hear of it before its port closes: the registry's fan-out takes milliseconds, but an
/// external agent debounces (200 ms by default) and then reconfigures HAProxy or Varnish.
const DISCOVERY_GRACE: Duration = Duration::from_secs(1);
/// How long open HTTP requests may take once an instance drains.
const HTTP_DRAIN: Duration = Duration::from_secs(2);
/// How long a plain task's `run` gets to return once asked to stop.
const PLAIN_DRAIN: Duration = Duration::from_secs(3);

/// The exit reason of an instance that drained after `Stop`.
pub(crate) const STOPPED: &str = "stopped";
/// The exit reason of a plain task whose `run` returned without being asked to stop.
pub(crate) const FINISHED: &str = "finished";

pub(crate) struct TaskActor;

pub(crate) struct TaskActorArgs {
    pub(crate) assignment: Assignment,
    pub(crate) descriptor: TaskDescriptor,
    pub(crate) services: Arc<NodeServices>,
    pub(crate) supervisor: ActorRef<TaskSupervisorMsg>,
    pub(crate) incarnation: u64,
}

/// Why an instance did not start: what its actor stops with, and the supervisor reports.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    /// The task metadata of the group did not load in time.
    #[error("start failed: {0}")]
    Metadata(#[source] LookupError),
    #[error(transparent)]
    Restore(#[from] RestoreError),
    /// The task's `start` returned an error.
    #[error("start failed: {0}")]
    Failed(#[source] TaskError),
    /// The task's `start` panicked; the panic's message.
    #[error("start panicked: {0}")]
    Panicked(String),
    /// A plain task's thread could not be spawned.
    #[error("cannot start a thread for the task: {0}")]
    Thread(#[source] std::io::Error),
    /// An HTTP task's port could not be bound.
    #[error("cannot listen on {ip}:0: {source}")]
    Listen {
        ip: IpAddr,
        #[source]
        source: std::io::Error,
    },
    /// An HTTP task's server could not start on its bound port.
    #[error("cannot serve the task: {0}")]
    Serve(#[source] std::io::Error),
}

/// What a started instance is.
pub(crate) enum Serving {
    Http {
        server: HttpServer,
        task: Arc<dyn HttpTask>,
    },
    Plain,
}

#[derive(RactorMessage)]
pub(crate) enum TaskActorMsg {
    /// The start job ended: serving, or why not.
    Started(Result<Serving, StartError>),
    /// A plain task's `run` failed or panicked.
    Crashed(String),
    /// A plain task's `run` returned by itself.
    Finished,
    /// Stop gracefully: withdraw the endpoint, stop taking requests, drain, `stop()`.
    Stop,
    /// The drain ended.
    Drained,
    DrainDeadline,
}

enum Phase {
    Starting,
    Serving(Serving),
    Draining,
}

pub(crate) struct TaskActorState {
    args: TaskActorArgs,
    ctx: TaskContext,
    stopping: StopOnDrop,
    phase: Phase,
    stop_requested: bool,
    _start_job: AbortOnDrop,
}

impl Actor for TaskActor {
    type Msg = TaskActorMsg;
    type State = TaskActorState;
    type Arguments = TaskActorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<TaskActorMsg>,
        args: TaskActorArgs,
    ) -> Result<TaskActorState, ActorProcessingErr> {
        let assignment = &args.assignment;
        let metadata = args.services.metadata.group(&assignment.group)?;
        let stopping = Arc::new(AtomicBool::new(false));
        let identity = TaskIdentity {
            group: assignment.group.clone(),
            index: assignment.index,
            node: args.services.node.clone(),
            task_type: assignment.task_type.clone(),
        };
        let runtime = InstanceRuntime {
            metadata: metadata.clone(),
            services: args.services.clone(),
            stopping: stopping.clone(),
            instance: (assignment.group.clone(), assignment.index),
        };
        let ctx = TaskContext::new(identity, Arc::new(runtime));
        let job = {
            let (ctx, services, actor) = (ctx.clone(), args.services.clone(), myself.clone());
            let factory = args.descriptor.factory.clone();
            let progress = restore_progress(&args);
            let (group, index) = (assignment.group.clone(), assignment.index);
            tokio::spawn(async move {
                let loaded = match metadata.wait_loaded(METADATA_LOAD_TIMEOUT).await {
                    Err(error) => Err(StartError::Metadata(error)),
                    Ok(()) => restore_before_start(&services, &group, index, progress)
                        .await
                        .map_err(StartError::from),
                };
                let started = match loaded {
                    Err(error) => Err(error),
                    Ok(()) => match factory {
                        TaskFactory::Http(make) => start_http(make(), ctx, &services).await,
                        TaskFactory::Plain(make) => match spawn_plain(make(), ctx, actor.clone()) {
                            // The thread reports `Started` itself.
                            Ok(()) => return,
                            Err(error) => Err(StartError::Thread(error)),
                        },
                    },
                };
                let _ = actor.cast(TaskActorMsg::Started(started));
            })
        };
        tracing::info!(group = %assignment.group, index = assignment.index,
            task = %assignment.task_type, "task instance starting");
        Ok(TaskActorState {
            args,
            ctx,
            stopping: StopOnDrop(stopping),
            phase: Phase::Starting,
            stop_requested: false,
            _start_job: AbortOnDrop(job),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<TaskActorMsg>,
        message: TaskActorMsg,
        state: &mut TaskActorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            TaskActorMsg::Started(Ok(serving)) => {
                if state.stop_requested {
                    state.phase = Phase::Serving(serving);
                    state.drain(&myself);
                } else {
                    state.serve(serving);
                }
            }
            TaskActorMsg::Started(Err(reason)) if state.stop_requested => {
                tracing::info!(%reason, "task instance stopped before it started");
                myself.stop(Some(STOPPED.into()));
            }
            TaskActorMsg::Started(Err(reason)) => return Err(reason.into()),
            TaskActorMsg::Crashed(reason) if state.stop_requested => {
                tracing::warn!(%reason, "task instance crashed while stopping");
                myself.stop(Some(STOPPED.into()));
            }
            TaskActorMsg::Crashed(reason) => return Err(reason.into()),
            TaskActorMsg::Finished => {
                state.withdraw_endpoint();
                myself.stop(Some(FINISHED.into()));
            }
            TaskActorMsg::Stop => {
                if !state.stop_requested {
                    state.stop_requested = true;
                    state
                        .stopping
                        .0
                        .store(true, std::sync::atomic::Ordering::Release);
                    if matches!(state.phase, Phase::Serving(_)) {
                        state.drain(&myself);
                    }
                    let deadline = DISCOVERY_GRACE + HTTP_DRAIN + PLAIN_DRAIN;
                    myself.send_after(deadline, || TaskActorMsg::DrainDeadline);
                }
            }
            TaskActorMsg::Drained => myself.stop(Some(STOPPED.into())),
            TaskActorMsg::DrainDeadline => {
                tracing::warn!(group = %state.args.assignment.group,
                    index = state.args.assignment.index, "task instance did not stop in time: \
                        leaving it behind");
                myself.stop(Some(STOPPED.into()));
            }
        }
        Ok(())
    }
}

impl TaskActorState {
    fn endpoint(&self, http: Option<String>) -> Endpoint {
        let assignment = &self.args.assignment;
        Endpoint {
            group: assignment.group.clone(),
            index: assignment.index,
            node: self.args.services.node.clone(),
            http,
            version: assignment.task_type.version.clone(),
        }
    }

    /// The instance serves: publish its endpoint and tell the supervisor.
    fn serve(&mut self, serving: Serving) {
        let http = match &serving {
            Serving::Http { server, .. } => Some(format!(
                "{}:{}",
                self.args.services.advertised_host,
                server.addr().port()
            )),
            Serving::Plain => None,
        };
        let assignment = &self.args.assignment;
        tracing::info!(group = %assignment.group, index = assignment.index, endpoint = ?http,
            "task instance running");
        self.args
            .services
            .status
            .endpoint(&self.endpoint(http.clone()));
        let _ = self.args.supervisor.cast(TaskSupervisorMsg::Running {
            group: assignment.group.clone(),
            index: assignment.index,
            incarnation: self.args.incarnation,
            endpoint: http,
        });
        self.phase = Phase::Serving(serving);
    }

    fn withdraw_endpoint(&self) {
        let assignment = &self.args.assignment;
        self.args
            .services
            .status
            .forget_endpoint(&assignment.group, assignment.index);
    }

    /// Withdraws the endpoint first (so discovery moves away), then drains in a job.
    fn drain(&mut self, myself: &ActorRef<TaskActorMsg>) {
        self.withdraw_endpoint();
        if let Phase::Serving(Serving::Http { server, task }) =
            std::mem::replace(&mut self.phase, Phase::Draining)
        {
            let (ctx, actor) = (self.ctx.clone(), myself.clone());
            tokio::spawn(async move {
                tokio::time::sleep(DISCOVERY_GRACE).await;
                server.drain(HTTP_DRAIN).await;
                if let Err(panic) = std::panic::AssertUnwindSafe(task.stop(&ctx))
                    .catch_unwind()
                    .await
                {
                    tracing::warn!(panic = %panic_message(&*panic), "task panicked in stop");
                }
                let _ = actor.cast(TaskActorMsg::Drained);
            });
        }
        // A plain task's thread reports `Drained` once `run` returned and `stop` ran.
    }
}

/// Reports restore progress to the supervisor (the instance's record says how far it got).
fn restore_progress(args: &TaskActorArgs) -> RestoreProgress {
    let supervisor = args.supervisor.clone();
    let (group, index) = (args.assignment.group.clone(), args.assignment.index);
    let incarnation = args.incarnation;
    Arc::new(move |records| {
        let _ = supervisor.cast(TaskSupervisorMsg::Progress {
            group: group.clone(),
            index,
            incarnation,
            note: format!("restoring state from the changelog: {records} records read"),
        });
    })
}

/// Binds the instance's port, runs `start`, and starts serving.
async fn start_http(
    task: Box<dyn HttpTask>,
    ctx: TaskContext,
    services: &NodeServices,
) -> Result<Serving, StartError> {
    let task: Arc<dyn HttpTask> = Arc::from(task);
    let listener = tokio::net::TcpListener::bind((services.http_ip, 0))
        .await
        .map_err(|source| StartError::Listen {
            ip: services.http_ip,
            source,
        })?;
    match std::panic::AssertUnwindSafe(task.start(&ctx))
        .catch_unwind()
        .await
    {
        Ok(Ok(())) => {}
        Ok(Err(error)) => return Err(StartError::Failed(error)),
        Err(panic) => return Err(StartError::Panicked(panic_message(&*panic))),
    }
    let identity = ctx.identity().clone();
    let instance = Arc::new(HttpInstance::new(
        task.clone(),
        ctx,
        services.metrics.clone(),
        services.http_limits.max_body_bytes,
    ));
    let local = services
        .local
        .register(&identity.group, identity.index, instance.clone());
    let server = HttpServer::start(listener, instance, Some(local), services.http_limits)
        .map_err(StartError::Serve)?;
    Ok(Serving::Http { server, task })
}
