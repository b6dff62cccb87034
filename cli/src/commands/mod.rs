//! The commands: each makes its REST calls through [`Client`] and prints a human table or, with
//! `--json`, the server's JSON.

mod acl;
mod cluster;
mod kv;
mod rollout;
pub(crate) mod topology;
mod tree;
mod watch;

use std::io::{self, Write};

use serde_json::Value;

use crate::client::{CliError, Client};
use crate::{
    AclCommand, AclPolicyCommand, AclTokenCommand, Cli, Command, KvCommand, RolloutCommand,
};

/// Runs the parsed command line.
pub(crate) fn run(cli: &Cli) -> Result<(), CliError> {
    let client = Client::new(&cli.addr).with_token(cli.token.as_deref());
    let out = Output { json: cli.json };
    match &cli.command {
        Command::Deploy { file } => topology::deploy(&client, &out, file),
        Command::Status => cluster::status(&client, &out),
        Command::Members => cluster::members(&client, &out),
        Command::Tasks => topology::tasks(&client, &out),
        Command::Tree { node } => tree::tree(&client, &out, node.as_deref()),
        Command::Kv(KvCommand::Get { path }) => kv::get(&client, &out, path),
        Command::Kv(KvCommand::Put { path, value, cas }) => {
            kv::put(&client, &out, path, value, *cas)
        }
        Command::Kv(KvCommand::Delete { path, recurse, cas }) => {
            kv::delete(&client, &out, path, *recurse, *cas)
        }
        Command::Kv(KvCommand::List { path }) => kv::list(&client, &out, path),
        Command::Kv(KvCommand::Watch { path, index }) => watch::watch(&client, &out, path, *index),
        Command::Rollout(RolloutCommand::Status { group }) => {
            rollout::status(&client, &out, group.as_deref())
        }
        Command::Rollout(RolloutCommand::Pause { group, shift }) => {
            rollout::command(&client, &out, group, "pause", *shift)
        }
        Command::Rollout(RolloutCommand::Resume { group, shift }) => {
            rollout::command(&client, &out, group, "resume", *shift)
        }
        Command::Rollout(RolloutCommand::Undo { group, shift }) => {
            rollout::command(&client, &out, group, "undo", *shift)
        }
        Command::Rollout(RolloutCommand::Shift {
            key,
            to,
            step,
            every,
        }) => rollout::start_shift(&client, &out, key, to, *step, *every),
        Command::Rollout(RolloutCommand::Shifts) => rollout::shifts(&client, &out),
        Command::Acl(AclCommand::Bootstrap) => acl::bootstrap(&client, &out),
        Command::Acl(AclCommand::Policy(AclPolicyCommand::Put { name, file, rules })) => {
            acl::put_policy(&client, &out, name, file.as_deref(), rules)
        }
        Command::Acl(AclCommand::Policy(AclPolicyCommand::List)) => {
            acl::list_policies(&client, &out)
        }
        Command::Acl(AclCommand::Policy(AclPolicyCommand::Delete { name })) => acl::delete(
            &client,
            &out,
            &format!("/v1/acl/policies/{name}"),
            &format!("policy {name}"),
        ),
        Command::Acl(AclCommand::Token(AclTokenCommand::Create {
            policies,
            management,
            description,
        })) => acl::create_token(&client, &out, policies, *management, description.as_deref()),
        Command::Acl(AclCommand::Token(AclTokenCommand::List)) => acl::list_tokens(&client, &out),
        Command::Acl(AclCommand::Token(AclTokenCommand::Delete { accessor })) => acl::delete(
            &client,
            &out,
            &format!("/v1/acl/tokens/{accessor}"),
            &format!("token {accessor}"),
        ),
        // `lathe up` has exit codes of its own: main runs it directly.
        Command::Up(_) => Err(CliError::Local("lathe up runs from main".into())),
    }
}

/// Where results go: stdout, as text for humans or as JSON for scripts.
pub(crate) struct Output {
    pub(crate) json: bool,
}

impl Output {
    /// Writes `text` as it is; a closed stdout becomes [`CliError::BrokenPipe`].
    pub(crate) fn text(&self, text: &str) -> Result<(), CliError> {
        let mut stdout = io::stdout().lock();
        stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
            .map_err(stdout_error)
    }

    /// Writes `line` and a line break.
    pub(crate) fn line(&self, line: &str) -> Result<(), CliError> {
        self.text(&format!("{line}\n"))
    }

    /// Writes a JSON value, indented.
    pub(crate) fn json(&self, value: &Value) -> Result<(), CliError> {
        let text = serde_json::to_string_pretty(value)
            .map_err(|err| CliError::Local(format!("cannot render json: {err}")))?;
        self.line(&text)
    }
}

fn stdout_error(err: io::Error) -> CliError {
    if err.kind() == io::ErrorKind::BrokenPipe {
        CliError::BrokenPipe
    } else {
        CliError::Local(format!("cannot write to stdout: {err}"))
    }
}

/// The error for an answer whose shape is not the one the contract gives.
pub(crate) fn unexpected_answer(route: &str, answer: &Value) -> CliError {
    CliError::Local(format!(
        "unexpected answer from {route}: {}",
        crate::table::truncate(&answer.to_string(), 200)
    ))
}
