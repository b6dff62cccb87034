//! State changelog over Kafka: [`KafkaChangelog`] is the node's `StateChangelog` when `--kafka`
//! is given (for groups with `state = { changelog = true }`).
//!
//! ```text
//! ctx.state() write ─▶ topic lathe.state.<group> (compacted, 1 partition), key "<index>/<key>",
//!     │                value, or a tombstone for a delete; waits for Kafka's acknowledgement
//!     └─▶ then the node's RocksDB
//! instance start ─▶ read lathe.state.<group> from the beginning to its end, keep the last
//!     record of each "<index>/" key (deletes included) ─▶ replace the local state ─▶ start
//! ```
//!
//! The log is written before the local store: a write that failed in the log fails (nothing is
//! acknowledged that the log does not hold), and a retried write rewrites the same value. The
//! restore is last-write-wins over the whole log, so it is right whether or not the broker has
//! compacted it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lathe::state::{Entries, StateBackend, StateError, StateOp};
use lathe::StateStore;
use lathe_actors::tasks::{RestoreProgress, StateChangelog};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::client::{self, Topics};
use crate::settings::KafkaSettings;

/// Local writes of a restore go in batches of this many entries.
const RESTORE_BATCH: usize = 10_000;
/// Progress is reported every this many records read.
const PROGRESS_EVERY: u64 = 10_000;
/// A restore that reads nothing for this long fails.
const RESTORE_STALL: Duration = Duration::from_secs(60);

/// The changelog topic of `group`.
pub fn state_topic(group: &str) -> String {
    format!("lathe.state.{group}")
}

/// The log key of `key` of instance `index`.
pub fn log_key(index: u32, key: &[u8]) -> Vec<u8> {
    let mut full = format!("{index}/").into_bytes();
    full.extend_from_slice(key);
    full
}

/// Last write wins, per key, over `records` (`None` = a delete); the live entries of instance
/// `index`, in key order.
pub fn last_writes(
    index: u32,
    records: impl IntoIterator<Item = (Vec<u8>, Option<Vec<u8>>)>,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut state = LastWrites::new(index);
    for (key, value) in records {
        state.apply(&key, value);
    }
    state.into_entries()
}

/// Folds log records into the last value of each key of one instance.
struct LastWrites {
    prefix: Vec<u8>,
    latest: HashMap<Vec<u8>, Option<Vec<u8>>>,
}

impl LastWrites {
    fn new(index: u32) -> Self {
        LastWrites {
            prefix: format!("{index}/").into_bytes(),
            latest: HashMap::new(),
        }
    }

    fn apply(&mut self, key: &[u8], value: Option<Vec<u8>>) {
        if let Some(own) = key.strip_prefix(self.prefix.as_slice()) {
            self.latest.insert(own.to_vec(), value);
        }
    }

    fn into_entries(self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut entries: Vec<(Vec<u8>, Vec<u8>)> = self
            .latest
            .into_iter()
            .filter_map(|(key, value)| Some((key, value?)))
            .collect();
        entries.sort();
        entries
    }
}

/// The node's state changelog over Kafka.
pub struct KafkaChangelog {
    settings: KafkaSettings,
    producer: FutureProducer,
    topics: Arc<Topics>,
}

impl std::fmt::Debug for KafkaChangelog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaChangelog")
            .field("brokers", &self.settings.brokers)
            .finish_non_exhaustive()
    }
}

impl KafkaChangelog {
    pub fn new(settings: &KafkaSettings) -> anyhow::Result<Arc<KafkaChangelog>> {
        Ok(Arc::new(KafkaChangelog {
            settings: settings.clone(),
            producer: client::producer(settings)?,
            topics: Arc::new(Topics::new(settings)?),
        }))
    }
}

#[async_trait::async_trait]
impl StateChangelog for KafkaChangelog {
    fn wrap(&self, group: &str, index: u32, local: StateStore) -> StateStore {
        StateStore::new(Arc::new(LoggedState {
            local,
            topic: state_topic(group),
            index,
            producer: self.producer.clone(),
        }))
    }

    async fn restore(
        &self,
        group: &str,
        index: u32,
        local: &StateStore,
        progress: RestoreProgress,
    ) -> anyhow::Result<u64> {
        let topic = state_topic(group);
        self.topics
            .ensure(&topic, 1, &[("cleanup.policy", "compact")])
            .await?;
        progress(0);
        let consumer: BaseConsumer = client::reader(&self.settings)?;
        let entries = tokio::task::spawn_blocking(move || {
            read_log(&consumer, &topic, index, progress.as_ref())
        })
        .await??;
        let count = entries.len() as u64;
        let local = local.clone();
        tokio::task::spawn_blocking(move || replace_local(&local, entries)).await??;
        Ok(count)
    }
}

/// Reads `topic` from its beginning to its end (as it was when the read began).
fn read_log(
    consumer: &BaseConsumer,
    topic: &str,
    index: u32,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let timeout = Duration::from_secs(10);
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut ends = HashMap::new();
    let mut assignment = TopicPartitionList::new();
    for partition in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, partition, timeout)?;
        if high > low {
            ends.insert(partition, high);
            assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
        }
    }
    let mut state = LastWrites::new(index);
    if ends.is_empty() {
        return Ok(state.into_entries());
    }
    consumer.assign(&assignment)?;
    let (mut read, mut last_read) = (0u64, Instant::now());
    while !ends.is_empty() {
        match consumer.poll(Duration::from_millis(200)) {
            None => {
                anyhow::ensure!(
                    last_read.elapsed() < RESTORE_STALL,
                    "nothing read from {topic} for {RESTORE_STALL:?}"
                );
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                ends.remove(&partition);
            }
            Some(Err(error)) => tracing::warn!(%topic, %error, "changelog read error"),
            Some(Ok(message)) => {
                last_read = Instant::now();
                read += 1;
                if read % PROGRESS_EVERY == 0 {
                    progress(read);
                }
                if let Some(key) = message.key() {
                    state.apply(key, message.payload().map(<[u8]>::to_vec));
                }
                let partition = message.partition();
                if ends
                    .get(&partition)
                    .is_some_and(|end| message.offset() + 1 >= *end)
                {
                    ends.remove(&partition);
                }
            }
        }
    }
    progress(read);
    Ok(state.into_entries())
}

/// Replaces everything `local` holds with `entries`.
fn replace_local(local: &StateStore, entries: Vec<(Vec<u8>, Vec<u8>)>) -> anyhow::Result<()> {
    loop {
        let old = local.scan("", RESTORE_BATCH)?;
        if old.is_empty() {
            break;
        }
        let mut batch = local.batch();
        for (key, _) in old {
            batch.delete(key)?;
        }
        batch.commit()?;
    }
    for chunk in entries.chunks(RESTORE_BATCH) {
        let mut batch = local.batch();
        for (key, value) in chunk {
            batch.put(key, value)?;
        }
        batch.commit()?;
    }
    Ok(())
}

/// An instance's local state whose writes are logged first.
struct LoggedState {
    local: StateStore,
    topic: String,
    index: u32,
    producer: FutureProducer,
}

fn log_error(reason: impl std::fmt::Display) -> StateError {
    StateError::Store(format!("state changelog: {reason}"))
}

impl StateBackend for LoggedState {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        self.local.get(key)
    }

    fn write(&self, ops: Vec<StateOp>) -> Result<(), StateError> {
        let mut deliveries = Vec::with_capacity(ops.len());
        for op in &ops {
            let (key, value) = match op {
                StateOp::Put(key, value) => (key, Some(value.as_slice())),
                StateOp::Delete(key) => (key, None),
            };
            let key = log_key(self.index, key);
            let mut record = FutureRecord::<[u8], [u8]>::to(&self.topic).key(&key);
            if let Some(value) = value {
                record = record.payload(value);
            }
            let mut record = Some(record);
            let delivery = loop {
                match self.producer.send_result(record.take().expect("a record")) {
                    Ok(delivery) => break delivery,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = Some(back);
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err((error, _)) => return Err(log_error(error)),
                }
            };
            deliveries.push(delivery);
        }
        for delivery in deliveries {
            match futures::executor::block_on(delivery) {
                Ok(Ok(_)) => {}
                Ok(Err((error, _))) => return Err(log_error(error)),
                Err(_) => return Err(log_error("the producer went away")),
            }
        }
        let mut batch = self.local.batch();
        for op in ops {
            match op {
                StateOp::Put(key, value) => batch.put(key, value)?,
                StateOp::Delete(key) => batch.delete(key)?,
            };
        }
        batch.commit()
    }

    fn scan(&self, prefix: &[u8], limit: usize) -> Result<Entries, StateError> {
        self.local.scan(prefix, limit)
    }

    fn sync(&self) -> Result<(), StateError> {
        self.local.sync()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: &str, value: Option<&str>) -> (Vec<u8>, Option<Vec<u8>>) {
        (
            key.as_bytes().to_vec(),
            value.map(|v| v.as_bytes().to_vec()),
        )
    }

    #[test]
    fn the_last_write_of_each_key_of_the_instance_wins_deletes_included() {
        let log = vec![
            rec("0/a", Some("1")),
            rec("1/a", Some("other instance")),
            rec("0/b", Some("1")),
            rec("0/a", Some("2")),
            rec("0/b", None),
            rec("10/a", Some("instance 10, not 1")),
            rec("0/c", None),
            rec("0/c", Some("back")),
        ];
        let entries = last_writes(0, log.clone());
        let expected = vec![
            (b"a".to_vec(), b"2".to_vec()),
            (b"c".to_vec(), b"back".to_vec()),
        ];
        assert_eq!(entries, expected);
        assert_eq!(
            last_writes(1, log),
            vec![(b"a".to_vec(), b"other instance".to_vec())]
        );
        assert_eq!(log_key(10, b"k"), b"10/k".to_vec());
    }

    /// A fast round trip through librdkafka's in-process mock cluster (the real-broker tests are
    /// in tests/tests/kafka/flows.rs): writes through the changelog, then a restore elsewhere
    /// gets exactly the live keys of the instance back, and replaces what was there.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_through_the_changelog_restore_into_an_empty_or_stale_store() {
        let cluster = rdkafka::mocking::MockCluster::new(1).expect("a mock cluster");
        let group = "task.mock";
        cluster
            .create_topic(&state_topic(group), 1, 1)
            .expect("topic");
        let settings = KafkaSettings::parse(&cluster.bootstrap_servers(), &[]).expect("settings");
        let changelog = KafkaChangelog::new(&settings).expect("changelog");
        let silent: RestoreProgress = Arc::new(|_| {});

        let first = StateStore::new(Arc::new(lathe::state::MemoryState::default()));
        let logged = changelog.wrap(group, 3, first.clone());
        tokio::task::spawn_blocking(move || {
            logged.put("a", "1").unwrap();
            logged.put("b", "1").unwrap();
            logged.put("a", "2").unwrap();
            logged.delete("b").unwrap();
            let mut batch = logged.batch();
            batch.put("c", "3").unwrap().put("d", "4").unwrap();
            batch.commit().unwrap();
        })
        .await
        .unwrap();
        let other = changelog.wrap(
            group,
            4,
            StateStore::new(Arc::new(lathe::state::MemoryState::default())),
        );
        tokio::task::spawn_blocking(move || other.put("a", "other instance").unwrap())
            .await
            .unwrap();

        let moved = StateStore::new(Arc::new(lathe::state::MemoryState::default()));
        moved.put("stale", "from an older run").unwrap();
        let restored = changelog.restore(group, 3, &moved, silent).await.unwrap();
        assert_eq!(restored, 3);
        assert_eq!(moved.scan("", 100).unwrap(), first.scan("", 100).unwrap());
        assert_eq!(moved.get("a").unwrap(), Some(b"2".to_vec()));
        assert_eq!(moved.get("stale").unwrap(), None);
    }
}
