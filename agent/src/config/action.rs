//! `[[watch.action]]`: one flat table whose `type` says which keys it needs. Each key that does not
//! apply to the type, and each missing required key, is an error naming it; templates are read
//! and compiled here, so a broken template stops the agent before it starts.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::load::resolve_path;
use super::values::{Addr, Dur};
use crate::actions::{render, ActionError};

/// What an action does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionType {
    /// Render a template to a file, check it, reload.
    Template,
    /// Keep HAProxy backends equal to groups' endpoints (runtime API; reload when slots run out).
    Haproxy,
    /// Render VCL and switch Varnish to it with `varnishadm vcl.load` + `vcl.use`.
    Varnish,
}

/// One validated action.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawAction")]
pub struct ActionConfig {
    pub kind: ActionType,
    pub name: String,
    /// The template's path and source text (read at start-up).
    pub template: PathBuf,
    pub template_source: String,
    pub destination: Option<PathBuf>,
    pub check: Option<String>,
    pub reload: Option<String>,
    pub timeout: Duration,
    pub vars: serde_json::Map<String, serde_json::Value>,
    pub admin_socket: Option<PathBuf>,
    pub master_socket: Option<PathBuf>,
    pub slots: usize,
    pub backends: BTreeMap<String, String>,
    pub admin: Option<Addr>,
    pub secret: Option<PathBuf>,
    pub vcl_dir: Option<PathBuf>,
    pub varnishadm: String,
    pub groups: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAction {
    #[serde(rename = "type")]
    kind: ActionType,
    name: Option<String>,
    template: PathBuf,
    destination: Option<PathBuf>,
    check: Option<String>,
    reload: Option<String>,
    timeout: Option<Dur>,
    #[serde(default)]
    vars: serde_json::Map<String, serde_json::Value>,
    admin_socket: Option<PathBuf>,
    master_socket: Option<PathBuf>,
    slots: Option<usize>,
    backends: Option<BTreeMap<String, String>>,
    admin: Option<Addr>,
    secret: Option<PathBuf>,
    vcl_dir: Option<PathBuf>,
    varnishadm: Option<String>,
    groups: Option<Vec<String>>,
}

/// Keys each type accepts besides `type`, `name`, `template`, `check`, `timeout` and `vars`.
fn allowed(kind: ActionType) -> &'static [&'static str] {
    match kind {
        ActionType::Template => &["destination", "reload"],
        ActionType::Haproxy => &[
            "destination",
            "reload",
            "admin_socket",
            "master_socket",
            "slots",
            "backends",
        ],
        ActionType::Varnish => &["admin", "secret", "vcl_dir", "varnishadm", "groups"],
    }
}

fn required(kind: ActionType) -> &'static [&'static str] {
    match kind {
        ActionType::Template => &["destination"],
        ActionType::Haproxy => &["destination", "admin_socket", "backends"],
        ActionType::Varnish => &["admin", "secret", "vcl_dir"],
    }
}

impl RawAction {
    /// The type-specific keys that are set.
    fn present(&self) -> Vec<&'static str> {
        let keys = [
            ("destination", self.destination.is_some()),
            ("reload", self.reload.is_some()),
            ("admin_socket", self.admin_socket.is_some()),
            ("master_socket", self.master_socket.is_some()),
            ("slots", self.slots.is_some()),
            ("backends", self.backends.is_some()),
            ("admin", self.admin.is_some()),
            ("secret", self.secret.is_some()),
            ("vcl_dir", self.vcl_dir.is_some()),
            ("varnishadm", self.varnishadm.is_some()),
            ("groups", self.groups.is_some()),
        ];
        keys.iter()
            .filter(|(_, set)| *set)
            .map(|(k, _)| *k)
            .collect()
    }
}

fn type_name(kind: ActionType) -> &'static str {
    match kind {
        ActionType::Template => "template",
        ActionType::Haproxy => "haproxy",
        ActionType::Varnish => "varnish",
    }
}

/// Why an `[[watch.action]]` table was refused (serde puts the table's path and position in
/// front of it).
#[derive(Debug, thiserror::Error)]
pub enum ActionConfigError {
    /// A key set that the action's type does not use.
    #[error("key `{key}` does not apply to type = \"{ty}\"")]
    NotForType { key: &'static str, ty: &'static str },
    /// A key the action's type needs that is not set.
    #[error("type = \"{ty}\" needs key `{key}`")]
    Missing { key: &'static str, ty: &'static str },
    /// `slots = 0`.
    #[error("key `slots` must be at least 1")]
    NoSlots,
    /// `backends = {}`.
    #[error("key `backends` needs at least one backend = \"group\"")]
    NoBackends,
    /// The template file could not be read.
    #[error("key `template`: cannot read {}: {error}", path.display())]
    TemplateUnreadable {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The template does not compile.
    #[error("key `template`: {0}")]
    Template(ActionError),
}

impl TryFrom<RawAction> for ActionConfig {
    type Error = ActionConfigError;

    fn try_from(raw: RawAction) -> Result<Self, ActionConfigError> {
        let kind = raw.kind;
        let ty = type_name(kind);
        let present = raw.present();
        if let Some(key) = present.iter().find(|k| !allowed(kind).contains(k)) {
            return Err(ActionConfigError::NotForType { key, ty });
        }
        if let Some(key) = required(kind).iter().find(|k| !present.contains(k)) {
            return Err(ActionConfigError::Missing { key, ty });
        }
        if raw.slots == Some(0) {
            return Err(ActionConfigError::NoSlots);
        }
        if raw.backends.as_ref().is_some_and(BTreeMap::is_empty) {
            return Err(ActionConfigError::NoBackends);
        }
        let template = resolve_path(&raw.template);
        let template_source = std::fs::read_to_string(&template).map_err(|error| {
            ActionConfigError::TemplateUnreadable {
                path: template.clone(),
                error,
            }
        })?;
        render::compile(&template.display().to_string(), &template_source)
            .map_err(ActionConfigError::Template)?;
        // `check = ""` turns the default check off.
        let check = raw.check.or_else(|| match kind {
            ActionType::Template => None,
            ActionType::Haproxy => Some("haproxy -c -q -f {file}".to_string()),
            ActionType::Varnish => Some("varnishd -C -f {file}".to_string()),
        });
        let check = check.filter(|c| !c.trim().is_empty());
        Ok(ActionConfig {
            kind,
            name: raw.name.unwrap_or_else(|| ty.to_string()),
            template,
            template_source,
            destination: raw.destination.as_deref().map(resolve_path),
            check,
            reload: raw.reload,
            timeout: raw.timeout.map_or(Duration::from_secs(30), |d| d.0),
            vars: raw.vars,
            admin_socket: raw.admin_socket.as_deref().map(resolve_path),
            master_socket: raw.master_socket.as_deref().map(resolve_path),
            slots: raw.slots.unwrap_or(8),
            backends: raw.backends.unwrap_or_default(),
            admin: raw.admin,
            secret: raw.secret.as_deref().map(resolve_path),
            vcl_dir: raw.vcl_dir.as_deref().map(resolve_path),
            varnishadm: raw.varnishadm.unwrap_or_else(|| "varnishadm".to_string()),
            groups: raw.groups,
        })
    }
}
