//! The `kafka` phase: one real Kafka-protocol broker process (`noida-db`, as in the tests) on
//! loopback, and in this process, against it in the same run:
//! - flows: throughput and emit → handler latency through Lathe's Kafka layer (`KafkaFlows`:
//!   `emit` acknowledged, consumed as an instance of a consumer group, offsets stored after the
//!   handler) and through a raw rdkafka producer and consumer with the same window of messages
//!   in flight;
//! - state: puts/s of one instance's state (RocksDB), without and with the changelog;
//! - restore: an instance's state of many keys restored from its changelog.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use futures::StreamExt;
use lathe::flow::{FlowHandler, FlowMessage};
use lathe_actors::flow::{FlowTransport, GroupInputs};
use lathe_actors::tasks::StateChangelog;
use lathe_kafka::changelog::{log_key, state_topic};
use lathe_kafka::client::{self, Topics};
use lathe_kafka::{KafkaChangelog, KafkaFlows, KafkaSettings};
use lathe_tests::kafka::KafkaBroker;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::runtime::Runtime;

use crate::report::Report;
use crate::stats::{thousands, Summary};
use crate::{attempt, progress, Plan};

/// Messages in flight at once, for both ways.
const WINDOW: usize = 256;
const NO_GOAL: &str = "—";

pub(crate) fn kafka_phase(runtime: &Runtime, plan: &Plan, report: &mut Report) {
    progress("starting a Kafka-protocol broker (noida-db)");
    let broker = match attempt(KafkaBroker::new) {
        Ok(broker) => broker,
        Err(why) => {
            for row in [
                "9. flows through Lathe vs raw rdkafka",
                "9. state puts/s",
                "9. restore",
            ] {
                report.failed(row, "1 broker", &why, NO_GOAL);
            }
            return;
        }
    };
    let settings = match KafkaSettings::parse(&broker.bootstrap(), &[]) {
        Ok(settings) => settings,
        Err(why) => return report.failed("9. kafka", "1 broker", &why.to_string(), NO_GOAL),
    };
    let n = plan.kafka_messages;
    progress(&format!(
        "kafka: {n} messages through the raw rdkafka client"
    ));
    let raw = attempt(|| runtime.block_on(raw_flow(&settings, n)));
    progress(&format!("kafka: {n} messages through Lathe's flows"));
    let lathe = attempt(|| runtime.block_on(lathe_flow(&settings, n)));
    let setup = format!(
        "{n} keyed messages of 100 bytes, {WINDOW} in flight, 1 partition, 1 broker on \
         loopback; emit → handler"
    );
    match (&raw, &lathe) {
        (Ok(raw), Ok(lathe)) => {
            let ratio = lathe.per_second / raw.per_second;
            report.goal(
                "9. flow throughput, Lathe / raw rdkafka",
                &setup,
                format!(
                    "Lathe {}/s vs raw {}/s: {ratio:.2}×; p99 latency Lathe {} vs raw {}",
                    thousands(lathe.per_second as u64),
                    thousands(raw.per_second as u64),
                    crate::stats::ms(lathe.latency.p99_ms),
                    crate::stats::ms(raw.latency.p99_ms)
                ),
                "≥ 0.8×",
                ratio >= 0.8,
            );
            report.info(
                "9. emit → handler latency, Lathe",
                &setup,
                lathe.latency.describe(),
            );
            report.info(
                "9. produce → consume latency, raw",
                &setup,
                raw.latency.describe(),
            );
        }
        _ => {
            let why = [raw.err(), lathe.err()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>();
            report.failed(
                "9. flow throughput, Lathe / raw rdkafka",
                &setup,
                &why.join("; "),
                "≥ 0.8×",
            );
        }
    }
    state_puts(runtime, plan, &settings, report);
    restore(runtime, plan, &settings, report);
    progress("stopping the broker");
}

/// What one way of moving messages achieved.
struct FlowRun {
    per_second: f64,
    latency: Summary,
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

/// A 100-byte payload starting with the send time.
fn stamped() -> Vec<u8> {
    let mut payload = now_nanos().to_be_bytes().to_vec();
    payload.resize(100, b'x');
    payload
}

fn age(payload: &[u8]) -> Duration {
    let sent = payload
        .get(..16)
        .and_then(|b| <[u8; 16]>::try_from(b).ok())
        .map(u128::from_be_bytes)
        .unwrap_or(0);
    Duration::from_nanos(now_nanos().saturating_sub(sent) as u64)
}

fn unique(what: &str) -> String {
    format!(
        "bench-{what}-{}-{}",
        std::process::id(),
        now_nanos() % 1_000_000_000
    )
}

async fn raw_flow(settings: &KafkaSettings, n: usize) -> anyhow::Result<FlowRun> {
    let topic = unique("raw");
    Topics::new(settings)?.ensure(&topic, 1, &[]).await?;
    let producer: FutureProducer = client::producer(settings)?;
    let consumer: StreamConsumer = client::consumer(settings, &unique("raw-group"))?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(&topic, 0, Offset::Beginning)?;
    consumer.assign(&assignment)?;
    let warmup = n / 10;
    let taken = Arc::new(AtomicUsize::new(0));
    let reader = {
        let taken = taken.clone();
        tokio::spawn(async move {
            let mut samples = Vec::with_capacity(n);
            while samples.len() < n {
                let message = consumer.recv().await?;
                if message.offset() as usize >= warmup {
                    samples.push(age(message.payload().unwrap_or_default()));
                }
                consumer.store_offset_from_message(&message)?;
                taken.fetch_add(1, Ordering::AcqRel);
            }
            anyhow::Ok(samples)
        })
    };
    let send = |i: usize| {
        let producer = &producer;
        let topic = &topic;
        async move {
            let key = format!("key-{}", i % 100);
            let payload = stamped();
            producer
                .send(
                    FutureRecord::to(topic).key(&key).payload(&payload),
                    Timeout::Never,
                )
                .await
                .map_err(|(e, _)| anyhow::anyhow!("{e}"))
        }
    };
    futures::stream::iter(0..warmup)
        .map(send)
        .buffer_unordered(WINDOW)
        .collect::<Vec<_>>()
        .await;
    // As for Lathe: the clock starts once the consumer took the warm-up messages.
    while taken.load(Ordering::Acquire) < warmup {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    let sent: Vec<_> = futures::stream::iter(warmup..warmup + n)
        .map(send)
        .buffer_unordered(WINDOW)
        .collect()
        .await;
    sent.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    let samples = tokio::time::timeout(Duration::from_secs(300), reader)
        .await
        .context("the raw consumer did not get every message in 300 s")???;
    let elapsed = started.elapsed();
    Ok(FlowRun {
        per_second: n as f64 / elapsed.as_secs_f64(),
        latency: Summary::of(samples).context("no samples")?,
    })
}

/// Records the age of every message a consuming instance takes.
struct Recorder {
    samples: Mutex<Vec<Duration>>,
    taken: AtomicUsize,
    done: tokio::sync::Notify,
    until: usize,
}

#[async_trait::async_trait]
impl FlowHandler for Recorder {
    async fn handle(&self, message: FlowMessage) -> Result<(), String> {
        self.samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(age(&message.payload));
        if self.taken.fetch_add(1, Ordering::AcqRel) + 1 == self.until {
            self.done.notify_one();
        }
        Ok(())
    }
}

async fn lathe_flow(settings: &KafkaSettings, n: usize) -> anyhow::Result<FlowRun> {
    let flows = KafkaFlows::new(settings, &prometheus::Registry::new())?;
    let stream = unique("lathe");
    let group = unique("sink");
    let warmup = n / 10;
    let recorder = Arc::new(Recorder {
        samples: Mutex::new(Vec::with_capacity(n + warmup)),
        taken: AtomicUsize::new(0),
        done: tokio::sync::Notify::new(),
        until: n + warmup,
    });
    let stopping = Arc::new(AtomicBool::new(false));
    let inputs = {
        let stream = stream.clone();
        Arc::new(move || GroupInputs {
            streams: vec![stream.clone()],
            instances: 1,
        })
    };
    flows
        .consume(&group, 0, inputs, recorder.clone(), stopping.clone())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let emit = |i: usize| {
        let (flows, stream, group) = (&flows, &stream, &group);
        async move {
            let message = FlowMessage {
                stream: stream.clone(),
                key: format!("key-{}", i % 100),
                payload: stamped().into(),
                from: "bench/0".into(),
                position: None,
            };
            flows.emit(message, vec![group.clone()], 1).await
        }
    };
    let results: Vec<_> = futures::stream::iter(0..warmup)
        .map(emit)
        .buffer_unordered(WINDOW)
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<_>, _>>()?;
    while recorder.taken.load(Ordering::Acquire) < warmup {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    recorder
        .samples
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clear();
    let done = recorder.done.notified();
    let started = Instant::now();
    let results: Vec<_> = futures::stream::iter(warmup..warmup + n)
        .map(emit)
        .buffer_unordered(WINDOW)
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<_>, _>>()?;
    tokio::time::timeout(Duration::from_secs(300), done)
        .await
        .context("the consuming instance did not take every message in 300 s")?;
    let elapsed = started.elapsed();
    stopping.store(true, Ordering::Release);
    let samples = std::mem::take(&mut *recorder.samples.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(FlowRun {
        per_second: n as f64 / elapsed.as_secs_f64(),
        latency: Summary::of(samples).context("no samples")?,
    })
}

/// Puts/s into one instance's state, without and with the changelog.
fn state_puts(runtime: &Runtime, plan: &Plan, settings: &KafkaSettings, report: &mut Report) {
    let run = || -> anyhow::Result<(f64, f64)> {
        let dir = tempfile::tempdir()?;
        let states = lathe_store::state::NodeStates::open(dir.path())?;
        let local = states.instance("bench.state", 0);
        let plain = puts_per_second(&local, plan.state_puts, Duration::from_secs(20))?;
        let changelog = KafkaChangelog::new(settings)?;
        let group = unique("logged");
        let logged_local = states.instance(&group, 0);
        let progress_report: lathe_actors::tasks::RestoreProgress = Arc::new(|_| {});
        runtime.block_on(changelog.restore(&group, 0, &logged_local, progress_report))?;
        let logged = changelog.wrap(&group, 0, logged_local);
        let with_log = puts_per_second(&logged, plan.state_puts, Duration::from_secs(20))?;
        Ok((plain, with_log))
    };
    progress("kafka: state puts/s without and with the changelog");
    let setup =
        "sequential puts of 8-byte values to one instance's state (RocksDB, WAL without fsync); \
                 with the changelog each put waits for Kafka's acknowledgement";
    match attempt(run) {
        Ok((plain, logged)) => {
            report.goal(
                "9. state puts/s per instance, no changelog",
                setup,
                format!("{}/s", thousands(plain as u64)),
                "≥ 100k/s",
                plain >= 100_000.0,
            );
            report.info(
                "9. state puts/s per instance, changelog",
                setup,
                format!("{}/s", thousands(logged as u64)),
            );
        }
        Err(why) => report.failed("9. state puts/s per instance", setup, &why, "≥ 100k/s"),
    }
}

fn puts_per_second(state: &lathe::StateStore, n: usize, budget: Duration) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut done = 0;
    while done < n && started.elapsed() < budget {
        state.put(format!("key/{done}"), (done as u64).to_be_bytes())?;
        done += 1;
    }
    Ok(done as f64 / started.elapsed().as_secs_f64())
}

/// Writes `keys` records to a changelog with a raw producer, then restores an instance from it.
fn restore(runtime: &Runtime, plan: &Plan, settings: &KafkaSettings, report: &mut Report) {
    let keys = plan.restore_keys;
    let run = || -> anyhow::Result<(Duration, u64)> {
        let group = unique("restore");
        let topic = state_topic(&group);
        runtime.block_on(async {
            Topics::new(settings)?
                .ensure(&topic, 1, &[("cleanup.policy", "compact")])
                .await?;
            let producer: FutureProducer = client::producer(settings)?;
            let send = |i: usize| {
                let (producer, topic) = (&producer, &topic);
                async move {
                    let key = log_key(0, format!("key/{i}").as_bytes());
                    let value = (i as u64).to_be_bytes();
                    producer
                        .send(
                            FutureRecord::to(topic).key(&key).payload(&value[..]),
                            Timeout::Never,
                        )
                        .await
                        .map_err(|(e, _)| anyhow::anyhow!("{e}"))
                }
            };
            let sent: Vec<_> = futures::stream::iter(0..keys)
                .map(send)
                .buffer_unordered(4 * WINDOW)
                .collect()
                .await;
            sent.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
            anyhow::Ok(())
        })?;
        let dir = tempfile::tempdir()?;
        let states = lathe_store::state::NodeStates::open(dir.path())?;
        let local = states.instance(&group, 0);
        let changelog = KafkaChangelog::new(settings)?;
        let started = Instant::now();
        let silent: lathe_actors::tasks::RestoreProgress = Arc::new(|_| {});
        let restored = runtime.block_on(changelog.restore(&group, 0, &local, silent))?;
        Ok((started.elapsed(), restored))
    };
    progress(&format!("kafka: restore of {keys} keys"));
    let setup = format!(
        "{keys} keys of one instance in its changelog (1 partition), into an empty RocksDB"
    );
    match attempt(run) {
        Ok((took, restored)) => report.goal(
            "9. state restore from the changelog",
            &setup,
            format!(
                "{:.2} s ({} keys restored)",
                took.as_secs_f64(),
                thousands(restored)
            ),
            "≤ 5 s for 1M keys",
            restored as usize == keys && (keys < 1_000_000 || took <= Duration::from_secs(5)),
        ),
        Err(why) => report.failed(
            "9. state restore from the changelog",
            &setup,
            &why,
            "≤ 5 s for 1M keys",
        ),
    }
}
