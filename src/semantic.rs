//! The semantic cache's pure core: what must match exactly (the partition),
//! what is compared by meaning (the last user turn), the cosine decision and
//! the near-miss guard. No `worker` types and no I/O; `handlers/semantic.rs`
//! wires it to an embedder and an index, `semantic_do.rs` is the embedded index.
//!
//! Threats (`../shared/reference/anchors-reliability.md` C3, anchors-performance
//! §3): wrong answers served for near-misses, entries crossing tenants, system
//! prompts or models.
//!
//! # Partition ([`partition_key`])
//!
//! Lowercase hex SHA-256 over the same prefix-free encoding as the exact cache
//! key (`cache.rs`), domain-separated from it: tenant, route identity (the
//! requested model and every `provider/model` it can resolve to, with link
//! params), namespace, and the canonical chat request *with the last user
//! turn's content replaced by a fixed marker*. So the system prompt, earlier
//! turns, tools, `response_format` and every sampling parameter must be
//! byte-for-byte equal (after canonicalisation) for two requests to be
//! compared at all. Similarity never decides isolation: the partition is the
//! Vectorize namespace, and the Durable Object index filters on it exactly.
//!
//! # What is embedded ([`semantic_request`])
//!
//! The last message, if it is a `user` message whose content is a string or a
//! list of only `text` parts (joined with newlines), trimmed, non-empty, and
//! at most [`MAX_PROMPT_CHARS`] characters (the text travels as index
//! metadata, which the guard needs and Vectorize caps at 10 KiB). Anything
//! else — an image, a trailing tool result, an assistant prefill — has no
//! semantic request, and the layer is skipped.
//!
//! # Decision ([`judge`])
//!
//! A candidate hits when its cosine similarity is at least the route's
//! threshold, it has not expired, and the guard finds no near-miss between
//! the new prompt and the candidate's prompt. The guard ([`near_miss`])
//! vetoes when, between the two texts:
//!
//! * **numbers** differ (digits, with `,` separators removed, and number
//!   words two…billion, ordinals first/third…tenth), as a multiset;
//! * a number is bound to another **unit** (`5 km` vs `5 miles`), or the
//!   sets of units differ (km/kilometre/kilometer are one unit);
//! * the count of **negations** differs (`not`, `no`, `never`, `without`,
//!   `n't`…);
//! * a **named entity** — a capitalised token not at a sentence start, a
//!   sentence-initial capitalised token that is not a common word, or an
//!   acronym — of one text does not occur (in any case) in the other;
//! * the **programming languages** named differ;
//! * the **order** of shared entities differs, or the target after `to` /
//!   `into` differs (`Paris to London` vs `London to Paris`, `miles to km` vs
//!   `km to miles`);
//! * a **one-word substitution**: aligned on their longest common token
//!   subsequence, the texts differ somewhere by a short span on each side
//!   whose content words occur nowhere in the other text (`bad for you` vs
//!   `good for you`, `kill a python process` vs `kill a python snake`).
//!   Synonym swaps (`coding` vs `programming`) are vetoed too: a miss, never
//!   a wrong answer.
//!
//! Measured on `bench/semantic/pairs.tsv` with `make bench-semantic`; the
//! default threshold and its recall are in docs/decisions.md.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Longest last user turn (in characters) the semantic layer embeds.
pub const MAX_PROMPT_CHARS: usize = 2_000;

/// Default cosine threshold (chosen with `make bench-semantic`, see docs/decisions.md).
pub const DEFAULT_THRESHOLD: f32 = 0.92;

/// Stands in for the last user turn in the partition's canonical request.
const LAST_TURN_MARKER: &str = "\u{0}tollgate:semantic:last-user-turn\u{0}";

/// Separates partition keys from every other SHA-256 the gateway computes.
const PARTITION_DOMAIN: &[u8] = b"tollgate/semantic-partition";

/// Part of every partition; bump to orphan every stored vector.
pub const SEMANTIC_SCHEMA_VERSION: u32 = 1;

/// When the semantic layer runs (global, per key, per route; like the exact cache's mode).
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SemanticMode {
    /// Never (the default).
    #[default]
    Off,
    /// Only for requests that send `x-tollgate-cache: semantic`.
    OptIn,
    /// After every exact-cache miss.
    On,
    /// After every exact-cache miss: look up and log would-be hits to D1,
    /// never serve them; store answers so the index fills.
    Shadow,
}

/// What the semantic layer compares for one chat request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SemanticRequest {
    /// Everything that must match exactly, hashed.
    pub partition: String,
    /// The last user turn: the text that is embedded and compared.
    pub text: String,
}

/// The partition and the text, or `None` when the request has no semantic
/// form (see the module docs). `canonical_without_last_turn` is the exact
/// cache's canonical request of the body with the last turn replaced.
pub fn semantic_request(
    tenant: &str,
    route_identity: &str,
    namespace: Option<&str>,
    body: &Map<String, Value>,
) -> Option<SemanticRequest> {
    let messages = body.get("messages")?.as_array()?;
    let last = messages.last()?.as_object()?;
    if last.get("role").and_then(Value::as_str) != Some("user") {
        return None;
    }
    let text = user_text(last.get("content")?)?;
    let text = text.trim();
    if text.is_empty() || text.chars().count() > MAX_PROMPT_CHARS {
        return None;
    }
    let mut masked = body.clone();
    if let Some(Value::Array(ms)) = masked.get_mut("messages") {
        if let Some(Value::Object(m)) = ms.last_mut() {
            m.insert("content".to_owned(), Value::from(LAST_TURN_MARKER));
        }
    }
    let canonical = crate::cache::canonical_chat_request(&masked).ok()?;
    Some(SemanticRequest {
        partition: partition_key(tenant, route_identity, namespace, &canonical),
        text: text.to_owned(),
    })
}

fn user_text(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            let mut texts = Vec::with_capacity(parts.len());
            for p in parts {
                let p = p.as_object()?;
                if p.get("type").and_then(Value::as_str) != Some("text") {
                    return None;
                }
                texts.push(p.get("text")?.as_str()?);
            }
            Some(texts.join("\n"))
        }
        _ => None,
    }
}

fn field(h: &mut Sha256, bytes: &[u8]) {
    let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    h.update(len.to_be_bytes());
    h.update(bytes);
}

/// The partition key (64 lowercase hex characters: a valid Vectorize namespace).
pub fn partition_key(
    tenant: &str,
    route_identity: &str,
    namespace: Option<&str>,
    canonical_masked_request: &str,
) -> String {
    let mut h = Sha256::new();
    field(&mut h, PARTITION_DOMAIN);
    field(&mut h, &SEMANTIC_SCHEMA_VERSION.to_be_bytes());
    field(&mut h, tenant.as_bytes());
    field(&mut h, route_identity.as_bytes());
    match namespace {
        None => field(&mut h, &[0]),
        Some(ns) => {
            let mut tagged = vec![1];
            tagged.extend_from_slice(ns.as_bytes());
            field(&mut h, &tagged);
        }
    }
    field(&mut h, canonical_masked_request.as_bytes());
    hex::encode(h.finalize())
}

/// The id of a stored vector: SHA-256 of its partition and text (64 hex
/// characters, Vectorize's id limit), so storing the same prompt twice
/// replaces rather than duplicates.
pub fn vector_id(partition: &str, text: &str) -> String {
    let mut h = Sha256::new();
    field(&mut h, b"tollgate/semantic-id");
    field(&mut h, partition.as_bytes());
    field(&mut h, text.as_bytes());
    hex::encode(h.finalize())
}

/// A short tenant tag for Vectorize's metadata filter (a second fence on top
/// of the namespace) and the Durable Object's name.
pub fn tenant_tag(tenant: &str) -> String {
    let h = Sha256::digest(tenant.as_bytes());
    hex::encode(h.get(..16).unwrap_or_default())
}

/// Cosine similarity; 0 for mismatched or zero-length vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() || a.is_empty() {
        return 0.0;
    }
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (f64::from(*x), f64::from(*y));
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    #[expect(clippy::cast_possible_truncation, reason = "a cosine fits f32")]
    let c = (dot / (na.sqrt() * nb.sqrt())) as f32;
    c
}

/// Little-endian `f32` bytes (the Durable Object stores vectors as blobs).
pub fn vector_to_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The inverse of [`vector_to_bytes`]; `None` for a length not a multiple of 4.
pub fn vector_from_bytes(b: &[u8]) -> Option<Vec<f32>> {
    if !b.len().is_multiple_of(4) {
        return None;
    }
    b.chunks_exact(4)
        .map(|c| c.try_into().ok().map(f32::from_le_bytes))
        .collect()
}

/// What the index keeps next to each vector (Vectorize metadata, a column in
/// the Durable Object).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredMeta {
    /// [`tenant_tag`] of the owner (Vectorize filters on it).
    pub tenant: String,
    /// The prompt that was embedded (the guard compares it).
    pub text: String,
    /// Unix seconds after which the entry is gone (KV expires it too).
    pub expires_at: u64,
}

/// One match from an index query.
#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    pub id: String,
    pub score: f32,
    pub meta: Option<StoredMeta>,
}

/// Why a candidate was not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Hit,
    BelowThreshold,
    Expired,
    /// Another tenant's metadata (never expected: the partition is scoped).
    ForeignTenant,
    /// The index returned no metadata to check the guard against.
    NoMetadata,
    Vetoed(Veto),
}

impl Verdict {
    /// Short snake-case label for logs and the shadow table.
    pub fn label(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::BelowThreshold => "below_threshold",
            Self::Expired => "expired",
            Self::ForeignTenant => "foreign_tenant",
            Self::NoMetadata => "no_metadata",
            Self::Vetoed(v) => v.label(),
        }
    }
}

/// The near-miss guard's reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Veto {
    Number,
    Unit,
    Negation,
    Entity,
    CodeLanguage,
    Order,
    Substitution,
}

impl Veto {
    pub fn label(self) -> &'static str {
        match self {
            Self::Number => "veto_number",
            Self::Unit => "veto_unit",
            Self::Negation => "veto_negation",
            Self::Entity => "veto_entity",
            Self::CodeLanguage => "veto_code_language",
            Self::Order => "veto_order",
            Self::Substitution => "veto_substitution",
        }
    }
}

/// Decides one candidate for `text` (see the module docs).
pub fn judge(text: &str, tenant_tag: &str, m: &Match, threshold: f32, now_secs: u64) -> Verdict {
    if m.score < threshold {
        return Verdict::BelowThreshold;
    }
    let Some(meta) = &m.meta else {
        return Verdict::NoMetadata;
    };
    if meta.tenant != tenant_tag {
        return Verdict::ForeignTenant;
    }
    if meta.expires_at <= now_secs {
        return Verdict::Expired;
    }
    match near_miss(text, &meta.text) {
        Some(v) => Verdict::Vetoed(v),
        None => Verdict::Hit,
    }
}

// ------------------------------------------------------------------ guard

#[derive(Debug, Clone)]
struct Token {
    /// Lowercase, apostrophes normalised, possessive `'s` dropped.
    lower: String,
    capitalised: bool,
    acronym: bool,
    sentence_start: bool,
}

fn tokenize(text: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut sentence_start = true;
    let chars: Vec<char> = text
        .chars()
        .map(|c| if c == '’' { '\'' } else { c })
        .collect();
    let push = |word: &mut String, out: &mut Vec<Token>, sentence_start: &mut bool| {
        if word.is_empty() {
            return;
        }
        let w = word.trim_matches('\'').to_owned();
        word.clear();
        if w.is_empty() {
            return;
        }
        // `5km` is a number and a unit.
        let split = w.find(|c: char| c.is_alphabetic()).filter(|&i| {
            i > 0
                && w[..i]
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == '.' || c == ',')
        });
        let parts: Vec<String> = match split {
            Some(i) if !is_ordinal(&w.to_lowercase()) => vec![w[..i].to_owned(), w[i..].to_owned()],
            _ => vec![w],
        };
        for p in parts {
            let first_upper = p.chars().next().is_some_and(char::is_uppercase);
            let letters: Vec<char> = p.chars().filter(|c| c.is_alphabetic()).collect();
            let acronym = letters.len() >= 2 && letters.iter().all(|c| c.is_uppercase());
            let mut lower = p.to_lowercase();
            if let Some(stem) = lower.strip_suffix("'s") {
                lower = stem.to_owned();
            }
            out.push(Token {
                lower,
                capitalised: first_upper,
                acronym,
                sentence_start: *sentence_start,
            });
            *sentence_start = false;
        }
    };
    for (i, &c) in chars.iter().enumerate() {
        let prev_digit = i > 0 && chars.get(i - 1).is_some_and(char::is_ascii_digit);
        let next_digit = chars.get(i + 1).is_some_and(char::is_ascii_digit);
        let next_alpha = chars.get(i + 1).is_some_and(|c| c.is_alphanumeric());
        let in_word = c.is_alphanumeric()
            || (c == '\'' && !word.is_empty() && next_alpha)
            || ((c == '.' || c == ',') && prev_digit && next_digit && !word.is_empty())
            || ((c == '+' || c == '#') && !word.is_empty());
        if in_word {
            word.push(c);
            continue;
        }
        push(&mut word, &mut out, &mut sentence_start);
        if c == '%' {
            word.push(c);
            push(&mut word, &mut out, &mut sentence_start);
        }
        if matches!(c, '.' | '?' | '!' | ':' | ';' | '\n' | '"' | '(') {
            sentence_start = true;
        }
    }
    push(&mut word, &mut out, &mut sentence_start);
    out
}

fn is_ordinal(w: &str) -> bool {
    ["st", "nd", "rd", "th"].iter().any(|s| {
        w.strip_suffix(s)
            .is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()))
    })
}

const NUMBER_WORDS: &[(&str, &str)] = &[
    ("zero", "0"),
    ("two", "2"),
    ("three", "3"),
    ("four", "4"),
    ("five", "5"),
    ("six", "6"),
    ("seven", "7"),
    ("eight", "8"),
    ("nine", "9"),
    ("ten", "10"),
    ("eleven", "11"),
    ("twelve", "12"),
    ("fifteen", "15"),
    ("twenty", "20"),
    ("thirty", "30"),
    ("forty", "40"),
    ("fifty", "50"),
    ("hundred", "100"),
    ("thousand", "1000"),
    ("million", "1000000"),
    ("billion", "1000000000"),
    ("dozen", "12"),
    ("half", "0.5"),
    ("double", "x2"),
    ("twice", "x2"),
    ("triple", "x3"),
    ("third", "3rd"),
    ("fourth", "4th"),
    ("fifth", "5th"),
    ("sixth", "6th"),
    ("seventh", "7th"),
    ("eighth", "8th"),
    ("ninth", "9th"),
    ("tenth", "10th"),
];

/// The token as a number, if it is one.
fn number(t: &str) -> Option<String> {
    if let Some((_, n)) = NUMBER_WORDS.iter().find(|(w, _)| *w == t) {
        return Some((*n).to_owned());
    }
    if !t.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let cleaned: String = t.chars().filter(|&c| c != ',').collect();
    // 5.0 ≡ 5
    let cleaned = match cleaned.split_once('.') {
        Some((i, f)) if f.chars().all(|c| c == '0') => i.to_owned(),
        _ => cleaned,
    };
    Some(cleaned)
}

/// Unit spellings → one name.
const UNITS: &[(&str, &str)] = &[
    ("km", "km"),
    ("kms", "km"),
    ("kilometer", "km"),
    ("kilometers", "km"),
    ("kilometre", "km"),
    ("kilometres", "km"),
    ("mile", "mile"),
    ("miles", "mile"),
    ("mi", "mile"),
    ("m", "m"),
    ("meter", "m"),
    ("meters", "m"),
    ("metre", "m"),
    ("metres", "m"),
    ("cm", "cm"),
    ("centimeter", "cm"),
    ("centimeters", "cm"),
    ("centimetre", "cm"),
    ("centimetres", "cm"),
    ("mm", "mm"),
    ("millimeter", "mm"),
    ("millimeters", "mm"),
    ("inch", "inch"),
    ("inches", "inch"),
    ("in", "inch"),
    ("foot", "foot"),
    ("feet", "foot"),
    ("ft", "foot"),
    ("yard", "yard"),
    ("yards", "yard"),
    ("kg", "kg"),
    ("kgs", "kg"),
    ("kilogram", "kg"),
    ("kilograms", "kg"),
    ("g", "g"),
    ("gram", "g"),
    ("grams", "g"),
    ("lb", "lb"),
    ("lbs", "lb"),
    ("pound", "lb"),
    ("pounds", "lb"),
    ("oz", "oz"),
    ("ounce", "oz"),
    ("ounces", "oz"),
    ("stone", "stone"),
    ("ton", "ton"),
    ("tons", "ton"),
    ("tonne", "tonne"),
    ("tonnes", "tonne"),
    ("l", "l"),
    ("liter", "l"),
    ("liters", "l"),
    ("litre", "l"),
    ("litres", "l"),
    ("ml", "ml"),
    ("milliliter", "ml"),
    ("milliliters", "ml"),
    ("gallon", "gallon"),
    ("gallons", "gallon"),
    ("cup", "cup"),
    ("cups", "cup"),
    ("tablespoon", "tbsp"),
    ("tablespoons", "tbsp"),
    ("tbsp", "tbsp"),
    ("teaspoon", "tsp"),
    ("teaspoons", "tsp"),
    ("tsp", "tsp"),
    ("celsius", "celsius"),
    ("centigrade", "celsius"),
    ("°c", "celsius"),
    ("fahrenheit", "fahrenheit"),
    ("°f", "fahrenheit"),
    ("kelvin", "kelvin"),
    ("second", "second"),
    ("seconds", "second"),
    ("sec", "second"),
    ("secs", "second"),
    ("minute", "minute"),
    ("minutes", "minute"),
    ("min", "minute"),
    ("mins", "minute"),
    ("hour", "hour"),
    ("hours", "hour"),
    ("hr", "hour"),
    ("hrs", "hour"),
    ("day", "day"),
    ("days", "day"),
    ("week", "week"),
    ("weeks", "week"),
    ("month", "month"),
    ("months", "month"),
    ("year", "year"),
    ("years", "year"),
    ("mph", "mph"),
    ("kph", "kph"),
    ("kmh", "kph"),
    ("byte", "byte"),
    ("bytes", "byte"),
    ("kb", "kb"),
    ("kib", "kib"),
    ("mb", "mb"),
    ("mib", "mib"),
    ("gb", "gb"),
    ("gib", "gib"),
    ("tb", "tb"),
    ("bit", "bit"),
    ("bits", "bit"),
    ("dollar", "usd"),
    ("dollars", "usd"),
    ("usd", "usd"),
    ("euro", "eur"),
    ("euros", "eur"),
    ("eur", "eur"),
    ("yen", "jpy"),
    ("jpy", "jpy"),
    ("gbp", "gbp"),
    ("sterling", "gbp"),
    ("percent", "percent"),
    ("%", "percent"),
    ("calorie", "kcal"),
    ("calories", "kcal"),
    ("kcal", "kcal"),
    ("watt", "w"),
    ("watts", "w"),
    ("kw", "kw"),
    ("kwh", "kwh"),
    ("volt", "v"),
    ("volts", "v"),
    ("acre", "acre"),
    ("acres", "acre"),
    ("hectare", "hectare"),
    ("hectares", "hectare"),
];

/// Words that are units only right after a number (`in`, `m`, `g`, `l`,
/// `second`, `min` are ordinary words elsewhere).
const AMBIGUOUS_UNITS: &[&str] = &[
    "in", "m", "g", "l", "second", "min", "mi", "stone", "cup", "cups",
];

fn unit(t: &str) -> Option<&'static str> {
    UNITS.iter().find(|(w, _)| *w == t).map(|(_, u)| *u)
}

/// Programming and data languages → one name.
const CODE_LANGUAGES: &[(&str, &str)] = &[
    ("python", "python"),
    ("py", "python"),
    ("javascript", "javascript"),
    ("js", "javascript"),
    ("node", "javascript"),
    ("nodejs", "javascript"),
    ("typescript", "typescript"),
    ("ts", "typescript"),
    ("rust", "rust"),
    ("golang", "go"),
    ("java", "java"),
    ("kotlin", "kotlin"),
    ("scala", "scala"),
    ("c++", "cpp"),
    ("cpp", "cpp"),
    ("c#", "csharp"),
    ("csharp", "csharp"),
    ("f#", "fsharp"),
    ("ruby", "ruby"),
    ("php", "php"),
    ("swift", "swift"),
    ("haskell", "haskell"),
    ("bash", "bash"),
    ("shell", "bash"),
    ("sh", "bash"),
    ("zsh", "zsh"),
    ("powershell", "powershell"),
    ("sql", "sql"),
    ("postgres", "postgres"),
    ("postgresql", "postgres"),
    ("mysql", "mysql"),
    ("sqlite", "sqlite"),
    ("perl", "perl"),
    ("lua", "lua"),
    ("elixir", "elixir"),
    ("erlang", "erlang"),
    ("dart", "dart"),
    ("julia", "julia"),
    ("ocaml", "ocaml"),
    ("clojure", "clojure"),
    ("zig", "zig"),
    ("fortran", "fortran"),
    ("cobol", "cobol"),
    ("matlab", "matlab"),
    ("html", "html"),
    ("css", "css"),
    ("yaml", "yaml"),
    ("json", "json"),
    ("toml", "toml"),
    ("xml", "xml"),
    ("regex", "regex"),
];

fn code_language(t: &Token) -> Option<&'static str> {
    if let Some((_, l)) = CODE_LANGUAGES.iter().find(|(w, _)| *w == t.lower) {
        return Some(l);
    }
    // `Go`, `C` and `R` are languages only when capitalised.
    match (t.lower.as_str(), t.capitalised && !t.sentence_start) {
        ("go", true) => Some("go"),
        ("c", true) => Some("c"),
        ("r", true) => Some("r"),
        _ => None,
    }
}

fn is_negation(t: &str) -> bool {
    matches!(
        t,
        "not"
            | "no"
            | "never"
            | "none"
            | "nobody"
            | "nothing"
            | "nowhere"
            | "neither"
            | "nor"
            | "without"
            | "cannot"
            | "dont"
            | "doesnt"
            | "didnt"
            | "isnt"
            | "arent"
            | "wasnt"
            | "werent"
            | "cant"
            | "wont"
            | "shouldnt"
            | "couldnt"
            | "wouldnt"
            | "havent"
            | "hasnt"
            | "mustnt"
    ) || t.ends_with("n't")
}

/// Words that start questions and requests: capitalised at a sentence start
/// they are not names.
const COMMON_WORDS: &[&str] = &[
    "a",
    "an",
    "the",
    "what",
    "what's",
    "whats",
    "how",
    "how's",
    "why",
    "when",
    "where",
    "which",
    "who",
    "whom",
    "whose",
    "is",
    "are",
    "was",
    "were",
    "do",
    "does",
    "did",
    "can",
    "could",
    "would",
    "should",
    "will",
    "shall",
    "may",
    "might",
    "must",
    "please",
    "tell",
    "give",
    "show",
    "explain",
    "describe",
    "list",
    "write",
    "create",
    "make",
    "generate",
    "summarize",
    "summarise",
    "translate",
    "convert",
    "compare",
    "define",
    "find",
    "help",
    "i",
    "i'm",
    "i've",
    "i'd",
    "my",
    "me",
    "we",
    "our",
    "you",
    "your",
    "it",
    "its",
    "this",
    "that",
    "these",
    "those",
    "there",
    "here",
    "in",
    "on",
    "at",
    "for",
    "from",
    "to",
    "of",
    "with",
    "without",
    "about",
    "by",
    "as",
    "if",
    "and",
    "or",
    "but",
    "so",
    "any",
    "some",
    "all",
    "every",
    "each",
    "no",
    "not",
    "yes",
    "hi",
    "hello",
    "hey",
    "ok",
    "okay",
    "quick",
    "quickly",
    "briefly",
    "simply",
    "also",
    "now",
    "then",
    "best",
    "good",
    "recommend",
    "suggest",
    "name",
    "provide",
    "calculate",
    "compute",
    "implement",
    "fix",
    "debug",
    "why's",
    "where's",
    "who's",
    "let's",
    "let",
    "could",
    "roughly",
    "approximately",
    "about",
    "much",
    "many",
    "is",
    "should",
    "does",
    "guide",
    "steps",
    "step",
    "ways",
    "way",
    "difference",
    "meaning",
    "definition",
    "whats",
    "just",
    "need",
    "want",
    "looking",
    "anyone",
    "someone",
    "using",
    "use",
    "get",
    "one",
    "two",
    "after",
    "before",
];

/// Words that carry no content for the substitution check.
const STOPWORDS: &[&str] = &[
    "a",
    "an",
    "the",
    "is",
    "are",
    "was",
    "were",
    "be",
    "been",
    "being",
    "am",
    "do",
    "does",
    "did",
    "i",
    "me",
    "my",
    "mine",
    "you",
    "your",
    "we",
    "our",
    "us",
    "it",
    "its",
    "this",
    "that",
    "these",
    "those",
    "what",
    "what's",
    "whats",
    "how",
    "why",
    "when",
    "where",
    "which",
    "who",
    "whom",
    "can",
    "could",
    "would",
    "should",
    "will",
    "shall",
    "may",
    "might",
    "must",
    "please",
    "tell",
    "give",
    "show",
    "explain",
    "describe",
    "of",
    "in",
    "on",
    "at",
    "to",
    "for",
    "from",
    "by",
    "with",
    "about",
    "as",
    "into",
    "and",
    "or",
    "but",
    "if",
    "then",
    "so",
    "than",
    "there",
    "here",
    "some",
    "any",
    "all",
    "way",
    "ways",
    "know",
    "need",
    "want",
    "help",
    "let",
    "just",
    "also",
    "really",
    "very",
    "much",
    "many",
    "thing",
    "things",
    "i'm",
    "i've",
    "it's",
    "there's",
    "someone",
    "something",
    "kind",
    "type",
    "possible",
    "proper",
    "correct",
    "actually",
    "exactly",
    "simple",
    "simply",
    "quick",
    "quickly",
    "briefly",
    "mean",
    "means",
    "meaning",
    "called",
    "say",
    "okay",
    "ok",
    "hi",
    "hello",
    "hey",
    "thanks",
    "thank",
    "recommend",
    "recommended",
    "suggest",
    "steps",
    "step",
    "guide",
];

fn is_stopword(t: &str) -> bool {
    STOPWORDS.contains(&t) || t.chars().all(|c| !c.is_alphanumeric())
}

/// A light stem for content-word comparison (plural `s`).
fn stem(t: &str) -> String {
    if t.len() > 3 && t.ends_with('s') && !t.ends_with("ss") {
        t[..t.len() - 1].to_owned()
    } else {
        t.to_owned()
    }
}

struct Features {
    tokens: Vec<Token>,
    numbers: Vec<String>,
    number_units: Vec<(String, &'static str)>,
    units: Vec<&'static str>,
    negations: usize,
    entities: Vec<String>,
    languages: Vec<&'static str>,
    /// The first unit, entity or language within three tokens after `to`/`into`.
    target: Option<String>,
    /// `(direction, next content word)` for `to`/`into`/`from`: `a string to
    /// an integer` vs `an integer to a string`, `into French` vs `from French`.
    directions: Vec<(&'static str, String)>,
}

fn features(text: &str) -> Features {
    let tokens = tokenize(text);
    let mut f = Features {
        tokens: Vec::new(),
        numbers: Vec::new(),
        number_units: Vec::new(),
        units: Vec::new(),
        negations: 0,
        entities: Vec::new(),
        languages: Vec::new(),
        target: None,
        directions: Vec::new(),
    };
    for (i, t) in tokens.iter().enumerate() {
        let after_number = i > 0 && tokens.get(i - 1).and_then(|p| number(&p.lower)).is_some();
        if let Some(n) = number(&t.lower) {
            f.numbers.push(n.clone());
            if let Some(u) = tokens.get(i + 1).and_then(|n| unit(&n.lower)) {
                f.number_units.push((n, u));
            }
        }
        if let Some(u) = unit(&t.lower) {
            // Time words without a number (`what year`, `hours of sleep`)
            // are not measurements.
            let time = matches!(
                u,
                "second" | "minute" | "hour" | "day" | "week" | "month" | "year"
            );
            if after_number || !(AMBIGUOUS_UNITS.contains(&t.lower.as_str()) || time) {
                f.units.push(u);
            }
        }
        if is_negation(&t.lower) {
            f.negations += 1;
        }
        if let Some(l) = code_language(t) {
            f.languages.push(l);
        }
        let name_like = t.capitalised
            && t.lower != "i"
            && !t.lower.starts_with("i'")
            && (!t.sentence_start || !COMMON_WORDS.contains(&t.lower.as_str()));
        if (name_like || t.acronym) && number(&t.lower).is_none() && unit(&t.lower).is_none() {
            f.entities.push(t.lower.clone());
        }
        let direction = match t.lower.as_str() {
            "to" | "into" | "onto" | "towards" | "toward" => Some("to"),
            "from" => Some("from"),
            _ => None,
        };
        if let Some(d) = direction {
            let next = tokens
                .iter()
                .skip(i + 1)
                .take(3)
                .find(|n| !is_stopword(&n.lower));
            if let Some(n) = next {
                f.directions.push((d, stem(&n.lower)));
            }
        }
        if f.target.is_none() && (t.lower == "to" || t.lower == "into") {
            f.target = tokens.iter().skip(i + 1).take(3).find_map(|n| {
                if let Some(u) =
                    unit(&n.lower).filter(|_| !AMBIGUOUS_UNITS.contains(&n.lower.as_str()))
                {
                    return Some(u.to_owned());
                }
                if let Some(l) = code_language(n) {
                    return Some(l.to_owned());
                }
                (n.capitalised && !n.sentence_start).then(|| n.lower.clone())
            });
        }
    }
    f.tokens = tokens;
    f
}

fn sorted<T: Ord + Clone>(v: &[T]) -> Vec<T> {
    let mut v = v.to_vec();
    v.sort();
    v
}

fn dedup_sorted<T: Ord + Clone>(v: &[T]) -> Vec<T> {
    let mut v = sorted(v);
    v.dedup();
    v
}

/// Why `a` and `b` are a near-miss (different questions that embed alike),
/// or `None` when the guard finds nothing. Symmetric.
pub fn near_miss(a: &str, b: &str) -> Option<Veto> {
    let fa = features(a);
    let fb = features(b);
    if sorted(&fa.numbers) != sorted(&fb.numbers) {
        return Some(Veto::Number);
    }
    if dedup_sorted(&fa.number_units) != dedup_sorted(&fb.number_units)
        && !(fa.number_units.is_empty() && fb.number_units.is_empty())
    {
        return Some(Veto::Unit);
    }
    if dedup_sorted(&fa.units) != dedup_sorted(&fb.units) {
        return Some(Veto::Unit);
    }
    if fa.negations != fb.negations {
        return Some(Veto::Negation);
    }
    if dedup_sorted(&fa.languages) != dedup_sorted(&fb.languages) {
        return Some(Veto::CodeLanguage);
    }
    let has = |f: &Features, w: &str| f.tokens.iter().any(|t| t.lower == w);
    if fa.entities.iter().any(|e| !has(&fb, e)) || fb.entities.iter().any(|e| !has(&fa, e)) {
        return Some(Veto::Entity);
    }
    // Shared entities in another order: `Paris to London` vs `London to Paris`.
    let order = |f: &Features, other: &Features| -> Vec<String> {
        let mut seen = Vec::new();
        for t in &f.tokens {
            let shared = fa.entities.contains(&t.lower) || fb.entities.contains(&t.lower);
            if shared && has(other, &t.lower) && !seen.contains(&t.lower) {
                seen.push(t.lower.clone());
            }
        }
        seen
    };
    if order(&fa, &fb) != order(&fb, &fa) {
        return Some(Veto::Order);
    }
    if let (Some(x), Some(y)) = (&fa.target, &fb.target) {
        if x != y {
            return Some(Veto::Order);
        }
    }
    if !fa.directions.is_empty()
        && !fb.directions.is_empty()
        && dedup_sorted(&fa.directions) != dedup_sorted(&fb.directions)
    {
        return Some(Veto::Order);
    }
    if substitution(&fa.tokens, &fb.tokens) || substitution(&fb.tokens, &fa.tokens) {
        return Some(Veto::Substitution);
    }
    None
}

/// Longest texts the substitution check aligns (quadratic in tokens).
const MAX_ALIGN_TOKENS: usize = 256;

/// A short span on each side, at the same place in the alignment, whose
/// content words occur nowhere in the other text.
fn substitution(a: &[Token], b: &[Token]) -> bool {
    let norm = |t: &Token| -> String {
        if let Some(n) = number(&t.lower) {
            return n;
        }
        if let Some(u) = unit(&t.lower).filter(|_| !AMBIGUOUS_UNITS.contains(&t.lower.as_str())) {
            return u.to_owned();
        }
        if let Some(l) = code_language(t) {
            return l.to_owned();
        }
        stem(&t.lower)
    };
    let wa: Vec<String> = a.iter().map(norm).collect();
    let wb: Vec<String> = b.iter().map(norm).collect();
    if wa.len() > MAX_ALIGN_TOKENS || wb.len() > MAX_ALIGN_TOKENS {
        return false;
    }
    let (n, m) = (wa.len(), wb.len());
    // lcs(i, j): LCS length of wa[i..] and wb[j..], row-major in a flat table.
    let mut table = vec![0u16; (n + 1) * (m + 1)];
    let at = |t: &[u16], i: usize, j: usize| t.get(i * (m + 1) + j).copied().unwrap_or(0);
    let word = |w: &[String], i: usize| w.get(i).cloned().unwrap_or_default();
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            let v = if word(&wa, i) == word(&wb, j) {
                at(&table, i + 1, j + 1) + 1
            } else {
                at(&table, i + 1, j).max(at(&table, i, j + 1))
            };
            if let Some(cell) = table.get_mut(i * (m + 1) + j) {
                *cell = v;
            }
        }
    }
    let novel = |span: &[String], other: &[String]| -> usize {
        span.iter()
            .filter(|w| !is_stopword(w) && !other.contains(w))
            .count()
    };
    let gap = |sa: &[String], sb: &[String]| -> bool {
        let (ca, cb) = (novel(sa, &wb), novel(sb, &wa));
        sa.len() <= 3 && sb.len() <= 3 && (1..=2).contains(&ca) && (1..=2).contains(&cb)
    };
    let span = |w: &[String], from: usize, to: usize| -> Vec<String> {
        w.get(from..to).map(<[String]>::to_vec).unwrap_or_default()
    };
    let (mut i, mut j, mut gi, mut gj) = (0, 0, 0, 0);
    while i < n && j < m {
        if word(&wa, i) == word(&wb, j) {
            if gap(&span(&wa, gi, i), &span(&wb, gj, j)) {
                return true;
            }
            i += 1;
            j += 1;
            gi = i;
            gj = j;
        } else if at(&table, i + 1, j) >= at(&table, i, j + 1) {
            i += 1;
        } else {
            j += 1;
        }
    }
    gap(&span(&wa, gi, n), &span(&wb, gj, m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn chat(system: &str, user: &str) -> Map<String, Value> {
        body(json!({"model": "m", "temperature": 0, "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": user}
        ]}))
    }

    #[test]
    fn partition_ignores_only_the_last_user_turn() {
        let a = semantic_request(
            "t1",
            "r",
            None,
            &chat("sys", "What is the capital of France?"),
        )
        .unwrap();
        let b =
            semantic_request("t1", "r", None, &chat("sys", "Tell me France's capital")).unwrap();
        assert_eq!(a.partition, b.partition);
        assert_eq!(a.text, "What is the capital of France?");
        assert_eq!(a.partition.len(), 64);
        // Everything else partitions.
        let other_tenant = semantic_request("t2", "r", None, &chat("sys", "x")).unwrap();
        let other_route = semantic_request("t1", "r2", None, &chat("sys", "x")).unwrap();
        let other_system = semantic_request("t1", "r", None, &chat("sys2", "x")).unwrap();
        let namespaced = semantic_request("t1", "r", Some("ns"), &chat("sys", "x")).unwrap();
        let mut warm = chat("sys", "x");
        warm.insert("max_tokens".into(), json!(10));
        let with_params = semantic_request("t1", "r", None, &warm).unwrap();
        let mut earlier = chat("sys", "x");
        earlier["messages"]
            .as_array_mut()
            .unwrap()
            .insert(1, json!({"role": "user", "content": "hi"}));
        let with_history = semantic_request("t1", "r", None, &earlier).unwrap();
        let mut tools = chat("sys", "x");
        tools.insert(
            "tools".into(),
            json!([{"type": "function", "function": {"name": "f"}}]),
        );
        let with_tools = semantic_request("t1", "r", None, &tools).unwrap();
        let all = [
            &a.partition,
            &other_tenant.partition,
            &other_route.partition,
            &other_system.partition,
            &namespaced.partition,
            &with_params.partition,
            &with_history.partition,
            &with_tools.partition,
        ];
        for (i, x) in all.iter().enumerate() {
            for y in all.iter().skip(i + 1) {
                assert_ne!(x, y);
            }
        }
        // Tenant/route boundaries are length-prefixed.
        assert_ne!(
            semantic_request("ab", "c", None, &chat("s", "x"))
                .unwrap()
                .partition,
            semantic_request("a", "bc", None, &chat("s", "x"))
                .unwrap()
                .partition
        );
        // Stream framing is not part of it; the model field neither (route identity is).
        let mut streamed = chat("sys", "What is the capital of France?");
        streamed.insert("stream".into(), json!(true));
        streamed.insert("model".into(), json!("other-alias"));
        assert_eq!(
            semantic_request("t1", "r", None, &streamed)
                .unwrap()
                .partition,
            a.partition
        );
    }

    #[test]
    fn only_a_trailing_text_user_turn_is_embedded() {
        let parts = body(
            json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]}),
        );
        assert_eq!(
            semantic_request("t", "r", None, &parts).unwrap().text,
            "a\nb"
        );
        let image = body(
            json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "x"}}]}]}),
        );
        assert!(semantic_request("t", "r", None, &image).is_none());
        let prefill = body(
            json!({"model": "m", "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}),
        );
        assert!(semantic_request("t", "r", None, &prefill).is_none());
        let blank = body(json!({"model": "m", "messages": [{"role": "user", "content": "  "}]}));
        assert!(semantic_request("t", "r", None, &blank).is_none());
        let long = body(
            json!({"model": "m", "messages": [{"role": "user", "content": "x".repeat(MAX_PROMPT_CHARS + 1)}]}),
        );
        assert!(semantic_request("t", "r", None, &long).is_none());
        assert!(semantic_request("t", "r", None, &body(json!({}))).is_none());
    }

    #[test]
    fn cosine_and_vector_bytes() {
        assert!((cosine(&[1.0, 0.0], &[1.0, 0.0]) - 1.0).abs() < 1e-6);
        assert!(cosine(&[1.0, 0.0], &[0.0, 1.0]).abs() < 1e-6);
        assert!((cosine(&[1.0, 1.0], &[2.0, 2.0]) - 1.0).abs() < 1e-6);
        assert_eq!(cosine(&[1.0], &[1.0, 2.0]), 0.0);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 2.0]), 0.0);
        let v = vec![0.25f32, -1.5, 3.0];
        assert_eq!(vector_from_bytes(&vector_to_bytes(&v)).unwrap(), v);
        assert!(vector_from_bytes(&[1, 2, 3]).is_none());
        assert_eq!(vector_id("p", "t").len(), 64);
        assert_ne!(vector_id("p", "t"), vector_id("p2", "t"));
    }

    #[test]
    fn judge_checks_threshold_expiry_tenant_and_guard() {
        let meta = |text: &str, tenant: &str, exp: u64| StoredMeta {
            tenant: tenant.into(),
            text: text.into(),
            expires_at: exp,
        };
        let m = |score: f32, meta: Option<StoredMeta>| Match {
            id: "x".into(),
            score,
            meta,
        };
        let q = "What is the capital of France?";
        let ok = meta("Tell me France's capital city", "t", 100);
        assert_eq!(
            judge(q, "t", &m(0.95, Some(ok.clone())), 0.92, 10),
            Verdict::Hit
        );
        assert_eq!(
            judge(q, "t", &m(0.91, Some(ok.clone())), 0.92, 10),
            Verdict::BelowThreshold
        );
        assert_eq!(
            judge(q, "t", &m(0.95, Some(ok.clone())), 0.92, 100),
            Verdict::Expired
        );
        assert_eq!(
            judge(q, "u", &m(0.95, Some(ok)), 0.92, 10),
            Verdict::ForeignTenant
        );
        assert_eq!(judge(q, "t", &m(0.95, None), 0.92, 10), Verdict::NoMetadata);
        let germany = meta("What is the capital of Germany?", "t", 100);
        assert_eq!(
            judge(q, "t", &m(0.99, Some(germany)), 0.92, 10),
            Verdict::Vetoed(Veto::Entity)
        );
    }

    #[track_caller]
    fn veto(a: &str, b: &str) -> Option<Veto> {
        let x = near_miss(a, b);
        assert_eq!(x, near_miss(b, a), "not symmetric: {a} | {b}");
        x
    }

    #[test]
    fn guard_passes_paraphrases() {
        for (a, b) in [
            (
                "What is the capital of France?",
                "Tell me France's capital city.",
            ),
            (
                "How do I reverse a list in Python?",
                "What's the way to reverse a Python list?",
            ),
            (
                "Explain how photosynthesis works",
                "How does photosynthesis work?",
            ),
            ("Convert 5 km to miles", "How many miles is 5 kilometers?"),
            (
                "Who wrote Pride and Prejudice?",
                "Who is the author of Pride and Prejudice?",
            ),
            ("why is the sky blue", "Why does the sky look blue?"),
            ("What's 15% of 200?", "Calculate 15 percent of 200"),
            ("What is 15% of 200?", "What is fifteen percent of 200?"),
            (
                "I can't log in to my account, what should I do?",
                "What should I do if I can't log into my account?",
            ),
        ] {
            assert_eq!(veto(a, b), None, "{a} | {b}");
        }
    }

    #[test]
    fn guard_vetoes_near_misses() {
        for (a, b, why) in [
            (
                "What is the capital of France?",
                "What is the capital of Germany?",
                Veto::Entity,
            ),
            ("What is 15% of 200?", "What is 15% of 300?", Veto::Number),
            ("Convert 5 km to miles", "Convert 5 miles to km", Veto::Unit),
            (
                "Boiling point of water in Celsius",
                "Boiling point of water in Fahrenheit",
                Veto::Unit,
            ),
            (
                "Is coffee bad for you?",
                "Is coffee not bad for you?",
                Veto::Negation,
            ),
            (
                "Why don't cats like water?",
                "Why do cats like water?",
                Veto::Negation,
            ),
            (
                "How do I read a file in python?",
                "How do I read a file in rust?",
                Veto::CodeLanguage,
            ),
            (
                "Write a hello world in JavaScript",
                "Write a hello world in TypeScript",
                Veto::CodeLanguage,
            ),
            (
                "Flights from Paris to London",
                "Flights from London to Paris",
                Veto::Order,
            ),
            (
                "Translate this sentence into French.",
                "Translate this sentence from French.",
                Veto::Order,
            ),
            (
                "Convert a string to an integer in Python",
                "Convert an integer to a string in Python",
                Veto::Order,
            ),
            (
                "Is coffee bad for you?",
                "Is coffee good for you?",
                Veto::Substitution,
            ),
            (
                "How do I kill a process on Linux?",
                "How do I find a process on Linux?",
                Veto::Substitution,
            ),
            (
                "Summarize the plot of Hamlet in 3 sentences",
                "Summarize the plot of Hamlet in 5 sentences",
                Veto::Number,
            ),
        ] {
            assert_eq!(veto(a, b), Some(why), "{a} | {b}");
        }
    }

    #[test]
    fn tokenizer_handles_numbers_units_and_contractions() {
        let t: Vec<String> = tokenize("It's 1,000.5km, isn't it? C++ and C#.")
            .into_iter()
            .map(|t| t.lower)
            .collect();
        assert_eq!(
            t,
            ["it", "1,000.5", "km", "isn't", "it", "c++", "and", "c#"]
        );
        assert_eq!(number("1,000"), Some("1000".into()));
        assert_eq!(number("5.0"), Some("5".into()));
        assert_eq!(number("five"), Some("5".into()));
        assert_eq!(number("fish"), None);
        assert_eq!(veto("walk 5km", "walk 5 km"), None);
        assert_eq!(veto("the 3rd item", "the third item"), None);
    }
}
