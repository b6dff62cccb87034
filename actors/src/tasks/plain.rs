//! A plain `Task` on a thread of its own: `start`, then `run` until it returns, then `stop` — off
//! the async workers, so the task may block. What happens is reported to its `TaskActor`.

use std::panic::{catch_unwind, AssertUnwindSafe};

use lathe::{Task, TaskContext};
use ractor::ActorRef;

use super::http_server::panic_message;
use super::instance::{Serving, StartError, TaskActorMsg};

/// Starts the thread; an error means no thread could be created.
pub(crate) fn spawn_plain(
    mut task: Box<dyn Task>,
    ctx: TaskContext,
    actor: ActorRef<TaskActorMsg>,
) -> std::io::Result<()> {
    let identity = ctx.identity();
    let name = format!("task-{}-{}", identity.group, identity.index);
    std::thread::Builder::new().name(name).spawn(move || {
        let report = |message: TaskActorMsg| {
            let _ = actor.cast(message);
        };
        match catch_unwind(AssertUnwindSafe(|| task.start(&ctx))) {
            Ok(Ok(())) => report(TaskActorMsg::Started(Ok(Serving::Plain))),
            Ok(Err(error)) => return report(TaskActorMsg::Started(Err(StartError::Failed(error)))),
            Err(panic) => {
                return report(TaskActorMsg::Started(Err(StartError::Panicked(
                    panic_message(&*panic),
                ))))
            }
        }
        let crash = match catch_unwind(AssertUnwindSafe(|| task.run(&ctx))) {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(format!("run failed: {error}")),
            Err(panic) => Some(format!("run panicked: {}", panic_message(&*panic))),
        };
        if let Some(reason) = crash {
            // `stop` is not called after a crash.
            return report(TaskActorMsg::Crashed(reason));
        }
        let asked_to_stop = ctx.is_stopping();
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| task.stop(&ctx))) {
            tracing::warn!(group = %ctx.identity().group, index = ctx.identity().index,
                panic = %panic_message(&*panic), "task panicked in stop");
        }
        report(if asked_to_stop {
            TaskActorMsg::Drained
        } else {
            TaskActorMsg::Finished
        });
    })?;
    Ok(())
}
