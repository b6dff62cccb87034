//! Registry keys, entries and change events: the data model of Lathe's metadata registry.
//!
//! Keys are hierarchical, `/`-separated paths of segments made of `[A-Za-z0-9._-]`
//! (`/task/http/lb/backend_distribution`). Values are JSON. Every change gets a version from one
//! global, monotonically increasing index (ZooKeeper's zxid in ZooKeeper mode).

use std::fmt;

use serde::{Deserialize, Serialize};

/// The longest key stored, in bytes, Lathe's own `/lathe/...` records included.
pub const MAX_KEY_LEN: usize = 1024;

/// Room kept under [`MAX_KEY_LEN`] for the records Lathe derives from a user path or a node name
/// (`/lathe/assignments/<node>/<group>/<index>`, `/lathe/shifts/<key>`, ...; `layout` checks at
/// compile time that its longest derived path fits).
pub const DERIVED_PATH_ROOM: usize = 256;

/// The longest key outside `/lathe` (a metadata key, a group's path), in bytes. This is the one
/// path-length rule: [`KeyPath::parse`] applies it to every path not under `/lathe`, so a group
/// name or a key that passes it always yields valid derived paths.
pub const MAX_USER_KEY_LEN: usize = MAX_KEY_LEN - DERIVED_PATH_ROOM;

/// The longest node name, in bytes (a node name is one segment of its `/lathe` records).
pub const MAX_NODE_NAME_LEN: usize = 128;

/// The prefix reserved for Lathe's own state (nodes, assignments, endpoints, topology).
pub const RESERVED_PREFIX: &str = "/lathe";

/// A validated registry path: `/` alone (the root) or `/seg/seg/...`.
///
/// Segments are non-empty, made of `[A-Za-z0-9._-]`, and are neither `.` nor `..`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyPath(String);

/// Why a string is not a registry path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyPathError {
    #[error("key is {len} bytes, longer than the limit of {limit} bytes")]
    TooLong { len: usize, limit: usize },
    #[error("key segment {index} is empty (double or trailing '/')")]
    EmptySegment { index: usize },
    #[error("key segment {segment:?} is not allowed ('.' and '..' are reserved)")]
    DotSegment { segment: String },
    #[error("key segment {segment:?} has character {character:?}; allowed are A-Z a-z 0-9 . _ -")]
    BadCharacter { segment: String, character: char },
}

impl KeyPath {
    /// The root of the key space, `/`.
    pub fn root() -> Self {
        KeyPath("/".to_string())
    }

    /// Parses a path with or without its leading `/`. A single trailing `/` is ignored, so
    /// `task/http/` and `/task/http` name the same key.
    pub fn parse(raw: &str) -> Result<Self, KeyPathError> {
        let trimmed = raw.strip_prefix('/').unwrap_or(raw);
        let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
        let len = trimmed.len() + 1;
        if len > MAX_KEY_LEN {
            return Err(KeyPathError::TooLong {
                len,
                limit: MAX_KEY_LEN,
            });
        }
        if trimmed.is_empty() {
            return Ok(Self::root());
        }
        for (index, segment) in trimmed.split('/').enumerate() {
            if segment.is_empty() {
                return Err(KeyPathError::EmptySegment { index });
            }
            if segment == "." || segment == ".." {
                return Err(KeyPathError::DotSegment {
                    segment: segment.to_string(),
                });
            }
            if let Some(character) = segment
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
            {
                return Err(KeyPathError::BadCharacter {
                    segment: segment.to_string(),
                    character,
                });
            }
        }
        let path = KeyPath(format!("/{trimmed}"));
        if len > MAX_USER_KEY_LEN && !path.is_reserved() {
            return Err(KeyPathError::TooLong {
                len,
                limit: MAX_USER_KEY_LEN,
            });
        }
        Ok(path)
    }

    /// The path as a string, always starting with `/`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for `/`.
    pub fn is_root(&self) -> bool {
        self.0 == "/"
    }

    /// The segments of the path (none for the root).
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|s| !s.is_empty())
    }

    /// The number of segments.
    pub fn depth(&self) -> usize {
        self.segments().count()
    }

    /// The parent path, or `None` for the root.
    pub fn parent(&self) -> Option<KeyPath> {
        if self.is_root() {
            return None;
        }
        match self.0.rfind('/') {
            Some(0) => Some(Self::root()),
            Some(i) => Some(KeyPath(self.0[..i].to_string())),
            None => None,
        }
    }

    /// The path of a child segment. The segment must be valid.
    pub fn child(&self, segment: &str) -> Result<KeyPath, KeyPathError> {
        KeyPath::parse(&format!("{}/{}", self.0.trim_end_matches('/'), segment))
    }

    /// The first `n` segments of the path (the whole path when it is shorter).
    pub fn truncated(&self, n: usize) -> KeyPath {
        let segments: Vec<&str> = self.segments().take(n).collect();
        if segments.is_empty() {
            Self::root()
        } else {
            KeyPath(format!("/{}", segments.join("/")))
        }
    }

    /// True when `self` is `prefix` itself or lies below it (segment-wise: `/ab` is not under
    /// `/a`).
    pub fn is_under(&self, prefix: &KeyPath) -> bool {
        if prefix.is_root() || self == prefix {
            return true;
        }
        self.0.len() > prefix.0.len()
            && self.0.starts_with(&prefix.0)
            && self.0.as_bytes()[prefix.0.len()] == b'/'
    }

    /// The path itself and every ancestor up to the root, deepest first.
    pub fn ancestors_inclusive(&self) -> impl Iterator<Item = KeyPath> {
        let mut next = Some(self.clone());
        std::iter::from_fn(move || {
            let current = next.take()?;
            next = current.parent();
            Some(current)
        })
    }

    /// True when the path lies in Lathe's reserved `/lathe` subtree.
    pub fn is_reserved(&self) -> bool {
        self.is_under(&KeyPath(RESERVED_PREFIX.to_string()))
    }
}

/// Why a node name is refused (see [`check_node_name`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeNameError {
    /// Longer than [`MAX_NODE_NAME_LEN`] bytes.
    #[error("node name is {len} bytes, longer than the limit of {MAX_NODE_NAME_LEN} bytes")]
    TooLong { len: usize },
    /// A valid path, but of more than one segment (or written with a `/`).
    #[error("node name {name:?} must be one segment of A-Z a-z 0-9 . _ -")]
    NotOneSegment { name: String },
    /// Not a registry path at all.
    #[error("node name {name:?} is not one registry segment: {source}")]
    BadSegment {
        name: String,
        #[source]
        source: KeyPathError,
    },
}

/// Checks a node name: it must be one registry segment of at most [`MAX_NODE_NAME_LEN`] bytes, so
/// that every `/lathe` record naming the node stays under [`MAX_KEY_LEN`].
pub fn check_node_name(name: &str) -> Result<(), NodeNameError> {
    if name.len() > MAX_NODE_NAME_LEN {
        return Err(NodeNameError::TooLong { len: name.len() });
    }
    match KeyPath::parse(name) {
        Ok(path) if path.depth() == 1 && !name.contains('/') => Ok(()),
        Ok(_) => Err(NodeNameError::NotOneSegment {
            name: name.to_string(),
        }),
        Err(source) => Err(NodeNameError::BadSegment {
            name: name.to_string(),
            source,
        }),
    }
}

impl TryFrom<String> for KeyPath {
    type Error = KeyPathError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        KeyPath::parse(&value)
    }
}

impl From<KeyPath> for String {
    fn from(value: KeyPath) -> Self {
        value.0
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyPath({})", self.0)
    }
}

/// One key's value and the version (global index) of its last change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub key: KeyPath,
    pub value: serde_json::Value,
    pub version: u64,
}

/// What a change did to its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeOp {
    Put,
    Delete,
}

/// One change to one key, as fanned out to subscribers. `value` is `None` for deletes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub key: KeyPath,
    pub value: Option<serde_json::Value>,
    pub version: u64,
}

impl Change {
    /// Whether this change wrote or deleted its key.
    pub fn op(&self) -> ChangeOp {
        if self.value.is_some() {
            ChangeOp::Put
        } else {
            ChangeOp::Delete
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalises_paths() {
        assert_eq!(
            KeyPath::parse("task/http/lb").unwrap().as_str(),
            "/task/http/lb"
        );
        assert_eq!(
            KeyPath::parse("/task/http/").unwrap().as_str(),
            "/task/http"
        );
        assert!(KeyPath::parse("/").unwrap().is_root());
        assert!(KeyPath::parse("").unwrap().is_root());
        assert_eq!(
            KeyPath::parse("/a//b"),
            Err(KeyPathError::EmptySegment { index: 1 })
        );
        assert!(matches!(
            KeyPath::parse("/a/b c"),
            Err(KeyPathError::BadCharacter { .. })
        ));
        assert!(matches!(
            KeyPath::parse("/a/../b"),
            Err(KeyPathError::DotSegment { .. })
        ));
        assert!(matches!(
            KeyPath::parse("/ä"),
            Err(KeyPathError::BadCharacter { .. })
        ));
        assert_eq!(
            KeyPath::parse(&"a".repeat(MAX_KEY_LEN)),
            Err(KeyPathError::TooLong {
                len: MAX_KEY_LEN + 1,
                limit: MAX_KEY_LEN
            })
        );
    }

    #[test]
    fn user_keys_leave_room_for_the_records_derived_from_them() {
        let longest = "a".repeat(MAX_USER_KEY_LEN - 1);
        assert!(KeyPath::parse(&longest).is_ok());
        let over = format!("{longest}b");
        let error = KeyPath::parse(&over).unwrap_err();
        assert_eq!(
            error,
            KeyPathError::TooLong {
                len: MAX_USER_KEY_LEN + 1,
                limit: MAX_USER_KEY_LEN
            }
        );
        assert!(error.to_string().contains(&MAX_USER_KEY_LEN.to_string()));
        // Lathe's own records may use the whole length.
        let reserved = format!("/lathe/{}", "r".repeat(MAX_KEY_LEN - 7));
        assert_eq!(reserved.len(), MAX_KEY_LEN);
        assert!(KeyPath::parse(&reserved).is_ok());
    }

    #[test]
    fn node_names_are_one_short_segment() {
        assert!(check_node_name("n1").is_ok());
        assert!(check_node_name(&"n".repeat(MAX_NODE_NAME_LEN)).is_ok());
        for bad in ["", "a/b", "a b", "..", "/n1"] {
            assert!(check_node_name(bad).is_err(), "{bad:?} passed");
        }
        let long = check_node_name(&"n".repeat(MAX_NODE_NAME_LEN + 1)).unwrap_err();
        assert_eq!(long, NodeNameError::TooLong { len: 129 });
        assert!(long.to_string().contains("limit of 128"), "{long}");
    }

    #[test]
    fn prefix_relations_are_segment_wise() {
        let a = KeyPath::parse("/a").unwrap();
        let ab = KeyPath::parse("/a/b").unwrap();
        let abc = KeyPath::parse("/abc").unwrap();
        assert!(ab.is_under(&a));
        assert!(a.is_under(&a));
        assert!(!abc.is_under(&a));
        assert!(ab.is_under(&KeyPath::root()));
        assert_eq!(ab.parent(), Some(a.clone()));
        assert_eq!(a.parent(), Some(KeyPath::root()));
        let chain: Vec<String> = ab.ancestors_inclusive().map(String::from).collect();
        assert_eq!(chain, vec!["/a/b", "/a", "/"]);
        assert_eq!(
            KeyPath::parse("/x/y/z").unwrap().truncated(2).as_str(),
            "/x/y"
        );
        assert!(KeyPath::parse("/lathe/nodes/n1").unwrap().is_reserved());
        assert!(!KeyPath::parse("/lathey").unwrap().is_reserved());
    }
}
