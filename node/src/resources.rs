//! The node's resource manager backend from its flags: `--yarn-rm` and its companions become a
//! [`ResourceManagerSpec`] over the YARN backend of `lathe-resources`.

use std::sync::Arc;

use lathe_actors::resources::{ContainerTemplate, ResourceManagerSpec, ResourceMetrics, Sizing};
use lathe_resources::yarn::{YarnBackend, YarnConfig, DEFAULT_TIMEOUT};
use lathe_resources::ResourceManager;

use crate::config::{NodeConfig, YarnSettings};

/// The tag every YARN container node carries (a group's `biases` may name it).
const CONTAINER_TAG: &str = "yarn";
/// The variables of this node's environment its container nodes get too.
const PASSED_ON: [&str; 1] = ["LATHE_LOG"];

/// The YARN resource manager of a node started with `--yarn-rm`; `None` without.
pub(crate) fn yarn_spec(
    config: &NodeConfig,
    metrics: &prometheus::Registry,
) -> anyhow::Result<Option<ResourceManagerSpec>> {
    let Some(yarn) = &config.yarn else {
        return Ok(None);
    };
    let backend_config = YarnConfig {
        rm_url: yarn.rm_url.clone(),
        queue: yarn.queue.clone(),
        memory_mb: yarn.container_memory_mb,
        vcores: yarn.container_vcores,
        user: yarn.user.clone(),
        timeout: DEFAULT_TIMEOUT,
    };
    tracing::info!(
        rm = %yarn.rm_url,
        queue = %yarn.queue,
        max_containers = yarn.max_containers,
        per_container = yarn.container_max_instances,
        "YARN resource manager configured"
    );
    Ok(Some(ResourceManagerSpec {
        backend: "yarn",
        factory: Arc::new(move || {
            Box::new(YarnBackend::new(backend_config.clone())) as Box<dyn ResourceManager>
        }),
        template: template(config, yarn),
        sizing: Sizing {
            max_containers: yarn.max_containers,
            per_container: yarn.container_max_instances,
        },
        metrics: ResourceMetrics::register(metrics)?,
    }))
}

fn template(config: &NodeConfig, yarn: &YarnSettings) -> ContainerTemplate {
    ContainerTemplate {
        program: yarn.node_bin.clone(),
        cookie: config.cookie.clone(),
        zookeeper: config.zookeeper.clone(),
        max_instances: yarn.container_max_instances,
        tags: vec![CONTAINER_TAG.to_string()],
        extra_args: container_args(config, yarn),
        env: PASSED_ON
            .iter()
            .filter_map(|name| Some((name.to_string(), std::env::var(name).ok()?)))
            .chain(zookeeper_auth_env(config))
            .collect(),
    }
}

/// `--zookeeper-auth` travels like the cookie: in the container's environment, not its command
/// line.
fn zookeeper_auth_env(config: &NodeConfig) -> Option<(String, String)> {
    let auth = config.zookeeper_auth.as_ref()?;
    Some(("LATHE_ZOOKEEPER_AUTH".to_string(), auth.expose()))
}

/// The flags every container node gets beyond the template's own: the YARN flags (any node may
/// come to lead), the REST port's TLS files (the same paths on every machine) and `--insecure`,
/// and as many async workers as the container has virtual cores.
fn container_args(config: &NodeConfig, yarn: &YarnSettings) -> Vec<String> {
    let mut args = yarn.as_args();
    if let Some(tls) = &config.rest_tls {
        args.extend(tls.as_args());
    }
    if let Some(tls) = &config.cluster_tls {
        args.extend(tls.as_args());
    }
    if config.insecure {
        args.push("--insecure".to_string());
    }
    let workers = usize::try_from(yarn.container_vcores)
        .unwrap_or(usize::MAX)
        .min(crate::config::MAX_WORKERS);
    args.extend(["--workers".to_string(), workers.to_string()]);
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_container_node_runs_as_many_workers_as_it_has_virtual_cores() {
        let yarn = YarnSettings {
            rm_url: "http://rm:8088".into(),
            queue: "default".into(),
            user: None,
            max_containers: 8,
            container_memory_mb: 1024,
            container_vcores: 2,
            container_max_instances: 4,
            node_bin: "/opt/lathe-node".into(),
        };
        use clap::Parser;
        let config = crate::config::Args::try_parse_from(["lathe-node", "--insecure"])
            .unwrap()
            .validate()
            .unwrap();
        let args = container_args(&config, &yarn);
        assert!(args.starts_with(&yarn.as_args()));
        assert_eq!(args[args.len() - 3..], ["--insecure", "--workers", "2"]);
    }
}
