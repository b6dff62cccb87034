//! The JSON of the YARN ResourceManager REST API (Hadoop's "ResourceManager REST API's":
//! Cluster New Application, Cluster Applications (submit and list), Cluster Application,
//! Cluster Application State), as far as Lathe uses it. Field names are the documented ones.

use serde::{Deserialize, Deserializer, Serialize};

/// The states of `YarnApplicationState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AppState {
    New,
    NewSaving,
    Submitted,
    Accepted,
    Running,
    Finished,
    Failed,
    Killed,
}

impl AppState {
    /// The states of an application that has not ended.
    pub const LIVE: [AppState; 5] = [
        AppState::New,
        AppState::NewSaving,
        AppState::Submitted,
        AppState::Accepted,
        AppState::Running,
    ];

    /// The name the API uses: `NEW_SAVING`.
    pub fn as_str(self) -> &'static str {
        match self {
            AppState::New => "NEW",
            AppState::NewSaving => "NEW_SAVING",
            AppState::Submitted => "SUBMITTED",
            AppState::Accepted => "ACCEPTED",
            AppState::Running => "RUNNING",
            AppState::Finished => "FINISHED",
            AppState::Failed => "FAILED",
            AppState::Killed => "KILLED",
        }
    }
}

/// `POST /ws/v1/cluster/apps/new-application` answers this.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NewApplication {
    #[serde(rename = "application-id")]
    pub application_id: String,
    #[serde(rename = "maximum-resource-capability", default)]
    pub maximum_resource_capability: Option<Resource>,
}

/// Memory (MB) and virtual cores, as requested for a container or offered at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    #[serde(deserialize_with = "number_or_string")]
    pub memory: u64,
    #[serde(rename = "vCores", deserialize_with = "number_or_string")]
    pub vcores: u64,
}

/// The body of `POST /ws/v1/cluster/apps`: an `ApplicationSubmissionContext`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct SubmissionContext {
    pub application_id: String,
    pub application_name: String,
    pub queue: String,
    pub application_type: String,
    pub am_container_spec: ContainerLaunchContext,
    pub resource: Resource,
    pub max_app_attempts: u32,
    #[serde(rename = "unmanaged-AM")]
    pub unmanaged_am: bool,
    pub keep_containers_across_application_attempts: bool,
}

/// `am-container-spec`: how the NodeManager launches the application master's container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerLaunchContext {
    pub commands: Commands,
    pub environment: Entries,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Commands {
    pub command: String,
}

/// A map as the API spells it: `{"entry": [{"key": .., "value": ..}]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entries {
    pub entry: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub key: String,
    pub value: String,
}

/// The `app` object of `GET /ws/v1/cluster/apps[/{appid}]` (the fields Lathe reads).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct App {
    pub id: String,
    #[serde(default)]
    pub name: String,
    pub state: AppState,
    #[serde(default)]
    pub final_status: Option<String>,
    #[serde(default)]
    pub diagnostics: Option<String>,
    #[serde(default)]
    pub application_type: Option<String>,
    #[serde(default)]
    pub queue: Option<String>,
}

/// `GET /ws/v1/cluster/apps/{appid}` answers `{"app": {...}}`.
#[derive(Debug, Deserialize)]
pub(crate) struct AppAnswer {
    pub(crate) app: App,
}

/// `GET /ws/v1/cluster/apps` answers `{"apps": {"app": [...]}}`, or `{"apps": null}` when
/// nothing matches.
#[derive(Debug, Deserialize)]
pub(crate) struct AppsAnswer {
    pub(crate) apps: Option<AppList>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct AppList {
    #[serde(default)]
    pub(crate) app: Vec<App>,
}

/// `GET|PUT /ws/v1/cluster/apps/{appid}/state`: `{"state": "KILLED"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppStateBody {
    pub state: AppState,
}

/// The error body of every call: `{"RemoteException": {"exception", "message", "javaClassName"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct ErrorAnswer {
    #[serde(rename = "RemoteException")]
    pub(crate) remote_exception: RemoteException,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RemoteException {
    #[serde(default)]
    pub(crate) exception: String,
    #[serde(default)]
    pub(crate) message: String,
    #[serde(default)]
    pub(crate) java_class_name: String,
}

/// Some distributions' examples quote numbers (`"memory": "8192"`): accept both.
fn number_or_string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Lenient {
        Number(u64),
        Text(String),
    }
    match Lenient::deserialize(deserializer)? {
        Lenient::Number(n) => Ok(n),
        Lenient::Text(text) => text.trim().parse().map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_documented_examples() {
        let new: NewApplication = serde_json::from_str(
            r#"{"application-id":"application_1404198295326_0003",
                "maximum-resource-capability":{"memory":8192,"vCores":32}}"#,
        )
        .unwrap();
        assert_eq!(new.application_id, "application_1404198295326_0003");
        assert_eq!(
            new.maximum_resource_capability,
            Some(Resource {
                memory: 8192,
                vcores: 32
            })
        );
        let quoted: NewApplication = serde_json::from_str(
            r#"{"application-id":"a","maximum-resource-capability":{"memory":"8192","vCores":"32"}}"#,
        )
        .unwrap();
        assert_eq!(quoted.maximum_resource_capability.unwrap().memory, 8192);
        let app: AppAnswer = serde_json::from_str(
            r#"{"app":{"id":"application_1326821518301_0005","user":"user1","name":"Sleep job",
                "applicationType":"Yarn","queue":"a1","state":"FINISHED","finalStatus":"SUCCEEDED",
                "progress":100,"diagnostics":"","clusterId":1326821518301}}"#,
        )
        .unwrap();
        assert_eq!(app.app.state, AppState::Finished);
        let none: AppsAnswer = serde_json::from_str(r#"{"apps":null}"#).unwrap();
        assert!(none.apps.is_none());
        let error: ErrorAnswer = serde_json::from_str(
            r#"{"RemoteException":{"exception":"BadRequestException",
                "message":"java.lang.Exception: Only 'KILLED' is allowed as a target state.",
                "javaClassName":"org.apache.hadoop.yarn.webapp.BadRequestException"}}"#,
        )
        .unwrap();
        assert_eq!(error.remote_exception.exception, "BadRequestException");
    }

    #[test]
    fn writes_a_submission_context_with_the_documented_names() {
        let context = SubmissionContext {
            application_id: "application_1_0001".into(),
            application_name: "yarn-1".into(),
            queue: "default".into(),
            application_type: "LATHE".into(),
            am_container_spec: ContainerLaunchContext {
                commands: Commands {
                    command: "exec lathe-node".into(),
                },
                environment: Entries {
                    entry: vec![Entry {
                        key: "LATHE_COOKIE".into(),
                        value: "s".into(),
                    }],
                },
            },
            resource: Resource {
                memory: 512,
                vcores: 1,
            },
            max_app_attempts: 1,
            unmanaged_am: false,
            keep_containers_across_application_attempts: false,
        };
        let json = serde_json::to_value(&context).unwrap();
        assert_eq!(json["application-id"], "application_1_0001");
        assert_eq!(
            json["am-container-spec"]["commands"]["command"],
            "exec lathe-node"
        );
        assert_eq!(
            json["am-container-spec"]["environment"]["entry"][0]["key"],
            "LATHE_COOKIE"
        );
        assert_eq!(json["resource"]["vCores"], 1);
        assert_eq!(json["max-app-attempts"], 1);
        assert_eq!(json["unmanaged-AM"], false);
        assert_eq!(json["keep-containers-across-application-attempts"], false);
    }
}
