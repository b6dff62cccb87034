//! Reading the configuration file: `FILE:LINE:COL: KEY: message` errors, relative paths resolved
//! against the file's folder, then the `LATHE_AGENT_*` environment overrides.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use super::values::{parse_addr, Addr};
use super::{AgentConfig, StreamMode};

/// A configuration the agent cannot run with; the message names the file position and the key
/// (or the environment variable).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

thread_local! {
    /// The folder relative paths in the file being parsed are resolved against.
    static BASE_DIR: RefCell<Option<PathBuf>> = const { RefCell::new(None) };
}

/// `path` as given when absolute, else joined to the configuration file's folder.
pub(crate) fn resolve_path(path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_path_buf();
    }
    BASE_DIR.with(|base| match &*base.borrow() {
        Some(dir) => dir.join(path),
        None => path.to_path_buf(),
    })
}

/// Reads, parses and validates `file`, then applies the environment overrides in `env`
/// (`LATHE_AGENT_REGISTRY`, ...).
pub fn load(
    file: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<AgentConfig, ConfigError> {
    let source = std::fs::read_to_string(file)
        .map_err(|e| ConfigError(format!("{}: cannot read: {e}", file.display())))?;
    let base = file
        .parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty());
    let mut config = load_str(&file.display().to_string(), &source, base)?;
    apply_env(&mut config, env)?;
    Ok(config)
}

/// Parses `source` (named `file` in errors), resolving relative paths against `base`.
pub fn load_str(
    file: &str,
    source: &str,
    base: Option<PathBuf>,
) -> Result<AgentConfig, ConfigError> {
    BASE_DIR.with(|dir| *dir.borrow_mut() = base);
    let result = parse(file, source);
    BASE_DIR.with(|dir| *dir.borrow_mut() = None);
    result
}

fn parse(file: &str, source: &str) -> Result<AgentConfig, ConfigError> {
    let deserializer = toml::Deserializer::parse(source)
        .map_err(|e| ConfigError(located(file, source, e.span(), None, e.message())))?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.inner();
        let key = (path != ".").then_some(path.as_str());
        ConfigError(located(file, source, inner.span(), key, inner.message()))
    })
}

/// `FILE:LINE:COL: KEY: message` (position and key when known).
fn located(
    file: &str,
    source: &str,
    span: Option<std::ops::Range<usize>>,
    key: Option<&str>,
    message: &str,
) -> String {
    let position = span.map(|span| {
        let before = &source[..span.start.min(source.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
        format!("{line}:{column}:")
    });
    let mut out = format!("{file}:{}", position.unwrap_or_default());
    if let Some(key) = key {
        out.push_str(&format!(" {key}:"));
    }
    out.push_str(&format!(" {}", message.trim()));
    out
}

fn addr_list(name: &str, raw: &str) -> Result<Vec<Addr>, ConfigError> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| parse_addr(s).map_err(|e| ConfigError(format!("{name}: {e}"))))
        .collect()
}

/// `LATHE_AGENT_NAME`, `LATHE_AGENT_REGISTRY` and `LATHE_AGENT_PEERS` (comma-separated),
/// `LATHE_AGENT_STATUS_LISTEN`, `LATHE_AGENT_MODE`.
fn apply_env(
    config: &mut AgentConfig,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    for (name, value) in env {
        match name.as_str() {
            "LATHE_AGENT_NAME" => config.name = Some(value),
            "LATHE_AGENT_REGISTRY" => {
                let addrs = addr_list(&name, &value)?;
                if addrs.is_empty() {
                    return Err(ConfigError(format!("{name}: needs at least one address")));
                }
                config.registry = addrs;
            }
            "LATHE_AGENT_PEERS" => config.peers = addr_list(&name, &value)?,
            "LATHE_AGENT_STATUS_LISTEN" => {
                config.status.listen = parse_addr(&value).map_err(|e| {
                    ConfigError(format!(
                        "{name}: \
                    {e}"
                    ))
                })?
            }
            "LATHE_AGENT_MODE" => {
                config.mode = match value.as_str() {
                    "auto" => StreamMode::Auto,
                    "sse" => StreamMode::Sse,
                    "poll" => StreamMode::Poll,
                    _ => {
                        return Err(ConfigError(format!(
                            "{name}: must be auto, sse or poll, not {value:?}"
                        )))
                    }
                }
            }
            "LATHE_AGENT_CONFIG" => {}
            other if other.starts_with("LATHE_AGENT_") => {
                return Err(ConfigError(format!(
                    "{other}: unknown variable (known: LATHE_AGENT_CONFIG, LATHE_AGENT_NAME, \
                     LATHE_AGENT_REGISTRY, LATHE_AGENT_PEERS, LATHE_AGENT_STATUS_LISTEN, \
                         LATHE_AGENT_MODE)"
                )))
            }
            _ => {}
        }
    }
    Ok(())
}
