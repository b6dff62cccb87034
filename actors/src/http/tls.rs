//! TLS on the REST port (`--tls-cert`, `--tls-key`, `--tls-client-ca`): each accepted connection
//! does its handshake in its own task, within a deadline (a client that opens a connection and
//! sends nothing, or trickles its hello, is closed), and every handshake is counted in
//! `lathe_api_tls_handshakes_total{result="ok"|"failed"|"timeout"}`. With a client CA the
//! rustls configuration requires a client certificate chaining to it (mutual TLS).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus::{IntCounterVec, Opts, Registry};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// The REST port's TLS: a server configuration and how long a handshake may take.
#[derive(Clone)]
pub struct RestTls {
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
    handshakes: Arc<OnceLock<IntCounterVec>>,
}

/// How a handshake ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Failed,
    Timeout,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::Timeout => "timeout",
        }
    }
}

impl RestTls {
    /// `config` from `lathe_tls::ServerTlsFiles::server_config`; a connection that has not
    /// completed its handshake `handshake_timeout` after it was accepted is closed.
    pub fn new(config: Arc<rustls::ServerConfig>, handshake_timeout: Duration) -> Self {
        RestTls {
            acceptor: TlsAcceptor::from(config),
            handshake_timeout,
            handshakes: Arc::default(),
        }
    }

    /// Registers `lathe_api_tls_handshakes_total` in `registry` (a warning if it has it).
    pub(crate) fn register(&self, registry: &Registry) {
        let handshakes = IntCounterVec::new(
            Opts::new(
                "lathe_api_tls_handshakes_total",
                "TLS handshakes on the REST port, by result (ok, failed, timeout)",
            ),
            &["result"],
        )
        .expect("a valid metric definition");
        for outcome in [Outcome::Ok, Outcome::Failed, Outcome::Timeout] {
            handshakes.with_label_values(&[outcome.label()]);
        }
        if let Err(error) = registry.register(Box::new(handshakes.clone())) {
            tracing::warn!(%error, "lathe_api_tls_handshakes_total not registered");
        }
        let _ = self.handshakes.set(handshakes);
    }

    /// The handshake of one accepted connection; `None` (and the connection dropped) when it
    /// fails or takes too long.
    pub(crate) async fn accept(&self, stream: TcpStream) -> Option<TlsStream<TcpStream>> {
        let peer = stream.peer_addr().ok();
        let (outcome, stream) = match tokio::time::timeout(
            self.handshake_timeout,
            self.acceptor.accept(stream),
        )
        .await
        {
            Ok(Ok(stream)) => (Outcome::Ok, Some(stream)),
            Ok(Err(error)) => {
                tracing::debug!(?peer, %error, "REST TLS handshake failed");
                (Outcome::Failed, None)
            }
            Err(_) => {
                tracing::debug!(?peer, timeout = ?self.handshake_timeout,
                    "REST TLS handshake timed out");
                (Outcome::Timeout, None)
            }
        };
        if let Some(handshakes) = self.handshakes.get() {
            handshakes.with_label_values(&[outcome.label()]).inc();
        }
        stream
    }
}
