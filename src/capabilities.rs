//! What a model can do — context window, tools, images, JSON mode — and what
//! a request needs, for the `cost` routing strategy (the cheapest link that
//! can actually serve the request).
//!
//! `data/capabilities.json` (embedded) is keyed like the price table
//! (`kind/model`, same date/version-suffix matching); operators add or correct
//! entries in `[vars.GATEWAY.capabilities."kind/model"]`. A model with no
//! entry has *unknown* capabilities: it serves plain text requests, but is
//! never chosen for a request that needs tools, images or JSON mode — a
//! guess there would send the request to a model that drops the tools or the
//! image silently.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One model's capabilities.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// Prompt plus output, in tokens.
    pub context_window: u64,
    #[serde(default)]
    pub max_output_tokens: Option<u64>,
    pub tools: bool,
    pub vision: bool,
    pub json_mode: bool,
}

#[derive(Deserialize)]
struct Table {
    models: BTreeMap<String, Capabilities>,
}

const BUILTIN_JSON: &str = include_str!("../data/capabilities.json");

/// The built-in table (parsed once; a table that does not parse is empty,
/// which only makes the `cost` strategy more careful — and a unit test keeps
/// it parsing).
fn builtin() -> &'static BTreeMap<String, Capabilities> {
    static TABLE: OnceLock<BTreeMap<String, Capabilities>> = OnceLock::new();
    TABLE.get_or_init(|| {
        serde_json::from_str::<Table>(BUILTIN_JSON)
            .map(|t| t.models)
            .unwrap_or_default()
    })
}

/// The capabilities of `kind/model`: an operator entry first, then the
/// built-in table; `None` when unknown.
pub fn lookup<'a>(
    overrides: &'a BTreeMap<String, Capabilities>,
    kind: &str,
    model: &str,
) -> Option<&'a Capabilities> {
    crate::pricing::resolve_versioned(overrides, kind, model)
        .or_else(|| crate::pricing::resolve_versioned(builtin(), kind, model))
        .map(|(_, c)| c)
}

/// What a chat request needs from the model that answers it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    pub tools: bool,
    pub vision: bool,
    pub json_mode: bool,
    /// Estimated prompt tokens (about 4 bytes each) plus the requested output.
    pub context_tokens: u64,
    /// The requested output (`max_completion_tokens` / `max_tokens`), if any.
    pub output_tokens: Option<u64>,
}

impl Needs {
    /// Reads a canonical (OpenAI-format) chat body.
    pub fn of(body: &Map<String, Value>, body_bytes: u64) -> Self {
        let tools = body
            .get("tools")
            .and_then(Value::as_array)
            .is_some_and(|t| !t.is_empty())
            || body.get("functions").is_some();
        let vision = body
            .get("messages")
            .and_then(Value::as_array)
            .is_some_and(|ms| {
                ms.iter().any(|m| {
                    m.get("content")
                        .and_then(Value::as_array)
                        .is_some_and(|parts| {
                            parts
                                .iter()
                                .any(|p| p.get("type").and_then(Value::as_str) == Some("image_url"))
                        })
                })
            });
        let json_mode = body
            .get("response_format")
            .and_then(|f| f.get("type"))
            .and_then(Value::as_str)
            .is_some_and(|t| t == "json_object" || t == "json_schema");
        let output_tokens = ["max_completion_tokens", "max_tokens"]
            .iter()
            .find_map(|k| body.get(*k).and_then(Value::as_u64));
        Self {
            tools,
            vision,
            json_mode,
            context_tokens: body_bytes
                .div_ceil(4)
                .saturating_add(output_tokens.unwrap_or(0)),
            output_tokens,
        }
    }

    /// What `caps` lacks for this request (empty = it can serve it).
    pub fn unmet(&self, caps: Option<&Capabilities>) -> Vec<&'static str> {
        let Some(c) = caps else {
            let mut unknown = Vec::new();
            if self.tools {
                unknown.push("tools (unknown)");
            }
            if self.vision {
                unknown.push("vision (unknown)");
            }
            if self.json_mode {
                unknown.push("json_mode (unknown)");
            }
            return unknown;
        };
        let mut unmet = Vec::new();
        if self.tools && !c.tools {
            unmet.push("tools");
        }
        if self.vision && !c.vision {
            unmet.push("vision");
        }
        if self.json_mode && !c.json_mode {
            unmet.push("json_mode");
        }
        if self.context_tokens > c.context_window {
            unmet.push("context_length");
        }
        if let (Some(want), Some(max)) = (self.output_tokens, c.max_output_tokens) {
            if want > max {
                unmet.push("max_output_tokens");
            }
        }
        unmet
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn the_builtin_table_parses_and_matches_dated_ids() {
        assert!(builtin().len() >= 30);
        let none = BTreeMap::new();
        let c = lookup(&none, "openai", "gpt-4o-mini-2024-07-18").unwrap();
        assert!(c.tools && c.vision && c.json_mode);
        assert_eq!(c.context_window, 128_000);
        assert!(!lookup(&none, "openai", "o3-mini").unwrap().vision);
        assert!(lookup(&none, "openai", "no-such-model").is_none());
    }

    #[test]
    fn operator_entries_win() {
        let mut overrides = BTreeMap::new();
        overrides.insert(
            "openai/gpt-4o-mini".to_owned(),
            Capabilities {
                context_window: 10,
                max_output_tokens: None,
                tools: false,
                vision: false,
                json_mode: false,
            },
        );
        assert!(!lookup(&overrides, "openai", "gpt-4o-mini").unwrap().tools);
    }

    #[test]
    fn needs_of_a_request() {
        let n = Needs::of(
            &body(json!({
                "messages": [{"role": "user", "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "https://x/y.png"}}
                ]}],
                "tools": [{"type": "function", "function": {"name": "f"}}],
                "response_format": {"type": "json_schema", "json_schema": {}},
                "max_tokens": 100
            })),
            400,
        );
        assert_eq!(
            n,
            Needs {
                tools: true,
                vision: true,
                json_mode: true,
                context_tokens: 200,
                output_tokens: Some(100)
            }
        );
        let plain = Needs::of(&body(json!({"messages": [], "tools": []})), 8);
        assert_eq!(
            (plain.tools, plain.vision, plain.json_mode),
            (false, false, false)
        );
    }

    #[test]
    fn unmet_needs() {
        let c = Capabilities {
            context_window: 1_000,
            max_output_tokens: Some(100),
            tools: true,
            vision: false,
            json_mode: true,
        };
        let n = Needs {
            tools: true,
            vision: true,
            json_mode: false,
            context_tokens: 2_000,
            output_tokens: Some(500),
        };
        assert_eq!(
            n.unmet(Some(&c)),
            ["vision", "context_length", "max_output_tokens"]
        );
        assert!(
            Needs::default().unmet(None).is_empty(),
            "plain text: unknown is fine"
        );
        assert_eq!(
            Needs {
                tools: true,
                ..Needs::default()
            }
            .unmet(None),
            ["tools (unknown)"]
        );
    }
}
