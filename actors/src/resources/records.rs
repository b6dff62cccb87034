//! The containers the leader asked for, kept in the registry (`/lathe/resources/<backend>/<id>`)
//! so that a new leader adopts them instead of asking again.

use std::time::Duration;

use lathe::layout;
use lathe_resources::ContainerId;
use serde::{Deserialize, Serialize};

use crate::registry::{RegistryError, RegistryHandle};

/// How often a record write or delete is tried before it is given up (and logged).
const ATTEMPTS: u32 = 5;
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// One container a leader asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub backend: String,
    pub container: ContainerId,
    /// The name of its node (`yarn-<n>`).
    pub node: String,
    /// `requested` or `running`.
    pub state: String,
    /// When it was requested, in milliseconds since the Unix epoch.
    pub requested_at_ms: u64,
    /// The leader that asked for it.
    pub requested_by: String,
}

/// Every record of `backend`.
pub(crate) async fn read(
    registry: &RegistryHandle,
    backend: &str,
) -> Result<Vec<ContainerRecord>, RegistryError> {
    let (entries, _) = registry.list(&layout::resources(backend)).await?;
    Ok(entries
        .into_iter()
        .filter_map(|entry| serde_json::from_value(entry.value).ok())
        .collect())
}

/// Writes `record` in the background, retrying a few times.
pub(crate) fn write(registry: RegistryHandle, record: ContainerRecord) {
    tokio::spawn(async move {
        let key = layout::resource(&record.backend, record.container.as_str());
        let Ok(value) = serde_json::to_value(&record) else {
            return;
        };
        for attempt in 1..=ATTEMPTS {
            match registry.put(&key, value.clone(), None).await {
                Ok(_) => return,
                Err(error) if attempt == ATTEMPTS => {
                    tracing::warn!(%error, container = %record.container,
                        "container record not written: a new leader will not adopt it")
                }
                Err(_) => tokio::time::sleep(RETRY_AFTER).await,
            }
        }
    });
}

/// Deletes the record of `container` in the background, retrying a few times.
pub(crate) fn delete(registry: RegistryHandle, backend: &'static str, container: ContainerId) {
    tokio::spawn(async move {
        let key = layout::resource(backend, container.as_str());
        for attempt in 1..=ATTEMPTS {
            match registry.delete(&key, None, false).await {
                Ok(_) => return,
                Err(error) if attempt == ATTEMPTS => {
                    tracing::warn!(%error, %container, "container record not deleted")
                }
                Err(_) => tokio::time::sleep(RETRY_AFTER).await,
            }
        }
    });
}
