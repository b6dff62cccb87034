//! `YarnClient`: the ResourceManager REST calls, one method each, blocking (`ureq`).
//!
//! Every error answer of the RM is a `RemoteException`; it becomes
//! [`ResourceError::Refused`] with the exception's name and message. On a cluster without
//! security the RM wants to know who asks (`?user.name=`): pass the user.

use std::time::Duration;

use serde::de::DeserializeOwned;

use super::wire::{
    App, AppAnswer, AppState, AppStateBody, AppsAnswer, ErrorAnswer, NewApplication,
    SubmissionContext,
};
use crate::ResourceError;

/// How long one REST call may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A client of one ResourceManager's REST API.
#[derive(Debug, Clone)]
pub struct YarnClient {
    base: String,
    user: Option<String>,
    agent: ureq::Agent,
}

impl YarnClient {
    /// A client of the RM at `rm_url` (`http://host:8088`), asking as `user` if given.
    pub fn new(rm_url: &str, user: Option<&str>, timeout: Duration) -> Self {
        YarnClient {
            base: rm_url.trim_end_matches('/').to_string(),
            user: user.map(str::to_string),
            agent: ureq::AgentBuilder::new()
                .timeout_connect(timeout.min(Duration::from_secs(3)))
                .timeout(timeout)
                .build(),
        }
    }

    /// The RM's address as given.
    pub fn rm_url(&self) -> &str {
        &self.base
    }

    /// `POST /ws/v1/cluster/apps/new-application`: a fresh application id, and the largest
    /// container the cluster grants.
    pub fn new_application(&self) -> Result<NewApplication, ResourceError> {
        let action = "create an application id";
        let response = self.call(
            action,
            self.post("/ws/v1/cluster/apps/new-application").call(),
        )?;
        read_json(action, response)
    }

    /// `POST /ws/v1/cluster/apps`: submits an application (the RM answers 202 Accepted).
    pub fn submit(&self, context: &SubmissionContext) -> Result<(), ResourceError> {
        let action = format!("submit {}", context.application_id);
        let response = self.call(&action, self.post("/ws/v1/cluster/apps").send_json(context))?;
        match response.status() {
            200..=202 => Ok(()),
            status => Err(ResourceError::Protocol {
                action,
                detail: format!("status {status} instead of 202"),
            }),
        }
    }

    /// `GET /ws/v1/cluster/apps/{appid}`; `None` if the RM does not know it (404).
    pub fn application(&self, id: &str) -> Result<Option<App>, ResourceError> {
        let action = format!("report {id}");
        let path = format!("/ws/v1/cluster/apps/{id}");
        match self.call(&action, self.get(&path).call()) {
            Ok(response) => read_json::<AppAnswer>(&action, response).map(|a| Some(a.app)),
            Err(ResourceError::Refused { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /ws/v1/cluster/apps?applicationTypes=..&states=..`: the applications of these types
    /// in these states.
    pub fn applications(
        &self,
        types: &[&str],
        states: &[AppState],
    ) -> Result<Vec<App>, ResourceError> {
        let action = "list applications";
        let states: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
        let request = self
            .get("/ws/v1/cluster/apps")
            .query("applicationTypes", &types.join(","))
            .query("states", &states.join(","));
        let response = self.call(action, request.call())?;
        let answer: AppsAnswer = read_json(action, response)?;
        Ok(answer.apps.map(|list| list.app).unwrap_or_default())
    }

    /// `GET /ws/v1/cluster/apps/{appid}/state`.
    pub fn state(&self, id: &str) -> Result<AppState, ResourceError> {
        let action = format!("report the state of {id}");
        let path = format!("/ws/v1/cluster/apps/{id}/state");
        let response = self.call(&action, self.get(&path).call())?;
        read_json::<AppStateBody>(&action, response).map(|body| body.state)
    }

    /// `PUT /ws/v1/cluster/apps/{appid}/state {"state":"KILLED"}`: asks the RM to kill it.
    /// Returns the state the RM answered with (202 while the kill is under way, 200 once done).
    pub fn kill(&self, id: &str) -> Result<AppState, ResourceError> {
        let action = format!("kill {id}");
        let path = format!("/ws/v1/cluster/apps/{id}/state");
        let body = AppStateBody {
            state: AppState::Killed,
        };
        let response = self.call(&action, self.put(&path).send_json(body))?;
        read_json::<AppStateBody>(&action, response).map(|body| body.state)
    }

    fn get(&self, path: &str) -> ureq::Request {
        self.request("GET", path)
    }

    fn post(&self, path: &str) -> ureq::Request {
        self.request("POST", path)
    }

    fn put(&self, path: &str) -> ureq::Request {
        self.request("PUT", path)
    }

    fn request(&self, method: &str, path: &str) -> ureq::Request {
        let request = self
            .agent
            .request(method, &format!("{}{path}", self.base))
            .set("Accept", "application/json");
        match &self.user {
            Some(user) => request.query("user.name", user),
            None => request,
        }
    }

    /// The response of a call, or the error it stands for.
    fn call(
        &self,
        action: &str,
        result: Result<ureq::Response, ureq::Error>,
    ) -> Result<ureq::Response, ResourceError> {
        match result {
            Ok(response) => Ok(response),
            Err(ureq::Error::Status(status, response)) => Err(refusal(action, status, response)),
            Err(ureq::Error::Transport(transport)) => Err(ResourceError::Unreachable {
                url: self.base.clone(),
                reason: transport.to_string(),
            }),
        }
    }
}

/// A `RemoteException` answer as an error (or the raw body if it is not one).
fn refusal(action: &str, status: u16, response: ureq::Response) -> ResourceError {
    let text = response.into_string().unwrap_or_default();
    let (exception, message) = match serde_json::from_str::<ErrorAnswer>(&text) {
        Ok(answer) => {
            let remote = answer.remote_exception;
            let exception = if remote.exception.is_empty() {
                remote.java_class_name
            } else {
                remote.exception
            };
            (exception, remote.message)
        }
        Err(_) => ("HTTP".to_string(), text.chars().take(200).collect()),
    };
    ResourceError::Refused {
        action: action.to_string(),
        status,
        exception,
        message,
    }
}

fn read_json<T: DeserializeOwned>(
    action: &str,
    response: ureq::Response,
) -> Result<T, ResourceError> {
    let text = response
        .into_string()
        .map_err(|e| ResourceError::Protocol {
            action: action.to_string(),
            detail: format!("cannot read the answer: {e}"),
        })?;
    serde_json::from_str(&text).map_err(|e| ResourceError::Protocol {
        action: action.to_string(),
        detail: format!("{e}: {}", text.chars().take(200).collect::<String>()),
    })
}
