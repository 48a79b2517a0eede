//! Virtual keys: format, hashing, and what a key may do.
//!
//! A virtual key is `tg-` followed by 48 hex characters (192 random bits). The
//! gateway stores only its SHA-256; the plaintext is shown once, when the key
//! is created. A malformed bearer is rejected before any database lookup, so
//! injection strings and oversized headers never reach D1.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::GatewayError;

pub const KEY_PREFIX: &str = "tg-";
const KEY_RANDOM_BYTES: usize = 24;
/// Longest bearer value considered (a real key is 51 characters; the slack
/// leaves room for future formats without allowing a 16 KB header through).
const MAX_BEARER_LEN: usize = 128;

/// Makes a new key from 24 random bytes.
pub fn format_key(random: &[u8; KEY_RANDOM_BYTES]) -> String {
    format!("{KEY_PREFIX}{}", hex::encode(random))
}

/// An id for a key record (not secret; shown in lists and the ledger).
pub fn format_key_id(random: &[u8; 8]) -> String {
    format!("key_{}", hex::encode(random))
}

/// Lowercase hex SHA-256: what D1 stores and looks keys up by.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The first characters of a key, safe to display so people can tell keys apart.
pub fn display_prefix(key: &str) -> String {
    key.chars().take(KEY_PREFIX.len() + 6).collect()
}

const UNAUTHORIZED_MISSING: GatewayError = GatewayError::Unauthorized {
    message: "Missing API key. Send your tollgate virtual key as 'Authorization: Bearer tg-…'.",
};
const UNAUTHORIZED_INVALID: GatewayError = GatewayError::Unauthorized {
    message:
        "Invalid API key. Use a tollgate virtual key (tg-…); provider keys are not accepted here.",
};

/// Extracts a syntactically valid virtual key from an `Authorization` header
/// value (or an `x-api-key` value, where `bearer_scheme` is false).
pub fn parse_presented_key(value: Option<&str>, bearer_scheme: bool) -> Result<&str, GatewayError> {
    let Some(value) = value else {
        return Err(UNAUTHORIZED_MISSING);
    };
    let value = value.trim();
    if value.is_empty() {
        return Err(UNAUTHORIZED_MISSING);
    }
    let token = if bearer_scheme {
        let Some((scheme, rest)) = value.split_once(' ') else {
            return Err(UNAUTHORIZED_INVALID);
        };
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(UNAUTHORIZED_INVALID);
        }
        rest.trim()
    } else {
        value
    };
    let well_formed = token.len() <= MAX_BEARER_LEN
        && token.starts_with(KEY_PREFIX)
        && token.len() > KEY_PREFIX.len()
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if well_formed {
        Ok(token)
    } else {
        Err(UNAUTHORIZED_INVALID)
    }
}

/// Error for a well-formed key that is unknown or revoked (the same message
/// for both, so the response does not reveal which keys exist).
pub const UNAUTHORIZED_UNKNOWN: GatewayError = GatewayError::Unauthorized {
    message: "Invalid or revoked API key.",
};

/// A key as the gateway sees it at request time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyGrant {
    pub id: String,
    pub name: String,
    /// `None`: every configured model. Otherwise patterns: an exact model value
    /// as the client sends it (alias or `provider/model`), `provider/*`, or `*`.
    pub allowed_models: Option<Vec<String>>,
    /// May send an inline route in `x-tollgate-config`.
    #[serde(default)]
    pub allow_inline_config: bool,
    /// Budgets and rate limits, enforced by the key's `KeyBudget` Durable
    /// Object; `None`: unlimited (no Durable Object call at all).
    #[serde(default)]
    pub limits: Option<crate::budget::Limits>,
    /// This key's cache policy (over the global one).
    #[serde(default)]
    pub cache: Option<crate::cache::CachePolicy>,
    /// The team/project the key belongs to, whose limits also apply.
    #[serde(default)]
    pub project: Option<ProjectGrant>,
    /// This key's guardrails (over the global ones; a route's go over these).
    #[serde(default)]
    pub guardrails: Option<crate::guardrails::GuardrailPolicy>,
    /// Tier when requests wait for provider capacity (`queue.rs`).
    #[serde(default)]
    pub priority: crate::queue::Priority,
}

/// A key's parent (team or project): its own limits, enforced by its own
/// `KeyBudget` Durable Object over the spend of all its keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectGrant {
    pub id: String,
    /// `None`: the project groups keys (ledger, dashboard) but limits nothing.
    pub limits: Option<crate::budget::Limits>,
}

/// Whose budget a Durable Object holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScopeKind {
    Key,
    Project,
}

/// One budget a request must fit: the key's own, or its project's.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetScope {
    pub kind: ScopeKind,
    pub id: String,
    pub limits: crate::budget::Limits,
}

impl BudgetScope {
    /// The Durable Object's name. A key's is its id (`key_…`), a project's is
    /// prefixed, so an operator-chosen project id can never name a key's object.
    pub fn object_name(&self) -> String {
        match self.kind {
            ScopeKind::Key => self.id.clone(),
            ScopeKind::Project => format!("project:{}", self.id),
        }
    }
}

/// Project ids are chosen by the operator: 1-64 of `a-z 0-9 _ -`, so they
/// are safe in URLs, logs and Durable Object names.
pub fn validate_project_id(id: &str) -> Result<(), GatewayError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(GatewayError::invalid_param(
            "project_id",
            "A project id is 1-64 characters of a-z, 0-9, '_' and '-'.",
        ))
    }
}

impl KeyGrant {
    /// The budgets a request with this key must fit, key first: none for a key
    /// without limits whose project (if any) has none (no Durable Object call).
    pub fn budget_scopes(&self) -> Vec<BudgetScope> {
        let mut scopes = Vec::new();
        if let Some(limits) = &self.limits {
            scopes.push(BudgetScope {
                kind: ScopeKind::Key,
                id: self.id.clone(),
                limits: limits.clone(),
            });
        }
        if let Some(ProjectGrant {
            id,
            limits: Some(limits),
        }) = &self.project
        {
            scopes.push(BudgetScope {
                kind: ScopeKind::Project,
                id: id.clone(),
                limits: limits.clone(),
            });
        }
        scopes
    }

    /// Whether this key may call `requested`, which resolved to
    /// `provider/model`. Both spellings are checked so a grant on the alias
    /// `"smart"` or on `"openai/*"` works either way.
    pub fn may_use(&self, requested: &str, provider: &str, qualified: &str) -> bool {
        let Some(patterns) = &self.allowed_models else {
            return true;
        };
        patterns.iter().any(|p| {
            p == "*" || p == requested || p == qualified || p.strip_suffix("/*") == Some(provider)
        })
    }

    pub fn check_model(
        &self,
        requested: &str,
        provider: &str,
        qualified: &str,
    ) -> Result<(), GatewayError> {
        if self.may_use(requested, provider, qualified) {
            Ok(())
        } else {
            Err(GatewayError::Forbidden {
                message: format!("This API key is not allowed to use the model '{requested}'."),
                code: "model_not_allowed",
            })
        }
    }
}

/// Validates an `allowed_models` list sent to the admin API.
pub fn validate_allowed_models(list: &[String]) -> Result<(), GatewayError> {
    if list.len() > 256 {
        return Err(GatewayError::invalid_param(
            "allowed_models",
            "At most 256 entries.",
        ));
    }
    for p in list {
        if p.is_empty() || p.len() > 256 || p.chars().any(char::is_control) {
            return Err(GatewayError::invalid_param(
                "allowed_models",
                "Entries are 1-256 printable characters: a model, an alias, 'provider/*' or '*'.",
            ));
        }
        if p.contains('*') && p != "*" && !(p.ends_with("/*") && p.matches('*').count() == 1) {
            return Err(GatewayError::invalid_param(
                "allowed_models",
                "The only wildcards are '*' and 'provider/*'.",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_format_and_hash() {
        let k = format_key(&[0xab; 24]);
        assert_eq!(k.len(), 3 + 48);
        assert!(k.starts_with("tg-abab"));
        assert_eq!(
            parse_presented_key(Some(&format!("Bearer {k}")), true).unwrap(),
            k
        );
        // Known SHA-256 vector.
        assert_eq!(
            hash_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(display_prefix(&k), "tg-ababab");
        assert_eq!(format_key_id(&[1; 8]), "key_0101010101010101");
    }

    #[test]
    fn malformed_bearers_are_401_without_lookup() {
        let long = format!("Bearer tg-{}", "a".repeat(16 * 1024));
        for bad in [
            None,
            Some(""),
            Some("Bearer"),
            Some("Basic dGc="),
            Some("Bearer sk-proj-abc"),
            Some("Bearer ' OR '1'='1"),
            Some("Bearer tg-x';DROP TABLE virtual_keys;--"),
            Some("Bearer tg-\0abc"),
            Some("Bearer tg-"),
            Some(long.as_str()),
        ] {
            let e = parse_presented_key(bad, true).unwrap_err();
            assert_eq!(e.status(), 401, "{bad:?}");
        }
        assert_eq!(
            parse_presented_key(Some("bearer   tg-abc  "), true).unwrap(),
            "tg-abc"
        );
        assert_eq!(
            parse_presented_key(Some("tg-abc"), false).unwrap(),
            "tg-abc"
        );
    }

    #[test]
    fn allowed_models() {
        let mut g = KeyGrant {
            id: "key_1".into(),
            name: "n".into(),
            allowed_models: None,
            allow_inline_config: false,
            limits: None,
            cache: None,
            project: None,
            guardrails: None,
            priority: crate::queue::Priority::Standard,
        };
        assert!(g.may_use("anything", "openai", "openai/gpt-4o"));
        g.allowed_models = Some(vec!["openai/*".into(), "fast".into()]);
        assert!(g.may_use("openai/gpt-4o", "openai", "openai/gpt-4o"));
        assert!(g.may_use("gpt-4o", "openai", "openai/gpt-4o"));
        assert!(g.may_use("fast", "demo", "demo/echo"));
        assert!(!g.may_use("demo/echo", "demo", "demo/echo"));
        assert!(!g.may_use("openaix/m", "openaix", "openaix/m"));
        assert_eq!(
            g.check_model("demo/echo", "demo", "demo/echo")
                .unwrap_err()
                .status(),
            403
        );
        g.allowed_models = Some(vec![]);
        assert!(!g.may_use("x", "p", "p/x"));
    }

    #[test]
    fn budget_scopes_key_then_project_and_object_names_cannot_collide() {
        let limits = crate::budget::Limits {
            rpm: Some(5),
            ..Default::default()
        };
        let mut g = KeyGrant {
            id: "key_1".into(),
            name: "n".into(),
            allowed_models: None,
            allow_inline_config: false,
            limits: None,
            cache: None,
            project: Some(ProjectGrant {
                id: "search".into(),
                limits: None,
            }),
            guardrails: None,
            priority: crate::queue::Priority::Standard,
        };
        assert!(g.budget_scopes().is_empty());
        g.project = Some(ProjectGrant {
            id: "key_1".into(),
            limits: Some(limits.clone()),
        });
        g.limits = Some(limits);
        let scopes = g.budget_scopes();
        assert_eq!(
            scopes.iter().map(|s| s.kind).collect::<Vec<_>>(),
            [ScopeKind::Key, ScopeKind::Project]
        );
        // A project named like a key still gets its own object.
        assert_eq!(scopes[0].object_name(), "key_1");
        assert_eq!(scopes[1].object_name(), "project:key_1");
    }

    #[test]
    fn project_ids() {
        for ok in ["search", "team-a_2", &"a".repeat(64)] {
            assert!(validate_project_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Search", "a b", "a/b", "p:x", &"a".repeat(65)] {
            assert_eq!(validate_project_id(bad).unwrap_err().status(), 400, "{bad}");
        }
    }

    #[test]
    fn allowed_models_validation() {
        validate_allowed_models(&["*".into(), "openai/*".into(), "gpt-4o".into()]).unwrap();
        assert!(validate_allowed_models(&["open*".into()]).is_err());
        assert!(validate_allowed_models(&["".into()]).is_err());
        assert!(validate_allowed_models(&["a/*/*".into()]).is_err());
    }
}
