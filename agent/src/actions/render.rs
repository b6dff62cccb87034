//! Templates: [`minijinja`] (Jinja2 syntax, strict about undefined names, no I/O from templates),
//! and the data every template sees (see [`View::context`]).
//!
//! Template data: `prefix`, `index`, `version`, `watch`, `entries` (list of `{key, value,
//! version}`), `values` (key → value), `endpoints` (every [`lathe::Endpoint`] under the prefix,
//! plus `host`/`port`), `groups` (group name → its endpoints, by index), `vars` (the action's
//! `vars` table), and whatever the action adds (`backends` for HAProxy and Varnish). Filters
//! besides Jinja's: `ident` (`task.http.lb` → `task_http_lb`, for VCL and HAProxy names).

use crate::actions::ActionError;
use std::collections::BTreeMap;

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;
use serde_json::Value;

use super::address;
use crate::watch::View;

/// The name the single template of an environment is stored under.
const TEMPLATE: &str = "template";

/// Builds an environment holding the template `source` (named `name` in errors).
pub fn compile(name: &str, source: &str) -> Result<Environment<'static>, ActionError> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.add_filter("ident", ident);
    env.add_template_owned(TEMPLATE.to_string(), source.to_string())
        .map_err(|e| ActionError::Template(describe(name, &e)))?;
    Ok(env)
}

/// Renders the environment's template with `context`.
pub fn render(
    env: &Environment<'static>,
    name: &str,
    context: &Value,
) -> Result<String, ActionError> {
    env.get_template(TEMPLATE)
        .and_then(|t| t.render(context))
        .map_err(|e| ActionError::Template(describe(name, &e)))
}

/// `NAME:LINE: what went wrong` with minijinja's causes.
fn describe(name: &str, error: &minijinja::Error) -> String {
    let mut message = match error.line() {
        Some(line) => format!("{name}:{line}: {}", error.kind()),
        None => format!("{name}: {}", error.kind()),
    };
    if let Some(detail) = error.detail() {
        message.push_str(&format!(": {detail}"));
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    message
}

/// A name usable as a VCL or HAProxy identifier: letters, digits and `_`, starting with a letter.
pub fn ident(value: String) -> String {
    let mut out: String = value
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if !out.starts_with(|c: char| c.is_ascii_alphabetic()) {
        out.insert(0, 'x');
    }
    out
}

/// One endpoint as templates see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointView {
    pub group: String,
    pub index: u32,
    pub node: String,
    pub http: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub version: String,
    pub key: String,
}

impl View {
    /// Every value under the prefix that is a [`lathe::Endpoint`], by group then index.
    pub fn endpoints(&self) -> Vec<EndpointView> {
        let mut endpoints: Vec<EndpointView> = self
            .entries
            .iter()
            .filter_map(|(key, (value, _))| {
                let endpoint: lathe::Endpoint = serde_json::from_value(value.clone()).ok()?;
                let address = endpoint.http.as_deref().map(address::host_port);
                let plain = [&endpoint.group, &endpoint.node, &endpoint.version]
                    .iter()
                    .all(|name| address::is_plain_name(name));
                if matches!(address, Some(None)) || !plain {
                    tracing::warn!(%key, http = ?endpoint.http, group = %endpoint.group,
                        "an endpoint with a malformed address or name is left out");
                    return None;
                }
                let (host, port) = match address.flatten() {
                    Some((host, port)) => (Some(host), Some(port)),
                    None => (None, None),
                };
                Some(EndpointView {
                    group: endpoint.group,
                    index: endpoint.index,
                    node: endpoint.node,
                    http: endpoint.http,
                    host,
                    port,
                    version: endpoint.version,
                    key: key.clone(),
                })
            })
            .collect();
        endpoints.sort_by(|a, b| (&a.group, a.index).cmp(&(&b.group, b.index)));
        endpoints
    }

    /// Group name → its endpoints.
    pub fn groups(&self) -> BTreeMap<String, Vec<EndpointView>> {
        let mut groups: BTreeMap<String, Vec<EndpointView>> = BTreeMap::new();
        for endpoint in self.endpoints() {
            groups
                .entry(endpoint.group.clone())
                .or_default()
                .push(endpoint);
        }
        groups
    }

    /// The data of a template (see the module documentation); `extra` keys are added on top.
    pub fn context(&self, vars: &serde_json::Map<String, Value>, extra: &[(&str, Value)]) -> Value {
        let entries: Vec<Value> = self
            .entries
            .iter()
            .map(|(key, (value, version))| {
                serde_json::json!({ "key": key, "value": value, "version": version })
            })
            .collect();
        let values: serde_json::Map<String, Value> = self
            .entries
            .iter()
            .map(|(key, (value, _))| (key.clone(), value.clone()))
            .collect();
        let mut context = serde_json::json!({
            "watch": self.watch,
            "prefix": self.prefix,
            "index": self.index,
            "version": self.version,
            "entries": entries,
            "values": values,
            "endpoints": self.endpoints(),
            "groups": self.groups(),
            "vars": vars,
        });
        for (key, value) in extra {
            context[*key] = value.clone();
        }
        context
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An endpoint written to the registry with a command chained to its address, or a name
    /// that could steer a template, never reaches templates or HAProxy (seen failing before: its
    /// host went through as everything before the last ':', command included).
    #[test]
    fn endpoints_with_malformed_addresses_or_names_are_left_out() {
        let endpoint = |index: u32, http: &str, node: &str| {
            serde_json::json!({
                "group": "task.http.lb", "index": index, "node": node,
                "http": http, "version": "0.8.2",
            })
        };
        let mut entries = BTreeMap::new();
        for (i, (http, node)) in [
            ("127.0.0.1:8080", "n1"),
            ("127.0.0.1:80; shutdown sessions server be/s1:8081", "n1"),
            ("127.0.0.1:8082", "n1\n{{ evil }}"),
            ("10.0.0.2:8083", "n2"),
        ]
        .into_iter()
        .enumerate()
        {
            entries.insert(
                format!("/lathe/endpoints/task/http/lb/{i}"),
                (endpoint(i as u32, http, node), 1),
            );
        }
        let view = View {
            watch: "w".into(),
            prefix: "/lathe/endpoints".into(),
            index: 1,
            version: 1,
            entries,
        };
        let kept: Vec<(Option<String>, Option<u16>)> = view
            .endpoints()
            .into_iter()
            .map(|e| (e.host, e.port))
            .collect();
        assert_eq!(
            kept,
            vec![
                (Some("127.0.0.1".into()), Some(8080)),
                (Some("10.0.0.2".into()), Some(8083))
            ]
        );
    }

    #[test]
    fn identifiers_start_with_a_letter() {
        assert_eq!(ident("task.http.lb".into()), "task_http_lb");
        assert_eq!(ident("4-2-1".into()), "x4_2_1");
    }

    #[test]
    fn compile_and_render_errors_name_the_line() {
        let err = compile("t.j2", "a\n{% for x in %}")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("t.j2:2: syntax error"), "{err}");
        let env = compile("t.j2", "a\n{{ nope.x }}").unwrap();
        let err = render(&env, "t.j2", &serde_json::json!({}))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("t.j2:2: undefined value"), "{err}");
    }
}
