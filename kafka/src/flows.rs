//! Flows over Kafka: [`KafkaFlows`] is the node's `FlowTransport` when `--kafka` is given.
//!
//! ```text
//! emit(stream, key) ─▶ topic lathe.flow.<stream> (created with partitions ≥ the most instances
//!     │                 of its consuming groups), keyed, idempotent producer, acks=all
//!     └─ Ok(partition, offset) once Kafka acknowledged it; NotAcknowledged on timeout
//!
//! instance i of n of a consuming group (consumer group lathe.<group>):
//!     takes the partitions p with p % n == i of each input topic (they follow the instance
//!     wherever it runs, re-divided when the group's size changes) from the group's committed
//!     offsets
//!     └─ per message: handler, retried until Ok ─▶ offset stored ─▶ committed (background)
//! ```
//!
//! A message is handed over again after a crash until its handler returned `Ok` and its offset
//! was committed: at least once. Handlers that keep the last offset of each partition in their
//! state (with the state changelog, it follows them too) count each message exactly once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use lathe::flow::{Delivery, FlowError, FlowHandler, FlowMessage, FlowPosition};
use lathe_actors::flow::{FlowTransport, GroupInputs};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::client::{self, consumer_group, flow_topic, Topics};
use crate::metrics::KafkaMetrics;
use crate::settings::KafkaSettings;

/// The header that carries `<group>/<index>` of the emitting instance.
const FROM_HEADER: &str = "lathe-from";
/// How often a consumer checks its stop flag while no message comes.
const STOP_CHECK: Duration = Duration::from_millis(250);
/// The pause before a refused message is handed to the handler again.
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// How often consumer lag is measured.
const LAG_EVERY: Duration = Duration::from_secs(5);
/// How often a consuming instance checks whether its partitions changed (its group grew or
/// shrank, its inputs changed, partitions were added).
const REASSIGN_EVERY: Duration = Duration::from_secs(5);

/// The partitions instance `index` of `instances` takes out of `partitions`.
pub fn owned_partitions(index: u32, instances: u32, partitions: usize) -> Vec<i32> {
    let instances = instances.max(1) as usize;
    (0..partitions)
        .filter(|p| p % instances == index as usize % instances)
        .map(|p| p as i32)
        .collect()
}

/// Flows of one node over Kafka.
pub struct KafkaFlows {
    settings: KafkaSettings,
    producer: FutureProducer,
    topics: Arc<Topics>,
    metrics: KafkaMetrics,
}

impl std::fmt::Debug for KafkaFlows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaFlows")
            .field("brokers", &self.settings.brokers)
            .finish_non_exhaustive()
    }
}

impl KafkaFlows {
    /// Creates the producer and registers the flow metrics in `registry`.
    pub fn new(
        settings: &KafkaSettings,
        registry: &prometheus::Registry,
    ) -> anyhow::Result<Arc<KafkaFlows>> {
        Ok(Arc::new(KafkaFlows {
            settings: settings.clone(),
            producer: client::producer(settings)?,
            topics: Arc::new(Topics::new(settings)?),
            metrics: KafkaMetrics::register(registry)?,
        }))
    }
}

#[async_trait::async_trait]
impl FlowTransport for KafkaFlows {
    async fn emit(
        &self,
        message: FlowMessage,
        groups: Vec<String>,
        partitions: u32,
    ) -> Result<Delivery, FlowError> {
        let topic = flow_topic(&message.stream);
        let not_acknowledged = |reason: String| FlowError::NotAcknowledged {
            stream: message.stream.clone(),
            reason,
        };
        let timeout = self.settings.message_timeout();
        let ensured = match self.topics.has(&topic, partitions as usize) {
            true => Ok(Ok(())),
            false => {
                let ensure = self.topics.ensure(&topic, partitions as usize, &[]);
                tokio::time::timeout(timeout, ensure).await
            }
        };
        match ensured {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(not_acknowledged(format!("{error:#}"))),
            Err(_) => {
                return Err(not_acknowledged(format!(
                    "no topic {topic} within {timeout:?}"
                )))
            }
        }
        let headers = OwnedHeaders::new().insert(Header {
            key: FROM_HEADER,
            value: Some(message.from.as_str()),
        });
        let record = FutureRecord::to(&topic)
            .key(message.key.as_str())
            .payload(&message.payload[..])
            .headers(headers);
        match self.producer.send(record, Timeout::After(timeout)).await {
            Ok(delivery) => {
                self.metrics.produced(&message.stream);
                Ok(Delivery {
                    taken_by: groups,
                    position: Some(FlowPosition {
                        partition: delivery.partition,
                        offset: delivery.offset,
                    }),
                })
            }
            Err((error, _)) => {
                self.metrics.produce_failed(&message.stream);
                Err(not_acknowledged(error.to_string()))
            }
        }
    }

    fn consume(
        &self,
        group: &str,
        index: u32,
        inputs: Arc<dyn Fn() -> GroupInputs + Send + Sync>,
        handler: Arc<dyn FlowHandler>,
        stopping: Arc<AtomicBool>,
    ) -> Result<(), FlowError> {
        let consumer = client::consumer(&self.settings, &consumer_group(group))
            .map_err(|e| FlowError::Unavailable(format!("{e:#}")))?;
        let task = ConsumerTask {
            group: group.to_string(),
            index,
            consumer: Arc::new(consumer),
            topics: self.topics.clone(),
            metrics: self.metrics.clone(),
            handler,
            stopping,
        };
        tokio::spawn(task.run(inputs));
        Ok(())
    }
}

/// One consuming instance's loop.
struct ConsumerTask {
    group: String,
    index: u32,
    consumer: Arc<StreamConsumer>,
    topics: Arc<Topics>,
    metrics: KafkaMetrics,
    handler: Arc<dyn FlowHandler>,
    stopping: Arc<AtomicBool>,
}

impl ConsumerTask {
    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    async fn run(self, inputs: Arc<dyn Fn() -> GroupInputs + Send + Sync>) {
        let instance = format!("{}/{}", self.group, self.index);
        let Some(mut owned) = self.assign(&inputs).await else {
            return;
        };
        tracing::info!(%instance, partitions = owned.len(), "consuming from kafka");
        let mut checked = std::time::Instant::now();
        // Wakes the loop to look at the stop flag while no message comes (one timer for the
        // whole loop, not one per message).
        let mut tick = tokio::time::interval(STOP_CHECK);
        let mut consumed = std::collections::HashMap::new();
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let lag = tokio::spawn(measure_lag(
            self.consumer.clone(),
            self.group.clone(),
            self.metrics.clone(),
            self.stopping.clone(),
        ));
        while !self.stopping() {
            if checked.elapsed() >= REASSIGN_EVERY {
                checked = std::time::Instant::now();
                owned = self.reassign(&inputs, owned).await;
            }
            let received = tokio::select! {
                received = self.consumer.recv() => received,
                _ = tick.tick() => continue,
            };
            let message = match received {
                Err(error) => {
                    tracing::warn!(%instance, %error, "kafka consumer error");
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
                Ok(message) => message,
            };
            let topic = message.topic();
            let (partition, offset) = (message.partition(), message.offset());
            let from = message
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == FROM_HEADER))
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).to_string())
                .unwrap_or_default();
            let flow = FlowMessage {
                stream: topic
                    .strip_prefix("lathe.flow.")
                    .unwrap_or(topic)
                    .to_string(),
                key: String::from_utf8_lossy(message.key().unwrap_or_default()).to_string(),
                payload: Bytes::copy_from_slice(message.payload().unwrap_or_default()),
                from,
                position: Some(FlowPosition { partition, offset }),
            };
            let stream = flow.stream.clone();
            loop {
                match self.handler.handle(flow.clone()).await {
                    Ok(()) => break,
                    Err(reason) if !self.stopping() => {
                        tracing::warn!(%instance, %topic, partition, offset, %reason,
                            "the handler refused a message: handing it over again");
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                    // Stopping: not taken, not committed; its next owner takes it.
                    Err(_) => break,
                }
            }
            if self.stopping() {
                break;
            }
            consumed
                .entry(stream)
                .or_insert_with_key(|stream| self.metrics.consumed_counter(&self.group, stream))
                .inc();
            if let Err(error) = self.consumer.store_offset_from_message(&message) {
                tracing::warn!(%instance, %topic, partition, %error, "offset not stored");
            }
        }
        lag.abort();
        // Commits what was stored; closing may block for a moment.
        let consumer = self.consumer.clone();
        drop(self);
        let _ = tokio::task::spawn_blocking(move || {
            let _ = consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync);
            drop(consumer);
        })
        .await;
        tracing::info!(%instance, "stopped consuming from kafka");
    }

    /// Waits for the group's inputs, makes sure their topics exist and assigns this instance
    /// its partitions (from the group's committed offsets); `None` when stopped first.
    async fn assign(
        &self,
        inputs: &Arc<dyn Fn() -> GroupInputs + Send + Sync>,
    ) -> Option<Vec<(String, i32)>> {
        let instance = format!("{}/{}", self.group, self.index);
        loop {
            if self.stopping() {
                return None;
            }
            let GroupInputs { streams, instances } = inputs();
            if streams.is_empty() || instances == 0 {
                tokio::time::sleep(STOP_CHECK).await;
                continue;
            }
            let assigned = match self.desired(&streams, instances).await {
                Ok(owned) => self.assign_exactly(&owned).map(|()| owned),
                Err(error) => Err(error),
            };
            match assigned {
                Ok(owned) => return Some(owned),
                Err(error) => {
                    tracing::warn!(%instance, error = %format!("{error:#}"),
                        "cannot start consuming from kafka yet");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// The (topic, partition)s this instance owns now; its input topics are created if absent.
    async fn desired(
        &self,
        streams: &[String],
        instances: u32,
    ) -> anyhow::Result<Vec<(String, i32)>> {
        let mut owned = Vec::new();
        for stream in streams {
            let topic = flow_topic(stream);
            self.topics.ensure(&topic, instances as usize, &[]).await?;
            let partitions = self.topics.partitions(&topic).await?;
            for partition in owned_partitions(self.index, instances, partitions) {
                owned.push((topic.clone(), partition));
            }
        }
        Ok(owned)
    }

    /// Takes exactly `owned`, each from the group's committed offset.
    fn assign_exactly(&self, owned: &[(String, i32)]) -> anyhow::Result<()> {
        let mut assignment = TopicPartitionList::new();
        for (topic, partition) in owned {
            assignment.add_partition_offset(topic, *partition, Offset::Stored)?;
        }
        self.consumer.assign(&assignment)?;
        Ok(())
    }

    /// When the partitions this instance owns changed: commits what it took so far (so the
    /// next owner of a partition it gives up starts there) and takes the new set.
    async fn reassign(
        &self,
        inputs: &Arc<dyn Fn() -> GroupInputs + Send + Sync>,
        owned: Vec<(String, i32)>,
    ) -> Vec<(String, i32)> {
        let GroupInputs { streams, instances } = inputs();
        if streams.is_empty() || instances == 0 {
            return owned;
        }
        let desired = match self.desired(&streams, instances).await {
            Ok(desired) if desired != owned => desired,
            _ => return owned,
        };
        let consumer = self.consumer.clone();
        let _ = tokio::task::spawn_blocking(move || {
            consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync)
        })
        .await;
        match self.assign_exactly(&desired) {
            Ok(()) => {
                tracing::info!(group = %self.group, index = self.index,
                    partitions = desired.len(), "kafka partitions of this instance changed");
                desired
            }
            Err(error) => {
                tracing::warn!(group = %self.group, index = self.index, %error,
                    "cannot take the new partitions");
                owned
            }
        }
    }
}

/// Every [`LAG_EVERY`]: high watermark − position of each assigned partition.
async fn measure_lag(
    consumer: Arc<StreamConsumer>,
    group: String,
    metrics: KafkaMetrics,
    stopping: Arc<AtomicBool>,
) {
    while !stopping.load(Ordering::Acquire) {
        tokio::time::sleep(LAG_EVERY).await;
        let consumer = consumer.clone();
        let lags = tokio::task::spawn_blocking(move || {
            let mut lags = Vec::new();
            let Ok(positions) = consumer.position() else {
                return lags;
            };
            for element in positions.elements() {
                let (topic, partition) = (element.topic(), element.partition());
                let Ok((_, high)) =
                    consumer.fetch_watermarks(topic, partition, Duration::from_secs(5))
                else {
                    continue;
                };
                let lag = match element.offset() {
                    Offset::Offset(position) => (high - position).max(0),
                    // Nothing taken yet on this partition.
                    _ => continue,
                };
                lags.push((topic.to_string(), partition, lag));
            }
            lags
        })
        .await
        .unwrap_or_default();
        for (topic, partition, lag) in lags {
            metrics.set_lag(&group, &topic, partition, lag);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::owned_partitions;

    #[test]
    fn every_partition_has_exactly_one_owner() {
        for instances in 1..6u32 {
            for partitions in 0..12usize {
                let mut owners = vec![0; partitions];
                for index in 0..instances {
                    for p in owned_partitions(index, instances, partitions) {
                        owners[p as usize] += 1;
                    }
                }
                assert!(owners.iter().all(|n| *n == 1), "{instances} {partitions}");
            }
        }
        assert_eq!(owned_partitions(1, 3, 7), vec![1, 4]);
    }
}
