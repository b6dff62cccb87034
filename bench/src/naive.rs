//! The naive way, for comparison: no Lathe registry. One writer sets a znode; every subscriber
//! holds its own ZooKeeper session (one session per subscriber, as separate processes would) with a
//! one-shot data watch, and on every notification re-reads the znode, which re-arms the watch.

use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;
use zookeeper_client::{Acls, Client, CreateMode, Error as ZkError};

use crate::fanout::Receipt;

/// Where the naive workload's znodes live (outside Lathe's own `/lathe`).
pub(crate) const NAIVE_ROOT: &str = "/bench-naive";
/// Long, so that idle sessions ping rarely (every 3/20 of it) and add little to the counts.
const SESSION_TIMEOUT: Duration = Duration::from_secs(30);
/// How many sessions are opened at the same time.
const CONNECT_CONCURRENCY: usize = 32;

async fn session(ensemble: &str) -> anyhow::Result<Client> {
    Client::connector()
        .with_session_timeout(SESSION_TIMEOUT)
        .connect(ensemble)
        .await
        .with_context(|| format!("cannot open a zookeeper session to {ensemble}"))
}

/// The writer: its own session, setting the znode's data to a sequence number.
pub(crate) struct NaiveWriter {
    client: Client,
    path: String,
}

impl NaiveWriter {
    /// Opens a session and creates `path` (under [`NAIVE_ROOT`]) holding `0`.
    pub(crate) fn create(runtime: &Runtime, ensemble: &str, path: &str) -> anyhow::Result<Self> {
        runtime.block_on(async {
            let client = session(ensemble).await?;
            let mode = CreateMode::Persistent.with_acls(Acls::anyone_all());
            for node in [NAIVE_ROOT, path] {
                match client.create(node, b"0", &mode).await {
                    Ok(_) | Err(ZkError::NodeExists) => {}
                    Err(err) => return Err(err).context(format!("cannot create {node}")),
                }
            }
            client.set_data(path, b"0", None).await?;
            Ok(NaiveWriter {
                client,
                path: path.to_string(),
            })
        })
    }

    /// Sets the znode's data to `seq`, waiting for ZooKeeper's answer.
    pub(crate) fn write(&self, runtime: &Runtime, seq: u64) -> anyhow::Result<()> {
        let data = seq.to_string();
        let request = self.client.set_data(&self.path, data.as_bytes(), None);
        runtime.block_on(request).context("set_data failed")?;
        Ok(())
    }
}

/// `count` subscribers, each in its own session; dropping this closes every session.
pub(crate) struct NaiveSubscribers {
    tasks: Vec<JoinHandle<()>>,
}

impl NaiveSubscribers {
    /// Opens the sessions and starts the subscribers; each reports the value it reads first (`0`)
    /// and after every change as a [`Receipt`].
    pub(crate) fn connect(
        runtime: &Runtime,
        ensemble: &str,
        path: &str,
        count: usize,
        receipts: &Sender<Receipt>,
    ) -> anyhow::Result<Self> {
        let opened: Vec<anyhow::Result<JoinHandle<()>>> = runtime.block_on(async {
            futures::stream::iter(0..count)
                .map(|subscriber| {
                    let (receipts, path) = (receipts.clone(), path.to_string());
                    async move {
                        let client = session(ensemble).await?;
                        Ok(tokio::spawn(watch_and_reread(
                            subscriber, client, path, receipts,
                        )))
                    }
                })
                .buffer_unordered(CONNECT_CONCURRENCY)
                .collect()
                .await
        });
        let mut subscribers = NaiveSubscribers { tasks: Vec::new() };
        let mut first_error = None;
        for task in opened {
            match task {
                Ok(task) => subscribers.tasks.push(task),
                Err(err) => first_error = first_error.or(Some(err)),
            }
        }
        match first_error {
            Some(err) => Err(err), // dropping `subscribers` closes those that opened
            None => Ok(subscribers),
        }
    }
}

impl Drop for NaiveSubscribers {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

/// Read and watch, then wait for the notification, again and again: one `GetData` request per
/// subscriber per change.
async fn watch_and_reread(
    subscriber: usize,
    client: Client,
    path: String,
    receipts: Sender<Receipt>,
) {
    loop {
        let Ok((data, _stat, watcher)) = client.get_and_watch_data(&path).await else {
            return; // the session is gone
        };
        let at = Instant::now();
        let seq = std::str::from_utf8(&data)
            .ok()
            .and_then(|text| text.trim().parse().ok());
        if let Some(seq) = seq {
            if receipts
                .send(Receipt {
                    subscriber,
                    seq,
                    at,
                })
                .is_err()
            {
                return;
            }
        }
        watcher.changed().await;
    }
}
