//! Stopping the service processes the harness starts (ZooKeeper, the Kafka broker): SIGTERM so
//! they save their data, SIGKILL if they have not exited by a deadline.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;

use crate::wait::try_wait_until;

/// SIGTERMs `child` and waits up to `deadline` for it to exit, then SIGKILLs it; `what` names it
/// in errors.
pub fn terminate(mut child: Child, what: &str, deadline: Duration) -> anyhow::Result<()> {
    let terminated = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if terminated.is_ok() && try_wait_until(deadline, || child.try_wait().ok().flatten()).is_ok() {
        return Ok(());
    }
    child.kill().ok();
    child
        .wait()
        .with_context(|| format!("failed to wait for {what}"))?;
    Ok(())
}
