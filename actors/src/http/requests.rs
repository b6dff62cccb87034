//! `lathe_api_requests_total{route,code}`: requests this node's REST API answered, by kind of
//! route, so the load clients put on the registry can be read from `/metrics` (e.g. blocking
//! queries re-issued after every change against one long-lived watch stream). A stream or a
//! blocking query counts once, when its answer starts.

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use warp::http::{Method, StatusCode};

use super::{kv, topology, watch};

const NAME: &str = "lathe_api_requests_total";
const HELP: &str =
    "Requests answered by this node's REST API, by route (kv, kv-blocking, kv-write, \
                    watch, tasks, services, topology, members, metrics, health, tree, kill, \
                        rollouts, prometheus, agents, acl, \
                    ui, other)";

const PANICS: &str = "lathe_api_panics_total";
const PANICS_HELP: &str = "REST handlers that panicked (each answered 500)";

#[derive(Clone)]
pub(crate) struct ApiRequests(IntCounterVec, IntCounter);

impl ApiRequests {
    /// The counter, registered in `registry` (or left unregistered, with a warning, when the
    /// registry has one already: one API server per registry is the rule).
    pub(crate) fn register(registry: &Registry) -> Self {
        let counter = IntCounterVec::new(Opts::new(NAME, HELP), &["route", "code"])
            .expect("a valid metric definition");
        if let Err(error) = registry.register(Box::new(counter.clone())) {
            tracing::warn!(%error, "{NAME} not registered");
        }
        let panics = IntCounter::new(PANICS, PANICS_HELP).expect("a valid metric definition");
        if let Err(error) = registry.register(Box::new(panics.clone())) {
            tracing::warn!(%error, "{PANICS} not registered");
        }
        ApiRequests(counter, panics)
    }

    /// One more handler panicked.
    pub(crate) fn panicked(&self) {
        self.1.inc();
    }

    pub(crate) fn count(&self, method: &Method, path: &str, query: &str, status: StatusCode) {
        self.0
            .with_label_values(&[route(method, path, query), status.as_str()])
            .inc();
    }
}

/// The kind of route a request went to (a small, fixed set of label values).
fn route(method: &Method, path: &str, query: &str) -> &'static str {
    match path {
        "/v1/health" => return "health",
        "/metrics" => return "metrics",
        "/v1/members" => return "members",
        "/v1/topology" => return "topology",
        "/v1/tasks" => return "tasks",
        "/v1/tree" => return "tree",
        "/v1/actors/kill" => return "kill",
        super::discovery::TARGETS_PATH => return "prometheus",
        _ => {}
    }
    if topology::is_services_path(path) {
        "services"
    } else if super::rollout::is_rollouts_path(path) || super::shift::is_shifts_path(path) {
        "rollouts"
    } else if super::acl::is_acl_path(path) {
        "acl"
    } else if super::agents::is_agents_path(path) {
        "agents"
    } else if super::ui::is_ui_path(path) {
        "ui"
    } else if kv::is_kv_path(path) && *method != Method::GET {
        "kv-write"
    } else if kv::is_kv_path(path) && query.split('&').any(|p| p.starts_with("index=")) {
        "kv-blocking"
    } else if kv::is_kv_path(path) {
        "kv"
    } else if watch::is_watch_path(path) {
        "watch"
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_told_apart() {
        let get = Method::GET;
        assert_eq!(route(&get, "/v1/kv/a/b", "recurse=true"), "kv");
        assert_eq!(route(&get, "/v1/kv/a/b", "index=7&wait=30s"), "kv-blocking");
        assert_eq!(route(&Method::PUT, "/v1/kv/a", ""), "kv-write");
        assert_eq!(route(&get, "/v1/watch/a", "index=3"), "watch");
        assert_eq!(route(&get, "/v1/services/http/lb", ""), "services");
        assert_eq!(route(&get, "/v1/tasks", ""), "tasks");
        assert_eq!(
            route(&Method::POST, "/v1/rollouts/a.b/pause", ""),
            "rollouts"
        );
        assert_eq!(route(&get, "/v1/prometheus/targets", ""), "prometheus");
        assert_eq!(route(&Method::PUT, "/v1/agents/edge-1", ""), "agents");
        assert_eq!(route(&get, "/nope", ""), "other");
    }
}
