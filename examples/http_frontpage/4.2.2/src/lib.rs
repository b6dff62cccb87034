//! `my::FrontPage`: `GET /get/index` answers 200 `:)`, anything else 400 `invalid request`.

pub mod my {
    use lathe::http::{text, HttpTask, Request, RequestExt, Response};
    use lathe::TaskContext;

    /// The seed's front page.
    #[derive(Debug, Default)]
    pub struct FrontPage;

    #[async_trait::async_trait]
    impl HttpTask for FrontPage {
        async fn handle(&self, _ctx: &TaskContext, request: Request) -> Response {
            match (
                request.method().as_str(),
                request.path_segments().as_slice(),
            ) {
                ("GET", ["get", "index"]) => text(200, ":)"),
                _ => text(400, "invalid request"),
            }
        }
    }
}

/// The task types of this crate, for a node's catalog.
pub fn tasks() -> Vec<lathe::TaskDescriptor> {
    vec![lathe::http_task!("my::FrontPage", my::FrontPage::default)]
}
