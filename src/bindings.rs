//! Binding names, declared once; they must match `wrangler.toml`.

/// D1 database: virtual keys and the usage ledger.
pub const DB: &str = "DB";
/// `[vars.GATEWAY]`: the operator's configuration table (or a JSON string).
pub const GATEWAY_CONFIG_VAR: &str = "GATEWAY";
/// KV namespace: the exact response cache.
pub const CACHE_KV: &str = "CACHE";
/// Durable Object namespace: one `KeyBudget` per virtual key with limits.
pub const BUDGETS: &str = "BUDGETS";
/// Durable Object namespace: one `CircuitBreaker` per provider/model.
pub const CIRCUITS: &str = "CIRCUITS";
/// Secret guarding `/admin/*`. Without it the gateway rejects every request.
pub const ADMIN_TOKEN_SECRET: &str = "ADMIN_TOKEN";
/// Shortest `ADMIN_TOKEN` accepted; anything shorter counts as missing.
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;
/// Durable Object namespace: one `SemanticIndex` per tenant (the semantic cache's embedded index).
pub const SEMANTIC_INDEX: &str = "SEMANTIC_INDEX";
/// Vectorize index for the semantic cache (when `semantic.index = "vectorize"`).
pub const SEMANTIC_VECTORIZE: &str = "SEMANTIC_VECTORIZE";
/// Workers AI binding the semantic cache embeds with (when `semantic.embedder = "workers-ai"`).
pub const EMBEDDINGS_AI: &str = "AI";
/// Workers static assets: the dashboard's page, script and styles.
pub const ASSETS: &str = "ASSETS";
