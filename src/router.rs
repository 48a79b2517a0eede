//! The route table: method + path → handler, and which credential each route
//! requires. Pure, so the inventory test below can prove that every route but
//! `/healthz` is authenticated (anchors-reliability S1c, S4).

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    Public,
    VirtualKey,
    Admin,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Health,
    ChatCompletions,
    Embeddings,
    /// Anthropic's Messages API (`POST /v1/messages`).
    Messages,
    Models,
    AdminKeys,
    AdminKey(String),
    AdminKeyRevoke(String),
    AdminKeyBudget(String),
    AdminProjects,
    AdminProject(String),
    AdminProjectBudget(String),
    AdminRequests,
    AdminRequest(String),
    AdminConfig,
    AdminCache,
    /// `GET /admin/health`: each probed link's circuit, latency and probe cost.
    AdminHealth,
    /// `GET /admin/usage[/series|/groups|/top]` (read-only; the dashboard's
    /// session cookie is accepted here as well as the bearer token).
    AdminUsage(UsageView),
    /// `GET /dashboard` (`None`) or one of its files, e.g. `/dashboard/app.js`.
    Dashboard(Option<String>),
    /// `POST /dashboard/login`: checks the admin token itself.
    DashboardLogin,
    /// `POST /dashboard/logout`.
    DashboardLogout,
    /// A known path with the wrong method; carries the allowed methods.
    MethodNotAllowed(&'static str),
    NotFound,
}

/// The usage API's views.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageView {
    Totals,
    Series,
    Groups,
    Top,
    /// `/admin/usage/quality`: quality-sampling agreement (issue 12).
    Quality,
}

impl Route {
    pub fn guard(&self) -> Guard {
        match self {
            // The login form is public: it is where the admin token is checked.
            Self::Health | Self::NotFound | Self::MethodNotAllowed(_) | Self::DashboardLogin => {
                Guard::Public
            }
            Self::ChatCompletions | Self::Embeddings | Self::Messages | Self::Models => {
                Guard::VirtualKey
            }
            Self::AdminKeys
            | Self::AdminKey(_)
            | Self::AdminKeyRevoke(_)
            | Self::AdminKeyBudget(_)
            | Self::AdminProjects
            | Self::AdminProject(_)
            | Self::AdminProjectBudget(_)
            | Self::AdminRequests
            | Self::AdminRequest(_)
            | Self::AdminConfig
            | Self::AdminCache
            | Self::AdminHealth
            | Self::AdminUsage(_)
            | Self::Dashboard(_)
            | Self::DashboardLogout => Guard::Admin,
        }
    }
}

/// Ids in admin paths are short and plain; anything else is not a route.
fn plain_id(s: &str) -> Option<String> {
    (!s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
    .then(|| s.to_owned())
}

/// Dashboard files are plain names: `app.js`, `app.css`, …
fn asset_name(s: &str) -> Option<String> {
    let (stem, ext) = s.rsplit_once('.')?;
    let ok = !stem.is_empty()
        && stem.len() <= 64
        && stem
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && matches!(ext, "js" | "css" | "svg" | "png" | "ico" | "map");
    ok.then(|| s.to_owned())
}

/// The path of a URL as the runtime serialises a request's (`request.url`,
/// WHATWG): from the first `/` after the host up to `?` or `#`, which the
/// serialiser percent-encodes inside a path. The same reading as workers-rs'
/// `Request::path()`, without building its `Request` (which also reads `cf`).
pub fn path_of_url(url: &str) -> &str {
    let Some(scheme_end) = url.find("://") else {
        return if url.starts_with('/') { url } else { "/" };
    };
    let after_host = &url[scheme_end + 3..];
    match after_host.find('/') {
        Some(i) => {
            let path = &after_host[i..];
            &path[..path.find(['?', '#']).unwrap_or(path.len())]
        }
        None => "/",
    }
}

/// Routes by URL path only (never by `Host`). One trailing slash is ignored.
pub fn route(method: &str, path: &str) -> Route {
    let path = path
        .strip_suffix('/')
        .filter(|p| !p.is_empty())
        .unwrap_or(path);
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let m = method;
    let only = |allowed: &'static str, r: Route| {
        if allowed.split(", ").any(|a| a == m) {
            r
        } else {
            Route::MethodNotAllowed(allowed)
        }
    };
    match segments.as_slice() {
        ["healthz"] => only("GET, HEAD", Route::Health),
        ["v1", "chat", "completions"] => only("POST", Route::ChatCompletions),
        ["v1", "embeddings"] => only("POST", Route::Embeddings),
        ["v1", "messages"] => only("POST", Route::Messages),
        ["v1", "models"] => only("GET", Route::Models),
        ["admin", "keys"] => only("GET, POST", Route::AdminKeys),
        ["admin", "keys", id] => match plain_id(id) {
            Some(id) => only("GET, PATCH, DELETE", Route::AdminKey(id)),
            None => Route::NotFound,
        },
        ["admin", "keys", id, "revoke"] => match plain_id(id) {
            Some(id) => only("POST", Route::AdminKeyRevoke(id)),
            None => Route::NotFound,
        },
        ["admin", "keys", id, "budget"] => match plain_id(id) {
            Some(id) => only("GET", Route::AdminKeyBudget(id)),
            None => Route::NotFound,
        },
        ["admin", "projects"] => only("GET, POST", Route::AdminProjects),
        ["admin", "projects", id] => match plain_id(id) {
            Some(id) => only("GET, PATCH", Route::AdminProject(id)),
            None => Route::NotFound,
        },
        ["admin", "projects", id, "budget"] => match plain_id(id) {
            Some(id) => only("GET", Route::AdminProjectBudget(id)),
            None => Route::NotFound,
        },
        ["admin", "requests"] => only("GET", Route::AdminRequests),
        ["admin", "requests", id] => match plain_id(id) {
            Some(id) => only("GET", Route::AdminRequest(id)),
            None => Route::NotFound,
        },
        ["admin", "config"] => only("GET", Route::AdminConfig),
        ["admin", "cache"] => only("DELETE", Route::AdminCache),
        ["admin", "health"] => only("GET", Route::AdminHealth),
        ["admin", "usage"] => only("GET", Route::AdminUsage(UsageView::Totals)),
        ["admin", "usage", "series"] => only("GET", Route::AdminUsage(UsageView::Series)),
        ["admin", "usage", "groups"] => only("GET", Route::AdminUsage(UsageView::Groups)),
        ["admin", "usage", "top"] => only("GET", Route::AdminUsage(UsageView::Top)),
        ["admin", "usage", "quality"] => only("GET", Route::AdminUsage(UsageView::Quality)),
        ["dashboard"] => only("GET, HEAD", Route::Dashboard(None)),
        ["dashboard", "login"] => only("POST", Route::DashboardLogin),
        ["dashboard", "logout"] => only("POST", Route::DashboardLogout),
        ["dashboard", file] => match asset_name(file) {
            Some(f) => only("GET, HEAD", Route::Dashboard(Some(f))),
            None => Route::NotFound,
        },
        _ => Route::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_of_url_is_the_path_without_query_or_fragment() {
        assert_eq!(
            path_of_url("http://gw.example/v1/chat/completions"),
            "/v1/chat/completions"
        );
        assert_eq!(
            path_of_url("https://gw.example:8443/v1/models?x=1#f"),
            "/v1/models"
        );
        assert_eq!(path_of_url("https://gw.example"), "/");
        assert_eq!(path_of_url("https://gw.example/?q=/a"), "/");
        assert_eq!(path_of_url("http://u:p@gw.example/a%3Fb/c"), "/a%3Fb/c");
        assert_eq!(path_of_url("/relative/path"), "/relative/path");
        assert_eq!(path_of_url("odd"), "/");
    }

    #[test]
    fn routes() {
        assert_eq!(
            route("POST", "/v1/chat/completions"),
            Route::ChatCompletions
        );
        assert_eq!(
            route("POST", "/v1/chat/completions/"),
            Route::ChatCompletions
        );
        assert_eq!(
            route("GET", "/v1/chat/completions"),
            Route::MethodNotAllowed("POST")
        );
        assert_eq!(
            route("GET", "/admin/keys/key_1"),
            Route::AdminKey("key_1".into())
        );
        assert_eq!(
            route("POST", "/admin/keys/key_1/revoke"),
            Route::AdminKeyRevoke("key_1".into())
        );
        assert_eq!(route("GET", "/admin/keys/a%20b"), Route::NotFound);
        assert_eq!(route("GET", "/"), Route::NotFound);
        assert_eq!(route("GET", "/v1//models"), Route::NotFound);
        assert_eq!(route("HEAD", "/healthz"), Route::Health);
    }

    /// Route inventory: every route that does anything carries a credential
    /// check, and the admin prefix is admin-only.
    #[test]
    fn every_route_but_health_is_guarded() {
        let paths = [
            ("POST", "/v1/chat/completions"),
            ("POST", "/v1/embeddings"),
            ("POST", "/v1/messages"),
            ("GET", "/v1/models"),
            ("GET", "/admin/keys"),
            ("POST", "/admin/keys"),
            ("GET", "/admin/keys/k"),
            ("PATCH", "/admin/keys/k"),
            ("DELETE", "/admin/keys/k"),
            ("POST", "/admin/keys/k/revoke"),
            ("GET", "/admin/requests"),
            ("GET", "/admin/requests/r"),
            ("GET", "/admin/config"),
            ("DELETE", "/admin/cache"),
            ("GET", "/admin/health"),
            ("GET", "/admin/keys/k/budget"),
            ("GET", "/admin/projects"),
            ("POST", "/admin/projects"),
            ("GET", "/admin/projects/p"),
            ("PATCH", "/admin/projects/p"),
            ("GET", "/admin/projects/p/budget"),
            ("GET", "/admin/usage"),
            ("GET", "/admin/usage/series"),
            ("GET", "/admin/usage/groups"),
            ("GET", "/admin/usage/top"),
            ("GET", "/admin/usage/quality"),
            ("GET", "/dashboard"),
            ("GET", "/dashboard/app.js"),
            ("POST", "/dashboard/logout"),
        ];
        for (m, p) in paths {
            let r = route(m, p);
            assert_ne!(r.guard(), Guard::Public, "{m} {p} -> {r:?}");
            if p.starts_with("/admin/") {
                assert_eq!(r.guard(), Guard::Admin, "{m} {p}");
            }
        }
        assert_eq!(route("GET", "/healthz").guard(), Guard::Public);
        assert_eq!(route("POST", "/dashboard/login").guard(), Guard::Public);
    }

    #[test]
    fn dashboard_routes() {
        assert_eq!(route("GET", "/dashboard/"), Route::Dashboard(None));
        assert_eq!(
            route("GET", "/dashboard/app.css"),
            Route::Dashboard(Some("app.css".into()))
        );
        for bad in [
            "/dashboard/../wrangler.toml",
            "/dashboard/.env",
            "/dashboard/a.toml",
            "/dashboard/x/y.js",
            "/dashboard/index.html",
        ] {
            assert_eq!(route("GET", bad), Route::NotFound, "{bad}");
        }
        assert_eq!(
            route("GET", "/dashboard/login"),
            Route::MethodNotAllowed("POST")
        );
        assert_eq!(
            route("POST", "/admin/usage"),
            Route::MethodNotAllowed("GET")
        );
    }
}
