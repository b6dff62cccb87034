//! The YARN backend: one YARN application per `lathe-node`, over the ResourceManager's REST API.
//!
//! ```text
//! request ── POST apps/new-application ──> application id (+ the largest container offered)
//!         └─ POST apps {am-container-spec: {commands: "exec lathe-node --name yarn-N --join ..."
//!                                            environment: LATHE_COOKIE, ...}, resource, queue}
//! poll ───── GET apps?applicationTypes=LATHE&states=NEW,...,RUNNING ── one call for every live one
//!         └─ GET apps/{id} for a tracked one no longer live: FINISHED / FAILED / KILLED and why
//!            (404: the RM lost it → failed)
//! release ── PUT apps/{id}/state {"state":"KILLED"}
//! ```
//!
//! The REST API cannot give an application more containers than its application master's: it
//! has no equivalent of the AM–RM allocate protocol. So each node is an application whose AM
//! container *is* the node, with `max-app-attempts` 1 (Lathe replaces a failed node itself, as a
//! new application, with its own back-off).
//!
//! The command runs under the NodeManager's shell: `exec` makes the node the container's process,
//! its output goes to the container's `<LOG_DIR>`, and secrets travel in the environment, never on
//! the command line (the RM UI and `ps` show commands).

mod client;
mod wire;

use std::collections::BTreeMap;
use std::time::Duration;

pub use client::{YarnClient, DEFAULT_TIMEOUT};
pub use wire::{
    App, AppState, AppStateBody, Commands, ContainerLaunchContext, Entries, Entry, NewApplication,
    Resource, SubmissionContext,
};

use crate::{
    ContainerEvent, ContainerId, ContainerState, NodeLaunch, ResourceError, ResourceManager,
};

/// The `application-type` Lathe's applications carry (and are listed by).
pub const APPLICATION_TYPE: &str = "LATHE";

/// Where and how big the containers are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YarnConfig {
    /// The RM's web address, `http://host:8088`.
    pub rm_url: String,
    /// The queue applications are submitted to.
    pub queue: String,
    /// Memory of one container, in MB.
    pub memory_mb: u64,
    /// Virtual cores of one container.
    pub vcores: u64,
    /// `user.name` for clusters without security; `None` leaves it out.
    pub user: Option<String>,
    /// How long one REST call may take.
    pub timeout: Duration,
}

impl YarnConfig {
    /// Containers of 1024 MB and one core in the `default` queue of the RM at `rm_url`.
    pub fn new(rm_url: impl Into<String>) -> Self {
        YarnConfig {
            rm_url: rm_url.into(),
            queue: "default".to_string(),
            memory_mb: 1024,
            vcores: 1,
            user: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// A resource manager backed by YARN; container ids are application ids.
pub struct YarnBackend {
    config: YarnConfig,
    client: YarnClient,
    /// Every application started or adopted and not reported ended, with the state last
    /// reported (`None`: not reported yet).
    tracked: BTreeMap<ContainerId, Option<ContainerState>>,
}

impl YarnBackend {
    pub fn new(config: YarnConfig) -> Self {
        let client = YarnClient::new(&config.rm_url, config.user.as_deref(), config.timeout);
        YarnBackend {
            config,
            client,
            tracked: BTreeMap::new(),
        }
    }

    pub fn client(&self) -> &YarnClient {
        &self.client
    }

    /// The containers being watched.
    pub fn tracked(&self) -> impl Iterator<Item = &ContainerId> {
        self.tracked.keys()
    }

    fn submission(&self, id: &str, launch: &NodeLaunch) -> SubmissionContext {
        SubmissionContext {
            application_id: id.to_string(),
            application_name: launch.name.clone(),
            queue: self.config.queue.clone(),
            application_type: APPLICATION_TYPE.to_string(),
            am_container_spec: ContainerLaunchContext {
                commands: Commands {
                    command: container_command(launch),
                },
                environment: Entries {
                    entry: launch
                        .env
                        .iter()
                        .map(|(key, value)| Entry {
                            key: key.clone(),
                            value: value.clone(),
                        })
                        .collect(),
                },
            },
            resource: Resource {
                memory: self.config.memory_mb,
                vcores: self.config.vcores,
            },
            max_app_attempts: 1,
            unmanaged_am: false,
            keep_containers_across_application_attempts: false,
        }
    }
}

impl ResourceManager for YarnBackend {
    fn backend(&self) -> &'static str {
        "yarn"
    }

    fn request(&mut self, launch: &NodeLaunch) -> Result<ContainerId, ResourceError> {
        let new = self.client.new_application()?;
        if let Some(max) = new.maximum_resource_capability {
            if self.config.memory_mb > max.memory || self.config.vcores > max.vcores {
                return Err(ResourceError::Launch {
                    name: launch.name.clone(),
                    reason: format!(
                        "a container of {} MB and {} vcores is larger than the cluster grants \
                         ({} MB, {} vcores)",
                        self.config.memory_mb, self.config.vcores, max.memory, max.vcores
                    ),
                });
            }
        }
        let context = self.submission(&new.application_id, launch);
        self.client.submit(&context)?;
        let id = ContainerId(new.application_id);
        self.tracked.insert(id.clone(), None);
        Ok(id)
    }

    fn release(&mut self, id: &ContainerId) -> Result<(), ResourceError> {
        if !self.tracked.contains_key(id) {
            return Err(ResourceError::UnknownContainer(id.clone()));
        }
        match self.client.kill(id.as_str()) {
            Ok(_) => Ok(()),
            Err(ResourceError::Refused { status: 404, .. }) => {
                self.tracked.remove(id);
                Err(ResourceError::UnknownContainer(id.clone()))
            }
            Err(e) => Err(e),
        }
    }

    fn poll(&mut self) -> Result<Vec<ContainerEvent>, ResourceError> {
        if self.tracked.is_empty() {
            return Ok(Vec::new());
        }
        let live: BTreeMap<String, App> = self
            .client
            .applications(&[APPLICATION_TYPE], &AppState::LIVE)?
            .into_iter()
            .map(|app| (app.id.clone(), app))
            .collect();
        let mut events = Vec::new();
        for (id, last) in &mut self.tracked {
            let state = match live.get(id.as_str()) {
                Some(app) => container_state(app),
                None => match self.client.application(id.as_str())? {
                    Some(app) => container_state(&app),
                    None => ContainerState::Failed {
                        diagnostics: "the ResourceManager does not know this application (lost \
                                      in a restart without recovery?)"
                            .into(),
                    },
                },
            };
            if last.as_ref() != Some(&state) {
                *last = Some(state.clone());
                events.push(ContainerEvent {
                    id: id.clone(),
                    state,
                });
            }
        }
        self.tracked
            .retain(|_, last| !last.as_ref().is_some_and(ContainerState::is_terminal));
        Ok(events)
    }

    fn adopt(&mut self, id: &ContainerId) -> Result<(), ResourceError> {
        self.tracked.entry(id.clone()).or_insert(None);
        Ok(())
    }
}

/// What a YARN application's state means for its node.
fn container_state(app: &App) -> ContainerState {
    let diagnostics = || {
        let text = app.diagnostics.as_deref().unwrap_or("").trim();
        let status = app.final_status.as_deref().unwrap_or("UNDEFINED");
        if text.is_empty() {
            format!("{} (final status {status})", app.state.as_str())
        } else {
            format!("{} (final status {status}): {text}", app.state.as_str())
        }
    };
    match app.state {
        AppState::New | AppState::NewSaving | AppState::Submitted | AppState::Accepted => {
            ContainerState::Requested
        }
        AppState::Running => ContainerState::Running,
        AppState::Finished => ContainerState::Finished {
            diagnostics: diagnostics(),
        },
        AppState::Failed => ContainerState::Failed {
            diagnostics: diagnostics(),
        },
        AppState::Killed => ContainerState::Killed {
            diagnostics: diagnostics(),
        },
    }
}

/// The AM container's command: the node itself, output to the container's log dir.
pub fn container_command(launch: &NodeLaunch) -> String {
    let mut words = vec![shell_quote(&launch.program.to_string_lossy())];
    words.extend(launch.args.iter().map(|arg| shell_quote(arg)));
    format!(
        "exec {} 1><LOG_DIR>/stdout 2><LOG_DIR>/stderr",
        words.join(" ")
    )
}

/// `word` as one shell word: as is when it is plain, else in single quotes. YARN's
/// `{{VAR}}` (which the NodeManager turns into `$VAR`, e.g. `{{NM_HOST}}:0`) stays unquoted so
/// that it expands.
fn shell_quote(word: &str) -> String {
    // `{a,b}` would be brace-expanded: quote it.
    let expands = word.contains(',') && (word.contains('{') || word.contains('}'));
    let plain = !word.is_empty()
        && !expands
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:,=@+%{}".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn the_command_execs_the_node_with_quoted_arguments_and_no_secrets() {
        let launch = NodeLaunch {
            name: "yarn-1".into(),
            program: PathBuf::from("/opt/lathe bin/lathe-node"),
            args: vec![
                "--name".into(),
                "yarn-1".into(),
                "--bind".into(),
                "{{NM_HOST}}:0".into(),
                "--tag".into(),
                "it's".into(),
                "{a,b}".into(),
            ],
            env: vec![("LATHE_COOKIE".into(), "s3cret".into())],
        };
        let command = container_command(&launch);
        assert_eq!(
            command,
            r"exec '/opt/lathe bin/lathe-node' --name yarn-1 --bind {{NM_HOST}}:0 --tag 'it'\''s' '{a,b}' 1><LOG_DIR>/stdout 2><LOG_DIR>/stderr"
        );
        assert!(!command.contains("s3cret"));
        let backend = YarnBackend::new(YarnConfig::new("http://127.0.0.1:1"));
        let context = backend.submission("application_1_0001", &launch);
        assert_eq!(
            context.am_container_spec.environment.entry[0].value,
            "s3cret"
        );
        assert_eq!(context.application_type, APPLICATION_TYPE);
        assert_eq!(context.max_app_attempts, 1);
    }

    #[test]
    fn application_states_map_to_container_states() {
        let app = |state, diagnostics: &str| App {
            id: "a".into(),
            name: "yarn-1".into(),
            state,
            final_status: Some("FAILED".into()),
            diagnostics: Some(diagnostics.into()),
            application_type: None,
            queue: None,
        };
        assert_eq!(
            container_state(&app(AppState::Accepted, "")),
            ContainerState::Requested
        );
        assert_eq!(
            container_state(&app(AppState::Running, "")),
            ContainerState::Running
        );
        assert_eq!(
            container_state(&app(AppState::Failed, "exitCode: 137")),
            ContainerState::Failed {
                diagnostics: "FAILED (final status FAILED): exitCode: 137".into()
            }
        );
    }
}
