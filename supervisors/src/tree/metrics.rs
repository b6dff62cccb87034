//! The supervision tree as Prometheus metrics, read from the tree at scrape time:
//!
//! - `lathe_actor_info{node,path,parent,kind}` = 1 per live actor (the tree as metrics);
//! - `lathe_actors{node,kind,status}`: actors of the tree by kind and status;
//! - `lathe_actor_restarts_total{node,kind}`: restarts since the node started (registry feed and
//!   shards, scheduler, task instances);
//! - `lathe_actor_restarts{node,path,kind}`: the restarts each actor of the tree has had (what
//!   `/v1/tree` shows per actor; a task's count starts over when it is retried after failing).

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounterVec, IntGaugeVec, Opts};

use super::{ActorKind, ActorStatus, ActorTree};

const INFO: (&str, &str) = (
    "lathe_actor_info",
    "One per live actor of this node's supervision tree",
);
const ACTORS: (&str, &str) = (
    "lathe_actors",
    "Actors of this node's supervision tree, by kind and status",
);
const ACTOR_RESTARTS: (&str, &str) = (
    "lathe_actor_restarts",
    "Restarts of each actor of this node's supervision tree, by path",
);
const RESTARTS: (&str, &str) = (
    "lathe_actor_restarts_total",
    "Actors of this node restarted by their supervisor, by kind",
);

/// A collector over an [`ActorTree`]; register it once per node.
pub struct TreeMetrics {
    tree: ActorTree,
    templates: Templates,
}

struct Templates {
    info: IntGaugeVec,
    actors: IntGaugeVec,
    restarts: IntCounterVec,
    actor_restarts: IntGaugeVec,
}

impl Templates {
    fn new() -> prometheus::Result<Self> {
        Ok(Templates {
            info: IntGaugeVec::new(
                Opts::new(INFO.0, INFO.1),
                &["node", "path", "parent", "kind"],
            )?,
            actors: IntGaugeVec::new(Opts::new(ACTORS.0, ACTORS.1), &["node", "kind", "status"])?,
            restarts: IntCounterVec::new(Opts::new(RESTARTS.0, RESTARTS.1), &["node", "kind"])?,
            actor_restarts: IntGaugeVec::new(
                Opts::new(ACTOR_RESTARTS.0, ACTOR_RESTARTS.1),
                &["node", "path", "kind"],
            )?,
        })
    }
}

impl TreeMetrics {
    pub fn new(tree: ActorTree) -> prometheus::Result<Self> {
        Ok(TreeMetrics {
            tree,
            templates: Templates::new()?,
        })
    }

    /// Registers the collector in `registry`.
    pub fn register(tree: ActorTree, registry: &prometheus::Registry) -> prometheus::Result<()> {
        registry.register(Box::new(TreeMetrics::new(tree)?))
    }
}

impl Collector for TreeMetrics {
    fn desc(&self) -> Vec<&Desc> {
        let t = &self.templates;
        [
            t.info.desc(),
            t.actors.desc(),
            t.restarts.desc(),
            t.actor_restarts.desc(),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        // Fresh vectors at every scrape: no stale series, and two scrapes at once cannot mix.
        let Ok(fresh) = Templates::new() else {
            return Vec::new();
        };
        {
            let inner = self.tree.lock();
            let node = inner.node.as_str();
            for (path, entry) in &inner.entries {
                let kind = entry.kind.name();
                fresh
                    .actors
                    .with_label_values(&[node, kind, entry.status.name()])
                    .inc();
                fresh
                    .actor_restarts
                    .with_label_values(&[node, path.as_str(), kind])
                    .set(i64::try_from(entry.restarts).unwrap_or(i64::MAX));
                if entry.status == ActorStatus::Running && entry.cell.is_some() {
                    let parent = entry.parent.as_deref().unwrap_or("");
                    fresh
                        .info
                        .with_label_values(&[node, path.as_str(), parent, kind])
                        .set(1);
                }
            }
            for kind in ActorKind::ALL {
                let count = inner.restarts.get(&kind).copied().unwrap_or(0);
                fresh
                    .restarts
                    .with_label_values(&[node, kind.name()])
                    .inc_by(count);
            }
        }
        let mut families = fresh.info.collect();
        families.extend(fresh.actors.collect());
        families.extend(fresh.restarts.collect());
        families.extend(fresh.actor_restarts.collect());
        families
    }
}
