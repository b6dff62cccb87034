//! How registry keys map onto znodes, what a znode's data and stat mean, and pipelined reads of
//! many znodes.
//!
//! ```text
//! key /a/b  ──▶  znode {chroot}/lathe/registry/kv/a/b      key /  ──▶  {chroot}/lathe/registry/kv
//!
//! data non-empty            live value (JSON), version = mzxid
//! data empty, mzxid ≠ czxid tombstone: written, then deleted at mzxid
//! data empty, mzxid = czxid placeholder: a parent created for its children, never written
//! ```

use std::collections::VecDeque;

use futures::future::join_all;
use lathe::KeyPath;
use zookeeper_client::{Client, Error as ZkError, Stat};

use super::session::{Op, Shared};
use crate::{StoreError, StoredEntry};

/// Where the registry lives below the chroot.
const REGISTRY_ROOT: &str = "/lathe/registry/kv";
/// How many znodes are read at once (each read may carry a value of up to a megabyte).
const READ_WAVE: usize = 64;

/// The znode paths of one store.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    base: String,
}

impl Layout {
    /// The layout under `chroot` (`""` for none).
    pub(super) fn new(chroot: &str) -> Layout {
        Layout {
            base: format!("{chroot}{REGISTRY_ROOT}"),
        }
    }

    /// The znode of the root key.
    pub(super) fn base(&self) -> &str {
        &self.base
    }

    pub(super) fn znode(&self, key: &KeyPath) -> String {
        if key.is_root() {
            self.base.clone()
        } else {
            format!("{}{}", self.base, key)
        }
    }

    /// The registry key of a znode below the base, if its path is a valid key.
    pub(super) fn key(&self, path: &str) -> Option<KeyPath> {
        let rest = path.strip_prefix(&self.base)?;
        if rest.is_empty() {
            return Some(KeyPath::root());
        }
        if !rest.starts_with('/') {
            return None;
        }
        KeyPath::parse(rest).ok()
    }
}

/// Splits `HOST:PORT[,HOST:PORT...][/CHROOT]` into the hosts and the chroot (`""` for none).
pub(super) fn split_ensemble(ensemble: &str) -> Result<(String, String), StoreError> {
    let bad =
        |why: &str| StoreError::Internal(format!("bad zookeeper address {ensemble:?}: {why}"));
    let (hosts, chroot) = match ensemble.find('/') {
        Some(i) => ensemble.split_at(i),
        None => (ensemble, ""),
    };
    if hosts.is_empty() || hosts.split(',').any(str::is_empty) {
        return Err(bad("expected HOST:PORT[,HOST:PORT...][/CHROOT]"));
    }
    let chroot = chroot.trim_end_matches('/');
    if chroot
        .split('/')
        .skip(1)
        .any(|segment| segment.is_empty() || segment == "." || segment == "..")
    {
        return Err(bad("the chroot must be a path like /lathe-prod"));
    }
    Ok((hosts.to_string(), chroot.to_string()))
}

/// One znode as read: its data and stat.
#[derive(Debug, Clone)]
pub(super) struct Node {
    pub(super) path: String,
    pub(super) data: Vec<u8>,
    pub(super) stat: Stat,
}

impl Node {
    /// Holds a value (not a tombstone, not a placeholder).
    pub(super) fn is_live(&self) -> bool {
        !self.data.is_empty()
    }

    /// A parent created for its children and never written.
    pub(super) fn is_placeholder(&self) -> bool {
        self.data.is_empty() && self.stat.mzxid == self.stat.czxid
    }

    pub(super) fn version(&self) -> u64 {
        self.stat.mzxid.max(0) as u64
    }

    /// The entry this znode stands for; `None` for placeholders, znodes whose name is not a
    /// registry key and values that are not JSON (logged).
    pub(super) fn entry(&self, layout: &Layout) -> Option<StoredEntry> {
        if self.is_placeholder() {
            return None;
        }
        let Some(key) = layout.key(&self.path) else {
            tracing::warn!(path = %self.path, "znode below the registry is not a registry key");
            return None;
        };
        let value = if self.data.is_empty() {
            None
        } else {
            match serde_json::from_slice(&self.data) {
                Ok(value) => Some(value),
                Err(err) => {
                    tracing::error!(%key, error = %err, "registry value in zookeeper is not JSON");
                    return None;
                }
            }
        };
        Some(StoredEntry {
            key,
            value,
            version: self.version(),
        })
    }
}

/// Reads many znodes with pipelined requests; a znode that is gone reads as `None`.
pub(super) async fn read_nodes(
    shared: &Shared,
    client: &Client,
    paths: Vec<String>,
) -> Result<Vec<(String, Option<Node>)>, ZkError> {
    let mut out = Vec::with_capacity(paths.len());
    for wave in paths.chunks(READ_WAVE) {
        let reads = wave
            .iter()
            .map(|path| shared.call(Op::Get, client.get_data(path)));
        for (path, read) in wave.iter().zip(join_all(reads).await) {
            let node = match read {
                Ok((data, stat)) => Some(Node {
                    path: path.clone(),
                    data,
                    stat,
                }),
                Err(ZkError::NoNode) => None,
                Err(err) => return Err(err),
            };
            out.push((path.clone(), node));
        }
    }
    Ok(out)
}

/// Every znode at or below `root` (none when `root` does not exist), read level by level with
/// pipelined requests. Not atomic: the event pipeline makes it consistent with its watch.
pub(super) async fn list_tree(
    shared: &Shared,
    client: &Client,
    root: &str,
) -> Result<Vec<Node>, ZkError> {
    let mut nodes = Vec::new();
    let mut frontier: VecDeque<String> = VecDeque::from([root.to_string()]);
    while !frontier.is_empty() {
        let wave: Vec<String> = frontier.drain(..frontier.len().min(READ_WAVE)).collect();
        let reads = wave.iter().map(|path| {
            let data = shared.call(Op::Get, client.get_data(path));
            let children = shared.call(Op::List, client.list_children(path));
            async move { (data.await, children.await) }
        });
        for (path, (data, children)) in wave.iter().zip(join_all(reads).await) {
            let (data, stat) = match data {
                Ok(found) => found,
                Err(ZkError::NoNode) => continue,
                Err(err) => return Err(err),
            };
            let children = match children {
                Ok(children) => children,
                Err(ZkError::NoNode) => continue,
                Err(err) => return Err(err),
            };
            frontier.extend(children.into_iter().map(|child| format!("{path}/{child}")));
            nodes.push(Node {
                path: path.clone(),
                data,
                stat,
            });
        }
    }
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_onto_znodes_and_back() {
        let layout = Layout::new("/prod");
        let key = KeyPath::parse("/task/http").unwrap();
        assert_eq!(layout.znode(&key), "/prod/lathe/registry/kv/task/http");
        assert_eq!(layout.key("/prod/lathe/registry/kv/task/http"), Some(key));
        assert_eq!(layout.znode(&KeyPath::root()), "/prod/lathe/registry/kv");
        assert_eq!(layout.key("/prod/lathe/registry/kv"), Some(KeyPath::root()));
        assert_eq!(layout.key("/prod/lathe/registry/kvx"), None);
        assert_eq!(layout.key("/prod/lathe/registry/kv/bad name"), None);
    }

    #[test]
    fn ensembles_split_into_hosts_and_chroot() {
        let split = |s: &str| split_ensemble(s).map_err(|e| e.to_string());
        assert_eq!(split("a:1,b:2"), Ok(("a:1,b:2".into(), "".into())));
        assert_eq!(split("a:1,b:2/x/y"), Ok(("a:1,b:2".into(), "/x/y".into())));
        assert_eq!(split("a:1/x/"), Ok(("a:1".into(), "/x".into())));
        assert_eq!(split("a:1/"), Ok(("a:1".into(), "".into())));
        assert!(split("/x").is_err());
        assert!(split("a:1,,b:2").is_err());
        assert!(split("a:1/x//y").is_err());
    }
}
