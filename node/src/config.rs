//! `lathe-node`'s flags (CONTRACT.md), each also read from `LATHE_<FLAG>`, validated into a
//! [`NodeConfig`] before any port is bound. A bad flag is one line naming it, and exit code 2.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use clap::Parser;

/// The default shared secret, for one-machine clusters; real clusters pass their own.
pub(crate) const DEFAULT_COOKIE: &str = "lathe-local-cookie";

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
    /// Kafka brokers for durable flows
    #[arg(long, env = "LATHE_KAFKA")]
    kafka: Option<String>,
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
    #[arg(long, env = "LATHE_MAX_VALUE_BYTES", default_value_t = lathe_store::DEFAULT_MAX_VALUE_BYTES)]
    max_value_bytes: usize,
    /// Accept failure drills: POST /v1/actors/kill kills any actor of this node as if it crashed
    #[arg(long, env = "LATHE_ENABLE_CHAOS")]
    enable_chaos: bool,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub(crate) struct NodeConfig {
    pub(crate) name: Option<String>,
    pub(crate) bind: SocketAddr,
    pub(crate) http: SocketAddr,
    pub(crate) join: Vec<String>,
    pub(crate) zookeeper: Option<String>,
    pub(crate) data_dir: Option<PathBuf>,
    pub(crate) tags: Vec<String>,
    pub(crate) cookie: String,
    pub(crate) registry_shards: usize,
    pub(crate) max_value_bytes: usize,
    /// Whether failure drills (`POST /v1/actors/kill`) are accepted.
    pub(crate) enable_chaos: bool,
    /// A validated topology to deploy once the node serves: (file name, TOML).
    pub(crate) topology: Option<(String, String)>,
}

/// A bad flag: which one, and why.
#[derive(Debug, thiserror::Error)]
#[error("{flag}: {reason}")]
pub(crate) struct FlagError {
    pub(crate) flag: &'static str,
    pub(crate) reason: String,
}

fn bad(flag: &'static str, reason: impl Into<String>) -> FlagError {
    FlagError {
        flag,
        reason: reason.into(),
    }
}

impl Args {
    pub(crate) fn validate(self) -> Result<NodeConfig, FlagError> {
        if let Some(name) = &self.name {
            check_segment(name).map_err(|r| bad("--name", r))?;
        }
        let bind = resolve(&self.bind).map_err(|r| bad("--bind", r))?;
        let http = resolve(&self.http).map_err(|r| bad("--http", r))?;
        for seed in &self.join {
            resolve(seed).map_err(|r| bad("--join", r))?;
        }
        if let Some(zk) = &self.zookeeper {
            check_zookeeper(zk).map_err(|r| bad("--zookeeper", r))?;
        }
        if self.kafka.is_some() {
            return Err(bad(
                "--kafka",
                "kafka flows are not available in this build yet",
            ));
        }
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
        Ok(NodeConfig {
            name: self.name,
            bind,
            http,
            join: self.join,
            zookeeper: self.zookeeper,
            data_dir: self.data_dir,
            tags: self.tags,
            cookie: self.cookie,
            registry_shards: self.registry_shards,
            max_value_bytes: self.max_value_bytes,
            enable_chaos: self.enable_chaos,
            topology,
        })
    }
}

/// Reads and validates a topology file: its errors carry file:line:column.
fn read_topology(path: &std::path::Path) -> Result<(String, String), String> {
    let source = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let file = path
        .file_name()
        .map(|name| name.to_string_lossy().to_string())
        .unwrap_or_else(|| path.display().to_string());
    lathe::topology::parse(&file, &source).map_err(|e| e.to_string())?;
    Ok((file, source))
}

fn resolve(addr: &str) -> Result<SocketAddr, String> {
    addr.to_socket_addrs()
        .map_err(|e| format!("{addr:?} is not HOST:PORT ({e})"))?
        .next()
        .ok_or_else(|| format!("{addr:?} resolves to no address"))
}

fn check_segment(value: &str) -> Result<(), String> {
    if value.is_empty()
        || !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(format!("{value:?} must be made of A-Z a-z 0-9 . _ -"));
    }
    Ok(())
}

fn check_zookeeper(value: &str) -> Result<(), String> {
    let (hosts, chroot) = match value.find('/') {
        Some(i) => value.split_at(i),
        None => (value, ""),
    };
    if !chroot.is_empty() {
        lathe::KeyPath::parse(chroot).map_err(|e| format!("bad chroot {chroot:?}: {e}"))?;
    }
    for host in hosts.split(',') {
        let (name, port) = host
            .rsplit_once(':')
            .ok_or_else(|| format!("{host:?} is not HOST:PORT"))?;
        if name.is_empty() || port.parse::<u16>().is_err() {
            return Err(format!("{host:?} is not HOST:PORT"));
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
    fn failure_drills_are_off_unless_enabled() {
        assert!(parse(&["--enable-chaos"]).unwrap().enable_chaos);
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
