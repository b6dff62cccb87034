//! Which prefix the agent's single stream watches (the longest common prefix of every watch) and
//! which watch actors each event goes to.

use lathe::{Entry, KeyPath};
use ractor::ActorRef;

use super::sse::StreamEvent;
use crate::watch::WatchMsg;

/// The deepest path every prefix lies under (segment-wise), `/` when they share nothing.
pub fn common_prefix<'a>(prefixes: impl IntoIterator<Item = &'a KeyPath>) -> KeyPath {
    let mut common: Option<Vec<&str>> = None;
    for prefix in prefixes {
        let segments: Vec<&str> = prefix.segments().collect();
        common = Some(match common {
            None => segments,
            Some(current) => current
                .iter()
                .zip(&segments)
                .take_while(|(a, b)| a == b)
                .map(|(a, _)| *a)
                .collect(),
        });
    }
    let segments = common.unwrap_or_default();
    if segments.is_empty() {
        KeyPath::root()
    } else {
        KeyPath::parse(&segments.join("/")).unwrap_or_else(|_| KeyPath::root())
    }
}

/// A watch's prefix and its actor.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub prefix: KeyPath,
    pub actor: ActorRef<WatchMsg>,
}

/// The entries of a snapshot that lie under `prefix`.
pub fn entries_under(entries: &[Entry], prefix: &KeyPath) -> Vec<Entry> {
    entries
        .iter()
        .filter(|e| e.key.is_under(prefix))
        .cloned()
        .collect()
}

/// Sends `event` to every route it concerns: a snapshot to all (each its part), a change to the
/// routes whose prefix covers its key.
pub fn dispatch(routes: &[Route], event: &StreamEvent) {
    for route in routes {
        let message = match event {
            StreamEvent::Snapshot { index, entries } => WatchMsg::Snapshot {
                index: *index,
                entries: entries_under(entries, &route.prefix),
            },
            StreamEvent::Change(change) if change.key.is_under(&route.prefix) => {
                WatchMsg::Change(change.clone())
            }
            StreamEvent::Change(_) => continue,
        };
        if let Err(e) = route.actor.cast(message) {
            tracing::warn!(watch = %route.name, error = %e, "watch actor unreachable");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(raw: &str) -> KeyPath {
        KeyPath::parse(raw).unwrap()
    }

    #[test]
    fn common_prefixes_are_segment_wise() {
        let lb = path("/lathe/endpoints/task/http/lb");
        let fp = path("/lathe/endpoints/task/http/frontpage");
        assert_eq!(common_prefix([&lb]), lb);
        assert_eq!(
            common_prefix([&lb, &fp]).as_str(),
            "/lathe/endpoints/task/http"
        );
        let other = path("/lathe/endpoints/task/http/lbx");
        assert_eq!(
            common_prefix([&lb, &other]).as_str(),
            "/lathe/endpoints/task/http"
        );
        assert!(common_prefix([&lb, &path("/task")]).is_root());
    }

    #[test]
    fn snapshots_are_cut_per_prefix() {
        let entry = |key: &str| Entry {
            key: path(key),
            value: serde_json::json!(1),
            version: 1,
        };
        let entries = vec![entry("/a/b/1"), entry("/a/bc"), entry("/a/c/1")];
        let under = entries_under(&entries, &path("/a/b"));
        assert_eq!(under, vec![entry("/a/b/1")]);
    }
}
