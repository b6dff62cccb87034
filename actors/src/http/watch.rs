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
    let subscription = context.registry.subscribe(&prefix, query.index).await?;
    let start = query.index.unwrap_or_else(|| context.registry.index());
    let events = event_stream(context.registry.clone(), prefix, subscription, start);
    let reply = warp::sse::reply(
        warp::sse::keep_alive()
            .interval(Duration::from_secs(15))
            .stream(events),
    );
    Ok(with_index(reply.into_response(), start))
}

struct WatchState {
    registry: RegistryHandle,
    prefix: KeyPath,
    subscription: Option<Subscription>,
    last_index: u64,
}

fn event_stream(
    registry: RegistryHandle,
    prefix: KeyPath,
    subscription: Subscription,
    last_index: u64,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    let state = WatchState {
        registry,
        prefix,
        subscription: Some(subscription),
        last_index,
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
            match subscription.next().await {
                Some(event) => {
                    state.last_index = state.last_index.max(event.index());
                    return Some((Ok(to_sse(event)), state));
                }
                None => state.subscription = None,
            }
        }
    })
}

fn to_sse(event: SubscriptionEvent) -> Event {
    let (id, data) = match event {
        SubscriptionEvent::Change(change) => {
            let data = serde_json::json!({
                "key": change.key,
                "value": change.value,
                "version": change.version,
                "op": change.op(),
            });
            (change.version, data)
        }
        SubscriptionEvent::Snapshot { entries, index } => {
            let data = serde_json::json!({ "op": "snapshot", "index": index, "entries": entries });
            (index, data)
        }
    };
    Event::default().id(id.to_string()).data(data.to_string())
}
