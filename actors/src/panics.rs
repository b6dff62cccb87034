//! Panics turned into errors where Lathe's own code must outlive one: a REST handler answers 500
//! and the scheduler's reconcile reports a failure (and runs again) instead of wedging its actor.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;

use crate::tasks::panic_message;

/// A panic caught by [`caught`]; its message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub(crate) struct Panic {
    pub(crate) message: String,
}

/// Runs `future` to completion; a panic inside it comes back as `Err(Panic)`.
///
/// Unwind safety is asserted: callers only keep state that a panic cannot leave half-changed
/// (owned inputs, and actor state touched again only through messages).
pub(crate) async fn caught<F: Future>(future: F) -> Result<F::Output, Panic> {
    AssertUnwindSafe(future)
        .catch_unwind()
        .await
        .map_err(|panic| Panic {
            message: panic_message(&*panic),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_becomes_its_message_and_a_value_passes_through() {
        assert_eq!(caught(async { 7 }).await, Ok(7));
        let index = 1015;
        let panicked = caught(async move {
            tokio::task::yield_now().await;
            if index > 0 {
                panic!("invalid registry path of {index} bytes");
            }
            0
        })
        .await;
        assert_eq!(
            panicked,
            Err(Panic {
                message: "invalid registry path of 1015 bytes".to_string()
            })
        );
    }
}
