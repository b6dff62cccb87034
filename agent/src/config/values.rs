//! Small validated value types of the agent's configuration: durations (`200ms`, `2s`, `1m`),
//! `wait = { min, max }` windows, registry prefixes and `HOST:PORT` addresses. Each rejects a bad
//! value while it is deserialized, so the error carries the key's path and position.

use std::fmt;
use std::time::Duration;

use lathe::KeyPath;
use serde::de::{self, Deserializer};
use serde::Deserialize;

/// A duration written as `<number><unit>` with unit `ms`, `s` or `m` (`1.5s` is fine).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

/// Why a value of the configuration was refused; the raw value is quoted in the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// A duration whose number does not parse.
    #[error("invalid duration {0:?}: expected e.g. 200ms, 2s or 1m")]
    DurationNumber(String),
    /// A duration with a unit other than `ms`, `s` or `m`.
    #[error("invalid duration {0:?}: unit must be ms, s or m")]
    DurationUnit(String),
    /// A duration over one day (or not finite).
    #[error("invalid duration {0:?}: at most one day")]
    DurationTooLong(String),
    /// An address without a host or a valid port.
    #[error("invalid address {0:?}: expected HOST:PORT")]
    Address(String),
}

/// Parses `200ms`, `2s`, `1.5s`, `1m`; a bare number is seconds.
pub fn parse_duration(raw: &str) -> Result<Duration, ValueError> {
    let raw = raw.trim();
    let split = raw
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| ValueError::DurationNumber(raw.into()))?;
    let seconds = match unit {
        "ms" => number / 1000.0,
        "" | "s" => number,
        "m" => number * 60.0,
        _ => return Err(ValueError::DurationUnit(raw.into())),
    };
    if !seconds.is_finite() || seconds > 86_400.0 {
        return Err(ValueError::DurationTooLong(raw.into()));
    }
    Ok(Duration::from_secs_f64(seconds))
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        parse_duration(&raw).map(Dur).map_err(de::Error::custom)
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// A `{ min, max }` window: the debounce of a watch, the back-off of reconnections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub min: Duration,
    pub max: Duration,
}

impl Window {
    pub const fn new(min: Duration, max: Duration) -> Self {
        Window { min, max }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    min: Dur,
    max: Dur,
}

impl<'de> Deserialize<'de> for Window {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = RawWindow::deserialize(deserializer)?;
        if raw.min > raw.max {
            return Err(de::Error::custom(format!(
                "min ({}) is longer than max ({})",
                raw.min, raw.max
            )));
        }
        Ok(Window::new(raw.min.0, raw.max.0))
    }
}

/// A registry path to watch (`/lathe/endpoints/task/http/lb`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefix(pub KeyPath);

impl<'de> Deserialize<'de> for Prefix {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        KeyPath::parse(&raw)
            .map(Prefix)
            .map_err(|e| de::Error::custom(format!("invalid registry path {raw:?}: {e}")))
    }
}

/// A `HOST:PORT` address (a registry node's REST address, a peer agent's status address), or
/// `https://HOST:PORT` for a registry node serving TLS.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Addr(pub String);

impl Addr {
    /// `http://HOST:PORT{path}`, or `https://…` for an `https://` address.
    pub fn url(&self, path: &str) -> String {
        if self.0.starts_with("https://") {
            format!("{}{path}", self.0)
        } else {
            format!("http://{}{path}", self.0)
        }
    }
}

/// Checks `HOST:PORT` (an optional `http://` is dropped; `https://` is kept: TLS).
pub fn parse_addr(raw: &str) -> Result<Addr, ValueError> {
    let bare = raw
        .trim()
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let (host, port) = bare
        .trim_start_matches("https://")
        .rsplit_once(':')
        .ok_or_else(|| ValueError::Address(raw.into()))?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(ValueError::Address(raw.into()));
    }
    Ok(Addr(bare.to_string()))
}

impl<'de> Deserialize<'de> for Addr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        parse_addr(&raw).map_err(de::Error::custom)
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A non-empty list of registry addresses.
pub(crate) fn nonempty_addrs<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<Addr>, D::Error> {
    let addrs = Vec::<Addr>::deserialize(deserializer)?;
    if addrs.is_empty() {
        return Err(de::Error::custom(
            "needs at least one registry node address",
        ));
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(
            parse_duration("2h"),
            Err(ValueError::DurationUnit("2h".into()))
        );
        assert!(parse_duration("2h")
            .unwrap_err()
            .to_string()
            .contains("unit"));
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn addresses_need_a_port() {
        assert_eq!(
            parse_addr("http://127.0.0.1:7500/").unwrap().0,
            "127.0.0.1:7500"
        );
        assert!(parse_addr("127.0.0.1").is_err());
        assert!(parse_addr(":80").is_err());
        assert!(parse_addr("h:99999").is_err());
    }

    #[test]
    fn https_addresses_keep_their_scheme() {
        let tls = parse_addr("https://node:7500/").unwrap();
        assert_eq!(tls.url("/v1/health"), "https://node:7500/v1/health");
        let plain = parse_addr("node:7500").unwrap();
        assert_eq!(plain.url("/v1/health"), "http://node:7500/v1/health");
        assert!(parse_addr("https://node").is_err());
    }
}
