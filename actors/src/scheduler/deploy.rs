//! Deploying a topology: validate it, write its groups' metadata, store it for the scheduler.
//!
//! Any node can deploy (it is a registry write); the scheduler leader reacts to the stored
//! topology. Group metadata keys are written only where the TOML changed since the last deploy, so
//! a value changed at run time (`PUT /v1/kv/task/http/lb/backend_distribution`) survives a
//! redeploy that leaves that key alone; keys removed from the TOML are deleted.

use std::collections::BTreeMap;

use lathe::layout;
use lathe::topology::{self, GroupSpec, Topology, TopologyError};
use lathe::KeyPath;
use serde::{Deserialize, Serialize};

use crate::registry::{RegistryError, RegistryHandle};

/// What `/lathe/topology` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopologyRecord {
    /// The file name the topology was deployed from.
    pub file: String,
    /// The TOML as deployed.
    pub source: String,
    pub topology: Topology,
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
    let previous = current(registry).await?;
    let old_topology = previous.as_ref().map(|(record, _)| &record.topology);
    let (writes, deletes) = metadata_changes(old_topology, &new);
    let (metadata_written, metadata_deleted) = (writes.len(), deletes.len());
    for (key, value) in writes {
        registry.put(&key, value, None).await?;
    }
    for key in deletes {
        registry.delete(&key, None, false).await?;
    }
    let record = TopologyRecord {
        file: file.to_string(),
        source: source.to_string(),
        topology: new,
    };
    let groups = record.topology.groups.len();
    let value = serde_json::to_value(&record).map_err(|e| DeployError::Corrupt(e.to_string()))?;
    // CAS on the record we read: two deploys racing cannot interleave their metadata unnoticed.
    let cas = Some(previous.map(|(_, version)| version).unwrap_or(0));
    let version = match registry.put(&topology_key(), value, cas).await {
        Err(RegistryError::Store(lathe_store::StoreError::CasMismatch { .. })) => {
            return Err(DeployError::Conflict)
        }
        other => other?,
    };
    tracing::info!(file, groups, version, "topology deployed");
    Ok(DeployOutcome {
        version,
        groups,
        metadata_written,
        metadata_deleted,
    })
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
