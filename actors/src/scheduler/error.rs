//! Why a reconcile failed. A lost compare-and-set is not among them: [`apply`](super::apply)
//! counts it and the next reconcile re-reads and re-plans.

use lathe::KeyPathError;

use super::deploy::DeployError;
use crate::registry::RegistryError;

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("cannot write {key}: {source}")]
    Write {
        key: String,
        #[source]
        source: RegistryError,
    },
    #[error("cannot complete the last deploy: {0}")]
    CompleteDeploy(#[source] DeployError),
    #[error("cannot read the deployed topology: {0}")]
    Topology(#[source] DeployError),
    #[error("bad registry path {path:?}: {source}")]
    Path {
        path: String,
        #[source]
        source: KeyPathError,
    },
    #[error("reconcile panicked: {0}")]
    Panicked(String),
}
