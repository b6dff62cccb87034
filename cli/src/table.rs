//! Human output: aligned text tables and the rendering of JSON values into table cells.

use serde_json::Value;

/// The widest a value is shown in a table cell before it is cut with `…`.
pub(crate) const MAX_CELL_CHARS: usize = 80;

/// A table of text cells, rendered with columns aligned and separated by two spaces.
#[derive(Debug, Default)]
pub(crate) struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table whose first line names the columns.
    pub(crate) fn with_headers(headers: &[&str]) -> Self {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// A table without a header line (e.g. `key  value` pairs).
    pub(crate) fn without_headers() -> Self {
        Table::default()
    }

    pub(crate) fn push_row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The rendered lines, each ending with `\n`; the last column is not padded.
    pub(crate) fn render(&self) -> String {
        let lines: Vec<&Vec<String>> = std::iter::once(&self.headers)
            .filter(|h| !h.is_empty())
            .chain(&self.rows)
            .collect();
        let columns = lines.iter().map(|cells| cells.len()).max().unwrap_or(0);
        let mut widths = vec![0; columns];
        for cells in &lines {
            for (width, cell) in widths.iter_mut().zip(cells.iter()) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for cells in lines {
            let mut line = String::new();
            for (column, cell) in cells.iter().enumerate() {
                if column > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                let padding = widths[column] - cell.chars().count();
                line.extend(std::iter::repeat_n(' ', padding));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A JSON value as a table cell: strings bare, `null` as `-`, arrays of scalars comma-separated,
/// anything else as compact JSON; cut to [`MAX_CELL_CHARS`].
pub(crate) fn cell(value: &Value) -> String {
    let text = match value {
        Value::Null => "-".to_string(),
        Value::String(s) if s.is_empty() => "-".to_string(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.is_empty() => "-".to_string(),
        Value::Array(items) if items.iter().all(is_scalar) => {
            items.iter().map(cell).collect::<Vec<_>>().join(",")
        }
        other => other.to_string(),
    };
    truncate(&text, MAX_CELL_CHARS)
}

/// The field `name` of an object as a table cell (`-` when absent).
pub(crate) fn field(object: &Value, name: &str) -> String {
    cell(object.get(name).unwrap_or(&Value::Null))
}

/// A JSON value as compact JSON (strings keep their quotes), cut to [`MAX_CELL_CHARS`]: for
/// registry values, where the type matters.
pub(crate) fn json_cell(value: &Value) -> String {
    truncate(&value.to_string(), MAX_CELL_CHARS)
}

/// `text` cut to at most `max` characters, the last being `…` when it was cut.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

fn is_scalar(value: &Value) -> bool {
    !matches!(value, Value::Array(_) | Value::Object(_))
}

/// The list of objects in an answer: the answer itself when it is an array, else the first of
/// `keys` that holds an array (e.g. `{"members": [...]}`).
pub(crate) fn items<'a>(answer: &'a Value, keys: &[&str]) -> Option<&'a Vec<Value>> {
    match answer {
        Value::Array(items) => Some(items),
        Value::Object(map) => keys
            .iter()
            .find_map(|key| map.get(*key).and_then(Value::as_array)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn columns_are_aligned_and_lines_have_no_trailing_spaces() {
        let mut table = Table::with_headers(&["KEY", "VERSION", "VALUE"]);
        table.push_row(vec!["/a".into(), "12".into(), "1".into()]);
        table.push_row(vec!["/task/http/lb".into(), "3".into(), "".into()]);
        assert_eq!(
            table.render(),
            "KEY            VERSION  VALUE\n/a             12       1\n/task/http/lb  3\n"
        );
    }

    #[test]
    fn headerless_tables_and_wide_characters_align() {
        let mut table = Table::without_headers();
        table.push_row(vec!["naïve".into(), "x".into()]);
        table.push_row(vec!["members".into(), "3".into()]);
        assert_eq!(table.render(), "naïve    x\nmembers  3\n");
        assert_eq!(Table::without_headers().render(), "");
    }

    #[test]
    fn cells_render_json_for_humans() {
        assert_eq!(cell(&json!(null)), "-");
        assert_eq!(cell(&json!("text")), "text");
        assert_eq!(cell(&json!(["lb", "net"])), "lb,net");
        assert_eq!(cell(&json!([])), "-");
        assert_eq!(cell(&json!({"a": 1})), "{\"a\":1}");
        assert_eq!(json_cell(&json!("text")), "\"text\"");
        assert_eq!(field(&json!({"pid": 42}), "pid"), "42");
        assert_eq!(field(&json!({}), "pid"), "-");
    }

    #[test]
    fn long_cells_are_cut() {
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abcd", 4), "abcd");
        assert_eq!(
            cell(&json!("x".repeat(200))).chars().count(),
            MAX_CELL_CHARS
        );
    }

    #[test]
    fn items_are_found_in_arrays_or_named_fields() {
        assert_eq!(items(&json!([1]), &["members"]).map(Vec::len), Some(1));
        assert_eq!(
            items(&json!({"members": [1, 2]}), &["members"]).map(Vec::len),
            Some(2)
        );
        assert_eq!(items(&json!({"other": 1}), &["members"]), None);
    }
}
