//! Access control (`lathe-node --acl`): tokens, policies, and each node's cache of them.
//!
//! ```text
//! registry /lathe/acl ──change──▶ refresher task ──rebuild──▶ AclTable (Arc, swapped whole)
//!                                                               ▲
//! REST request ── Authorization: Bearer / X-Lathe-Token ── identify() (one SHA-256, one map lookup)
//! ```
//!
//! Every node keeps the token → rules resolution in memory and rebuilds it whenever anything
//! under `/lathe/acl` changes (the registry fans the change out to every node), and at least every
//! [`REFRESH_EVERY`] in case a subscription broke; so a revoked token stops working on every node
//! within the registry's fan-out time, and at worst within [`REFRESH_EVERY`].
//!
//! `policy.rs` holds the pure rule matching, `records.rs` what is stored, `writer.rs` how a REST
//! caller's token travels with a write forwarded over the cluster transport.

pub mod policy;
pub mod records;
pub mod writer;

use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use crate::registry::RegistryHandle;
pub use policy::{Access, Permission, Resource, Rule};
pub use records::{AclTable, Identity, PolicyRecord, TokenRecord};

/// The longest a node serves from a table that missed a change notification.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);

/// A cheap-to-clone handle on this node's ACL: off (everything allowed, as without `--acl`), or
/// on with the current table.
#[derive(Clone, Default)]
pub struct Acl {
    state: Option<Arc<AclState>>,
}

struct AclState {
    registry: RegistryHandle,
    table: RwLock<Arc<AclTable>>,
}

impl Acl {
    /// No access control: every request is served as before `--acl` existed.
    pub fn disabled() -> Acl {
        Acl { state: None }
    }

    /// Default-deny over `registry`'s ACL records; starts the task that keeps the table current
    /// (it ends with the runtime).
    pub async fn enabled(registry: RegistryHandle) -> Acl {
        let state = Arc::new(AclState {
            registry,
            table: RwLock::new(Arc::new(AclTable::default())),
        });
        let acl = Acl { state: Some(state) };
        acl.refresh().await;
        if let Some(state) = &acl.state {
            tokio::spawn(keep_current(Arc::downgrade(state)));
        }
        acl
    }

    pub fn is_enabled(&self) -> bool {
        self.state.is_some()
    }

    /// The identity of a presented secret, from the in-memory table.
    pub fn identify(&self, secret: &str) -> Option<Arc<Identity>> {
        self.table()?.identify(secret)
    }

    /// The identity of the live token whose secret hashes to `hash` (a forwarded write).
    pub fn identify_hash(&self, hash: &str) -> Option<Arc<Identity>> {
        self.table()?.identify_hash(hash)
    }

    fn table(&self) -> Option<Arc<AclTable>> {
        let state = self.state.as_ref()?;
        Some(
            state
                .table
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }

    /// Re-reads `/lathe/acl` from this node's registry replica and swaps the table in. REST
    /// handlers call it after their own ACL writes, so the answer is true on this node at once.
    pub async fn refresh(&self) {
        let Some(state) = &self.state else { return };
        match state.registry.list(&records::acl_key()).await {
            Ok((entries, index)) => {
                let table = Arc::new(AclTable::from_entries(&entries, index));
                let mut current = state.table.write().unwrap_or_else(|e| e.into_inner());
                // Two refreshes may race: never put an older reading over a newer one.
                if table.index >= current.index {
                    *current = table;
                }
            }
            Err(error) => tracing::warn!(%error, "cannot read the acl records: keeping the table"),
        }
    }

    pub(crate) fn registry(&self) -> Option<&RegistryHandle> {
        self.state.as_ref().map(|s| &s.registry)
    }
}

/// Rebuilds the table on every change under `/lathe/acl`, and every [`REFRESH_EVERY`]. Holds
/// the state weakly and ends once every [`Acl`] handle is gone (a node supervisor that restarts
/// makes a new one: the old task must not live on beside it).
async fn keep_current(state: Weak<AclState>) {
    let alive = || state.upgrade().map(|state| Acl { state: Some(state) });
    loop {
        let Some(registry) = alive().and_then(|acl| acl.registry().cloned()) else {
            return;
        };
        let subscribed = registry.subscribe(&records::acl_key(), None).await;
        drop(registry);
        let mut subscription = match subscribed {
            Ok(subscription) => subscription,
            Err(error) => {
                tracing::warn!(%error, "cannot watch the acl records: retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        // A change (or a snapshot), or REFRESH_EVERY without one: re-read. The end of the
        // stream (a restarting shard): subscribe again.
        while !matches!(
            tokio::time::timeout(REFRESH_EVERY, subscription.next()).await,
            Ok(None)
        ) {
            let Some(acl) = alive() else { return };
            acl.refresh().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{start_registry, RegistryConfig};

    /// The refresh task does not keep an ACL alive: once its handles are gone (a restarted node
    /// supervisor made a new one), the table and its registry handle are freed.
    #[tokio::test]
    async fn the_refresh_task_lets_a_dropped_acl_go() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Arc::new(lathe_store::embedded::EmbeddedStore::open(dir.path()).unwrap());
        let metrics = prometheus::Registry::new();
        let (registry, _) = start_registry(RegistryConfig::default(), store, &metrics, None)
            .await
            .expect("the registry starts");
        let acl = Acl::enabled(registry).await;
        let state = Arc::downgrade(acl.state.as_ref().expect("enabled"));
        drop(acl);
        // The task may be in the middle of a refresh (its first one, on the subscription's
        // snapshot): it lets go when that ends.
        let deadline = tokio::time::Instant::now() + REFRESH_EVERY * 3;
        while state.upgrade().is_some() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the refresh task still holds the acl"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
