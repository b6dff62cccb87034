//! What `lathe-node --kafka` and `--kafka-option` give: the brokers and the client properties,
//! checked before the node binds anything (pure: no connection here).

use std::collections::BTreeMap;
use std::time::Duration;

/// How long a consumer may stay silent before its group gives its partitions to the others,
/// unless `--kafka-option session.timeout.ms=...` says otherwise (Kafka's own default, 45 s,
/// leaves a crashed node's partitions idle for too long).
pub const DEFAULT_SESSION_TIMEOUT_MS: u32 = 10_000;
/// How long `emit` waits for Kafka's acknowledgement (`message.timeout.ms`), unless overridden.
pub const DEFAULT_MESSAGE_TIMEOUT_MS: u32 = 30_000;
/// How long the start-up check waits for the brokers' metadata.
pub const REACHABLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Properties Lathe sets itself: an option may not change them (they carry its guarantees).
const FIXED: &[&str] = &[
    "bootstrap.servers",
    "group.id",
    "enable.idempotence",
    "acks",
    "enable.auto.offset.store",
];

/// Why `--kafka` or a `--kafka-option` was refused; one line saying what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// `--kafka` is empty or blank.
    #[error("no brokers given (host:port[,host:port...])")]
    NoBrokers,
    /// One broker of `--kafka` is not a host and a non-zero port.
    #[error("{0:?} is not host:port")]
    BadBroker(String),
    /// A `--kafka-option` has no `=` or no key.
    #[error("option {0:?} is not KEY=VALUE")]
    BadOption(String),
    /// A `--kafka-option` names a property Lathe sets itself.
    #[error("option {0:?} is set by lathe and cannot be changed")]
    FixedOption(String),
}

/// Validated Kafka settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSettings {
    /// `host:port`, in the order given.
    pub brokers: Vec<String>,
    /// librdkafka properties for every client (`--kafka-option KEY=VALUE`), Lathe's defaults
    /// included.
    pub options: BTreeMap<String, String>,
}

impl KafkaSettings {
    /// Parses `host:port[,host:port...]` and `KEY=VALUE` options; an error is one line saying
    /// what is wrong.
    pub fn parse(brokers: &str, options: &[String]) -> Result<KafkaSettings, SettingsError> {
        let brokers = parse_brokers(brokers)?;
        let mut all = BTreeMap::from([
            (
                "session.timeout.ms".to_string(),
                DEFAULT_SESSION_TIMEOUT_MS.to_string(),
            ),
            (
                "message.timeout.ms".to_string(),
                DEFAULT_MESSAGE_TIMEOUT_MS.to_string(),
            ),
        ]);
        for option in options {
            let (key, value) = option
                .split_once('=')
                .filter(|(k, _)| !k.trim().is_empty())
                .ok_or_else(|| SettingsError::BadOption(option.clone()))?;
            let key = key.trim();
            if FIXED.contains(&key) {
                return Err(SettingsError::FixedOption(key.to_string()));
            }
            all.insert(key.to_string(), value.trim().to_string());
        }
        Ok(KafkaSettings {
            brokers,
            options: all,
        })
    }

    /// `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.brokers.join(",")
    }

    /// How long `emit` waits for an acknowledgement (`message.timeout.ms`).
    pub fn message_timeout(&self) -> Duration {
        let ms = self
            .options
            .get("message.timeout.ms")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(u64::from(DEFAULT_MESSAGE_TIMEOUT_MS));
        Duration::from_millis(ms)
    }
}

/// `host:port[,host:port...]`: every part a non-empty host and a port number.
pub fn parse_brokers(value: &str) -> Result<Vec<String>, SettingsError> {
    if value.trim().is_empty() {
        return Err(SettingsError::NoBrokers);
    }
    value
        .split(',')
        .map(|broker| {
            let broker = broker.trim();
            let (host, port) = broker
                .rsplit_once(':')
                .ok_or_else(|| SettingsError::BadBroker(broker.to_string()))?;
            let port_ok = port.parse::<u16>().is_ok_and(|p| p != 0);
            let host_ok = !host.is_empty()
                && host.chars().all(|c| {
                    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '[' | ']' | ':')
                });
            if !host_ok || !port_ok {
                return Err(SettingsError::BadBroker(broker.to_string()));
            }
            Ok(broker.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brokers_and_options_are_checked() {
        let settings = KafkaSettings::parse("127.0.0.1:9092, kafka-2:9093", &[]).unwrap();
        assert_eq!(settings.bootstrap(), "127.0.0.1:9092,kafka-2:9093");
        assert_eq!(settings.options["session.timeout.ms"], "10000");
        assert_eq!(settings.message_timeout(), Duration::from_secs(30));
        let tuned = KafkaSettings::parse(
            "k:1",
            &[
                "session.timeout.ms=3000".into(),
                "message.timeout.ms = 5000".into(),
            ],
        )
        .unwrap();
        assert_eq!(tuned.options["session.timeout.ms"], "3000");
        assert_eq!(tuned.message_timeout(), Duration::from_secs(5));

        for bad in [
            "", "k", "k:", ":9092", "k:port", "k:0", "k:70000", "a b:1", "k:1,",
        ] {
            let error = KafkaSettings::parse(bad, &[]).unwrap_err().to_string();
            assert!(!error.contains('\n'), "one line: {error}");
        }
        assert_eq!(
            KafkaSettings::parse("k:1", &["acks=1".into()]).unwrap_err(),
            SettingsError::FixedOption("acks".into())
        );
        assert_eq!(
            KafkaSettings::parse("k:1", &["nokey".into()]).unwrap_err(),
            SettingsError::BadOption("nokey".into())
        );
    }
}
