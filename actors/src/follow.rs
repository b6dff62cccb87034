//! Turning a `tokio::sync::watch` value into actor messages: the current value at once, then one
//! message per change, until the actor or the sender is gone. Actors learn of membership, fences
//! and demand this way instead of polling.

use ractor::{ActorRef, Message};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Casts `to_message(value)` to `actor` for the value `receiver` holds now and after every change.
pub(crate) fn follow<T, M>(
    mut receiver: watch::Receiver<T>,
    actor: ActorRef<M>,
    to_message: impl Fn(T) -> M + Send + 'static,
) -> JoinHandle<()>
where
    T: Clone + Send + Sync + 'static,
    M: Message,
{
    tokio::spawn(async move {
        loop {
            let current = receiver.borrow_and_update().clone();
            if actor.cast(to_message(current)).is_err() {
                return;
            }
            if receiver.changed().await.is_err() {
                return;
            }
        }
    })
}
