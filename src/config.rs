//! Operator-owned gateway configuration: typed, strict (unknown fields are
//! errors), validated before deploy by a test over every `[env.*]` in
//! `wrangler.toml`, and parsed once per isolate at run time.
//!
//! It lives in `wrangler.toml` as the `[vars.GATEWAY]` table. Secrets are never
//! in it: a provider names the Worker secret that holds its key.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::providers::openai_compat;

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Providers by name; the name is what clients write before the slash in
    /// `"provider/model"`.
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Bare model names and aliases → `"provider/model"`.
    #[serde(default)]
    pub models: BTreeMap<String, String>,
    #[serde(default)]
    pub limits: Limits,
}

/// One configured provider.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Which implementation: a row of `providers::openai_compat`, or `demo`.
    /// Defaults to the provider's name.
    #[serde(default)]
    pub kind: Option<String>,
    /// Overrides the kind's default base URL (operator only; clients can never
    /// choose an upstream).
    #[serde(default)]
    pub base_url: Option<String>,
    /// Name of the Worker secret that holds this provider's key; defaults to the
    /// kind's (e.g. `OPENAI_API_KEY`).
    #[serde(default)]
    pub api_key_secret: Option<String>,
    /// Model ids advertised by `GET /v1/models` as `"provider/model"`. Requests
    /// for other models of this provider are still forwarded.
    #[serde(default)]
    pub models: Vec<String>,
}

/// Request limits.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest accepted request body.
    pub max_body_bytes: u64,
    /// Deepest accepted JSON nesting.
    pub max_json_depth: u32,
    /// Largest accepted non-streamed upstream response body.
    pub max_upstream_body_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 4 * 1024 * 1024,
            max_json_depth: 64,
            max_upstream_body_bytes: 32 * 1024 * 1024,
        }
    }
}

/// The built-in deterministic provider used by `make dev` before any real key
/// is configured.
pub const DEMO_KIND: &str = "demo";

/// What kind of implementation a provider resolves to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolvedKind {
    Compat(&'static openai_compat::CompatRow),
    Demo,
}

impl ProviderConfig {
    pub fn kind_name<'a>(&'a self, name: &'a str) -> &'a str {
        self.kind.as_deref().unwrap_or(name)
    }

    pub fn resolved_kind(&self, name: &str) -> Option<ResolvedKind> {
        let kind = self.kind_name(name);
        if kind == DEMO_KIND {
            return Some(ResolvedKind::Demo);
        }
        openai_compat::row(kind).map(ResolvedKind::Compat)
    }

    /// The base URL requests go to, without a trailing slash.
    pub fn base_url(&self, name: &str) -> Option<String> {
        match (self.resolved_kind(name)?, &self.base_url) {
            (_, Some(url)) => Some(url.trim_end_matches('/').to_owned()),
            (ResolvedKind::Compat(row), None) => Some(row.default_base_url.to_owned()),
            (ResolvedKind::Demo, None) => None,
        }
    }

    pub fn secret_name(&self, name: &str) -> Option<String> {
        match self.resolved_kind(name)? {
            ResolvedKind::Demo => None,
            ResolvedKind::Compat(row) => Some(
                self.api_key_secret
                    .clone()
                    .unwrap_or_else(|| row.default_secret.to_owned()),
            ),
        }
    }
}

impl GatewayConfig {
    /// Parses and validates a config given as JSON (how Workers exposes a
    /// `[vars]` table, or a JSON string override).
    pub fn from_json(value: serde_json::Value) -> Result<Self, Vec<String>> {
        let config: Self = serde_json::from_value(value).map_err(|e| vec![e.to_string()])?;
        config.validate()?;
        Ok(config)
    }

    /// Every problem at once, so an operator fixes the file in one pass.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        for (name, p) in &self.providers {
            if name.is_empty()
                || name.len() > 32
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                errors.push(format!(
                    "providers.{name}: a provider name is 1-32 characters of a-z, 0-9 and '-'"
                ));
            }
            let Some(kind) = p.resolved_kind(name) else {
                errors.push(format!(
                    "providers.{name}: unknown kind '{}' (known: {}, {DEMO_KIND})",
                    p.kind_name(name),
                    openai_compat::ROWS
                        .iter()
                        .map(|r| r.kind)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                continue;
            };
            if let Some(url) = &p.base_url {
                if let Err(e) = validate_base_url(url, kind) {
                    errors.push(format!("providers.{name}.base_url: {e}"));
                }
            }
            if kind == ResolvedKind::Demo && (p.base_url.is_some() || p.api_key_secret.is_some()) {
                errors.push(format!(
                    "providers.{name}: the demo provider takes neither base_url nor api_key_secret"
                ));
            }
            if let Some(secret) = &p.api_key_secret {
                if secret.is_empty()
                    || !secret
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
                {
                    errors.push(format!(
                        "providers.{name}.api_key_secret: a secret name is A-Z, 0-9 and '_'"
                    ));
                }
            }
            for m in &p.models {
                if m.is_empty() || m.len() > 256 {
                    errors.push(format!(
                        "providers.{name}.models: model ids are 1-256 characters"
                    ));
                }
            }
        }
        for (alias, target) in &self.models {
            if alias.is_empty() || alias.len() > 256 {
                errors.push(format!("models.{alias}: aliases are 1-256 characters"));
            }
            match target.split_once('/') {
                Some((provider, model)) if !model.is_empty() => {
                    if !self.providers.contains_key(provider) {
                        errors.push(format!(
                            "models.{alias}: provider '{provider}' is not configured"
                        ));
                    }
                }
                _ => errors.push(format!(
                    "models.{alias}: target '{target}' must be 'provider/model'"
                )),
            }
        }
        let l = &self.limits;
        if !(1024..=100 * 1024 * 1024).contains(&l.max_body_bytes) {
            errors.push("limits.max_body_bytes: must be between 1 KiB and 100 MiB".to_owned());
        }
        if !(4..=128).contains(&l.max_json_depth) {
            errors.push("limits.max_json_depth: must be between 4 and 128".to_owned());
        }
        if !(1024..=128 * 1024 * 1024).contains(&l.max_upstream_body_bytes) {
            errors.push(
                "limits.max_upstream_body_bytes: must be between 1 KiB and 128 MiB".to_owned(),
            );
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// A base URL must be absolute http(s), carry no credentials, query or
/// fragment, and use https unless it points at this machine or at a
/// self-hosted kind (Ollama, vLLM) that commonly runs on a private network.
fn validate_base_url(raw: &str, kind: ResolvedKind) -> Result<(), String> {
    let url = url::Url::parse(raw).map_err(|e| format!("not a URL ({e})"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain credentials".to_owned());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not contain a query or fragment".to_owned());
    }
    let host = url.host_str().unwrap_or_default();
    let loopback = host == "localhost"
        || host == "[::1]"
        || host
            .parse::<std::net::Ipv4Addr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false);
    let self_hosted =
        matches!(kind, ResolvedKind::Compat(r) if r.auth == openai_compat::Auth::OptionalBearer);
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback || self_hosted => Ok(()),
        "http" => {
            Err("must use https (http is allowed only for loopback or ollama/vllm)".to_owned())
        }
        other => Err(format!("scheme '{other}' is not allowed")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn minimal_config_is_valid() {
        let c = GatewayConfig::from_json(json!({
            "providers": {"demo": {"kind": "demo", "models": ["echo"]}, "openai": {}},
            "models": {"gpt-4o-mini": "openai/gpt-4o-mini"}
        }))
        .unwrap();
        let openai = &c.providers["openai"];
        assert_eq!(
            openai.base_url("openai").as_deref(),
            Some("https://api.openai.com/v1")
        );
        assert_eq!(
            openai.secret_name("openai").as_deref(),
            Some("OPENAI_API_KEY")
        );
        assert_eq!(c.limits, Limits::default());
    }

    #[test]
    fn unknown_fields_are_rejected_at_every_level() {
        for bad in [
            json!({"providerz": {}}),
            json!({"providers": {"openai": {"api_key": "sk-x"}}}),
            json!({"limits": {"max_body": 1}}),
        ] {
            let err = GatewayConfig::from_json(bad.clone()).unwrap_err();
            assert!(err[0].contains("unknown field"), "{bad}: {err:?}");
        }
    }

    #[test]
    fn validation_collects_every_problem() {
        let err = GatewayConfig::from_json(json!({
            "providers": {
                "Bad Name": {"kind": "openai"},
                "x": {"kind": "nope"},
                "plain": {"kind": "openai", "base_url": "http://api.example.com/v1"},
                "creds": {"kind": "openai", "base_url": "https://u:p@api.example.com/v1"},
                "lower": {"kind": "openai", "api_key_secret": "lower_case"}
            },
            "models": {"a": "missing/model", "b": "no-slash"},
            "limits": {"max_json_depth": 1}
        }))
        .unwrap_err();
        let all = err.join("\n");
        for needle in [
            "providers.Bad Name",
            "unknown kind 'nope'",
            "must use https",
            "credentials",
            "api_key_secret",
            "provider 'missing' is not configured",
            "must be 'provider/model'",
            "max_json_depth",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in\n{all}");
        }
    }

    #[test]
    fn loopback_and_self_hosted_may_use_http() {
        GatewayConfig::from_json(json!({"providers": {
            "openai": {"base_url": "http://127.0.0.1:9999/v1"},
            "local": {"kind": "ollama", "base_url": "http://10.0.0.5:11434/v1"}
        }}))
        .unwrap();
        let err = GatewayConfig::from_json(
            json!({"providers": {"openai": {"base_url": "ftp://127.0.0.1/v1"}}}),
        )
        .unwrap_err();
        assert!(err[0].contains("scheme"));
    }

    /// Every environment in wrangler.toml carries a valid config (`[env.X]` does
    /// not inherit `vars`, so each must define its own).
    #[test]
    fn every_wrangler_env_has_a_valid_config() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/wrangler.toml")).unwrap();
        let doc: toml::Value = toml::from_str(&text).unwrap();
        let mut checked = vec![];
        let top = doc["vars"]["GATEWAY"].clone();
        GatewayConfig::from_json(serde_json::to_value(top).unwrap())
            .unwrap_or_else(|e| panic!("top-level: {e:?}"));
        checked.push("(top level)".to_owned());
        if let Some(envs) = doc.get("env").and_then(|e| e.as_table()) {
            for (name, env) in envs {
                let cfg = env
                    .get("vars")
                    .and_then(|v| v.get("GATEWAY"))
                    .unwrap_or_else(|| panic!("[env.{name}] has no vars.GATEWAY"));
                GatewayConfig::from_json(serde_json::to_value(cfg.clone()).unwrap())
                    .unwrap_or_else(|e| panic!("[env.{name}]: {e:?}"));
                checked.push(name.clone());
            }
        }
        assert!(
            checked.len() >= 2,
            "expected a production env too: {checked:?}"
        );
    }
}
