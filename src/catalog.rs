//! Task types and the catalog a node binary is built with.
//!
//! A task type is identified by (crate name, crate version, task path), taken from the task crate's
//! own Cargo metadata by the [`http_task!`](crate::http_task) and [`task!`](crate::task) macros,
//! so two versions of one crate linked into one node are two task types. A node advertises its
//! catalog; the scheduler places instances only where their type is in the catalog.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::http::HttpTask;
use crate::task::Task;

/// What a topology group names in `crate`, `version` and `task`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TaskType {
    #[serde(rename = "crate")]
    pub crate_name: String,
    pub version: String,
    pub task: String,
}

impl TaskType {
    pub fn new(
        crate_name: impl Into<String>,
        version: impl Into<String>,
        task: impl Into<String>,
    ) -> Self {
        TaskType {
            crate_name: crate_name.into(),
            version: version.into(),
            task: task.into(),
        }
    }
}

impl fmt::Display for TaskType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.crate_name, self.version, self.task)
    }
}

/// Builds a fresh instance of a task (one per instance, and again on every restart).
#[derive(Clone)]
pub enum TaskFactory {
    Http(Arc<dyn Fn() -> Box<dyn HttpTask> + Send + Sync>),
    Plain(Arc<dyn Fn() -> Box<dyn Task> + Send + Sync>),
}

/// One runnable task type.
#[derive(Clone)]
pub struct TaskDescriptor {
    pub task_type: TaskType,
    pub factory: TaskFactory,
}

impl TaskDescriptor {
    pub fn http<T, F>(task_type: TaskType, make: F) -> Self
    where
        T: HttpTask,
        F: Fn() -> T + Send + Sync + 'static,
    {
        TaskDescriptor {
            task_type,
            factory: TaskFactory::Http(Arc::new(move || Box::new(make()))),
        }
    }

    pub fn plain<T, F>(task_type: TaskType, make: F) -> Self
    where
        T: Task,
        F: Fn() -> T + Send + Sync + 'static,
    {
        TaskDescriptor {
            task_type,
            factory: TaskFactory::Plain(Arc::new(move || Box::new(make()))),
        }
    }

    pub fn is_http(&self) -> bool {
        matches!(self.factory, TaskFactory::Http(_))
    }
}

impl fmt::Debug for TaskDescriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskDescriptor")
            .field("task_type", &self.task_type)
            .field("http", &self.is_http())
            .finish()
    }
}

/// The task types a node binary can run.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    tasks: BTreeMap<TaskType, TaskDescriptor>,
}

impl Catalog {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds task types; a later registration of the same type replaces the earlier one.
    pub fn with(mut self, descriptors: impl IntoIterator<Item = TaskDescriptor>) -> Self {
        for descriptor in descriptors {
            self.tasks.insert(descriptor.task_type.clone(), descriptor);
        }
        self
    }

    pub fn get(&self, task_type: &TaskType) -> Option<&TaskDescriptor> {
        self.tasks.get(task_type)
    }

    pub fn types(&self) -> impl Iterator<Item = &TaskType> {
        self.tasks.keys()
    }

    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

/// Describes an [`HttpTask`] of the calling crate: `http_task!("my::FrontPage",
/// FrontPage::default)`. The crate name and version come from the calling crate's Cargo metadata.
#[macro_export]
macro_rules! http_task {
    ($path:expr, $make:expr) => {
        $crate::catalog::TaskDescriptor::http(
            $crate::catalog::TaskType::new(
                env!("CARGO_PKG_NAME"),
                env!("CARGO_PKG_VERSION"),
                $path,
            ),
            $make,
        )
    };
}

/// Describes a plain [`Task`] of the calling crate: `task!("my::Counter", Counter::default)`.
#[macro_export]
macro_rules! task {
    ($path:expr, $make:expr) => {
        $crate::catalog::TaskDescriptor::plain(
            $crate::catalog::TaskType::new(
                env!("CARGO_PKG_NAME"),
                env!("CARGO_PKG_VERSION"),
                $path,
            ),
            $make,
        )
    };
}
