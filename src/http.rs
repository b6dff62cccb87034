//! [`HttpTask`]: the batteries-included task for synchronous services.
//!
//! Lathe binds a port for each instance, registers its endpoint for service discovery, and calls
//! [`HttpTask::handle`] for every request. A load balancer forwards with
//! [`TaskContext::forward`], which picks a live instance of the target group and stamps the
//! response with `X-Lathe-Task` and `X-Lathe-Version` of the instance that produced it.

use async_trait::async_trait;
use bytes::Bytes;

use crate::context::TaskContext;
use crate::task::TaskResult;

/// An HTTP request as a task sees it: the body is read in full.
pub type Request = http::Request<Bytes>;
/// An HTTP response as a task returns it.
pub type Response = http::Response<Bytes>;

/// Names the instance that produced a response: `<group>/<index>`.
pub const TASK_HEADER: &str = "x-lathe-task";
/// The crate version of the instance that produced a response.
pub const VERSION_HEADER: &str = "x-lathe-version";

/// A synchronous service: one `handle` call per request, many at once.
#[async_trait]
pub trait HttpTask: Send + Sync + 'static {
    /// Called once before the instance takes requests; an error fails the start.
    async fn start(&self, _ctx: &TaskContext) -> TaskResult {
        Ok(())
    }

    /// Answers one request.
    async fn handle(&self, ctx: &TaskContext, request: Request) -> Response;

    /// Called once when the instance stops, after it stopped taking requests.
    async fn stop(&self, _ctx: &TaskContext) {}
}

/// A response with `status` and a plain-text `body`.
pub fn text(status: u16, body: impl Into<Bytes>) -> Response {
    let mut response = http::Response::new(body.into());
    *response.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A response with `status` and a JSON `body` (`{"error": "..."}` for Lathe's own errors).
pub fn json(status: u16, body: &serde_json::Value) -> Response {
    let mut response = text(status, body.to_string());
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// Helpers on requests.
pub trait RequestExt {
    /// The non-empty segments of the path: `/get/index` → `["get", "index"]`.
    fn path_segments(&self) -> Vec<&str>;
}

impl RequestExt for Request {
    fn path_segments(&self) -> Vec<&str> {
        self.uri()
            .path()
            .split('/')
            .filter(|s| !s.is_empty())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_and_text_responses() {
        let request = http::Request::get("/get/index?x=1")
            .body(Bytes::new())
            .unwrap();
        assert_eq!(request.path_segments(), vec!["get", "index"]);
        let response = text(400, "invalid request");
        assert_eq!(response.status(), 400);
        assert_eq!(response.body(), &Bytes::from_static(b"invalid request"));
    }
}
