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

/// The ACL a store server checks forwarded writes against; set once the node's registry (and
/// with it its ACL table) runs, which is after the store server starts.
#[derive(Clone, Default)]
pub struct WriteGate(Arc<RwLock<Option<Acl>>>);

impl WriteGate {
    pub fn install(&self, acl: Acl) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(acl);
    }

    /// Whether a forwarded write of `key` by `writer` may go ahead; `Err` says why not.
    pub fn check(&self, key: &KeyPath, writer: Option<&Writer>) -> Result<(), String> {
        let acl = self.0.read().unwrap_or_else(|e| e.into_inner()).clone();
        let (Some(acl), Some(writer)) = (acl.filter(Acl::is_enabled), writer) else {
            return Ok(());
        };
        let identity = acl
            .identify_hash(&writer.token_hash)
            .ok_or("acl: the token of this write is unknown or revoked")?;
        if !identity.allows(&writer.permission) {
            return Err(format!(
                "acl: token {} lacks {}",
                identity.accessor, writer.permission
            ));
        }
        if let Permission::KeyWrite(allowed) = &writer.permission {
            if !key.is_under(allowed) {
                return Err(format!(
                    "acl: the write of {key} is outside the {} it was admitted for",
                    writer.permission
                ));
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
}
