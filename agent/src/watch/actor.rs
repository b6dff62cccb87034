//! `WatchActor`: one per `[[watch]]`.
//!
//! ```text
//! Snapshot / Change ─► Subtree (content changed?) ─► Debounce ─► Fire ─► run job:
//!     every action in order on one View ─► Finished ─► status board, metrics;
//!     a failed action ─► Retry after a back-off; a change during the run ─► run again
//! ```
//!
//! Runs are jobs that own the actions while they run and hand them back with `Finished`, so the
//! mailbox keeps taking changes (and never two runs overlap).

use std::time::{Duration, Instant};

use lathe::{Change, Entry, KeyPath};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::RactorMessage;

use super::{Debounce, Subtree};
use crate::actions::{Action, Outcome};
use crate::config::Window;
use crate::status::{now_ms, ActionStatus, Board, Metrics};

#[derive(RactorMessage)]
pub enum WatchMsg {
    Snapshot {
        index: u64,
        entries: Vec<Entry>,
    },
    Change(Change),
    Fire {
        generation: u64,
    },
    Retry {
        generation: u64,
    },
    Finished {
        actions: Vec<Action>,
        outcomes: Vec<RunOutcome>,
    },
}

/// What one action did in a run (`None`: already applied at this index, nothing done).
pub struct RunOutcome {
    index: u64,
    outcome: Option<Outcome>,
    seconds: f64,
}

pub struct WatchActor;

pub struct WatchArgs {
    pub name: String,
    pub prefix: KeyPath,
    pub wait: Window,
    pub retry: Window,
    pub actions: Vec<Action>,
    pub board: Board,
    pub metrics: Metrics,
}

pub struct WatchState {
    name: String,
    subtree: Subtree,
    debounce: Debounce,
    /// `None` while a run holds them.
    actions: Option<Vec<Action>>,
    run_again: bool,
    retry: Window,
    retry_delay: Duration,
    retry_generation: u64,
    board: Board,
    metrics: Metrics,
}

impl Actor for WatchActor {
    type Msg = WatchMsg;
    type State = WatchState;
    type Arguments = WatchArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<WatchMsg>,
        args: WatchArgs,
    ) -> Result<WatchState, ActorProcessingErr> {
        args.board.add_watch(&args.name, args.prefix.as_str());
        Ok(WatchState {
            subtree: Subtree::new(args.prefix),
            debounce: Debounce::new(args.wait),
            actions: Some(args.actions),
            run_again: false,
            retry_delay: args.retry.min,
            retry: args.retry,
            retry_generation: 0,
            name: args.name,
            board: args.board,
            metrics: args.metrics,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<WatchMsg>,
        message: WatchMsg,
        state: &mut WatchState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            WatchMsg::Snapshot { index, entries } => {
                let changed = state.subtree.apply_snapshot(index, entries);
                state.after_event(&myself, changed);
            }
            WatchMsg::Change(change) => {
                let changed = state.subtree.apply_change(change);
                state.after_event(&myself, changed);
            }
            WatchMsg::Fire { generation } => {
                if state.debounce.fire(generation) {
                    state.start_run(&myself);
                }
            }
            WatchMsg::Retry { generation } if generation == state.retry_generation => {
                state.start_run(&myself)
            }
            WatchMsg::Retry { .. } => {}
            WatchMsg::Finished { actions, outcomes } => state.finished(&myself, actions, outcomes),
        }
        Ok(())
    }
}

impl WatchState {
    fn after_event(&mut self, myself: &ActorRef<WatchMsg>, changed: bool) {
        let (index, version, keys) = (
            self.subtree.index(),
            self.subtree.version(),
            self.subtree.len(),
        );
        self.metrics.watch_index(&self.name, index);
        if changed {
            let (generation, delay) = self.debounce.changed(Instant::now());
            myself.send_after(delay, move || WatchMsg::Fire { generation });
        }
        let pending = self.debounce.is_pending() || self.actions.is_none();
        self.board.update_watch(&self.name, |w| {
            (w.index, w.version, w.keys, w.pending) = (index, version, keys, pending);
        });
    }

    fn start_run(&mut self, myself: &ActorRef<WatchMsg>) {
        let Some(mut actions) = self.actions.take() else {
            self.run_again = true;
            return;
        };
        self.run_again = false;
        self.retry_generation += 1;
        let view = self.subtree.view(&self.name);
        let actor = myself.clone();
        tokio::spawn(async move {
            let mut outcomes = Vec::with_capacity(actions.len());
            for action in actions.iter_mut() {
                let started = Instant::now();
                let outcome = action.run(&view).await;
                outcomes.push(RunOutcome {
                    index: view.index,
                    outcome,
                    seconds: started.elapsed().as_secs_f64(),
                });
            }
            let _ = actor.cast(WatchMsg::Finished { actions, outcomes });
        });
    }

    fn finished(
        &mut self,
        myself: &ActorRef<WatchMsg>,
        actions: Vec<Action>,
        outcomes: Vec<RunOutcome>,
    ) {
        let mut failed = false;
        for (action, run) in actions.iter().zip(outcomes) {
            let Some(outcome) = run.outcome else { continue };
            failed |= matches!(outcome, Outcome::Failed(_));
            self.metrics
                .action(&self.name, action.name(), outcome.result(), run.seconds);
            log_outcome(&self.name, action.name(), run.index, &outcome);
            let error = (!outcome.is_ok()).then(|| outcome.detail().to_string());
            self.board.set_action(
                &self.name,
                ActionStatus {
                    name: action.name().to_string(),
                    kind: action.kind().to_string(),
                    result: outcome.result().to_string(),
                    ok: outcome.is_ok(),
                    detail: outcome.detail().to_string(),
                    index: run.index,
                    at_ms: now_ms(),
                    applied_index: action.applied_index(),
                    last_error_at_ms: error.as_ref().map(|_| now_ms()),
                    last_error: error,
                },
            );
        }
        self.actions = Some(actions);
        if failed {
            let (generation, delay) = (self.retry_generation, self.retry_delay);
            self.retry_delay = (self.retry_delay * 2).min(self.retry.max);
            myself.send_after(delay, move || WatchMsg::Retry { generation });
        } else {
            self.retry_delay = self.retry.min;
        }
        if self.run_again {
            self.start_run(myself);
        }
        let pending = self.debounce.is_pending() || self.actions.is_none();
        self.board.update_watch(&self.name, |w| w.pending = pending);
    }
}

fn log_outcome(watch: &str, action: &str, index: u64, outcome: &Outcome) {
    let detail = outcome.detail();
    match outcome {
        Outcome::Applied(_) => tracing::info!(watch, action, index, detail, "applied"),
        Outcome::Unchanged(_) => tracing::debug!(watch, action, index, detail, "unchanged"),
        Outcome::Rejected(_) => {
            tracing::error!(
                watch,
                action,
                index,
                detail,
                "rejected: the old config stays live"
            )
        }
        Outcome::Failed(_) => tracing::warn!(watch, action, index, detail, "failed: will retry"),
    }
}
