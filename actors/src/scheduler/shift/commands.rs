//! Starting and steering traffic shifts (what `/v1/shifts` and `lathe rollout shift` ask for):
//! the checks, the records, and their compare-and-set writes. The REST handler only parses the
//! request and maps a [`ShiftError`] to a status.

use lathe::layout::{self, ShiftRecord, ShiftState};
use lathe::KeyPath;
use lathe_store::StoreError;
use serde_json::Value;

use super::{command, parse_split, percent_of, CommandError, SplitError};
use crate::registry::{RegistryError, RegistryHandle};
use crate::scheduler::rollout::unix_ms;

/// Why a shift cannot be started, read or steered.
#[derive(Debug, thiserror::Error)]
pub enum ShiftError {
    #[error("bad key {raw:?}: {why}")]
    BadKey { raw: String, why: String },
    #[error("a shift moves a group's metadata key, not {0}")]
    NotMetadata(KeyPath),
    #[error("step must be 1 to 100 percentage points, got {0}")]
    BadStep(u32),
    #[error("every_seconds must be 1 to 86400, got {0}")]
    BadPeriod(u32),
    #[error("no value at {0} to shift")]
    NoValue(KeyPath),
    #[error("{key}: {why}")]
    BadSplit { key: KeyPath, why: SplitError },
    #[error("{key} splits between {groups:?}: {to} is not one of them")]
    NotInSplit {
        key: KeyPath,
        groups: Vec<String>,
        to: String,
    },
    #[error("{to} already has all the traffic of {key}")]
    AlreadyAll { key: KeyPath, to: String },
    #[error("{key} is already shifting to {to} ({state}): undo it first")]
    AlreadyShifting {
        key: KeyPath,
        to: String,
        state: &'static str,
    },
    #[error("a shift of {0} started meanwhile")]
    StartedMeanwhile(KeyPath),
    #[error("no shift of {0}")]
    NoShift(KeyPath),
    #[error("unreadable shift of {key}: {why}")]
    Unreadable { key: KeyPath, why: String },
    /// A command that does not apply to the shift's state (or an unknown one).
    #[error(transparent)]
    Refused(#[from] CommandError),
    #[error("cannot encode the shift of {key}: {why}")]
    Encode { key: KeyPath, why: String },
    #[error("the shift of {0} changed meanwhile: retry")]
    ChangedMeanwhile(KeyPath),
    #[error("{key} changed meanwhile: the shift is {state}; retry the undo")]
    SplitChangedMeanwhile { key: KeyPath, state: &'static str },
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// What starting a shift asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartShift {
    /// The metadata key holding the split ([`shift_key`]).
    pub key: KeyPath,
    /// The group the traffic moves to.
    pub to: String,
    /// Percentage points per step, 1 to 100.
    pub step: u32,
    /// Seconds between steps, 1 to 86400.
    pub every_seconds: u32,
}

impl StartShift {
    /// Checks what needs no registry: the step and its period.
    pub fn check(&self) -> Result<(), ShiftError> {
        if !(1..=100).contains(&self.step) {
            return Err(ShiftError::BadStep(self.step));
        }
        if !(1..=86_400).contains(&self.every_seconds) {
            return Err(ShiftError::BadPeriod(self.every_seconds));
        }
        Ok(())
    }
}

/// The metadata key a shift is about: a registry path outside `/lathe`.
pub fn shift_key(raw: &str) -> Result<KeyPath, ShiftError> {
    let key =
        KeyPath::parse(&format!("/{}", raw.trim_matches('/'))).map_err(|e| ShiftError::BadKey {
            raw: raw.to_string(),
            why: e.to_string(),
        })?;
    if key.is_root() || key.is_reserved() {
        return Err(ShiftError::NotMetadata(key));
    }
    Ok(key)
}

/// The record that starts `request` on the split `current` at `now_ms`, unless `existing` (the
/// key's last shift) still moves it. Pure.
pub fn start_record(
    request: &StartShift,
    current: Option<&Value>,
    existing: Option<&ShiftRecord>,
    now_ms: u64,
) -> Result<ShiftRecord, ShiftError> {
    request.check()?;
    let key = &request.key;
    let current = current.ok_or_else(|| ShiftError::NoValue(key.clone()))?;
    let split = parse_split(current).map_err(|why| ShiftError::BadSplit {
        key: key.clone(),
        why,
    })?;
    if !split.iter().any(|(group, _)| *group == request.to) {
        return Err(ShiftError::NotInSplit {
            key: key.clone(),
            groups: split.into_iter().map(|(g, _)| g).collect(),
            to: request.to.clone(),
        });
    }
    let percent = percent_of(&split, &request.to);
    if percent >= 100 {
        return Err(ShiftError::AlreadyAll {
            key: key.clone(),
            to: request.to.clone(),
        });
    }
    if let Some(record) = existing {
        if matches!(record.state, ShiftState::Shifting | ShiftState::Paused) {
            return Err(ShiftError::AlreadyShifting {
                key: key.clone(),
                to: record.to.clone(),
                state: record.state.name(),
            });
        }
    }
    Ok(ShiftRecord {
        key: key.as_str().to_string(),
        to: request.to.clone(),
        step: request.step,
        every_seconds: request.every_seconds,
        original: current.clone(),
        written: current.clone(),
        previous: current.clone(),
        percent,
        state: ShiftState::Shifting,
        restarts: 0,
        reason: None,
        // The first step comes after `every_seconds`, like the others.
        last_step_ms: now_ms,
        started_ms: now_ms,
        updated_ms: now_ms,
        gate_baseline: None,
    })
}

/// Every shift record, and the registry index they were read at.
pub async fn list(registry: &RegistryHandle) -> Result<(Vec<ShiftRecord>, u64), ShiftError> {
    let prefix = KeyPath::parse(layout::SHIFTS).map_err(|e| ShiftError::BadKey {
        raw: layout::SHIFTS.to_string(),
        why: e.to_string(),
    })?;
    let (entries, index) = registry.list(&prefix).await?;
    let records = entries
        .into_iter()
        .filter_map(|e| serde_json::from_value(e.value).ok())
        .collect();
    Ok((records, index))
}

/// The shift of `key`, with its record's version.
pub async fn read(
    registry: &RegistryHandle,
    key: &KeyPath,
) -> Result<(ShiftRecord, u64), ShiftError> {
    let (entry, _) = registry.get(&layout::shift(key)).await?;
    let entry = entry.ok_or_else(|| ShiftError::NoShift(key.clone()))?;
    let record = serde_json::from_value(entry.value).map_err(|e| ShiftError::Unreadable {
        key: key.clone(),
        why: e.to_string(),
    })?;
    Ok((record, entry.version))
}

/// Starts `request`: checks it against the key's split and its last shift, and stores the
/// record (compare-and-set: a shift started meanwhile wins). The scheduler leader steps it.
pub async fn start(
    registry: &RegistryHandle,
    request: &StartShift,
) -> Result<ShiftRecord, ShiftError> {
    request.check()?;
    let key = &request.key;
    let current = registry.get(key).await?.0.map(|entry| entry.value);
    if current.is_none() {
        return Err(ShiftError::NoValue(key.clone()));
    }
    let existing = registry.get(&layout::shift(key)).await?.0;
    let existing_record = existing
        .as_ref()
        .and_then(|e| serde_json::from_value::<ShiftRecord>(e.value.clone()).ok());
    let record = start_record(
        request,
        current.as_ref(),
        existing_record.as_ref(),
        unix_ms(),
    )?;
    let value = encode(key, &record)?;
    let cas = existing.map_or(0, |e| e.version);
    match registry.put(&layout::shift(key), value, Some(cas)).await {
        Ok(_) => Ok(record),
        Err(RegistryError::Store(StoreError::CasMismatch { .. })) => {
            Err(ShiftError::StartedMeanwhile(key.clone()))
        }
        Err(e) => Err(e.into()),
    }
}

/// Runs `pause`, `resume` or `undo` on the shift of `key` ([`command`]): stores its record, then
/// the split it puts back, each compare-and-set on the version read.
pub async fn steer(
    registry: &RegistryHandle,
    key: &KeyPath,
    name: &str,
) -> Result<ShiftRecord, ShiftError> {
    let (record, version) = read(registry, key).await?;
    let (entry, _) = registry.get(key).await?;
    let (current, key_version) = match &entry {
        Some(entry) => (Some(&entry.value), entry.version),
        None => (None, 0),
    };
    let step = command(&record, name, current, unix_ms()).map_err(ShiftError::Refused)?;
    let value = encode(key, &step.record)?;
    registry
        .put(&layout::shift(key), value, Some(version))
        .await
        .map_err(|e| match e {
            RegistryError::Store(StoreError::CasMismatch { .. }) => {
                ShiftError::ChangedMeanwhile(key.clone())
            }
            other => other.into(),
        })?;
    if let Some(split) = step.write {
        registry
            .put(key, split, Some(key_version))
            .await
            .map_err(|e| match e {
                RegistryError::Store(StoreError::CasMismatch { .. }) => {
                    ShiftError::SplitChangedMeanwhile {
                        key: key.clone(),
                        state: step.record.state.name(),
                    }
                }
                other => other.into(),
            })?;
    }
    Ok(step.record)
}

fn encode(key: &KeyPath, record: &ShiftRecord) -> Result<Value, ShiftError> {
    serde_json::to_value(record).map_err(|e| ShiftError::Encode {
        key: key.clone(),
        why: e.to_string(),
    })
}
