//! The REST caller behind a registry write, carried to whoever applies it.
//!
//! Without ZooKeeper, a joined node's writes travel over the cluster transport to the founding
//! node's store server. The cluster cookie only says the sender is a cluster member; it says
//! nothing about who asked that member to write. So a write made on behalf of a REST caller
//! carries a [`Writer`] — the hash of the caller's token and the permission the node checked —
//! and the store server checks it again against its own table (the freshest one: it holds the
//! store), refusing a token revoked meanwhile, one whose policy no longer grants the permission,
//! and a key write outside the key the permission names.
//!
//! Writes with no writer are the nodes' own (assignments, endpoints, membership, the scheduler's
//! shift steps): they are trusted on the cookie, as a cluster member is trusted to run tasks.
//!
//! The writer rides a tokio task-local from the REST handler to `RegistryHandle`, in the shard's
//! write message to the shard's write task, and in `PutRequest`/`DeleteRequest` over the wire.

use std::future::Future;
use std::sync::{Arc, RwLock};

use lathe::KeyPath;
use serde::{Deserialize, Serialize};

use super::{Acl, Permission};

/// Who asked for a write, as checked by the node that took the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Writer {
    /// Hex SHA-256 of the caller's token secret (never the secret itself).
    pub token_hash: String,
    /// The permission the request was admitted with.
    pub permission: Permission,
}

tokio::task_local! {
    static WRITER: Writer;
}

/// Runs `future` with `writer` as the caller of the registry writes it makes.
pub async fn scope<F: Future>(writer: Option<Writer>, future: F) -> F::Output {
    match writer {
        Some(writer) => WRITER.scope(writer, future).await,
        None => future.await,
    }
}

/// The caller of the current task's writes, if a REST caller with a token is behind them.
pub fn current() -> Option<Writer> {
    WRITER.try_with(Writer::clone).ok()
}

/// Why a store server refuses a write forwarded by a joined node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteRefusal {
    /// No live token has the hash the write carries.
    #[error("acl: the token of this write is unknown or revoked")]
    UnknownToken,
    /// The token no longer grants the permission the write was admitted with.
    #[error("acl: token {accessor} lacks {permission}")]
    Lacks {
        accessor: String,
        permission: Permission,
    },
    /// The key is not under the prefix the write was admitted for.
    #[error("acl: the write of {key} is outside the {permission} it was admitted for")]
    Outside {
        key: KeyPath,
        permission: Permission,
    },
}

/// The ACL a store server checks forwarded writes against; set once the node's registry (and
/// with it its ACL table) runs, which is after the store server starts.
#[derive(Clone, Default)]
pub struct WriteGate(Arc<RwLock<Option<Acl>>>);

impl WriteGate {
    pub fn install(&self, acl: Acl) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(acl);
    }

    /// Whether a forwarded write of `key` by `writer` may go ahead; `Err` says why not.
    pub fn check(&self, key: &KeyPath, writer: Option<&Writer>) -> Result<(), WriteRefusal> {
        let acl = self.0.read().unwrap_or_else(|e| e.into_inner()).clone();
        let (Some(acl), Some(writer)) = (acl.filter(Acl::is_enabled), writer) else {
            return Ok(());
        };
        let identity = acl
            .identify_hash(&writer.token_hash)
            .ok_or(WriteRefusal::UnknownToken)?;
        if !identity.allows(&writer.permission) {
            return Err(WriteRefusal::Lacks {
                accessor: identity.accessor.clone(),
                permission: writer.permission.clone(),
            });
        }
        if let Permission::KeyWrite(allowed) = &writer.permission {
            if !key.is_under(allowed) {
                return Err(WriteRefusal::Outside {
                    key: key.clone(),
                    permission: writer.permission.clone(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_writer_is_seen_inside_its_scope_only() {
        let writer = Writer {
            token_hash: "h".into(),
            permission: Permission::Deploy,
        };
        assert_eq!(current(), None);
        let seen = scope(Some(writer.clone()), async { current() }).await;
        assert_eq!(seen, Some(writer));
        assert_eq!(scope(None, async { current() }).await, None);
    }

    #[test]
    fn an_open_gate_lets_everything_through() {
        let key = KeyPath::parse("/a").unwrap();
        let writer = Writer {
            token_hash: "nobody".into(),
            permission: Permission::Deploy,
        };
        assert!(WriteGate::default().check(&key, Some(&writer)).is_ok());
        let gate = WriteGate::default();
        gate.install(Acl::disabled());
        assert!(gate.check(&key, Some(&writer)).is_ok());
    }

    /// The store server's check of a forwarded write, against a real registry's ACL records.
    #[tokio::test]
    async fn a_forwarded_write_is_checked_against_the_receivers_table() {
        use crate::acl::records::{hash_secret, policies_key, tokens_key};
        use crate::acl::{PolicyRecord, Rule, TokenRecord};
        use crate::registry::{start_registry, RegistryConfig};

        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Arc::new(lathe_store::embedded::EmbeddedStore::open(dir.path()).unwrap());
        let metrics = prometheus::Registry::new();
        let (registry, _) = start_registry(RegistryConfig::default(), store, &metrics, None)
            .await
            .expect("the registry starts");
        let policy = PolicyRecord {
            name: "app".into(),
            rules: vec![Rule::parse("key:/app:write").unwrap()],
            description: String::new(),
        };
        let token_key = tokens_key().child("t1").unwrap();
        let token = TokenRecord {
            accessor: "t1".into(),
            hash: hash_secret("secret"),
            policies: vec!["app".into()],
            management: false,
            description: String::new(),
            revoked: false,
        };
        let policy_key = policies_key().child("app").unwrap();
        registry
            .put(&policy_key, serde_json::to_value(&policy).unwrap(), None)
            .await
            .unwrap();
        registry
            .put(&token_key, serde_json::to_value(&token).unwrap(), None)
            .await
            .unwrap();
        let acl = Acl::enabled(registry.clone()).await;
        let gate = WriteGate::default();
        gate.install(acl.clone());

        let key = |path: &str| KeyPath::parse(path).unwrap();
        let writer = |hash: &str, permission: Permission| Writer {
            token_hash: hash.to_string(),
            permission,
        };
        let app_write = writer(&hash_secret("secret"), Permission::KeyWrite(key("/app/x")));
        assert_eq!(gate.check(&key("/app/x"), Some(&app_write)), Ok(()));
        assert_eq!(
            gate.check(&key("/anything"), None),
            Ok(()),
            "the nodes' own writes"
        );
        let outside = gate.check(&key("/other"), Some(&app_write)).unwrap_err();
        assert!(outside.to_string().contains("outside"), "{outside}");
        let claimed = writer(&hash_secret("secret"), Permission::Deploy);
        let lacks = gate.check(&key("/task/x"), Some(&claimed)).unwrap_err();
        assert!(
            lacks.to_string().contains("lacks topology write"),
            "{lacks}"
        );
        let unknown = writer(&hash_secret("guess"), Permission::KeyWrite(key("/app/x")));
        assert!(gate.check(&key("/app/x"), Some(&unknown)).is_err());

        registry.delete(&token_key, None, false).await.unwrap();
        acl.refresh().await;
        let revoked = gate.check(&key("/app/x"), Some(&app_write)).unwrap_err();
        assert_eq!(revoked, WriteRefusal::UnknownToken);
    }
}
