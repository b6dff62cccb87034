//! `RegistryWatcher`: the agent's one stream to the registry, for the common prefix of all watches.
//!
//! ```text
//! Connect ─► session task (SSE or blocking queries) to registry[cursor], from the last index
//!              │ Event ─► route to the watch actors, remember the index
//!              └ Ended ─► next node (failed, stalled, closed) and resume from the last index;
//!                         auto mode: a node that answers but cannot stream (or three streams
//!                         in a row that deliver nothing) → blocking queries for a minute
//! Resync (gossip: a peer saw newer changes) ─► drop the session, next node, resume now
//! ```
//!
//! Sessions run as tasks and report by message, so the mailbox never waits on the network. Each
//! session has a generation; messages of an older one are ignored.

use std::time::{Duration, Instant};

use lathe::KeyPath;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::RactorMessage;
use tokio::task::JoinHandle;

use super::route::{dispatch, Route};
use super::session::{self, Session, SessionEnd, Transport};
use super::sse::StreamEvent;
use crate::config::{Addr, StreamMode, Window};
use crate::status::{Board, Metrics};

/// How long `auto` mode polls after a node could not stream, before trying SSE again.
const POLL_BEFORE_SSE_AGAIN: Duration = Duration::from_secs(60);
/// `auto` mode: SSE sessions in a row that end without an event before polling instead.
const BROKEN_STREAMS_BEFORE_POLLING: usize = 3;
/// A session that lived this long counts as a success: the next failure retries at once.
const HEALTHY_SESSION: Duration = Duration::from_secs(5);

#[derive(RactorMessage)]
pub enum WatcherMsg {
    Connect {
        generation: u64,
    },
    Event {
        generation: u64,
        event: StreamEvent,
    },
    Ended {
        generation: u64,
        end: SessionEnd,
    },
    /// Drop the current session and resume from another node now (`from_start`: from index 0,
    /// e.g. for a restarted watch actor that lost its state).
    Resync {
        reason: String,
        from_start: bool,
    },
    /// A watch actor was restarted: send its events to the new one.
    Reroute(Route),
}

pub struct RegistryWatcher;

pub struct WatcherArgs {
    pub registry: Vec<Addr>,
    pub prefix: KeyPath,
    pub routes: Vec<Route>,
    pub mode: StreamMode,
    pub stall_timeout: Duration,
    pub poll_wait: Duration,
    pub retry: Window,
    pub board: Board,
    pub metrics: Metrics,
    /// Sent with every request (the ACL token).
    pub headers: reqwest::header::HeaderMap,
}

pub struct WatcherState {
    args: WatcherArgs,
    http: reqwest::Client,
    cursor: usize,
    index: u64,
    generation: u64,
    task: Option<JoinHandle<()>>,
    transport: Transport,
    poll_until: Option<Instant>,
    session_started: Instant,
    session_events: u64,
    failures_in_row: usize,
    /// SSE sessions in a row that ended without delivering anything.
    broken_streams: usize,
    backoff: Duration,
}

impl Actor for RegistryWatcher {
    type Msg = WatcherMsg;
    type State = WatcherState;
    type Arguments = WatcherArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<WatcherMsg>,
        args: WatcherArgs,
    ) -> Result<WatcherState, ActorProcessingErr> {
        let http = crate::tls::client_builder()
            .default_headers(args.headers.clone())
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .build()?;
        let transport = match args.mode {
            StreamMode::Poll => Transport::Poll,
            StreamMode::Auto | StreamMode::Sse => Transport::Sse,
        };
        let state = WatcherState {
            index: args.board.stream_index(),
            backoff: args.retry.min,
            args,
            http,
            cursor: 0,
            generation: 0,
            task: None,
            transport,
            poll_until: None,
            session_started: Instant::now(),
            session_events: 0,
            failures_in_row: 0,
            broken_streams: 0,
        };
        myself.cast(WatcherMsg::Connect { generation: 0 })?;
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<WatcherMsg>,
        state: &mut WatcherState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(task) = state.task.take() {
            task.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<WatcherMsg>,
        message: WatcherMsg,
        state: &mut WatcherState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            WatcherMsg::Connect { generation } if generation == state.generation => {
                state.connect(&myself)
            }
            WatcherMsg::Connect { .. } => {}
            WatcherMsg::Event { generation, event } if generation == state.generation => {
                state.on_event(event)
            }
            WatcherMsg::Event { .. } => {}
            WatcherMsg::Ended { generation, end } if generation == state.generation => {
                state.on_end(&myself, end)
            }
            WatcherMsg::Ended { .. } => {}
            WatcherMsg::Resync { reason, from_start } => {
                tracing::info!(%reason, from_start, "re-syncing from another registry node");
                state.args.metrics.reconnect("resync");
                if from_start {
                    state.index = 0;
                }
                state.advance_cursor();
                state.failures_in_row = 0;
                state.connect(&myself);
            }
            WatcherMsg::Reroute(route) => {
                for existing in state.args.routes.iter_mut() {
                    if existing.name == route.name {
                        *existing = route.clone();
                    }
                }
            }
        }
        Ok(())
    }
}

impl WatcherState {
    fn advance_cursor(&mut self) {
        self.cursor = (self.cursor + 1) % self.args.registry.len();
    }

    /// Starts a session (a new generation) to the current node from the last index.
    fn connect(&mut self, myself: &ActorRef<WatcherMsg>) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        if self.poll_until.is_some_and(|until| Instant::now() >= until) {
            self.poll_until = None;
            self.transport = Transport::Sse;
        }
        self.generation += 1;
        let generation = self.generation;
        let session = Session {
            addr: self.args.registry[self.cursor].clone(),
            prefix: self.args.prefix.clone(),
            from: self.index,
            transport: self.transport,
            stall_timeout: self.args.stall_timeout,
            poll_wait: self.args.poll_wait,
        };
        tracing::debug!(addr = %session.addr, from = session.from,
            transport = session.transport.as_str(), "registry session");
        self.args
            .board
            .set_registry(&session.addr.0, session.transport.as_str(), false);
        self.session_started = Instant::now();
        self.session_events = 0;
        let (http, metrics, actor) = (self.http.clone(), self.args.metrics.clone(), myself.clone());
        self.task = Some(tokio::spawn(async move {
            let emit = |event| actor.cast(WatcherMsg::Event { generation, event }).is_ok();
            let end = session::run(&http, &metrics, session, emit).await;
            let _ = actor.cast(WatcherMsg::Ended { generation, end });
        }));
    }

    fn on_event(&mut self, event: StreamEvent) {
        self.session_events += 1;
        self.broken_streams = 0;
        self.failures_in_row = 0;
        self.backoff = self.args.retry.min;
        self.index = self.index.max(event.index());
        self.args.metrics.stream_event();
        self.args.metrics.stream_index(self.index);
        self.args.board.set_connected(self.index);
        dispatch(&self.args.routes, &event);
    }

    fn on_end(&mut self, myself: &ActorRef<WatcherMsg>, end: SessionEnd) {
        let addr = self.args.registry[self.cursor].clone();
        self.task = None;
        let (reason, detail) = match &end {
            SessionEnd::Stopped => return,
            SessionEnd::Unreachable(e) => ("unreachable", e.clone()),
            SessionEnd::BadStream(e) => ("bad_stream", e.clone()),
            SessionEnd::Stalled => ("stalled", "no data within the stall timeout".to_string()),
            SessionEnd::Closed(e) => ("closed", e.clone()),
        };
        tracing::warn!(%addr, reason, %detail, index = self.index, "registry session ended");
        self.args.metrics.reconnect(reason);
        self.args
            .board
            .set_error(&format!("{addr}: {reason}: {detail}"));
        let healthy = self.session_events > 0 || self.session_started.elapsed() >= HEALTHY_SESSION;
        let cannot_stream = match &end {
            SessionEnd::BadStream(_) => true,
            SessionEnd::Closed(_) | SessionEnd::Stalled if self.session_events == 0 => {
                self.broken_streams += 1;
                self.broken_streams >= BROKEN_STREAMS_BEFORE_POLLING
            }
            _ => false,
        };
        if cannot_stream && self.args.mode == StreamMode::Auto && self.transport == Transport::Sse {
            // The node answers but cannot stream (e.g. a proxy in between that buffers or cuts
            // long responses): poll instead for a while.
            tracing::warn!(%addr, "streams do not work: polling with blocking queries for a while");
            self.broken_streams = 0;
            self.transport = Transport::Poll;
            self.poll_until = Some(Instant::now() + POLL_BEFORE_SSE_AGAIN);
            let _ = myself.cast(WatcherMsg::Connect {
                generation: self.generation,
            });
            return;
        }
        self.advance_cursor();
        let delay = if healthy {
            self.failures_in_row = 0;
            Duration::ZERO
        } else {
            self.failures_in_row += 1;
            if self.failures_in_row >= self.args.registry.len() {
                let delay = self.backoff;
                self.backoff = (self.backoff * 2).min(self.args.retry.max);
                delay
            } else {
                Duration::ZERO
            }
        };
        let generation = self.generation;
        myself.send_after(delay, move || WatcherMsg::Connect { generation });
    }
}
