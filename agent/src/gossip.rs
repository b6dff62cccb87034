//! Gossip among agents: every `interval`, `fanout` random peers get this agent's newest change
//! version per watched prefix (the highest it has seen or heard, so news spreads in a few rounds)
//! by `POST /v1/gossip`. A watch whose prefix a peer has seen newer than this agent's state for
//! longer than `grace` is `behind`: shown in `/status` and `lathe_agent_behind`, and the
//! supervisor has the watcher re-sync from another registry node (repeatedly, until it catches up).
//!
//! Gossip is bounded by the registry: before a re-sync, the agent asks its registry nodes for
//! their index (`GET /v1/health`). When one that answers has reached the version heard, or none
//! answers (this agent is cut off), it re-syncs; when nodes answer and none has reached it, the
//! claim is false (any `POST /v1/gossip` could make it): it is forgotten, counted as
//! `unconfirmed`, and nothing re-syncs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::RactorMessage;
use serde::{Deserialize, Serialize};

use crate::config::Addr;
use crate::status::{Board, Metrics};
use crate::supervisor::SupervisorMsg;

/// What one agent tells another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    pub from: String,
    /// Prefix → the newest change version seen under it.
    pub prefixes: BTreeMap<String, u64>,
}

/// The longest peer name a digest may carry, in bytes.
pub const MAX_PEER_NAME_BYTES: usize = 256;

/// Why a digest was refused (the endpoint answers 400 with this).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error(
        "gossip digest: `from` must name the sending agent (1 to {MAX_PEER_NAME_BYTES} bytes), \
         got {0} bytes"
    )]
    BadFrom(usize),
}

/// The newest version heard per watched prefix, and from whom; written by the HTTP endpoint.
/// Only the prefixes this agent watches are kept: a digest naming others (any `POST
/// /v1/gossip` can) adds nothing, so what is heard stays as small as the agent's config.
#[derive(Debug, Clone, Default)]
pub struct Heard {
    watched: Arc<BTreeSet<String>>,
    heard: Arc<Mutex<BTreeMap<String, (u64, String)>>>,
}

impl Heard {
    /// What is heard about `prefixes` (the agent's watched prefixes).
    pub fn watching(prefixes: impl IntoIterator<Item = String>) -> Heard {
        Heard {
            watched: Arc::new(prefixes.into_iter().collect()),
            heard: Arc::default(),
        }
    }

    /// Keeps the newer versions `digest` claims for watched prefixes; how many it kept.
    pub fn record(&self, digest: &Digest) -> Result<usize, DigestError> {
        if digest.from.is_empty() || digest.from.len() > MAX_PEER_NAME_BYTES {
            return Err(DigestError::BadFrom(digest.from.len()));
        }
        let mut heard = self.lock();
        let mut kept = 0;
        for (prefix, version) in &digest.prefixes {
            if !self.watched.contains(prefix) {
                continue;
            }
            let entry = heard.entry(prefix.clone()).or_insert((0, String::new()));
            if *version > entry.0 {
                *entry = (*version, digest.from.clone());
                kept += 1;
            }
        }
        Ok(kept)
    }

    /// How many prefixes something was heard about.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (u64, String)>> {
        self.heard.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets what was heard about `prefix` if it is still `version` (a claim the registry
    /// contradicted); a newer claim heard meanwhile stays, to be checked in turn.
    pub fn discard(&self, prefix: &str, version: u64) {
        let mut heard = self.lock();
        if heard.get(prefix).is_some_and(|(v, _)| *v == version) {
            heard.remove(prefix);
        }
    }

    pub fn get(&self, prefix: &str) -> Option<(u64, String)> {
        self.lock().get(prefix).cloned()
    }
}

#[derive(RactorMessage)]
pub enum GossipMsg {
    Tick,
    /// What the registry nodes said about a version heard from a peer.
    Checked(Claim, Verdict),
}

/// A peer's claim that a watch's prefix has changed up to `version`.
#[derive(Debug, Clone)]
pub struct Claim {
    pub watch: String,
    pub prefix: String,
    pub version: u64,
    pub from: String,
}

/// The registry's answer to a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A registry node has reached the version.
    Confirmed,
    /// Nodes answered, the highest with this index, below the version.
    Contradicted(u64),
    /// No registry node answered.
    Unreachable,
}

/// How long a registry node may take to tell its index.
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

pub struct Gossip;

pub struct GossipArgs {
    pub name: String,
    pub peers: Vec<Addr>,
    pub interval: Duration,
    pub fanout: usize,
    pub grace: Duration,
    pub board: Board,
    pub metrics: Metrics,
    pub heard: Heard,
    pub supervisor: ActorRef<SupervisorMsg>,
    /// The registry nodes that confirm what peers claim.
    pub registry: Vec<Addr>,
}

pub struct GossipState {
    args: GossipArgs,
    http: reqwest::Client,
    behind_since: HashMap<String, Instant>,
    last_resync: Option<Instant>,
}

impl Actor for Gossip {
    type Msg = GossipMsg;
    type State = GossipState;
    type Arguments = GossipArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<GossipMsg>,
        args: GossipArgs,
    ) -> Result<GossipState, ActorProcessingErr> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(500))
            .timeout(Duration::from_secs(1))
            .build()?;
        myself.send_interval(args.interval, || GossipMsg::Tick);
        Ok(GossipState {
            args,
            http,
            behind_since: HashMap::new(),
            last_resync: None,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<GossipMsg>,
        message: GossipMsg,
        state: &mut GossipState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            GossipMsg::Tick => {
                state.send();
                state.evaluate(&myself);
            }
            GossipMsg::Checked(claim, verdict) => state.checked(claim, verdict),
        }
        Ok(())
    }
}

impl GossipState {
    /// Sends this agent's digest to `fanout` random peers (in a task: the mailbox never waits).
    fn send(&self) {
        let mut prefixes = BTreeMap::new();
        for (_, prefix, version, _) in self.args.board.progress() {
            let heard = self.args.heard.get(&prefix).map_or(0, |(v, _)| v);
            prefixes.insert(prefix, version.max(heard));
        }
        let digest = Digest {
            from: self.args.name.clone(),
            prefixes,
        };
        let mut peers = self.args.peers.clone();
        fastrand::shuffle(&mut peers);
        peers.truncate(self.args.fanout);
        for peer in peers {
            let (http, metrics, digest) =
                (self.http.clone(), self.args.metrics.clone(), digest.clone());
            tokio::spawn(async move {
                let url = format!("http://{peer}/v1/gossip");
                match http.post(&url).json(&digest).send().await {
                    Ok(response) if response.status().is_success() => metrics.gossip("sent"),
                    Ok(_) | Err(_) => metrics.gossip("failed"),
                }
            });
        }
    }

    /// Marks watches behind (or caught up) and asks for a re-sync while any is behind.
    fn evaluate(&mut self, myself: &ActorRef<GossipMsg>) {
        let now = Instant::now();
        let mut behind_any = None;
        for (name, prefix, _, known) in self.args.board.progress() {
            let peer = self.args.heard.get(&prefix).filter(|(v, _)| *v > known);
            let behind = match &peer {
                Some(_) => {
                    let since = *self.behind_since.entry(name.clone()).or_insert(now);
                    now.duration_since(since) >= self.args.grace
                }
                None => {
                    self.behind_since.remove(&name);
                    false
                }
            };
            self.args.metrics.behind(&name, behind);
            self.args.board.update_watch(&name, |w| {
                w.behind = behind;
                (w.peer_version, w.peer) = match &peer {
                    Some((v, from)) if behind => (Some(*v), Some(from.clone())),
                    _ => (None, None),
                };
            });
            if behind {
                behind_any = Some((name, prefix, peer));
            }
        }
        let Some((name, prefix, Some((version, from)))) = behind_any else {
            return;
        };
        let pause = self.args.grace.max(Duration::from_secs(1));
        if self
            .last_resync
            .is_some_and(|at| now.duration_since(at) < pause)
        {
            return;
        }
        self.last_resync = Some(now);
        let claim = Claim {
            watch: name,
            prefix,
            version,
            from,
        };
        let (http, registry, myself) = (
            self.http.clone(),
            self.args.registry.clone(),
            myself.clone(),
        );
        tokio::spawn(async move {
            let verdict = check(&http, &registry, claim.version).await;
            let _ = myself.cast(GossipMsg::Checked(claim, verdict));
        });
    }

    /// Re-syncs on a confirmed claim (or when no registry node answers: this agent may be the
    /// one cut off); forgets a contradicted one.
    fn checked(&mut self, claim: Claim, verdict: Verdict) {
        let Claim {
            watch,
            prefix,
            version,
            from,
        } = claim;
        if let Verdict::Contradicted(index) = verdict {
            tracing::warn!(%watch, peer = %from, peer_version = version, registry_index = index,
                "a peer claims a version no registry node has reached: ignored");
            self.args.metrics.gossip("unconfirmed");
            self.args.heard.discard(&prefix, version);
            self.behind_since.remove(&watch);
            return;
        }
        tracing::warn!(%watch, peer = %from, peer_version = version, ?verdict,
            "behind a peer agent");
        let reason = format!("watch {watch}: peer {from} has seen version {version}");
        let _ = self.args.supervisor.cast(SupervisorMsg::Resync { reason });
    }
}

/// What the registry nodes say about `version`: the first node whose index reached it confirms.
async fn check(http: &reqwest::Client, registry: &[Addr], version: u64) -> Verdict {
    let mut highest = None;
    for node in registry {
        let url = format!("http://{node}/v1/health");
        let answer = async {
            let response = http.get(&url).timeout(CHECK_TIMEOUT).send().await.ok()?;
            let health: serde_json::Value = response.json().await.ok()?;
            health["index"].as_u64()
        };
        if let Some(index) = answer.await {
            if index >= version {
                return Verdict::Confirmed;
            }
            highest = highest.max(Some(index));
        }
    }
    highest.map_or(Verdict::Unreachable, Verdict::Contradicted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heard_keeps_the_newest_version_and_who_said_it() {
        let heard = Heard::watching(["/a".to_string()]);
        let digest = |from: &str, version: u64| Digest {
            from: from.to_string(),
            prefixes: BTreeMap::from([("/a".to_string(), version)]),
        };
        assert_eq!(heard.record(&digest("x", 5)), Ok(1));
        assert_eq!(heard.record(&digest("y", 3)), Ok(0));
        assert_eq!(heard.get("/a"), Some((5, "x".to_string())));
        heard.record(&digest("y", 9)).unwrap();
        assert_eq!(heard.get("/a"), Some((9, "y".to_string())));
        assert_eq!(heard.get("/b"), None);
    }

    #[test]
    fn only_watched_prefixes_are_kept_and_the_sender_is_named() {
        let heard = Heard::watching(["/a".to_string()]);
        let flood = Digest {
            from: "evil".to_string(),
            prefixes: (0..10_000).map(|i| (format!("/x/{i}"), u64::MAX)).collect(),
        };
        assert_eq!(heard.record(&flood), Ok(0));
        assert!(
            heard.is_empty(),
            "seen failing before: every prefix was kept"
        );
        let nameless = Digest {
            from: String::new(),
            prefixes: BTreeMap::from([("/a".to_string(), 3)]),
        };
        assert_eq!(heard.record(&nameless), Err(DigestError::BadFrom(0)));
        let long = Digest {
            from: "x".repeat(MAX_PEER_NAME_BYTES + 1),
            ..nameless
        };
        assert!(heard.record(&long).is_err());
        assert_eq!(heard.get("/a"), None);
    }

    #[test]
    fn a_contradicted_claim_is_forgotten_unless_a_newer_one_came() {
        let heard = Heard::watching(["/a".to_string()]);
        let digest = |version: u64| Digest {
            from: "evil".to_string(),
            prefixes: BTreeMap::from([("/a".to_string(), version)]),
        };
        heard.record(&digest(u64::MAX - 1)).unwrap();
        heard.discard("/a", 5);
        assert!(
            heard.get("/a").is_some(),
            "another version is not discarded"
        );
        heard.discard("/a", u64::MAX - 1);
        assert_eq!(heard.get("/a"), None);
    }
}
