//! The PromQL expressions of the shipped Prometheus and Grafana files, for tests that evaluate
//! them against a real Prometheus: the alert rules, the console template
//! (`config/prometheus/consoles/lathe.html`) and the Grafana dashboard
//! (`config/grafana/lathe.json`), and the metric names an expression reads.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::prometheus::{config_dir, grafana_dashboard};

/// How many alerting rules `lathe.rules.yml` declares.
pub fn rule_count() -> usize {
    let rules = std::fs::read_to_string(config_dir().join("rules/lathe.rules.yml")).unwrap();
    rules
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert:"))
        .count()
}

/// Every PromQL expression of `consoles/lathe.html`: the string literals after `args`,
/// `query` and `expr:`, and those after `printf` with each `'%s'` label value matched as any
/// (and a `%s` inside a regular expression as `.+`).
pub fn console_expressions() -> Vec<String> {
    let page = std::fs::read_to_string(config_dir().join("consoles/lathe.html")).unwrap();
    let mut found = Vec::new();
    for marker in ["(args \"", "query \"", "expr: \"", "printf \""] {
        let mut rest = page.as_str();
        while let Some(at) = rest.find(marker) {
            let after = &rest[at + marker.len()..];
            let end = after.find('"').expect("a closed string");
            let expr = &after[..end];
            rest = &after[end..];
            if marker == "printf \"" {
                if expr.contains("%s") {
                    found.push(expr.replace("='%s'", "=~'.+'").replace("%s", ".+"));
                }
            } else {
                found.push(expr.to_string());
            }
        }
    }
    found
}

/// Every `expr` of the Grafana dashboard's panels.
pub fn grafana_expressions() -> Vec<String> {
    let text = std::fs::read_to_string(grafana_dashboard()).unwrap();
    let dashboard: Value = serde_json::from_str(&text).expect("lathe.json is JSON");
    fn walk(value: &Value, found: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(expr)) = map.get("expr") {
                    found.push(expr.clone());
                }
                map.values().for_each(|v| walk(v, found));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, found)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    walk(&dashboard, &mut found);
    found
}

/// The metric names in a PromQL expression: identifiers starting `lathe_`, and `up`, outside
/// label matchers (`{...}`) and strings.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut word = String::new();
    let (mut braces, mut quote) = (0u32, None::<char>);
    for c in expr.chars().chain(std::iter::once(' ')) {
        if let Some(q) = quote {
            if c == q {
                quote = None;
            }
            continue;
        }
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
            continue;
        }
        if braces == 0 && (word.starts_with("lathe_") || word == "up") {
            names.insert(word.clone());
        }
        word.clear();
        match c {
            '{' => braces += 1,
            '}' => braces = braces.saturating_sub(1),
            '"' | '\'' => quote = Some(c),
            _ => {}
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_skip_labels_and_strings() {
        let names = metric_names(
            "max by (group) (lathe_rollouts{lathe_role=\"lathe_x\",state='up'}) == 1 or \
                up{job=\"lathe\"}",
        );
        let expected: BTreeSet<String> = ["lathe_rollouts", "up"].map(String::from).into();
        assert_eq!(names, expected);
    }
}
