//! The ZooKeeper session one store shares between its writers, its event pipeline and its
//! garbage collector: the current client (replaced after an expiry), per-operation request
//! counters, call deadlines and the mapping of ZooKeeper errors onto [`StoreError`].

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::Duration;

use zookeeper_client::{Acls, Client, CreateMode, Error as ZkError};

use super::auth::ZkAuth;

use super::tree::Layout;
use crate::StoreError;

/// A kind of ZooKeeper request, as counted for `lathe_zookeeper_requests_total{op}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Get,
    Set,
    Create,
    Delete,
    Multi,
    List,
    Watch,
}

impl Op {
    const ALL: [Op; 7] = [
        Op::Get,
        Op::Set,
        Op::Create,
        Op::Delete,
        Op::Multi,
        Op::List,
        Op::Watch,
    ];

    fn name(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Set => "set",
            Op::Create => "create",
            Op::Delete => "delete",
            Op::Multi => "multi",
            Op::List => "list",
            Op::Watch => "watch",
        }
    }
}

/// What a store's tasks share.
pub(super) struct Shared {
    pub(super) hosts: String,
    /// `--zookeeper-auth`: every session authenticates, every znode gets its creator's ACL.
    pub(super) auth: Option<ZkAuth>,
    pub(super) layout: Layout,
    /// The session timeout asked for when opening sessions.
    pub(super) session_timeout: Duration,
    /// How long one call may wait for its answer: the session timeout ZooKeeper granted.
    pub(super) call_timeout: Duration,
    client: RwLock<Client>,
    counters: [AtomicU64; 7],
}

impl Shared {
    pub(super) fn new(
        hosts: String,
        auth: Option<ZkAuth>,
        layout: Layout,
        session_timeout: Duration,
        client: Client,
    ) -> Shared {
        Shared {
            hosts,
            auth,
            layout,
            session_timeout,
            call_timeout: client.session_timeout().max(session_timeout),
            client: RwLock::new(client),
            counters: Default::default(),
        }
    }

    /// The client of the current session.
    pub(super) fn client(&self) -> Client {
        self.client
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Installs the client of a new session (after the old one expired).
    pub(super) fn replace_client(&self, client: Client) {
        *self
            .client
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = client;
    }

    /// Requests sent so far, per operation.
    pub(super) fn request_counts(&self) -> Vec<(&'static str, u64)> {
        Op::ALL
            .iter()
            .map(|op| {
                (
                    op.name(),
                    self.counters[*op as usize].load(Ordering::Relaxed),
                )
            })
            .collect()
    }

    /// Counts a request (already sent: zookeeper-client sends when the future is created) and
    /// bounds the wait for its answer by the session timeout, so that no call hangs while
    /// ZooKeeper is away.
    pub(super) fn call<T, F>(&self, op: Op, request: F) -> impl Future<Output = Result<T, ZkError>>
    where
        F: Future<Output = Result<T, ZkError>>,
    {
        self.counters[op as usize].fetch_add(1, Ordering::Relaxed);
        let deadline = self.call_timeout;
        async move {
            tokio::time::timeout(deadline, request)
                .await
                .unwrap_or(Err(ZkError::Timeout))
        }
    }

    /// Opens a new session and makes sure the registry's base znode exists.
    pub(super) async fn open_session(&self) -> Result<Client, ZkError> {
        self.counters[Op::Create as usize].fetch_add(1, Ordering::Relaxed);
        open_session(
            &self.hosts,
            self.auth.as_ref(),
            self.session_timeout,
            &self.layout,
        )
        .await
    }

    /// The ACL of the znodes this store creates.
    pub(super) fn acls(&self) -> Acls<'static> {
        super::auth::acls(self.auth.as_ref())
    }
}

/// Connects to `hosts` (trying each once) and creates the base znode if missing.
pub(super) async fn open_session(
    hosts: &str,
    auth: Option<&ZkAuth>,
    session_timeout: Duration,
    layout: &Layout,
) -> Result<Client, ZkError> {
    let connect = super::auth::connector(auth)
        .with_session_timeout(session_timeout)
        .with_fail_eagerly()
        .connect(hosts);
    let client = tokio::time::timeout(session_timeout + Duration::from_secs(2), connect)
        .await
        .unwrap_or(Err(ZkError::Timeout))?;
    let options = CreateMode::Persistent.with_acls(super::auth::acls(auth));
    let mkdir = client.mkdir(layout.base(), &options);
    tokio::time::timeout(session_timeout, mkdir)
        .await
        .unwrap_or(Err(ZkError::Timeout))?;
    Ok(client)
}

/// True for errors that say "ZooKeeper cannot be reached right now" rather than "no".
pub(super) fn is_unavailable(err: &ZkError) -> bool {
    match err {
        ZkError::ConnectionLoss
        | ZkError::Timeout
        | ZkError::SessionExpired
        | ZkError::SessionMoved
        | ZkError::ClientClosed
        | ZkError::NoHosts
        | ZkError::Throttled => true,
        // zookeeper-client 0.11 reports a broken connection ("connection reset by peer" while
        // ZooKeeper goes away) as `Error::other(io_error)`, a custom error; its other custom
        // errors come from TLS and SASL set-up, which Lathe does not use. Try again later.
        ZkError::Custom(_) => true,
        _ => false,
    }
}

/// Maps an unexpected ZooKeeper error onto a store error.
pub(super) fn store_error(err: ZkError) -> StoreError {
    if is_unavailable(&err) {
        StoreError::Unavailable(format!("zookeeper: {err}"))
    } else {
        StoreError::Internal(format!("zookeeper: {err}"))
    }
}
