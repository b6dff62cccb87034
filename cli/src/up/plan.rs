//! What `lathe up` will start, decided before anything runs: one [`NodeSpec`] per node (name, fixed
//! ports, data dir, command line), the `lathe-node` binary, the cookie, and the check that every
//! port is free.

use std::hash::{BuildHasher, Hasher};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

use super::{UpArgs, UpError};

/// The loopback address every node listens on.
const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;
/// The binary `lathe up` runs.
const NODE_BINARY: &str = "lathe-node";

/// One node of the local cluster: everything needed to (re)start it identically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodeSpec {
    /// `local-<i>`.
    pub(crate) name: String,
    /// REST, metrics (`--http`).
    pub(crate) http_addr: SocketAddr,
    /// The ractor_cluster listen address (`--bind`): fixed, so a restarted node comes back at the
    /// same address.
    pub(crate) cluster_addr: SocketAddr,
    /// `<data-dir>/local-<i>`: the node's `--data-dir`, and where its `node.log` goes.
    pub(crate) data_dir: PathBuf,
    /// The arguments after the binary (the cookie travels in the environment, not on the command
    /// line).
    pub(crate) args: Vec<String>,
    /// Whether the node serves REST over HTTPS (`--tls-cert`).
    pub(crate) tls: bool,
}

impl NodeSpec {
    /// `http://HOST:PORT`, or `https://` when the node serves TLS.
    pub(crate) fn rest_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.http_addr)
    }

    /// Where the node's stdout and stderr go.
    pub(crate) fn log_path(&self) -> PathBuf {
        self.data_dir.join("node.log")
    }
}

/// The whole local cluster.
#[derive(Debug, Clone)]
pub(crate) struct ClusterPlan {
    pub(crate) binary: PathBuf,
    pub(crate) cookie: String,
    pub(crate) nodes: Vec<NodeSpec>,
    /// Whether the cluster uses ZooKeeper (else node 0's embedded store).
    pub(crate) zookeeper: bool,
}

impl ClusterPlan {
    /// Plans `args.nodes` nodes: node 0 founds the cluster, the others `--join` it.
    pub(crate) fn new(args: &UpArgs, binary: PathBuf, cookie: String) -> Result<Self, UpError> {
        let count = usize::from(args.nodes);
        let http_ports = port_range("--http-base", args.http_base, count)?;
        let cluster_ports = port_range("--cluster-base", args.cluster_base, count)?;
        if let Some(port) = http_ports.iter().find(|p| cluster_ports.contains(p)) {
            return Err(UpError::Usage(format!(
                "--http-base and --cluster-base overlap at port {port}: give ranges {count} ports \
                    apart"
            )));
        }
        let data_dir = std::path::absolute(&args.data_dir).map_err(|err| {
            UpError::Usage(format!("--data-dir: {}: {err}", args.data_dir.display()))
        })?;
        let founder = SocketAddr::from((LOOPBACK, cluster_ports[0]));
        let tls_args = tls_args(args)?;
        let nodes = (0..count)
            .map(|i| {
                let name = format!("local-{i}");
                let http_addr = SocketAddr::from((LOOPBACK, http_ports[i]));
                let cluster_addr = SocketAddr::from((LOOPBACK, cluster_ports[i]));
                let node_dir = data_dir.join(&name);
                let mut node_args = vec![
                    "--name".to_string(),
                    name.clone(),
                    "--bind".into(),
                    cluster_addr.to_string(),
                    "--http".into(),
                    http_addr.to_string(),
                    "--data-dir".into(),
                    node_dir.display().to_string(),
                ];
                if let Some(zookeeper) = &args.zookeeper {
                    node_args.extend(["--zookeeper".to_string(), zookeeper.clone()]);
                }
                if i > 0 {
                    node_args.extend(["--join".to_string(), founder.to_string()]);
                }
                if args.enable_chaos {
                    node_args.push("--enable-chaos".to_string());
                }
                node_args.extend(tls_args.iter().cloned());
                if args.acl {
                    node_args.push("--acl".to_string());
                }
                NodeSpec {
                    name,
                    http_addr,
                    cluster_addr,
                    data_dir: node_dir,
                    args: node_args,
                    tls: args.tls_cert.is_some(),
                }
            })
            .collect();
        Ok(ClusterPlan {
            binary,
            cookie,
            nodes,
            zookeeper: args.zookeeper.is_some(),
        })
    }

    /// Fails with the first port some other process holds, before anything is started.
    pub(crate) fn check_ports_free(&self) -> Result<(), UpError> {
        for node in &self.nodes {
            let ports = [
                (node.http_addr, "REST (--http-base)"),
                (node.cluster_addr, "cluster (--cluster-base)"),
            ];
            for (addr, role) in ports {
                TcpListener::bind(addr).map_err(|err| {
                    UpError::Usage(format!(
                        "port {} is not free ({err}): it is the {role} port of {}; stop what uses \
                            it or pick \
                         another base",
                        addr.port(),
                        node.name
                    ))
                })?;
            }
        }
        Ok(())
    }
}

/// `count` consecutive ports from `base`, all within 1..=65535.
fn port_range(flag: &str, base: u16, count: usize) -> Result<Vec<u16>, UpError> {
    let last = usize::from(base) + count - 1;
    if base == 0 || last > usize::from(u16::MAX) {
        return Err(UpError::Usage(format!(
            "{flag} {base}: {count} ports from it must lie within 1..=65535"
        )));
    }
    Ok((0..count).map(|i| base + i as u16).collect())
}

/// The `lathe-node` to run: `--node-bin` if given, else the one beside this `lathe` executable,
/// else the first on `PATH`.
pub(crate) fn find_node_binary(explicit: Option<&Path>) -> Result<PathBuf, UpError> {
    if let Some(path) = explicit {
        return if is_executable(path) {
            Ok(path.to_path_buf())
        } else {
            Err(UpError::Usage(format!(
                "--node-bin: {} is not an executable file",
                path.display()
            )))
        };
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(NODE_BINARY)));
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join(NODE_BINARY));
    beside
        .into_iter()
        .chain(on_path)
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| {
            UpError::Usage(format!(
                "cannot find {NODE_BINARY} beside this lathe executable nor on PATH: build it \
                    (cargo build \
                 --workspace --bins) or pass --node-bin PATH"
            ))
        })
}

pub(crate) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A fresh secret for one `lathe up` run: 128 bits from the standard library's randomly seeded
/// hasher keys.
pub(crate) fn random_cookie() -> String {
    let half = || {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        hasher.write_u32(std::process::id());
        hasher.finish()
    };
    format!("lathe-up-{:016x}{:016x}", half(), half())
}

/// `--tls-cert`, `--tls-key` and `--tls-client-ca` for every node, with absolute paths (the nodes
/// run from their own directories).
fn tls_args(args: &UpArgs) -> Result<Vec<String>, UpError> {
    let flags = [
        ("--tls-cert", &args.tls_cert),
        ("--tls-key", &args.tls_key),
        ("--tls-client-ca", &args.tls_client_ca),
    ];
    let mut node_args = Vec::new();
    for (flag, path) in flags {
        if let Some(path) = path {
            let path = std::path::absolute(path)
                .map_err(|err| UpError::Usage(format!("{flag}: {}: {err}", path.display())))?;
            node_args.extend([flag.to_string(), path.display().to_string()]);
        }
    }
    Ok(node_args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> UpArgs {
        let argv = ["lathe", "up", "--nodes", "3"].iter().chain(extra.iter());
        match crate::Cli::try_parse_from(argv).unwrap().command {
            crate::Command::Up(args) => *args,
            other => panic!("parsed as {other:?}"),
        }
    }

    fn plan(extra: &[&str]) -> Result<ClusterPlan, UpError> {
        ClusterPlan::new(&args(extra), PathBuf::from("/bin/true"), "c".into())
    }

    #[test]
    fn tls_flags_reach_every_node_with_absolute_paths() {
        let plain = plan(&[]).unwrap();
        assert_eq!(plain.nodes[0].rest_url(), "http://127.0.0.1:7500");
        let plan = plan(&["--tls-cert", "/pki/node.pem", "--tls-key", "key.pem"]).unwrap();
        let key = std::path::absolute("key.pem").unwrap();
        for node in &plan.nodes {
            let args = node.args.join(" ");
            assert!(
                args.ends_with(&format!(
                    "--tls-cert /pki/node.pem --tls-key {}",
                    key.display()
                )),
                "{args}"
            );
        }
        assert_eq!(plan.nodes[1].rest_url(), "https://127.0.0.1:7501");
    }

    #[test]
    fn node_zero_founds_and_the_others_join_it_at_fixed_ports() {
        let plan = plan(&["--data-dir", "/tmp/d", "--zookeeper", "zk:2181"]).unwrap();
        let names: Vec<&str> = plan.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["local-0", "local-1", "local-2"]);
        assert_eq!(
            plan.nodes[0].args.join(" "),
            "--name local-0 --bind 127.0.0.1:7400 --http 127.0.0.1:7500 --data-dir /tmp/d/local-0 \
             --zookeeper zk:2181"
        );
        assert_eq!(
            plan.nodes[2].args[7..].join(" "),
            "/tmp/d/local-2 --zookeeper zk:2181 --join 127.0.0.1:7400"
        );
        assert_eq!(plan.nodes[1].http_addr.to_string(), "127.0.0.1:7501");
        assert_eq!(
            plan.nodes[1].log_path(),
            PathBuf::from("/tmp/d/local-1/node.log")
        );
        assert!(plan.zookeeper);
    }

    #[test]
    fn failure_drills_reach_every_node_only_when_asked() {
        let drills = |plan: ClusterPlan| {
            plan.nodes
                .iter()
                .filter(|n| n.args.iter().any(|a| a == "--enable-chaos"))
                .count()
        };
        assert_eq!(drills(plan(&[]).unwrap()), 0);
        assert_eq!(drills(plan(&["--enable-chaos"]).unwrap()), 3);
    }

    #[test]
    fn port_ranges_must_fit_and_not_overlap() {
        let err = plan(&["--http-base", "65534"]).unwrap_err();
        assert!(err.to_string().starts_with("--http-base 65534:"), "{err}");
        let err = plan(&["--http-base", "7000", "--cluster-base", "7002"]).unwrap_err();
        assert!(err.to_string().contains("overlap at port 7002"), "{err}");
        assert!(plan(&["--http-base", "7000", "--cluster-base", "7003"]).is_ok());
    }

    #[test]
    fn a_port_in_use_is_named() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let (http_base, cluster_base) = (port.to_string(), (port + 10).to_string());
        let plan = plan(&["--http-base", &http_base, "--cluster-base", &cluster_base]).unwrap();
        let err = plan.check_ports_free().unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("port {port} is not free")),
            "{err}"
        );
        assert!(err.contains("REST (--http-base) port of local-0"), "{err}");
    }

    #[test]
    fn a_missing_node_binary_says_what_to_do() {
        let err = find_node_binary(Some(Path::new("/no/such/lathe-node"))).unwrap_err();
        assert!(err
            .to_string()
            .starts_with("--node-bin: /no/such/lathe-node"));
        assert!(find_node_binary(Some(Path::new("/bin/sh"))).is_ok());
    }

    #[test]
    fn cookies_differ_between_runs() {
        let (a, b) = (random_cookie(), random_cookie());
        assert_ne!(a, b);
        assert_eq!(a.len(), "lathe-up-".len() + 32);
    }
}
