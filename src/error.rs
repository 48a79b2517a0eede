//! The one error type every route returns, rendered as OpenAI's error body
//! `{"error":{"message","type","param","code"}}` with the right HTTP status.
//!
//! Messages here are safe to show a client: they never carry secrets, provider
//! response bodies (only scrubbed messages), stack traces or SQL. Details for the
//! operator go to the log at the point where the error is created.

use serde_json::{json, Value};

/// Everything that can end a request early.
#[derive(Debug, Clone, PartialEq)]
pub enum GatewayError {
    /// 400: the request is malformed or asks for something impossible.
    InvalidRequest {
        message: String,
        param: Option<String>,
        code: &'static str,
    },
    /// 413: the body is larger than the configured limit.
    PayloadTooLarge { limit_bytes: u64 },
    /// 401: missing, malformed, unknown or revoked virtual key / admin token.
    Unauthorized { message: &'static str },
    /// 403: the key is valid but may not use this model or route.
    Forbidden { message: String, code: &'static str },
    /// 404: no such model or route alias.
    ModelNotFound { model: String },
    /// 404: no such endpoint.
    NotFound,
    /// 404: an admin resource (e.g. a key id) that does not exist.
    ResourceNotFound { what: &'static str },
    /// 405: the endpoint exists but not with this method.
    MethodNotAllowed { allowed: &'static str },
    /// 409: an admin resource with this id already exists.
    Conflict { message: String },
    /// 503: the provider is configured but its secret is not set.
    ProviderNotConfigured {
        provider: String,
        secret_name: String,
    },
    /// 503: the gateway itself is not deployable as configured (missing
    /// ADMIN_TOKEN, key store or invalid config). Fail closed.
    Misconfigured,
    /// The provider answered with an error status; already mapped to what the
    /// client should see.
    Upstream {
        provider: String,
        status: u16,
        message: String,
        code: &'static str,
        retry_after: Option<String>,
    },
    /// 502: could not reach the provider (DNS, connect, reset, TLS).
    UpstreamUnreachable { provider: String },
    /// 502: the provider answered with a redirect, which is never followed.
    UpstreamRedirect { provider: String },
    /// 502: the provider answered 2xx with a body we cannot use.
    UpstreamInvalidResponse { provider: String },
    /// 504: the provider did not answer in time (`kind`: ttfb_timeout, total_timeout).
    UpstreamTimeout {
        provider: String,
        kind: &'static str,
    },
    /// Every link of a route failed: the last link's error, with a summary of
    /// every attempt (no secrets: provider/model names and failure labels only).
    AllLinksFailed {
        last: Box<GatewayError>,
        summary: String,
    },
    /// 402/429: a budget or rate limit of the key (see `budget.rs`).
    Budget {
        status: u16,
        code: &'static str,
        error_type: &'static str,
        message: String,
        retry_after: Option<String>,
    },
    /// 500: a bug or platform failure; details are only in the log.
    Internal,
}

impl From<crate::budget::Rejection> for GatewayError {
    fn from(r: crate::budget::Rejection) -> Self {
        Self::Budget {
            status: r.status,
            code: r.code(),
            error_type: r.error_type(),
            retry_after: r.retry_after_secs.map(|s| s.to_string()),
            message: r.message,
        }
    }
}

impl GatewayError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidRequest {
            message: message.into(),
            param: None,
            code: "invalid_request",
        }
    }

    pub fn invalid_param(param: &str, message: impl Into<String>) -> Self {
        Self::InvalidRequest {
            message: message.into(),
            param: Some(param.to_owned()),
            code: "invalid_value",
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            Self::InvalidRequest { .. } => 400,
            Self::PayloadTooLarge { .. } => 413,
            Self::Unauthorized { .. } => 401,
            Self::Forbidden { .. } => 403,
            Self::ModelNotFound { .. } | Self::NotFound | Self::ResourceNotFound { .. } => 404,
            Self::MethodNotAllowed { .. } => 405,
            Self::Conflict { .. } => 409,
            Self::ProviderNotConfigured { .. } | Self::Misconfigured => 503,
            Self::Upstream { status, .. } => *status,
            Self::UpstreamTimeout { .. } => 504,
            Self::Budget { status, .. } => *status,
            Self::AllLinksFailed { last, .. } => last.status(),
            Self::UpstreamUnreachable { .. }
            | Self::UpstreamRedirect { .. }
            | Self::UpstreamInvalidResponse { .. } => 502,
            Self::Internal => 500,
        }
    }

    /// OpenAI's `error.type`.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::InvalidRequest { .. }
            | Self::PayloadTooLarge { .. }
            | Self::ModelNotFound { .. }
            | Self::NotFound
            | Self::ResourceNotFound { .. }
            | Self::MethodNotAllowed { .. }
            | Self::Conflict { .. } => "invalid_request_error",
            Self::Unauthorized { .. } => "authentication_error",
            Self::Forbidden { .. } => "permission_error",
            Self::Upstream { status: 429, .. } => "rate_limit_error",
            Self::Upstream { status, .. } if *status < 500 => "invalid_request_error",
            Self::AllLinksFailed { last, .. } => last.error_type(),
            Self::Budget { error_type, .. } => error_type,
            Self::ProviderNotConfigured { .. }
            | Self::Misconfigured
            | Self::Upstream { .. }
            | Self::UpstreamUnreachable { .. }
            | Self::UpstreamRedirect { .. }
            | Self::UpstreamInvalidResponse { .. }
            | Self::UpstreamTimeout { .. }
            | Self::Internal => "server_error",
        }
    }

    /// OpenAI's `error.code`; also what the ledger records as `error_code`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest { code, .. } => code,
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::Unauthorized { .. } => "invalid_api_key",
            Self::Forbidden { code, .. } => code,
            Self::ModelNotFound { .. } => "model_not_found",
            Self::NotFound => "unknown_url",
            Self::ResourceNotFound { .. } => "not_found",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::Conflict { .. } => "already_exists",
            Self::ProviderNotConfigured { .. } => "provider_not_configured",
            Self::Misconfigured => "gateway_misconfigured",
            Self::Upstream { code, .. } => code,
            Self::UpstreamUnreachable { .. } => "upstream_unreachable",
            Self::UpstreamRedirect { .. } => "upstream_redirect",
            Self::UpstreamInvalidResponse { .. } => "upstream_invalid_response",
            Self::UpstreamTimeout { .. } => "upstream_timeout",
            Self::Budget { code, .. } => code,
            Self::AllLinksFailed { last, .. } => last.code(),
            Self::Internal => "internal_error",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Self::InvalidRequest { message, .. } | Self::Forbidden { message, .. } => {
                message.clone()
            }
            Self::PayloadTooLarge { limit_bytes } => {
                format!("Request body is larger than the gateway's limit of {limit_bytes} bytes.")
            }
            Self::Unauthorized { message } => (*message).to_owned(),
            Self::ModelNotFound { model } => format!(
                "The model '{model}' does not exist or is not configured on this gateway. \
                 Use 'provider/model' or a configured alias; GET /v1/models lists them."
            ),
            Self::NotFound => "Unknown endpoint.".to_owned(),
            Self::ResourceNotFound { what } => format!("No such {what}."),
            Self::Conflict { message } => message.clone(),
            Self::MethodNotAllowed { allowed } => {
                format!("Method not allowed; this endpoint accepts {allowed}.")
            }
            Self::ProviderNotConfigured {
                provider,
                secret_name,
            } => format!(
                "Provider '{provider}' has no API key configured on this gateway \
                 (the operator must set the {secret_name} secret)."
            ),
            Self::Misconfigured => "The gateway is not configured correctly and rejects all \
                                    requests until it is; the operator should check its logs."
                .to_owned(),
            Self::Upstream { message, .. } | Self::Budget { message, .. } => message.clone(),
            Self::UpstreamUnreachable { provider } => {
                format!("Could not reach provider '{provider}'.")
            }
            Self::UpstreamRedirect { provider } => format!(
                "Provider '{provider}' answered with a redirect; the gateway does not follow redirects."
            ),
            Self::UpstreamInvalidResponse { provider } => {
                format!("Provider '{provider}' returned a response the gateway could not read.")
            }
            Self::UpstreamTimeout { provider, kind } => {
                format!("Provider '{provider}' did not answer in time ({kind}).")
            }
            Self::AllLinksFailed { last, summary } => {
                format!("{} Every upstream failed: {summary}.", last.message())
            }
            Self::Internal => "The gateway hit an internal error.".to_owned(),
        }
    }

    pub fn param(&self) -> Option<&str> {
        match self {
            Self::InvalidRequest { param, .. } => param.as_deref(),
            Self::ModelNotFound { .. } => Some("model"),
            _ => None,
        }
    }

    /// `Retry-After` to send with this error, if any.
    pub fn retry_after(&self) -> Option<&str> {
        match self {
            Self::Upstream { retry_after, .. } | Self::Budget { retry_after, .. } => {
                retry_after.as_deref()
            }
            Self::AllLinksFailed { last, .. } => last.retry_after(),
            _ => None,
        }
    }

    /// The OpenAI error body.
    pub fn to_body(&self) -> Value {
        json!({
            "error": {
                "message": self.message(),
                "type": self.error_type(),
                "param": self.param(),
                "code": self.code(),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_openai_shape() {
        let e = GatewayError::ModelNotFound {
            model: "nope".into(),
        };
        let b = e.to_body();
        assert_eq!(e.status(), 404);
        assert_eq!(b["error"]["type"], "invalid_request_error");
        assert_eq!(b["error"]["code"], "model_not_found");
        assert_eq!(b["error"]["param"], "model");
        assert!(b["error"]["message"].as_str().unwrap().contains("'nope'"));
        assert_eq!(b["error"].as_object().unwrap().len(), 4);
    }

    #[test]
    fn all_links_failed_keeps_the_last_status_and_retry_after() {
        let e = GatewayError::AllLinksFailed {
            last: Box::new(GatewayError::Upstream {
                provider: "b".into(),
                status: 429,
                message: "Provider 'b' is rate limiting requests; retry later.".into(),
                code: "upstream_rate_limited",
                retry_after: Some("3".into()),
            }),
            summary: "a/m: status_429; b/m: status_429".into(),
        };
        assert_eq!(
            (e.status(), e.code(), e.retry_after()),
            (429, "upstream_rate_limited", Some("3"))
        );
        assert!(e
            .message()
            .ends_with("Every upstream failed: a/m: status_429; b/m: status_429."));
    }

    #[test]
    fn statuses_and_types() {
        let cases: Vec<(GatewayError, u16, &str)> = vec![
            (GatewayError::invalid("x"), 400, "invalid_request_error"),
            (
                GatewayError::PayloadTooLarge { limit_bytes: 1 },
                413,
                "invalid_request_error",
            ),
            (
                GatewayError::Unauthorized { message: "no" },
                401,
                "authentication_error",
            ),
            (GatewayError::Misconfigured, 503, "server_error"),
            (
                GatewayError::Upstream {
                    provider: "p".into(),
                    status: 429,
                    message: "slow down".into(),
                    code: "rate_limit_exceeded",
                    retry_after: Some("3".into()),
                },
                429,
                "rate_limit_error",
            ),
            (
                GatewayError::UpstreamRedirect {
                    provider: "p".into(),
                },
                502,
                "server_error",
            ),
            (GatewayError::Internal, 500, "server_error"),
            (
                GatewayError::UpstreamTimeout {
                    provider: "p".into(),
                    kind: "ttfb_timeout",
                },
                504,
                "server_error",
            ),
        ];
        for (e, status, ty) in cases {
            assert_eq!(e.status(), status, "{e:?}");
            assert_eq!(e.error_type(), ty, "{e:?}");
        }
    }
}
