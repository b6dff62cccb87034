//! The plain [`Task`]: a unit of user code with a lifecycle, run by Lathe as an actor.
//!
//! A plain task's methods run on a thread of their own, not on the async workers: a task may block,
//! loop, sleep or start threads (the micro-framework promise). `run` is called once after `start`;
//! a long-running task loops until [`TaskContext::is_stopping`] and then returns. Returning an
//! error (or panicking) counts as a crash: the node's task supervisor restarts the instance under
//! the group's restart policy.

use crate::context::TaskContext;

/// What a task's lifecycle methods return; an error is a crash, reported with its message.
pub type TaskResult = Result<(), TaskError>;

/// A task failure, with the message that ends up in `/v1/tasks` and the logs.
pub type TaskError = Box<dyn std::error::Error + Send + Sync>;

/// User code with a lifecycle. See the module documentation.
pub trait Task: Send + 'static {
    /// Called once before `run`; an error fails the start.
    fn start(&mut self, _ctx: &TaskContext) -> TaskResult {
        Ok(())
    }

    /// The task's work. May block; should return once `ctx.is_stopping()`.
    fn run(&mut self, ctx: &TaskContext) -> TaskResult;

    /// Called once when the instance stops (not after a crash).
    fn stop(&mut self, _ctx: &TaskContext) {}
}
