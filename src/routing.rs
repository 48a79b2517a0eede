//! Model addressing: which provider and which provider model a request's
//! `model` value means.
//!
//! Order: a configured alias or bare model name (`models` in config) first, then
//! `"provider/model"` split at the first slash (so OpenRouter's own
//! `"openrouter/anthropic/claude-sonnet-4.5"` works). Anything else is a 404
//! `model_not_found`, never a guess.

use crate::config::GatewayConfig;
use crate::error::GatewayError;

/// A resolved upstream: a configured provider name and the model id to send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub provider: String,
    pub model: String,
}

impl Target {
    /// `"provider/model"`.
    pub fn qualified(&self) -> String {
        format!("{}/{}", self.provider, self.model)
    }
}

pub fn resolve(config: &GatewayConfig, requested: &str) -> Result<Target, GatewayError> {
    let not_found = || GatewayError::ModelNotFound {
        model: requested.to_owned(),
    };
    let qualified = config
        .models
        .get(requested)
        .map(String::as_str)
        .unwrap_or(requested);
    let (provider, model) = qualified.split_once('/').ok_or_else(not_found)?;
    if model.is_empty() || !config.providers.contains_key(provider) {
        return Err(not_found());
    }
    Ok(Target {
        provider: provider.to_owned(),
        model: model.to_owned(),
    })
}

/// Every model id `GET /v1/models` advertises: aliases, then each provider's
/// listed models as `"provider/model"`, with the provider that owns each.
pub fn listed_models(config: &GatewayConfig) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = config
        .models
        .iter()
        .map(|(alias, target)| {
            let owner = target.split_once('/').map(|(p, _)| p).unwrap_or_default();
            (alias.clone(), owner.to_owned())
        })
        .collect();
    for (name, p) in &config.providers {
        for m in &p.models {
            out.push((format!("{name}/{m}"), name.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config() -> GatewayConfig {
        GatewayConfig::from_json(json!({
            "providers": {
                "openai": {"models": ["gpt-4o-mini"]},
                "openrouter": {},
                "demo": {"kind": "demo", "models": ["echo"]}
            },
            "models": {"gpt-4o-mini": "openai/gpt-4o-mini", "fast": "demo/echo"}
        }))
        .unwrap()
    }

    #[test]
    fn alias_then_provider_slash_model() {
        let c = config();
        assert_eq!(resolve(&c, "fast").unwrap().qualified(), "demo/echo");
        assert_eq!(
            resolve(&c, "gpt-4o-mini").unwrap().qualified(),
            "openai/gpt-4o-mini"
        );
        assert_eq!(
            resolve(&c, "openai/gpt-4.1").unwrap(),
            Target {
                provider: "openai".into(),
                model: "gpt-4.1".into()
            }
        );
        let t = resolve(&c, "openrouter/anthropic/claude-sonnet-4.5").unwrap();
        assert_eq!(t.provider, "openrouter");
        assert_eq!(t.model, "anthropic/claude-sonnet-4.5");
    }

    #[test]
    fn unknown_is_404() {
        let c = config();
        for m in ["gpt-5", "nope/model", "openai/", "/x"] {
            let e = resolve(&c, m).unwrap_err();
            assert_eq!(e.status(), 404, "{m}");
            assert_eq!(e.code(), "model_not_found");
        }
    }

    #[test]
    fn listing_has_aliases_and_provider_models() {
        let ids: Vec<String> = listed_models(&config())
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(
            ids,
            vec!["fast", "gpt-4o-mini", "demo/echo", "openai/gpt-4o-mini"]
        );
    }
}
