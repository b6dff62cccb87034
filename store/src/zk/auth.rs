//! `--zookeeper-auth user:password`: every ZooKeeper session of a node authenticates with the
//! `digest` scheme, and every znode Lathe creates gets the ACL `creator_all` — full rights for that
//! identity only — so a client without the credentials can neither read nor write them
//! (`NoAuth`). Without it, znodes are open to anyone (`anyone_all`), as before.

use std::fmt;

use zookeeper_client::{Acls, Connector};

/// `--zookeeper-auth` is not `user:password` with both parts non-empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected USER:PASSWORD, both non-empty")]
pub struct ZkAuthError;

/// A digest identity, `user:password`.
#[derive(Clone, PartialEq, Eq)]
pub struct ZkAuth {
    user: String,
    password: String,
}

impl ZkAuth {
    /// Parses `user:password` (a non-empty user without `:`, a non-empty password).
    pub fn parse(text: &str) -> Result<ZkAuth, ZkAuthError> {
        match text.split_once(':') {
            Some((user, password)) if !user.is_empty() && !password.is_empty() => Ok(ZkAuth {
                user: user.to_string(),
                password: password.to_string(),
            }),
            _ => Err(ZkAuthError),
        }
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    /// `user:password` again, for the environment of a node started by this one.
    pub fn expose(&self) -> String {
        format!("{}:{}", self.user, self.password)
    }

    /// The `digest` credentials as ZooKeeper's auth packet carries them.
    fn credentials(&self) -> Vec<u8> {
        format!("{}:{}", self.user, self.password).into_bytes()
    }
}

impl fmt::Debug for ZkAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ZkAuth({}:***)", self.user)
    }
}

/// A session connector that authenticates with `auth` (re-sent on every reconnect).
pub fn connector(auth: Option<&ZkAuth>) -> Connector {
    let connector = zookeeper_client::Client::connector();
    match auth {
        Some(auth) => connector.with_auth("digest", &auth.credentials()),
        None => connector,
    }
}

/// The ACL of every znode Lathe creates: its creator's identity only with `auth`, else anyone.
pub fn acls(auth: Option<&ZkAuth>) -> Acls<'static> {
    match auth {
        Some(_) => Acls::creator_all(),
        None => Acls::anyone_all(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_user_and_password_and_hides_the_password() {
        let auth = ZkAuth::parse("lathe:s3:cret").unwrap();
        assert_eq!(auth.user(), "lathe");
        assert_eq!(auth.credentials(), b"lathe:s3:cret");
        assert_eq!(format!("{auth:?}"), "ZkAuth(lathe:***)");
        for bad in ["", "lathe", "lathe:", ":pw"] {
            assert!(ZkAuth::parse(bad).is_err(), "{bad:?}");
        }
    }
}
