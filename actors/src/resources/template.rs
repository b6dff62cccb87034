//! `ContainerTemplate`: the `lathe-node` command line of every node container, so that its node
//! joins this cluster and takes instances.

use std::net::SocketAddr;
use std::path::PathBuf;

use lathe_resources::NodeLaunch;

/// The host a container node binds: YARN's NodeManager sets `NM_HOST` (the machine the container
/// runs on) and expands `{{NM_HOST}}` in the command.
pub const CONTAINER_HOST: &str = "{{NM_HOST}}";

/// What every container node is started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerTemplate {
    /// The `lathe-node` binary, as the container's machine sees it.
    pub program: PathBuf,
    /// The cluster's cookie: into the container's environment, never its command line.
    pub cookie: String,
    /// `--zookeeper` of the cluster, if it has one.
    pub zookeeper: Option<String>,
    /// The container node's `--max-instances`.
    pub max_instances: u32,
    /// The container node's `--tag`s.
    pub tags: Vec<String>,
    /// More arguments for every container node (the resource manager flags, so that any node
    /// can take over as leader).
    pub extra_args: Vec<String>,
    /// More environment variables (`LATHE_LOG`).
    pub env: Vec<(String, String)>,
}

impl ContainerTemplate {
    /// The launch of node `name`, joining the cluster through `join`.
    pub fn launch(&self, name: &str, join: &[SocketAddr]) -> NodeLaunch {
        let any_port = format!("{CONTAINER_HOST}:0");
        let mut args = vec![
            "--name".to_string(),
            name.to_string(),
            "--bind".into(),
            any_port.clone(),
            "--http".into(),
            any_port,
        ];
        for seed in join {
            args.extend(["--join".to_string(), seed.to_string()]);
        }
        if let Some(zookeeper) = &self.zookeeper {
            args.extend(["--zookeeper".to_string(), zookeeper.clone()]);
        }
        args.extend([
            "--max-instances".to_string(),
            self.max_instances.to_string(),
        ]);
        for tag in &self.tags {
            args.extend(["--tag".to_string(), tag.clone()]);
        }
        args.extend(self.extra_args.iter().cloned());
        let mut env = vec![("LATHE_COOKIE".to_string(), self.cookie.clone())];
        env.extend(self.env.iter().cloned());
        NodeLaunch {
            name: name.to_string(),
            program: self.program.clone(),
            args,
            env,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_container_node_joins_with_its_capacity_and_the_cookie_in_its_environment() {
        let template = ContainerTemplate {
            program: PathBuf::from("/usr/bin/lathe-node"),
            cookie: "s3cret".into(),
            zookeeper: Some("zk:2181/lathe".into()),
            max_instances: 4,
            tags: vec!["yarn".into()],
            extra_args: vec!["--yarn-rm".into(), "http://rm:8088".into()],
            env: vec![("LATHE_LOG".into(), "debug".into())],
        };
        let seeds: Vec<SocketAddr> = vec!["10.0.0.1:7400".parse().unwrap()];
        let launch = template.launch("yarn-3", &seeds);
        assert_eq!(
            launch.args.join(" "),
            "--name yarn-3 --bind {{NM_HOST}}:0 --http {{NM_HOST}}:0 --join 10.0.0.1:7400 \
             --zookeeper zk:2181/lathe --max-instances 4 --tag yarn --yarn-rm http://rm:8088"
        );
        assert!(!launch.args.iter().any(|a| a.contains("s3cret")));
        assert_eq!(
            launch.env,
            vec![
                ("LATHE_COOKIE".to_string(), "s3cret".to_string()),
                ("LATHE_LOG".to_string(), "debug".to_string())
            ]
        );
    }
}
