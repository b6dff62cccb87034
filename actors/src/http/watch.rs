//! `GET /v1/watch/{path}`: Server-Sent Events, one per change at or under the path.
//!
//! `?index=N` resumes after N with no gap, or starts with one snapshot event when N is older than
//! what the node keeps in memory. If the node's subscription ends (a shard restarted, or this
//! client read too slowly), the stream re-subscribes from the last index it sent, so the client
//! sees no gap either way.

use std::convert::Infallible;
use std::time::Duration;

use futures::Stream;
use lathe::KeyPath;
use warp::reply::Response;
use warp::sse::Event;
use warp::Reply;

use super::kv::{key_from, with_index};
use super::limits::Permit;
use super::query;
use super::{ApiContext, ApiError};
use crate::registry::{RegistryHandle, Subscription, SubscriptionEvent};

const PREFIX: &str = "/v1/watch";

pub(crate) fn is_watch_path(path: &str) -> bool {
    path == PREFIX || path.starts_with("/v1/watch/")
}

pub(crate) async fn handle(
    context: &ApiContext,
    path: &str,
    query: &str,
) -> Result<Response, ApiError> {
    let prefix = key_from(path, PREFIX)?;
    let query = query::parse(query, &["index"])?;
    let permit = context.limits.watcher()?;
    let subscription = context.registry.subscribe(&prefix, query.index).await?;
    let start = query.index.unwrap_or_else(|| context.registry.index());
    let events = event_stream(
        context.registry.clone(),
        prefix,
        subscription,
        start,
        permit,
    );
    let reply = warp::sse::reply(events);
    Ok(with_index(reply.into_response(), start))
}

/// A comment line goes out when this long passed without an event (checked every interval, so
/// the silence lasts at most twice this), so proxies and clients see the stream is alive.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

struct WatchState {
    registry: RegistryHandle,
    prefix: KeyPath,
    subscription: Option<Subscription>,
    last_index: u64,
    /// Fires every [`KEEP_ALIVE`]; re-armed when it fires, not on every event (one timer update
    /// per interval instead of one per event and watcher).
    keep_alive: std::pin::Pin<Box<tokio::time::Sleep>>,
    /// Whether an event went out since the keep-alive timer last fired.
    sent: bool,
    /// Counts the stream against `--max-watchers` while it lives.
    _permit: Permit,
}

fn event_stream(
    registry: RegistryHandle,
    prefix: KeyPath,
    subscription: Subscription,
    last_index: u64,
    permit: Permit,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    let state = WatchState {
        registry,
        prefix,
        subscription: Some(subscription),
        last_index,
        keep_alive: Box::pin(tokio::time::sleep(KEEP_ALIVE)),
        sent: false,
        _permit: permit,
    };
    futures::stream::unfold(state, |mut state| async move {
        loop {
            let subscription = match state.subscription.as_mut() {
                Some(subscription) => subscription,
                None => match state
                    .registry
                    .subscribe(&state.prefix, Some(state.last_index))
                    .await
                {
                    Ok(subscription) => state.subscription.insert(subscription),
                    // The registry is gone for good on this node: end the stream; the client
                    // reconnects (to this node or another) with the last index it saw.
                    Err(_) => return None,
                },
            };
            let next = tokio::select! {
                biased;
                next = subscription.next() => Some(next),
                () = &mut state.keep_alive => None,
            };
            match next {
                Some(Some(event)) => {
                    state.last_index = state.last_index.max(event.index());
                    state.sent = true;
                    return Some((Ok(to_sse(event)), state));
                }
                Some(None) => state.subscription = None,
                None => {
                    let deadline = tokio::time::Instant::now() + KEEP_ALIVE;
                    state.keep_alive.as_mut().reset(deadline);
                    if !std::mem::take(&mut state.sent) {
                        return Some((Ok(Event::default().comment("")), state));
                    }
                }
            }
        }
    })
}

fn to_sse(event: SubscriptionEvent) -> Event {
    match event {
        // Encoded once for every watcher of the change.
        SubscriptionEvent::Change(change) => Event::default()
            .id(change.version.to_string())
            .data(String::from_utf8_lossy(change.json())),
        SubscriptionEvent::Snapshot { entries, index } => {
            let data = serde_json::json!({ "op": "snapshot", "index": index, "entries": entries });
            Event::default()
                .id(index.to_string())
                .data(data.to_string())
        }
    }
}
