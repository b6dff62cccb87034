//! `lathe up`: a local cluster of N `lathe-node` processes on loopback, kept running until Ctrl-C
//! or SIGTERM (CONTRACT.md, "`lathe up`"). The local process backend of the resource manager.
//!
//! ```text
//! lathe up ── plan.rs ──────── ports free? binary? cookie? ── one NodeSpec per node (fixed ports, data dir)
//!    │
//!    ├── supervise.rs (this thread, every TICK) ── lathe_resources::local: start / poll / restart local-<i>
//!    │                                              prints "local-<i> serving at http://..."
//!    └── deploy.rs (a thread, once all serve) ──── REST of local-0: members alive → PUT /v1/topology
//!                                                   → /v1/tasks all running
//!        └── endpoints.rs ─────────────────────── /v1/services endpoints, the `curl` line, and again
//!                                                   whenever the entry points move
//! signals.rs: SIGINT / SIGTERM / SIGHUP → stop every node (SIGTERM, 10 s, SIGKILL), exit 0
//! prometheus.rs (--prometheus): Debian's prometheus on a free port, scraping the nodes through
//!                               local-0's /v1/prometheus/targets; stopped with the nodes
//! ```
//!
//! Exit codes: 0 stopped by a signal; 1 the cluster failed (a node that never serves, a deploy that
//! never goes through); 2 bad usage (a port in use, no `lathe-node`, a topology the server
//! refuses), after stopping whatever was started.

/// `println!` that never panics: `lathe up` goes on supervising (or stopping) its nodes when its
/// terminal or the pipe it writes to is gone. Defined before the modules so they all see it.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `eprintln!` that never panics (see `say!`).
macro_rules! say_err {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod deploy;
mod endpoints;
mod plan;
mod prometheus;
mod signals;
mod supervise;
mod topology;

use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::client::Client;
use deploy::Deployer;
use plan::ClusterPlan;
use signals::Signals;
use supervise::Supervisor;

/// How often the supervisor looks at its processes.
const TICK: Duration = Duration::from_millis(100);
/// How long every node may take to answer `GET /v1/health` the first time.
const START_DEADLINE: Duration = Duration::from_secs(120);
/// How long nodes may drain after SIGTERM before they are SIGKILLed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// `lathe up`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct UpArgs {
    /// How many lathe-node processes to start
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=100))]
    pub(crate) nodes: u16,
    /// ZooKeeper ensemble HOST:PORT[,...][/CHROOT] for every node; without it the registry is node
    /// 0's embedded store
    #[arg(long, value_name = "ZK")]
    pub(crate) zookeeper: Option<String>,
    /// A topology file to deploy once every node is alive
    #[arg(long, value_name = "FILE")]
    pub(crate) topology: Option<PathBuf>,
    /// Node i serves REST (and /metrics) on 127.0.0.1:(PORT+i)
    #[arg(long, value_name = "PORT", default_value_t = 7500)]
    pub(crate) http_base: u16,
    /// Node i listens for the cluster on 127.0.0.1:(PORT+i): fixed, so a restarted node rejoins at
    /// its address
    #[arg(long, value_name = "PORT", default_value_t = 7400)]
    pub(crate) cluster_base: u16,
    /// Shared secret of the nodes (default: a random one per run)
    #[arg(
        long,
        env = "LATHE_COOKIE",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub(crate) cookie: Option<String>,
    /// Node i keeps its data and its node.log in DIR/local-<i>
    #[arg(long, value_name = "DIR", default_value = "lathe-data")]
    pub(crate) data_dir: PathBuf,
    /// The lathe-node binary (default: the one beside this lathe, else the first on PATH)
    #[arg(long, value_name = "PATH")]
    pub(crate) node_bin: Option<PathBuf>,
    /// How long to wait for every instance of the topology to run before listing those that do not
    #[arg(long, value_name = "SECONDS", default_value_t = 90)]
    pub(crate) tasks_timeout: u64,
    /// The path shown in the `curl` line of the topology's entry points
    #[arg(long, value_name = "PATH", default_value = "/get/index")]
    pub(crate) try_path: String,
    /// Start every node with --enable-chaos (failure drills: POST /v1/actors/kill)
    #[arg(long, env = "LATHE_ENABLE_CHAOS")]
    pub(crate) enable_chaos: bool,
    /// Start every node with --acl (REST access by token). Once the nodes serve, `lathe up`
    /// bootstraps the ACL and prints the management token (once), or, when the cluster was
    /// bootstrapped before (a reused --data-dir), uses --token / LATHE_TOKEN
    #[arg(long, env = "LATHE_ACL")]
    pub(crate) acl: bool,
    /// Also start Prometheus (Debian's `prometheus`) on a free loopback port, scraping every node
    /// (http_sd through local-0), with the alert rules and the console of --prometheus-config
    #[arg(long)]
    pub(crate) prometheus: bool,
    /// Where prometheus.yml, rules/ and consoles/ are
    #[arg(long, value_name = "DIR", default_value = "config/prometheus")]
    pub(crate) prometheus_config: PathBuf,
    /// The prometheus binary (default: the first on PATH)
    #[arg(long, value_name = "PATH")]
    pub(crate) prometheus_bin: Option<PathBuf>,
    /// Every node serves REST over HTTPS with this PEM certificate (give --ca too, so that
    /// `lathe up` trusts it)
    #[arg(long, env = "LATHE_TLS_CERT", value_name = "PEM", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert
    #[arg(long, env = "LATHE_TLS_KEY", value_name = "PEM", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    /// Every node requires REST clients' certificates signed by this PEM CA (give --cert/--key
    /// too, for `lathe up`'s own requests)
    #[arg(
        long,
        env = "LATHE_TLS_CLIENT_CA",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    pub(crate) tls_client_ca: Option<PathBuf>,
}

/// Why `lathe up` stops before a signal asks it to.
#[derive(Debug)]
pub(crate) enum UpError {
    /// Bad flags, a busy port, no binary, an unreadable file: exit 2.
    Usage(String),
    /// The server refused the topology (400): exit 2.
    Refused(String),
    /// The cluster did not come up: exit 1.
    Failed(String),
    /// A signal arrived while waiting: not an error.
    Interrupted,
}

impl UpError {
    fn exit_code(&self) -> ExitCode {
        match self {
            UpError::Usage(_) | UpError::Refused(_) => ExitCode::from(2),
            UpError::Failed(_) => ExitCode::FAILURE,
            UpError::Interrupted => ExitCode::SUCCESS,
        }
    }
}

impl fmt::Display for UpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpError::Usage(m) | UpError::Refused(m) | UpError::Failed(m) => f.write_str(m),
            UpError::Interrupted => f.write_str("interrupted"),
        }
    }
}

/// Runs `lathe up` to the end and returns its exit code; `token` is the global `--token`.
pub(crate) fn run(args: &UpArgs, token: Option<&str>) -> ExitCode {
    let (signals, plan, topology) = match prepare(args) {
        Ok(prepared) => prepared,
        Err(err) => {
            say_err!("lathe up: {err}");
            return err.exit_code();
        }
    };
    let mut prometheus = None;
    if args.prometheus {
        let started = prometheus::Prometheus::start(
            plan.nodes[0].http_addr,
            &data_dir(&plan),
            &args.prometheus_config,
            args.prometheus_bin.as_deref(),
        );
        match started {
            Ok(started) => prometheus = Some(started),
            Err(err) => {
                say_err!("lathe up: {err}");
                return err.exit_code();
            }
        }
    }
    print_intro(&plan);
    if let Some(prometheus) = &prometheus {
        say!(
            "lathe up: Prometheus at {} (its output goes to {})",
            prometheus.url,
            prometheus.log.display()
        );
    }
    let prometheus_url = prometheus.as_ref().map(|p| p.url.clone());
    let mut supervisor = Supervisor::new(plan);
    let token = token.map(str::to_string);
    let outcome = drive(
        &mut supervisor,
        &signals,
        args,
        topology,
        prometheus_url,
        token,
    );
    if let Err(err) = &outcome {
        if !matches!(err, UpError::Interrupted) {
            say_err!("lathe up: {err}");
        }
    }
    let running = supervisor.running_count();
    let nodes = if running == 1 { "node" } else { "nodes" };
    say!("lathe up: stopping {running} {nodes} (SIGTERM; a second Ctrl-C kills them now)");
    signals.take();
    let killed = supervisor.stop_all(STOP_GRACE, || signals.pending());
    if killed.is_empty() {
        say!("lathe up: every node stopped");
    } else {
        say!(
            "lathe up: killed {} (still running after SIGTERM)",
            killed.join(", ")
        );
    }
    if let Some(mut prometheus) = prometheus {
        prometheus.stop();
        say!("lathe up: Prometheus stopped");
    }
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => err.exit_code(),
    }
}

/// A topology file: its path and its TOML.
type TopologyFile = (PathBuf, String);

/// Everything checked before a process starts: signals, the binary, the cookie, free ports, the
/// topology file.
fn prepare(args: &UpArgs) -> Result<(Signals, ClusterPlan, Option<TopologyFile>), UpError> {
    let signals = Signals::install()?;
    let binary = plan::find_node_binary(args.node_bin.as_deref())?;
    let cookie = match &args.cookie {
        Some(cookie) if cookie.is_empty() => {
            return Err(UpError::Usage("--cookie: must not be empty".into()))
        }
        Some(cookie) => cookie.clone(),
        None => plan::random_cookie(),
    };
    let plan = ClusterPlan::new(args, binary, cookie)?;
    plan.check_ports_free()?;
    let topology = match &args.topology {
        Some(file) => {
            let source = std::fs::read_to_string(file).map_err(|err| {
                UpError::Usage(format!("--topology: cannot read {}: {err}", file.display()))
            })?;
            Some((file.clone(), source))
        }
        None => None,
    };
    Ok((signals, plan, topology))
}

/// The supervision loop: starts node 0, then the others once it serves, then (once all serve) the
/// deploy thread or the summary; until a signal.
fn drive(
    supervisor: &mut Supervisor,
    signals: &Signals,
    args: &UpArgs,
    topology: Option<TopologyFile>,
    prometheus_url: Option<String>,
    token: Option<String>,
) -> Result<(), UpError> {
    let started = Instant::now();
    let count = supervisor.plan().nodes.len();
    let stop_deploy = Arc::new(AtomicBool::new(false));
    let _stop_on_return = StopOnDrop(stop_deploy.clone());
    let mut topology = topology;
    let mut joiners_started = count == 1;
    let mut handed_over = false;
    let mut deploy: Option<JoinHandle<Result<(), UpError>>> = None;
    supervisor.start(0)?;
    loop {
        if signals.take() {
            say!("lathe up: signal received");
            return Ok(());
        }
        supervisor.tick()?;
        if !joiners_started && supervisor.has_served(0) {
            (1..count).try_for_each(|i| supervisor.start(i))?;
            joiners_started = true;
        }
        if !supervisor.all_served() && started.elapsed() > START_DEADLINE {
            return Err(UpError::Failed(format!(
                "not every node answered GET /v1/health within {} s; see the node.log files",
                START_DEADLINE.as_secs()
            )));
        }
        if supervisor.all_served() && !handed_over {
            handed_over = true;
            let plan = supervisor.plan().clone();
            let token = match args.acl {
                true => Some(acl_token(&plan, token.as_deref())?),
                false => token.clone(),
            };
            match topology.take() {
                Some((file, source)) => {
                    let deployer = Deployer {
                        client: Client::new(&plan.nodes[0].rest_url()).with_token(token.as_deref()),
                        names: plan.nodes.iter().map(|n| n.name.clone()).collect(),
                        file,
                        source,
                        tasks_deadline: Duration::from_secs(args.tasks_timeout),
                        try_path: args.try_path.clone(),
                        stop: stop_deploy.clone(),
                    };
                    let url = prometheus_url.clone();
                    let ready =
                        move |entries: &[String]| print_ready(&plan, entries, url.as_deref());
                    deploy = Some(std::thread::spawn(move || deployer.run(ready)));
                }
                None => print_ready(&plan, &[], prometheus_url.as_deref()),
            }
        }
        if deploy.as_ref().is_some_and(JoinHandle::is_finished) {
            match deploy.take().map(JoinHandle::join) {
                Some(Ok(Ok(()) | Err(UpError::Interrupted))) => {}
                Some(Ok(Err(err))) => return Err(err),
                _ => return Err(UpError::Failed("the deploy thread panicked".into())),
            }
        }
        std::thread::sleep(TICK);
    }
}

/// With `--acl`: bootstraps the cluster's ACL through node 0 and prints the management token,
/// or, when it was bootstrapped before, goes on with `--token`.
fn acl_token(plan: &ClusterPlan, token: Option<&str>) -> Result<String, UpError> {
    let client = Client::new(&plan.nodes[0].http_addr.to_string());
    match client.post_json("/v1/acl/bootstrap", &serde_json::json!({})) {
        Ok(reply) => {
            let secret = reply
                .body
                .get("secret")
                .and_then(|s| s.as_str())
                .unwrap_or("?");
            say!("lathe up: acl on; management token: {secret}");
            say!("lathe up: it is shown this once: keep it, and pass it as --token or LATHE_TOKEN");
            Ok(secret.to_string())
        }
        Err(crate::client::CliError::Server { status: 409, .. }) => {
            token.map(str::to_string).ok_or_else(|| {
                UpError::Usage(
                    "--acl: this cluster's acl was bootstrapped before (its data dir is reused): \
                     pass its management token with --token or LATHE_TOKEN"
                        .into(),
                )
            })
        }
        Err(err) => Err(UpError::Failed(format!(
            "--acl: cannot bootstrap: {}",
            err.one_line()
        ))),
    }
}

fn print_intro(plan: &ClusterPlan) {
    let registry = if plan.zookeeper {
        "ZooKeeper".to_string()
    } else {
        format!("the embedded store of {}", plan.nodes[0].name)
    };
    say!(
        "lathe up: starting {} nodes ({}), registry: {registry}",
        plan.nodes.len(),
        plan.binary.display()
    );
    let log = plan.nodes[0].log_path();
    let shown = log
        .display()
        .to_string()
        .replace(&plan.nodes[0].name, "local-<i>");
    say!("lathe up: each node's output goes to {shown}");
}

/// The `--data-dir` the nodes' directories are in.
fn data_dir(plan: &ClusterPlan) -> PathBuf {
    let first = &plan.nodes[0].data_dir;
    first.parent().unwrap_or(first).to_path_buf()
}

fn print_ready(plan: &ClusterPlan, entries: &[String], prometheus: Option<&str>) {
    let first = &plan.nodes[0];
    let others: Vec<String> = plan.nodes[1..].iter().map(|n| n.rest_url()).collect();
    let also = if others.is_empty() {
        String::new()
    } else {
        format!(" (also {})", others.join(", "))
    };
    say!("lathe up: ready");
    let status = if first.tls {
        format!("lathe --ca CA.pem --addr {} status", first.rest_url())
    } else if first.http_addr.to_string() == crate::DEFAULT_ADDR {
        "lathe status".to_string()
    } else {
        format!("lathe --addr {} status", first.http_addr)
    };
    let url = first.rest_url();
    say!("  REST API:  {url}{also}; try: {status}");
    say!("  dashboard: {url}/ui");
    say!("  metrics:   {url}/metrics");
    if let Some(url) = prometheus {
        say!("  Prometheus: {url} (console: {url}/consoles/lathe.html, alerts: {url}/alerts)");
    }
    entries.iter().for_each(|line| say!("  {line}"));
    say!("lathe up: Ctrl-C stops the {} nodes", plan.nodes.len());
}

/// Raises the deploy thread's stop flag when the supervision loop ends, however it ends.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}
