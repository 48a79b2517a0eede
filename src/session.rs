//! The dashboard's browser session: after a POST of the admin token to
//! `/dashboard/login`, the browser holds an HttpOnly, SameSite=Strict cookie
//! `tollgate_session=<expiry ms>.<hex HMAC-SHA256(ADMIN_TOKEN, expiry)>`.
//! The token itself never leaves the login form (never in a URL, never in
//! script-readable storage); rotating `ADMIN_TOKEN` ends every session. The
//! cookie is accepted only for `GET /dashboard…` and the read-only
//! `GET /admin/usage…` views — every other admin route still needs the
//! bearer token, so a cookie can never change anything.

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const COOKIE_NAME: &str = "tollgate_session";
/// How long a session lasts.
pub const SESSION_MS: u64 = 12 * 3_600_000;

const CONTEXT: &[u8] = b"tollgate-dashboard-session-v1:";

fn mac(secret: &str, expires_ms: u64) -> Option<Hmac<Sha256>> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).ok()?;
    m.update(CONTEXT);
    m.update(expires_ms.to_string().as_bytes());
    Some(m)
}

/// A session value valid until `expires_ms`.
pub fn issue(secret: &str, expires_ms: u64) -> Option<String> {
    let tag = mac(secret, expires_ms)?.finalize().into_bytes();
    Some(format!("{expires_ms}.{}", hex::encode(tag)))
}

/// Whether a session value is authentic and unexpired (constant-time compare).
pub fn verify(secret: &str, value: &str, now_ms: u64) -> bool {
    let Some((exp, tag)) = value.split_once('.') else {
        return false;
    };
    let (Ok(expires_ms), Ok(tag)) = (exp.parse::<u64>(), hex::decode(tag)) else {
        return false;
    };
    if expires_ms <= now_ms || expires_ms > now_ms.saturating_add(SESSION_MS) {
        return false;
    }
    mac(secret, expires_ms).is_some_and(|m| m.verify_slice(&tag).is_ok())
}

/// The session cookie's value from a `Cookie` header.
pub fn from_cookie_header(header: &str) -> Option<&str> {
    header.split(';').find_map(|part| {
        let (name, value) = part.trim().split_once('=')?;
        (name == COOKIE_NAME).then_some(value)
    })
}

/// `Set-Cookie` for a new session (`Secure` when served over https).
pub fn set_cookie(value: &str, secure: bool) -> String {
    format!(
        "{COOKIE_NAME}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        SESSION_MS / 1000,
        if secure { "; Secure" } else { "" }
    )
}

/// `Set-Cookie` that ends the session.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE_NAME}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    )
}

/// The `token` field of an `application/x-www-form-urlencoded` login body.
pub fn token_from_form(body: &str) -> Option<String> {
    url::form_urlencoded::parse(body.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "admin-token-0123456789";

    #[test]
    fn issued_sessions_verify_until_expiry() {
        let v = issue(SECRET, 1_000 + SESSION_MS).unwrap();
        assert!(verify(SECRET, &v, 1_000));
        assert!(verify(SECRET, &v, 1_000 + SESSION_MS - 1));
        assert!(!verify(SECRET, &v, 1_000 + SESSION_MS));
        // Another token (rotated) ends every session.
        assert!(!verify("another-admin-token-xyz", &v, 1_000));
    }

    #[test]
    fn forgeries_fail() {
        let v = issue(SECRET, 10 + SESSION_MS).unwrap();
        let (exp, tag) = v.split_once('.').unwrap();
        // A later expiry with the old tag.
        assert!(!verify(
            SECRET,
            &format!("{}.{tag}", exp.parse::<u64>().unwrap() + 1),
            10
        ));
        // An expiry beyond a session's length (even if signed) is refused.
        let far = issue(SECRET, 10 + 2 * SESSION_MS).unwrap();
        assert!(!verify(SECRET, &far, 10));
        for bad in [
            "",
            ".",
            "x.y",
            &format!("{exp}."),
            &format!("{exp}.00"),
            SECRET,
        ] {
            assert!(!verify(SECRET, bad, 10), "{bad}");
        }
    }

    #[test]
    fn cookies_and_forms() {
        assert_eq!(
            from_cookie_header("a=1; tollgate_session=5.ab; b=2"),
            Some("5.ab")
        );
        assert_eq!(from_cookie_header("xtollgate_session=5.ab"), None);
        let c = set_cookie("5.ab", true);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.ends_with("; Secure"));
        assert!(!set_cookie("5.ab", false).contains("Secure"));
        assert!(clear_cookie(false).contains("Max-Age=0"));
        assert_eq!(
            token_from_form("token=a%2Bb%26c&x=1").as_deref(),
            Some("a+b&c")
        );
        assert_eq!(token_from_form("x=1"), None);
    }
}
