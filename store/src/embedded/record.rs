//! The on-disk layout of the embedded store: RocksDB keys and the binary record of one entry.
//!
//! ```text
//! key  "k" + registry path            value  record (below)
//! key  "m/index"                      value  u64 big-endian: the global index
//!
//! record = format (1 byte, = 1) · kind (1 byte: 0 tombstone, 1 live) · version (u64 BE)
//!          · modified at (u64 BE, ms since the epoch) · JSON value (live only)
//! ```

use lathe::KeyPath;

use crate::{StoreError, StoredEntry};

/// The RocksDB key of the global index.
pub(super) const INDEX_KEY: &[u8] = b"m/index";
/// The first byte of every entry's RocksDB key.
pub(super) const ENTRY_PREFIX: &[u8] = b"k";

const FORMAT: u8 = 1;
const TOMBSTONE: u8 = 0;
const LIVE: u8 = 1;
const HEADER_LEN: usize = 1 + 1 + 8 + 8;

/// One decoded record.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Record {
    pub(super) value: Option<serde_json::Value>,
    pub(super) version: u64,
    pub(super) modified_ms: u64,
}

impl Record {
    pub(super) fn is_live(&self) -> bool {
        self.value.is_some()
    }

    pub(super) fn into_entry(self, key: KeyPath) -> StoredEntry {
        StoredEntry {
            key,
            value: self.value,
            version: self.version,
        }
    }
}

/// The RocksDB key of a registry key.
pub(super) fn entry_key(key: &KeyPath) -> Vec<u8> {
    let mut bytes = ENTRY_PREFIX.to_vec();
    bytes.extend_from_slice(key.as_str().as_bytes());
    bytes
}

/// The registry key of a RocksDB entry key.
pub(super) fn parse_entry_key(raw: &[u8]) -> Result<KeyPath, StoreError> {
    let path = raw
        .strip_prefix(ENTRY_PREFIX)
        .and_then(|path| std::str::from_utf8(path).ok())
        .ok_or_else(|| {
            corrupt(
                &String::from_utf8_lossy(raw),
                "the key is not a registry path",
            )
        })?;
    KeyPath::parse(path).map_err(|err| corrupt(path, &err.to_string()))
}

/// Encodes a live value (already serialized JSON) or, with `None`, a tombstone.
pub(super) fn encode(json: Option<&[u8]>, version: u64, modified_ms: u64) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER_LEN + json.map_or(0, <[u8]>::len));
    bytes.push(FORMAT);
    bytes.push(if json.is_some() { LIVE } else { TOMBSTONE });
    bytes.extend_from_slice(&version.to_be_bytes());
    bytes.extend_from_slice(&modified_ms.to_be_bytes());
    if let Some(json) = json {
        bytes.extend_from_slice(json);
    }
    bytes
}

/// Decodes the record stored for `key`; a damaged record is an error naming the key.
pub(super) fn decode(key: &str, bytes: &[u8]) -> Result<Record, StoreError> {
    if bytes.len() < HEADER_LEN {
        return Err(corrupt(
            key,
            &format!("record of {} bytes is truncated", bytes.len()),
        ));
    }
    if bytes[0] != FORMAT {
        return Err(corrupt(key, &format!("unknown record format {}", bytes[0])));
    }
    let version = read_u64(&bytes[2..10]);
    let modified_ms = read_u64(&bytes[10..18]);
    let json = &bytes[HEADER_LEN..];
    let value = match bytes[1] {
        TOMBSTONE if json.is_empty() => None,
        TOMBSTONE => return Err(corrupt(key, "tombstone carries a value")),
        LIVE => Some(
            serde_json::from_slice(json)
                .map_err(|err| corrupt(key, &format!("value is not JSON: {err}")))?,
        ),
        kind => return Err(corrupt(key, &format!("unknown record kind {kind}"))),
    };
    Ok(Record {
        value,
        version,
        modified_ms,
    })
}

/// Decodes the stored global index.
pub(super) fn decode_index(bytes: &[u8]) -> Result<u64, StoreError> {
    let array: [u8; 8] = bytes.try_into().map_err(|_| {
        StoreError::Internal(format!(
            "corrupt registry index: {} bytes instead of 8",
            bytes.len()
        ))
    })?;
    Ok(u64::from_be_bytes(array))
}

fn read_u64(bytes: &[u8]) -> u64 {
    let mut array = [0u8; 8];
    array.copy_from_slice(bytes);
    u64::from_be_bytes(array)
}

fn corrupt(key: &str, reason: &str) -> StoreError {
    StoreError::Internal(format!("corrupt registry record for key {key}: {reason}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damage_names_the_key() {
        let live = encode(Some(br#"{"a":1}"#), 7, 1234);
        let record = decode("/x", &live).unwrap();
        assert_eq!(record.value, Some(serde_json::json!({"a": 1})));
        assert_eq!((record.version, record.modified_ms), (7, 1234));
        let tombstone = decode("/x", &encode(None, 8, 1)).unwrap();
        assert_eq!(tombstone.value, None);
        assert_eq!(tombstone.version, 8);

        let err = decode("/x/y", &live[..5]).unwrap_err().to_string();
        assert!(err.contains("/x/y") && err.contains("truncated"), "{err}");
        let mut garbled = live.clone();
        garbled[HEADER_LEN] = b'!';
        let err = decode("/x/y", &garbled).unwrap_err().to_string();
        assert!(err.contains("/x/y") && err.contains("not JSON"), "{err}");
        assert!(parse_entry_key(b"k/a/b").is_ok());
        assert!(parse_entry_key(b"k/a b").is_err());
        assert!(decode_index(&[1, 2]).is_err());
    }
}
