//! Small task types for the tests, and a catalog of them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lathe::http::{text, HttpTask, Request, RequestExt, Response};
use lathe::{Catalog, Task, TaskContext, TaskDescriptor, TaskResult, TaskType};

pub(crate) fn echo_type() -> TaskType {
    TaskType::new("test_tasks", "1.0.0", "t::Echo")
}

pub(crate) fn echo_v2_type() -> TaskType {
    TaskType::new("test_tasks", "2.0.0", "t::Echo")
}

pub(crate) fn relay_type() -> TaskType {
    TaskType::new("test_tasks", "1.0.0", "t::Relay")
}

pub(crate) fn crashing_type() -> TaskType {
    TaskType::new("test_tasks", "1.0.0", "t::PanicsInStart")
}

pub(crate) fn ticker_type() -> TaskType {
    TaskType::new("test_tasks", "1.0.0", "t::Ticker")
}

pub(crate) fn counted_type() -> TaskType {
    TaskType::new("test_tasks", "1.0.0", "t::Counted")
}

/// What the test tasks let the tests observe.
#[derive(Default, Clone)]
pub(crate) struct Probes {
    pub(crate) crashing_starts: Arc<AtomicUsize>,
    pub(crate) ticks: Arc<AtomicUsize>,
    pub(crate) ticker_stopped: Arc<AtomicBool>,
    /// Starts of `t::Counted` instances, by index.
    pub(crate) counted_starts: Arc<Mutex<BTreeMap<u32, usize>>>,
}

impl Probes {
    /// How many times each `t::Counted` instance started, by index.
    pub(crate) fn starts(&self) -> BTreeMap<u32, usize> {
        self.counted_starts.lock().unwrap().clone()
    }
}

pub(crate) fn catalog(probes: &Probes) -> Catalog {
    let starts = probes.crashing_starts.clone();
    let (ticks, stopped) = (probes.ticks.clone(), probes.ticker_stopped.clone());
    let counted = probes.counted_starts.clone();
    Catalog::new().with([
        TaskDescriptor::http(counted_type(), move || Counted(counted.clone())),
        TaskDescriptor::http(echo_type(), || Echo),
        TaskDescriptor::http(echo_v2_type(), || Echo),
        TaskDescriptor::http(relay_type(), || Relay),
        TaskDescriptor::http(crashing_type(), move || PanicsInStart(starts.clone())),
        TaskDescriptor::plain(ticker_type(), move || Ticker {
            ticks: ticks.clone(),
            stopped: stopped.clone(),
        }),
    ])
}

/// Answers `<group>/<index> <greeting>` (`greeting` from its metadata); `/panic` panics.
struct Echo;

#[async_trait::async_trait]
impl HttpTask for Echo {
    async fn handle(&self, ctx: &TaskContext, request: Request) -> Response {
        if request.path_segments() == ["panic"] {
            panic!("asked to panic");
        }
        let greeting: String = ctx
            .lookup("greeting")
            .and_then(Result::ok)
            .unwrap_or_default();
        let identity = ctx.identity();
        text(
            200,
            format!("{}/{} {greeting}", identity.group, identity.index),
        )
    }
}

/// Forwards every request to the group named by its `target` metadata.
struct Relay;

#[async_trait::async_trait]
impl HttpTask for Relay {
    async fn handle(&self, ctx: &TaskContext, request: Request) -> Response {
        let Some(Ok(target)) = ctx.lookup::<String>("target") else {
            return text(503, "no target");
        };
        match ctx.get_ref(&target).await {
            Ok(target) => ctx.forward(request, &target).await,
            Err(error) => text(503, error.to_string()),
        }
    }
}

struct PanicsInStart(Arc<AtomicUsize>);

#[async_trait::async_trait]
impl HttpTask for PanicsInStart {
    async fn start(&self, _ctx: &TaskContext) -> TaskResult {
        self.0.fetch_add(1, Ordering::SeqCst);
        panic!("cannot start, on purpose");
    }

    async fn handle(&self, _ctx: &TaskContext, _request: Request) -> Response {
        text(200, "unreachable")
    }
}

/// Counts its starts by instance index; answers 200.
struct Counted(Arc<Mutex<BTreeMap<u32, usize>>>);

#[async_trait::async_trait]
impl HttpTask for Counted {
    async fn start(&self, ctx: &TaskContext) -> TaskResult {
        *self
            .0
            .lock()
            .unwrap()
            .entry(ctx.identity().index)
            .or_insert(0) += 1;
        Ok(())
    }

    async fn handle(&self, _ctx: &TaskContext, _request: Request) -> Response {
        text(200, "counted")
    }
}

/// A plain task that blocks its thread, ticking until asked to stop.
struct Ticker {
    ticks: Arc<AtomicUsize>,
    stopped: Arc<AtomicBool>,
}

impl Task for Ticker {
    fn run(&mut self, ctx: &TaskContext) -> TaskResult {
        while !ctx.is_stopping() {
            self.ticks.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    fn stop(&mut self, _ctx: &TaskContext) {
        self.stopped.store(true, Ordering::SeqCst);
    }
}
