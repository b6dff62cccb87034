//! The connections that have not sent a request yet, oldest first (of the REST port, or of one
//! task instance's HTTP server). When the port is at its connection cap, the oldest of them is
//! closed to let a new connection in: clients that open
//! connections and send nothing, or half a request head (slowloris), cannot lock others out —
//! they only take each other's places. A connection leaves the list at its first request; one
//! idle between requests is closed by the header timeout instead.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// How long a new connection at the cap waits for the place of the connection it evicted.
const EVICTION_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The connections without a request yet, by age.
#[derive(Default)]
pub(crate) struct Unproven {
    waiting: Mutex<BTreeMap<u64, Arc<Notify>>>,
    next: AtomicU64,
}

impl Unproven {
    /// A new connection: its mark, and what tells it to close when it is evicted.
    pub(crate) fn admit(self: &Arc<Self>) -> (Mark, Arc<Notify>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let close = Arc::new(Notify::new());
        self.lock().insert(id, close.clone());
        let mark = Mark {
            id,
            set: self.clone(),
            proven: Arc::new(AtomicBool::new(false)),
        };
        (mark, close)
    }

    /// Tells the oldest connection without a request to close; whether there was one.
    pub(crate) fn evict_oldest(&self) -> bool {
        let oldest = self.lock().pop_first();
        match oldest {
            Some((_, close)) => {
                close.notify_one();
                true
            }
            None => false,
        }
    }

    /// At the cap of `permits`: closes the oldest connection without a request, if there is one,
    /// and waits (a moment) for its permit.
    pub(crate) async fn make_room(&self, permits: &Arc<Semaphore>) -> Option<OwnedSemaphorePermit> {
        if !self.evict_oldest() {
            return None;
        }
        let freed = tokio::time::timeout(EVICTION_WAIT, permits.clone().acquire_owned()).await;
        freed.ok().and_then(Result::ok)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Notify>>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One connection's place in [`Unproven`] until its first request (or its end).
#[derive(Clone)]
pub(crate) struct Mark {
    id: u64,
    set: Arc<Unproven>,
    proven: Arc<AtomicBool>,
}

impl Mark {
    /// The connection sent a request: it is no longer evicted.
    pub(crate) fn proven(&self) {
        if !self.proven.swap(true, Ordering::Relaxed) {
            self.set.lock().remove(&self.id);
        }
    }

    /// The connection ended.
    pub(crate) fn gone(&self) {
        self.proven();
    }
}

/// `service` that marks its connection proven at the first request.
#[derive(Clone)]
pub(crate) struct Marking<S> {
    pub(crate) inner: S,
    pub(crate) mark: Mark,
}

impl<S, R> tower_service::Service<R> for Marking<S>
where
    S: tower_service::Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        self.mark.proven();
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_connection_without_a_request_is_evicted_first() {
        let unproven = Arc::new(Unproven::default());
        let (first, first_close) = unproven.admit();
        let (second, second_close) = unproven.admit();
        let (third, _third_close) = unproven.admit();
        first.proven();
        assert_eq!(unproven.len(), 2);
        assert!(unproven.evict_oldest());
        // The second was told to close (a stored permit: `notified` returns at once).
        futures::executor::block_on(second_close.notified());
        second.gone();
        third.gone();
        assert_eq!(unproven.len(), 0);
        assert!(
            !unproven.evict_oldest(),
            "proven and ended ones are never evicted"
        );
        drop(first_close);
    }
}
