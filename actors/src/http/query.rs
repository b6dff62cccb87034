//! Query-string parameters of the registry routes, parsed strictly: an unknown parameter or a bad
//! value is a 400 naming it.

use std::time::Duration;

use super::ApiError;

/// The longest a blocking query may wait.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(600);
/// The wait of a blocking query that gives `index` but no `wait`.
pub(crate) const DEFAULT_WAIT: Duration = Duration::from_secs(300);

#[derive(Debug, Default, PartialEq)]
pub(crate) struct KvQuery {
    pub(crate) recurse: bool,
    pub(crate) cas: Option<u64>,
    pub(crate) index: Option<u64>,
    pub(crate) wait: Option<Duration>,
}

/// Parses `query` allowing only the parameters named in `allowed`.
pub(crate) fn parse(query: &str, allowed: &[&str]) -> Result<KvQuery, ApiError> {
    let mut parsed = KvQuery::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !allowed.contains(&name) {
            return Err(ApiError::bad_request(format!(
                "unknown query parameter {name:?} (allowed: {})",
                allowed.join(", ")
            )));
        }
        match name {
            "recurse" => parsed.recurse = parse_bool(name, value)?,
            "cas" => parsed.cas = Some(parse_u64(name, value)?),
            "index" => parsed.index = Some(parse_u64(name, value)?),
            "wait" => parsed.wait = Some(parse_duration(value)?.min(MAX_WAIT)),
            _ => {}
        }
    }
    Ok(parsed)
}

fn parse_bool(name: &str, value: &str) -> Result<bool, ApiError> {
    match value {
        "" | "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(ApiError::bad_request(format!(
            "query parameter {name} must be true or false, not {value:?}"
        ))),
    }
}

fn parse_u64(name: &str, value: &str) -> Result<u64, ApiError> {
    value.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "query parameter {name} must be a non-negative integer, not {value:?}"
        ))
    })
}

/// `30s`, `500ms`, `2m`, or plain seconds.
pub(crate) fn parse_duration(value: &str) -> Result<Duration, ApiError> {
    let bad = || {
        ApiError::bad_request(format!(
            "query parameter wait must be a duration like 30s, 500ms or 2m, not {value:?}"
        ))
    };
    let (number, unit) = match value.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => value.split_at(i),
        None => (value, "s"),
    };
    let number: u64 = number.parse().map_err(|_| bad())?;
    match unit {
        "ms" => Ok(Duration::from_millis(number)),
        "s" => Ok(Duration::from_secs(number)),
        "m" => Ok(Duration::from_secs(number.saturating_mul(60))),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_parameters_and_refuses_others() {
        let q = parse("recurse=true&cas=5", &["recurse", "cas"]).unwrap();
        assert!(q.recurse);
        assert_eq!(q.cas, Some(5));
        assert!(parse("recurse", &["recurse"]).unwrap().recurse);
        assert!(parse("bogus=1", &["recurse"])
            .unwrap_err()
            .message
            .contains("bogus"));
        assert!(parse("cas=-1", &["cas"])
            .unwrap_err()
            .message
            .contains("cas"));
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5h").is_err());
        let q = parse("index=3&wait=99m", &["index", "wait"]).unwrap();
        assert_eq!(q.wait, Some(MAX_WAIT));
    }
}
