//! `lathe-node`'s flags (CONTRACT.md), each also read from `LATHE_<FLAG>`, validated into a
//! [`NodeConfig`] before any port is bound. A bad flag is one line naming it, and exit code 2.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::Parser;
use lathe_actors::http::{
    DEFAULT_HEADER_TIMEOUT, DEFAULT_MAX_BLOCKING_QUERIES, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_KEYS, DEFAULT_MAX_REGISTRY_BYTES, DEFAULT_MAX_WATCHERS,
};
use lathe_actors::membership::DEFAULT_HANDSHAKE_TIMEOUT;
use lathe_actors::tasks::DEFAULT_TASK_MAX_CONNECTIONS;
use lathe_actors::tasks::{DEFAULT_TASK_HEADER_TIMEOUT, DEFAULT_TASK_MAX_BODY_BYTES};
use lathe_store::zk::ZK_DEFAULT_MAX_PACKET;
use lathe_store::DEFAULT_MAX_VALUE_BYTES;

/// The default shared secret, for one-machine clusters; real clusters pass their own.
pub(crate) const DEFAULT_COOKIE: &str = "lathe-local-cookie";
/// The most `--workers`: far more threads than any machine has cores only adds switching.
pub(crate) const MAX_WORKERS: usize = 1024;
/// The most any REST cap (connections, watchers, blocking queries) may be set to.
const MAX_CAP: usize = 1_000_000;
/// The most `--task-max-body-bytes` may be (1 GiB): each request is buffered whole.
const MAX_TASK_BODY_BYTES: usize = 1024 * 1024 * 1024;
/// `--yarn-max-containers` when not given.
pub(crate) const DEFAULT_YARN_MAX_CONTAINERS: usize = 8;
/// `--yarn-container-max-instances` when neither it nor `--max-instances` is given.
pub(crate) const DEFAULT_CONTAINER_MAX_INSTANCES: u32 = 4;

#[derive(Debug, Parser)]
#[command(name = "lathe-node", version, about = "One member of a Lathe cluster")]
pub(crate) struct Args {
    /// This node's name (segments of [A-Za-z0-9._-]); default: HOST-PORT of --bind
    #[arg(long, env = "LATHE_NAME")]
    name: Option<String>,
    /// Cluster (actor transport) listen address; port 0 picks a free one
    #[arg(long, env = "LATHE_BIND", default_value = "127.0.0.1:0")]
    bind: String,
    /// REST, metrics and dashboard address; port 0 picks a free one
    #[arg(long, env = "LATHE_HTTP", default_value = "127.0.0.1:7500")]
    http: String,
    /// The cluster address of any live node to join; without it this node founds a cluster
    #[arg(long, env = "LATHE_JOIN", value_delimiter = ',')]
    join: Vec<String>,
    /// ZooKeeper ensemble HOST:PORT[,HOST:PORT...][/CHROOT]; without it the registry is embedded
    #[arg(long, env = "LATHE_ZOOKEEPER")]
    zookeeper: Option<String>,
    /// USER:PASSWORD: every ZooKeeper session authenticates with the digest scheme, and every
    /// znode this node creates is readable and writable by that identity only
    #[arg(
        long,
        env = "LATHE_ZOOKEEPER_AUTH",
        hide_env_values = true,
        value_name = "USER:PASSWORD"
    )]
    zookeeper_auth: Option<String>,
    /// Kafka brokers HOST:PORT[,HOST:PORT...]: flows travel over Kafka topics (checked at start:
    /// unreachable brokers are an error)
    #[arg(long, env = "LATHE_KAFKA")]
    kafka: Option<String>,
    /// A librdkafka property KEY=VALUE for every Kafka client (repeat for several), e.g.
    /// session.timeout.ms=6000 or message.timeout.ms=10000 (how long emit waits)
    #[arg(
        long = "kafka-option",
        env = "LATHE_KAFKA_OPTION",
        value_delimiter = ';'
    )]
    kafka_options: Vec<String>,
    /// Where this node keeps its state (the embedded registry store among it)
    #[arg(long, env = "LATHE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// A tag for the scheduler (repeat for several)
    #[arg(long = "tag", env = "LATHE_TAG", value_delimiter = ',')]
    tags: Vec<String>,
    /// A topology file to deploy once the cluster is up
    #[arg(long, env = "LATHE_TOPOLOGY")]
    topology: Option<PathBuf>,
    /// Shared secret: nodes with another cookie are refused
    #[arg(long, env = "LATHE_COOKIE", default_value = DEFAULT_COOKIE, hide_default_value = true)]
    cookie: String,
    /// Registry shards (slices of the key space) on this node
    #[arg(long, env = "LATHE_REGISTRY_SHARDS", default_value_t = 4)]
    registry_shards: usize,
    /// The largest registry value accepted, in bytes
    #[arg(long, env = "LATHE_MAX_VALUE_BYTES", default_value_t = DEFAULT_MAX_VALUE_BYTES)]
    max_value_bytes: usize,
    /// The ZooKeeper ensemble's jute.maxbuffer, in bytes: writes whose request would be larger
    /// are refused (413) before they are sent, as ZooKeeper drops the connection of a client
    /// sending one
    #[arg(long, env = "LATHE_ZOOKEEPER_MAX_REQUEST_BYTES", default_value_t = ZK_DEFAULT_MAX_PACKET)]
    zookeeper_max_request_bytes: usize,
    /// Seconds a REST connection may take to send a complete request head, when new or idle
    /// between requests, before it is closed
    #[arg(
        long,
        env = "LATHE_HTTP_HEADER_TIMEOUT",
        default_value_t = DEFAULT_HEADER_TIMEOUT.as_secs()
    )]
    http_header_timeout: u64,
    /// The most REST connections open at once; past it a connection gets 503 and Retry-After
    #[arg(long, env = "LATHE_HTTP_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    http_max_connections: usize,
    /// Host names browsers may address REST and the dashboard by, besides IP addresses and
    /// localhost (others get 403: a guard against DNS rebinding)
    #[arg(long, env = "LATHE_HTTP_ALLOWED_HOSTS", value_delimiter = ',')]
    http_allowed_hosts: Vec<String>,
    /// The most /v1/watch streams open at once on this node (503 and Retry-After past it)
    #[arg(long, env = "LATHE_MAX_WATCHERS", default_value_t = DEFAULT_MAX_WATCHERS)]
    max_watchers: usize,
    /// The most blocking queries (?index=) waiting at once on this node (503 and Retry-After
    /// past it)
    #[arg(long, env = "LATHE_MAX_BLOCKING_QUERIES", default_value_t = DEFAULT_MAX_BLOCKING_QUERIES)]
    max_blocking_queries: usize,
    /// Registry quota: the most keys a REST write may bring the registry to (507 past it)
    #[arg(long, env = "LATHE_MAX_KEYS", default_value_t = DEFAULT_MAX_KEYS)]
    max_keys: usize,
    /// Registry quota: the most bytes of values a REST write may bring the registry to (507
    /// past it, 413 for a value larger than the whole quota)
    #[arg(long, env = "LATHE_MAX_REGISTRY_BYTES", default_value_t = DEFAULT_MAX_REGISTRY_BYTES)]
    max_registry_bytes: usize,
    /// Seconds a cluster connection (in or out) may take to authenticate (the cookie
    /// challenge) before it is closed
    #[arg(
        long,
        env = "LATHE_CLUSTER_HANDSHAKE_TIMEOUT",
        default_value_t = DEFAULT_HANDSHAKE_TIMEOUT.as_secs()
    )]
    cluster_handshake_timeout: u64,
    /// Seconds a connection to a task instance may take to send a complete request head, when
    /// new or idle between requests, before it is closed
    #[arg(
        long,
        env = "LATHE_TASK_HTTP_HEADER_TIMEOUT",
        default_value_t = DEFAULT_TASK_HEADER_TIMEOUT.as_secs()
    )]
    task_http_header_timeout: u64,
    /// The largest request body a task instance's HTTP server reads, in bytes (413 above)
    #[arg(long, env = "LATHE_TASK_MAX_BODY_BYTES", default_value_t = DEFAULT_TASK_MAX_BODY_BYTES)]
    task_max_body_bytes: usize,
    /// The most connections open at once to one HTTP task instance; past it a connection gets
    /// 503 and is closed
    #[arg(
        long,
        env = "LATHE_TASK_HTTP_MAX_CONNECTIONS",
        default_value_t = DEFAULT_TASK_MAX_CONNECTIONS
    )]
    task_http_max_connections: usize,
    /// Accept failure drills: POST /v1/actors/kill kills any actor of this node as if it crashed
    #[arg(long, env = "LATHE_ENABLE_CHAOS")]
    enable_chaos: bool,
    /// Access control: every REST route but /v1/health, /metrics, /ui and POST /v1/acl/bootstrap
    /// needs a token (Authorization: Bearer or X-Lathe-Token) whose policies allow it
    #[arg(long, env = "LATHE_ACL")]
    acl: bool,
    /// A Prometheus that scrapes the nodes (http://HOST:PORT): roll-out and shift metric gates
    /// read response counters from it with PromQL instead of from every node's /metrics
    #[arg(long, env = "LATHE_PROMETHEUS_URL")]
    prometheus_url: Option<String>,
    /// Forward requests to instances on this node over the network too, instead of calling them
    /// in-process (for comparisons)
    #[arg(long, env = "LATHE_NO_LOCAL_FORWARD")]
    no_local_forward: bool,
    /// Threads that run async work (REST, the cluster, HTTP tasks); blocking tasks get their own
    /// threads whatever this is [default: one per CPU]
    #[arg(long, env = "LATHE_WORKERS")]
    workers: Option<usize>,
    /// The most task instances the scheduler places on this node; default: no limit
    #[arg(long, env = "LATHE_MAX_INSTANCES")]
    max_instances: Option<u32>,
    /// A YARN ResourceManager (http://HOST:PORT): while this node leads, it asks YARN for more
    /// nodes when instances are pending for want of capacity, and replaces those that die
    #[arg(long, env = "LATHE_YARN_RM")]
    yarn_rm: Option<String>,
    /// The YARN queue node containers are submitted to [default: default]
    #[arg(long, env = "LATHE_YARN_QUEUE")]
    yarn_queue: Option<String>,
    /// The user YARN is told about (user.name) on clusters without security
    #[arg(long, env = "LATHE_YARN_USER")]
    yarn_user: Option<String>,
    /// The most node containers asked of YARN at once [default: 8]
    #[arg(long, env = "LATHE_YARN_MAX_CONTAINERS")]
    yarn_max_containers: Option<usize>,
    /// Memory of one node container, in MB [default: 1024]
    #[arg(long, env = "LATHE_YARN_CONTAINER_MEMORY")]
    yarn_container_memory: Option<u64>,
    /// Virtual cores of one node container [default: 1]
    #[arg(long, env = "LATHE_YARN_CONTAINER_VCORES")]
    yarn_container_vcores: Option<u64>,
    /// The --max-instances of each node container [default: --max-instances, else 4]
    #[arg(long, env = "LATHE_YARN_CONTAINER_MAX_INSTANCES")]
    yarn_container_max_instances: Option<u32>,
    /// The lathe-node binary a container runs, as YARN's machines see it [default: this binary]
    #[arg(long, env = "LATHE_YARN_NODE_BIN")]
    yarn_node_bin: Option<PathBuf>,
    /// PEM certificate chain of the REST port: with --tls-key, REST, metrics and the dashboard
    /// answer over HTTPS only
    #[arg(long, env = "LATHE_TLS_CERT", value_name = "PEM")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert
    #[arg(long, env = "LATHE_TLS_KEY", value_name = "PEM")]
    tls_key: Option<PathBuf>,
    /// PEM CA certificate(s): REST clients must present a certificate signed by it (mutual TLS)
    #[arg(long, env = "LATHE_TLS_CLIENT_CA", value_name = "PEM")]
    tls_client_ca: Option<PathBuf>,
    /// PEM certificate of this node on the cluster port: with --cluster-tls-key and
    /// --cluster-tls-ca, cluster sessions are mutual TLS (its SANs must hold the --bind IP)
    #[arg(long, env = "LATHE_CLUSTER_TLS_CERT", value_name = "PEM")]
    cluster_tls_cert: Option<PathBuf>,
    /// PEM private key of --cluster-tls-cert
    #[arg(long, env = "LATHE_CLUSTER_TLS_KEY", value_name = "PEM")]
    cluster_tls_key: Option<PathBuf>,
    /// PEM CA certificate every cluster peer's certificate must be signed by
    #[arg(long, env = "LATHE_CLUSTER_TLS_CA", value_name = "PEM")]
    cluster_tls_ca: Option<PathBuf>,
    /// Start even where the defaults are unsafe: REST on a non-loopback address without TLS or
    /// --acl, the cluster port on a non-loopback address, or the built-in cookie
    #[arg(long, env = "LATHE_INSECURE")]
    insecure: bool,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub(crate) struct NodeConfig {
    pub(crate) name: Option<String>,
    pub(crate) bind: SocketAddr,
    pub(crate) http: SocketAddr,
    pub(crate) join: Vec<String>,
    pub(crate) zookeeper: Option<String>,
    /// `--zookeeper-auth`.
    pub(crate) zookeeper_auth: Option<lathe_store::zk::ZkAuth>,
    pub(crate) data_dir: Option<PathBuf>,
    pub(crate) tags: Vec<String>,
    pub(crate) cookie: String,
    pub(crate) registry_shards: usize,
    pub(crate) max_value_bytes: usize,
    pub(crate) zookeeper_max_request_bytes: usize,
    pub(crate) http_header_timeout: Duration,
    pub(crate) http_max_connections: usize,
    /// `--http-allowed-hosts`.
    pub(crate) http_allowed_hosts: Vec<String>,
    pub(crate) max_watchers: usize,
    pub(crate) max_blocking_queries: usize,
    pub(crate) task_http_header_timeout: Duration,
    /// `--cluster-handshake-timeout`.
    pub(crate) cluster_handshake_timeout: Duration,
    pub(crate) max_keys: usize,
    pub(crate) max_registry_bytes: usize,
    pub(crate) task_max_body_bytes: usize,
    pub(crate) task_http_max_connections: usize,
    /// Whether failure drills (`POST /v1/actors/kill`) are accepted.
    pub(crate) enable_chaos: bool,
    /// `--acl`: default-deny REST access by token.
    pub(crate) acl: bool,
    /// `--prometheus-url`, without a trailing `/`: where metric gates read counters.
    pub(crate) prometheus_url: Option<String>,
    /// Whether `forward` calls instances of this node in-process (not `--no-local-forward`).
    pub(crate) local_forward: bool,
    /// A validated topology to deploy once the node serves: (file name, TOML).
    pub(crate) topology: Option<(String, String)>,
    /// `--max-instances`: `None` = unlimited.
    pub(crate) max_instances: Option<u32>,
    /// `--workers`: the async runtime's worker threads; `None` = one per CPU.
    pub(crate) workers: Option<usize>,
    /// The YARN backend of the resource manager (`--yarn-rm` and its companions).
    pub(crate) yarn: Option<YarnSettings>,
    /// `--kafka` and `--kafka-option`: flows over Kafka.
    pub(crate) kafka: Option<lathe_kafka::KafkaSettings>,
    /// `--tls-cert`, `--tls-key`, `--tls-client-ca`: the files, and the configuration read from
    /// them before any port is bound.
    pub(crate) rest_tls: Option<RestTlsSettings>,
    /// `--insecure`: passed on to YARN container nodes.
    pub(crate) insecure: bool,
    /// `--cluster-tls-cert`, `--cluster-tls-key`, `--cluster-tls-ca`, read and checked.
    pub(crate) cluster_tls: Option<ClusterTlsSettings>,
}

/// The cluster transport's TLS, read and checked.
#[derive(Debug, Clone)]
pub(crate) struct ClusterTlsSettings {
    pub(crate) files: lathe_tls::ClusterTlsFiles,
    pub(crate) tls: lathe_actors::membership::ClusterTls,
}

impl ClusterTlsSettings {
    /// The same flags for another node (a YARN container sees the same paths).
    pub(crate) fn as_args(&self) -> Vec<String> {
        vec![
            "--cluster-tls-cert".to_string(),
            self.files.identity.certificate.display().to_string(),
            "--cluster-tls-key".to_string(),
            self.files.identity.key.display().to_string(),
            "--cluster-tls-ca".to_string(),
            self.files.ca.display().to_string(),
        ]
    }
}

/// The REST port's TLS, read and checked.
#[derive(Debug, Clone)]
pub(crate) struct RestTlsSettings {
    pub(crate) files: lathe_tls::ServerTlsFiles,
    pub(crate) config: std::sync::Arc<lathe_tls::rustls::ServerConfig>,
}

impl RestTlsSettings {
    /// The same flags for another node (a YARN container sees the same paths).
    pub(crate) fn as_args(&self) -> Vec<String> {
        let mut args = vec![
            "--tls-cert".to_string(),
            self.files.identity.certificate.display().to_string(),
            "--tls-key".to_string(),
            self.files.identity.key.display().to_string(),
        ];
        if let Some(ca) = &self.files.client_ca {
            args.extend(["--tls-client-ca".to_string(), ca.display().to_string()]);
        }
        args
    }
}

/// `--yarn-*`, validated, defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct YarnSettings {
    pub(crate) rm_url: String,
    pub(crate) queue: String,
    pub(crate) user: Option<String>,
    pub(crate) max_containers: usize,
    pub(crate) container_memory_mb: u64,
    pub(crate) container_vcores: u64,
    pub(crate) container_max_instances: u32,
    pub(crate) node_bin: PathBuf,
}

impl YarnSettings {
    /// The same flags for a container node, so that it can manage YARN too once it leads.
    pub(crate) fn as_args(&self) -> Vec<String> {
        let mut args = vec![
            "--yarn-rm".to_string(),
            self.rm_url.clone(),
            "--yarn-queue".into(),
            self.queue.clone(),
            "--yarn-max-containers".into(),
            self.max_containers.to_string(),
            "--yarn-container-memory".into(),
            self.container_memory_mb.to_string(),
            "--yarn-container-vcores".into(),
            self.container_vcores.to_string(),
            "--yarn-container-max-instances".into(),
            self.container_max_instances.to_string(),
            "--yarn-node-bin".into(),
            self.node_bin.display().to_string(),
        ];
        if let Some(user) = &self.user {
            args.extend(["--yarn-user".to_string(), user.clone()]);
        }
        args
    }
}

/// A bad flag: which one, and why.
#[derive(Debug, thiserror::Error)]
#[error("{flag}: {reason}")]
pub(crate) struct FlagError {
    pub(crate) flag: &'static str,
    pub(crate) reason: String,
}

/// `reason` with its whole chain of causes (`{:#}`), on one line.
fn bad(flag: &'static str, reason: impl std::fmt::Display) -> FlagError {
    FlagError {
        flag,
        reason: format!("{reason:#}"),
    }
}

impl Args {
    pub(crate) fn validate(self) -> Result<NodeConfig, FlagError> {
        if let Some(name) = &self.name {
            lathe::registry::check_node_name(name).map_err(|r| bad("--name", r))?;
        }
        let bind = resolve(&self.bind).map_err(|r| bad("--bind", r))?;
        let http = resolve(&self.http).map_err(|r| bad("--http", r))?;
        for seed in &self.join {
            resolve(seed).map_err(|r| bad("--join", r))?;
        }
        if let Some(zk) = &self.zookeeper {
            check_zookeeper(zk).map_err(|r| bad("--zookeeper", r))?;
        }
        let zookeeper_auth = match (&self.zookeeper_auth, &self.zookeeper) {
            (Some(auth), Some(_)) => {
                Some(lathe_store::zk::ZkAuth::parse(auth).map_err(|r| bad("--zookeeper-auth", r))?)
            }
            (Some(_), None) => return Err(bad("--zookeeper-auth", "needs --zookeeper")),
            (None, _) => None,
        };
        let kafka = match &self.kafka {
            Some(brokers) => Some(
                lathe_kafka::KafkaSettings::parse(brokers, &[])
                    .map_err(|r| bad("--kafka", r))
                    .and_then(|_| {
                        lathe_kafka::KafkaSettings::parse(brokers, &self.kafka_options)
                            .map_err(|r| bad("--kafka-option", r))
                    })?,
            ),
            None if !self.kafka_options.is_empty() => {
                return Err(bad("--kafka-option", "needs --kafka"))
            }
            None => None,
        };
        let topology = match &self.topology {
            Some(path) => Some(read_topology(path).map_err(|r| bad("--topology", r))?),
            None => None,
        };
        for tag in &self.tags {
            check_segment(tag).map_err(|r| bad("--tag", r))?;
        }
        if self.cookie.is_empty() {
            return Err(bad("--cookie", "must not be empty"));
        }
        if self.registry_shards == 0 || self.registry_shards > 256 {
            return Err(bad("--registry-shards", "must be between 1 and 256"));
        }
        if self.max_value_bytes == 0 {
            return Err(bad("--max-value-bytes", "must be positive"));
        }
        if self.http_header_timeout == 0 || self.http_header_timeout > 3600 {
            return Err(bad(
                "--http-header-timeout",
                "must be between 1 and 3600 seconds",
            ));
        }
        if self.cluster_handshake_timeout == 0 || self.cluster_handshake_timeout > 3600 {
            return Err(bad(
                "--cluster-handshake-timeout",
                "must be between 1 and 3600 seconds",
            ));
        }
        if self.task_http_header_timeout == 0 || self.task_http_header_timeout > 3600 {
            return Err(bad(
                "--task-http-header-timeout",
                "must be between 1 and 3600 seconds",
            ));
        }
        if self.task_max_body_bytes == 0 || self.task_max_body_bytes > MAX_TASK_BODY_BYTES {
            return Err(bad(
                "--task-max-body-bytes",
                format!("must be between 1 and {MAX_TASK_BODY_BYTES}"),
            ));
        }
        if self.max_keys == 0 {
            return Err(bad("--max-keys", "must be positive"));
        }
        if self.max_registry_bytes < self.max_value_bytes {
            return Err(bad(
                "--max-registry-bytes",
                format!(
                    "must be at least --max-value-bytes ({})",
                    self.max_value_bytes
                ),
            ));
        }
        for (flag, value) in [
            ("--http-max-connections", self.http_max_connections),
            ("--max-watchers", self.max_watchers),
            ("--max-blocking-queries", self.max_blocking_queries),
            (
                "--task-http-max-connections",
                self.task_http_max_connections,
            ),
        ] {
            if value == 0 || value > MAX_CAP {
                return Err(bad(flag, format!("must be between 1 and {MAX_CAP}")));
            }
        }
        for host in &self.http_allowed_hosts {
            let name_like = !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
            if !name_like {
                return Err(bad(
                    "--http-allowed-hosts",
                    format!("{host:?} is not a host name (letters, digits, '.', '-', no port)"),
                ));
            }
        }
        if self.zookeeper_max_request_bytes < 4096 {
            return Err(bad(
                "--zookeeper-max-request-bytes",
                "must be at least 4096 (zookeeper's jute.maxbuffer, default 1048575)",
            ));
        }
        if let Some(workers) = self.workers {
            if workers == 0 || workers > MAX_WORKERS {
                return Err(bad(
                    "--workers",
                    format!("must be between 1 and {MAX_WORKERS}, got {workers}"),
                ));
            }
        }
        let prometheus_url = match &self.prometheus_url {
            Some(url) => Some(check_prometheus_url(url).map_err(|r| bad("--prometheus-url", r))?),
            None => None,
        };
        let yarn = self.yarn_settings()?;
        let rest_tls = self.rest_tls()?;
        let cluster_tls = self.cluster_tls()?;
        self.check_safe_defaults(bind, http, rest_tls.is_some(), cluster_tls.is_some())?;
        Ok(NodeConfig {
            name: self.name,
            bind,
            http,
            join: self.join,
            zookeeper: self.zookeeper,
            zookeeper_auth,
            data_dir: self.data_dir,
            tags: self.tags,
            cookie: self.cookie,
            registry_shards: self.registry_shards,
            max_value_bytes: self.max_value_bytes,
            zookeeper_max_request_bytes: self.zookeeper_max_request_bytes,
            http_header_timeout: Duration::from_secs(self.http_header_timeout),
            http_max_connections: self.http_max_connections,
            http_allowed_hosts: self.http_allowed_hosts,
            max_watchers: self.max_watchers,
            max_blocking_queries: self.max_blocking_queries,
            task_http_header_timeout: Duration::from_secs(self.task_http_header_timeout),
            cluster_handshake_timeout: Duration::from_secs(self.cluster_handshake_timeout),
            task_max_body_bytes: self.task_max_body_bytes,
            task_http_max_connections: self.task_http_max_connections,
            max_keys: self.max_keys,
            max_registry_bytes: self.max_registry_bytes,
            enable_chaos: self.enable_chaos,
            acl: self.acl,
            prometheus_url,
            local_forward: !self.no_local_forward,
            topology,
            max_instances: self.max_instances,
            workers: self.workers,
            yarn,
            kafka,
            rest_tls,
            insecure: self.insecure,
            cluster_tls,
        })
    }

    /// `--cluster-tls-cert`, `--cluster-tls-key` and `--cluster-tls-ca`: all three or none.
    fn cluster_tls(&self) -> Result<Option<ClusterTlsSettings>, FlagError> {
        let given = [
            ("--cluster-tls-cert", &self.cluster_tls_cert),
            ("--cluster-tls-key", &self.cluster_tls_key),
            ("--cluster-tls-ca", &self.cluster_tls_ca),
        ];
        let (Some(certificate), Some(key), Some(ca)) = (
            &self.cluster_tls_cert,
            &self.cluster_tls_key,
            &self.cluster_tls_ca,
        ) else {
            return match given.iter().find(|(_, path)| path.is_some()) {
                Some((flag, _)) => Err(bad(
                    flag,
                    "needs --cluster-tls-cert, --cluster-tls-key and --cluster-tls-ca together",
                )),
                None => Ok(None),
            };
        };
        let files = lathe_tls::ClusterTlsFiles {
            identity: lathe_tls::Identity {
                certificate: certificate.clone(),
                key: key.clone(),
            },
            ca: ca.clone(),
        };
        let flag = |error: &lathe_tls::TlsError| {
            let path = match error {
                lathe_tls::TlsError::Read { path, .. }
                | lathe_tls::TlsError::NoCertificate { path }
                | lathe_tls::TlsError::Invalid { path, .. } => path,
            };
            given
                .iter()
                .find(|(_, given)| given.as_ref() == Some(path))
                .map_or("--cluster-tls-cert", |(flag, _)| flag)
        };
        let server = files
            .server_config()
            .map_err(|e| bad(flag(&e), e.to_string()))?;
        let client = files
            .client_config()
            .map_err(|e| bad(flag(&e), e.to_string()))?;
        Ok(Some(ClusterTlsSettings {
            files,
            tls: lathe_actors::membership::ClusterTls::new(server, client),
        }))
    }

    /// `--tls-cert` and `--tls-key` (both or neither), `--tls-client-ca` (only with them): the
    /// files are read and checked now, so that a bad one is a flag error before any port is bound.
    fn rest_tls(&self) -> Result<Option<RestTlsSettings>, FlagError> {
        let (certificate, key) = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => (cert.clone(), key.clone()),
            (Some(_), None) => return Err(bad("--tls-cert", "needs --tls-key")),
            (None, Some(_)) => return Err(bad("--tls-key", "needs --tls-cert")),
            (None, None) if self.tls_client_ca.is_some() => {
                return Err(bad("--tls-client-ca", "needs --tls-cert and --tls-key"))
            }
            (None, None) => return Ok(None),
        };
        let files = lathe_tls::ServerTlsFiles {
            identity: lathe_tls::Identity { certificate, key },
            client_ca: self.tls_client_ca.clone(),
        };
        let flag = |error: &lathe_tls::TlsError| match error {
            lathe_tls::TlsError::Read { path, .. }
            | lathe_tls::TlsError::NoCertificate { path }
            | lathe_tls::TlsError::Invalid { path, .. } => {
                if Some(path) == self.tls_client_ca.as_ref() {
                    "--tls-client-ca"
                } else if Some(path) == self.tls_key.as_ref() {
                    "--tls-key"
                } else {
                    "--tls-cert"
                }
            }
        };
        let config = files
            .server_config()
            .map_err(|e| bad(flag(&e), e.to_string()))?;
        Ok(Some(RestTlsSettings { files, config }))
    }

    /// Refuses what would expose the node without `--insecure`: REST on a non-loopback address
    /// without TLS or `--acl`; the cluster port on a non-loopback address (its transport is not
    /// encrypted), or with the built-in cookie.
    fn check_safe_defaults(
        &self,
        bind: SocketAddr,
        http: SocketAddr,
        rest_tls: bool,
        cluster_tls: bool,
    ) -> Result<(), FlagError> {
        if self.insecure {
            return Ok(());
        }
        if !http.ip().is_loopback() && !rest_tls && !self.acl {
            return Err(bad(
                "--http",
                format!(
                    "{http} is not a loopback address and the REST API would answer anyone in \
                        plain HTTP: add --tls-cert/--tls-key or --acl, or --insecure"
                ),
            ));
        }
        if !bind.ip().is_loopback() && self.cookie == DEFAULT_COOKIE {
            return Err(bad(
                "--bind",
                format!(
                    "{bind} is not a loopback address and the cluster cookie is the built-in \
                        default: add --cookie SECRET, or --insecure"
                ),
            ));
        }
        if !bind.ip().is_loopback() && !cluster_tls {
            return Err(bad(
                "--bind",
                format!(
                    "{bind} is not a loopback address and the cluster transport would be plain \
                        TCP: add --cluster-tls-cert/--cluster-tls-key/--cluster-tls-ca, or \
                            --insecure"
                ),
            ));
        }
        Ok(())
    }

    /// `--yarn-rm` and its companions; the companions without `--yarn-rm` are a mistake.
    fn yarn_settings(&self) -> Result<Option<YarnSettings>, FlagError> {
        let Some(rm_url) = &self.yarn_rm else {
            let companions = [
                ("--yarn-queue", self.yarn_queue.is_some()),
                ("--yarn-user", self.yarn_user.is_some()),
                ("--yarn-max-containers", self.yarn_max_containers.is_some()),
                (
                    "--yarn-container-memory",
                    self.yarn_container_memory.is_some(),
                ),
                (
                    "--yarn-container-vcores",
                    self.yarn_container_vcores.is_some(),
                ),
                (
                    "--yarn-container-max-instances",
                    self.yarn_container_max_instances.is_some(),
                ),
                ("--yarn-node-bin", self.yarn_node_bin.is_some()),
            ];
            return match companions.iter().find(|(_, given)| *given) {
                Some((flag, _)) => Err(bad(flag, "needs --yarn-rm")),
                None => Ok(None),
            };
        };
        check_http_url(rm_url).map_err(|r| bad("--yarn-rm", r))?;
        let queue = self.yarn_queue.clone().unwrap_or_else(|| "default".into());
        if queue.trim().is_empty() {
            return Err(bad("--yarn-queue", "must not be empty"));
        }
        let positive = |flag: &'static str, value: Option<u64>, default: u64| match value {
            Some(0) => Err(bad(flag, "must be positive")),
            Some(value) => Ok(value),
            None => Ok(default),
        };
        let max_containers = positive(
            "--yarn-max-containers",
            self.yarn_max_containers.map(|n| n as u64),
            DEFAULT_YARN_MAX_CONTAINERS as u64,
        )? as usize;
        let container_memory_mb =
            positive("--yarn-container-memory", self.yarn_container_memory, 1024)?;
        let container_vcores = positive("--yarn-container-vcores", self.yarn_container_vcores, 1)?;
        let default_instances = self
            .max_instances
            .filter(|n| *n > 0)
            .unwrap_or(DEFAULT_CONTAINER_MAX_INSTANCES);
        let container_max_instances = positive(
            "--yarn-container-max-instances",
            self.yarn_container_max_instances.map(u64::from),
            u64::from(default_instances),
        )? as u32;
        let node_bin = match &self.yarn_node_bin {
            Some(path) => path.clone(),
            None => std::env::current_exe().map_err(|e| {
                bad(
                    "--yarn-node-bin",
                    format!("cannot tell this binary's path ({e}): give it"),
                )
            })?,
        };
        Ok(Some(YarnSettings {
            rm_url: rm_url.trim_end_matches('/').to_string(),
            queue,
            user: self.yarn_user.clone(),
            max_containers,
            container_memory_mb,
            container_vcores,
            container_max_instances,
            node_bin,
        }))
    }
}

/// `http://HOST:PORT[/]` (this build speaks plain HTTP to the ResourceManager).
fn check_http_url(url: &str) -> anyhow::Result<()> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("{url:?} is not http://HOST:PORT (https is not supported)"))?;
    let authority = rest.split('/').next().unwrap_or("");
    let (host, port) = authority
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("{url:?} has no port"))?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        bail!("{url:?} is not http://HOST:PORT");
    }
    Ok(())
}

/// Reads and validates a topology file: its errors carry file:line:column.
/// `--prometheus-url`: `http://HOST[:PORT][/PATH]`, returned without a trailing `/`.
fn check_prometheus_url(url: &str) -> anyhow::Result<String> {
    let Some(rest) = url.strip_prefix("http://") else {
        bail!("{url:?} must start with http:// (https is not supported)");
    };
    let host = rest.split('/').next().unwrap_or_default();
    let host_char = |c: char| c.is_ascii_alphanumeric() || ".-_:[]".contains(c);
    if host.is_empty() || !host.chars().all(host_char) {
        bail!("{url:?} names no host: use http://HOST:PORT");
    }
    if rest.contains(char::is_whitespace) {
        bail!("{url:?} is not a URL: it holds a space");
    }
    Ok(url.trim_end_matches('/').to_string())
}

fn read_topology(path: &std::path::Path) -> anyhow::Result<(String, String)> {
    let source =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file = path
        .file_name()
        .map(|name| name.to_string_lossy().to_string())
        .unwrap_or_else(|| path.display().to_string());
    lathe::topology::parse(&file, &source)?;
    Ok((file, source))
}

fn resolve(addr: &str) -> anyhow::Result<SocketAddr> {
    addr.to_socket_addrs()
        .map_err(|e| anyhow!("{addr:?} is not HOST:PORT ({e})"))?
        .next()
        .ok_or_else(|| anyhow!("{addr:?} resolves to no address"))
}

fn check_segment(value: &str) -> anyhow::Result<()> {
    if value.is_empty()
        || !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        bail!("{value:?} must be made of A-Z a-z 0-9 . _ -");
    }
    Ok(())
}

fn check_zookeeper(value: &str) -> anyhow::Result<()> {
    let (hosts, chroot) = match value.find('/') {
        Some(i) => value.split_at(i),
        None => (value, ""),
    };
    if !chroot.is_empty() {
        lathe::KeyPath::parse(chroot).with_context(|| format!("bad chroot {chroot:?}"))?;
    }
    for host in hosts.split(',') {
        let (name, port) = host
            .rsplit_once(':')
            .ok_or_else(|| anyhow!("{host:?} is not HOST:PORT"))?;
        if name.is_empty() || port.parse::<u16>().is_err() {
            bail!("{host:?} is not HOST:PORT");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<NodeConfig, String> {
        let mut argv = vec!["lathe-node"];
        argv.extend_from_slice(args);
        Args::try_parse_from(argv)
            .map_err(|e| e.to_string())?
            .validate()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn accepts_the_contract_flags() {
        let config = parse(&[
            "--name",
            "n1",
            "--bind",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--zookeeper",
            "127.0.0.1:2181,127.0.0.1:2182/lathe",
            "--join",
            "127.0.0.1:9000",
            "--tag",
            "lb",
            "--cookie",
            "s3cret",
        ])
        .unwrap();
        assert_eq!(config.name.as_deref(), Some("n1"));
        assert_eq!(config.tags, vec!["lb"]);
    }

    #[test]
    fn http_allowed_hosts() {
        assert!(parse(&[]).unwrap().http_allowed_hosts.is_empty());
        let config = parse(&["--http-allowed-hosts", "lathe.corp.example,node-1"]).unwrap();
        assert_eq!(config.http_allowed_hosts, ["lathe.corp.example", "node-1"]);
        let with_port = parse(&["--http-allowed-hosts", "lathe.example:7500"]).unwrap_err();
        assert_eq!(
            with_port,
            "--http-allowed-hosts: \"lathe.example:7500\" is not a host name (letters, digits, \
             '.', '-', no port)"
        );
    }

    #[test]
    fn workers() {
        assert_eq!(parse(&[]).unwrap().workers, None);
        assert_eq!(parse(&["--workers", "1"]).unwrap().workers, Some(1));
        let zero = parse(&["--workers", "0"]).unwrap_err();
        assert_eq!(zero, "--workers: must be between 1 and 1024, got 0");
        assert!(parse(&["--workers", "5000"])
            .unwrap_err()
            .starts_with("--workers: must be between 1 and 1024"));
        assert!(parse(&["--workers", "two"])
            .unwrap_err()
            .contains("--workers"));
    }

    #[test]
    fn capacity_and_yarn_flags() {
        let config = parse(&["--max-instances", "3"]).unwrap();
        assert_eq!((config.max_instances, config.yarn), (Some(3), None));
        let config = parse(&[
            "--max-instances",
            "2",
            "--yarn-rm",
            "http://127.0.0.1:8088/",
            "--yarn-queue",
            "lathe",
            "--yarn-node-bin",
            "/opt/lathe-node",
        ])
        .unwrap();
        let yarn = config.yarn.unwrap();
        assert_eq!(yarn.rm_url, "http://127.0.0.1:8088");
        assert_eq!(
            (
                yarn.queue.as_str(),
                yarn.max_containers,
                yarn.container_max_instances
            ),
            ("lathe", DEFAULT_YARN_MAX_CONTAINERS, 2)
        );
        assert_eq!(
            yarn.as_args().join(" "),
            "--yarn-rm http://127.0.0.1:8088 --yarn-queue lathe --yarn-max-containers 8 \
             --yarn-container-memory 1024 --yarn-container-vcores 1 \
             --yarn-container-max-instances 2 --yarn-node-bin /opt/lathe-node"
        );
        let plain = parse(&["--yarn-rm", "http://rm:8088"])
            .unwrap()
            .yarn
            .unwrap();
        assert_eq!(
            plain.container_max_instances,
            DEFAULT_CONTAINER_MAX_INSTANCES
        );
    }

    #[test]
    fn bad_capacity_and_yarn_flags_are_named() {
        for (args, flag) in [
            (&["--max-instances", "lots"][..], "--max-instances"),
            (&["--yarn-queue", "q"][..], "--yarn-queue:"),
            (&["--yarn-rm", "https://rm:8090"][..], "--yarn-rm:"),
            (&["--yarn-rm", "http://rm"][..], "--yarn-rm:"),
            (
                &["--http-header-timeout", "0"][..],
                "--http-header-timeout:",
            ),
            (&["--max-watchers", "0"][..], "--max-watchers:"),
            (&["--max-keys", "0"][..], "--max-keys:"),
            (&["--max-registry-bytes", "10"][..], "--max-registry-bytes:"),
            (
                &["--task-max-body-bytes", "0"][..],
                "--task-max-body-bytes:",
            ),
            (
                &["--task-http-header-timeout", "0"][..],
                "--task-http-header-timeout:",
            ),
            (
                &["--http-max-connections", "0"][..],
                "--http-max-connections:",
            ),
            (
                &["--max-blocking-queries", "99999999"][..],
                "--max-blocking-queries:",
            ),
            (
                &["--zookeeper-max-request-bytes", "100"][..],
                "--zookeeper-max-request-bytes:",
            ),
            (&["--name", "n".repeat(129).as_str()][..], "--name:"),
            (
                &["--yarn-rm", "http://rm:1", "--yarn-max-containers", "0"][..],
                "--yarn-max-containers:",
            ),
        ] {
            let error = parse(args).unwrap_err();
            assert!(error.contains(flag), "{args:?}: {error}");
        }
    }

    #[test]
    fn kafka_flags() {
        assert_eq!(parse(&[]).unwrap().kafka, None);
        let config = parse(&[
            "--kafka",
            "127.0.0.1:9092,k2:9093",
            "--kafka-option",
            "session.timeout.ms=6000",
        ])
        .unwrap();
        let kafka = config.kafka.unwrap();
        assert_eq!(kafka.brokers, vec!["127.0.0.1:9092", "k2:9093"]);
        assert_eq!(kafka.options["session.timeout.ms"], "6000");
        for (args, start) in [
            (&["--kafka", "nowhere"][..], "--kafka: "),
            (&["--kafka", "k:1,"][..], "--kafka: "),
            (
                &["--kafka", "k:1", "--kafka-option", "x"][..],
                "--kafka-option: ",
            ),
            (
                &["--kafka-option", "a=b"][..],
                "--kafka-option: needs --kafka",
            ),
        ] {
            let error = parse(args).unwrap_err();
            assert!(error.starts_with(start), "{args:?}: {error}");
            assert!(!error.contains('\n'), "one line: {error}");
        }
    }

    #[test]
    fn a_prometheus_url_is_plain_http_to_a_host() {
        let url = |arg: &str| parse(&["--prometheus-url", arg]).map(|c| c.prometheus_url);
        assert_eq!(
            url("http://127.0.0.1:9090/"),
            Ok(Some("http://127.0.0.1:9090".into()))
        );
        assert_eq!(
            url("http://prom:9090/prometheus"),
            Ok(Some("http://prom:9090/prometheus".into()))
        );
        assert_eq!(parse(&[]).unwrap().prometheus_url, None);
        for bad in [
            "127.0.0.1:9090",
            "https://prom:9090",
            "http://",
            "http://a b:1",
        ] {
            let error = url(bad).unwrap_err();
            assert!(error.starts_with("--prometheus-url: "), "{bad}: {error}");
        }
    }

    #[test]
    fn unsafe_exposure_is_refused_without_insecure() {
        // Loopback (every test and `lathe up`): fine with the built-in cookie.
        assert!(parse(&["--bind", "127.0.0.1:0", "--http", "127.0.0.1:0"]).is_ok());
        let rest = parse(&["--http", "0.0.0.0:7500"]).unwrap_err();
        assert!(
            rest.starts_with("--http: 0.0.0.0:7500 is not a loopback address"),
            "{rest}"
        );
        assert!(
            rest.contains("--tls-cert") && rest.contains("--insecure"),
            "{rest}"
        );
        assert!(!rest.contains('\n'));
        // --acl alone makes a plain REST port acceptable.
        assert!(parse(&["--http", "0.0.0.0:7500", "--acl"]).is_ok());
        let cookie = parse(&["--bind", "0.0.0.0:7400"]).unwrap_err();
        assert!(
            cookie.starts_with("--bind: ") && cookie.contains("--cookie"),
            "{cookie}"
        );
        let plain = parse(&["--bind", "0.0.0.0:7400", "--cookie", "s3cret"]).unwrap_err();
        assert!(
            plain.contains("plain TCP")
                && plain.contains("--cluster-tls-ca")
                && plain.contains("--insecure"),
            "{plain}"
        );
        let config = parse(&[
            "--bind",
            "0.0.0.0:7400",
            "--http",
            "0.0.0.0:7500",
            "--insecure",
        ]);
        assert!(config.unwrap().insecure);
    }

    #[test]
    fn tls_and_zookeeper_auth_flags_are_checked_before_binding() {
        for (args, start) in [
            (
                &["--tls-cert", "/no/cert.pem"][..],
                "--tls-cert: needs --tls-key",
            ),
            (
                &["--tls-key", "/no/key.pem"][..],
                "--tls-key: needs --tls-cert",
            ),
            (
                &["--tls-client-ca", "/no/ca.pem"][..],
                "--tls-client-ca: needs",
            ),
            (
                &["--tls-cert", "/no/cert.pem", "--tls-key", "/no/key.pem"][..],
                "--tls-cert: cannot read /no/cert.pem",
            ),
            (
                &["--zookeeper-auth", "u:p"][..],
                "--zookeeper-auth: needs --zookeeper",
            ),
            (
                &["--cluster-tls-ca", "/no/ca.pem"][..],
                "--cluster-tls-ca: needs --cluster-tls-cert, --cluster-tls-key and",
            ),
            (
                &[
                    "--cluster-tls-cert",
                    "/no/c.pem",
                    "--cluster-tls-key",
                    "/no/k.pem",
                    "--cluster-tls-ca",
                    "/no/ca.pem",
                ][..],
                "--cluster-tls-cert: cannot read /no/c.pem",
            ),
            (
                &[
                    "--zookeeper",
                    "127.0.0.1:2181",
                    "--zookeeper-auth",
                    "nopassword",
                ][..],
                "--zookeeper-auth: expected USER:PASSWORD",
            ),
            (
                &["--cluster-handshake-timeout", "0"][..],
                "--cluster-handshake-timeout:",
            ),
            (
                &["--task-http-max-connections", "0"][..],
                "--task-http-max-connections:",
            ),
        ] {
            let error = parse(args).unwrap_err();
            assert!(error.starts_with(start), "{args:?}: {error}");
        }
        let config = parse(&[
            "--zookeeper",
            "127.0.0.1:2181",
            "--zookeeper-auth",
            "lathe:pw",
        ]);
        assert_eq!(config.unwrap().zookeeper_auth.unwrap().user(), "lathe");
    }

    #[test]
    fn failure_drills_are_off_unless_enabled() {
        assert!(parse(&["--enable-chaos"]).unwrap().enable_chaos);
        assert!(parse(&["--acl"]).unwrap().acl);
        assert!(!parse(&[]).unwrap().acl);
    }

    #[test]
    fn names_the_bad_flag() {
        assert!(parse(&["--bind", "nowhere"])
            .unwrap_err()
            .starts_with("--bind:"));
        assert!(parse(&["--zookeeper", "a:b"])
            .unwrap_err()
            .starts_with("--zookeeper:"));
        assert!(parse(&["--name", "a b"])
            .unwrap_err()
            .starts_with("--name:"));
        assert!(parse(&["--join", "no-port"])
            .unwrap_err()
            .starts_with("--join:"));
        assert!(parse(&["--registry-shards", "0"])
            .unwrap_err()
            .starts_with("--registry-shards:"));
    }
}
