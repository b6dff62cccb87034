//! `lathe acl bootstrap|policy|token`: access control of a cluster started with `--acl`.

use std::path::Path;

use serde_json::{json, Value};

use super::{unexpected_answer, Output};
use crate::client::{CliError, Client};
use crate::table::{field, Table};

/// `lathe acl bootstrap`: the management token, shown this once.
pub(super) fn bootstrap(client: &Client, out: &Output) -> Result<(), CliError> {
    let reply = client.post_json("/v1/acl/bootstrap", &json!({}))?;
    print_new_token(out, "/v1/acl/bootstrap", &reply.body)
}

/// `lathe acl policy put NAME [FILE] [--rule R]...`: FILE holds the JSON body
/// (`{"rules": [...], "description": "..."}`); each `--rule RESOURCE[:PREFIX]:ACCESS` adds one.
pub(super) fn put_policy(
    client: &Client,
    out: &Output,
    name: &str,
    file: Option<&Path>,
    rules: &[String],
) -> Result<(), CliError> {
    let mut body = match file {
        Some(file) => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| CliError::Local(format!("cannot read {}: {e}", file.display())))?;
            serde_json::from_str(&text).map_err(|e| {
                CliError::Local(format!("{}: not a JSON policy: {e}", file.display()))
            })?
        }
        None => json!({ "rules": [] }),
    };
    let Some(list) = body.get_mut("rules").and_then(Value::as_array_mut) else {
        return Err(CliError::Local("a policy needs a \"rules\" array".into()));
    };
    for rule in rules {
        list.push(parse_rule(rule).map_err(|e| CliError::Local(format!("{e:#}")))?);
    }
    if list.is_empty() {
        return Err(CliError::Local(
            "a policy needs rules: give FILE or --rule RESOURCE[:PREFIX]:ACCESS".into(),
        ));
    }
    let route = format!("/v1/acl/policies/{name}");
    let reply = client.put_json(&route, &body)?;
    if out.json {
        return out.json(&reply.body);
    }
    out.line(&format!("policy {name} stored"))
}

/// `lathe acl policy list`.
pub(super) fn list_policies(client: &Client, out: &Output) -> Result<(), CliError> {
    let reply = client.get("/v1/acl/policies")?;
    if out.json {
        return out.json(&reply.body);
    }
    let policies = reply
        .body
        .as_array()
        .ok_or_else(|| unexpected_answer("/v1/acl/policies", &reply.body))?;
    let mut table = Table::with_headers(&["NAME", "RULES", "DESCRIPTION"]);
    for policy in policies {
        let rules: Vec<String> = policy
            .get("rules")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(rule_text)
            .collect();
        table.push_row(vec![
            field(policy, "name"),
            rules.join(" "),
            field(policy, "description"),
        ]);
    }
    out.text(&table.render())
}

/// `lathe acl token create --policy NAME... [--management] [--description D]`.
pub(super) fn create_token(
    client: &Client,
    out: &Output,
    policies: &[String],
    management: bool,
    description: Option<&str>,
) -> Result<(), CliError> {
    let body = json!({
        "policies": policies,
        "management": management,
        "description": description.unwrap_or_default(),
    });
    let reply = client.post_json("/v1/acl/tokens", &body)?;
    print_new_token(out, "/v1/acl/tokens", &reply.body)
}

/// `lathe acl token list`.
pub(super) fn list_tokens(client: &Client, out: &Output) -> Result<(), CliError> {
    let reply = client.get("/v1/acl/tokens")?;
    if out.json {
        return out.json(&reply.body);
    }
    let tokens = reply
        .body
        .as_array()
        .ok_or_else(|| unexpected_answer("/v1/acl/tokens", &reply.body))?;
    let mut table = Table::with_headers(&["ACCESSOR", "POLICIES", "MANAGEMENT", "DESCRIPTION"]);
    for token in tokens {
        let policies: Vec<String> = token
            .get("policies")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str().map(str::to_string))
            .collect();
        table.push_row(vec![
            field(token, "accessor"),
            policies.join(","),
            field(token, "management"),
            field(token, "description"),
        ]);
    }
    out.text(&table.render())
}

/// `lathe acl policy delete NAME`, `lathe acl token delete ACCESSOR`.
pub(super) fn delete(
    client: &Client,
    out: &Output,
    route: &str,
    what: &str,
) -> Result<(), CliError> {
    let reply = client.delete(route)?;
    if out.json {
        return out.json(&reply.body);
    }
    out.line(&format!("{what} deleted"))
}

fn print_new_token(out: &Output, route: &str, body: &Value) -> Result<(), CliError> {
    if out.json {
        return out.json(body);
    }
    let secret = body
        .get("secret")
        .and_then(Value::as_str)
        .ok_or_else(|| unexpected_answer(route, body))?;
    out.line(&format!(
        "token:    {secret}\naccessor: {}\n\
            The token is shown this once; pass it as --token or LATHE_TOKEN.",
        field(body, "accessor")
    ))
}

/// `RESOURCE[:PREFIX]:ACCESS` → `{"resource", "prefix"?, "access"}` (the node validates it).
fn parse_rule(text: &str) -> anyhow::Result<Value> {
    match text.split(':').collect::<Vec<_>>().as_slice() {
        [resource, access] => Ok(json!({ "resource": resource, "access": access })),
        [resource, prefix, access] => {
            Ok(json!({ "resource": resource, "prefix": prefix, "access": access }))
        }
        _ => anyhow::bail!(
            "rule {text:?}: expected RESOURCE[:PREFIX]:ACCESS, e.g. key:/app:write or cluster:read"
        ),
    }
}

fn rule_text(rule: &Value) -> String {
    match rule.get("prefix").and_then(Value::as_str) {
        Some(prefix) => format!(
            "{}:{prefix}:{}",
            field(rule, "resource"),
            field(rule, "access")
        ),
        None => format!("{}:{}", field(rule, "resource"), field(rule, "access")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_into_the_rest_shape_and_back() {
        let rule = parse_rule("key:/app:write").unwrap();
        assert_eq!(
            rule,
            json!({"resource": "key", "prefix": "/app", "access": "write"})
        );
        assert_eq!(rule_text(&rule), "key:/app:write");
        assert_eq!(
            parse_rule("cluster:read").unwrap(),
            json!({"resource": "cluster", "access": "read"})
        );
        assert!(parse_rule("key").is_err());
        assert!(parse_rule("a:b:c:d").is_err());
    }
}
