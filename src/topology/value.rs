//! Typed reads of toml's spanned values, and their conversion to JSON for group metadata.

use serde_json::{Map, Number, Value as Json};
use toml::de::DeValue;
use toml::Spanned;

use super::error::Diagnostics;

/// A value of the parsed document with its byte span.
pub(super) type Value<'i> = Spanned<DeValue<'i>>;

/// The value of a TOML integer, if it is one and fits an `i64`.
pub(super) fn integer(value: &DeValue<'_>) -> Option<i64> {
    let integer = value.as_integer()?;
    i64::from_str_radix(integer.as_str(), integer.radix()).ok()
}

/// "an integer", "a string", ... for messages.
/// An integer `item` within `min..=max`; reports `"<key>" must be an integer from ...` otherwise.
/// `key` is the dotted name a user wrote (`restart.max_restarts`).
pub(super) fn bounded(
    d: &mut Diagnostics<'_>,
    group: &str,
    key: &str,
    item: &Value<'_>,
    min: i64,
    max: i64,
) -> Option<i64> {
    let found = match item.get_ref() {
        value @ DeValue::Integer(_) => match integer(value) {
            Some(n) if (min..=max).contains(&n) => return Some(n),
            Some(n) => n.to_string(),
            None => "a huge integer".to_string(),
        },
        other => described(other),
    };
    d.report(
        &item.span(),
        Some(group),
        format!("\"{key}\" must be an integer from {min} to {max}, found {found}"),
    );
    None
}

pub(super) fn described(value: &DeValue<'_>) -> String {
    let kind = value.type_str();
    let article = if kind.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {kind}")
}

/// Converts a metadata value to JSON; reports values JSON cannot hold.
pub(super) fn to_json(d: &mut Diagnostics<'_>, group: &str, value: &Value<'_>) -> Option<Json> {
    let json = match value.get_ref() {
        DeValue::String(s) => Json::String(s.to_string()),
        DeValue::Boolean(b) => Json::Bool(*b),
        DeValue::Datetime(datetime) => Json::String(datetime.to_string()),
        DeValue::Integer(_) => match integer(value.get_ref()) {
            Some(i) => Json::Number(i.into()),
            None => {
                d.report(
                    &value.span(),
                    Some(group),
                    "integer does not fit in 64 bits: write it as a string",
                );
                return None;
            }
        },
        DeValue::Float(f) => match f.as_str().parse::<f64>().ok().and_then(Number::from_f64) {
            Some(number) => Json::Number(number),
            None => {
                d.report(
                    &value.span(),
                    Some(group),
                    format!(
                        "metadata cannot hold {}: JSON has no such number, write it as a string",
                        f.as_str()
                    ),
                );
                return None;
            }
        },
        DeValue::Array(items) => {
            let mut array = Vec::with_capacity(items.len());
            for item in items.iter() {
                array.push(to_json(d, group, item)?);
            }
            Json::Array(array)
        }
        DeValue::Table(table) => {
            let mut object = Map::new();
            for (key, item) in table.iter() {
                object.insert(key.get_ref().to_string(), to_json(d, group, item)?);
            }
            Json::Object(object)
        }
    };
    Some(json)
}
