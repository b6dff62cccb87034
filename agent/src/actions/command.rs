//! Running a configured command (`check`, `reload`): through `sh -c`, `{file}` replaced by the
//! shell-quoted path, with a timeout (the process is killed past it), stdout and stderr captured.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use super::ActionError;

/// How much of a failed command's output an error message keeps.
const OUTPUT_TAIL: usize = 1500;

/// `'...'` quoting for `sh`.
pub fn shell_quote(raw: &str) -> String {
    format!("'{}'", raw.replace('\'', r"'\''"))
}

/// `template` with `{file}` replaced by the quoted `file`.
pub fn expand(template: &str, file: Option<&Path>) -> String {
    match file {
        Some(file) => template.replace("{file}", &shell_quote(&file.display().to_string())),
        None => template.to_string(),
    }
}

/// Runs `command` (already expanded) with `sh -c`; `Err` names the command, its exit status and
/// the tail of its output.
pub async fn run(command: &str, timeout: Duration) -> Result<String, ActionError> {
    run_program("sh", &["-c", command], command, timeout).await
}

/// Runs `program` with `args` (no shell); `command` names it in errors.
pub async fn run_program(
    program: &str,
    args: &[&str],
    command: &str,
    timeout: Duration,
) -> Result<String, ActionError> {
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| ActionError::Spawn {
            command: command.to_string(),
            source,
        })?;
    let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(source)) => {
            return Err(ActionError::Wait {
                command: command.to_string(),
                source,
            })
        }
        Err(_) => {
            return Err(ActionError::Timeout {
                command: command.to_string(),
                timeout,
            })
        }
    };
    let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stdout));
    let text = tail(text.trim());
    if output.status.success() {
        Ok(text)
    } else {
        Err(ActionError::Exited {
            command: command.to_string(),
            status: output.status,
            output: text,
        })
    }
}

fn tail(text: &str) -> String {
    if text.len() <= OUTPUT_TAIL {
        return text.to_string();
    }
    let mut start = text.len() - OUTPUT_TAIL;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &text[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_quoted() {
        let path = Path::new("/tmp/it's here.cfg");
        assert_eq!(
            expand("check -f {file}", Some(path)),
            r"check -f '/tmp/it'\''s here.cfg'"
        );
    }

    #[tokio::test]
    async fn failures_carry_status_and_output() {
        assert_eq!(
            run("echo fine", Duration::from_secs(5)).await.unwrap(),
            "fine"
        );
        let err = run("echo broken >&2; exit 3", Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ActionError::Exited { status, output, .. }
                if status.code() == Some(3) && output == "broken"),
            "{err}"
        );
        assert!(err.to_string().contains("exit status: 3"), "{err}");
        let err = run("sleep 5", Duration::from_millis(50)).await.unwrap_err();
        assert!(matches!(err, ActionError::Timeout { .. }), "{err}");
        assert!(err.to_string().contains("did not finish"), "{err}");
    }
}
