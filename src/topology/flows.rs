//! A group's flows: the reserved `flows` key.
//!
//! ```toml
//! flows = { inputs = ["clicks", "orders"] }
//! ```
//!
//! `inputs`: the streams the group consumes (`ctx.consume`); each message of one of them goes to
//! one instance of the group, by key. Any task may emit to any stream (`ctx.emit`).

use serde::{Deserialize, Serialize};

use super::error::Diagnostics;
use super::value::{described, Value};
use crate::flow::is_stream_name;

/// How a group takes part in flows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FlowsSpec {
    /// The streams the group consumes, in the order written, without repeats.
    pub inputs: Vec<String>,
}

impl FlowsSpec {
    pub const KEYS: [&'static str; 1] = ["inputs"];
}

/// Reads the `flows` key of `group`; reports and returns `None` on errors.
pub(super) fn read(d: &mut Diagnostics<'_>, group: &str, value: &Value<'_>) -> Option<FlowsSpec> {
    let Some(table) = value.get_ref().as_table() else {
        d.report(
            &value.span(),
            Some(group),
            format!(
                "\"flows\" must be a table such as flows = {{ inputs = [\"clicks\"] }}, found {}",
                described(value.get_ref())
            ),
        );
        return None;
    };
    let before = d.count();
    let mut spec = FlowsSpec::default();
    for (key, item) in table.iter() {
        match key.get_ref().as_ref() {
            "inputs" => {
                let Some(streams) = item.get_ref().as_array() else {
                    d.report(
                        &item.span(),
                        Some(group),
                        format!(
                            "\"flows.inputs\" must be an array of stream names, found {}",
                            described(item.get_ref())
                        ),
                    );
                    continue;
                };
                for stream in streams {
                    match stream.get_ref().as_str() {
                        Some(name) if is_stream_name(name) => {
                            if !spec.inputs.iter().any(|s| s == name) {
                                spec.inputs.push(name.to_string());
                            }
                        }
                        _ => d.report(
                            &stream.span(),
                            Some(group),
                            format!(
                                "a stream name is 1 to 128 characters of A-Z a-z 0-9 . _ -, found \
                                    {}",
                                described(stream.get_ref())
                            ),
                        ),
                    }
                }
            }
            other => d.report(
                &key.span(),
                Some(group),
                format!(
                    "unknown key \"{other}\" in \"flows\": the keys are {}",
                    FlowsSpec::KEYS.join(", ")
                ),
            ),
        }
    }
    (d.count() == before).then_some(spec)
}
