//! OpenAI and every OpenAI-compatible provider, as rows of data.
//!
//! Adding a provider that speaks OpenAI's `/chat/completions` and `/embeddings`
//! wire format is one row here plus a `kind` value in `config.rs`. Anything that
//! needs a different wire format gets its own module instead.

use serde_json::{Map, Value};

/// How a provider reports token usage in a streamed response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamUsage {
    /// Honours `stream_options.include_usage` and then sends a final chunk with
    /// `choices: []` and `usage` (OpenAI's documented behaviour). The gateway
    /// always asks for it, so usage is never lost, and strips that chunk again
    /// when the client did not ask for it.
    IncludeUsageOption,
    /// Sends usage in the last content chunk on its own, and rejects unknown
    /// request fields such as `stream_options` (Mistral).
    AlwaysInFinalChunk,
}

/// How the provider key is presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// `Authorization: Bearer <key>`.
    Bearer,
    /// `Authorization: Bearer <key>` when a key is configured, nothing otherwise
    /// (self-hosted servers such as Ollama and vLLM usually run without one).
    OptionalBearer,
}

/// One OpenAI-compatible provider.
#[derive(Debug, PartialEq, Eq)]
pub struct CompatRow {
    /// The `kind` value in config.
    pub kind: &'static str,
    /// Base URL up to and including the version segment; paths such as
    /// `/chat/completions` are appended.
    pub default_base_url: &'static str,
    /// Worker secret holding the key unless config names another.
    pub default_secret: &'static str,
    pub auth: Auth,
    pub stream_usage: StreamUsage,
    pub supports_embeddings: bool,
    /// The URL is per account: the operator must set `base_url`.
    pub requires_base_url: bool,
}

/// The table. Base URLs are the providers' documented OpenAI-compatible
/// endpoints.
pub const ROWS: &[CompatRow] = &[
    // https://platform.openai.com/docs/api-reference/chat
    CompatRow {
        kind: "openai",
        default_base_url: "https://api.openai.com/v1",
        default_secret: "OPENAI_API_KEY",
        auth: Auth::Bearer,
        stream_usage: StreamUsage::IncludeUsageOption,
        supports_embeddings: true,
        requires_base_url: false,
    },
    // https://console.groq.com/docs/openai
    CompatRow {
        kind: "groq",
        default_base_url: "https://api.groq.com/openai/v1",
        default_secret: "GROQ_API_KEY",
        auth: Auth::Bearer,
        stream_usage: StreamUsage::IncludeUsageOption,
        supports_embeddings: false,
        requires_base_url: false,
    },
    // https://docs.mistral.ai/api/ — rejects unknown fields; usage arrives in the
    // last chunk without asking.
    CompatRow {
        kind: "mistral",
        default_base_url: "https://api.mistral.ai/v1",
        default_secret: "MISTRAL_API_KEY",
        auth: Auth::Bearer,
        stream_usage: StreamUsage::AlwaysInFinalChunk,
        supports_embeddings: true,
        requires_base_url: false,
    },
    // https://api-docs.deepseek.com/
    CompatRow {
        kind: "deepseek",
        default_base_url: "https://api.deepseek.com/v1",
        default_secret: "DEEPSEEK_API_KEY",
        auth: Auth::Bearer,
        stream_usage: StreamUsage::IncludeUsageOption,
        supports_embeddings: false,
        requires_base_url: false,
    },
    // https://openrouter.ai/docs/api-reference/overview — model ids contain a
    // slash themselves ("openrouter/anthropic/claude-sonnet-4.5").
    CompatRow {
        kind: "openrouter",
        default_base_url: "https://openrouter.ai/api/v1",
        default_secret: "OPENROUTER_API_KEY",
        auth: Auth::Bearer,
        stream_usage: StreamUsage::IncludeUsageOption,
        supports_embeddings: true,
        requires_base_url: false,
    },
    // https://docs.together.ai/docs/openai-api-compatibility
    CompatRow {
        kind: "together",
        default_base_url: "https://api.together.xyz/v1",
        default_secret: "TOGETHER_API_KEY",
        auth: Auth::Bearer,
        stream_usage: StreamUsage::IncludeUsageOption,
        supports_embeddings: true,
        requires_base_url: false,
    },
    // https://docs.fireworks.ai/tools-sdks/openai-compatibility
    CompatRow {
        kind: "fireworks",
        default_base_url: "https://api.fireworks.ai/inference/v1",
        default_secret: "FIREWORKS_API_KEY",
        auth: Auth::Bearer,
        stream_usage: StreamUsage::IncludeUsageOption,
        supports_embeddings: true,
        requires_base_url: false,
    },
    // https://docs.x.ai/docs/api-reference
    CompatRow {
        kind: "xai",
        default_base_url: "https://api.x.ai/v1",
        default_secret: "XAI_API_KEY",
        auth: Auth::Bearer,
        stream_usage: StreamUsage::IncludeUsageOption,
        supports_embeddings: false,
        requires_base_url: false,
    },
    // https://github.com/ollama/ollama/blob/main/docs/openai.md
    CompatRow {
        kind: "ollama",
        default_base_url: "http://127.0.0.1:11434/v1",
        default_secret: "OLLAMA_API_KEY",
        auth: Auth::OptionalBearer,
        stream_usage: StreamUsage::IncludeUsageOption,
        supports_embeddings: true,
        requires_base_url: false,
    },
    // https://developers.cloudflare.com/workers-ai/configuration/open-ai-compatibility/
    // — the REST endpoint carries the account id, so the operator sets
    // base_url = "https://api.cloudflare.com/client/v4/accounts/<ACCOUNT_ID>/ai/v1"
    // and the key is an API token with Workers AI permission. Model ids look
    // like "@cf/meta/llama-3.1-8b-instruct".
    CompatRow {
        kind: "workers-ai",
        default_base_url: "https://api.cloudflare.com/client/v4/accounts/ACCOUNT_ID/ai/v1",
        default_secret: "CLOUDFLARE_API_TOKEN",
        auth: Auth::Bearer,
        stream_usage: StreamUsage::IncludeUsageOption,
        supports_embeddings: true,
        requires_base_url: true,
    },
    // https://docs.vllm.ai/en/latest/serving/openai_compatible_server.html
    CompatRow {
        kind: "vllm",
        default_base_url: "http://127.0.0.1:8000/v1",
        default_secret: "VLLM_API_KEY",
        auth: Auth::OptionalBearer,
        stream_usage: StreamUsage::IncludeUsageOption,
        supports_embeddings: true,
        requires_base_url: false,
    },
];

pub fn row(kind: &str) -> Option<&'static CompatRow> {
    ROWS.iter().find(|r| r.kind == kind)
}

/// Rewrites a client's chat body for this provider: the provider's own model
/// id, and usage always requested on streams so that no streamed call is ever
/// counted as free. Returns whether the client itself asked for usage chunks
/// (so the gateway knows whether to strip the usage-only chunk again).
pub fn prepare_chat_body(
    row: &CompatRow,
    body: &mut Map<String, Value>,
    upstream_model: &str,
    stream: bool,
) -> bool {
    body.insert("model".to_owned(), Value::String(upstream_model.to_owned()));
    let client_wants_usage = body
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if !stream {
        return client_wants_usage;
    }
    match row.stream_usage {
        StreamUsage::IncludeUsageOption => {
            let options = body
                .entry("stream_options")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(o) = options {
                o.insert("include_usage".to_owned(), Value::Bool(true));
            } else {
                *options = serde_json::json!({ "include_usage": true });
            }
        }
        StreamUsage::AlwaysInFinalChunk => {
            body.remove("stream_options");
        }
    }
    client_wants_usage
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rows_are_unique_and_https_for_hosted_providers() {
        for (i, r) in ROWS.iter().enumerate() {
            assert!(
                ROWS.iter().skip(i + 1).all(|o| o.kind != r.kind),
                "duplicate {}",
                r.kind
            );
            if r.auth == Auth::Bearer {
                assert!(r.default_base_url.starts_with("https://"), "{}", r.kind);
            }
            assert!(!r.default_base_url.ends_with('/'));
        }
        for k in [
            "openai",
            "groq",
            "mistral",
            "deepseek",
            "openrouter",
            "together",
            "ollama",
            "vllm",
        ] {
            assert!(row(k).is_some(), "{k}");
        }
    }

    #[test]
    fn stream_always_requests_usage_and_reports_client_choice() {
        let openai = row("openai").unwrap();
        let mut body = json!({"model":"alias","stream":true})
            .as_object()
            .unwrap()
            .clone();
        let wants = prepare_chat_body(openai, &mut body, "gpt-4o-mini", true);
        assert!(!wants);
        assert_eq!(body["model"], "gpt-4o-mini");
        assert_eq!(body["stream_options"], json!({"include_usage": true}));

        let mut body = json!({"model":"m","stream":true,"stream_options":{"include_usage":true}})
            .as_object()
            .unwrap()
            .clone();
        assert!(prepare_chat_body(openai, &mut body, "m", true));
    }

    #[test]
    fn mistral_gets_no_stream_options() {
        let mistral = row("mistral").unwrap();
        let mut body = json!({"model":"m","stream":true,"stream_options":{"include_usage":true}})
            .as_object()
            .unwrap()
            .clone();
        assert!(prepare_chat_body(mistral, &mut body, "mistral-small", true));
        assert!(!body.contains_key("stream_options"));
    }

    #[test]
    fn non_stream_body_is_left_alone_but_model() {
        let openai = row("openai").unwrap();
        let mut body = json!({"model":"a","temperature":0.2})
            .as_object()
            .unwrap()
            .clone();
        prepare_chat_body(openai, &mut body, "gpt-4o", false);
        assert_eq!(
            Value::Object(body),
            json!({"model":"gpt-4o","temperature":0.2})
        );
    }
}
