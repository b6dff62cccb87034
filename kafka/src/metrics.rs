//! Kafka metrics: messages produced and consumed per stream, produce failures, consumer lag per
//! group and partition (and state restore time, for the changelog).

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

/// The Kafka metrics of one node (cheap to clone).
#[derive(Clone)]
pub struct KafkaMetrics {
    produced: IntCounterVec,
    produce_errors: IntCounterVec,
    consumed: IntCounterVec,
    lag: IntGaugeVec,
}

impl KafkaMetrics {
    /// Registers the metrics in `registry`.
    pub fn register(registry: &Registry) -> anyhow::Result<KafkaMetrics> {
        let produced = IntCounterVec::new(
            Opts::new(
                "lathe_kafka_produced_total",
                "flow messages Kafka acknowledged, per stream",
            ),
            &["stream"],
        )?;
        let produce_errors = IntCounterVec::new(
            Opts::new(
                "lathe_kafka_produce_errors_total",
                "flow messages Kafka did not acknowledge, per stream",
            ),
            &["stream"],
        )?;
        let consumed = IntCounterVec::new(
            Opts::new(
                "lathe_kafka_consumed_total",
                "flow messages taken by a handler, per consuming group and stream",
            ),
            &["group", "stream"],
        )?;
        let lag = IntGaugeVec::new(
            Opts::new(
                "lathe_kafka_consumer_lag",
                "messages of a partition not yet taken by its consuming instance",
            ),
            &["group", "topic", "partition"],
        )?;
        registry.register(Box::new(produced.clone()))?;
        registry.register(Box::new(produce_errors.clone()))?;
        registry.register(Box::new(consumed.clone()))?;
        registry.register(Box::new(lag.clone()))?;
        Ok(KafkaMetrics {
            produced,
            produce_errors,
            consumed,
            lag,
        })
    }

    pub(crate) fn produced(&self, stream: &str) {
        self.produced.with_label_values(&[stream]).inc();
    }

    pub(crate) fn produce_failed(&self, stream: &str) {
        self.produce_errors.with_label_values(&[stream]).inc();
    }

    /// The counter of messages of `stream` taken by `group` (kept by the consumer loop).
    pub(crate) fn consumed_counter(&self, group: &str, stream: &str) -> prometheus::IntCounter {
        self.consumed.with_label_values(&[group, stream])
    }

    pub(crate) fn set_lag(&self, group: &str, topic: &str, partition: i32, lag: i64) {
        self.lag
            .with_label_values(&[group, topic, &partition.to_string()])
            .set(lag);
    }
}
