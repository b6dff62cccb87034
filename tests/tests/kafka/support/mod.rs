//! Shared pieces of the `kafka_*` tests: nodes that send flows through a real broker, the
//! emitter/tally topology, emits, the tallies' counts, and a producer that keeps emitting.
#![allow(dead_code, unreachable_pub)] // each test module uses a part; test-only items

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lathe_tests::http;
use lathe_tests::kafka::KafkaBroker;
use lathe_tests::node::NodeBuilder;
use lathe_tests::wait::wait_until;

pub const CONVERGE: Duration = Duration::from_secs(90);
pub const TOPOLOGY: &str = "[task.emitter]\ncrate = \"http_loadbalancer\"\nversion = \"0.8.2\"\n\
     task = \"my::Emitter\"\ntasks = 1\n\n\
     [task.tally]\ncrate = \"http_loadbalancer\"\nversion = \"0.8.2\"\ntask = \"my::Tally\"\n\
     tasks = 2\nflows = { inputs = [\"clicks\"] }\n";
/// The tallies' state follows them through the changelog.
pub const CHANGELOG: &str = "state = { changelog = true }\n";

/// A node template that sends flows through `broker`; emit waits up to 20 s for Kafka.
pub fn kafka_node(name: &str, broker: &KafkaBroker) -> NodeBuilder {
    NodeBuilder::new()
        .name(name)
        .arg("--kafka")
        .arg(broker.bootstrap())
        .arg("--kafka-option")
        .arg("message.timeout.ms=20000")
}

/// Running instances of `group`: index → endpoint.
pub fn running(addr: &str, group: &str) -> Result<BTreeMap<u64, String>, String> {
    let reply = http::try_get_json(addr, "/v1/tasks")?;
    Ok(reply
        .body
        .as_array()
        .ok_or(reply.text.clone())?
        .iter()
        .filter(|t| t["group"] == group && t["status"] == "running")
        .filter_map(|t| Some((t["index"].as_u64()?, t["endpoint"].as_str()?.to_string())))
        .collect())
}

/// Deploys `topology` and waits for the emitter and both tallies; the emitter's endpoint.
pub fn deploy(addr: &str, topology: &str) -> String {
    let reply = http::put_text(addr, "/v1/topology", "application/toml", topology);
    assert_eq!(reply.status, 200, "deploy: {}", reply.text);
    wait_until("2 tallies running", CONVERGE, || {
        let now = running(addr, "task.tally")?;
        (now.len() == 2).then_some(()).ok_or(format!("{now:?}"))
    });
    wait_until("the emitter running", CONVERGE, || {
        running(addr, "task.emitter")?
            .into_values()
            .next()
            .ok_or("not yet".to_string())
    })
}

pub fn emit(emitter: &str, key: &str) -> Result<http::Reply, String> {
    http::try_request("POST", emitter, &format!("/emit/clicks/{key}"), Some("{}"))
}

/// The counts of every tally instance, summed per key (tallies that do not answer: `Err`).
pub fn counts(addr: &str) -> Result<BTreeMap<String, u64>, String> {
    let mut total = BTreeMap::new();
    let tallies = running(addr, "task.tally")?;
    if tallies.len() != 2 {
        return Err(format!("tallies: {tallies:?}"));
    }
    for endpoint in tallies.values() {
        let reply = http::try_get_json(endpoint, "/tally")?;
        for (key, n) in reply.body["counts"].as_object().ok_or(reply.text.clone())? {
            *total.entry(key.clone()).or_insert(0) += n.as_u64().unwrap_or(0);
        }
    }
    Ok(total)
}

/// Waits until the tallies' counts are exactly `expected`.
pub fn wait_for_counts(addr: &str, expected: &BTreeMap<String, u64>) {
    wait_until(
        "the tallies counted every acknowledged message once",
        CONVERGE,
        || {
            let now = counts(addr)?;
            (&now == expected)
                .then_some(())
                .ok_or(format!("counted {now:?}, acknowledged {expected:?}"))
        },
    );
}

/// A metric's value summed over the series whose labels contain `labels`, on `addr`.
pub fn metric(addr: &str, name: &str, labels: &str) -> f64 {
    let text = http::request("GET", addr, "/metrics", None).text;
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Keeps emitting keyed messages to `emitter` until finished; what was acknowledged per key.
pub struct Producer {
    acknowledged: Arc<Mutex<BTreeMap<String, u64>>>,
    refusals: Arc<Mutex<Vec<String>>>,
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Producer {
    pub fn start(emitter: &str) -> Producer {
        let acknowledged: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
        let refusals: Arc<Mutex<Vec<String>>> = Arc::default();
        let done = Arc::new(AtomicBool::new(false));
        let thread = {
            let (acknowledged, refusals, done) =
                (acknowledged.clone(), refusals.clone(), done.clone());
            let emitter = emitter.to_string();
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !done.load(Ordering::Acquire) {
                    let key = format!("user-{}", i % 5);
                    i += 1;
                    match emit(&emitter, &key) {
                        Ok(reply) if reply.status == 200 => {
                            *acknowledged.lock().unwrap().entry(key).or_insert(0) += 1;
                        }
                        Ok(reply) => refusals
                            .lock()
                            .unwrap()
                            .push(format!("{}: {}", reply.status, reply.text)),
                        Err(error) => refusals.lock().unwrap().push(error),
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        Producer {
            acknowledged,
            refusals,
            done,
            thread: Some(thread),
        }
    }

    pub fn total(&self) -> u64 {
        self.acknowledged.lock().unwrap().values().sum()
    }

    /// Stops emitting; what was acknowledged, and the refusals.
    pub fn finish(mut self) -> (BTreeMap<String, u64>, Vec<String>) {
        self.done.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the producer thread");
        }
        let acknowledged = self.acknowledged.lock().unwrap().clone();
        let refusals = self.refusals.lock().unwrap().clone();
        (acknowledged, refusals)
    }
}

/// Running instances of `group` with their node: index → (node, endpoint).
pub fn placed(addr: &str, group: &str) -> Result<BTreeMap<u64, (String, String)>, String> {
    let reply = http::try_get_json(addr, "/v1/tasks")?;
    Ok(reply
        .body
        .as_array()
        .ok_or(reply.text.clone())?
        .iter()
        .filter(|t| t["group"] == group && t["status"] == "running")
        .filter_map(|t| {
            Some((
                t["index"].as_u64()?,
                (
                    t["node"].as_str()?.to_string(),
                    t["endpoint"].as_str()?.to_string(),
                ),
            ))
        })
        .collect())
}
