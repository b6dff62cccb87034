//! Policies and what they allow: pure data and pure functions, no I/O.
//!
//! A policy is a list of rules; a rule grants `read` or `write` (which implies `read`) on one
//! resource. Anything no rule grants is denied.
//!
//! | resource   | grants                                                                    |
//! |------------|---------------------------------------------------------------------------|
//! | `key`      | `/v1/kv`, `/v1/watch`, blocking queries at or under `prefix` (segment-wise) |
//! | `cluster`  | read: members, tasks, tree, topology, services, roll-outs, shifts, targets |
//! | `topology` | write: deploy (`PUT /v1/topology`)                                        |
//! | `operator` | write: roll-out and shift commands, failure drills (`/v1/actors/kill`)     |
//! | `agent`    | read: endpoints (`/v1/services`, keys under `/lathe/endpoints`); write: `/v1/agents` |
//! | `acl`      | read: list policies and tokens; write: create and delete them             |
//!
//! Keys under `/lathe/acl` (the hashed tokens) are readable only with `acl` read: a `key` rule,
//! even on `/`, does not reach them.

use std::fmt;

use lathe::{KeyPath, KeyPathError};
use serde::{Deserialize, Serialize};

/// Where the ACL records live in the registry.
pub const ACL_PREFIX: &str = "/lathe/acl";
/// The registry subtree agents read their endpoints from.
const ENDPOINTS_PREFIX: &str = lathe::layout::ENDPOINTS;

/// What a rule is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resource {
    Key,
    Cluster,
    Topology,
    Operator,
    Agent,
    Acl,
}

/// How much a rule grants; `Write` implies `Read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Read,
    Write,
}

/// One grant of a policy. `prefix` is required for `key` rules and refused for the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub resource: Resource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<KeyPath>,
    pub access: Access,
}

/// What one request needs; the REST guard maps every route to one of these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    KeyRead(KeyPath),
    KeyWrite(KeyPath),
    ClusterRead,
    Deploy,
    Operator,
    AgentRead,
    AgentWrite,
    AclRead,
    AclWrite,
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Permission::KeyRead(key) => write!(f, "key read on {key}"),
            Permission::KeyWrite(key) => write!(f, "key write on {key}"),
            Permission::ClusterRead => f.write_str("cluster read"),
            Permission::Deploy => f.write_str("topology write"),
            Permission::Operator => f.write_str("operator write"),
            Permission::AgentRead => f.write_str("agent read"),
            Permission::AgentWrite => f.write_str("agent write"),
            Permission::AclRead => f.write_str("acl read"),
            Permission::AclWrite => f.write_str("acl write"),
        }
    }
}

/// Why a rule is refused, by [`Rule::parse`] or [`Rule::validate`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// Not two or three `:`-separated parts.
    #[error("rule {text:?}: expected RESOURCE[:PREFIX]:ACCESS")]
    Shape { text: String },
    #[error(
        "rule {text:?}: unknown resource {resource:?} (key, cluster, topology, operator, agent, \
         acl)"
    )]
    UnknownResource { text: String, resource: String },
    #[error("rule {text:?}: access must be read or write, not {access:?}")]
    BadAccess { text: String, access: String },
    #[error("rule {text:?}: bad prefix: {source}")]
    BadPrefix {
        text: String,
        #[source]
        source: KeyPathError,
    },
    /// A `key` rule without a prefix.
    #[error("a key rule needs a prefix (e.g. /app, or / for all)")]
    KeyWithoutPrefix,
    /// A prefix on a rule other than `key`.
    #[error("a {} rule takes no prefix", format!("{:?}", .resource).to_lowercase())]
    PrefixNotTaken { resource: Resource },
}

impl Rule {
    /// Parses the CLI form `RESOURCE[:PREFIX]:ACCESS`, e.g. `key:/app:write`, `cluster:read`.
    pub fn parse(text: &str) -> Result<Rule, RuleError> {
        let parts: Vec<&str> = text.split(':').collect();
        let (resource, prefix, access) = match parts.as_slice() {
            [resource, access] => (*resource, None, *access),
            [resource, prefix, access] => (*resource, Some(*prefix), *access),
            _ => return Err(RuleError::Shape { text: text.into() }),
        };
        let resource: Resource =
            serde_json::from_value(resource.into()).map_err(|_| RuleError::UnknownResource {
                text: text.into(),
                resource: resource.into(),
            })?;
        let access: Access =
            serde_json::from_value(access.into()).map_err(|_| RuleError::BadAccess {
                text: text.into(),
                access: access.into(),
            })?;
        let prefix = prefix
            .map(|p| {
                KeyPath::parse(p).map_err(|source| RuleError::BadPrefix {
                    text: text.into(),
                    source,
                })
            })
            .transpose()?;
        let rule = Rule {
            resource,
            prefix,
            access,
        };
        rule.validate()?;
        Ok(rule)
    }

    /// A `key` rule has a prefix; no other rule has one.
    pub fn validate(&self) -> Result<(), RuleError> {
        match (self.resource, &self.prefix) {
            (Resource::Key, None) => Err(RuleError::KeyWithoutPrefix),
            (Resource::Key, Some(_)) => Ok(()),
            (resource, Some(_)) => Err(RuleError::PrefixNotTaken { resource }),
            (_, None) => Ok(()),
        }
    }

    /// Whether this rule alone grants `permission`.
    pub fn grants(&self, permission: &Permission) -> bool {
        let at_least = |access: Access| self.access >= access;
        let key_rule_covers = |key: &KeyPath| {
            self.resource == Resource::Key
                && self.prefix.as_ref().is_some_and(|p| key.is_under(p))
                && !is_acl_key(key)
        };
        match permission {
            Permission::KeyRead(key) => {
                (key_rule_covers(key) && at_least(Access::Read))
                    || (self.resource == Resource::Agent && is_endpoint_key(key))
                    || (self.resource == Resource::Acl && is_acl_key(key))
            }
            Permission::KeyWrite(key) => key_rule_covers(key) && at_least(Access::Write),
            Permission::ClusterRead => self.resource == Resource::Cluster,
            Permission::Deploy => self.resource == Resource::Topology && at_least(Access::Write),
            Permission::Operator => self.resource == Resource::Operator && at_least(Access::Write),
            Permission::AgentRead => matches!(self.resource, Resource::Agent | Resource::Cluster),
            Permission::AgentWrite => self.resource == Resource::Agent && at_least(Access::Write),
            Permission::AclRead => self.resource == Resource::Acl,
            Permission::AclWrite => self.resource == Resource::Acl && at_least(Access::Write),
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let resource = serde_json::to_value(self.resource).unwrap_or_default();
        let access = serde_json::to_value(self.access).unwrap_or_default();
        let (resource, access) = (
            resource.as_str().unwrap_or("?"),
            access.as_str().unwrap_or("?"),
        );
        match &self.prefix {
            Some(prefix) => write!(f, "{resource}:{prefix}:{access}"),
            None => write!(f, "{resource}:{access}"),
        }
    }
}

/// Whether any of `rules` grants `permission` (deny by default: no rules, no access).
pub fn allows(rules: &[Rule], permission: &Permission) -> bool {
    rules.iter().any(|rule| rule.grants(permission))
}

fn is_acl_key(key: &KeyPath) -> bool {
    KeyPath::parse(ACL_PREFIX).is_ok_and(|acl| key.is_under(&acl))
}

fn is_endpoint_key(key: &KeyPath) -> bool {
    KeyPath::parse(ENDPOINTS_PREFIX).is_ok_and(|endpoints| key.is_under(&endpoints))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(path: &str) -> KeyPath {
        KeyPath::parse(path).unwrap()
    }

    fn rules(texts: &[&str]) -> Vec<Rule> {
        texts.iter().map(|t| Rule::parse(t).unwrap()).collect()
    }

    #[test]
    fn no_rules_deny_everything() {
        for permission in [
            Permission::KeyRead(key("/a")),
            Permission::KeyWrite(key("/a")),
            Permission::ClusterRead,
            Permission::Deploy,
            Permission::Operator,
            Permission::AgentRead,
            Permission::AgentWrite,
            Permission::AclRead,
            Permission::AclWrite,
        ] {
            assert!(!allows(&[], &permission), "{permission}");
        }
    }

    #[test]
    fn key_prefixes_match_whole_segments() {
        let app = rules(&["key:/app:write"]);
        assert!(allows(&app, &Permission::KeyWrite(key("/app"))));
        assert!(allows(&app, &Permission::KeyWrite(key("/app/flags/beta"))));
        assert!(allows(&app, &Permission::KeyRead(key("/app/flags"))));
        assert!(!allows(&app, &Permission::KeyWrite(key("/apple"))));
        assert!(!allows(&app, &Permission::KeyRead(key("/"))));
        assert!(!allows(&app, &Permission::KeyRead(key("/other"))));
    }

    #[test]
    fn read_does_not_grant_write() {
        let read = rules(&["key:/:read", "topology:read", "operator:read", "acl:read"]);
        assert!(allows(&read, &Permission::KeyRead(key("/a/b"))));
        assert!(!allows(&read, &Permission::KeyWrite(key("/a/b"))));
        assert!(!allows(&read, &Permission::Deploy));
        assert!(!allows(&read, &Permission::Operator));
        assert!(allows(&read, &Permission::AclRead));
        assert!(!allows(&read, &Permission::AclWrite));
    }

    #[test]
    fn acl_records_need_acl_rules_even_under_a_root_key_rule() {
        let everything = rules(&["key:/:write"]);
        assert!(!allows(
            &everything,
            &Permission::KeyRead(key("/lathe/acl/tokens/x"))
        ));
        assert!(allows(
            &everything,
            &Permission::KeyRead(key("/lathe/topology"))
        ));
        let acl = rules(&["acl:read"]);
        assert!(allows(
            &acl,
            &Permission::KeyRead(key("/lathe/acl/tokens/x"))
        ));
    }

    #[test]
    fn agents_read_endpoints_and_register() {
        let agent = rules(&["agent:write"]);
        assert!(allows(&agent, &Permission::AgentRead));
        assert!(allows(&agent, &Permission::AgentWrite));
        assert!(allows(
            &agent,
            &Permission::KeyRead(key("/lathe/endpoints/task/http/lb"))
        ));
        assert!(!allows(
            &agent,
            &Permission::KeyRead(key("/lathe/assignments"))
        ));
        assert!(!allows(
            &agent,
            &Permission::KeyWrite(key("/lathe/endpoints/x"))
        ));
        assert!(!allows(&rules(&["agent:read"]), &Permission::AgentWrite));
    }

    #[test]
    fn rules_parse_and_print_back() {
        for text in [
            "key:/app:write",
            "key:/:read",
            "cluster:read",
            "operator:write",
        ] {
            assert_eq!(Rule::parse(text).unwrap().to_string(), text);
        }
        assert!(
            Rule::parse("key:write").is_err(),
            "a key rule needs a prefix"
        );
        assert!(
            Rule::parse("cluster:/a:read").is_err(),
            "only key rules take a prefix"
        );
        assert!(Rule::parse("key:/a:admin").is_err());
        assert!(Rule::parse("root:write").is_err());
        assert!(Rule::parse("key:/a b:read").is_err());
    }

    #[test]
    fn rules_deserialize_strictly() {
        let rule: Rule =
            serde_json::from_str(r#"{"resource":"key","prefix":"/app","access":"read"}"#).unwrap();
        assert_eq!(rule, Rule::parse("key:/app:read").unwrap());
        assert!(
            serde_json::from_str::<Rule>(r#"{"resource":"key","access":"read","x":1}"#).is_err()
        );
    }

    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_string()),
            Just("ab".to_string()),
            Just("b".to_string())
        ]
    }

    fn path() -> impl Strategy<Value = KeyPath> {
        prop::collection::vec(segment(), 0..4).prop_map(|s| key(&format!("/{}", s.join("/"))))
    }

    proptest! {
        /// A key rule grants exactly the keys at or under its prefix, segment-wise, and write
        /// never without a write rule.
        #[test]
        fn key_rules_grant_exactly_their_subtree(prefix in path(), target in path(),
            write in any::<bool>()) {
            let access = if write { Access::Write } else { Access::Read };
            let rule = Rule { resource: Resource::Key, prefix: Some(prefix.clone()), access };
            let under = target.as_str() == prefix.as_str()
                || prefix.is_root()
                || target.as_str().starts_with(&format!("{}/", prefix.as_str()));
            prop_assert_eq!(rule.grants(&Permission::KeyRead(target.clone())), under);
            prop_assert_eq!(rule.grants(&Permission::KeyWrite(target.clone())), under && write);
            prop_assert!(!rule.grants(&Permission::Deploy) && !rule.grants(&Permission::AclWrite));
        }
    }
}
