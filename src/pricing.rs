//! Model prices and the cost arithmetic budgets rely on, in exact integers.
//!
//! ## Units and rounding
//!
//! Money is integer micro-USD ([`MicroUsd`], 10⁻⁶ USD) everywhere; no float
//! ever reaches a budget. A price is a set of [`Rates`] in micro-USD per
//! 1,000,000 tokens (so `$0.075 / 1M` is `75_000`), which makes every rate in
//! the data file exact: prices are quoted with at most six decimals of a dollar
//! per million tokens, and values with more are rejected rather than rounded.
//!
//! The cost of a request is one rounding, upwards, of the exact sum:
//! `ceil(Σ tokensᵢ × rateᵢ / 1_000_000)` micro-USD, computed in `u128`. Rounding
//! up means a request that used any priced token never costs 0, and the ceiling
//! of a larger sum is never smaller, so a worst case computed the same way stays
//! an upper bound of the real cost.
//!
//! ## What a token is billed at
//!
//! [`Billable::from_usage`] splits a [`Usage`]: cached prompt tokens (a subset of
//! `prompt_tokens`, as every adapter normalises them) at the cached rate and the
//! rest at the input rate — never both; output at the output rate, taking
//! `max(completion_tokens, total_tokens − prompt_tokens)` so hidden reasoning a
//! provider reports only in the total is still paid for. `Usage` carries no
//! cache-write count yet, so prompt-cache writes (Anthropic's
//! `cache_creation_input_tokens`, part of `prompt_tokens`) are billed at the
//! input rate, below their 1.25×/2× price; [`cost_of`] takes a [`Billable`]
//! with write counts for when `Usage` grows them. The worst case
//! ([`worst_case_micros`]) already assumes every prompt token could be a
//! 1-hour cache write, so the reservation stays an upper bound.
//!
//! A long-context tier (e.g. Claude Sonnet 4.5 or Gemini 2.5 Pro above 200k
//! prompt tokens) prices the *whole* request at its rates once the prompt
//! exceeds the threshold. Tier rates are raised to at least the base rates
//! when loaded, so crossing a threshold never makes a request cheaper.
//!
//! ## The table and lookups
//!
//! `data/prices.json` (embedded with `include_str!`) holds USD per 1M tokens
//! per provider kind, with the provider's pricing page and the date the prices
//! were confirmed; operator overrides and a default price come from config.
//! [`PriceTable::lookup`] takes the provider *kind* (`openai`, `anthropic`,
//! `bedrock`, …; not the operator's name for the provider) and the model id the
//! upstream is asked for, lowercases `kind/model`, and tries
//!
//! 1. the exact key;
//! 2. the longest key that is a prefix of it followed by a date or version
//!    suffix: `-`/`@` and at least three digits not followed by a letter
//!    (`claude-sonnet-4-5-20250929`, `gpt-4o-2024-08-06`, `grok-4-0709`,
//!    `gemini-2.0-flash-001`, `claude-sonnet-4-5@20250929`,
//!    `…-20250929-v1:0`), `-v<digits>` (Bedrock's `…-v1`, `…-v1:0`) or
//!    `-latest`. So `gpt-4o-mini` never prices as `gpt-4o`, `gpt-5.5-pro` never
//!    as `gpt-5`, and `claude-sonnet-4-5` never as `claude-sonnet-4`;
//! 3. the configured default price ([`Priced::Default`]);
//! 4. otherwise [`Priced::Unpriced`], which the caller must surface (ledger
//!    flag, dashboard), never treat as 0.
//!
//! Overrides replace or add keys in the same namespace before lookup, so an
//! override of `openai/gpt-4o` also prices `openai/gpt-4o-2024-11-20`.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::usage::Usage;

/// Integer micro-USD (10⁻⁶ USD).
pub type MicroUsd = u64;

pub const MICRO_USD_PER_USD: u64 = 1_000_000;

const TOKENS_PER_MTOK: u128 = 1_000_000;

/// The largest accepted rate, in USD per 1M tokens.
const MAX_RATE_USD: f64 = 1_000_000.0;

/// Added to every prompt bound: chat templates, BOS/role tokens and the
/// tool-use system prompt a provider inserts (Anthropic's tool-use docs list
/// 159–530 tokens per model), none of which are bytes of the request body.
pub const PROMPT_TEMPLATE_ALLOWANCE_TOKENS: u64 = 1_024;

const BUILTIN_JSON: &str = include_str!("../data/prices.json");

/// Converts USD to micro-USD exactly: `None` for negative, non-finite, absurd
/// (over $10¹²) or sub-micro-dollar values.
pub fn usd_to_micros(usd: f64) -> Option<MicroUsd> {
    if !usd.is_finite() || !(0.0..=1e12).contains(&usd) {
        return None;
    }
    let scaled = usd * 1e6;
    let rounded = scaled.round();
    if (scaled - rounded).abs() > 1e-3 {
        return None;
    }
    // In range and integral: the cast is exact.
    Some(rounded as u64)
}

/// Rates in micro-USD per 1M tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rates {
    /// Uncached prompt tokens.
    pub input_per_mtok: MicroUsd,
    /// Completion tokens, reasoning included.
    pub output_per_mtok: MicroUsd,
    /// Prompt-cache reads.
    pub cached_input_per_mtok: MicroUsd,
    /// Prompt-cache writes (the 5-minute TTL where a provider has two).
    pub cache_write_per_mtok: MicroUsd,
    /// Prompt-cache writes with a 1-hour TTL.
    pub cache_write_1h_per_mtok: MicroUsd,
}

impl Rates {
    /// The highest rate any single prompt token can be billed at.
    pub fn max_prompt_rate(&self) -> MicroUsd {
        self.input_per_mtok
            .max(self.cached_input_per_mtok)
            .max(self.cache_write_per_mtok)
            .max(self.cache_write_1h_per_mtok)
    }

    fn at_least(self, floor: Rates) -> Rates {
        Rates {
            input_per_mtok: self.input_per_mtok.max(floor.input_per_mtok),
            output_per_mtok: self.output_per_mtok.max(floor.output_per_mtok),
            cached_input_per_mtok: self.cached_input_per_mtok.max(floor.cached_input_per_mtok),
            cache_write_per_mtok: self.cache_write_per_mtok.max(floor.cache_write_per_mtok),
            cache_write_1h_per_mtok: self
                .cache_write_1h_per_mtok
                .max(floor.cache_write_1h_per_mtok),
        }
    }
}

/// Rates for requests whose prompt exceeds `above_prompt_tokens`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LongContext {
    pub above_prompt_tokens: u64,
    pub rates: Rates,
}

/// One model's price.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Price {
    pub base: Rates,
    pub long_context: Option<LongContext>,
    /// An embedding model: output tokens are not billed (and may be 0).
    pub embedding: bool,
}

impl Price {
    /// A flat price whose cache reads and writes cost the input rate.
    pub fn flat(input_per_mtok: MicroUsd, output_per_mtok: MicroUsd) -> Self {
        Self {
            base: Rates {
                input_per_mtok,
                output_per_mtok,
                cached_input_per_mtok: input_per_mtok,
                cache_write_per_mtok: input_per_mtok,
                cache_write_1h_per_mtok: input_per_mtok,
            },
            long_context: None,
            embedding: false,
        }
    }

    /// The rates a request with this many prompt tokens is billed at.
    pub fn rates_for(&self, prompt_tokens: u64) -> Rates {
        match self.long_context {
            Some(lc) if prompt_tokens > lc.above_prompt_tokens => lc.rates,
            _ => self.base,
        }
    }
}

/// Tokens by how they are billed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Billable {
    /// Uncached prompt tokens (not cache reads, not cache writes).
    pub input: u64,
    pub cached_input: u64,
    pub cache_write: u64,
    pub cache_write_1h: u64,
    pub output: u64,
}

impl Billable {
    /// See the module docs: cached tokens are a subset of `prompt_tokens`.
    pub fn from_usage(u: &Usage) -> Self {
        let cached = u.cached_prompt_tokens.unwrap_or(0).min(u.prompt_tokens);
        Self {
            input: u.prompt_tokens - cached,
            cached_input: cached,
            cache_write: 0,
            cache_write_1h: 0,
            output: u
                .completion_tokens
                .max(u.total_tokens.saturating_sub(u.prompt_tokens)),
        }
    }

    /// Every prompt token, however billed (what long-context tiers look at).
    pub fn prompt_tokens(&self) -> u64 {
        self.input
            .saturating_add(self.cached_input)
            .saturating_add(self.cache_write)
            .saturating_add(self.cache_write_1h)
    }
}

fn ceil_mtok(total: u128) -> MicroUsd {
    u64::try_from(total.div_ceil(TOKENS_PER_MTOK)).unwrap_or(u64::MAX)
}

fn term(tokens: u64, rate: MicroUsd) -> u128 {
    u128::from(tokens) * u128::from(rate)
}

/// The cost of these tokens: `ceil(Σ tokens × rate / 1M)` micro-USD.
pub fn cost_of(price: &Price, b: &Billable) -> MicroUsd {
    let r = price.rates_for(b.prompt_tokens());
    let total = term(b.input, r.input_per_mtok)
        .saturating_add(term(b.cached_input, r.cached_input_per_mtok))
        .saturating_add(term(b.cache_write, r.cache_write_per_mtok))
        .saturating_add(term(b.cache_write_1h, r.cache_write_1h_per_mtok))
        .saturating_add(term(b.output, r.output_per_mtok));
    ceil_mtok(total)
}

/// The cost of a request's reported usage (cached input at the cached rate,
/// not also at the input rate).
pub fn cost_micros(price: &Price, usage: &Usage) -> MicroUsd {
    cost_of(price, &Billable::from_usage(usage))
}

/// An upper bound of [`cost_micros`] for any usage with at most
/// `prompt_token_upper_bound` prompt tokens and `max_output_tokens` output
/// tokens: every prompt token at the highest prompt rate (cache writes can cost
/// more than plain input), at the long-context rates if the bound crosses the
/// threshold.
pub fn worst_case_micros(
    price: &Price,
    prompt_token_upper_bound: u64,
    max_output_tokens: u64,
) -> MicroUsd {
    let r = price.rates_for(prompt_token_upper_bound);
    let total = term(prompt_token_upper_bound, r.max_prompt_rate())
        .saturating_add(term(max_output_tokens, r.output_per_mtok));
    ceil_mtok(total)
}

/// An upper bound of the prompt tokens of a request whose JSON body is
/// `body_bytes` long: one token per body byte, plus
/// [`PROMPT_TEMPLATE_ALLOWANCE_TOKENS`].
///
/// Why bytes and not bytes/2 or bytes/4: every tokenizer in use (tiktoken's
/// byte-level BPE, SentencePiece with byte fallback) emits tokens that each
/// consume at least one byte of UTF-8 text, so a text of n bytes is at most n
/// tokens — and that bound is reached: emoji and rare scripts fall back to one
/// token per byte, so no smaller divisor is safe. The JSON body is never
/// shorter than the text it carries (escapes only lengthen it), and its syntax
/// (`{"role":"user","content":…}` is ~30 bytes) outweighs the few template
/// tokens a message costs. Typical English is ~4 bytes per token, so this
/// over-reserves about 4×; reservations are released at settle, so the price
/// is only earlier rejection near a budget's edge.
///
/// Not covered: media referenced by URL or file id (an image URL of ~100 bytes
/// can cost over a thousand tokens; base64 media, by contrast, is far
/// over-counted). Callers that accept such parts should add an allowance per
/// part on top of this bound.
pub fn estimate_prompt_tokens_upper_bound(body_bytes: usize) -> u64 {
    u64::try_from(body_bytes)
        .unwrap_or(u64::MAX)
        .saturating_add(PROMPT_TEMPLATE_ALLOWANCE_TOKENS)
}

/// A price as written in `data/prices.json` or an operator override: USD per
/// 1M tokens, at most six decimals.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceSpec {
    pub input: f64,
    pub output: f64,
    /// Missing: the input rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input: Option<f64>,
    /// Missing: the input rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<f64>,
    /// Missing: `cache_write`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_1h: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_context: Option<LongContextSpec>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub embedding: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Operator overrides (config) have the data file's shape.
pub type PriceOverride = PriceSpec;

/// Long-context rates; fields left out keep the base rate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LongContextSpec {
    pub above_prompt_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_1h: Option<f64>,
}

fn rate(at: &str, field: &str, usd: f64, errors: &mut Vec<String>) -> MicroUsd {
    if usd > MAX_RATE_USD {
        errors.push(format!(
            "{at}.{field}: {usd} USD per 1M tokens is beyond any real price"
        ));
        return 0;
    }
    match usd_to_micros(usd) {
        Some(m) => m,
        None => {
            errors.push(format!(
                "{at}.{field}: must be a non-negative USD amount per 1M tokens with at most 6 decimals (got {usd})"
            ));
            0
        }
    }
}

impl PriceSpec {
    /// Validates and converts; `at` prefixes error messages (e.g.
    /// `pricing.overrides.openai/gpt-4o`).
    pub fn to_price(&self, at: &str) -> Result<Price, Vec<String>> {
        let mut errors = Vec::new();
        let input = rate(at, "input", self.input, &mut errors);
        let output = rate(at, "output", self.output, &mut errors);
        let cached = self
            .cached_input
            .map_or(input, |v| rate(at, "cached_input", v, &mut errors));
        let write = self
            .cache_write
            .map_or(input, |v| rate(at, "cache_write", v, &mut errors));
        let write_1h = self
            .cache_write_1h
            .map_or(write, |v| rate(at, "cache_write_1h", v, &mut errors));
        let base = Rates {
            input_per_mtok: input,
            output_per_mtok: output,
            cached_input_per_mtok: cached,
            cache_write_per_mtok: write,
            cache_write_1h_per_mtok: write_1h,
        };
        let long_context = self.long_context.as_ref().map(|lc| {
            let at = format!("{at}.long_context");
            if lc.above_prompt_tokens == 0 {
                errors.push(format!("{at}.above_prompt_tokens: must be at least 1"));
            }
            let mut field = |name: &str, v: Option<f64>, base_rate: MicroUsd| {
                v.map_or(base_rate, |v| rate(&at, name, v, &mut errors))
            };
            let rates = Rates {
                input_per_mtok: field("input", lc.input, base.input_per_mtok),
                output_per_mtok: field("output", lc.output, base.output_per_mtok),
                cached_input_per_mtok: field(
                    "cached_input",
                    lc.cached_input,
                    base.cached_input_per_mtok,
                ),
                cache_write_per_mtok: field(
                    "cache_write",
                    lc.cache_write,
                    base.cache_write_per_mtok,
                ),
                cache_write_1h_per_mtok: field(
                    "cache_write_1h",
                    lc.cache_write_1h,
                    base.cache_write_1h_per_mtok,
                ),
            };
            LongContext {
                above_prompt_tokens: lc.above_prompt_tokens,
                rates: rates.at_least(base),
            }
        });
        if errors.is_empty() {
            Ok(Price {
                base,
                long_context,
                embedding: self.embedding,
            })
        } else {
            Err(errors)
        }
    }
}

/// Where a provider's prices come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderSource {
    pub source: String,
    pub as_of: String,
    pub note: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceFile {
    #[serde(rename = "about")]
    _about: String,
    providers: BTreeMap<String, ProviderFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderFile {
    source: String,
    as_of: String,
    #[serde(default)]
    note: Option<String>,
    models: BTreeMap<String, PriceSpec>,
}

/// Where a table entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    Builtin,
    Override,
}

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    price: Price,
    origin: Origin,
}

/// The result of a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priced {
    /// The table (or an override) prices this model.
    Price(Price),
    /// Unknown model, priced at the operator's configured default.
    Default(Price),
    /// Unknown model and no default: the caller must flag it, never bill 0.
    Unpriced,
}

impl Priced {
    pub fn price(&self) -> Option<&Price> {
        match self {
            Self::Price(p) | Self::Default(p) => Some(p),
            Self::Unpriced => None,
        }
    }
}

/// Prices by lowercase `kind/model`, plus an optional default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PriceTable {
    entries: BTreeMap<String, Entry>,
    default: Option<Price>,
    sources: BTreeMap<String, ProviderSource>,
}

fn is_iso_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        })
}

/// The entry for `kind/model` in a table keyed `kind/model` (lowercase): the
/// exact key, else the longest key that the id extends by a date or version
/// suffix (`gpt-4o-mini-2024-07-18` → `gpt-4o-mini`). Shared by the price and
/// capability tables so both match a model id the same way.
pub fn resolve_versioned<'a, E>(
    entries: &'a BTreeMap<String, E>,
    kind: &str,
    model: &str,
) -> Option<(&'a str, &'a E)> {
    let key = format!("{kind}/{model}").to_ascii_lowercase();
    if let Some((k, e)) = entries.get_key_value(&key) {
        return Some((k.as_str(), e));
    }
    let min = kind.len() + 2;
    for (i, _) in key.char_indices().rev() {
        if i < min {
            break;
        }
        let (Some(prefix), Some(rest)) = (key.get(..i), key.get(i..)) else {
            continue;
        };
        if is_version_suffix(rest) {
            if let Some((k, e)) = entries.get_key_value(prefix) {
                return Some((k.as_str(), e));
            }
        }
    }
    None
}

/// Whether `rest` (what follows a candidate key) is a date or version suffix;
/// see the module docs.
fn is_version_suffix(rest: &str) -> bool {
    if rest == "-latest" {
        return true;
    }
    let (sep, after) = match rest.as_bytes().first() {
        Some(b'-') => ('-', rest.get(1..).unwrap_or("")),
        Some(b'@') => ('@', rest.get(1..).unwrap_or("")),
        _ => return false,
    };
    if sep == '-' {
        if let Some(v) = after.strip_prefix('v') {
            let digits = v.bytes().take_while(u8::is_ascii_digit).count();
            return digits >= 1 && matches!(v.as_bytes().get(digits), None | Some(b':' | b'-'));
        }
    }
    let digits = after.bytes().take_while(u8::is_ascii_digit).count();
    digits >= 3
        && !after
            .as_bytes()
            .get(digits)
            .is_some_and(u8::is_ascii_alphabetic)
}

fn valid_key(key: &str) -> bool {
    key.len() <= 300
        && key
            .split_once('/')
            .is_some_and(|(kind, model)| !kind.is_empty() && !model.is_empty())
}

impl PriceTable {
    /// Parses a price file (the shape of `data/prices.json`).
    pub fn from_json(text: &str) -> Result<Self, Vec<String>> {
        let file: PriceFile =
            serde_json::from_str(text).map_err(|e| vec![format!("prices.json: {e}")])?;
        let mut errors = Vec::new();
        let mut table = Self::default();
        for (kind, p) in file.providers {
            let at = format!("prices.json: providers.{kind}");
            if !p.source.starts_with("https://") {
                errors.push(format!("{at}.source: must be an https URL"));
            }
            if !is_iso_date(&p.as_of) {
                errors.push(format!("{at}.as_of: must be a YYYY-MM-DD date"));
            }
            for (model, spec) in &p.models {
                let key = format!("{kind}/{model}").to_ascii_lowercase();
                match spec.to_price(&format!("{at}.models.{model}")) {
                    Ok(price) => {
                        let entry = Entry {
                            price,
                            origin: Origin::Builtin,
                        };
                        if table.entries.insert(key.clone(), entry).is_some() {
                            errors.push(format!("{at}: '{key}' is listed twice"));
                        }
                    }
                    Err(e) => errors.extend(e),
                }
            }
            table.sources.insert(
                kind.to_ascii_lowercase(),
                ProviderSource {
                    source: p.source,
                    as_of: p.as_of,
                    note: p.note,
                },
            );
        }
        if errors.is_empty() {
            Ok(table)
        } else {
            Err(errors)
        }
    }

    /// A copy of this table with operator overrides (keys `kind/model`) and a
    /// default price for unknown models.
    pub fn with_overrides(
        &self,
        overrides: &BTreeMap<String, PriceOverride>,
        default: Option<&PriceOverride>,
    ) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        let mut table = self.clone();
        for (key, spec) in overrides {
            let at = format!("pricing.overrides.{key}");
            if !valid_key(key) {
                errors.push(format!(
                    "{at}: keys are 'kind/model' (the provider kind, e.g. openai/gpt-4o)"
                ));
                continue;
            }
            match spec.to_price(&at) {
                Ok(price) => {
                    table.entries.insert(
                        key.to_ascii_lowercase(),
                        Entry {
                            price,
                            origin: Origin::Override,
                        },
                    );
                }
                Err(e) => errors.extend(e),
            }
        }
        if let Some(spec) = default {
            match spec.to_price("pricing.default") {
                Ok(price) => table.default = Some(price),
                Err(e) => errors.extend(e),
            }
        }
        if errors.is_empty() {
            Ok(table)
        } else {
            Err(errors)
        }
    }

    /// The key and entry that price `kind/model`, without the default.
    fn resolve(&self, kind: &str, model: &str) -> Option<(&str, &Entry)> {
        resolve_versioned(&self.entries, kind, model)
    }

    /// Prices `model` as served by a provider of `kind`; see the module docs.
    pub fn lookup(&self, kind: &str, model: &str) -> Priced {
        match (self.resolve(kind, model), self.default) {
            (Some((_, e)), _) => Priced::Price(e.price),
            (None, Some(d)) => Priced::Default(d),
            (None, None) => Priced::Unpriced,
        }
    }

    /// The table key that prices `kind/model` and whether it is an override
    /// (for the admin API and the ledger); `None` when only the default or
    /// nothing applies.
    pub fn matched_key(&self, kind: &str, model: &str) -> Option<(String, Origin)> {
        self.resolve(kind, model)
            .map(|(k, e)| (k.to_owned(), e.origin))
    }

    /// Every entry, for the admin API.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Price, Origin)> {
        self.entries
            .iter()
            .map(|(k, e)| (k.as_str(), &e.price, e.origin))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn default_price(&self) -> Option<&Price> {
        self.default.as_ref()
    }

    /// Where the built-in prices of a kind come from.
    pub fn source(&self, kind: &str) -> Option<&ProviderSource> {
        self.sources.get(&kind.to_ascii_lowercase())
    }
}

/// The built-in table, parsed once per isolate. It cannot fail at run time (a
/// test parses the same file), but stays a `Result` so nothing panics.
pub fn builtin() -> Result<&'static PriceTable, &'static [String]> {
    static TABLE: OnceLock<Result<PriceTable, Vec<String>>> = OnceLock::new();
    match TABLE.get_or_init(|| PriceTable::from_json(BUILTIN_JSON)) {
        Ok(t) => Ok(t),
        Err(e) => Err(e.as_slice()),
    }
}

/// Config validation for the pricing section: every problem at once.
pub fn validate_pricing(
    overrides: &BTreeMap<String, PriceOverride>,
    default: Option<&PriceOverride>,
) -> Vec<String> {
    PriceTable::default()
        .with_overrides(overrides, default)
        .err()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> &'static PriceTable {
        builtin().unwrap()
    }

    fn usage(prompt: u64, cached: Option<u64>, completion: u64) -> Usage {
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
            cached_prompt_tokens: cached,
            reasoning_tokens: None,
        }
    }

    fn price(kind: &str, model: &str) -> Price {
        match table().lookup(kind, model) {
            Priced::Price(p) => p,
            other => panic!("{kind}/{model}: {other:?}"),
        }
    }

    #[test]
    fn every_builtin_entry_parses_with_positive_prices_and_a_source() {
        let file: serde_json::Value = serde_json::from_str(BUILTIN_JSON).unwrap();
        let providers = file["providers"].as_object().unwrap();
        for kind in [
            "openai",
            "azure",
            "anthropic",
            "bedrock",
            "gemini",
            "mistral",
            "groq",
            "deepseek",
            "xai",
            "together",
            "fireworks",
            "cohere",
        ] {
            let p = providers
                .get(kind)
                .unwrap_or_else(|| panic!("no prices for {kind}"));
            assert!(
                p["source"].as_str().unwrap().starts_with("https://"),
                "{kind}"
            );
            assert!(is_iso_date(p["as_of"].as_str().unwrap()), "{kind}");
            assert!(!p["models"].as_object().unwrap().is_empty(), "{kind}");
        }
        let t = table();
        assert!(t.len() > 100, "{}", t.len());
        for (key, p, origin) in t.iter() {
            assert_eq!(origin, Origin::Builtin);
            let kind = key.split_once('/').unwrap().0;
            assert!(t.source(kind).is_some(), "{key}: no source");
            for r in std::iter::once(p.base).chain(p.long_context.map(|l| l.rates)) {
                assert!(r.input_per_mtok > 0, "{key}: input");
                assert!(r.output_per_mtok > 0 || p.embedding, "{key}: output");
                assert!(r.cached_input_per_mtok > 0, "{key}: cached_input");
                assert!(r.cache_write_per_mtok > 0, "{key}: cache_write");
                assert!(r.cache_write_1h_per_mtok > 0, "{key}: cache_write_1h");
                assert!(
                    r.cached_input_per_mtok <= r.input_per_mtok,
                    "{key}: cache reads dearer than input"
                );
            }
            if let Some(lc) = p.long_context {
                assert!(lc.above_prompt_tokens >= 100_000, "{key}");
            }
            if p.embedding {
                assert_eq!(p.base.output_per_mtok, 0, "{key}");
            }
            // The key prices itself.
            let (k, m) = key.split_once('/').unwrap();
            assert_eq!(t.lookup(k, m), Priced::Price(*p), "{key}");
        }
    }

    #[test]
    fn dollars_convert_exactly_or_not_at_all() {
        assert_eq!(usd_to_micros(0.075), Some(75_000));
        assert_eq!(usd_to_micros(0.003625), Some(3_625));
        assert_eq!(usd_to_micros(0.1 + 0.2), Some(300_000));
        assert_eq!(usd_to_micros(168.0), Some(168_000_000));
        assert_eq!(usd_to_micros(0.0), Some(0));
        assert_eq!(usd_to_micros(0.000_000_1), None);
        assert_eq!(usd_to_micros(-1.0), None);
        assert_eq!(usd_to_micros(f64::NAN), None);
        assert_eq!(usd_to_micros(f64::INFINITY), None);
        let p = price("openai", "gpt-4o-mini");
        assert_eq!(
            (
                p.base.input_per_mtok,
                p.base.output_per_mtok,
                p.base.cached_input_per_mtok
            ),
            (150_000, 600_000, 75_000)
        );
    }

    #[test]
    fn cost_is_exact_and_cached_tokens_are_billed_once() {
        let p = price("openai", "gpt-4o-mini");
        // 600 uncached × 0.15 + 400 cached × 0.075 + 500 × 0.60, per 1M tokens:
        // (90_000_000 + 30_000_000 + 300_000_000) / 1M = 420 µ$.
        assert_eq!(cost_micros(&p, &usage(1_000, Some(400), 500)), 420);
        // Without the cache, all 1000 prompt tokens at the input rate.
        assert_eq!(cost_micros(&p, &usage(1_000, None, 500)), 450);
        // A cached count larger than the prompt is clamped, not double billed.
        assert_eq!(cost_micros(&p, &usage(1_000, Some(5_000), 0)), 75);
        // One million of each costs exactly the listed prices.
        assert_eq!(cost_micros(&p, &usage(1_000_000, None, 1_000_000)), 750_000);
    }

    #[test]
    fn cost_rounds_up_so_nothing_priced_is_free() {
        let p = price("openai", "gpt-5-nano"); // $0.05 / 1M input
        assert_eq!(cost_micros(&p, &usage(1, None, 0)), 1);
        assert_eq!(cost_micros(&p, &usage(20, None, 0)), 1);
        assert_eq!(cost_micros(&p, &usage(21, None, 0)), 2);
        assert_eq!(cost_micros(&p, &usage(0, None, 0)), 0);
    }

    #[test]
    fn hidden_output_in_the_total_is_billed() {
        let p = Price::flat(1_000_000, 2_000_000);
        let mut u = usage(10, None, 5);
        u.total_tokens = 40; // 25 output tokens reported only in the total
        assert_eq!(Billable::from_usage(&u).output, 30);
        assert_eq!(cost_micros(&p, &u), 70);
    }

    #[test]
    fn long_context_tier_prices_the_whole_request() {
        let p = price("anthropic", "claude-sonnet-4-5");
        let at = |prompt| cost_micros(&p, &usage(prompt, None, 1_000));
        // ≤ 200k: $3 in, $15 out; above: $6 in, $22.50 out.
        assert_eq!(at(200_000), 600_000 + 15_000);
        assert_eq!(at(200_001), 1_200_006 + 22_500);
        let flat = price("anthropic", "claude-sonnet-4-6");
        assert!(flat.long_context.is_none());
    }

    /// A small deterministic generator; no `rand` dependency.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) % n
        }
    }

    #[test]
    fn worst_case_bounds_every_cost_within_its_limits() {
        let mut rng = Lcg(7);
        let mut writes = Price::flat(3_000_000, 15_000_000);
        writes.base.cache_write_1h_per_mtok = 6_000_000;
        let prices: Vec<Price> = table().iter().map(|(_, p, _)| *p).chain([writes]).collect();
        for p in &prices {
            for _ in 0..50 {
                let prompt_bound = rng.next(400_000);
                let max_out = rng.next(100_000);
                let prompt = rng.next(prompt_bound + 1);
                let cached = rng.next(prompt + 1);
                let w1h = rng.next(prompt - cached + 1);
                let b = Billable {
                    input: prompt - cached - w1h,
                    cached_input: cached,
                    cache_write: 0,
                    cache_write_1h: w1h,
                    output: rng.next(max_out + 1),
                };
                let worst = worst_case_micros(p, prompt_bound, max_out);
                assert!(cost_of(p, &b) <= worst, "{p:?} {b:?}");
            }
        }
        // Cache writes are dearer than input, and the worst case knows it.
        assert_eq!(worst_case_micros(&writes, 1_000_000, 0), 6_000_000);
    }

    #[test]
    fn dated_and_versioned_ids_find_their_base_entry() {
        let t = table();
        let key = |kind: &str, model: &str| t.matched_key(kind, model).map(|(k, _)| k);
        for (kind, model, expect) in [
            (
                "anthropic",
                "claude-sonnet-4-5-20250929",
                "anthropic/claude-sonnet-4-5",
            ),
            (
                "anthropic",
                "claude-haiku-4-5-20251001",
                "anthropic/claude-haiku-4-5",
            ),
            (
                "anthropic",
                "claude-opus-4-7-latest",
                "anthropic/claude-opus-4-7",
            ),
            ("openai", "gpt-4o-2024-08-06", "openai/gpt-4o"),
            ("openai", "gpt-4o-2024-05-13", "openai/gpt-4o-2024-05-13"),
            ("openai", "gpt-4o-mini-2024-07-18", "openai/gpt-4o-mini"),
            ("openai", "gpt-5.4-2026-03-05", "openai/gpt-5.4"),
            ("openai", "GPT-4o", "openai/gpt-4o"),
            (
                "bedrock",
                "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
                "bedrock/us.anthropic.claude-sonnet-4-5",
            ),
            (
                "bedrock",
                "global.anthropic.claude-opus-4-6-v1",
                "bedrock/global.anthropic.claude-opus-4-6",
            ),
            (
                "bedrock",
                "anthropic.claude-opus-4-7",
                "bedrock/anthropic.claude-opus-4-7",
            ),
            ("gemini", "gemini-2.5-flash-001", "gemini/gemini-2.5-flash"),
            (
                "together",
                "meta-llama/llama-3.3-70b-instruct-turbo",
                "together/meta-llama/llama-3.3-70b-instruct-turbo",
            ),
            (
                "fireworks",
                "accounts/fireworks/models/gpt-oss-120b",
                "fireworks/accounts/fireworks/models/gpt-oss-120b",
            ),
        ] {
            assert_eq!(key(kind, model).as_deref(), Some(expect), "{kind}/{model}");
        }
        // A Vertex-style '@' date.
        assert!(is_version_suffix("@20250929"));
        // Family names never borrow a sibling's price.
        for (kind, model) in [
            ("openai", "gpt-4o-audio-preview"),
            ("openai", "gpt-5-codex"),
            ("openai", "gpt-5.9"),
            ("anthropic", "claude-sonnet-4"),
            ("anthropic", "claude-opus-4-7x"),
            ("anthropic", "claude-opus-4-7-20260416beta"),
            ("openrouter", "openai/gpt-4o"),
            ("ollama", "llama3"),
        ] {
            assert_eq!(key(kind, model), None, "{kind}/{model}");
            assert_eq!(t.lookup(kind, model), Priced::Unpriced, "{kind}/{model}");
        }
        for bad in [
            "-mini",
            "-5",
            "-10",
            "-120b",
            "-v",
            "-vx",
            "latest",
            "-latest-2",
        ] {
            assert!(!is_version_suffix(bad), "{bad}");
        }
        for good in [
            "-0709",
            "-001",
            "-2024-08-06",
            "-v1",
            "-v1:0",
            "-latest",
            "-1106-preview",
        ] {
            assert!(is_version_suffix(good), "{good}");
        }
        // The kind matters: Azure's embedding prices differ from OpenAI's.
        assert_ne!(
            price("azure", "text-embedding-3-small"),
            price("openai", "text-embedding-3-small")
        );
    }

    #[test]
    fn overrides_replace_and_extend_and_the_default_catches_the_rest() {
        let mut o = BTreeMap::new();
        o.insert(
            "openai/gpt-4o".to_owned(),
            PriceOverride {
                input: 1.0,
                output: 2.0,
                ..Default::default()
            },
        );
        o.insert(
            "ollama/llama3".to_owned(),
            PriceOverride {
                input: 0.0,
                output: 0.0,
                ..Default::default()
            },
        );
        let default = PriceOverride {
            input: 10.0,
            output: 30.0,
            ..Default::default()
        };
        let t = table().with_overrides(&o, Some(&default)).unwrap();
        let flat = |i, o| Priced::Price(Price::flat(i, o));
        assert_eq!(t.lookup("openai", "gpt-4o"), flat(1_000_000, 2_000_000));
        // The override also prices the dated ids.
        assert_eq!(
            t.lookup("openai", "gpt-4o-2024-11-20"),
            flat(1_000_000, 2_000_000)
        );
        assert_eq!(
            t.matched_key("openai", "gpt-4o-2024-11-20"),
            Some(("openai/gpt-4o".to_owned(), Origin::Override))
        );
        assert_eq!(t.lookup("ollama", "llama3"), flat(0, 0));
        assert_eq!(
            t.lookup("openai", "gpt-unknown"),
            Priced::Default(Price::flat(10_000_000, 30_000_000))
        );
        assert_eq!(table().lookup("openai", "gpt-unknown"), Priced::Unpriced);
        // Builtin entries are untouched elsewhere.
        assert_eq!(
            t.lookup("openai", "gpt-4o-mini"),
            table().lookup("openai", "gpt-4o-mini")
        );
    }

    #[test]
    fn override_validation_collects_every_problem() {
        let spec = |v: serde_json::Value| serde_json::from_value::<PriceOverride>(v).unwrap();
        let mut o = BTreeMap::new();
        o.insert(
            "no-slash".to_owned(),
            spec(serde_json::json!({"input": 1, "output": 1})),
        );
        o.insert(
            "openai/neg".to_owned(),
            spec(serde_json::json!({"input": -1, "output": 1})),
        );
        o.insert(
            "openai/tiny".to_owned(),
            spec(serde_json::json!({"input": 1, "output": 0.0000001})),
        );
        o.insert(
            "openai/lc".to_owned(),
            spec(serde_json::json!({"input": 1, "output": 1, "long_context": {"above_prompt_tokens": 0}})),
        );
        let default = spec(serde_json::json!({"input": 1e9, "output": 1}));
        let err = validate_pricing(&o, Some(&default)).join("\n");
        for needle in [
            "pricing.overrides.no-slash: keys are 'kind/model'",
            "pricing.overrides.openai/neg.input",
            "pricing.overrides.openai/tiny.output",
            "pricing.overrides.openai/lc.long_context.above_prompt_tokens",
            "pricing.default.input",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in\n{err}");
        }
        assert!(validate_pricing(&BTreeMap::new(), None).is_empty());
        let unknown = serde_json::from_value::<PriceOverride>(
            serde_json::json!({"input": 1, "output": 1, "cache_read": 1}),
        );
        assert!(unknown.unwrap_err().to_string().contains("unknown field"));
    }

    #[test]
    fn long_context_rates_never_undercut_the_base() {
        let spec = PriceSpec {
            input: 3.0,
            output: 15.0,
            long_context: Some(LongContextSpec {
                above_prompt_tokens: 200_000,
                input: Some(2.0),
                ..Default::default()
            }),
            ..Default::default()
        };
        let p = spec.to_price("t").unwrap();
        let lc = p.long_context.unwrap().rates;
        assert_eq!(lc.input_per_mtok, 3_000_000);
        assert_eq!(lc.output_per_mtok, 15_000_000);
    }

    #[test]
    fn prompt_bound_covers_every_byte_of_text() {
        assert_eq!(
            estimate_prompt_tokens_upper_bound(0),
            PROMPT_TEMPLATE_ALLOWANCE_TOKENS
        );
        assert_eq!(
            estimate_prompt_tokens_upper_bound(4_096),
            4_096 + PROMPT_TEMPLATE_ALLOWANCE_TOKENS
        );
        assert_eq!(estimate_prompt_tokens_upper_bound(usize::MAX), u64::MAX);
        // A JSON body is never shorter than the UTF-8 text it carries, so the
        // body length bounds the text's bytes, which bound its tokens.
        for text in [
            "plain English text",
            "emoji 🦀🔥👍🏽 and flags 🇫🇷",
            "日本語のテキスト、中文文本",
            "quotes \" and \\ backslashes\n\t\r",
            "\u{0}\u{1}\u{1f} control",
            "",
        ] {
            let body = serde_json::json!({
                "model": "m",
                "messages": [{"role": "user", "content": text}]
            })
            .to_string();
            assert!(body.len() >= text.len(), "{text:?}");
            assert!(estimate_prompt_tokens_upper_bound(body.len()) >= text.len() as u64);
        }
        // bytes/4 (the post-hoc estimate in usage.rs) is not a bound: a
        // byte-fallback tokenizer spends one token per byte on rare symbols.
        let rare = "𓀀𓀁𓀂𓀃";
        assert!((rare.len() as u64).div_ceil(4) < rare.len() as u64);
    }
}
