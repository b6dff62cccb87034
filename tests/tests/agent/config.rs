//! A bad lathe-agent configuration is one line naming the file position and the key (or the
//! variable), with exit code 2, before anything starts; `--check` accepts the documented example.

use std::process::{Command, Output, Stdio};

use crate::support::{agent_binary, free_addr, repo_file, toml_str};

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(agent_binary());
    command.args(args).stdin(Stdio::null());
    for (key, _) in std::env::vars() {
        if key.starts_with("LATHE_AGENT_") {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().copied());
    command.output().expect("run lathe-agent")
}

fn config(status: &str, wait: &str) -> String {
    format!(
        r#"registry = ["127.0.0.1:1"]
[status]
listen = {status}
[[watch]]
prefix = "/app"
wait = {wait}
[[watch.action]]
type = "template"
template = {template}
destination = "/tmp/never-written"
"#,
        status = toml_str(status),
        template = toml_str(
            repo_file("config/agent-templates/upstreams.conf.j2")
                .display()
                .to_string()
        ),
    )
}

fn assert_refused(output: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
    }
}

#[test]
fn bad_configurations_exit_2_naming_the_key() {
    let dir = tempfile::tempdir().expect("a scratch dir");
    let status = free_addr();
    let file = dir.path().join("bad.toml");
    let path = file.display().to_string();

    std::fs::write(&file, config(&status, r#"{ min = "fast", max = "1s" }"#)).unwrap();
    let output = run(&["--config", &path], &[]);
    assert_refused(
        &output,
        &[&format!(
            "{path}:6:16: watch[0].wait.min: invalid duration \"fast\""
        )],
    );
    // Nothing started: the status address is still free.
    std::net::TcpListener::bind(&status).expect("the status port was never bound");

    std::fs::write(
        &file,
        config(&status, "{ min = \"1s\", max = \"2s\", typo = 1 }"),
    )
    .unwrap();
    assert_refused(
        &run(&["--config", &path], &[]),
        &[&format!("{path}:6:"), "unknown field `typo`"],
    );

    std::fs::write(&file, config(&status, r#"{ min = "1s", max = "2s" }"#)).unwrap();
    assert!(run(&["--config", &path, "--check"], &[]).status.success());
    assert_refused(
        &run(&["--config", &path], &[("LATHE_AGENT_REGISTRY", "nowhere")]),
        &["LATHE_AGENT_REGISTRY: invalid address \"nowhere\""],
    );
    assert_refused(
        &run(&["--config", "/nonexistent/agent.toml"], &[]),
        &["/nonexistent/agent.toml: cannot read"],
    );
    assert_refused(&run(&[], &[]), &["--config"]);

    let example = repo_file("config/agent.toml").display().to_string();
    let checked = run(&["--config", &example, "--check"], &[]);
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
}
