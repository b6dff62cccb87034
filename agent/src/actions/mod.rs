//! Actions: what a watch does with its subtree's state. Each remembers the last index it applied,
//! so one change is never acted on twice (a retry re-runs only what failed).
//!
//! - [`template`]: render → atomic write → check → reload; skip when the output is unchanged.
//! - [`haproxy`]: backends follow groups through the runtime API; reload only when slots run out.
//! - [`varnish`]: render VCL → `varnishd -C` → `vcl.load` + `vcl.use` → discard old VCLs.

pub mod address;
pub mod command;
mod error;
pub mod files;
pub mod haproxy;
pub mod render;
pub mod template;
pub mod varnish;

pub use error::ActionError;

use crate::config::{ActionConfig, ActionType};
use crate::status::Metrics;
use crate::watch::View;

/// How a run of an action ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Something changed in the served program.
    Applied(String),
    /// Nothing to do: the output is what is live already.
    Unchanged(String),
    /// The check refused the new configuration: the old one stays live; not retried until the
    /// next change.
    Rejected(String),
    /// Could not apply (program down, reload failed): retried after a back-off.
    Failed(String),
}

impl Outcome {
    pub fn result(&self) -> &'static str {
        match self {
            Outcome::Applied(_) => "applied",
            Outcome::Unchanged(_) => "unchanged",
            Outcome::Rejected(_) => "rejected",
            Outcome::Failed(_) => "failed",
        }
    }

    pub fn detail(&self) -> &str {
        match self {
            Outcome::Applied(d)
            | Outcome::Unchanged(d)
            | Outcome::Rejected(d)
            | Outcome::Failed(d) => d,
        }
    }

    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Applied(_) | Outcome::Unchanged(_))
    }
}

enum Kind {
    Template(template::TemplateAction),
    Haproxy(haproxy::HaproxyAction),
    Varnish(varnish::VarnishAction),
}

/// One configured action of one watch.
pub struct Action {
    name: String,
    kind: ActionType,
    applied_index: Option<u64>,
    inner: Kind,
}

impl Action {
    /// Builds the action (compiles its template).
    pub fn new(
        config: &ActionConfig,
        watch: &str,
        metrics: Metrics,
    ) -> Result<Action, ActionError> {
        let inner = match config.kind {
            ActionType::Template => {
                Kind::Template(template::TemplateAction::new(config, watch, metrics)?)
            }
            ActionType::Haproxy => {
                Kind::Haproxy(haproxy::HaproxyAction::new(config, watch, metrics)?)
            }
            ActionType::Varnish => {
                Kind::Varnish(varnish::VarnishAction::new(config, watch, metrics)?)
            }
        };
        Ok(Action {
            name: config.name.clone(),
            kind: config.kind,
            applied_index: None,
            inner,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn kind(&self) -> &'static str {
        match self.kind {
            ActionType::Template => "template",
            ActionType::Haproxy => "haproxy",
            ActionType::Varnish => "varnish",
        }
    }

    /// The last index applied (or rejected: a rejected render is not retried).
    pub fn applied_index(&self) -> Option<u64> {
        self.applied_index
    }

    /// Runs the action on `view`, unless it already handled this index (`None` then).
    pub async fn run(&mut self, view: &View) -> Option<Outcome> {
        if self.applied_index.is_some_and(|done| done >= view.index) {
            return None;
        }
        let outcome = match &mut self.inner {
            Kind::Template(action) => action.run(view).await,
            Kind::Haproxy(action) => action.run(view).await,
            Kind::Varnish(action) => action.run(view).await,
        };
        if !matches!(outcome, Outcome::Failed(_)) {
            self.applied_index = Some(view.index);
        }
        Some(outcome)
    }
}
