//! `lathe`: the command line client of a lathe-node's REST API (`CONTRACT.md`, section `lathe`).
//!
//! # Layout
//! - `main.rs`: the arguments (clap) and the exit codes: 0 ok, 1 failed (the server's error or an
//!   unreachable node, one line on stderr), 2 bad usage (clap's own).
//! - `client.rs`: the REST calls and the mapping of HTTP and transport failures to
//!   [`client::CliError`].
//! - `commands/`: one file per group of commands; each prints a human table, or the server's JSON
//!   with `--json`.
//! - `table.rs`: aligned text tables; `sse.rs`: the Server-Sent Events line parser used by `kv
//!   watch`.
//! - `up/`: `lathe up`, a local cluster of supervised `lathe-node` processes (its own exit codes,
//!   see there).

mod client;
mod commands;
mod sse;
mod table;
mod up;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The REST address used when neither `--addr` nor `LATHE_ADDR` is given.
const DEFAULT_ADDR: &str = "127.0.0.1:7500";

/// The end of `lathe --help`.
const AFTER_HELP: &str =
    "Exit codes: 0 done, 1 failed (the server's error or an unreachable node, \
    on stderr), 2 bad usage.";

/// Command line client of a Lathe cluster: talks to any lathe-node's REST API.
#[derive(Debug, Parser)]
#[command(name = "lathe", version, about, propagate_version = true, after_help = AFTER_HELP)]
pub(crate) struct Cli {
    /// REST address (HOST:PORT, or https://HOST:PORT with --ca) of any lathe-node of the cluster
    #[arg(
        long,
        global = true,
        env = "LATHE_ADDR",
        default_value = DEFAULT_ADDR,
        value_name = "HOST:PORT"
    )]
    pub(crate) addr: String,

    /// Print the server's JSON instead of human tables (for scripts)
    #[arg(long, global = true)]
    pub(crate) json: bool,

    /// PEM CA certificate that signed the nodes' TLS certificates (for https:// addresses)
    #[arg(long, global = true, env = "LATHE_CA", value_name = "PEM")]
    pub(crate) ca: Option<PathBuf>,

    /// PEM client certificate, for nodes that require one (--tls-client-ca)
    #[arg(
        long,
        global = true,
        env = "LATHE_CERT",
        value_name = "PEM",
        requires = "key"
    )]
    pub(crate) cert: Option<PathBuf>,

    /// PEM private key of --cert
    #[arg(
        long,
        global = true,
        env = "LATHE_KEY",
        value_name = "PEM",
        requires = "cert"
    )]
    pub(crate) key: Option<PathBuf>,

    /// The ACL token sent with every request (Authorization: Bearer), for nodes started with --acl
    #[arg(
        long,
        global = true,
        env = "LATHE_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub(crate) token: Option<String>,

    #[command(subcommand)]
    pub(crate) command: Command,
}

impl Cli {
    /// `--ca`, `--cert` and `--key`.
    pub(crate) fn tls_files(&self) -> lathe_tls::ClientTlsFiles {
        lathe_tls::ClientTlsFiles {
            ca: self.ca.clone(),
            identity: self
                .cert
                .clone()
                .zip(self.key.clone())
                .map(|(certificate, key)| lathe_tls::Identity { certificate, key }),
        }
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Deploy a topology file (PUT /v1/topology): validates, stores and schedules it
    Deploy {
        /// The topology TOML file, e.g. config/my_topology.toml
        file: PathBuf,
    },
    /// Health of the node at --addr and a summary of the cluster's members
    Status,
    /// The cluster's nodes: status, addresses, tags, task catalog and the scheduler leader
    Members,
    /// The task instances of every functional group
    Tasks,
    /// The supervision tree of the cluster, with each actor's status and restarts
    Tree {
        /// Only the tree of this node
        #[arg(long, value_name = "NAME")]
        node: Option<String>,
    },
    /// Read and change the registry (keys are /-separated paths, values are JSON)
    #[command(subcommand)]
    Kv(KvCommand),
    /// Follow and steer the slow roll-out of a group to a new version
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// Access control of a cluster whose nodes run with --acl: bootstrap, policies, tokens
    #[command(subcommand)]
    Acl(AclCommand),
    /// Start a local cluster: N lathe-node processes on loopback, restarted when they die, until
    /// Ctrl-C
    Up(Box<up::UpArgs>),
}

#[derive(Debug, Subcommand)]
pub(crate) enum AclCommand {
    /// Make the cluster's management token (works once per cluster); prints it this once
    Bootstrap,
    /// Named policies: lists of rules
    #[command(subcommand)]
    Policy(AclPolicyCommand),
    /// Tokens: each carries policies; its secret is shown once, at creation
    #[command(subcommand)]
    Token(AclTokenCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum AclPolicyCommand {
    /// Create or replace policy NAME from FILE (JSON {"rules": [...]}) and/or --rule flags
    Put {
        name: String,
        /// A JSON file: {"rules": [{"resource": "key", "prefix": "/app", "access": "write"}]}
        file: Option<PathBuf>,
        /// A rule RESOURCE[:PREFIX]:ACCESS: key:/app:write, cluster:read, topology:write,
        /// operator:write, agent:read|write, acl:read|write
        #[arg(long = "rule", value_name = "RULE")]
        rules: Vec<String>,
    },
    /// Every policy and its rules
    List,
    /// Delete policy NAME (tokens that name it lose its rules)
    Delete { name: String },
}

#[derive(Debug, Subcommand)]
pub(crate) enum AclTokenCommand {
    /// Make a token with the given policies; prints its secret this once
    Create {
        /// A policy the token carries (repeat for more)
        #[arg(long = "policy", value_name = "NAME")]
        policies: Vec<String>,
        /// A management token, allowed everything
        #[arg(long)]
        management: bool,
        #[arg(long)]
        description: Option<String>,
    },
    /// Every token (accessor, policies; never secrets)
    List,
    /// Revoke the token ACCESSOR (on every node within seconds)
    Delete { accessor: String },
}

#[derive(Debug, Subcommand)]
pub(crate) enum RolloutCommand {
    /// Where the roll-out of GROUP is (or of every group, without GROUP)
    Status {
        /// The group: its name (task.http.frontpage.v4-2-1) or path (http/frontpage/v4-2-1)
        group: Option<String>,
    },
    /// Replace no more instances (or, with --shift, move no more traffic) until `resume`
    Pause {
        /// The group: its name or path; with --shift, the metadata key of the split
        group: String,
        /// GROUP is the metadata key of a traffic shift
        #[arg(long)]
        shift: bool,
    },
    /// Go on with a paused roll-out or shift, or try a rolled-back roll-out again
    Resume {
        /// The group: its name or path; with --shift, the metadata key of the split
        group: String,
        /// GROUP is the metadata key of a traffic shift
        #[arg(long)]
        shift: bool,
    },
    /// Put every instance back on the group's previous version (with --shift: the split back as
    /// it was)
    Undo {
        /// The group: its name or path; with --shift, the metadata key of the split
        group: String,
        /// GROUP is the metadata key of a traffic shift
        #[arg(long)]
        shift: bool,
    },
    /// Move the traffic of a weighted split (e.g. task/http/lb/backend_distribution) to one of
    /// its groups, STEP percentage points every EVERY seconds while that group stays healthy
    Shift {
        /// The metadata key holding [[groups], [weights]]
        key: String,
        /// The group the traffic moves to
        #[arg(long, value_name = "GROUP")]
        to: String,
        /// Percentage points per step
        #[arg(long, default_value_t = 10)]
        step: u32,
        /// Seconds between steps
        #[arg(long, value_name = "SECONDS", default_value_t = 30)]
        every: u32,
    },
    /// Every traffic shift: key, target group, share, state
    Shifts,
}

#[derive(Debug, Subcommand)]
pub(crate) enum KvCommand {
    /// Print the value stored at PATH (404 if absent)
    Get {
        /// Registry path, e.g. /task/http/lb/backend_distribution
        path: String,
    },
    /// Store VALUE at PATH
    Put {
        /// Registry path, e.g. /task/http/lb/backend_distribution
        path: String,
        /// A JSON value, e.g. '{"a": 1}', '[1, 2]', 42, true or '"text"'. Anything that does not
        /// parse as JSON is stored as a JSON string: `lathe kv put /x hello` stores "hello"
        value: String,
        /// Only write if the key's current version is V (0: only create it)
        #[arg(long, value_name = "V")]
        cas: Option<u64>,
    },
    /// Delete the key at PATH
    Delete {
        /// Registry path
        path: String,
        /// Also delete every key under PATH
        #[arg(long)]
        recurse: bool,
        /// Only delete if the key's current version is V
        #[arg(long, value_name = "V")]
        cas: Option<u64>,
    },
    /// List every key under PATH with its version and value
    List {
        /// Registry path prefix (default: the whole registry)
        #[arg(default_value = "/")]
        path: String,
    },
    /// Print one line per change under PATH until interrupted (Ctrl-C)
    Watch {
        /// Registry path prefix
        path: String,
        /// Resume after this registry index (no change after it is skipped)
        #[arg(long, value_name = "N")]
        index: Option<u64>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(err) = client::configure_tls(&cli.tls_files()) {
        eprintln!("lathe: {}", err.one_line());
        return ExitCode::from(2);
    }
    if let Command::Up(args) = &cli.command {
        if args.tls_cert.is_some() && cli.ca.is_none() {
            // Otherwise it would wait for nodes it cannot trust until its start deadline.
            eprintln!(
                "lathe up: --tls-cert: give --ca too (the CA that signed it), so that lathe up \
                 trusts its nodes"
            );
            return ExitCode::from(2);
        }
        return up::run(args, cli.token.as_deref());
    }
    match commands::run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(client::CliError::BrokenPipe) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("lathe: {}", err.one_line());
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("lathe").chain(args.iter().copied()))
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn addr_defaults_and_global_flags_parse_after_the_subcommand() {
        let cli = parse(&["kv", "get", "/a/b", "--json", "--addr", "10.0.0.1:7501"]).unwrap();
        assert!(cli.json);
        assert_eq!(cli.addr, "10.0.0.1:7501");
        assert!(matches!(cli.command, Command::Kv(KvCommand::Get { ref path }) if path == "/a/b"));
    }

    #[test]
    fn kv_put_takes_a_value_and_an_optional_cas() {
        let cli = parse(&["kv", "put", "/a", "{\"x\": 1}", "--cas", "0"]).unwrap();
        match cli.command {
            Command::Kv(KvCommand::Put { path, value, cas }) => {
                assert_eq!(
                    (path.as_str(), value.as_str(), cas),
                    ("/a", "{\"x\": 1}", Some(0))
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn kv_delete_flags_and_watch_index_parse() {
        let cli = parse(&["kv", "delete", "/a", "--recurse", "--cas", "7"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Kv(KvCommand::Delete {
                recurse: true,
                cas: Some(7),
                ..
            })
        ));
        let cli = parse(&["kv", "watch", "/a", "--index", "42"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Kv(KvCommand::Watch {
                index: Some(42),
                ..
            })
        ));
        let cli = parse(&["kv", "list"]).unwrap();
        assert!(matches!(cli.command, Command::Kv(KvCommand::List { ref path }) if path == "/"));
    }

    #[test]
    fn bad_usage_is_a_clap_error_with_exit_code_2() {
        for args in [
            &["kv", "put", "/a"][..],
            &["kv", "frobnicate"],
            &["kv", "delete", "/a", "--cas", "x"],
            &[],
        ] {
            let err = parse(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "args {args:?}");
        }
    }

    #[test]
    fn up_needs_a_node_count_and_defaults_to_the_contract_ports() {
        match parse(&["up", "--nodes", "3", "--topology", "t.toml"])
            .unwrap()
            .command
        {
            Command::Up(args) => {
                assert_eq!(
                    (args.nodes, args.http_base, args.cluster_base),
                    (3, 7500, 7400)
                );
                assert_eq!(args.data_dir, PathBuf::from("lathe-data"));
            }
            other => panic!("unexpected {other:?}"),
        }
        for args in [&["up"][..], &["up", "--nodes", "0"]] {
            assert_eq!(parse(args).unwrap_err().exit_code(), 2, "args {args:?}");
        }
    }

    #[test]
    fn acl_commands_and_the_token_parse() {
        let cli = parse(&[
            "acl", "token", "create", "--policy", "a", "--policy", "b", "--token", "s",
        ])
        .unwrap();
        assert_eq!(cli.token.as_deref(), Some("s"));
        assert!(matches!(
            cli.command,
            Command::Acl(AclCommand::Token(AclTokenCommand::Create {
                ref policies,
                management: false,
                ..
            })) if policies == &["a", "b"]
        ));
        let cli = parse(&["acl", "policy", "put", "ro", "--rule", "key:/:read"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Acl(AclCommand::Policy(AclPolicyCommand::Put { file: None, ref rules, .. }))
                if rules == &["key:/:read"]
        ));
        assert!(matches!(
            parse(&["acl", "bootstrap"]).unwrap().command,
            Command::Acl(AclCommand::Bootstrap)
        ));
    }

    #[test]
    fn deploy_tasks_tree_and_status_parse() {
        assert!(matches!(
            parse(&["deploy", "t.toml"]).unwrap().command,
            Command::Deploy { .. }
        ));
        assert!(matches!(parse(&["tasks"]).unwrap().command, Command::Tasks));
        assert!(matches!(
            parse(&["tree", "--node", "n1"]).unwrap().command,
            Command::Tree { node: Some(_) }
        ));
        assert!(matches!(
            parse(&["status"]).unwrap().command,
            Command::Status
        ));
        assert!(matches!(
            parse(&["members"]).unwrap().command,
            Command::Members
        ));
    }
}
