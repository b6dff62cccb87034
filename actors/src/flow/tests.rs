use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use lathe::flow::{FlowError, FlowHandler, FlowMessage};
use lathe::topology::parse;

use super::FlowHost;
use crate::cache::tests::FixedPeers;

/// Records (instance, key) of every message; refuses keys starting with "bad".
struct Recorder {
    index: u32,
    seen: Seen,
}

#[async_trait]
impl FlowHandler for Recorder {
    async fn handle(&self, message: FlowMessage) -> Result<(), String> {
        if message.key.starts_with("bad") {
            return Err(format!("cannot take {}", message.key));
        }
        self.seen.lock().unwrap().push((self.index, message.key));
        Ok(())
    }
}

fn message(stream: &str, key: &str) -> FlowMessage {
    FlowMessage {
        stream: stream.into(),
        key: key.into(),
        payload: bytes::Bytes::from_static(b"{}"),
        from: "task.emitter/0".into(),
        position: None,
    }
}

const TOPOLOGY: &str =
    "[task.tally]\ncrate = \"c\"\nversion = \"1.0.0\"\ntask = \"t\"\ntasks = 3\n\
     flows = { inputs = [\"clicks\"] }\n";

/// Every message the recorders took: (instance, key).
type Seen = Arc<Mutex<Vec<(u32, String)>>>;

fn host() -> (Arc<FlowHost>, Seen, Vec<Arc<AtomicBool>>) {
    let peers = Arc::new(FixedPeers(Mutex::new(vec![0, 1, 2])));
    let host = FlowHost::new("n", peers);
    host.set_topology(&parse("t.toml", TOPOLOGY).unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut stops = Vec::new();
    for index in 0..3 {
        let stopping = Arc::new(AtomicBool::new(false));
        let recorder = Arc::new(Recorder {
            index,
            seen: seen.clone(),
        });
        host.consume("task.tally", index, recorder, stopping.clone())
            .expect("consume");
        stops.push(stopping);
    }
    (host, seen, stops)
}

#[tokio::test]
async fn a_key_always_goes_to_the_same_instance_of_each_consuming_group() {
    let (host, seen, _stops) = host();
    for i in 0..60 {
        let delivery = host
            .emit(message("clicks", &format!("user-{}", i % 6)))
            .await
            .unwrap();
        assert_eq!(delivery.taken_by.len(), 1);
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 60);
    let mut by_key: BTreeMap<&String, BTreeSet<u32>> = BTreeMap::new();
    for (index, key) in seen.iter() {
        by_key.entry(key).or_default().insert(*index);
    }
    assert!(
        by_key.values().all(|instances| instances.len() == 1),
        "{by_key:?}"
    );
    let used: BTreeSet<u32> = by_key.values().flatten().copied().collect();
    assert!(
        used.len() >= 2,
        "keys spread over the instances: {by_key:?}"
    );
}

#[tokio::test]
async fn what_cannot_be_delivered_is_an_error_naming_why() {
    let (host, _seen, stops) = host();
    assert_eq!(
        host.emit(message("orders", "k")).await.unwrap_err(),
        FlowError::NoConsumer {
            stream: "orders".into()
        }
    );
    let refused = host.emit(message("clicks", "bad-1")).await.unwrap_err();
    assert!(
        matches!(&refused, FlowError::NotTaken { group, reason }
            if group == "task.tally" && reason.contains("cannot take bad-1")),
        "{refused}"
    );
    // A stopped instance (still listed live) does not take its keys.
    for stop in &stops {
        stop.store(true, std::sync::atomic::Ordering::Release);
    }
    let stopped = host.emit(message("clicks", "user-1")).await.unwrap_err();
    assert!(
        stopped.to_string().contains("does not consume"),
        "{stopped}"
    );
}
