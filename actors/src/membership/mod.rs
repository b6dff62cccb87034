//! Cluster membership for `lathe-node`: who is in the cluster, and whether each node is alive.
//!
//! ```text
//! Membership                 member table, timers, refusals, leave
//! ├── NodeServer             ractor_cluster transport (cookie, transitive connects)
//! ├── MembershipPeer         remotely advertised, pg group `lathe.membership`
//! └── (tasks)                ZooKeeper member node + watch, connect attempts
//! ```
//!
//! ractor_cluster is only the transport. Membership adds: seeds joined with back-off and
//! reconnects every second (`connect.rs`); heartbeats to every remote member of the process group
//! and a status per peer from their age (`table.rs`: alive → suspect → dead, back alive only with
//! a newer incarnation); refusal detection for wrong cookies (`sessions.rs`); an ephemeral
//! ZooKeeper member node and a watch on the others (`zookeeper.rs`); a graceful leave.
//!
//! Callers use [`MembershipHandle`], started by [`start_membership`].

mod actor;
mod config;
mod connect;
mod events;
mod handle;
mod leave;
mod metrics;
mod peer;
mod sessions;
mod state;
mod table;
mod tls_listener;
mod types;
mod zookeeper;

#[cfg(test)]
mod actor_tests;
#[cfg(test)]
mod connect_tests;
#[cfg(test)]
mod sessions_tests;
#[cfg(test)]
mod table_tests;

use std::sync::{Arc, Mutex};

use anyhow::Context;
use ractor::{Actor, ActorCell};
use ractor_cluster::node::NodeConnectionMode;
use ractor_cluster::{IncomingEncryptionMode, NodeServer};
use tokio::sync::watch;

pub use config::{
    ClusterTls, MembershipConfig, DEFAULT_DEAD_AFTER, DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_SUSPECT_AFTER,
};
pub use handle::MembershipHandle;
pub use peer::{node_group, MEMBERS_GROUP};
pub use types::{
    JoinState, MemberInfo, MemberStatus, MemberView, PeerMessage, Refusal, SessionDirection,
};
pub use zookeeper::MEMBERS_PATH;

use actor::{kill_tree, Membership, MembershipArgs};
use handle::Shared;
use metrics::MembershipMetrics;

/// Starts membership: binds the cluster listener on `config.cluster_addr`, joins the seeds, and
/// (with `config.zookeeper`) registers this node in ZooKeeper. The membership actor is linked to
/// `supervisor` when one is given.
pub async fn start_membership(
    config: MembershipConfig,
    metrics: prometheus::Registry,
    supervisor: Option<ActorCell>,
) -> anyhow::Result<MembershipHandle> {
    config.validate().context("invalid membership config")?;
    let metrics = MembershipMetrics::register(&metrics)?;
    // With TLS, this node accepts on the cluster address itself (`tls_listener.rs`) and the
    // NodeServer's listener is a decoy on a loopback port.
    let (port, listen_ip, encryption, tls_listener) = match &config.tls {
        Some(tls) => {
            let listener = tokio::net::TcpListener::bind(config.cluster_addr)
                .await
                .with_context(|| {
                    format!(
                        "failed to listen for cluster peers on {}",
                        config.cluster_addr
                    )
                })?;
            let decoy = IncomingEncryptionMode::Tls(tls.acceptor.clone());
            let loopback = std::net::IpAddr::from(std::net::Ipv4Addr::LOCALHOST);
            (
                0,
                loopback,
                Some(decoy),
                Some((listener, tls.acceptor.clone())),
            )
        }
        None => (
            config.cluster_addr.port(),
            config.cluster_addr.ip(),
            None,
            None,
        ),
    };
    let server = NodeServer::new(
        port,
        config.cookie.clone(),
        config.name.clone(),
        config.advertised_host(),
        encryption,
        Some(NodeConnectionMode::Transitive),
    )
    .with_listen_addr(listen_ip);
    let (node_server, _) = Actor::spawn(None, server, ()).await.map_err(|err| {
        anyhow::anyhow!(
            "failed to listen for cluster peers on {}: {err}",
            config.cluster_addr
        )
    })?;
    if let Some((listener, acceptor)) = tls_listener {
        tls_listener::spawn_accept_loop(
            listener,
            acceptor,
            config.handshake_timeout,
            node_server.clone(),
            metrics.handshake_timeouts.clone(),
        );
    }

    let shared = Arc::new(Shared {
        fence: watch::channel(None).0,
        refusals: Mutex::new(Vec::new()),
    });
    let initial_join = if config.join.is_empty() {
        JoinState::Founding
    } else {
        JoinState::Joining
    };
    let (join_tx, join_rx) = watch::channel(initial_join);
    let (members_tx, members_rx) = watch::channel(Vec::new());
    let name = config.name.clone();
    let args = MembershipArgs {
        config,
        node_server: node_server.clone(),
        shared: shared.clone(),
        published: members_tx,
        join: join_tx,
        metrics,
    };
    let spawned = match supervisor {
        Some(supervisor) => Actor::spawn_linked(None, Membership, args, supervisor).await,
        None => Actor::spawn(None, Membership, args).await,
    };
    let actor = match spawned {
        Ok((actor, _)) => actor,
        Err(err) => {
            kill_tree(node_server.get_cell()).await;
            anyhow::bail!("failed to start membership: {err}");
        }
    };
    Ok(MembershipHandle {
        name,
        actor,
        node_server,
        members: members_rx,
        join: join_rx,
        shared,
    })
}
