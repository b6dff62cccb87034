//! Deploying a topology: validate it, write its groups' metadata, store it for the scheduler.
//!
//! Any node can deploy (it is a registry write); the scheduler leader reacts to the stored
//! topology. Group metadata keys are written only where the TOML changed since the last deploy, so
//! a value changed at run time (`PUT /v1/kv/task/http/lb/backend_distribution`) survives a
//! redeploy that leaves that key alone; keys removed from the TOML are deleted.
//!
//! A deploy cannot be left half-applied: the topology record is written first (one CAS write,
//! the deploy's commit point) carrying the metadata changes it still owes (`pending`); the
//! changes are then applied and the record written once more without them. A deploy that fails
//! before its record is written changed nothing; one that fails after is completed by whoever
//! reads the record next ([`complete_pending`]: the next deploy, and every scheduler reconcile).

use std::collections::BTreeMap;

use lathe::layout;
use lathe::topology::{self, GroupSpec, Topology, TopologyError};
use lathe::KeyPath;
use serde::{Deserialize, Serialize};

use crate::registry::{RegistryError, RegistryHandle};

#[cfg(test)]
mod tests;

/// What `/lathe/topology` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopologyRecord {
    /// The file name the topology was deployed from.
    pub file: String,
    /// The TOML as deployed.
    pub source: String,
    pub topology: Topology,
    /// Metadata changes of this deploy not known to be applied yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingMetadata>,
}

/// The group metadata a deploy writes and deletes, kept in its record until applied.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PendingMetadata {
    pub writes: Vec<(KeyPath, serde_json::Value)>,
    pub deletes: Vec<KeyPath>,
}

/// Why a deploy was refused.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("{0}")]
    Invalid(TopologyError),
    #[error("another deploy happened at the same time; retry")]
    Conflict,
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("the stored topology is unreadable: {0}")]
    Corrupt(String),
}

/// What a deploy changed.
#[derive(Debug, Clone, Serialize)]
pub struct DeployOutcome {
    pub version: u64,
    pub groups: usize,
    pub metadata_written: usize,
    pub metadata_deleted: usize,
}

/// The deployed topology, if any, with the version of its record.
pub async fn current(
    registry: &RegistryHandle,
) -> Result<Option<(TopologyRecord, u64)>, DeployError> {
    let key = topology_key();
    let (entry, _) = registry.get(&key).await?;
    match entry {
        None => Ok(None),
        Some(entry) => serde_json::from_value(entry.value)
            .map(|record| Some((record, entry.version)))
            .map_err(|e| DeployError::Corrupt(e.to_string())),
    }
}

/// Validates `source` and deploys it.
pub async fn deploy(
    registry: &RegistryHandle,
    file: &str,
    source: &str,
) -> Result<DeployOutcome, DeployError> {
    let new = topology::parse(file, source).map_err(DeployError::Invalid)?;
    // An earlier deploy's metadata first, so that this one's changes are counted from it.
    complete_pending(registry).await?;
    let previous = current(registry).await?;
    let old_topology = previous.as_ref().map(|(record, _)| &record.topology);
    let (writes, deletes) = metadata_changes(old_topology, &new);
    let (metadata_written, metadata_deleted) = (writes.len(), deletes.len());
    let groups = new.groups.len();
    let pending = PendingMetadata { writes, deletes };
    let record = TopologyRecord {
        file: file.to_string(),
        source: source.to_string(),
        topology: new,
        pending: (!pending.writes.is_empty() || !pending.deletes.is_empty()).then_some(pending),
    };
    // CAS on the record we read: two deploys racing cannot interleave their metadata unnoticed.
    let cas = previous.map(|(_, version)| version).unwrap_or(0);
    let mut version = write_record(registry, &record, cas).await?;
    if record.pending.is_some() {
        version = apply_pending(registry, record, version)
            .await?
            .unwrap_or(version);
    }
    tracing::info!(file, groups, version, "topology deployed");
    Ok(DeployOutcome {
        version,
        groups,
        metadata_written,
        metadata_deleted,
    })
}

/// Applies the metadata changes a stored deploy still owes (one that failed or stopped after its
/// record was written); returns whether there were any.
pub async fn complete_pending(registry: &RegistryHandle) -> Result<bool, DeployError> {
    match current(registry).await? {
        Some((record, version)) if record.pending.is_some() => {
            tracing::info!(file = %record.file, version, "completing the metadata of a deploy");
            apply_pending(registry, record, version).await?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Writes `record`'s pending metadata, then the record without it (CAS `version`); returns the
/// record's new version, or `None` when another deploy replaced the record meanwhile (that one
/// carries on from there).
async fn apply_pending(
    registry: &RegistryHandle,
    mut record: TopologyRecord,
    version: u64,
) -> Result<Option<u64>, DeployError> {
    let Some(pending) = record.pending.take() else {
        return Ok(Some(version));
    };
    for (key, value) in pending.writes {
        registry.put(&key, value, None).await?;
    }
    for key in pending.deletes {
        registry.delete(&key, None, false).await?;
    }
    match write_record(registry, &record, version).await {
        Ok(version) => Ok(Some(version)),
        Err(DeployError::Conflict) => Ok(None),
        Err(error) => Err(error),
    }
}

/// Writes the topology record if its version is still `cas` (0: none yet).
async fn write_record(
    registry: &RegistryHandle,
    record: &TopologyRecord,
    cas: u64,
) -> Result<u64, DeployError> {
    let value = serde_json::to_value(record).map_err(|e| DeployError::Corrupt(e.to_string()))?;
    match registry.put(&topology_key(), value, Some(cas)).await {
        Err(RegistryError::Store(lathe_store::StoreError::CasMismatch { .. })) => {
            Err(DeployError::Conflict)
        }
        other => Ok(other?),
    }
}

fn topology_key() -> KeyPath {
    KeyPath::parse(layout::TOPOLOGY).unwrap_or_else(|_| KeyPath::root())
}

/// The metadata keys to write (new or changed in the TOML) and to delete (gone from the TOML).
fn metadata_changes(
    old: Option<&Topology>,
    new: &Topology,
) -> (Vec<(KeyPath, serde_json::Value)>, Vec<KeyPath>) {
    let index = |topology: Option<&Topology>| -> BTreeMap<KeyPath, serde_json::Value> {
        topology
            .into_iter()
            .flat_map(|t| t.groups.iter())
            .flat_map(group_metadata)
            .collect()
    };
    let (old, new) = (index(old), index(Some(new)));
    let writes = new
        .iter()
        .filter(|(key, value)| old.get(*key) != Some(*value))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    let deletes = old
        .keys()
        .filter(|key| !new.contains_key(*key))
        .cloned()
        .collect();
    (writes, deletes)
}

fn group_metadata(group: &GroupSpec) -> Vec<(KeyPath, serde_json::Value)> {
    group
        .metadata
        .iter()
        .filter_map(|(key, value)| Some((group.path.child(key).ok()?, value.clone())))
        .collect()
}
