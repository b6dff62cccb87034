//! lathe-agent keeps a real Varnish's director equal to the seed's front-page instances (both
//! versions) on real nodes while v4.2.1 scales 5 → 7 → 3: `vcl.load` + `vcl.use` each time,
//! older VCLs discarded, and a request loop through Varnish sees no failed request.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::seed::{deploy, deploy_seed, endpoints, with_tasks, RequestLoop, CONVERGE};
use crate::support::varnish::Varnish;
use crate::support::{free_addr, registry_list, repo_file, toml_str, AgentProcess};
use lathe_tests::node::Cluster;
use lathe_tests::scenario::zk_cluster;
use lathe_tests::wait::wait_until;

const V421: &str = "task.http.frontpage.v4-2-1";
const V422: &str = "task.http.frontpage.v4-2-2";
/// The issue's goal is one second; the test allows five on a loaded two-core machine.
const FOLLOW: Duration = Duration::from_secs(5);

fn agent_config(cluster: &Cluster, varnish: &Varnish, dir: &Path, status: &str) -> String {
    format!(
        r#"
registry = {registry}
[status]
listen = {status}
[[watch]]
name = "frontpage"
prefix = "/lathe/endpoints/task/http/frontpage"
wait = {{ min = "100ms", max = "1s" }}
retry = {{ min = "200ms", max = "1s" }}
[[watch.action]]
type = "varnish"
template = {template}
admin = {admin}
secret = {secret}
vcl_dir = {vcl_dir}
# vcl.load compiles (and refuses) the VCL itself; skipping the separate `varnishd -C` halves the
# switch time, which keeps the timing assertion safe on a busy machine.
check = ""
vars = {{ pass = true }}
"#,
        registry = registry_list(&cluster.http_addrs()),
        status = toml_str(status),
        template = toml_str(
            repo_file("config/agent-templates/varnish.vcl.j2")
                .display()
                .to_string()
        ),
        admin = toml_str(&varnish.admin),
        secret = toml_str(varnish.secret.display().to_string()),
        vcl_dir = toml_str(dir.join("vcl").display().to_string()),
    )
}

fn frontpages(addr: &str) -> Result<BTreeSet<String>, String> {
    let mut all = endpoints(addr, V421)?;
    all.extend(endpoints(addr, V422)?);
    Ok(all)
}

/// Redeploys with `n` v4.2.1 instances and waits until Varnish's VCL in use has exactly the
/// front pages; returns the time from the registry showing the new set to Varnish using it.
fn scale(cluster: &Cluster, source: &str, varnish: &Varnish, n: u32) -> Duration {
    let addr = cluster.node(0).http_addr().to_string();
    deploy(&addr, &with_tasks(source, V421, n));
    let mut since: Option<(BTreeSet<String>, Instant)> = None;
    wait_until(
        &format!("varnish to use {} front pages", n + 5),
        CONVERGE,
        || {
            let registry = frontpages(&addr)?;
            if endpoints(&addr, V421)?.len() != n as usize {
                return Err(format!("registry has {registry:?}"));
            }
            if since.as_ref().is_none_or(|(seen, _)| *seen != registry) {
                since = Some((registry.clone(), Instant::now()));
            }
            let used = varnish.backends()?;
            if used == registry {
                Ok(())
            } else {
                Err(format!("varnish uses {used:?}, registry has {registry:?}"))
            }
        },
    );
    since.expect("the registry was read").1.elapsed()
}

#[test]
fn varnish_director_follows_the_front_pages_without_failed_requests() {
    let (_zk, cluster) = zk_cluster(3, "agent-varnish");
    let source = deploy_seed(&cluster);
    let dir = tempfile::tempdir().expect("a scratch dir");
    let boot = dir.path().join("boot.vcl");
    std::fs::write(
        &boot,
        "vcl 4.1;\nbackend none { .host = \"127.0.0.1\"; .port = \"1\"; }\n",
    )
    .expect("write the boot VCL");
    let varnish = Varnish::start(&boot, dir.path());
    let status = free_addr();
    let agent = AgentProcess::start(
        dir.path(),
        "cache",
        &status,
        &agent_config(&cluster, &varnish, dir.path(), &status),
    );

    let addr = cluster.node(0).http_addr().to_string();
    let ten = frontpages(&addr).expect("front-page endpoints");
    assert_eq!(ten.len(), 10);
    wait_until(
        "varnish to use the 10 front pages",
        Duration::from_secs(60),
        || varnish.backends().is_ok_and(|b| b == ten),
    );

    let reloads_before = agent.metric("lathe_agent_reloads_total");
    let requests = RequestLoop::start(format!("http://{}/get/index", varnish.http), ":)");
    let grow = scale(&cluster, &source, &varnish, 7);
    println!("v4.2.1 5 → 7: varnish followed {grow:?} after the registry changed");
    assert!(grow <= FOLLOW, "5 → 7 took {grow:?}");
    let shrink = scale(&cluster, &source, &varnish, 3);
    println!("v4.2.1 7 → 3: varnish followed {shrink:?} after the registry changed");
    assert!(shrink <= FOLLOW, "7 → 3 took {shrink:?}");
    let settle = Instant::now();
    wait_until("a few more requests", Duration::from_secs(30), || {
        settle.elapsed() > Duration::from_millis(500)
    });
    let report = requests.finish();
    println!(
        "requests through varnish during the changes: {} ok, {} failed",
        report.ok, report.failed
    );
    assert!(report.ok > 50, "too few requests went through: {report:?}");
    assert_eq!(report.failed, 0, "failed requests: {:?}", report.errors);

    // Old VCLs are discarded: besides the boot VCL, only the one in use remains available.
    let active = varnish.active_vcl().expect("the VCL in use");
    assert!(active.starts_with("lathe_"), "{active}");
    let list = varnish.adm(&["vcl.list"]).expect("vcl.list");
    let stale: Vec<&str> = list
        .lines()
        .filter(|l| l.starts_with("available") && l.contains("lathe_"))
        .collect();
    assert!(stale.is_empty(), "old VCLs not discarded:\n{list}");
    let action = agent.watch("frontpage")["actions"][0].clone();
    assert_eq!(action["ok"], true, "{action:#}");
    // Each of the two changes needs a VCL of its own (Varnish was seen serving each set), so at
    // least two switches since; more when a change reached the agent in steps.
    let switches = agent.metric("lathe_agent_reloads_total") - reloads_before;
    assert!(switches >= 2.0, "one vcl.use per change: {switches}");
}
