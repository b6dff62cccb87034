//! The backend's own thread: resource manager backends block (HTTP calls to YARN, processes), so
//! the actor hands them jobs over a channel and gets each outcome back as a message — its mailbox
//! never waits on the network.
//!
//! ```text
//! ResourceManager ──Job──> [lathe-resources thread: Box<dyn ResourceManager>] ──Outcome──> ResourceManager
//! ```

use std::sync::mpsc;

use lathe_resources::{ContainerEvent, ContainerId, NodeLaunch, ResourceError, ResourceManager};

/// Makes a fresh backend (at start, and whenever leadership changes hands).
pub type BackendFactory = std::sync::Arc<dyn Fn() -> Box<dyn ResourceManager> + Send + Sync>;

/// What the thread is asked to do.
#[derive(Debug)]
pub(crate) enum Job {
    Poll,
    Request(NodeLaunch),
    Release(ContainerId),
    Adopt(Vec<ContainerId>),
    /// Forget everything: a fresh backend.
    Reset,
}

/// What came of a job.
#[derive(Debug)]
pub enum Outcome {
    Polled(Result<Vec<ContainerEvent>, ResourceError>),
    Requested {
        node: String,
        result: Result<ContainerId, ResourceError>,
    },
    Released {
        id: ContainerId,
        /// [`ResourceError::UnknownContainer`]: the backend does not know it (any more).
        result: Result<(), ResourceError>,
    },
    Adopted(Vec<(ContainerId, Result<(), ResourceError>)>),
}

/// The handle of the backend's thread; the thread ends when this is dropped.
pub(crate) struct Worker {
    jobs: mpsc::Sender<(u64, Job)>,
}

impl Worker {
    /// Starts the thread; `reply(epoch, outcome)` is called on it after every job but `Reset`.
    pub(crate) fn start(
        factory: BackendFactory,
        reply: impl Fn(u64, Outcome) -> bool + Send + 'static,
    ) -> std::io::Result<Worker> {
        let (jobs, inbox) = mpsc::channel::<(u64, Job)>();
        std::thread::Builder::new()
            .name("lathe-resources".into())
            .spawn(move || {
                let mut backend = factory();
                for (epoch, job) in inbox {
                    let outcome = match job {
                        Job::Reset => {
                            backend = factory();
                            continue;
                        }
                        Job::Poll => Outcome::Polled(backend.poll()),
                        Job::Request(launch) => Outcome::Requested {
                            node: launch.name.clone(),
                            result: backend.request(&launch),
                        },
                        Job::Release(id) => {
                            let result = backend.release(&id);
                            Outcome::Released { id, result }
                        }
                        Job::Adopt(ids) => Outcome::Adopted(
                            ids.into_iter()
                                .map(|id| {
                                    let result = backend.adopt(&id);
                                    (id, result)
                                })
                                .collect(),
                        ),
                    };
                    if !reply(epoch, outcome) {
                        return;
                    }
                }
            })?;
        Ok(Worker { jobs })
    }

    /// Queues a job; a thread that is gone (its actor stopped) drops it.
    pub(crate) fn send(&self, epoch: u64, job: Job) {
        let _ = self.jobs.send((epoch, job));
    }
}
