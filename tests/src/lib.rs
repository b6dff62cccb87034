//! Lathe's test harness: real services and real `lathe-node` processes for the integration tests in
//! `tests/`.
//!
//! # Layout
//! - [`node`]: `NodeBuilder` → `NodeProcess` (a real `lathe-node` on free loopback ports) and
//!   `Cluster`.
//! - [`browser`]: headless Chromium through chromedriver (WebDriver): page scripts, console errors,
//!   screenshots.
//! - [`haproxy`]: a real HAProxy in master-worker mode, and its CLI sockets.
//! - [`http`]: REST helpers (`get_json`, `put_json`, ...) and `SseReader` for `/v1/watch/...`
//!   streams.
//! - [`wait`]: `wait_until(what, deadline, condition)`: poll a condition, never sleep a fixed time.
//! - [`zk`]: a real ZooKeeper server started for a test.
//! - [`kafka`]: a real Kafka-protocol broker process (`noida-db`) started for a test.
//! - [`proxy`]: a TCP proxy a test can cut, to cut one node off from ZooKeeper.
//! - [`yarn`]: a double of a YARN ResourceManager's REST API that runs the containers it grants.
//! - [`prometheus`]: a real Prometheus over the shipped `config/prometheus/`, and `promtool`.
//! - [`promql`]: the PromQL expressions of the shipped rules, console and Grafana dashboard.
//! - [`scenario`]: shared steps: a ZooKeeper-backed cluster, writes that must succeed, entries
//!   under a prefix.
pub mod browser;
pub mod haproxy;
pub mod http;
pub mod kafka;
pub mod node;
pub mod process;
pub mod prometheus;
pub mod promql;
pub mod proxy;
pub mod scenario;
pub mod wait;
pub mod yarn;
pub mod zk;
