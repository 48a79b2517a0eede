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
    /// Named routes usable as `model`: fallback chains, weighted load
    /// balancing, conditional choice; nestable.
    #[serde(default)]
    pub routes: BTreeMap<String, RouteConfig>,
    /// Timeouts, retries and the request deadline, unless a route target
    /// overrides them.
    #[serde(default)]
    pub resilience: Resilience,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub pricing: PricingConfig,
    #[serde(default)]
    pub budgets: BudgetConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub alerts: AlertConfig,
    /// Model capabilities over `data/capabilities.json`, keyed `kind/model`.
    #[serde(default)]
    pub capabilities: BTreeMap<String, crate::capabilities::Capabilities>,
    #[serde(default)]
    pub semantic: SemanticConfig,
    /// Guardrails for every request (keys and routes may override).
    #[serde(default)]
    pub guardrails: crate::guardrails::GuardrailPolicy,
    /// Ledger retention: older rows are rolled up into daily aggregates.
    #[serde(default)]
    pub retention: crate::ops::Retention,
    /// Whether request/answer bodies are logged (redacted); off by default.
    #[serde(default)]
    pub logging: crate::ops::Logging,
    /// Health probes from the cron trigger (`health.rs`); off by default.
    #[serde(default)]
    pub health: crate::health::HealthConfig,
}

/// Where the semantic cache keeps its vectors.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SemanticIndexKind {
    /// The `SemanticIndex` Durable Object (SQLite, exact cosine): works
    /// under `wrangler dev` and for small deployments.
    #[default]
    DurableObject,
    /// A Vectorize index bound as `SEMANTIC_VECTORIZE`.
    Vectorize,
}

/// The semantic cache (`semantic.rs`); off unless `mode` (or a key's or
/// route's cache policy) turns it on.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SemanticConfig {
    pub mode: crate::semantic::SemanticMode,
    /// Cosine similarity a hit needs (routes and keys may override).
    pub threshold: f32,
    /// `"provider/model"` of a configured provider's `/v1/embeddings`, or
    /// `"workers-ai"` for the Workers AI binding `AI` (`@cf/baai/bge-small-en-v1.5`).
    pub embedder: String,
    pub index: SemanticIndexKind,
    /// Embedding plus index query must finish within this, or the layer is
    /// skipped (a miss, never an error).
    pub deadline_ms: u64,
    /// Shadow mode logs the best candidate at or above this similarity.
    pub shadow_min_similarity: f32,
}

impl Default for SemanticConfig {
    fn default() -> Self {
        Self {
            mode: crate::semantic::SemanticMode::Off,
            threshold: crate::semantic::DEFAULT_THRESHOLD,
            embedder: String::new(),
            index: SemanticIndexKind::DurableObject,
            deadline_ms: 500,
            shadow_min_similarity: 0.8,
        }
    }
}

/// Budget threshold alerts: each threshold fires once per window, is
/// recorded in D1 and is POSTed to every webhook (operator config only).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AlertConfig {
    pub webhook_urls: Vec<String>,
    /// Percentages of a budget that raise an alert.
    pub thresholds: Vec<u8>,
    /// Operational alerts evaluated by the cron trigger (`ops.rs`).
    pub ops: crate::ops::OpsAlerts,
}

impl Default for AlertConfig {
    fn default() -> Self {
        Self {
            webhook_urls: Vec::new(),
            thresholds: crate::budget::DEFAULT_THRESHOLDS.to_vec(),
            ops: crate::ops::OpsAlerts::default(),
        }
    }
}

/// How budgets reserve a request's worst case.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetConfig {
    /// Output tokens assumed when a request sets no `max_tokens` (reservations
    /// must be an upper bound; requests that need more should say so).
    pub default_max_tokens: u64,
    /// How long past the request deadline a reservation stays open before its
    /// Durable Object's alarm releases it (a Worker that died never settles).
    /// Must cover the `waitUntil` grace in which the settle runs (30 s).
    pub reservation_grace_ms: u64,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            default_max_tokens: 4_096,
            reservation_grace_ms: 60_000,
        }
    }
}

/// How virtual keys are checked.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// How long an isolate trusts a key it found active in D1 before reading
    /// it again (see `keycache.rs`): also the longest a key revoked or
    /// re-limited through another isolate keeps its old grant there. 0 reads
    /// D1 on every request.
    pub key_cache_ms: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            key_cache_ms: 10_000,
        }
    }
}

/// Operator prices over the built-in table (`data/prices.json`), keyed
/// `kind/model` (e.g. `"openai/gpt-4o"`), in USD per million tokens.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PricingConfig {
    #[serde(default)]
    pub overrides: BTreeMap<String, crate::pricing::PriceOverride>,
    /// Price for models the table does not know; without it they are
    /// ledgered as `unpriced` (never as free).
    #[serde(default)]
    pub default: Option<crate::pricing::PriceOverride>,
}

/// When responses are cached (only deterministic requests ever are: explicit
/// `temperature: 0` or a `seed`; see `cache.rs`).
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum CacheMode {
    /// Never.
    Off,
    /// Only requests that send `x-tollgate-cache: exact` (the default).
    OptIn,
    /// Every cacheable request unless it sends `x-tollgate-cache: off`.
    On,
}

/// The exact cache in KV.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    pub mode: CacheMode,
    /// TTL when the request sends no `x-tollgate-cache-ttl`.
    pub default_ttl_secs: u64,
    /// Largest TTL a request may ask for.
    pub max_ttl_secs: u64,
    /// Entries larger than this are not stored.
    pub max_entry_bytes: u64,
    /// Cache requests that carry `tools` (keys and routes may override).
    pub tools: bool,
    /// Highest `temperature` whose answers are cached (0: deterministic only).
    pub max_temperature: f64,
}

impl CacheConfig {
    /// The global level of the cache policy.
    pub fn policy(&self) -> crate::cache::CachePolicy {
        crate::cache::CachePolicy {
            mode: Some(self.mode),
            tools: Some(self.tools),
            max_temperature: Some(self.max_temperature),
            semantic: None,
            semantic_threshold: None,
        }
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            mode: CacheMode::OptIn,
            default_ttl_secs: 3_600,
            max_ttl_secs: 7 * 86_400,
            max_entry_bytes: 1024 * 1024,
            tools: true,
            max_temperature: 0.0,
        }
    }
}

/// Defaults for every upstream attempt.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Resilience {
    /// One deadline for the whole request: every attempt, retry and wait.
    pub deadline_ms: u64,
    /// Upstream attempts per request over the whole chain.
    pub max_attempts: u32,
    /// Retries of one link on a retryable failure before moving on.
    pub retries: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// Longest `Retry-After` worth waiting for; longer → next link at once.
    pub retry_after_cap_ms: u64,
    /// Time to response headers (and, for streams, to the first frame).
    pub ttfb_ms: u64,
    /// Longest gap between stream chunks.
    pub idle_ms: u64,
    /// Whole non-streamed response.
    pub total_ms: u64,
    /// Consecutive health failures (5xx, 429, timeouts, connect errors) that
    /// open a provider/model's circuit; 0 turns the breaker off.
    pub circuit_failures: u32,
    /// How long an open circuit skips its link before one probe is let through.
    pub circuit_cooldown_ms: u64,
    /// A provider account at or above this share (percent) of its rate limit
    /// is tried after the other links (see `capacity.rs`).
    pub capacity_threshold_pct: u8,
    /// When every link is at the capacity threshold: how long a request may
    /// wait for room (within `deadline_ms`) before `429 capacity_exhausted`;
    /// 0 turns the queue off (see `queue.rs`).
    pub queue_timeout_ms: u64,
    /// Requests one key may have waiting at once (per isolate); more → 429 at once.
    pub queue_max_per_key: u32,
    /// Requests waiting at once (per isolate); more → 429 at once.
    pub queue_max_waiting: u32,
}

impl Resilience {
    pub fn breaker_policy(&self) -> crate::breaker::BreakerPolicy {
        crate::breaker::BreakerPolicy {
            failures_to_open: self.circuit_failures,
            cool_down_ms: self.circuit_cooldown_ms,
        }
    }
}

impl Default for Resilience {
    fn default() -> Self {
        Self {
            deadline_ms: 120_000,
            max_attempts: 4,
            // Official SDKs already retry (the OpenAI SDKs twice by default);
            // a gateway retry on top multiplies upstream load (F6). Retries
            // are opt-in, per route target or here.
            retries: 0,
            backoff_base_ms: 250,
            backoff_max_ms: 4_000,
            retry_after_cap_ms: 20_000,
            ttfb_ms: 60_000,
            idle_ms: 60_000,
            total_ms: 300_000,
            circuit_failures: 5,
            circuit_cooldown_ms: 30_000,
            capacity_threshold_pct: 90,
            queue_timeout_ms: 3_000,
            queue_max_per_key: 8,
            queue_max_waiting: 256,
        }
    }
}

/// How a route chooses among its targets.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// In order; the next when one fails.
    Fallback,
    /// One by weight; the others, in weighted-random order, as fallbacks.
    Loadbalance,
    /// The first target whose `when` matches the request.
    Conditional,
    /// The cheapest target whose model can serve the request (tools, images,
    /// JSON mode, context length); the other capable ones as fallbacks.
    Cost,
    /// The target answering fastest recently (live per provider+model
    /// statistics, a little exploration); the others as fallbacks.
    Latency,
    /// Budget-aware tiers: the first target whose `until_used` is above the
    /// share of the key's (or its project's) tightest budget already used;
    /// the later (cheaper) targets as fallbacks.
    Budget,
    /// A local classifier (`complexity.rs`) rates the prompt simple, moderate
    /// or complex; the targets of that `tier` first, then the harder tiers,
    /// then the easier ones as fallbacks.
    Complexity,
}

/// A named route.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub strategy: Strategy,
    pub targets: Vec<TargetConfig>,
    /// Statuses (beyond the retryable ones) that move on to the next target,
    /// e.g. `[401]` to fall back when a provider rejects the gateway's key.
    #[serde(default)]
    pub on_status_codes: Vec<u16>,
    /// This route's cache policy (over the key's and the global one).
    #[serde(default)]
    pub cache: Option<crate::cache::CachePolicy>,
    /// `latency` only: the share of requests that try another link first
    /// (default 0.05).
    #[serde(default)]
    pub explore_rate: Option<f64>,
    /// `latency` only: how old a link's statistic may be and still count
    /// (default 300000 ms); older → measured again.
    #[serde(default)]
    pub stale_after_ms: Option<u64>,
    /// This route's guardrails (over the key's and the global ones).
    #[serde(default)]
    pub guardrails: Option<crate::guardrails::GuardrailPolicy>,
    /// Quality sampling (`quality.rs`): a share of this route's answers is
    /// also asked of a reference model in the background; off when absent.
    #[serde(default)]
    pub quality_sampling: Option<crate::quality::QualitySampling>,
    /// `complexity` only: ask a small model for the tier first
    /// (`classifier.rs`); the heuristics decide when it does not answer in time.
    #[serde(default)]
    pub classifier: Option<crate::classifier::ClassifierConfig>,
}

/// One target of a route: a model, or another route.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// `"provider/model"` or a `models` alias.
    #[serde(default)]
    pub model: Option<String>,
    /// Another route's name.
    #[serde(default)]
    pub route: Option<String>,
    /// Load-balancing weight (default 1).
    #[serde(default)]
    pub weight: Option<u32>,
    /// Conditional match: `"metadata.<key>"` (from `x-tollgate-metadata`) or
    /// `"params.<field>"` (a top-level request field) → the value it must equal.
    #[serde(default)]
    pub when: Option<BTreeMap<String, serde_json::Value>>,
    /// Request fields this target sets (e.g. `temperature`), over the client's.
    #[serde(default)]
    pub params: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    pub ttfb_ms: Option<u64>,
    #[serde(default)]
    pub idle_ms: Option<u64>,
    #[serde(default)]
    pub total_ms: Option<u64>,
    #[serde(default)]
    pub retries: Option<u32>,
    #[serde(default)]
    pub on_status_codes: Option<Vec<u16>>,
    /// `budget` routes: this target serves while less than this share (0-1)
    /// of the tightest budget is used; none = always (the last tier).
    #[serde(default)]
    pub until_used: Option<f64>,
    /// `complexity` routes: which tier this target serves.
    #[serde(default)]
    pub tier: Option<crate::complexity::Tier>,
}

/// Request fields a route's `params` may not set: they define the request
/// itself, not how a provider should answer it.
pub const RESERVED_PARAMS: &[&str] = &["model", "messages", "stream", "stream_options", "input"];

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
    /// Azure OpenAI only: the `api-version` query parameter.
    #[serde(default)]
    pub api_version: Option<String>,
    /// Amazon Bedrock only: the AWS region (e.g. `us-east-1`).
    #[serde(default)]
    pub region: Option<String>,
    /// The provider account's requests per minute, if known: routing prefers
    /// other links as the gateway's own count nears it (the provider's
    /// rate-limit headers are read too).
    #[serde(default)]
    pub rpm_limit: Option<u32>,
    /// `workers-ai-binding` only: the Workers AI binding to call (default
    /// `AI`, as in `[ai] binding = "AI"`).
    #[serde(default)]
    pub binding: Option<String>,
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

/// Providers with their own wire format (one module each in `providers/`).
pub const ANTHROPIC_KIND: &str = "anthropic";
pub const GEMINI_KIND: &str = "gemini";
pub const AZURE_KIND: &str = "azure";
pub const COHERE_KIND: &str = "cohere";
pub const BEDROCK_KIND: &str = "bedrock";
/// Workers AI through the in-Worker `AI` binding (no HTTP, no key).
pub const WORKERS_AI_BINDING_KIND: &str = "workers-ai-binding";
/// Azure OpenAI `api-version` used when a provider sets none.
pub const AZURE_DEFAULT_API_VERSION: &str = "2024-10-21";

/// What kind of implementation a provider resolves to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolvedKind {
    Compat(&'static openai_compat::CompatRow),
    /// Azure OpenAI: OpenAI's wire format at deployment URLs with `api-key`.
    Azure,
    Anthropic,
    Gemini,
    Cohere,
    /// Amazon Bedrock Converse, SigV4-signed with AWS credentials.
    Bedrock,
    /// Workers AI's `run()` through a binding of the Worker.
    WorkersAiBinding,
    Demo,
}

impl ProviderConfig {
    pub fn kind_name<'a>(&'a self, name: &'a str) -> &'a str {
        self.kind.as_deref().unwrap_or(name)
    }

    pub fn resolved_kind(&self, name: &str) -> Option<ResolvedKind> {
        match self.kind_name(name) {
            DEMO_KIND => Some(ResolvedKind::Demo),
            ANTHROPIC_KIND => Some(ResolvedKind::Anthropic),
            GEMINI_KIND => Some(ResolvedKind::Gemini),
            AZURE_KIND => Some(ResolvedKind::Azure),
            COHERE_KIND => Some(ResolvedKind::Cohere),
            BEDROCK_KIND => Some(ResolvedKind::Bedrock),
            WORKERS_AI_BINDING_KIND => Some(ResolvedKind::WorkersAiBinding),
            kind => openai_compat::row(kind).map(ResolvedKind::Compat),
        }
    }

    /// The base URL requests go to, without a trailing slash.
    pub fn base_url(&self, name: &str) -> Option<String> {
        match (self.resolved_kind(name)?, &self.base_url) {
            (_, Some(url)) => Some(url.trim_end_matches('/').to_owned()),
            (ResolvedKind::Compat(row), None) => Some(row.default_base_url.to_owned()),
            (ResolvedKind::Anthropic, None) => Some("https://api.anthropic.com/v1".to_owned()),
            (ResolvedKind::Gemini, None) => {
                Some(crate::providers::gemini::DEFAULT_BASE_URL.to_owned())
            }
            (ResolvedKind::Cohere, None) => {
                Some(crate::providers::cohere::DEFAULT_BASE_URL.to_owned())
            }
            (ResolvedKind::Bedrock, None) => self
                .region
                .as_deref()
                .map(crate::providers::bedrock::default_base_url),
            // Azure has no default: every resource has its own host.
            (ResolvedKind::Azure | ResolvedKind::Demo | ResolvedKind::WorkersAiBinding, None) => {
                None
            }
        }
    }

    pub fn secret_name(&self, name: &str) -> Option<String> {
        let default = match self.resolved_kind(name)? {
            ResolvedKind::Demo | ResolvedKind::WorkersAiBinding => return None,
            ResolvedKind::Compat(row) => row.default_secret,
            ResolvedKind::Anthropic => "ANTHROPIC_API_KEY",
            ResolvedKind::Gemini => "GEMINI_API_KEY",
            ResolvedKind::Azure => "AZURE_OPENAI_API_KEY",
            ResolvedKind::Cohere => "COHERE_API_KEY",
            // SigV4 needs a key pair; this names the first of the two
            // (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, optional AWS_SESSION_TOKEN).
            ResolvedKind::Bedrock => crate::providers::bedrock::ACCESS_KEY_ID_SECRET,
        };
        Some(
            self.api_key_secret
                .clone()
                .unwrap_or_else(|| default.to_owned()),
        )
    }

    /// The Workers AI binding a `workers-ai-binding` provider calls.
    pub fn binding_name(&self) -> &str {
        self.binding
            .as_deref()
            .unwrap_or(crate::providers::workers_ai::DEFAULT_BINDING)
    }

    /// The kind the data tables (`data/prices.json`, `data/capabilities.json`)
    /// list this provider's models under: the binding runs the same models,
    /// at the same prices, as Workers AI's REST endpoint.
    pub fn table_kind<'a>(&'a self, name: &'a str) -> &'a str {
        match self.kind_name(name) {
            WORKERS_AI_BINDING_KIND => "workers-ai",
            kind => kind,
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
    fn validate_semantic(&self) -> Vec<String> {
        let s = &self.semantic;
        let mut errors = Vec::new();
        if !(0.5..=1.0).contains(&s.threshold) {
            errors.push("semantic.threshold: must be between 0.5 and 1".to_owned());
        }
        if !(0.0..=1.0).contains(&s.shadow_min_similarity) {
            errors.push("semantic.shadow_min_similarity: must be between 0 and 1".to_owned());
        }
        if !(10..=10_000).contains(&s.deadline_ms) {
            errors.push("semantic.deadline_ms: must be between 10 and 10000".to_owned());
        }
        let used = s.mode != crate::semantic::SemanticMode::Off
            || self.routes.values().any(|r| {
                r.cache
                    .as_ref()
                    .and_then(|c| c.semantic)
                    .is_some_and(|m| m != crate::semantic::SemanticMode::Off)
            });
        if s.embedder != "workers-ai" {
            match s.embedder.split_once('/') {
                Some((p, m)) if !m.is_empty() => {
                    if !self.providers.contains_key(p) {
                        errors.push(format!(
                            "semantic.embedder: provider '{p}' is not configured"
                        ));
                    }
                }
                _ if s.embedder.is_empty() && !used => {}
                _ => errors.push(
                    "semantic.embedder: \"provider/model\" of a configured provider, or \"workers-ai\""
                        .to_owned(),
                ),
            }
        }
        errors
    }

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
                    "providers.{name}: unknown kind '{}' (known: {}, {ANTHROPIC_KIND}, {GEMINI_KIND}, {AZURE_KIND}, {COHERE_KIND}, {BEDROCK_KIND}, {WORKERS_AI_BINDING_KIND}, {DEMO_KIND})",
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
            if matches!(kind, ResolvedKind::Compat(r) if r.requires_base_url)
                && p.base_url.is_none()
            {
                errors.push(format!(
                    "providers.{name}.base_url: {} needs its account URL (see README, Providers)",
                    p.kind_name(name)
                ));
            }
            match (&p.region, kind) {
                (None, ResolvedKind::Bedrock) => errors.push(format!(
                    "providers.{name}.region: bedrock needs its AWS region, e.g. us-east-1"
                )),
                (Some(r), ResolvedKind::Bedrock)
                    if r.is_empty()
                        || r.len() > 32
                        || !r
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') =>
                {
                    errors.push(format!(
                        "providers.{name}.region: '{r}' is not an AWS region name"
                    ));
                }
                (Some(_), k) if k != ResolvedKind::Bedrock => {
                    errors.push(format!(
                        "providers.{name}.region: only bedrock takes a region"
                    ));
                }
                _ => {}
            }
            if kind == ResolvedKind::Azure && p.base_url.is_none() {
                errors.push(format!(
                    "providers.{name}.base_url: Azure needs its resource URL, e.g. https://<resource>.openai.azure.com/openai"
                ));
            }
            if let Some(v) = &p.api_version {
                let ok = kind == ResolvedKind::Azure
                    && !v.is_empty()
                    && v.len() <= 32
                    && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
                if !ok {
                    errors.push(format!(
                        "providers.{name}.api_version: only azure takes one, like 2024-10-21"
                    ));
                }
            }
            if kind == ResolvedKind::Demo && (p.base_url.is_some() || p.api_key_secret.is_some()) {
                errors.push(format!(
                    "providers.{name}: the demo provider takes neither base_url nor api_key_secret"
                ));
            }
            errors.extend(validate_binding(name, p, kind));
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
        for (name, route) in &self.routes {
            errors.extend(self.validate_route(&format!("routes.{name}"), route));
            if name.contains('/') || name.is_empty() || name.len() > 64 {
                errors.push(format!(
                    "routes.{name}: route names are 1-64 characters without '/'"
                ));
            }
            if self.models.contains_key(name) {
                errors.push(format!("routes.{name}: the name is also a models alias"));
            }
        }
        for name in self.routes.keys() {
            if let Some(cycle) = self.route_cycle(name, &mut Vec::new()) {
                errors.push(format!(
                    "routes.{name}: routes refer to each other in a cycle ({cycle})"
                ));
            }
        }
        errors.extend(validate_resilience(&self.resilience));
        errors.extend(self.health.validate(self));
        for (i, url) in self.alerts.webhook_urls.iter().enumerate() {
            // Same rules as provider URLs: https, or http to this machine.
            if let Err(e) = validate_base_url(url, ResolvedKind::Demo) {
                errors.push(format!("alerts.webhook_urls[{i}]: {e}"));
            }
        }
        if self
            .alerts
            .thresholds
            .iter()
            .any(|t| !(1..=100).contains(t))
        {
            errors.push("alerts.thresholds: percentages from 1 to 100".to_owned());
        }
        errors.extend(crate::ops::validate(
            &self.alerts.ops,
            &self.retention,
            &self.logging,
        ));
        if !(1..=1_000_000).contains(&self.budgets.default_max_tokens) {
            errors.push("budgets.default_max_tokens: must be between 1 and 1000000".to_owned());
        }
        if self.auth.key_cache_ms > 300_000 {
            errors.push("auth.key_cache_ms: must be at most 300000 (5 minutes)".to_owned());
        }
        if !(1_000..=3_600_000).contains(&self.budgets.reservation_grace_ms) {
            errors
                .push("budgets.reservation_grace_ms: must be between 1000 and 3600000".to_owned());
        }
        errors.extend(crate::pricing::validate_pricing(
            &self.pricing.overrides,
            self.pricing.default.as_ref(),
        ));
        let c = &self.cache;
        if !(60..=365 * 86_400).contains(&c.default_ttl_secs) || c.default_ttl_secs > c.max_ttl_secs
        {
            errors.push(
                "cache.default_ttl_secs: 60 s to 1 year, and at most max_ttl_secs".to_owned(),
            );
        }
        if !(60..=365 * 86_400).contains(&c.max_ttl_secs) {
            errors.push(
                "cache.max_ttl_secs: must be between 60 s (KV's minimum) and 1 year".to_owned(),
            );
        }
        errors.extend(c.policy().validate("cache"));
        errors.extend(self.validate_semantic());
        for (name, route) in &self.routes {
            if let Some(p) = &route.cache {
                errors.extend(p.validate(&format!("routes.{name}.cache")));
            }
        }
        errors.extend(self.guardrails.validate("guardrails", &Default::default()));
        let global_detectors = self.guardrails.operator_detectors();
        for (name, route) in &self.routes {
            if let Some(g) = &route.guardrails {
                errors.extend(g.validate(&format!("routes.{name}.guardrails"), &global_detectors));
            }
        }
        if !(1024..=25 * 1024 * 1024).contains(&c.max_entry_bytes) {
            errors.push(
                "cache.max_entry_bytes: must be between 1 KiB and 25 MiB (KV's limit)".to_owned(),
            );
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

impl GatewayConfig {
    /// Problems with one route (also used for a request's inline route).
    /// Whether `model` (an alias or `provider/model`) names a configured provider's model.
    fn names_configured_model(&self, model: &str) -> bool {
        let qualified = self.models.get(model).map_or(model, String::as_str);
        matches!(qualified.split_once('/'), Some((p, m)) if !m.is_empty() && self.providers.contains_key(p))
    }

    pub fn validate_route(&self, at: &str, route: &RouteConfig) -> Vec<String> {
        let mut errors = Vec::new();
        if route.targets.is_empty() || route.targets.len() > 16 {
            errors.push(format!("{at}: a route has 1-16 targets"));
        }
        for code in &route.on_status_codes {
            if !(100..=599).contains(code) {
                errors.push(format!(
                    "{at}.on_status_codes: {code} is not an HTTP status"
                ));
            }
        }
        if route.strategy != Strategy::Latency
            && (route.explore_rate.is_some() || route.stale_after_ms.is_some())
        {
            errors.push(format!(
                "{at}: explore_rate and stale_after_ms apply only to latency routes"
            ));
        }
        for (i, t) in route.targets.iter().enumerate() {
            match (t.tier, route.strategy) {
                (Some(_), s) if s != Strategy::Complexity => errors.push(format!(
                    "{at}.targets[{i}].tier: only complexity routes use it"
                )),
                (None, Strategy::Complexity) => errors.push(format!(
                    "{at}.targets[{i}].tier: a complexity route's targets each name a tier (simple, moderate, complex)"
                )),
                _ => {}
            }
            match (t.until_used, route.strategy) {
                (Some(_), s) if s != Strategy::Budget => errors.push(format!(
                    "{at}.targets[{i}].until_used: only budget routes use it"
                )),
                (Some(f), _) if !(f > 0.0 && f <= 1.0) => errors.push(format!(
                    "{at}.targets[{i}].until_used: a share above 0 and at most 1"
                )),
                _ => {}
            }
        }
        if route
            .explore_rate
            .is_some_and(|r| !(0.0..=1.0).contains(&r))
        {
            errors.push(format!("{at}.explore_rate: a share from 0 to 1"));
        }
        if route.stale_after_ms.is_some_and(|ms| ms < 1_000) {
            errors.push(format!("{at}.stale_after_ms: at least 1000"));
        }
        if let Some(q) = &route.quality_sampling {
            let at = format!("{at}.quality_sampling");
            errors.extend(q.validate(&at));
            if !self.names_configured_model(&q.reference) {
                errors.push(format!(
                    "{at}.reference: '{}' is neither an alias nor 'provider/model' with a configured provider",
                    q.reference
                ));
            }
        }
        if let Some(c) = &route.classifier {
            let at = format!("{at}.classifier");
            errors.extend(c.validate(&at));
            if route.strategy != Strategy::Complexity {
                errors.push(format!("{at}: only complexity routes use a classifier"));
            }
            if !self.names_configured_model(&c.model) {
                errors.push(format!(
                    "{at}.model: '{}' is neither an alias nor 'provider/model' with a configured provider",
                    c.model
                ));
            }
        }
        let last = route.targets.len().saturating_sub(1);
        for (i, t) in route.targets.iter().enumerate() {
            let at = format!("{at}.targets[{i}]");
            match (&t.model, &t.route) {
                (Some(model), None) => {
                    let qualified = self
                        .models
                        .get(model)
                        .map_or(model.as_str(), String::as_str);
                    match qualified.split_once('/') {
                        Some((p, m)) if !m.is_empty() && self.providers.contains_key(p) => {}
                        _ => errors.push(format!(
                            "{at}.model: '{model}' is neither an alias nor 'provider/model' with a configured provider"
                        )),
                    }
                }
                (None, Some(r)) => {
                    if !self.routes.contains_key(r) {
                        errors.push(format!("{at}.route: no route named '{r}'"));
                    }
                    let overrides = t.params.is_some()
                        || t.ttfb_ms.is_some()
                        || t.idle_ms.is_some()
                        || t.total_ms.is_some()
                        || t.retries.is_some()
                        || t.on_status_codes.is_some();
                    if overrides {
                        errors.push(format!(
                            "{at}: a route target takes only weight and when; set overrides on the route's own targets"
                        ));
                    }
                }
                _ => errors.push(format!("{at}: give exactly one of model or route")),
            }
            if t.weight.is_some() && route.strategy != Strategy::Loadbalance {
                errors.push(format!("{at}.weight: only loadbalance routes use weights"));
            }
            if t.weight == Some(0) {
                errors.push(format!("{at}.weight: must be at least 1"));
            }
            match (&t.when, route.strategy) {
                (Some(_), s) if s != Strategy::Conditional => {
                    errors.push(format!("{at}.when: only conditional routes use when"));
                }
                (Some(when), _) => {
                    for key in when.keys() {
                        let ok = key
                            .strip_prefix("metadata.")
                            .or_else(|| key.strip_prefix("params."))
                            .is_some_and(|rest| !rest.is_empty());
                        if !ok {
                            errors.push(format!(
                                "{at}.when: '{key}' must start with 'metadata.' or 'params.'"
                            ));
                        }
                    }
                }
                (None, Strategy::Conditional) if i != last => {
                    errors.push(format!(
                        "{at}: only the last target of a conditional route may omit when"
                    ));
                }
                _ => {}
            }
            if route.strategy == Strategy::Conditional && i == last && t.when.is_some() {
                errors.push(format!(
                    "{at}: the last target of a conditional route is the default and has no when"
                ));
            }
            if let Some(params) = &t.params {
                for k in params.keys() {
                    if RESERVED_PARAMS.contains(&k.as_str()) {
                        errors.push(format!("{at}.params: '{k}' cannot be set by a route"));
                    }
                }
                if let Err(e) = crate::request::check_json_safety(
                    &serde_json::Value::Object(params.clone()),
                    self.limits.max_json_depth,
                ) {
                    errors.push(format!("{at}.params: {}", e.message()));
                }
            }
            for (name, v) in [
                ("ttfb_ms", t.ttfb_ms),
                ("idle_ms", t.idle_ms),
                ("total_ms", t.total_ms),
            ] {
                if v.is_some_and(|v| !(1..=3_600_000).contains(&v)) {
                    errors.push(format!("{at}.{name}: must be 1 ms to 1 hour"));
                }
            }
            if t.retries.is_some_and(|r| r > 10) {
                errors.push(format!("{at}.retries: at most 10"));
            }
        }
        errors
    }

    /// A description of a cycle reachable from `name`, if any.
    fn route_cycle(&self, name: &str, path: &mut Vec<String>) -> Option<String> {
        if path.iter().any(|p| p == name) {
            path.push(name.to_owned());
            return Some(path.join(" -> "));
        }
        let route = self.routes.get(name)?;
        path.push(name.to_owned());
        for t in &route.targets {
            if let Some(r) = &t.route {
                if let Some(c) = self.route_cycle(r, path) {
                    return Some(c);
                }
            }
        }
        path.pop();
        None
    }
}

/// `binding` belongs to `workers-ai-binding` only, which in turn has no URL
/// or key: the binding is the whole connection.
fn validate_binding(name: &str, p: &ProviderConfig, kind: ResolvedKind) -> Vec<String> {
    let mut errors = Vec::new();
    match (&p.binding, kind) {
        (Some(_), k) if k != ResolvedKind::WorkersAiBinding => errors.push(format!(
            "providers.{name}.binding: only {WORKERS_AI_BINDING_KIND} takes a binding"
        )),
        (Some(b), _)
            if b.is_empty()
                || b.len() > 64
                || b.starts_with(|c: char| c.is_ascii_digit())
                || !b.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_') =>
        {
            errors.push(format!(
                "providers.{name}.binding: '{b}' is not a binding name (A-Z, a-z, 0-9, '_')"
            ));
        }
        _ => {}
    }
    if kind == ResolvedKind::WorkersAiBinding
        && (p.base_url.is_some() || p.api_key_secret.is_some())
    {
        errors.push(format!(
            "providers.{name}: {WORKERS_AI_BINDING_KIND} calls the Worker's AI binding and takes \
             neither base_url nor api_key_secret (for the REST endpoint use kind workers-ai)"
        ));
    }
    errors
}

fn validate_resilience(r: &Resilience) -> Vec<String> {
    let mut errors = Vec::new();
    let ranges: [(&str, u64, u64, u64); 14] = [
        ("deadline_ms", r.deadline_ms, 100, 3_600_000),
        ("max_attempts", u64::from(r.max_attempts), 1, 20),
        ("retries", u64::from(r.retries), 0, 10),
        ("backoff_base_ms", r.backoff_base_ms, 0, 60_000),
        ("backoff_max_ms", r.backoff_max_ms, 0, 600_000),
        ("retry_after_cap_ms", r.retry_after_cap_ms, 0, 3_600_000),
        ("ttfb_ms", r.ttfb_ms, 1, 3_600_000),
        ("idle_ms", r.idle_ms, 1, 3_600_000),
        ("circuit_failures", u64::from(r.circuit_failures), 0, 1_000),
        ("circuit_cooldown_ms", r.circuit_cooldown_ms, 1, 3_600_000),
        (
            "capacity_threshold_pct",
            u64::from(r.capacity_threshold_pct),
            1,
            100,
        ),
        ("queue_timeout_ms", r.queue_timeout_ms, 0, 600_000),
        (
            "queue_max_per_key",
            u64::from(r.queue_max_per_key),
            1,
            10_000,
        ),
        (
            "queue_max_waiting",
            u64::from(r.queue_max_waiting),
            1,
            100_000,
        ),
    ];
    for (name, v, lo, hi) in ranges {
        if !(lo..=hi).contains(&v) {
            errors.push(format!("resilience.{name}: must be between {lo} and {hi}"));
        }
    }
    if !(1..=3_600_000).contains(&r.total_ms) {
        errors.push("resilience.total_ms: must be between 1 and 3600000".to_owned());
    }
    errors
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
                "lower": {"kind": "openai", "api_key_secret": "lower_case"},
                "wai": {"kind": "workers-ai"},
                "az": {"kind": "azure", "api_version": "bad version!"},
                "oa": {"kind": "openai", "api_version": "2024-10-21"}
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
            "workers-ai needs its account URL",
            "providers.az.base_url: Azure needs its resource URL",
            "providers.az.api_version",
            "providers.oa.api_version: only azure",
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

    #[test]
    fn workers_ai_binding_providers() {
        let c = GatewayConfig::from_json(json!({"providers": {
            "cf": {"kind": "workers-ai-binding", "models": ["@cf/meta/llama-3.3-70b-instruct-fp8-fast"]},
            "cf-eu": {"kind": "workers-ai-binding", "binding": "AI_EU"}
        }}))
        .unwrap();
        let cf = &c.providers["cf"];
        assert_eq!(cf.resolved_kind("cf"), Some(ResolvedKind::WorkersAiBinding));
        assert_eq!(cf.binding_name(), "AI");
        assert_eq!(c.providers["cf-eu"].binding_name(), "AI_EU");
        assert_eq!((cf.base_url("cf"), cf.secret_name("cf")), (None, None));
        // Same models, same prices as the REST endpoint.
        assert_eq!(cf.table_kind("cf"), "workers-ai");
        assert_eq!(c.providers["cf-eu"].table_kind("cf-eu"), "workers-ai");
        let err = GatewayConfig::from_json(json!({"providers": {
            "a": {"kind": "workers-ai-binding", "base_url": "https://api.cloudflare.com/x"},
            "b": {"kind": "workers-ai-binding", "api_key_secret": "CF_TOKEN"},
            "c": {"kind": "openai", "binding": "AI"},
            "d": {"kind": "workers-ai-binding", "binding": "1AI"},
            "e": {"kind": "workers-ai-binding", "binding": "A-I"}
        }}))
        .unwrap_err()
        .join("\n");
        for needle in [
            "providers.a: workers-ai-binding calls the Worker's AI binding",
            "providers.b: workers-ai-binding",
            "providers.c.binding: only workers-ai-binding takes a binding",
            "providers.d.binding: '1AI' is not a binding name",
            "providers.e.binding: 'A-I' is not a binding name",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in\n{err}");
        }
    }

    fn with_routes(routes: serde_json::Value) -> Result<GatewayConfig, Vec<String>> {
        GatewayConfig::from_json(json!({
            "providers": {"openai": {}, "groq": {}, "demo": {"kind": "demo"}},
            "models": {"mini": "openai/gpt-4o-mini"},
            "routes": routes
        }))
    }

    #[test]
    fn routes_validate() {
        with_routes(json!({
            "smart": {"strategy": "fallback", "targets": [
                {"model": "openai/gpt-4o", "ttfb_ms": 2000, "retries": 0, "params": {"temperature": 0.1}},
                {"route": "lb"}
            ], "on_status_codes": [401]},
            "lb": {"strategy": "loadbalance", "targets": [{"model": "mini", "weight": 3}, {"model": "groq/llama", "weight": 1}]},
            "plan": {"strategy": "conditional", "targets": [
                {"route": "lb", "when": {"metadata.plan": "free"}},
                {"route": "smart"}
            ]}
        }))
        .unwrap();
    }

    #[test]
    fn bad_routes_are_explained() {
        let err = with_routes(json!({
            "a": {"strategy": "fallback", "targets": [{"route": "b"}]},
            "b": {"strategy": "fallback", "targets": [{"route": "a"}]},
            "c": {"strategy": "fallback", "targets": [{"model": "nope/x"}, {"model": "openai/x", "route": "a"}, {"model": "openai/x", "weight": 2}]},
            "d": {"strategy": "conditional", "targets": [{"model": "openai/x"}, {"model": "openai/y", "when": {"plan": "x"}}]},
            "e": {"strategy": "fallback", "targets": [{"model": "openai/x", "params": {"model": "other", "api_base": "http://x"}}]},
            "f": {"strategy": "fallback", "targets": []},
            "mini": {"strategy": "fallback", "targets": [{"route": "a", "retries": 1}]}
        }))
        .unwrap_err()
        .join("\n");
        for needle in [
            "cycle",
            "'nope/x' is neither",
            "exactly one of model or route",
            "only loadbalance routes use weights",
            "only the last target of a conditional route may omit when",
            "must start with 'metadata.' or 'params.'",
            "'model' cannot be set by a route",
            "upstream",
            "1-16 targets",
            "also a models alias",
            "takes only weight and when",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in\n{err}");
        }
    }

    #[test]
    fn resilience_ranges() {
        let err =
            GatewayConfig::from_json(json!({"resilience": {"max_attempts": 0, "ttfb_ms": 0}}))
                .unwrap_err();
        assert!(err.iter().any(|e| e.contains("max_attempts")));
        assert!(err.iter().any(|e| e.contains("ttfb_ms")));
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
