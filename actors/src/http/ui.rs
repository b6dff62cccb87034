//! `GET /ui`: the live dashboard — the cluster's members, the task instances by functional group,
//! the roll-outs and traffic shifts, and the supervision tree. One self-contained page (`ui.html`:
//! HTML, CSS and plain JavaScript, nothing loaded from elsewhere) built into the binary. It reads
//! `/v1/members`, `/v1/tasks`, `/v1/rollouts`, `/v1/shifts` and `/v1/tree` from the node that
//! served it, re-reads them (debounced) on every event of `/v1/watch/lathe` (roll-out and shift
//! records are under `/lathe` too), and every few seconds as a fallback.

use warp::http::header::{self, HeaderValue};
use warp::reply::Response;

/// The page, as built into the binary.
pub(crate) const PAGE: &str = include_str!("ui.html");

/// Only what the page itself needs: its inline script and style, requests to this node, and the
/// empty `data:` favicon (so browsers do not ask for `/favicon.ico`).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

pub(crate) fn is_ui_path(path: &str) -> bool {
    matches!(path, "/ui" | "/ui/")
}

pub(crate) fn page() -> Response {
    let mut response = Response::new(PAGE.into());
    let headers = response.headers_mut();
    let fixed = [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        // The page is small and changes with the binary: always ask again.
        (header::CACHE_CONTROL, "no-cache"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_reads_the_api_and_nothing_from_elsewhere() {
        for source in [
            "/v1/members",
            "/v1/tasks",
            "/v1/rollouts",
            "/v1/shifts",
            "/v1/tree",
            "/v1/watch/lathe",
        ] {
            assert!(PAGE.contains(&format!("\"{source}\"")), "{source}");
        }
        assert!(PAGE.contains("new EventSource(WATCH)"));
        // Data goes into the DOM as text only.
        for unsafe_sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
        ] {
            assert!(!PAGE.contains(unsafe_sink), "the page uses {unsafe_sink}");
        }
        for external in [
            "src=\"http",
            "href=\"http",
            "src=\"//",
            "href=\"//",
            "@import",
        ] {
            assert!(!PAGE.contains(external), "the page loads {external}...");
        }
    }

    #[test]
    fn the_page_is_html_that_is_never_cached_stale() {
        let response = page();
        assert_eq!(response.status(), 200);
        let header = |name| response.headers()[name].to_str().unwrap().to_string();
        assert_eq!(header(header::CONTENT_TYPE), "text/html; charset=utf-8");
        assert_eq!(header(header::CACHE_CONTROL), "no-cache");
        assert!(is_ui_path("/ui") && is_ui_path("/ui/"));
        assert!(!is_ui_path("/ui/x") && !is_ui_path("/uix"));
    }
}
