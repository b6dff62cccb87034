//! `MembershipConfig`: who this node is, whom it joins, and how fast it decides a peer is gone.

use std::net::SocketAddr;
use std::time::Duration;

/// Default period of heartbeats to every remote member.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(250);
/// Default silence after which a peer is `suspect`.
pub const DEFAULT_SUSPECT_AFTER: Duration = Duration::from_secs(1);
/// Default silence after which a peer is `dead`.
pub const DEFAULT_DEAD_AFTER: Duration = Duration::from_secs(3);
/// Default time a cluster connection has to authenticate (cookie challenge) before it is closed.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything membership needs to know about this node.
#[derive(Debug, Clone)]
pub struct MembershipConfig {
    /// The node's name (`--name`), unique in the cluster.
    pub name: String,
    /// The cluster listen address (`--bind`), with a concrete port.
    pub cluster_addr: SocketAddr,
    /// The REST address (`--http`), advertised to peers.
    pub http_addr: SocketAddr,
    /// Seeds to join, `HOST:PORT` each (`--join`).
    pub join: Vec<String>,
    /// The shared secret (`--cookie`).
    pub cookie: String,
    /// The node's tags (`--tag`).
    pub tags: Vec<String>,
    /// `HOST:PORT[,HOST:PORT...][/CHROOT]` (`--zookeeper`).
    pub zookeeper: Option<String>,
    /// `--zookeeper-auth`: the member node's session authenticates, and the znode is its own.
    pub zookeeper_auth: Option<lathe_store::zk::ZkAuth>,
    /// A cluster connection (either direction) that has not authenticated this long after it
    /// opened is closed (`--cluster-handshake-timeout`).
    pub handshake_timeout: Duration,
    /// Mutual TLS on the cluster transport (`--cluster-tls-*`); `None`: plain TCP.
    pub tls: Option<ClusterTls>,
    pub heartbeat_interval: Duration,
    pub suspect_after: Duration,
    pub dead_after: Duration,
    /// The task types this node can run, advertised to every peer.
    pub catalog: Vec<lathe::TaskType>,
    /// Whether this node holds the embedded registry (and so leads a cluster without ZooKeeper).
    pub holds_registry: bool,
    /// The most task instances the scheduler may place here (`--max-instances`), advertised to
    /// every peer; `None` = unlimited.
    pub max_instances: Option<u32>,
}

/// The cluster transport's TLS, both ends: peers' certificates must chain to the cluster CA.
/// A peer is addressed by IP: its certificate needs that IP among its subject alternative names.
#[derive(Clone)]
pub struct ClusterTls {
    pub(crate) acceptor: tokio_rustls::TlsAcceptor,
    pub(crate) connector: tokio_rustls::TlsConnector,
}

impl ClusterTls {
    pub fn new(
        server: std::sync::Arc<rustls::ServerConfig>,
        client: std::sync::Arc<rustls::ClientConfig>,
    ) -> Self {
        ClusterTls {
            acceptor: server.into(),
            connector: client.into(),
        }
    }
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterTls")
    }
}

impl MembershipConfig {
    /// A config with default timings, no seeds, no tags and no ZooKeeper.
    pub fn new(
        name: impl Into<String>,
        cluster_addr: SocketAddr,
        http_addr: SocketAddr,
        cookie: impl Into<String>,
    ) -> Self {
        MembershipConfig {
            name: name.into(),
            cluster_addr,
            http_addr,
            join: Vec::new(),
            cookie: cookie.into(),
            tags: Vec::new(),
            zookeeper: None,
            zookeeper_auth: None,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            tls: None,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            suspect_after: DEFAULT_SUSPECT_AFTER,
            dead_after: DEFAULT_DEAD_AFTER,
            catalog: Vec::new(),
            holds_registry: false,
            max_instances: None,
        }
    }

    /// Checks what cannot work, with a message naming the offending setting.
    pub fn validate(&self) -> anyhow::Result<()> {
        lathe::registry::check_node_name(&self.name).map_err(anyhow::Error::msg)?;
        if self.cluster_addr.port() == 0 {
            anyhow::bail!(
                "cluster address {} needs a concrete port",
                self.cluster_addr
            );
        }
        if self.handshake_timeout.is_zero() {
            anyhow::bail!("handshake timeout must be positive");
        }
        if self.heartbeat_interval.is_zero() {
            anyhow::bail!("heartbeat interval must be positive");
        }
        if self.suspect_after <= self.heartbeat_interval || self.dead_after <= self.suspect_after {
            anyhow::bail!(
                "timings must satisfy heartbeat interval ({:?}) < suspect after ({:?}) \
                 < dead after ({:?})",
                self.heartbeat_interval,
                self.suspect_after,
                self.dead_after
            );
        }
        if let Some(seed) = self.join.iter().find(|s| s.rsplit_once(':').is_none()) {
            anyhow::bail!("join address {seed:?} is not HOST:PORT");
        }
        Ok(())
    }

    /// The hostname ractor_cluster advertises: the bind IP (so peers' transitive connects reach
    /// it), or the machine's hostname when bound to the unspecified address.
    pub(crate) fn advertised_host(&self) -> String {
        let ip = self.cluster_addr.ip();
        if !ip.is_unspecified() {
            return ip.to_string();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_string())
    }

    /// Whether `addr` is this node's own cluster listener.
    pub(crate) fn is_own_address(&self, addr: &SocketAddr) -> bool {
        addr.port() == self.cluster_addr.port()
            && (addr.ip() == self.cluster_addr.ip()
                || (self.cluster_addr.ip().is_unspecified() && addr.ip().is_loopback()))
    }
}
