//! `lathe-node` as a library: one member of a Lathe cluster, running the task types of the
//! [`Catalog`] its binary was built with. The library depends on no task crate:
//! `examples/lathe-node` is this repository's `lathe-node` binary (the seed's example crates), and
//! a user's own node binary is the same three lines with their crates:
//!
//! ```no_run
//! // src/main.rs of a node binary that runs your crates' tasks
//! let catalog = lathe::Catalog::new().with(http_loadbalancer::tasks());
//! lathe_node::main_with(catalog)
//! ```
//!
//! Start-up: parse and validate every flag (a bad one is one line naming it and exit code 2, before
//! any port is bound), bind the REST listener, open the registry store (ZooKeeper; or the embedded
//! RocksDB store under `--data-dir` on the founding node, reached over the cluster by the nodes
//! that join it), start the [`NodeSupervisor`] tree, then wait for SIGTERM or
//! SIGINT and drain (exit 0). If the tree fails, the process exits 1 so its resource manager
//! replaces it.

mod config;
mod metrics;
mod resources;
mod startup;
mod supervisor;

use std::sync::Arc;
use std::time::Duration;

use crate::supervisor::{NodeSupervisor, NodeSupervisorArgs};
use clap::Parser;
use lathe::Catalog;
use lathe_actors::acl::writer::WriteGate;
use lathe_actors::membership::MembershipConfig;
use lathe_actors::registry::remote::{start_store_server, RemoteStore};
use lathe_actors::registry::RegistryConfig;
use lathe_actors::scheduler::traffic::TrafficSource;
use lathe_actors::tree::ActorTree;
use lathe_store::{embedded::EmbeddedStore, zk::ZkStore, Store};
use ractor::{Actor, ActorCell};

use config::{Args, NodeConfig};

/// ZooKeeper session timeout: long enough to ride out a ZooKeeper restart.
const ZK_SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `lathe-node` with the task types of `catalog`; never returns (exits with the node's code).
pub fn main_with(catalog: Catalog) -> ! {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) if e.use_stderr() => {
            // clap's own errors (unknown flag, missing value): keep the first line only.
            let text = e.to_string();
            let line = text.lines().next().unwrap_or("bad arguments");
            eprintln!("lathe-node: {}", line.trim_start_matches("error: "));
            std::process::exit(2);
        }
        Err(e) => {
            let _ = e.print();
            std::process::exit(0);
        }
    };
    let config = match args.validate() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("lathe-node: {e}");
            std::process::exit(2);
        }
    };
    if let Some(kafka) = &config.kafka {
        // Before any port is bound: unreachable brokers are a start-up error, like a bad flag.
        let timeout = lathe_kafka::settings::REACHABLE_TIMEOUT;
        if let Err(e) = lathe_kafka::client::check_reachable(kafka, timeout) {
            eprintln!("lathe-node: --kafka: {e:#}");
            std::process::exit(2);
        }
    }
    init_tracing();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = config.workers {
        runtime.worker_threads(workers);
    }
    let runtime = runtime.enable_all().build().unwrap_or_else(|e| {
        eprintln!("lathe-node: cannot start the async runtime: {e}");
        std::process::exit(1);
    });
    let code = runtime.block_on(async {
        match run(config, catalog).await {
            Ok(()) => 0,
            Err(e) => {
                tracing::error!("{e:#}");
                eprintln!("lathe-node: {e:#}");
                1
            }
        }
    });
    // Don't wait for blocking tasks (a hung ZooKeeper call) on the way out.
    runtime.shutdown_timeout(Duration::from_secs(1));
    std::process::exit(code);
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LATHE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

async fn run(config: NodeConfig, catalog: Catalog) -> anyhow::Result<()> {
    use anyhow::Context;
    let http_listener = tokio::net::TcpListener::bind(config.http)
        .await
        .with_context(|| format!("--http: cannot listen on {}", config.http))?;
    let http_addr = http_listener.local_addr()?;
    let cluster_addr = concrete_cluster_addr(config.bind)
        .with_context(|| format!("--bind: cannot listen on {}", config.bind))?;
    let name = config
        .name
        .clone()
        .unwrap_or_else(|| default_name(cluster_addr.port()));
    let metrics = prometheus::Registry::new();
    metrics::register_workers(&metrics)?;
    let tree = ActorTree::new(&name);
    let write_gate = WriteGate::default();
    let (store, store_keeper) =
        open_store(&config, &name, &metrics, &tree, write_gate.clone()).await?;
    let mut membership = MembershipConfig::new(&name, cluster_addr, http_addr, &config.cookie);
    membership.join = config.join.clone();
    membership.tags = config.tags.clone();
    membership.zookeeper = config.zookeeper.clone();
    membership.zookeeper_auth = config.zookeeper_auth.clone();
    membership.handshake_timeout = config.cluster_handshake_timeout;
    membership.tls = config.cluster_tls.as_ref().map(|tls| tls.tls.clone());
    // Without ZooKeeper the founding node holds the registry, and so leads the scheduler.
    membership.holds_registry = config.zookeeper.is_none() && config.join.is_empty();
    membership.catalog = catalog.types().cloned().collect();
    membership.max_instances = config.max_instances;
    let resources = resources::yarn_spec(&config, &metrics)?;
    let flow_transport: Option<Arc<dyn lathe_actors::flow::FlowTransport>> = match &config.kafka {
        Some(settings) => Some(lathe_kafka::KafkaFlows::new(settings, &metrics)?),
        None => None,
    };
    let changelog: Option<Arc<dyn lathe_actors::tasks::StateChangelog>> = match &config.kafka {
        Some(settings) => Some(lathe_kafka::KafkaChangelog::new(settings)?),
        None => None,
    };
    let args = NodeSupervisorArgs {
        name: name.clone(),
        tree,
        store_keeper,
        store,
        registry: RegistryConfig {
            shards: config.registry_shards,
        },
        membership,
        http_listener,
        max_value_bytes: config.max_value_bytes,
        api_limits: lathe_actors::http::ApiLimits::new(
            config.http_header_timeout,
            config.http_max_connections,
            config.max_watchers,
            config.max_blocking_queries,
        )
        .with_quota(config.max_keys, config.max_registry_bytes)
        .with_allowed_hosts(config.http_allowed_hosts.clone()),
        // A TLS handshake gets the same deadline as a request head.
        rest_tls: config.rest_tls.as_ref().map(|tls| {
            lathe_actors::http::RestTls::new(tls.config.clone(), config.http_header_timeout)
        }),
        task_http_limits: lathe_actors::tasks::TaskHttpLimits {
            header_timeout: config.task_http_header_timeout,
            max_body_bytes: config.task_max_body_bytes,
            max_connections: config.task_http_max_connections,
        },
        metrics,
        catalog,
        topology: config.topology.clone(),
        enable_chaos: config.enable_chaos,
        acl: config.acl,
        write_gate,
        traffic_source: config
            .prometheus_url
            .clone()
            .map_or(TrafficSource::Nodes, TrafficSource::Prometheus),
        local_forward: config.local_forward,
        resources,
        states: Some(Arc::new(lathe_store::state::LazyNodeStates::new(data_dir(
            &config, &name,
        )))),
        flow_transport,
        changelog,
    };
    let (node, handle) = Actor::spawn(Some(format!("lathe.node.{name}")), NodeSupervisor, args)
        .await
        .map_err(|e| anyhow::anyhow!("cannot start the node: {}", startup_error(&e)))?;
    tracing::info!(%name, cluster = %cluster_addr, http = %http_addr, "lathe-node serving");
    let scheme = if config.rest_tls.is_some() {
        "https"
    } else {
        "http"
    };
    println!("lathe-node {name}: cluster {cluster_addr}, http {scheme}://{http_addr}");
    let mut handle = handle;
    tokio::select! {
        _ = shutdown_signal() => {
            tracing::info!("signal received: draining");
            node.stop(Some("signal".into()));
            let _ = tokio::time::timeout(Duration::from_secs(10), &mut handle).await;
            Ok(())
        }
        _ = &mut handle => Err(anyhow::anyhow!("the node's supervision tree stopped")),
    }
}

/// The node's registry store, and the keeper of the actor serving or following the embedded
/// registry (in the tree at `node/registry/...`) when it has one.
async fn open_store(
    config: &NodeConfig,
    name: &str,
    metrics: &prometheus::Registry,
    tree: &ActorTree,
    write_gate: WriteGate,
) -> anyhow::Result<(Arc<dyn Store>, Option<ActorCell>)> {
    let scope = tree.scope("node/registry");
    use anyhow::Context;
    if let Some(zk) = &config.zookeeper {
        let store = Arc::new(
            ZkStore::connect_with_auth(zk, config.zookeeper_auth.clone(), ZK_SESSION_TIMEOUT)
                .await
                .with_context(|| format!("--zookeeper: cannot open the registry at {zk}"))?
                .with_max_request_bytes(config.zookeeper_max_request_bytes),
        );
        metrics.register(Box::new(metrics::ZkRequests::new(store.clone())?))?;
        metrics.register(Box::new(metrics::ZkConnected::new(store.clone())?))?;
        return Ok((store, None));
    }
    if !config.join.is_empty() {
        tracing::info!("no --zookeeper: using the embedded registry of the founding node");
        let remote = RemoteStore::start(&scope, None).await?;
        let keeper = remote.keeper();
        return Ok((Arc::new(remote), Some(keeper)));
    }
    let dir = data_dir(config, name);
    let store = EmbeddedStore::open(&dir).with_context(|| {
        format!(
            "--data-dir: cannot open the embedded registry in {}",
            dir.display()
        )
    })?;
    let store: Arc<dyn Store> = Arc::new(store);
    let keeper = start_store_server(store.clone(), write_gate, &scope, None)
        .await
        .context("cannot serve the embedded registry to joining nodes")?;
    Ok((store, Some(keeper.get_cell())))
}

/// `--data-dir`, else `lathe-data/<name>`: the embedded registry and the task state live there.
fn data_dir(config: &NodeConfig, name: &str) -> std::path::PathBuf {
    config
        .data_dir
        .clone()
        .unwrap_or_else(|| std::path::PathBuf::from("lathe-data").join(name))
}

/// ractor_cluster cannot report the port it bound, so port 0 is resolved here first.
fn concrete_cluster_addr(bind: std::net::SocketAddr) -> std::io::Result<std::net::SocketAddr> {
    if bind.port() != 0 {
        return Ok(bind);
    }
    let probe = std::net::TcpListener::bind(bind)?;
    probe.local_addr()
}

/// ractor wraps a failed `pre_start` once per level of the tree ("Actor panicked during startup
/// '...'"); the innermost message is the one that says what is wrong.
fn startup_error(error: &ractor::SpawnErr) -> String {
    const WRAPPER: &str = "Actor panicked during startup '";
    let mut text = error.to_string();
    while let Some(inner) = text
        .strip_prefix(WRAPPER)
        .and_then(|t| t.strip_suffix('\''))
    {
        text = inner.to_string();
    }
    text
}

fn default_name(port: u16) -> String {
    let host = gethostname::gethostname().to_string_lossy().to_string();
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("{host}-{port}")
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
