//! Condition polling for tests: wait until something holds, never sleep a fixed time.
//!
//! ```
//! use std::time::Duration;
//! use lathe_tests::wait::wait_until;
//!
//! let mut attempts = 0;
//! // bool: wait until true
//! wait_until("three attempts", Duration::from_secs(5), || { attempts += 1; attempts >= 3 });
//! // Option<T>: wait until Some, get the T
//! let n: u32 = wait_until("a number", Duration::from_secs(5), || Some(7));
//! // Result<T, E: Debug>: wait until Ok; on timeout the panic shows the last Err (the state observed)
//! let v: u32 = wait_until("an ok", Duration::from_secs(5), || if n == 7 { Ok(1) } else { Err("not yet") });
//! # assert_eq!(v, 1);
//! ```
//!
//! Async tests (a tokio runtime) use [`eventually`], which takes the same conditions from a future.

use std::fmt::Debug;
use std::future::Future;
use std::time::{Duration, Instant};

/// The pause between two checks of a condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// What a condition returns: whether it holds yet, and if not, what was observed instead.
pub trait Condition {
    /// What `wait_until` returns once the condition holds.
    type Output;
    /// `Ok(output)` when the condition holds, else `Err(what was observed)` for the timeout
    /// message.
    fn check(self) -> Result<Self::Output, String>;
}

impl Condition for bool {
    type Output = ();
    fn check(self) -> Result<(), String> {
        if self {
            Ok(())
        } else {
            Err("false".to_string())
        }
    }
}

impl<T> Condition for Option<T> {
    type Output = T;
    fn check(self) -> Result<T, String> {
        self.ok_or_else(|| "None".to_string())
    }
}

impl<T, E: Debug> Condition for Result<T, E> {
    type Output = T;
    fn check(self) -> Result<T, String> {
        self.map_err(|observed| format!("{observed:?}"))
    }
}

/// Calls `condition` every [`POLL_INTERVAL`] until it holds (`true`, `Some(T)` or `Ok(T)`) and
/// returns its output.
///
/// # Panics
/// When `deadline` passes first: the message names `what`, the time waited, the number of checks
/// and the last observed state (for `Result` conditions, the `Debug` of the last `Err`).
pub fn wait_until<C: Condition>(
    what: &str,
    deadline: Duration,
    mut condition: impl FnMut() -> C,
) -> C::Output {
    let started = Instant::now();
    let mut checks = 0u64;
    loop {
        checks += 1;
        let observed = match condition().check() {
            Ok(output) => return output,
            Err(observed) => observed,
        };
        let elapsed = started.elapsed();
        if elapsed >= deadline {
            panic!(
                "timed out after {:.1}s ({checks} checks) waiting for {what}; last observed: \
                    {observed}",
                elapsed.as_secs_f64()
            );
        }
        std::thread::sleep(POLL_INTERVAL.min(deadline - elapsed));
    }
}

/// Like [`wait_until`], but returns the last observed state as `Err` instead of panicking on
/// timeout (for tests that check that something does *not* happen, or that handle the timeout
/// themselves).
pub fn try_wait_until<C: Condition>(
    deadline: Duration,
    mut condition: impl FnMut() -> C,
) -> Result<C::Output, String> {
    let started = Instant::now();
    loop {
        let observed = match condition().check() {
            Ok(output) => return Ok(output),
            Err(observed) => observed,
        };
        let elapsed = started.elapsed();
        if elapsed >= deadline {
            return Err(observed);
        }
        std::thread::sleep(POLL_INTERVAL.min(deadline - elapsed));
    }
}

/// [`wait_until`] for async tests: awaits `condition()` every [`POLL_INTERVAL`] (sleeping on the
/// tokio timer, never blocking the runtime) until it holds, and returns its output.
///
/// # Panics
/// When `deadline` passes first, with the same message as [`wait_until`].
pub async fn eventually<C, F, Fut>(what: &str, deadline: Duration, mut condition: F) -> C::Output
where
    C: Condition,
    F: FnMut() -> Fut,
    Fut: Future<Output = C>,
{
    let started = Instant::now();
    let mut checks = 0u64;
    loop {
        checks += 1;
        let observed = match condition().await.check() {
            Ok(output) => return output,
            Err(observed) => observed,
        };
        let elapsed = started.elapsed();
        if elapsed >= deadline {
            panic!(
                "timed out after {:.1}s ({checks} checks) waiting for {what}; last observed: \
                    {observed}",
                elapsed.as_secs_f64()
            );
        }
        tokio::time::sleep(POLL_INTERVAL.min(deadline - elapsed)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_output_once_the_condition_holds() {
        let mut calls = 0;
        let value = wait_until("the third call", Duration::from_secs(5), || {
            calls += 1;
            (calls == 3).then_some(calls * 10)
        });
        assert_eq!(value, 30);
    }

    #[test]
    fn timeout_messages_name_what_and_the_last_observed_state() {
        let panic = std::panic::catch_unwind(|| {
            let mut n = 0;
            wait_until(
                "the registry to converge",
                Duration::from_millis(100),
                || {
                    n += 1;
                    Err::<(), _>(format!("version {n}"))
                },
            )
        })
        .unwrap_err();
        let message = panic.downcast_ref::<String>().unwrap();
        assert!(
            message.contains("waiting for the registry to converge"),
            "{message}"
        );
        assert!(message.contains("last observed: \"version "), "{message}");
        assert!(message.starts_with("timed out after 0.1s"), "{message}");
    }

    #[test]
    fn bool_conditions_report_false() {
        let panic =
            std::panic::catch_unwind(|| wait_until("never", Duration::from_millis(30), || false))
                .unwrap_err();
        let message = panic.downcast_ref::<String>().unwrap();
        assert!(
            message.ends_with("waiting for never; last observed: false"),
            "{message}"
        );
    }

    #[test]
    fn eventually_awaits_the_condition_until_it_holds() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let mut calls = 0;
        let value = runtime.block_on(eventually(
            "the second call",
            Duration::from_secs(5),
            || {
                calls += 1;
                let seen = calls;
                async move { (seen == 2).then_some(seen) }
            },
        ));
        assert_eq!(value, 2);
        let panic = std::panic::catch_unwind(|| {
            runtime.block_on(eventually("never", Duration::from_millis(30), || async {
                false
            }))
        })
        .unwrap_err();
        let message = panic.downcast_ref::<String>().unwrap();
        assert!(
            message.ends_with("waiting for never; last observed: false"),
            "{message}"
        );
    }

    #[test]
    fn try_wait_until_returns_the_last_state() {
        let result = try_wait_until(Duration::from_millis(30), || None::<u8>);
        assert_eq!(result, Err("None".to_string()));
        assert_eq!(
            try_wait_until(Duration::from_millis(30), || Ok::<_, ()>(5)),
            Ok(5)
        );
    }
}
