//! Route handlers and what they share: the per-isolate config and the two
//! credential checks (virtual key, admin token). Both checks fail closed: a
//! missing `ADMIN_TOKEN`, an invalid config or an unreadable key store rejects
//! the request.

pub mod admin;
pub mod budgets;
pub mod capacity_queue;
pub mod circuits;
pub mod cron;
pub mod dashboard;
pub mod guard;
pub mod health;
pub mod models;
pub mod probes;
pub mod proxy;
pub mod quality;
pub mod semantic;
pub mod usage;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use wasm_bindgen::{JsCast, JsValue};

use worker::{console_error, D1Database, Env, Headers, Request};

use crate::bindings::{ADMIN_TOKEN_SECRET, DB, GATEWAY_CONFIG_VAR, MIN_ADMIN_TOKEN_LEN};
use crate::config::GatewayConfig;
use crate::error::GatewayError;
use crate::keys::{hash_key, parse_presented_key, KeyGrant, UNAUTHORIZED_UNKNOWN};
use crate::secret::Secret;
use crate::store;

thread_local! {
    /// Parsed once per isolate: an isolate's bindings never change.
    static CONFIG: RefCell<Option<Rc<GatewayConfig>>> = const { RefCell::new(None) };
    /// Keys this isolate found active, for `auth.key_cache_ms` (see `keycache.rs`).
    static KEYS: RefCell<crate::keycache::KeyCache> = RefCell::new(crate::keycache::KeyCache::default());
    /// The built-in prices with the operator's overrides, built once per isolate.
    static PRICES: RefCell<Option<Rc<crate::pricing::PriceTable>>> = const { RefCell::new(None) };
    /// What `lookup_price` answered per (provider, model): the table walk
    /// (dated-suffix search) runs once per pair, not once per request.
    static PRICE_MEMO: RefCell<HashMap<(String, String), Option<PriceHow>>> =
        RefCell::new(HashMap::new());
    /// Secrets read so far. A secret is a binding, and an isolate's bindings
    /// never change (a new secret value is a new deployment, new isolates).
    static SECRETS: RefCell<HashMap<String, Option<Secret>>> = RefCell::new(HashMap::new());
    /// Whether the D1 binding passed workers-rs' type check in this isolate.
    static DB_CHECKED: Cell<bool> = const { Cell::new(false) };
}

/// A price and how it was found (`priced` or `default`).
type PriceHow = (crate::pricing::Price, &'static str);

/// Bounds the price memo: model names come from provider responses, so a
/// provider that answers with ever-new names must not grow it without end.
const PRICE_MEMO_MAX: usize = 512;

/// The price of `provider/model` (by the provider's kind), and how it was
/// found: `priced` (table or override) or `default`; `None` when unpriced.
pub fn lookup_price(
    config: &GatewayConfig,
    provider: &str,
    model: &str,
) -> Option<(crate::pricing::Price, &'static str)> {
    let key = (provider.to_owned(), model.to_owned());
    if let Some(hit) = PRICE_MEMO.with(|m| m.borrow().get(&key).copied()) {
        return hit;
    }
    let priced = lookup_price_uncached(config, provider, model);
    PRICE_MEMO.with(|m| {
        let mut m = m.borrow_mut();
        if m.len() >= PRICE_MEMO_MAX {
            m.clear();
        }
        m.insert(key, priced);
    });
    priced
}

fn lookup_price_uncached(
    config: &GatewayConfig,
    provider: &str,
    model: &str,
) -> Option<(crate::pricing::Price, &'static str)> {
    let table = PRICES.with(|p| p.borrow().clone()).or_else(|| {
        let built = crate::pricing::builtin()
            .ok()?
            .with_overrides(&config.pricing.overrides, config.pricing.default.as_ref())
            .map_err(|errors| {
                for e in errors {
                    console_error!("pricing: {e}");
                }
            })
            .ok()?;
        let built = Rc::new(built);
        PRICES.with(|p| *p.borrow_mut() = Some(built.clone()));
        Some(built)
    })?;
    let kind = config
        .providers
        .get(provider)
        .map_or(provider, |p| p.table_kind(provider));
    match table.lookup(kind, model) {
        crate::pricing::Priced::Price(p) => Some((p, "priced")),
        crate::pricing::Priced::Default(p) => Some((p, "default")),
        crate::pricing::Priced::Unpriced => None,
    }
}

/// Prices a finished ledger row by the answering provider's kind and model.
pub fn price_row(config: &GatewayConfig, row: &mut crate::ledger::RequestRow) {
    let priced = match (&row.provider, &row.model_used) {
        (Some(provider), Some(model)) => lookup_price(config, provider, model),
        _ => None,
    };
    row.apply_price(priced.as_ref().map(|(p, how)| (p, *how)));
}

fn parse_config(env: &Env) -> Result<GatewayConfig, GatewayError> {
    // `[vars.GATEWAY]` arrives as an object; a `GATEWAY` secret or `.dev.vars`
    // entry overrides it as a JSON string.
    let value: serde_json::Value = match env.object_var(GATEWAY_CONFIG_VAR) {
        Ok(v) => v,
        Err(object_err) => {
            let text = env.var(GATEWAY_CONFIG_VAR).map_err(|_| {
                console_error!(
                    "config: binding {GATEWAY_CONFIG_VAR} is missing or unreadable: {object_err}"
                );
                GatewayError::Misconfigured
            })?;
            serde_json::from_str(&text.to_string()).map_err(|e| {
                console_error!("config: {GATEWAY_CONFIG_VAR} is a string but not JSON: {e}");
                GatewayError::Misconfigured
            })?
        }
    };
    GatewayConfig::from_json(value).map_err(|errors| {
        for e in errors {
            console_error!("config: {e}");
        }
        GatewayError::Misconfigured
    })
}

/// The validated configuration.
pub fn config(env: &Env) -> Result<Rc<GatewayConfig>, GatewayError> {
    if let Some(c) = CONFIG.with(|c| c.borrow().clone()) {
        return Ok(c);
    }
    let parsed = Rc::new(parse_config(env)?);
    CONFIG.with(|c| *c.borrow_mut() = Some(parsed.clone()));
    Ok(parsed)
}

/// A Worker secret (or `.dev.vars` entry) by name.
pub fn secret(env: &Env, name: &str) -> Option<Secret> {
    if let Some(known) = SECRETS.with(|s| s.borrow().get(name).cloned()) {
        return known;
    }
    let read = env
        .secret(name)
        .ok()
        .map(|s| Secret::new(s.to_string()))
        .filter(|s| !s.is_empty());
    SECRETS.with(|s| s.borrow_mut().insert(name.to_owned(), read.clone()));
    read
}

/// The admin token, or `Misconfigured` when it is absent or too short to be
/// a real secret (fail closed: the whole gateway refuses to serve).
pub fn admin_token(env: &Env) -> Result<Secret, GatewayError> {
    match secret(env, ADMIN_TOKEN_SECRET) {
        Some(t) if t.expose().len() >= MIN_ADMIN_TOKEN_LEN => Ok(t),
        _ => {
            console_error!(
                "{ADMIN_TOKEN_SECRET} is not set (or shorter than {MIN_ADMIN_TOKEN_LEN} characters); \
                 rejecting all requests"
            );
            Err(GatewayError::Misconfigured)
        }
    }
}

pub fn database(env: &Env) -> Result<D1Database, GatewayError> {
    // workers-rs checks the binding's constructor name on every lookup (two
    // JS calls); once it has passed in this isolate, the property is enough.
    if DB_CHECKED.with(Cell::get) {
        if let Ok(binding) = js_sys::Reflect::get(env, &JsValue::from_str(DB)) {
            if !binding.is_undefined() {
                return Ok(binding.unchecked_into());
            }
        }
    }
    let db = env.d1(DB).map_err(|e| {
        console_error!("D1 binding {DB} is missing: {e}");
        GatewayError::Misconfigured
    })?;
    DB_CHECKED.with(|c| c.set(true));
    Ok(db)
}

fn header(headers: &Headers, name: &str) -> Option<String> {
    headers.get(name).ok().flatten()
}

/// Checks the virtual key (`Authorization: Bearer tg-…`, or `x-api-key: tg-…`
/// as Anthropic SDKs send it) against D1.
pub async fn authenticate_key(headers: &Headers, env: &Env) -> Result<KeyGrant, GatewayError> {
    admin_token(env)?;
    let key = match (
        header(headers, "authorization"),
        header(headers, "x-api-key"),
    ) {
        (Some(auth), _) => parse_presented_key(Some(&auth), true)?.to_owned(),
        (None, Some(api_key)) => parse_presented_key(Some(&api_key), false)?.to_owned(),
        (None, None) => parse_presented_key(None, true)?.to_owned(),
    };
    let key_hash = hash_key(&key);
    let ttl_ms = config(env).map(|c| c.auth.key_cache_ms).unwrap_or(0);
    let now = crate::http::now_ms();
    if let Some(grant) = KEYS.with(|k| k.borrow().get(&key_hash, now, ttl_ms)) {
        return Ok(grant);
    }
    let db = database(env)?;
    let grant = store::find_active_key(&db, &key_hash)
        .await?
        .ok_or(UNAUTHORIZED_UNKNOWN)?;
    KEYS.with(|k| k.borrow_mut().insert(&key_hash, grant.clone(), now, ttl_ms));
    Ok(grant)
}

/// Forgets the keys this isolate remembered: every admin change to a key or a
/// project calls it, so the isolate that served the change never serves the
/// old grant (others may, for at most `auth.key_cache_ms`).
pub fn forget_cached_keys() {
    KEYS.with(|k| k.borrow_mut().clear());
}

/// Checks `Authorization: Bearer <ADMIN_TOKEN>` in constant time.
pub fn authenticate_admin(req: &Request, env: &Env) -> Result<(), GatewayError> {
    let token = admin_token(env)?;
    let presented = header(req.headers(), "authorization");
    let bearer = presented
        .as_deref()
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    match bearer {
        Some(t) if token.matches(t) => Ok(()),
        _ => Err(GatewayError::Unauthorized {
            message: "Admin endpoints need 'Authorization: Bearer <ADMIN_TOKEN>'.",
        }),
    }
}

/// The read-only usage views accept the bearer token or a dashboard session
/// cookie (the browser's way in; see `session.rs`).
pub fn authenticate_admin_or_session(req: &Request, env: &Env) -> Result<(), GatewayError> {
    match authenticate_admin(req, env) {
        Ok(()) => Ok(()),
        Err(GatewayError::Unauthorized { .. }) if dashboard::has_session(req, env)? => Ok(()),
        Err(e) => Err(e),
    }
}
