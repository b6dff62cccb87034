//! `lathe-agent`: external machines (load balancers, caches, anything configured from files)
//! follow the cluster's registry. One stream per agent, whatever the number of watches; actions
//! per watched subtree (templates, HAProxy, Varnish); gossip among agents so one that is cut off
//! knows it is behind.
//!
//! ```text
//! registry nodes ──(one SSE stream, or blocking queries; fail-over, resume from index)──┐
//!                                                                                      ▼
//! AgentSupervisor ─ RegistryWatcher ─ routes ─► WatchActor × n ─► actions (template, haproxy, varnish)
//!                 └ Gossip ◄──── POST /v1/gossip from peers ──── status server (/status, /metrics)
//! ```
//!
//! # Layout
//! - [`config`]: the TOML file, validated before anything starts.
//! - [`registry`]: sessions with registry nodes (SSE, polling) and the `RegistryWatcher` actor.
//! - [`watch`]: a watch's subtree state, debounce and `WatchActor`.
//! - [`actions`]: templates (minijinja), HAProxy (runtime API, reloads), Varnish (varnishadm).
//! - [`gossip`]: digests among agents; being behind.
//! - [`register`]: tells the cluster where the status endpoint answers (Prometheus finds it).
//! - [`status`]: the status board, metrics and the HTTP endpoint.
//! - [`supervisor`]: the root actor.

pub mod actions;
pub mod config;
pub mod gossip;
pub mod register;
pub mod registry;
pub mod status;
pub mod supervisor;
pub mod tls;
pub mod watch;

use std::future::Future;

use anyhow::Context;
use ractor::Actor;

use crate::config::AgentConfig;
use crate::gossip::Heard;
use crate::status::{Board, Metrics};
use crate::supervisor::{AgentSupervisor, SupervisorArgs};

/// Runs the agent until `shutdown` completes (or its supervisor gives up: then `Err`).
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let name = config.agent_name();
    let board = Board::new(&name);
    let metrics = Metrics::new();
    let heard = Heard::watching(
        config
            .watches
            .iter()
            .map(|watch| watch.prefix.0.as_str().to_string()),
    );
    let listen = config.status.listen.0.clone();
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (status.listen)"))?;
    let bound = listener.local_addr().ok();
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(status::server::serve(
        listener,
        board.clone(),
        metrics.clone(),
        heard.clone(),
        async move {
            let _ = server_stopped.await;
        },
    ));
    tracing::info!(agent = %name, status = %listen, registry = ?config.registry,
        watches = config.watches.len(), "lathe-agent starting");
    let (stop_register, register_stopped) = tokio::sync::oneshot::channel::<()>();
    let registration = match bound.and_then(register::advertised) {
        Some(addr) => Some(tokio::spawn(register::run(
            name.clone(),
            addr,
            config.registry.clone(),
            config.registry_headers(),
            async move {
                let _ = register_stopped.await;
            },
        ))),
        None => {
            tracing::info!(status = %listen, "not registering with the cluster: the status \
                endpoint has no address others can reach (Prometheus will not find this agent)");
            None
        }
    };
    let args = SupervisorArgs {
        config,
        board,
        metrics,
        heard,
    };
    let (supervisor, mut handle) = Actor::spawn(None, AgentSupervisor, args)
        .await
        .context("cannot start the agent")?;
    let outcome = tokio::select! {
        () = shutdown => {
            tracing::info!("shutting down");
            supervisor.stop(None);
            let _ = handle.await;
            Ok(())
        }
        result = &mut handle => match result {
            Ok(()) => Err(anyhow::anyhow!("the agent's supervisor stopped")),
            Err(e) => Err(anyhow::anyhow!("the agent's supervisor failed: {e}")),
        },
    };
    let _ = stop_register.send(());
    if let Some(registration) = registration {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), registration).await;
    }
    let _ = stop_server.send(());
    let _ = server.await;
    outcome
}
