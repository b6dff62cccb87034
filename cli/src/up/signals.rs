//! The signals that stop `lathe up`: SIGINT (Ctrl-C), SIGTERM and SIGHUP (the terminal closed),
//! noted in a flag that the supervision loop polls; a second one while the nodes drain makes `lathe
//! up` SIGKILL them at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::UpError;

/// SIGINT, SIGTERM and SIGHUP, noted in a flag the loops poll.
pub(crate) struct Signals(Arc<AtomicBool>);

impl Signals {
    pub(crate) fn install() -> Result<Self, UpError> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let flag = Arc::new(AtomicBool::new(false));
        for signal in [SIGINT, SIGTERM, SIGHUP] {
            signal_hook::flag::register(signal, flag.clone())
                .map_err(|err| UpError::Failed(format!("cannot handle signal {signal}: {err}")))?;
        }
        Ok(Signals(flag))
    }

    /// Whether a signal arrived since the last call; clears it.
    pub(crate) fn take(&self) -> bool {
        self.0.swap(false, Ordering::SeqCst)
    }

    pub(crate) fn pending(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}
