//! The `lathe-agent` binary: `lathe-agent --config FILE [--check]`.
//!
//! A bad configuration (file, key or `LATHE_AGENT_*` variable) is one line naming it, exit code 2,
//! before anything starts. SIGTERM or SIGINT stop the agent (exit 0).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "lathe-agent",
    version,
    about = "Follow a Lathe cluster's registry on an external machine"
)]
struct Args {
    /// The configuration file (see config/agent.toml).
    #[arg(long, env = "LATHE_AGENT_CONFIG")]
    config: PathBuf,
    /// Validate the configuration (and its templates) and exit.
    #[arg(long)]
    check: bool,
    /// PEM CA certificate that signed the registry nodes' TLS certificates (for https://
    /// registry addresses)
    #[arg(long, env = "LATHE_CA")]
    ca: Option<PathBuf>,
    /// PEM client certificate, for registry nodes that require one (--tls-client-ca)
    #[arg(long, env = "LATHE_CERT", requires = "key")]
    cert: Option<PathBuf>,
    /// PEM private key of --cert
    #[arg(long, env = "LATHE_KEY", requires = "cert")]
    key: Option<PathBuf>,
    /// The ACL token for registry nodes started with --acl (a policy with agent:read, and
    /// agent:write to register, plus key:PREFIX:read for watched keys outside /lathe/endpoints)
    #[arg(long, env = "LATHE_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // clap's first paragraph on one line: "the following required arguments were not
            // provided: --config <CONFIG>".
            let text = e.to_string();
            let lines: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            let message = lines.join(" ");
            eprintln!("lathe-agent: {}", message.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    let mut config = match lathe_agent::config::load(&args.config, std::env::vars()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("lathe-agent: {e}");
            return ExitCode::from(2);
        }
    };
    let tls = lathe_tls::ClientTlsFiles {
        ca: args.ca.clone(),
        identity: args
            .cert
            .clone()
            .zip(args.key.clone())
            .map(|(certificate, key)| lathe_tls::Identity { certificate, key }),
    };
    if let Err(e) = lathe_agent::tls::configure(&tls) {
        eprintln!("lathe-agent: {e}");
        return ExitCode::from(2);
    }
    config.token = args.token;
    if args.check {
        println!("{}: ok", args.config.display());
        return ExitCode::SUCCESS;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("lathe-agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(lathe_agent::run(config, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lathe-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
