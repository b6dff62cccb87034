//! What the ACL keeps in the registry, and the in-memory table built from it.
//!
//! ```text
//! /lathe/acl/bootstrap            the management token `lathe acl bootstrap` made (created once)
//! /lathe/acl/tokens/{accessor}    every other token: its secret's hash and its policies
//! /lathe/acl/policies/{name}      named lists of rules
//! ```
//!
//! Only a SHA-256 hash of a token's secret is stored. A secret is 128 bits from the OS's random
//! source, so no slow password KDF is needed: nobody can search 2^128 candidates against a hash,
//! however fast it is, and a fast hash keeps the per-request check cheap.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use lathe::{Entry, KeyPath};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::policy::{self, Permission, Rule, ACL_PREFIX};

/// The accessor of the token bootstrap makes.
pub const BOOTSTRAP_ACCESSOR: &str = "bootstrap";
/// Bytes of randomness in a token's secret (128 bits).
const SECRET_BYTES: usize = 16;
/// Bytes of randomness in a token's accessor, its public name.
const ACCESSOR_BYTES: usize = 8;

/// A named policy, as stored at `/lathe/acl/policies/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRecord {
    pub name: String,
    pub rules: Vec<Rule>,
    #[serde(default)]
    pub description: String,
}

/// A token, as stored: never its secret, only the secret's hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub accessor: String,
    /// Hex SHA-256 of the secret.
    pub hash: String,
    #[serde(default)]
    pub policies: Vec<String>,
    /// A management token may do everything.
    #[serde(default)]
    pub management: bool,
    #[serde(default)]
    pub description: String,
    /// The bootstrap record stays (so bootstrap works once) but a revoked token admits nobody.
    #[serde(default)]
    pub revoked: bool,
}

impl TokenRecord {
    /// What `GET /v1/acl/tokens` shows: everything but the hash.
    pub fn public(&self) -> serde_json::Value {
        serde_json::json!({
            "accessor": self.accessor,
            "policies": self.policies,
            "management": self.management,
            "description": self.description,
        })
    }
}

/// Who a known token is, with its rules resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub accessor: String,
    pub management: bool,
    pub rules: Vec<Rule>,
}

impl Identity {
    pub fn allows(&self, permission: &Permission) -> bool {
        self.management || policy::allows(&self.rules, permission)
    }
}

/// Every live token by the hash of its secret, resolved against the policies.
#[derive(Debug, Default)]
pub struct AclTable {
    by_hash: HashMap<String, Arc<Identity>>,
    /// The registry index the table was read at.
    pub index: u64,
}

impl AclTable {
    /// Builds the table from the entries under `/lathe/acl`; malformed records are skipped
    /// (and admit nobody).
    pub fn from_entries(entries: &[Entry], index: u64) -> AclTable {
        let policies: HashMap<String, PolicyRecord> = entries
            .iter()
            .filter(|e| e.key.is_under(&policies_key()))
            .filter_map(|e| serde_json::from_value::<PolicyRecord>(e.value.clone()).ok())
            .map(|p| (p.name.clone(), p))
            .collect();
        let by_hash = entries
            .iter()
            .filter(|e| e.key.is_under(&tokens_key()) || e.key == bootstrap_key())
            .filter_map(|e| serde_json::from_value::<TokenRecord>(e.value.clone()).ok())
            .filter(|t| !t.revoked && !t.hash.is_empty())
            .map(|token| {
                let rules = token
                    .policies
                    .iter()
                    .filter_map(|name| policies.get(name))
                    .flat_map(|p| p.rules.iter().cloned())
                    .collect();
                let identity = Identity {
                    accessor: token.accessor,
                    management: token.management,
                    rules,
                };
                (token.hash, Arc::new(identity))
            })
            .collect();
        AclTable { by_hash, index }
    }

    /// The identity of the token whose secret is `secret`, if it is live.
    pub fn identify(&self, secret: &str) -> Option<Arc<Identity>> {
        self.identify_hash(&hash_secret(secret))
    }

    /// The identity of the live token whose secret hashes to `hash`.
    pub fn identify_hash(&self, hash: &str) -> Option<Arc<Identity>> {
        self.by_hash.get(hash).cloned()
    }
}

/// Hex SHA-256 of a secret (see the module doc for why a fast hash is right here).
pub fn hash_secret(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// A fresh secret: 128 random bits, hex.
pub fn new_secret() -> Result<String, getrandom::Error> {
    random_hex(SECRET_BYTES)
}

/// A fresh accessor: 64 random bits, hex.
pub fn new_accessor() -> Result<String, getrandom::Error> {
    random_hex(ACCESSOR_BYTES)
}

fn random_hex(bytes: usize) -> Result<String, getrandom::Error> {
    let mut buffer = vec![0u8; bytes];
    getrandom::fill(&mut buffer)?;
    Ok(hex(&buffer))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

pub fn acl_key() -> KeyPath {
    KeyPath::parse(ACL_PREFIX).expect("a valid path")
}

pub fn bootstrap_key() -> KeyPath {
    acl_key().child("bootstrap").expect("a valid path")
}

pub fn tokens_key() -> KeyPath {
    acl_key().child("tokens").expect("a valid path")
}

pub fn policies_key() -> KeyPath {
    acl_key().child("policies").expect("a valid path")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: KeyPath, value: serde_json::Value) -> Entry {
        Entry {
            key,
            value,
            version: 1,
        }
    }

    fn token(accessor: &str, secret: &str, policies: &[&str]) -> serde_json::Value {
        serde_json::to_value(TokenRecord {
            accessor: accessor.into(),
            hash: hash_secret(secret),
            policies: policies.iter().map(|p| p.to_string()).collect(),
            management: false,
            description: String::new(),
            revoked: false,
        })
        .unwrap()
    }

    #[test]
    fn secrets_are_random_and_hashed() {
        let (a, b) = (new_secret().unwrap(), new_secret().unwrap());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert_eq!(
            hash_secret("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn tokens_resolve_their_policies_and_unknown_ones_nothing() {
        let reader = PolicyRecord {
            name: "reader".into(),
            rules: vec![Rule::parse("key:/app:read").unwrap()],
            description: String::new(),
        };
        let entries = vec![
            entry(
                policies_key().child("reader").unwrap(),
                serde_json::to_value(&reader).unwrap(),
            ),
            entry(
                tokens_key().child("t1").unwrap(),
                token("t1", "s1", &["reader", "gone"]),
            ),
            entry(
                tokens_key().child("bad").unwrap(),
                serde_json::json!("junk"),
            ),
        ];
        let table = AclTable::from_entries(&entries, 7);
        let identity = table.identify("s1").unwrap();
        assert_eq!(identity.accessor, "t1");
        assert_eq!(identity.rules, reader.rules);
        assert!(identity.allows(&Permission::KeyRead(KeyPath::parse("/app/x").unwrap())));
        assert!(!identity.allows(&Permission::KeyWrite(KeyPath::parse("/app/x").unwrap())));
        assert!(table.identify("s2").is_none());
        assert!(
            table.identify(&hash_secret("s1")).is_none(),
            "the hash is not a token"
        );
    }

    #[test]
    fn a_revoked_bootstrap_token_admits_nobody() {
        let mut record: TokenRecord =
            serde_json::from_value(token(BOOTSTRAP_ACCESSOR, "root", &[])).unwrap();
        record.management = true;
        let live = vec![entry(
            bootstrap_key(),
            serde_json::to_value(&record).unwrap(),
        )];
        assert!(AclTable::from_entries(&live, 1)
            .identify("root")
            .unwrap()
            .allows(&Permission::AclWrite));
        record.revoked = true;
        let revoked = vec![entry(
            bootstrap_key(),
            serde_json::to_value(&record).unwrap(),
        )];
        assert!(AclTable::from_entries(&revoked, 2)
            .identify("root")
            .is_none());
    }
}
