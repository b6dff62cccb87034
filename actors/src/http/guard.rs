//! What every request passes before its route: the browser checks (always) and, with `--acl`,
//! the token check.
//!
//! Browsers: a web page can make a browser send a cross-origin POST without asking first (a
//! "simple" request: form or `text/plain` body). So a state-changing request (POST, PUT, DELETE,
//! PATCH) is refused with 403 when it carries an `Origin` that is not this node's own (compared
//! with its `Host`), or `Sec-Fetch-Site: cross-site|same-site`; and, when it comes from a browser
//! (`Origin`, `Referer`, a `Sec-Fetch-*` header or a `Mozilla/` user agent), with 415 when its
//! body is typed as a form or `text/plain`, which no Lathe endpoint takes. Clients outside
//! browsers (the CLI, agents, `curl -d`, which labels any body a form) send none of those and are
//! not held to the content type; the dashboard is same-origin and only reads.
//!
//! DNS rebinding: a page on `http://evil.example:8500` can have its name re-resolved to
//! `127.0.0.1` and then read and write a node on this machine "same-origin" (its `Origin` matches
//! its `Host`). So any request from a browser (every method) must address the node by an IP
//! address, `localhost`, or a name given to `--http-allowed-hosts`; otherwise 403.
//!
//! Tokens: `Authorization: Bearer <secret>` or `X-Lathe-Token: <secret>`. Missing or unknown →
//! 401; known without the permission the route needs → 403 naming it. `/v1/health`, `/metrics`,
//! the `/ui` page and `POST /v1/acl/bootstrap` need none. Denials count in
//! `lathe_api_denied_total{reason}`.

use prometheus::{IntCounterVec, Opts, Registry};
use warp::http::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE, HOST, ORIGIN};
use warp::http::{Method, StatusCode};

use super::{acl, agents, discovery, kv, rollout, shift, topology, ui, watch, ApiError};
use crate::acl::records::hash_secret;
use crate::acl::writer::Writer;
use crate::acl::{Acl, Permission};

const TOKEN_HEADER: &str = "x-lathe-token";
const DENIED: &str = "lathe_api_denied_total";
const DENIED_HELP: &str = "Requests the REST API refused before their route: missing-token and \
    unknown-token (401), permission, cross-origin and host (403), content-type (415)";

/// What a route asks of its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Need {
    /// Nothing: health, metrics, the dashboard page, bootstrap.
    Open,
    /// A known token (routes that answer 404 or 405 anyway).
    Token,
    Permission(Permission),
}

/// `lathe_api_denied_total{reason}`.
#[derive(Clone)]
pub(crate) struct Denials(IntCounterVec);

impl Denials {
    pub(crate) fn register(registry: &Registry) -> Self {
        let counter = IntCounterVec::new(Opts::new(DENIED, DENIED_HELP), &["reason"])
            .expect("a valid metric definition");
        if let Err(error) = registry.register(Box::new(counter.clone())) {
            tracing::warn!(%error, "{DENIED} not registered");
        }
        Denials(counter)
    }

    fn count(&self, reason: &str) {
        self.0.with_label_values(&[reason]).inc();
    }
}

/// Admits a request or says why not. `Ok(Some(writer))` names the caller of the registry
/// writes the request makes (with `--acl` and a token).
pub(crate) fn admit(
    acl: &Acl,
    denials: &Denials,
    allowed_hosts: &[String],
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Result<Option<Writer>, ApiError> {
    check_host(headers, allowed_hosts)
        .and_then(|()| check_browser(method, headers))
        .inspect_err(|(reason, _)| denials.count(reason))
        .map_err(|(_, e)| e)?;
    if !acl.is_enabled() {
        return Ok(None);
    }
    let need = need(method, path);
    if need == Need::Open {
        return Ok(None);
    }
    let Some(secret) = presented_token(headers) else {
        denials.count("missing-token");
        return Err(unauthorized(
            "acl: this node needs a token: send Authorization: Bearer <token> or X-Lathe-Token",
        ));
    };
    let Some(identity) = acl.identify(secret) else {
        denials.count("unknown-token");
        return Err(unauthorized("acl: unknown or revoked token"));
    };
    let Need::Permission(permission) = need else {
        return Ok(None);
    };
    if !identity.allows(&permission) {
        denials.count("permission");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("acl: token {} lacks {permission}", identity.accessor),
        ));
    }
    Ok(Some(Writer {
        token_hash: hash_secret(secret),
        permission,
    }))
}

/// The permission each route needs (see `acl::policy` for what rules grant).
pub(crate) fn need(method: &Method, path: &str) -> Need {
    use Permission::*;
    let reading = matches!(*method, Method::GET | Method::HEAD);
    let permission = match path {
        "/v1/health" | "/metrics" => return Need::Open,
        _ if ui::is_ui_path(path) && reading => return Need::Open,
        acl::BOOTSTRAP_PATH => return Need::Open,
        "/v1/members" | "/v1/tasks" | "/v1/tree" | discovery::TARGETS_PATH => ClusterRead,
        "/v1/topology" if reading => ClusterRead,
        "/v1/topology" => Deploy,
        "/v1/actors/kill" => Operator,
        _ if acl::is_acl_path(path) && reading => AclRead,
        _ if acl::is_acl_path(path) => AclWrite,
        _ if rollout::is_rollouts_path(path) || shift::is_shifts_path(path) => {
            if reading {
                ClusterRead
            } else {
                Operator
            }
        }
        _ if agents::is_agents_path(path) && reading => AgentRead,
        _ if agents::is_agents_path(path) => AgentWrite,
        _ if topology::is_services_path(path) => AgentRead,
        _ if kv::is_kv_path(path) || watch::is_watch_path(path) => {
            let prefix = if kv::is_kv_path(path) {
                "/v1/kv"
            } else {
                "/v1/watch"
            };
            // A bad path is the route's 400, for any known caller.
            let Ok(key) = kv::key_from(path, prefix) else {
                return Need::Token;
            };
            if reading {
                KeyRead(key)
            } else {
                KeyWrite(key)
            }
        }
        _ => return Need::Token,
    };
    Need::Permission(permission)
}

/// The secret a request presents, if any.
pub(crate) fn presented_token(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let header = || {
        headers
            .get(TOKEN_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    bearer.or_else(header).filter(|t| !t.is_empty())
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, message)
}

/// Whether a request comes from a browser: it sends `Origin`, `Referer`, a `Sec-Fetch-*` header
/// or a `Mozilla/` user agent; the CLI, agents, Prometheus and `curl` send none of those.
fn from_browser(headers: &HeaderMap) -> bool {
    headers.contains_key(ORIGIN)
        || headers.contains_key("referer")
        || headers
            .keys()
            .any(|name| name.as_str().starts_with("sec-fetch-"))
        || headers
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|agent| agent.starts_with("Mozilla/"))
}

/// A browser's request must name the node by an IP address, `localhost` or an allowed name.
fn check_host(headers: &HeaderMap, allowed: &[String]) -> Result<(), (&'static str, ApiError)> {
    if !from_browser(headers) {
        return Ok(());
    }
    let Some(host) = headers.get(HOST) else {
        return Ok(());
    };
    let host = host.to_str().unwrap_or("?");
    if host_allowed(host, allowed) {
        return Ok(());
    }
    Err((
        "host",
        ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "request refused: Host {host} is not an IP address, localhost or a name given to \
                    --http-allowed-hosts (a page can steer a browser here by DNS rebinding)"
            ),
        ),
    ))
}

/// Whether a `Host` header (`name[:port]`, `[v6]:port`) is an IP address, `localhost` (or a
/// `.localhost` name, which always resolves to loopback) or one of `allowed` (any port).
fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    let name = name.trim_end_matches('.');
    name.parse::<std::net::IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || name.to_ascii_lowercase().ends_with(".localhost")
        || allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
}

/// The browser checks of a state-changing request: `Err((reason, error))`.
fn check_browser(method: &Method, headers: &HeaderMap) -> Result<(), (&'static str, ApiError)> {
    if !matches!(
        *method,
        Method::POST | Method::PUT | Method::DELETE | Method::PATCH
    ) {
        return Ok(());
    }
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(origin) = headers.get(ORIGIN) {
        let origin = origin.to_str().unwrap_or("?");
        let host = text(HOST.as_str()).unwrap_or("");
        if !same_origin(origin, host) {
            return Err((
                "cross-origin",
                ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!(
                        "cross-origin request refused: {method} from Origin {origin} to a node at \
                            {host}"
                    ),
                ),
            ));
        }
    }
    if let Some(site @ ("cross-site" | "same-site")) = text("sec-fetch-site") {
        return Err((
            "cross-origin",
            ApiError::new(
                StatusCode::FORBIDDEN,
                format!("cross-origin request refused: {method} with Sec-Fetch-Site: {site}"),
            ),
        ));
    }
    let browser = from_browser(headers);
    if let Some(content_type) = text(CONTENT_TYPE.as_str()).filter(|_| browser) {
        let media = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if matches!(
            media.as_str(),
            "text/plain" | "application/x-www-form-urlencoded" | "multipart/form-data"
        ) {
            return Err((
                "content-type",
                ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    format!(
                        "content type {media} is refused on {method} (a browser sends it \
                            cross-origin without asking): send application/json, or \
                                application/toml for a topology"
                    ),
                ),
            ));
        }
    }
    Ok(())
}

/// Whether an `Origin` (`scheme://host[:port]`) names the node the request was sent to.
fn same_origin(origin: &str, host: &str) -> bool {
    let authority = origin
        .split_once("://")
        .map_or("", |(_, rest)| rest)
        .trim_end_matches('/');
    !host.is_empty() && authority.eq_ignore_ascii_case(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use warp::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    fn key(path: &str) -> lathe::KeyPath {
        lathe::KeyPath::parse(path).unwrap()
    }

    #[test]
    fn routes_need_what_they_do() {
        let (get, put, post) = (Method::GET, Method::PUT, Method::POST);
        assert_eq!(need(&get, "/v1/health"), Need::Open);
        assert_eq!(need(&get, "/metrics"), Need::Open);
        assert_eq!(need(&get, "/ui"), Need::Open);
        assert_eq!(need(&post, "/v1/acl/bootstrap"), Need::Open);
        assert_eq!(
            need(&get, "/v1/kv/app/x"),
            Need::Permission(Permission::KeyRead(key("/app/x")))
        );
        assert_eq!(
            need(&put, "/v1/kv/app/x"),
            Need::Permission(Permission::KeyWrite(key("/app/x")))
        );
        assert_eq!(
            need(&Method::DELETE, "/v1/kv/app"),
            Need::Permission(Permission::KeyWrite(key("/app")))
        );
        assert_eq!(
            need(&get, "/v1/watch/app"),
            Need::Permission(Permission::KeyRead(key("/app")))
        );
        assert_eq!(
            need(&put, "/v1/topology"),
            Need::Permission(Permission::Deploy)
        );
        assert_eq!(
            need(&get, "/v1/topology"),
            Need::Permission(Permission::ClusterRead)
        );
        assert_eq!(
            need(&post, "/v1/shifts/a/b/pause"),
            Need::Permission(Permission::Operator)
        );
        assert_eq!(
            need(&post, "/v1/rollouts/g/undo"),
            Need::Permission(Permission::Operator)
        );
        assert_eq!(
            need(&post, "/v1/actors/kill"),
            Need::Permission(Permission::Operator)
        );
        assert_eq!(
            need(&get, "/v1/services/http/lb"),
            Need::Permission(Permission::AgentRead)
        );
        assert_eq!(
            need(&put, "/v1/agents/edge"),
            Need::Permission(Permission::AgentWrite)
        );
        assert_eq!(
            need(&post, "/v1/acl/tokens"),
            Need::Permission(Permission::AclWrite)
        );
        assert_eq!(
            need(&get, "/v1/acl/tokens"),
            Need::Permission(Permission::AclRead)
        );
        assert_eq!(need(&get, "/v1/kv/bad path"), Need::Token);
        assert_eq!(need(&get, "/nowhere"), Need::Token);
    }

    #[test]
    fn tokens_come_from_either_header() {
        assert_eq!(
            presented_token(&headers(&[("authorization", "Bearer abc")])),
            Some("abc")
        );
        assert_eq!(
            presented_token(&headers(&[("authorization", "bearer  abc ")])),
            Some("abc")
        );
        assert_eq!(
            presented_token(&headers(&[("x-lathe-token", "xyz")])),
            Some("xyz")
        );
        assert_eq!(
            presented_token(&headers(&[("authorization", "Basic abc")])),
            None
        );
        assert_eq!(presented_token(&headers(&[("x-lathe-token", " ")])), None);
        assert_eq!(presented_token(&headers(&[])), None);
    }

    #[test]
    fn browsers_must_address_the_node_by_ip_localhost_or_an_allowed_name() {
        let allowed = vec!["lathe.corp.example".to_string()];
        for host in [
            "127.0.0.1:8500",
            "10.1.2.3",
            "[::1]:8500",
            "localhost:8500",
            "LOCALHOST",
            "ui.localhost:1",
            "lathe.corp.example:8500",
            "Lathe.Corp.Example.",
        ] {
            assert!(host_allowed(host, &allowed), "{host}");
        }
        for host in [
            "evil.example:8500",
            "localhost.evil.example",
            "corp.example",
            "",
        ] {
            assert!(!host_allowed(host, &allowed), "{host}");
        }
        // A rebound page: a browser, same-origin by its own name.
        let rebound = headers(&[
            ("host", "evil.example:8500"),
            ("origin", "http://evil.example:8500"),
            ("user-agent", "Mozilla/5.0"),
        ]);
        let (reason, error) = check_host(&rebound, &allowed).unwrap_err();
        assert_eq!(reason, "host");
        assert_eq!(error.status, StatusCode::FORBIDDEN);
        assert!(
            error.message.contains("--http-allowed-hosts"),
            "{}",
            error.message
        );
        // The CLI, agents and curl use names freely; browsers by IP or an allowed name.
        let cli = headers(&[("host", "node1.internal:8500"), ("user-agent", "lathe/0.1")]);
        assert!(check_host(&cli, &allowed).is_ok());
        let by_ip = headers(&[("host", "127.0.0.1:8500"), ("sec-fetch-mode", "cors")]);
        assert!(check_host(&by_ip, &allowed).is_ok());
    }

    #[test]
    fn browsers_cannot_change_state_cross_origin() {
        let refused = |method: Method, pairs: &[(&'static str, &'static str)]| {
            check_browser(&method, &headers(pairs))
                .err()
                .map(|(reason, _)| reason)
        };
        let host = ("host", "127.0.0.1:7500");
        assert_eq!(
            refused(Method::PUT, &[host, ("origin", "http://evil.example")]),
            Some("cross-origin")
        );
        assert_eq!(
            refused(Method::POST, &[host, ("origin", "null")]),
            Some("cross-origin")
        );
        assert_eq!(
            refused(Method::POST, &[host, ("origin", "http://127.0.0.1:7500")]),
            None
        );
        assert_eq!(
            refused(Method::GET, &[host, ("origin", "http://evil.example")]),
            None
        );
        assert_eq!(
            refused(Method::POST, &[host, ("sec-fetch-site", "cross-site")]),
            Some("cross-origin")
        );
        assert_eq!(
            refused(Method::POST, &[host, ("sec-fetch-site", "same-origin")]),
            None
        );
        let browser = ("user-agent", "Mozilla/5.0 (X11; Linux x86_64)");
        assert_eq!(
            refused(
                Method::POST,
                &[browser, ("content-type", "text/plain;charset=UTF-8")]
            ),
            Some("content-type")
        );
        assert_eq!(
            refused(
                Method::PUT,
                &[
                    ("referer", "http://evil.example/"),
                    ("content-type", "application/x-www-form-urlencoded")
                ]
            ),
            Some("content-type")
        );
        // curl -d labels any body a form; outside a browser the content type is not held.
        assert_eq!(
            refused(
                Method::PUT,
                &[
                    ("user-agent", "curl/7.88.1"),
                    ("content-type", "application/x-www-form-urlencoded")
                ]
            ),
            None
        );
        assert_eq!(
            refused(Method::PUT, &[("content-type", "application/json")]),
            None
        );
        assert_eq!(
            refused(Method::PUT, &[("content-type", "application/toml")]),
            None
        );
    }
}
