//! `GET /dashboard` and its files, `POST /dashboard/login`,
//! `POST /dashboard/logout`. The page is Workers static assets (the
//! `ASSETS` binding; `run_worker_first` sends every request here first), and
//! is handed out only to a browser holding a valid session cookie
//! (`session.rs`). Without one, `/dashboard` answers 401 with the login
//! form, which POSTs the admin token in the body — never in a URL.

use worker::{console_error, Env, Headers, Request, Response};

use crate::bindings::ASSETS;
use crate::error::GatewayError;
use crate::handlers::admin_token;
use crate::http::{now_ms, read_body_limited, set_header};
use crate::session;

/// Whether the request carries a valid dashboard session.
pub fn has_session(req: &Request, env: &Env) -> Result<bool, GatewayError> {
    let token = admin_token(env)?;
    let cookie = req
        .headers()
        .get("cookie")
        .ok()
        .flatten()
        .unwrap_or_default();
    Ok(session::from_cookie_header(&cookie)
        .is_some_and(|v| session::verify(token.expose(), v, now_ms())))
}

fn is_https(req: &Request) -> bool {
    req.url().is_ok_and(|u| u.scheme() == "https")
}

/// A page or file from the static assets, with headers this gateway owns.
async fn asset(env: &Env, file: &str, status: u16) -> Result<Response, GatewayError> {
    let assets = env.assets(ASSETS).map_err(|e| {
        console_error!("assets binding {ASSETS} is missing: {e}");
        GatewayError::Misconfigured
    })?;
    // The host is ignored by the assets binding; only the path matters.
    let mut resp = assets
        .fetch(format!("https://assets.local/dashboard/{file}"), None)
        .await
        .map_err(|e| {
            console_error!("assets fetch failed: {e}");
            GatewayError::Internal
        })?;
    if resp.status_code() != 200 {
        return Err(GatewayError::NotFound);
    }
    let body = resp.bytes().await.map_err(|_| GatewayError::Internal)?;
    let headers = Headers::new();
    let content_type = match file.rsplit_once('.').map(|(_, e)| e) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    };
    set_header(&headers, "content-type", content_type);
    // Pages behind a login are never stored by shared caches.
    set_header(&headers, "cache-control", "private, no-store");
    set_header(&headers, "x-content-type-options", "nosniff");
    // `same-origin`, not `no-referrer`: with the latter a form POST carries
    // `Origin: null`, and the login could not tell itself from a cross-site form.
    set_header(&headers, "referrer-policy", "same-origin");
    set_header(&headers, "x-frame-options", "DENY");
    // Only this origin: no CDN, no third-party request can even be made.
    set_header(
        &headers,
        "content-security-policy",
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
         connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    Ok(Response::from_bytes(body)
        .map_err(|_| GatewayError::Internal)?
        .with_status(status)
        .with_headers(headers))
}

/// `GET /dashboard` (`None`) and `GET /dashboard/<file>`.
pub async fn page(req: &Request, env: &Env, file: Option<&str>) -> Result<Response, GatewayError> {
    if has_session(req, env)? {
        return asset(env, file.unwrap_or("index.html"), 200).await;
    }
    match file {
        // The login form and its stylesheet hold nothing secret.
        None => asset(env, "login.html", 401).await,
        Some("login.css") => asset(env, "login.css", 200).await,
        Some(_) => Err(GatewayError::Unauthorized {
            message: "Sign in at /dashboard first.",
        }),
    }
}

fn redirect(to: &str, cookie: Option<&str>) -> Result<Response, GatewayError> {
    let headers = Headers::new();
    set_header(&headers, "location", to);
    set_header(&headers, "cache-control", "no-store");
    if let Some(c) = cookie {
        set_header(&headers, "set-cookie", c);
    }
    Ok(Response::empty()
        .map_err(|_| GatewayError::Internal)?
        .with_status(303)
        .with_headers(headers))
}

/// A cross-site form cannot log a browser in (or out): when the browser says
/// where the form came from, it must be this origin.
fn same_origin(req: &Request) -> bool {
    let header = |n: &str| req.headers().get(n).ok().flatten();
    let Some(origin) = header("origin") else {
        return true;
    };
    // Compared with the Host the browser addressed (the Worker's URL may be
    // rewritten by a proxy in front of it, e.g. `wrangler dev`).
    let Ok(origin) = url::Url::parse(&origin) else {
        return false;
    };
    let origin_host = match (origin.host_str(), origin.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_owned(),
        _ => return false,
    };
    header("host").is_some_and(|h| h.eq_ignore_ascii_case(&origin_host))
}

/// `POST /dashboard/login` — form field `token` = the admin token. Sets the
/// session cookie and redirects to `/dashboard`; a wrong token gets the
/// login page again with 401.
pub async fn login(mut req: Request, env: &Env) -> Result<Response, GatewayError> {
    let token = admin_token(env)?;
    if !same_origin(&req) {
        return Err(GatewayError::Forbidden {
            message: "Cross-site login refused.".to_owned(),
            code: "cross_site_request",
        });
    }
    let body = read_body_limited(&mut req, 4096).await?;
    let presented = session::token_from_form(&String::from_utf8_lossy(&body)).unwrap_or_default();
    if !token.matches(presented.trim()) {
        let mut resp = asset(env, "login.html", 401).await?;
        set_header(resp.headers_mut(), "x-tollgate-login", "failed");
        return Ok(resp);
    }
    let value = session::issue(token.expose(), now_ms() + session::SESSION_MS)
        .ok_or(GatewayError::Internal)?;
    redirect(
        "/dashboard",
        Some(&session::set_cookie(&value, is_https(&req))),
    )
}

/// `POST /dashboard/logout` — ends the session.
pub fn logout(req: &Request) -> Result<Response, GatewayError> {
    if !same_origin(req) {
        return Err(GatewayError::Forbidden {
            message: "Cross-site logout refused.".to_owned(),
            code: "cross_site_request",
        });
    }
    redirect("/dashboard", Some(&session::clear_cookie(is_https(req))))
}
