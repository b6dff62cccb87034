//! The ZooKeeper side of membership: a task (never the actor's handler) that keeps this node's
//! ephemeral `/lathe/members/<name>` and reports the member listing back by message.
//!
//! A session expiry is final in zookeeper-client: the task reports it, builds a new client and
//! re-creates the member node (whether the node fences meanwhile is decided in `state.rs`).
//! ZooKeeper being down never ends the task: it reports `Unavailable` and retries with back-off
//! while membership runs on heartbeats alone.

use std::collections::BTreeMap;
use std::time::Duration;

use ractor::ActorRef;
use tokio::sync::watch;
use zookeeper_client::{Acls, Client, CreateMode, Error as ZkError, SessionState, StateWatcher};

use super::actor::MembershipMsg;
use super::types::MemberInfo;

/// Where member nodes live (under the chroot).
pub const MEMBERS_PATH: &str = "/lathe/members";
/// The ZooKeeper session timeout asked for; a node cut off this long fences itself (state.rs).
pub(crate) const SESSION_TIMEOUT: Duration = Duration::from_secs(6);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const RETRY_MIN: Duration = Duration::from_millis(500);
/// Short: after a ZooKeeper restart the member node must be back before ZooKeeper expires the
/// old session (a session timeout after it started), or peers would see it vanish.
const RETRY_MAX: Duration = Duration::from_secs(1);

/// Member nodes present in ZooKeeper, with their info when it parses.
pub(crate) type ZkListing = BTreeMap<String, ZkMember>;

/// One member node as listed in ZooKeeper.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ZkMember {
    /// Its info, when the node's data parses.
    pub(crate) info: Option<MemberInfo>,
    /// The zxid that created the ephemeral node: the oldest one names the scheduler leader.
    pub(crate) czxid: i64,
}

/// What the ZooKeeper task tells the membership actor.
#[derive(Debug, Clone)]
pub(crate) enum ZkEvent {
    /// This node's member node exists (again): not fenced.
    Registered,
    /// The member nodes present now.
    Listing(ZkListing),
    /// No usable ZooKeeper connection right now: absence from the listing proves nothing.
    Unavailable(String),
    /// The session expired: the member node is gone until a new session re-creates it.
    Expired,
    /// The member node was deleted on leave; the task ended.
    Left,
}

/// How a session ended.
enum SessionEnd {
    Expired,
    Failed(ZkError),
    Left,
}

/// What woke a watching session up.
enum Wake {
    Children,
    Session(SessionState),
    OwnInfo,
    Leave,
}

/// The ZooKeeper task's inputs.
pub(crate) struct ZookeeperTask {
    pub(crate) connect: String,
    /// This node's info, updated when its incarnation changes.
    pub(crate) own: watch::Receiver<MemberInfo>,
    /// Becomes true when the node leaves: delete the member node and end.
    pub(crate) leaving: watch::Receiver<bool>,
    pub(crate) membership: ActorRef<MembershipMsg>,
}

impl ZookeeperTask {
    pub(crate) async fn run(mut self) {
        let mut retry = RETRY_MIN;
        loop {
            match self.session().await {
                SessionEnd::Left => return self.report(ZkEvent::Left),
                SessionEnd::Expired => {
                    tracing::error!(
                        zookeeper = %self.connect,
                        "zookeeper session expired: opening a new one and re-creating the member \
                            node"
                    );
                    self.report(ZkEvent::Expired);
                    retry = RETRY_MIN;
                }
                SessionEnd::Failed(err) => {
                    tracing::warn!(
                        zookeeper = %self.connect,
                        error = %err,
                        retry_in = ?retry,
                        "zookeeper unavailable, membership continues on heartbeats"
                    );
                    self.report(ZkEvent::Unavailable(err.to_string()));
                    let left = tokio::select! {
                        _ = tokio::time::sleep(retry) => false,
                        _ = self.leaving.wait_for(|l| *l) => true,
                    };
                    if left {
                        return self.report(ZkEvent::Left);
                    }
                    retry = (retry * 2).min(RETRY_MAX);
                }
            }
        }
    }

    fn report(&self, event: ZkEvent) {
        let _ = self.membership.cast(MembershipMsg::Zookeeper(event));
    }

    /// One client session: register, then list and watch until it ends.
    async fn session(&mut self) -> SessionEnd {
        let client = match tokio::time::timeout(CONNECT_TIMEOUT, connect(&self.connect)).await {
            Ok(Ok(client)) => client,
            Ok(Err(err)) => return SessionEnd::Failed(err),
            Err(_) => return SessionEnd::Failed(ZkError::Timeout),
        };
        let mut state = client.state_watcher();
        let path = format!("{MEMBERS_PATH}/{}", self.own.borrow().name);
        loop {
            match self.watch_once(&client, &path, &mut state).await {
                Ok(None) => {}
                Ok(Some(end)) => return end,
                Err(ZkError::SessionExpired) => return SessionEnd::Expired,
                Err(err @ (ZkError::ConnectionLoss | ZkError::Timeout)) => {
                    // The client reconnects by itself within the session timeout.
                    self.report(ZkEvent::Unavailable(err.to_string()));
                    tokio::select! {
                        changed = state.changed() => match changed {
                            SessionState::Expired => return SessionEnd::Expired,
                            s if s.is_terminated() => return SessionEnd::Failed(err),
                            _ => {}
                        },
                        _ = tokio::time::sleep(RETRY_MAX) => {}
                        _ = self.leaving.wait_for(|l| *l) => return SessionEnd::Left,
                    }
                }
                Err(err) => return SessionEnd::Failed(err),
            }
        }
    }

    /// Registers if needed, reports the listing, and waits for the next change.
    async fn watch_once(
        &mut self,
        client: &Client,
        path: &str,
        state: &mut StateWatcher,
    ) -> Result<Option<SessionEnd>, ZkError> {
        self.register_if_missing(client, path).await?;
        let (children, watcher) = client.list_and_watch_children(MEMBERS_PATH).await?;
        self.report(ZkEvent::Listing(read_members(client, &children).await?));
        let wake = tokio::select! {
            _ = watcher.changed() => Wake::Children,
            changed = state.changed() => Wake::Session(changed),
            _ = self.own.changed() => Wake::OwnInfo,
            _ = self.leaving.wait_for(|l| *l) => Wake::Leave,
        };
        match wake {
            Wake::Children => {}
            Wake::Session(SessionState::Expired) => return Ok(Some(SessionEnd::Expired)),
            Wake::Session(SessionState::Disconnected) => {
                self.report(ZkEvent::Unavailable("disconnected".into()))
            }
            Wake::Session(s) if s.is_terminated() => {
                return Err(ZkError::UnexpectedError(format!("session {s:?}")))
            }
            Wake::Session(_) => {}
            Wake::OwnInfo => {
                let data = serde_json::to_vec(&*self.own.borrow_and_update()).unwrap_or_default();
                client.set_data(path, &data, None).await?;
            }
            Wake::Leave => {
                if let Err(err) = client.delete(path, None).await {
                    tracing::warn!(error = %err, "failed to delete the member node on leave");
                }
                return Ok(Some(SessionEnd::Left));
            }
        }
        Ok(None)
    }

    /// Creates the ephemeral member node unless this session already owns it; replaces one left
    /// behind by an earlier session (a restart faster than the session timeout) atomically.
    async fn register_if_missing(&self, client: &Client, path: &str) -> Result<(), ZkError> {
        let data = serde_json::to_vec(&*self.own.borrow()).unwrap_or_default();
        let options = CreateMode::Ephemeral.with_acls(Acls::anyone_all());
        let stat = match client.check_stat(path).await? {
            Some(stat) if stat.ephemeral_owner == client.session_id().0 => return Ok(()),
            Some(stat) => stat,
            None => {
                client.create(path, &data, &options).await?;
                tracing::info!(path, "registered in zookeeper");
                self.report(ZkEvent::Registered);
                return Ok(());
            }
        };
        tracing::warn!(
            path,
            owner = stat.ephemeral_owner,
            "replacing a member node left by an earlier session"
        );
        let mut multi = client.new_multi_writer();
        multi.add_delete(path, Some(stat.version))?;
        multi.add_create(path, &data, &options)?;
        multi.commit().await.map_err(ZkError::from)?;
        self.report(ZkEvent::Registered);
        Ok(())
    }
}

/// Connects to `HOST:PORT[,..][/CHROOT]`, creating the chroot and the members path if missing.
async fn connect(connect: &str) -> Result<Client, ZkError> {
    let (hosts, chroot) = split_chroot(connect);
    let client = Client::connector()
        .with_session_timeout(SESSION_TIMEOUT)
        .with_fail_eagerly()
        .connect(hosts)
        .await?;
    let persistent = CreateMode::Persistent.with_acls(Acls::anyone_all());
    client
        .mkdir(&format!("{chroot}{MEMBERS_PATH}"), &persistent)
        .await?;
    if chroot.is_empty() {
        return Ok(client);
    }
    client
        .chroot(chroot.to_string())
        .map_err(|_| ZkError::BadArguments(&"invalid zookeeper chroot"))
}

/// `"h1:1,h2:2/lathe/test"` → `("h1:1,h2:2", "/lathe/test")`; a bare `/` chroot is none.
pub(crate) fn split_chroot(connect: &str) -> (&str, &str) {
    match connect.find('/') {
        Some(i) => (&connect[..i], connect[i..].trim_end_matches('/')),
        None => (connect, ""),
    }
}

/// Reads every listed member node: presence, with its info when it parses.
async fn read_members(client: &Client, children: &[String]) -> Result<ZkListing, ZkError> {
    let mut members = BTreeMap::new();
    for child in children {
        match client.get_data(&format!("{MEMBERS_PATH}/{child}")).await {
            Ok((data, stat)) => {
                let info = serde_json::from_slice::<MemberInfo>(&data)
                    .inspect_err(|error| {
                        tracing::warn!(member = %child, %error,
                            "unparsable member node in zookeeper")
                    })
                    .ok();
                members.insert(
                    child.clone(),
                    ZkMember {
                        info,
                        czxid: stat.czxid,
                    },
                );
            }
            Err(ZkError::NoNode) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(members)
}
