//! The Kafka clients Lathe makes (producer, consumers, admin) from [`KafkaSettings`], the
//! start-up reachability check, and topics created on demand with enough partitions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::producer::FutureProducer;
use rdkafka::ClientConfig;

use crate::settings::KafkaSettings;

/// How long a metadata or admin request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The topic of stream `stream`.
pub fn flow_topic(stream: &str) -> String {
    format!("lathe.flow.{stream}")
}

/// The consumer group of functional group `group`.
pub fn consumer_group(group: &str) -> String {
    format!("lathe.{group}")
}

fn base_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", settings.bootstrap());
    for (key, value) in &settings.options {
        config.set(key, value);
    }
    config
}

/// The idempotent producer (acks=all): a message is acknowledged once every in-sync replica
/// has it, and a retried send is never stored twice.
pub fn producer(settings: &KafkaSettings) -> anyhow::Result<FutureProducer> {
    let mut config = base_config(settings);
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "1")
        // Partitions added when a consuming group grows are used within seconds, not minutes.
        .set("topic.metadata.refresh.interval.ms", "5000");
    // Consumer-only properties would be warned about: keep them off the producer.
    config.remove("session.timeout.ms");
    config.remove("auto.offset.reset");
    config.create().context("cannot create the kafka producer")
}

/// A consumer in `group` that stores offsets only when told (after the handler took the
/// message); stored offsets are committed in the background and when partitions move.
pub fn consumer(settings: &KafkaSettings, group: &str) -> anyhow::Result<StreamConsumer> {
    let mut config = base_config(settings);
    config
        .set("group.id", group)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "200")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest");
    config.remove("message.timeout.ms");
    config.create().context("cannot create a kafka consumer")
}

/// A consumer that reads partitions it assigns itself from their beginning, commits nothing
/// and reports the end of each partition (for restores).
pub fn reader(settings: &KafkaSettings) -> anyhow::Result<BaseConsumer> {
    let mut config = base_config(settings);
    config
        .set("group.id", "lathe.restore")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        // A restore reads whole logs: bigger fetches, fewer round trips.
        .set("max.partition.fetch.bytes", "16777216")
        .set("fetch.max.bytes", "67108864");
    config.remove("message.timeout.ms");
    config.create().context("cannot create a kafka reader")
}

fn admin(settings: &KafkaSettings) -> anyhow::Result<AdminClient<DefaultClientContext>> {
    let mut config = base_config(settings);
    config.remove("session.timeout.ms");
    config.remove("message.timeout.ms");
    config
        .create()
        .context("cannot create a kafka admin client")
}

/// Fails unless a broker answers a metadata request within `timeout` (blocking).
pub fn check_reachable(settings: &KafkaSettings, timeout: Duration) -> anyhow::Result<()> {
    let mut config = base_config(settings);
    config.remove("session.timeout.ms");
    config.remove("message.timeout.ms");
    let probe: BaseConsumer = config.create().context("cannot create a kafka client")?;
    match probe.fetch_metadata(None, timeout) {
        Ok(metadata) if !metadata.brokers().is_empty() => Ok(()),
        Ok(_) => bail!("brokers {} answered with no broker", settings.bootstrap()),
        Err(error) => bail!(
            "no broker of {} answered within {timeout:?} ({error})",
            settings.bootstrap()
        ),
    }
}

/// Creates topics on demand, with at least as many partitions as asked; remembers what it did.
pub struct Topics {
    settings: KafkaSettings,
    admin: AdminClient<DefaultClientContext>,
    probe: Arc<BaseConsumer>,
    /// Topic → partitions it is known to have.
    known: Mutex<HashMap<String, usize>>,
}

impl Topics {
    pub fn new(settings: &KafkaSettings) -> anyhow::Result<Topics> {
        let mut config = base_config(settings);
        config.remove("session.timeout.ms");
        config.remove("message.timeout.ms");
        Ok(Topics {
            settings: settings.clone(),
            admin: admin(settings)?,
            probe: Arc::new(config.create().context("cannot create a kafka client")?),
            known: Mutex::default(),
        })
    }

    /// Makes sure `topic` exists with at least `partitions` partitions (and with `configs`
    /// when it is created).
    pub async fn ensure(
        &self,
        topic: &str,
        partitions: usize,
        configs: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        let partitions = partitions.max(1);
        let known = self.lock().get(topic).copied();
        if known.is_some_and(|n| n >= partitions) {
            return Ok(());
        }
        let have = self.partitions_of(topic).await?;
        let options = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
        match have {
            None => {
                let mut new = NewTopic::new(topic, partitions as i32, TopicReplication::Fixed(1));
                for (key, value) in configs {
                    new = new.set(key, value);
                }
                let results = self.admin.create_topics([&new], &options).await?;
                for result in results {
                    if let Err((name, code)) = result {
                        // Another node created it in the meantime: fine.
                        if code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists {
                            bail!("cannot create topic {name}: {code}");
                        }
                    }
                }
                tracing::info!(topic, partitions, "kafka topic created");
            }
            Some(have) if have < partitions => {
                let more = NewPartitions::new(topic, partitions);
                let results = self.admin.create_partitions([&more], &options).await?;
                for result in results {
                    if let Err((name, code)) = result {
                        tracing::warn!(topic = %name, %code, have, partitions,
                            "cannot add partitions: some instances will stay idle");
                    }
                }
            }
            Some(_) => {}
        }
        self.lock().insert(topic.to_string(), partitions);
        Ok(())
    }

    /// Whether `topic` is known to have at least `partitions` partitions (no request).
    pub fn has(&self, topic: &str, partitions: usize) -> bool {
        self.lock()
            .get(topic)
            .is_some_and(|known| *known >= partitions.max(1))
    }

    /// How many partitions `topic` has; an error when it does not exist.
    pub async fn partitions(&self, topic: &str) -> anyhow::Result<usize> {
        match self.partitions_of(topic).await? {
            Some(n) => {
                self.lock().insert(topic.to_string(), n);
                Ok(n)
            }
            None => bail!("topic {topic} does not exist"),
        }
    }

    /// The partitions of `topic`, `None` when it does not exist.
    async fn partitions_of(&self, topic: &str) -> anyhow::Result<Option<usize>> {
        let probe = self.probe.clone();
        let name = topic.to_string();
        let metadata =
            tokio::task::spawn_blocking(move || probe.fetch_metadata(Some(&name), REQUEST_TIMEOUT))
                .await?
                .with_context(|| {
                    format!(
                        "no metadata for topic {topic} from {}",
                        self.settings.bootstrap()
                    )
                })?;
        Ok(metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
            .map(|t| t.partitions().len()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Subscribes `consumer` to `topics`.
pub fn subscribe(consumer: &StreamConsumer, topics: &[String]) -> anyhow::Result<()> {
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topics)
        .with_context(|| format!("cannot subscribe to {topics:?}"))
}
