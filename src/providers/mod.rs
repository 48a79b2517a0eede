//! Providers: turning a validated request and a resolved target into an
//! upstream call, and an upstream error into what the client sees.
//!
//! Pure: the platform layer supplies secrets through a lookup function and
//! performs the call.

pub mod anthropic;
pub mod demo;
pub mod gemini;
pub mod openai_compat;

use serde_json::{Map, Value};

use crate::config::{GatewayConfig, ResolvedKind};
use crate::error::GatewayError;
use crate::ledger::Endpoint;
use crate::routing::Target;
use crate::secret::{scrub, scrub_key_like, Secret};

/// An HTTP call to an OpenAI-compatible provider.
#[derive(Debug)]
pub struct HttpCall {
    pub provider: String,
    pub url: String,
    /// Sent as `Authorization: Bearer …` to `url` only.
    pub api_key: Option<Secret>,
    pub body: Vec<u8>,
    pub stream: bool,
    /// Drop the usage-only chunk before the client sees it (the gateway asked
    /// for usage, the client did not).
    pub strip_usage_chunk: bool,
}

/// How a request will be answered.
#[derive(Debug)]
pub enum Plan {
    Http(HttpCall),
    /// Answered inside the Worker by the demo provider.
    Demo {
        body: Map<String, Value>,
        model: String,
        stream: bool,
        strip_usage_chunk: bool,
    },
}

/// Plans a call for `endpoint`. `secret` looks up a Worker secret by name.
pub fn plan(
    config: &GatewayConfig,
    target: &Target,
    endpoint: Endpoint,
    mut body: Map<String, Value>,
    stream: bool,
    secret: impl Fn(&str) -> Option<Secret>,
) -> Result<Plan, GatewayError> {
    let provider_config =
        config
            .providers
            .get(&target.provider)
            .ok_or_else(|| GatewayError::ModelNotFound {
                model: target.qualified(),
            })?;
    let Some(kind) = provider_config.resolved_kind(&target.provider) else {
        // Config validation makes this unreachable; fail closed anyway.
        return Err(GatewayError::Misconfigured);
    };
    match kind {
        ResolvedKind::Demo => {
            let client_wants_usage = body
                .get("stream_options")
                .and_then(|o| o.get("include_usage"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
            Ok(Plan::Demo {
                body,
                model: target.model.clone(),
                stream,
                strip_usage_chunk: !client_wants_usage,
            })
        }
        ResolvedKind::Compat(row) => {
            let api_key = match provider_config.secret_name(&target.provider) {
                Some(name) => {
                    let key = secret(&name).filter(|s| !s.is_empty());
                    if key.is_none() && row.auth == openai_compat::Auth::Bearer {
                        return Err(GatewayError::ProviderNotConfigured {
                            provider: target.provider.clone(),
                            secret_name: name,
                        });
                    }
                    key
                }
                None => None,
            };
            let base = provider_config
                .base_url(&target.provider)
                .ok_or(GatewayError::Misconfigured)?;
            let (path, strip_usage_chunk) = match endpoint {
                Endpoint::ChatCompletions => {
                    let wants =
                        openai_compat::prepare_chat_body(row, &mut body, &target.model, stream);
                    ("/chat/completions", stream && !wants)
                }
                Endpoint::Embeddings => {
                    body.insert("model".to_owned(), Value::String(target.model.clone()));
                    ("/embeddings", false)
                }
            };
            let body =
                serde_json::to_vec(&Value::Object(body)).map_err(|_| GatewayError::Internal)?;
            Ok(Plan::Http(HttpCall {
                provider: target.provider.clone(),
                url: format!("{base}{path}"),
                api_key,
                body,
                stream,
                strip_usage_chunk,
            }))
        }
    }
}

/// The `message` of an OpenAI-style error body, if there is one.
fn upstream_message(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let m = v.get("error")?;
    m.get("message")
        .and_then(Value::as_str)
        .or_else(|| m.as_str())
        .map(str::to_owned)
}

/// A `Retry-After` value worth passing on: delta-seconds only.
fn sane_retry_after(v: Option<&str>) -> Option<String> {
    let v = v?.trim();
    (!v.is_empty() && v.len() <= 6 && v.bytes().all(|b| b.is_ascii_digit())).then(|| v.to_owned())
}

/// Maps a non-2xx upstream answer to the client's error. Provider text is
/// passed on only for request errors the client can fix (400/404/413/422), and
/// only after scrubbing the provider key and anything key-shaped from it; auth
/// failures become a 502 that names the provider, because the credentials at
/// fault are the operator's, not the client's.
pub fn map_upstream_error(
    provider: &str,
    status: u16,
    body: &[u8],
    retry_after: Option<&str>,
    api_key: Option<&Secret>,
) -> GatewayError {
    let clean = |text: String| {
        let text = match api_key {
            Some(k) => scrub(&text, k),
            None => text,
        };
        let text = scrub_key_like(&text);
        text.chars().take(500).collect::<String>()
    };
    match status {
        300..=399 => GatewayError::UpstreamRedirect {
            provider: provider.to_owned(),
        },
        400 | 404 | 413 | 422 => {
            let detail = upstream_message(body).map(clean);
            GatewayError::Upstream {
                provider: provider.to_owned(),
                status,
                message: match detail {
                    Some(d) => format!("Provider '{provider}' rejected the request: {d}"),
                    None => format!("Provider '{provider}' rejected the request (HTTP {status})."),
                },
                code: if status == 404 {
                    "upstream_not_found"
                } else {
                    "upstream_invalid_request"
                },
                retry_after: None,
            }
        }
        401 | 403 => GatewayError::Upstream {
            provider: provider.to_owned(),
            status: 502,
            message: format!(
                "Provider '{provider}' rejected the gateway's credentials (HTTP {status}); \
                 the operator should check its API key."
            ),
            code: "upstream_auth_failed",
            retry_after: None,
        },
        429 => GatewayError::Upstream {
            provider: provider.to_owned(),
            status: 429,
            message: format!("Provider '{provider}' is rate limiting requests; retry later."),
            code: "upstream_rate_limited",
            retry_after: sane_retry_after(retry_after),
        },
        _ => GatewayError::Upstream {
            provider: provider.to_owned(),
            status: if status == 503 || status == 504 {
                status
            } else {
                502
            },
            message: format!("Provider '{provider}' returned an error (HTTP {status})."),
            code: "upstream_error",
            retry_after: sane_retry_after(retry_after),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config() -> GatewayConfig {
        GatewayConfig::from_json(json!({
            "providers": {
                "openai": {"base_url": "http://127.0.0.1:9/v1/"},
                "groq": {},
                "local": {"kind": "ollama"},
                "demo": {"kind": "demo"}
            }
        }))
        .unwrap()
    }

    fn target(p: &str, m: &str) -> Target {
        Target {
            provider: p.into(),
            model: m.into(),
        }
    }

    fn secrets(name: &str) -> Option<Secret> {
        (name == "OPENAI_API_KEY").then(|| Secret::new("sk-openai-canary"))
    }

    #[test]
    fn http_plan_uses_operator_url_and_own_key() {
        let body = json!({"model":"x","messages":[],"stream":true})
            .as_object()
            .unwrap()
            .clone();
        let Plan::Http(call) = plan(
            &config(),
            &target("openai", "gpt-4o"),
            Endpoint::ChatCompletions,
            body,
            true,
            secrets,
        )
        .unwrap() else {
            panic!("expected http");
        };
        assert_eq!(call.url, "http://127.0.0.1:9/v1/chat/completions");
        assert_eq!(call.api_key.as_ref().unwrap().expose(), "sk-openai-canary");
        assert!(call.strip_usage_chunk);
        let sent: Value = serde_json::from_slice(&call.body).unwrap();
        assert_eq!(sent["model"], "gpt-4o");
        assert_eq!(sent["stream_options"]["include_usage"], true);
        assert!(!format!("{call:?}").contains("canary"));
    }

    #[test]
    fn missing_key_is_503_but_self_hosted_needs_none() {
        let body = Map::new();
        let e = plan(
            &config(),
            &target("groq", "llama"),
            Endpoint::ChatCompletions,
            body.clone(),
            false,
            secrets,
        )
        .unwrap_err();
        assert_eq!(e.status(), 503);
        assert!(e.message().contains("GROQ_API_KEY"));
        let Plan::Http(call) = plan(
            &config(),
            &target("local", "llama3"),
            Endpoint::Embeddings,
            body,
            false,
            secrets,
        )
        .unwrap() else {
            panic!()
        };
        assert!(call.api_key.is_none());
        assert_eq!(call.url, "http://127.0.0.1:11434/v1/embeddings");
    }

    #[test]
    fn demo_plan() {
        let body = json!({"stream_options":{"include_usage":true}})
            .as_object()
            .unwrap()
            .clone();
        let Plan::Demo {
            strip_usage_chunk,
            model,
            ..
        } = plan(
            &config(),
            &target("demo", "echo"),
            Endpoint::ChatCompletions,
            body,
            true,
            secrets,
        )
        .unwrap()
        else {
            panic!()
        };
        assert!(!strip_usage_chunk);
        assert_eq!(model, "echo");
    }

    #[test]
    fn upstream_errors_never_leak_the_key() {
        let key = Secret::new("sk-CANARY-0123456789abcdef");
        let body = br#"{"error":{"message":"Incorrect API key provided: sk-CANARY-0123************cdef.","type":"invalid_request_error","code":"invalid_api_key"}}"#;
        let e = map_upstream_error("openai", 401, body, None, Some(&key));
        assert_eq!(e.status(), 502);
        assert!(!e.to_body().to_string().contains("CANARY"));

        let body = br#"{"error":{"message":"Invalid 'temperature': sk-CANARY-0123456789abcdef is echoed here"}}"#;
        let e = map_upstream_error("openai", 400, body, None, Some(&key));
        assert_eq!(e.status(), 400);
        let text = e.to_body().to_string();
        assert!(text.contains("Invalid 'temperature'"));
        assert!(!text.contains("CANARY"), "{text}");
    }

    #[test]
    fn status_mapping() {
        let e = map_upstream_error("p", 429, b"", Some("7"), None);
        assert_eq!((e.status(), e.retry_after()), (429, Some("7")));
        let e = map_upstream_error("p", 429, b"", Some("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(e.retry_after(), None);
        assert_eq!(
            map_upstream_error("p", 500, b"oops", None, None).status(),
            502
        );
        assert_eq!(map_upstream_error("p", 503, b"", None, None).status(), 503);
        assert_eq!(
            map_upstream_error("p", 302, b"", None, None).code(),
            "upstream_redirect"
        );
        assert_eq!(
            map_upstream_error("p", 404, b"{}", None, None).status(),
            404
        );
    }
}
