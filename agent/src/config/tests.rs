//! Configuration tests: the documented example loads, errors name position and key, environment
//! overrides apply.

use std::path::{Path, PathBuf};

use super::*;

fn templates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config")
}

fn parse(source: &str) -> Result<AgentConfig, ConfigError> {
    load_str("agent.toml", source, Some(templates_dir()))
}

const MINIMAL: &str = r#"
registry = ["127.0.0.1:7500"]
[[watch]]
prefix = "/lathe/endpoints/task/http/lb"
[[watch.action]]
type = "template"
template = "agent-templates/upstreams.conf.j2"
destination = "/tmp/out.conf"
"#;

#[test]
fn the_documented_example_loads() {
    let file = templates_dir().join("agent.toml");
    let config = load(&file, Vec::new()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.watches.len(), 2);
    assert_eq!(config.watches[0].actions[0].kind, ActionType::Haproxy);
    assert_eq!(config.watches[0].actions[0].backends["lb"], "task.http.lb");
    assert_eq!(config.watches[1].actions.len(), 2);
    assert_eq!(config.agent_name(), "edge-1");
}

#[test]
fn defaults_fill_the_rest() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.mode, StreamMode::Auto);
    assert_eq!(config.watches[0].wait.min, Duration::from_millis(200));
    assert_eq!(
        config.watches[0].watch_name(),
        "/lathe/endpoints/task/http/lb"
    );
    assert_eq!(config.agent_name(), "agent-7600");
    assert!(config.watches[0].actions[0]
        .template_source
        .contains("upstream"));
}

fn error_of(source: &str) -> String {
    parse(source).unwrap_err().0
}

#[test]
fn errors_name_the_position_and_the_key() {
    let unknown = error_of(&MINIMAL.replace("[[watch]]", "colour = 1\n[[watch]]"));
    assert!(unknown.starts_with("agent.toml:3:1:"), "{unknown}");
    assert!(unknown.contains("unknown field `colour`"), "{unknown}");

    let duration = error_of(&MINIMAL.replace(
        "[[watch.action]]",
        "wait = { min = \"fast\", max = \"1s\" }\n[[watch.action]]",
    ));
    assert!(
        duration.starts_with("agent.toml:5:16: watch[0].wait.min:"),
        "{duration}"
    );
    assert!(duration.contains("invalid duration \"fast\""), "{duration}");

    let window = error_of(&MINIMAL.replace(
        "[[watch.action]]",
        "wait = { min = \"3s\", max = \"1s\" }\n[[watch.action]]",
    ));
    assert!(
        window.contains("watch[0].wait: min (3s) is longer than max (1s)"),
        "{window}"
    );

    let registry = error_of(&MINIMAL.replace("[\"127.0.0.1:7500\"]", "[]"));
    assert!(
        registry.starts_with("agent.toml:2:12: registry:"),
        "{registry}"
    );

    let addr = error_of(&MINIMAL.replace("127.0.0.1:7500", "localhost"));
    assert!(
        addr.contains("registry[0]: invalid address \"localhost\""),
        "{addr}"
    );

    let prefix = error_of(&MINIMAL.replace("/task/http/lb", "/task/h ttp"));
    assert!(
        prefix.contains("watch[0].prefix: invalid registry path"),
        "{prefix}"
    );

    let syntax = error_of("registry = [\n");
    assert!(
        syntax.starts_with("agent.toml:1:13: unclosed array"),
        "{syntax}"
    );
}

#[test]
fn action_keys_depend_on_the_type() {
    let misplaced =
        error_of(&MINIMAL.replace("type = \"template\"", "type = \"template\"\nslots = 4"));
    assert!(
        misplaced.contains("watch[0].action[0]: key `slots` does not apply to type = \"template\""),
        "{misplaced}"
    );
    let missing = error_of(&MINIMAL.replace("destination = \"/tmp/out.conf\"", ""));
    assert!(
        missing.contains("type = \"template\" needs key `destination`"),
        "{missing}"
    );
    let kind = error_of(&MINIMAL.replace("\"template\"\n", "\"nginx\"\n"));
    assert!(
        kind.contains("watch[0].action[0].type: unknown variant `nginx`"),
        "{kind}"
    );
    let template = error_of(&MINIMAL.replace("upstreams.conf.j2", "nope.j2"));
    assert!(
        template.contains("key `template`: cannot read"),
        "{template}"
    );
}

#[test]
fn broken_templates_are_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.j2"), "line one\n{% for x in %}\n").unwrap();
    let source = MINIMAL.replace("agent-templates/upstreams.conf.j2", "bad.j2");
    let error = load_str("agent.toml", &source, Some(dir.path().to_path_buf()))
        .unwrap_err()
        .0;
    assert!(
        error.contains("watch[0].action[0]: key `template`:"),
        "{error}"
    );
    assert!(error.contains("bad.j2:2: syntax error"), "{error}");
}

#[test]
fn environment_overrides_the_main_keys() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.toml");
    let source = MINIMAL.replace(
        "agent-templates/upstreams.conf.j2",
        &templates_dir()
            .join("agent-templates/upstreams.conf.j2")
            .display()
            .to_string(),
    );
    std::fs::write(&file, source).unwrap();
    let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let config = load(
        &file,
        env(&[
            ("LATHE_AGENT_REGISTRY", "127.0.0.1:1, 127.0.0.1:2"),
            ("LATHE_AGENT_STATUS_LISTEN", "127.0.0.1:9999"),
            ("LATHE_AGENT_MODE", "poll"),
            ("PATH", "/bin"),
        ]),
    )
    .unwrap();
    assert_eq!(config.registry.len(), 2);
    assert_eq!(config.mode, StreamMode::Poll);
    assert_eq!(config.agent_name(), "agent-9999");
    let bad = load(&file, env(&[("LATHE_AGENT_MODE", "push")]))
        .unwrap_err()
        .0;
    assert_eq!(
        bad,
        "LATHE_AGENT_MODE: must be auto, sse or poll, not \"push\""
    );
    let unknown = load(&file, env(&[("LATHE_AGENT_REGISTRI", "x")]))
        .unwrap_err()
        .0;
    assert!(
        unknown.starts_with("LATHE_AGENT_REGISTRI: unknown variable"),
        "{unknown}"
    );
}

mod properties {
    //! Random edits of a valid file: parsed, or refused with `FILE:LINE:COL` and a message —
    //! never a panic.

    use proptest::prelude::*;

    use super::{parse, MINIMAL};

    fn odd_value() -> impl Strategy<Value = String> {
        prop_oneof![
            "\"[ -~]{0,16}\"",
            "-?[0-9]{1,20}",
            "\\[\"[ -~&&[^\"\\\\]]{0,12}\"\\]",
            Just("{ min = \"1ms\", max = \"0s\" }".to_string()),
            Just("true".to_string()),
            "[ -~]{0,10}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn edited_configs_parse_or_name_the_problem(
            line in 0usize..12,
            key in "(registry|prefix|type|template|destination|mode|name|peers|retry|wait\
                    |[a-z]{1,6})",
            value in odd_value(),
        ) {
            let mut lines: Vec<String> = MINIMAL.lines().map(str::to_string).collect();
            let edit = format!("{key} = {value}");
            let at = line.min(lines.len());
            if at < lines.len() && lines[at].contains('=') {
                lines[at] = edit;
            } else {
                lines.insert(at, edit);
            }
            if let Err(error) = parse(&lines.join("\n")) {
                let message = error.to_string();
                prop_assert!(message.starts_with("agent.toml"), "{}", message);
                prop_assert!(message.len() > "agent.toml".len() + 10, "{}", message);
            }
        }
    }
}
