//! Inbound request validation: JSON safety checks, the parts of OpenAI request
//! bodies the gateway needs to understand, and `x-tollgate-*` headers.
//!
//! Bodies are otherwise passed through untouched to OpenAI-compatible
//! providers, so fields OpenAI adds tomorrow work without a gateway release.

use serde_json::{Map, Value};

use crate::error::GatewayError;

/// Keys that name an upstream location. A client must never choose where the
/// gateway sends a provider key (LiteLLM CVE-2024-6587 and its bypasses through
/// nested objects), so these are rejected at any depth of the body.
fn is_upstream_location_key(key: &str) -> bool {
    // `api-base`, `Base-URL`, `custom-host` are the same request in another spelling.
    let k = key.to_ascii_lowercase().replace('-', "_");
    matches!(
        k.as_str(),
        "api_base"
            | "base_url"
            | "api_url"
            | "api_endpoint"
            | "endpoint_url"
            | "baseurl"
            | "apibase"
    ) || k.ends_with("_host")
        || k.ends_with("_base_url")
        || k.ends_with("_api_base")
}

/// Top-level request fields whose values hold JSON Schemas (tool parameters,
/// structured-output schemas).
const SCHEMA_FIELDS: &[&str] = &["tools", "functions", "response_format"];

/// Rejects bodies nested deeper than `max_depth` and any key that names an
/// upstream location, wherever it appears — except the property names of a JSON
/// Schema (`"properties": {...}` inside `tools`, `functions` or
/// `response_format`, e.g. a tool parameter called `base_url`), which are data
/// the gateway never interprets, not configuration.
pub fn check_json_safety(value: &Value, max_depth: u32) -> Result<(), GatewayError> {
    // Explicit stack: no recursion, so depth cannot exhaust the wasm stack.
    // (value, depth, its keys are schema property names, inside a schema field)
    let mut stack: Vec<(&Value, u32, bool, bool)> = vec![(value, 1, false, false)];
    while let Some((v, depth, keys_are_schema_properties, in_schema)) = stack.pop() {
        if depth > max_depth {
            return Err(GatewayError::invalid(format!(
                "Request JSON is nested deeper than the gateway's limit of {max_depth} levels."
            )));
        }
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    if !keys_are_schema_properties && is_upstream_location_key(k) {
                        return Err(GatewayError::InvalidRequest {
                            message: format!(
                                "The field '{k}' is not accepted: clients cannot choose the upstream \
                                 a request is sent to. Providers and their URLs are set by the \
                                 gateway operator."
                            ),
                            param: Some(k.clone()),
                            code: "upstream_override_not_allowed",
                        });
                    }
                    let child_in_schema =
                        in_schema || (depth == 1 && SCHEMA_FIELDS.contains(&k.as_str()));
                    let child_is_properties = child_in_schema
                        && !keys_are_schema_properties
                        && k == "properties"
                        && child.is_object();
                    stack.push((child, depth + 1, child_is_properties, child_in_schema));
                }
            }
            Value::Array(items) => {
                for item in items {
                    stack.push((item, depth + 1, false, in_schema));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Parses a body as a JSON object, with OpenAI-style messages for each failure.
pub fn parse_json_object(bytes: &[u8]) -> Result<Map<String, Value>, GatewayError> {
    if bytes.is_empty() {
        return Err(GatewayError::invalid(
            "Request body is empty; expected a JSON object.",
        ));
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(GatewayError::invalid("Request body must be a JSON object.")),
        Err(e) if e.is_syntax() || e.is_eof() => Err(GatewayError::InvalidRequest {
            message: format!(
                "Request body is not valid JSON (line {}, column {}).",
                e.line(),
                e.column()
            ),
            param: None,
            code: "invalid_json",
        }),
        Err(e) => Err(GatewayError::InvalidRequest {
            message: format!("Request body could not be read as JSON: {e}."),
            param: None,
            code: "invalid_json",
        }),
    }
}

/// The parts of a chat request the gateway acts on; `body` is everything,
/// forwarded as is apart from the fields a provider adapter rewrites.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatEnvelope {
    pub model: String,
    pub stream: bool,
    pub body: Map<String, Value>,
}

fn model_field(body: &Map<String, Value>) -> Result<String, GatewayError> {
    match body.get("model") {
        Some(Value::String(m)) if !m.trim().is_empty() && m.len() <= 256 => Ok(m.clone()),
        Some(Value::String(_)) => Err(GatewayError::invalid_param(
            "model",
            "'model' must be a non-empty string of at most 256 characters.",
        )),
        Some(_) => Err(GatewayError::invalid_param(
            "model",
            "'model' must be a string.",
        )),
        None => Err(GatewayError::InvalidRequest {
            message: "Missing required parameter: 'model'.".to_owned(),
            param: Some("model".to_owned()),
            code: "missing_required_parameter",
        }),
    }
}

/// Validates a `POST /v1/chat/completions` body.
pub fn parse_chat(body: Map<String, Value>) -> Result<ChatEnvelope, GatewayError> {
    let model = model_field(&body)?;
    match body.get("messages") {
        Some(Value::Array(messages)) if !messages.is_empty() => {
            for (i, m) in messages.iter().enumerate() {
                let role_ok = m.get("role").map(Value::is_string).unwrap_or(false);
                if !role_ok {
                    return Err(GatewayError::invalid_param(
                        &format!("messages[{i}].role"),
                        format!("messages[{i}] must be an object with a string 'role'."),
                    ));
                }
            }
        }
        Some(Value::Array(_)) => {
            return Err(GatewayError::invalid_param(
                "messages",
                "'messages' must contain at least one message.",
            ))
        }
        Some(_) => {
            return Err(GatewayError::invalid_param(
                "messages",
                "'messages' must be an array.",
            ))
        }
        None => {
            return Err(GatewayError::InvalidRequest {
                message: "Missing required parameter: 'messages'.".to_owned(),
                param: Some("messages".to_owned()),
                code: "missing_required_parameter",
            })
        }
    }
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(GatewayError::invalid_param(
                "stream",
                "'stream' must be a boolean.",
            ))
        }
    };
    match body.get("stream_options") {
        None | Some(Value::Null) | Some(Value::Object(_)) => {}
        Some(_) => {
            return Err(GatewayError::invalid_param(
                "stream_options",
                "'stream_options' must be an object.",
            ))
        }
    }
    Ok(ChatEnvelope {
        model,
        stream,
        body,
    })
}

/// The parts of an embeddings request the gateway acts on.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingsEnvelope {
    pub model: String,
    pub body: Map<String, Value>,
}

/// Validates a `POST /v1/embeddings` body.
pub fn parse_embeddings(body: Map<String, Value>) -> Result<EmbeddingsEnvelope, GatewayError> {
    let model = model_field(&body)?;
    match body.get("input") {
        Some(Value::String(_)) => {}
        Some(Value::Array(items)) if !items.is_empty() => {}
        Some(Value::Array(_)) => {
            return Err(GatewayError::invalid_param(
                "input",
                "'input' must not be empty.",
            ))
        }
        Some(_) => {
            return Err(GatewayError::invalid_param(
                "input",
                "'input' must be a string or an array.",
            ))
        }
        None => {
            return Err(GatewayError::InvalidRequest {
                message: "Missing required parameter: 'input'.".to_owned(),
                param: Some("input".to_owned()),
                code: "missing_required_parameter",
            })
        }
    }
    Ok(EmbeddingsEnvelope { model, body })
}

/// The texts of an embeddings `input` for a provider that takes text only
/// (no token arrays), at most `max` of them.
pub fn embedding_texts<'a>(
    body: &'a Map<String, Value>,
    provider: &str,
    max: usize,
) -> Result<Vec<&'a str>, GatewayError> {
    let texts: Vec<&str> = match body.get("input") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str().ok_or_else(|| {
                    GatewayError::invalid_param(
                        "input",
                        format!(
                            "{provider} embeddings take text: 'input' must be a string or an array of \
                             strings (token arrays are not supported)."
                        ),
                    )
                })
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(GatewayError::invalid_param(
                "input",
                "'input' must be a string or an array of strings.",
            ))
        }
    };
    if texts.is_empty() {
        return Err(GatewayError::invalid_param(
            "input",
            "'input' must not be empty.",
        ));
    }
    if texts.len() > max {
        return Err(GatewayError::invalid_param(
            "input",
            format!("{provider} embeds at most {max} inputs per request."),
        ));
    }
    Ok(texts)
}

/// Limits on `x-tollgate-metadata`, which is stored in every ledger row.
pub const MAX_METADATA_BYTES: usize = 1024;
pub const MAX_METADATA_KEYS: usize = 16;

/// Parses `x-tollgate-metadata`: a flat JSON object of at most 16 keys whose
/// values are strings, numbers or booleans (cost attribution: user, feature,
/// team…). Returns its compact JSON for the ledger.
pub fn parse_metadata(header: Option<&str>) -> Result<Option<String>, GatewayError> {
    let Some(raw) = header else {
        return Ok(None);
    };
    let bad = |why: &str| GatewayError::InvalidRequest {
        message: format!("Header x-tollgate-metadata {why}"),
        param: Some("x-tollgate-metadata".to_owned()),
        code: "invalid_metadata",
    };
    if raw.len() > MAX_METADATA_BYTES {
        return Err(bad(&format!("is longer than {MAX_METADATA_BYTES} bytes.")));
    }
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(raw) else {
        return Err(bad("must be a JSON object."));
    };
    if map.len() > MAX_METADATA_KEYS {
        return Err(bad(&format!("may have at most {MAX_METADATA_KEYS} keys.")));
    }
    for (k, v) in &map {
        if k.is_empty() || k.len() > 64 {
            return Err(bad("keys must be 1-64 characters."));
        }
        if !matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_)) {
            return Err(bad("values must be strings, numbers or booleans."));
        }
    }
    Ok(Some(Value::Object(map).to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn upstream_keys_are_rejected_at_any_depth() {
        let cases = [
            json!({"api_base": "http://169.254.169.254"}),
            json!({"base_url": "http://x"}),
            json!({"user_config": {"api_base": "http://x"}}),
            json!({"extra_body": {"nested": [{"custom_host": "evil"}]}}),
            json!({"metadata": {"API_BASE": "x"}}),
            json!({"tools": [{"type": "function", "function": {"name": "f", "litellm_api_base": "x"}}]}),
            json!({"messages": [{"role": "user", "content": "hi", "x_host": "y"}]}),
            json!({"api-base": "http://x"}),
            json!({"extra_body": {"Custom-Host": "evil"}}),
        ];
        for c in cases {
            let err = check_json_safety(&c, 64).unwrap_err();
            assert_eq!(err.code(), "upstream_override_not_allowed", "{c}");
            assert_eq!(err.status(), 400);
        }
    }

    #[test]
    fn schema_property_names_and_string_values_are_fine() {
        let ok = json!({
            "model": "m",
            "messages": [{"role": "user", "content": "set base_url and api_base please"}],
            "tools": [{"type": "function", "function": {"name": "connect", "parameters": {
                "type": "object",
                "properties": {"base_url": {"type": "string"}, "db_host": {"type": "string"}}
            }}}],
            "image": {"url": "https://example.com/cat.png"}
        });
        check_json_safety(&ok, 64).unwrap();
        // …but the schema exemption does not reach inside a property's own schema…
        let nested = json!({"tools": [{"function": {"parameters": {"properties": {"a": {"api_base": "x"}}}}}]});
        assert!(check_json_safety(&nested, 64).is_err());
        // …nor apply to a `properties` object outside a schema field.
        for outside in [
            json!({"properties": {"api_base": "x"}}),
            json!({"extra_body": {"properties": {"api_base": "http://169.254.169.254"}}}),
        ] {
            assert!(check_json_safety(&outside, 64).is_err(), "{outside}");
        }
        // Structured-output schemas get the same exemption as tools.
        let rf = json!({"response_format": {"type": "json_schema", "json_schema": {"schema": {"properties": {"base_url": {"type": "string"}}}}}});
        check_json_safety(&rf, 64).unwrap();
    }

    #[test]
    fn depth_is_limited() {
        let mut v = json!("leaf");
        for _ in 0..70 {
            v = json!([v]);
        }
        let err = check_json_safety(&v, 64).unwrap_err();
        assert!(err.message().contains("nested deeper"));
        check_json_safety(&v, 128).unwrap();
    }

    #[test]
    fn parse_errors_are_clear() {
        assert_eq!(parse_json_object(b"").unwrap_err().status(), 400);
        assert_eq!(
            parse_json_object(b"{nope").unwrap_err().code(),
            "invalid_json"
        );
        assert!(parse_json_object(b"[1]")
            .unwrap_err()
            .message()
            .contains("JSON object"));
        // serde_json's own recursion limit turns a hostile nesting into a 400, not a crash.
        let deep = "[".repeat(100_000);
        assert_eq!(
            parse_json_object(deep.as_bytes()).unwrap_err().status(),
            400
        );
    }

    #[test]
    fn chat_envelope() {
        let e = parse_chat(obj(
            json!({"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}),
        ))
        .unwrap();
        assert!(e.stream);
        assert_eq!(e.model, "m");
        for (body, param) in [
            (json!({"messages":[{"role":"user"}]}), "model"),
            (json!({"model":"","messages":[{"role":"user"}]}), "model"),
            (json!({"model":"m"}), "messages"),
            (json!({"model":"m","messages":[]}), "messages"),
            (
                json!({"model":"m","messages":[{"content":"x"}]}),
                "messages[0].role",
            ),
            (
                json!({"model":"m","messages":[{"role":"user"}],"stream":"yes"}),
                "stream",
            ),
            (
                json!({"model":"m","messages":[{"role":"user"}],"stream_options":1}),
                "stream_options",
            ),
        ] {
            let err = parse_chat(obj(body.clone())).unwrap_err();
            assert_eq!(err.param(), Some(param), "{body}");
            assert_eq!(err.status(), 400);
        }
    }

    #[test]
    fn embeddings_envelope() {
        parse_embeddings(obj(json!({"model":"m","input":"hello"}))).unwrap();
        parse_embeddings(obj(json!({"model":"m","input":["a","b"]}))).unwrap();
        assert_eq!(
            parse_embeddings(obj(json!({"model":"m","input":[]})))
                .unwrap_err()
                .param(),
            Some("input")
        );
        assert_eq!(
            parse_embeddings(obj(json!({"model":"m"})))
                .unwrap_err()
                .code(),
            "missing_required_parameter"
        );
    }

    #[test]
    fn metadata_header() {
        assert_eq!(parse_metadata(None).unwrap(), None);
        assert_eq!(
            parse_metadata(Some(r#"{"user":"u1","team":"search","n":3}"#)).unwrap(),
            Some(r#"{"n":3,"team":"search","user":"u1"}"#.to_owned())
        );
        for bad in [
            "nope",
            "[1]",
            r#"{"a":{"b":1}}"#,
            r#"{"a":[1]}"#,
            r#"{"":1}"#,
        ] {
            assert_eq!(
                parse_metadata(Some(bad)).unwrap_err().code(),
                "invalid_metadata"
            );
        }
        let long = format!(r#"{{"a":"{}"}}"#, "x".repeat(2000));
        assert!(parse_metadata(Some(&long)).is_err());
        let many: Map<String, Value> = (0..17).map(|i| (format!("k{i}"), json!(i))).collect();
        assert!(parse_metadata(Some(&Value::Object(many).to_string())).is_err());
    }
}
