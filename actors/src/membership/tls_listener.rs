//! The cluster port under TLS (`--cluster-tls-*`). ractor_cluster's own TLS listener does each
//! handshake inline in its accept loop — one client that connects and sends nothing stops it
//! accepting anyone — so with TLS this loop accepts on the cluster address instead: every
//! connection does its handshake (mutual TLS: the peer's certificate must chain to the cluster
//! CA) in its own task within the handshake timeout, and is then handed to the NodeServer as an
//! incoming TLS stream. The NodeServer's own listener is a decoy on a loopback port that nobody
//! is told about (it also requires the CA's certificates).

use std::time::Duration;

use ractor::{ActorRef, ActorStatus};
use ractor_cluster::{NetworkStream, NodeServerMessage};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// How often the loop checks that its NodeServer still runs.
const LIVENESS_CHECK: Duration = Duration::from_secs(1);

/// Accepts TLS peers on `listener` for `node_server` until the NodeServer stops.
pub(crate) fn spawn_accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    deadline: Duration,
    node_server: ActorRef<NodeServerMessage>,
    timeouts: prometheus::IntCounter,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut check = tokio::time::interval(LIVENESS_CHECK);
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = check.tick() => {
                    if node_server.get_status() > ActorStatus::Running {
                        return;
                    }
                    continue;
                }
            };
            let (stream, peer_addr) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "the cluster port cannot accept: pausing");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let Ok(local_addr) = stream.local_addr() else {
                continue;
            };
            let (acceptor, node_server, timeouts) =
                (acceptor.clone(), node_server.clone(), timeouts.clone());
            tokio::spawn(async move {
                let stream = match tokio::time::timeout(deadline, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        return tracing::warn!(%peer_addr, %error, "cluster TLS handshake refused")
                    }
                    Err(_) => {
                        timeouts.inc();
                        return tracing::warn!(%peer_addr, timeout = ?deadline,
                            "cluster TLS handshake timed out: closing");
                    }
                };
                let stream = NetworkStream::TlsServer {
                    peer_addr,
                    local_addr,
                    stream,
                };
                let _ = node_server.cast(NodeServerMessage::ConnectionOpened {
                    stream: Box::new(stream),
                    is_server: true,
                });
            });
        }
    })
}
