//! What can go wrong in an action, named so that the status board and the log say which file,
//! command or socket failed and how. Outcomes carry the message (`Outcome::Failed`).

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// The action's config lacks or misuses a key (found when the agent starts).
    #[error("{0}")]
    Config(String),
    #[error("cannot {doing} {}: {source}", path.display())]
    File {
        doing: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot rename {} to {}: {source}", from.display(), to.display())]
    Rename {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed: {source}")]
    Wait {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` did not finish within {timeout:?}")]
    Timeout { command: String, timeout: Duration },
    #[error("`{command}` exited with {status}: {output}")]
    Exited {
        command: String,
        status: std::process::ExitStatus,
        output: String,
    },
    /// An admin socket (HAProxy's) did not answer as it should.
    #[error("{}: {detail}", socket.display())]
    Socket { socket: PathBuf, detail: String },
    /// HAProxy answered, but not what the action needs.
    #[error("{0}")]
    Haproxy(String),
    /// A template that does not compile or render (with its line).
    #[error("{0}")]
    Template(String),
}

impl From<&str> for ActionError {
    /// A missing config key (`.ok_or("haproxy needs destination")?`).
    fn from(message: &str) -> Self {
        ActionError::Config(message.to_string())
    }
}
