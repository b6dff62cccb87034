//! Writes a node's instance records (`/lathe/instances/...`) and endpoints (`/lathe/endpoints/...`)
//! in the order they were asked for, off the actors' handlers.
//!
//! A record this node wrote is updated and deleted only with CAS on the version it wrote: when an
//! instance moves to another node, the new owner's records are never overwritten or deleted by the
//! old one's late writes.

use std::collections::HashMap;
use std::time::Duration;

use lathe::layout::{self, InstanceStatus};
use lathe::{Endpoint, KeyPath};
use lathe_store::StoreError;
use tokio::sync::{mpsc, oneshot};

use crate::registry::{RegistryError, RegistryHandle};

const ATTEMPTS: u32 = 5;
const RETRY_FIRST: Duration = Duration::from_millis(100);

enum StatusOp {
    Put(KeyPath, serde_json::Value),
    Delete(KeyPath),
    Flush(oneshot::Sender<()>),
}

/// The sending side; cheap to clone. Writes go out in the order they were sent.
#[derive(Clone)]
pub(crate) struct StatusWriter {
    ops: mpsc::UnboundedSender<StatusOp>,
}

impl StatusWriter {
    /// Starts the writer task; it ends when every `StatusWriter` is dropped.
    pub(crate) fn start(registry: RegistryHandle) -> Self {
        let (ops, receiver) = mpsc::unbounded_channel();
        tokio::spawn(run(registry, receiver));
        StatusWriter { ops }
    }

    pub(crate) fn instance(&self, status: &InstanceStatus) {
        self.put(layout::instance(&status.group, status.index), status);
    }

    /// Deletes the instance record, if it is still the one this node wrote.
    pub(crate) fn forget_instance(&self, group: &str, index: u32) {
        let _ = self
            .ops
            .send(StatusOp::Delete(layout::instance(group, index)));
    }

    pub(crate) fn endpoint(&self, endpoint: &Endpoint) {
        self.put(layout::endpoint(&endpoint.group, endpoint.index), endpoint);
    }

    /// Deletes the endpoint, if it is still the one this node wrote.
    pub(crate) fn forget_endpoint(&self, group: &str, index: u32) {
        let _ = self
            .ops
            .send(StatusOp::Delete(layout::endpoint(group, index)));
    }

    /// Waits until everything sent before has been written (or given up on).
    pub(crate) async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.ops.send(StatusOp::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }

    fn put(&self, key: KeyPath, value: &impl serde::Serialize) {
        match serde_json::to_value(value) {
            Ok(value) => {
                let _ = self.ops.send(StatusOp::Put(key, value));
            }
            Err(error) => tracing::error!(%key, %error, "cannot encode a task record"),
        }
    }
}

async fn run(registry: RegistryHandle, mut ops: mpsc::UnboundedReceiver<StatusOp>) {
    // The version this node last wrote at each key it owns.
    let mut owned: HashMap<KeyPath, u64> = HashMap::new();
    while let Some(op) = ops.recv().await {
        match op {
            StatusOp::Put(key, value) => {
                let cas = owned.get(&key).copied();
                match with_retries(|| registry.put(&key, value.clone(), cas)).await {
                    Ok(version) => {
                        owned.insert(key, version);
                    }
                    Err(error) => {
                        owned.remove(&key);
                        report(&key, &error);
                    }
                }
            }
            StatusOp::Delete(key) => {
                let Some(version) = owned.remove(&key) else {
                    continue;
                };
                if let Err(error) =
                    with_retries(|| registry.delete(&key, Some(version), false)).await
                {
                    report(&key, &error);
                }
            }
            StatusOp::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// Deletes the endpoints and instance records a previous run of this node left behind (a node
/// killed without a drain). Runs before the node's instances start; CAS on the listed versions
/// leaves anything rewritten meanwhile alone.
pub(crate) async fn clear_previous_run(registry: &RegistryHandle, node: &str) {
    for prefix in [layout::ENDPOINTS, layout::INSTANCES] {
        let Ok(prefix) = KeyPath::parse(prefix) else {
            continue;
        };
        let entries = match registry.list(&prefix).await {
            Ok((entries, _)) => entries,
            Err(error) => {
                tracing::warn!(%prefix, %error, "cannot list the records of a previous run");
                continue;
            }
        };
        let stale = entries
            .into_iter()
            .filter(|entry| entry.value.get("node").and_then(|n| n.as_str()) == Some(node));
        for entry in stale {
            match registry
                .delete(&entry.key, Some(entry.version), false)
                .await
            {
                Ok(_) => {
                    tracing::info!(key = %entry.key, "removed a record of this node's previous run")
                }
                Err(error) => report(&entry.key, &error),
            }
        }
    }
}

/// Retries while the registry is unavailable (a restarting shard, ZooKeeper away).
async fn with_retries<T, F, Fut>(mut call: F) -> Result<T, RegistryError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, RegistryError>>,
{
    let mut delay = RETRY_FIRST;
    let mut attempt = 1;
    loop {
        match call().await {
            Err(error) if is_transient(&error) && attempt < ATTEMPTS => {
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            result => return result,
        }
    }
}

fn is_transient(error: &RegistryError) -> bool {
    matches!(
        error,
        RegistryError::Unavailable(_) | RegistryError::Store(StoreError::Unavailable(_))
    )
}

fn report(key: &KeyPath, error: &RegistryError) {
    if matches!(error, RegistryError::Store(StoreError::CasMismatch { .. })) {
        tracing::debug!(%key, "task record changed by another node: left to it");
    } else {
        tracing::warn!(%key, %error, "cannot write a task record");
    }
}
