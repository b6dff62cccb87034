//! A group's state settings: the reserved `state` key.
//!
//! ```toml
//! state = { changelog = true }
//! ```
//!
//! `changelog` (default `false`): with Kafka (`lathe-node --kafka`), every write to an
//! instance's state (`ctx.state()`) is also written to the group's compacted changelog topic,
//! and an instance that starts restores its state from it before its `start` runs, so its state
//! follows it to any node. Without Kafka, the setting changes nothing.

use serde::{Deserialize, Serialize};

use super::error::Diagnostics;
use super::value::{described, Value};

/// How a group keeps its instances' state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StateSpec {
    /// Every state write is also written to a changelog, from which instances restore.
    pub changelog: bool,
}

impl StateSpec {
    pub const KEYS: [&'static str; 1] = ["changelog"];
}

/// Reads the `state` key of `group`; reports and returns `None` on errors.
pub(super) fn read(d: &mut Diagnostics<'_>, group: &str, value: &Value<'_>) -> Option<StateSpec> {
    let Some(table) = value.get_ref().as_table() else {
        d.report(
            &value.span(),
            Some(group),
            format!(
                "\"state\" must be a table such as state = {{ changelog = true }}, found {}",
                described(value.get_ref())
            ),
        );
        return None;
    };
    let before = d.count();
    let mut spec = StateSpec::default();
    for (key, item) in table.iter() {
        match key.get_ref().as_ref() {
            "changelog" => match item.get_ref().as_bool() {
                Some(on) => spec.changelog = on,
                None => d.report(
                    &item.span(),
                    Some(group),
                    format!(
                        "\"state.changelog\" must be true or false, found {}",
                        described(item.get_ref())
                    ),
                ),
            },
            other => d.report(
                &key.span(),
                Some(group),
                format!(
                    "unknown key \"{other}\" in \"state\": the keys are {}",
                    StateSpec::KEYS.join(", ")
                ),
            ),
        }
    }
    (d.count() == before).then_some(spec)
}
