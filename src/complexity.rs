//! The `complexity` classifier behind smart routing: a cheap, local,
//! deterministic score over an OpenAI-format `messages` array that puts a
//! request in one of three [`Tier`]s, so a route can send simple work to a
//! cheap model and hard reasoning to a frontier one.
//!
//! No model call, no regex, no allocation beyond one lowercased copy of the
//! last user turn and the system prompt: one pass over their lines, one over
//! their characters, one over their words (a word outside the lexicons is
//! skipped after one hash), plus a fence check of the other turns. It is O(n)
//! in the prompt length (every lexicon is a fixed set); a 4,000-token prompt
//! takes a few hundred microseconds of CPU (`make bench-complexity` prints the
//! figure).
//!
//! ## What is read
//!
//! Mainly the **last user turn** (the last message with `role: "user"`; the
//! last message of any role if there is none). Content may be a string or an
//! array of parts; `text` parts are read, every other part (`image_url`,
//! `input_audio`, `file`, …) counts as media. Secondarily the **system
//! prompt** (its length, and its simple-task cues: a system prompt that says
//! "classify the sentiment" makes a bare user text simple) and the
//! **conversation** (its length, and code in earlier turns).
//!
//! ## Signals and weights
//!
//! The score is the sum of the weights of the signals that fire; each name is
//! what [`explain`] lists. `≈tokens` is bytes / 4 of the last user turn.
//!
//! | signal | fires when | weight |
//! |---|---|---|
//! | `short` | under 12 ≈tokens, a single turn, and no `generation` cue (a lookup) | −1 |
//! | `medium` | ≥ 60 ≈tokens | +1 |
//! | `long` | ≥ 300 ≈tokens (instead of `medium`) | +2 |
//! | `very_long` | ≥ 1,500 ≈tokens (instead of `long`) | +3 |
//! | `generation` | an open-ended ask: write, draft, summarize, rewrite, explain, describe, create, outline, brainstorm, plan, recommend, fix, why, difference, "how do/does/can/should/to" | +1 |
//! | `code` | a fenced block; ≥ 3 code keywords (`fn`, `def`, `return`, `const`, …) at a code-symbol density ≥ 4 %; or a programming topic named (Python, SQL, regex, function, script, query, …) | +1 |
//! | `code_long` | ≥ 25 lines inside fences | +1 |
//! | `stack_trace` | ≥ 2 lines of a stack trace, compiler error, test failure or `ERROR`/`WARN` log | +3 |
//! | `math` | 2–3 math points: math words (integral, eigenvalue, probability, prime, …, at most 3), LaTeX commands (`\frac`, at most 3), math symbols (√ ∫ ∑ ≤ …, at most 2), digit-operator-digit runs (one point per two, at most 2; `-` and `/` only when spaced, so dates do not count) | +1 |
//! | `math_heavy` | ≥ 4 math points (instead of `math`) | +2 |
//! | `proof` | prove, proof, disprove, derive, "show that" | +4 |
//! | `multi_step` | one step point: ≥ 3 list items, ≥ 6 list items, each of "step by step" / "and then" / "after that" / "finally" (at most 2), "first" followed within 25 words by "then"/"next"/"second" | +1 |
//! | `multi_step_long` | ≥ 2 step points (instead of `multi_step`) | +2 |
//! | `questions` | ≥ 3 question marks | +1 |
//! | `reasoning` … `reasoning_4` | 1, 2, 3, ≥ 4 distinct reasoning categories: *why* (explain why/exactly), *analyze* (analyze, critique, diagnose, review, investigate, evaluate, root cause, what's wrong), *compare* (compare, contrast, trade-offs, pros and cons, alternatives), *design* (design, architecture, schema, propose, strategy, migrate), *debug* (debug, deadlock, crash, hangs, leak, OOM, race condition, failing, bug), *optimize* (optimize, bottleneck, throughput, latency, scale, indexes, planner), *rigor* (rigorous, justify, correctness, argue, formal, guarantee, invariant, counterexample, carefully, liveness, fuzz), *security* (security, vulnerability, exploit, attack, threat, risks), *concurrency* (concurrency, distributed, consistency, replication, transactions, atomic, mutex, lock, failover, protocol, consensus, election), *algorithm* (algorithm, complexity, recurrence, closed form, dynamic programming, parser), *research* (hypothesis, causal, confounders, experiment, study, drift, leakage) | +1 … +4 |
//! | `agentic` | repository, repo, codebase, deploy, pipeline, agent, autonomous, "pull request" | +1 |
//! | `simple_task` | one simple-task cue, in the system prompt, anywhere in a user turn of ≤ 40 words or in the first 20 words of a longer one: translate, classify/categorize/label/tag, extract, yes or no, true or false, one word/number/letter/label, sentiment, the tone, typo/spelling/grammar, capital of, who wrote/painted/invented/is, what year, which planet, synonym/antonym/plural/opposite, a leading "what does"; as the first word only: convert, reformat, uppercase, lowercase, rename, sort, count; "only the/reply/answer/output/json", "just the/reply/answer" | −2 |
//! | `simple_task_2` | two or more distinct cues (instead of `simple_task`) | −3 |
//! | `chit_chat` | hi, hello, hey, thanks, thank you, thx, bye, lol, night, morning, "how are" in a turn under 30 ≈tokens | −1 |
//! | `tools` | the request carries tools | +1 |
//! | `image` | a non-text content part in the last user turn | +1 |
//! | `long_system` | a system prompt of ≥ 400 ≈tokens | +1 |
//! | `long_conversation` | ≥ 8 messages | +1 |
//! | `code_context` | an earlier turn has a code fence and the last one has neither a fence nor inline code (a named topic does not count) | +1 |
//!
//! Tiers: score ≤ [`SIMPLE_MAX`] (0) is [`Tier::Simple`], ≥ [`COMPLEX_MIN`]
//! (4) is [`Tier::Complex`], anything between is [`Tier::Moderate`]. A request
//! with no signal at all scores 0 and is simple: most traffic that names no
//! task, code, math or reasoning is chat or lookup.
//!
//! ## How the weights were chosen
//!
//! By hand, then tuned on the labelled set shipped in
//! `data/complexity/prompts.jsonl` — only on its even-indexed lines (0, 2, 4,
//! …); the odd lines are held out. `cargo run --release --example
//! complexity_eval` prints the accuracy on both halves; the held-out figure is
//! the honest one — though not perfectly clean: the first two tuning rounds
//! listed the held-out misclassifications too, before `--errors` was limited
//! to the tuning half. The set is small and written by one team, so the figures
//! are an indication, not a guarantee: a heuristic reads words, not meaning,
//! and a short prompt that is hard for a reason no cue names will be called
//! simple.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Scores at or below this are [`Tier::Simple`].
pub const SIMPLE_MAX: i32 = 0;
/// Scores at or above this are [`Tier::Complex`].
pub const COMPLEX_MIN: i32 = 4;

/// How hard a request looks: which class of model it should go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    Simple,
    Moderate,
    Complex,
}

impl Tier {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Simple => "simple",
            Self::Moderate => "moderate",
            Self::Complex => "complex",
        }
    }

    /// The tier a score falls in (see [`SIMPLE_MAX`], [`COMPLEX_MIN`]).
    pub fn from_score(score: i32) -> Self {
        if score <= SIMPLE_MAX {
            Self::Simple
        } else if score >= COMPLEX_MIN {
            Self::Complex
        } else {
            Self::Moderate
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The classifier's decision and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    pub tier: Tier,
    pub score: i32,
    /// The names of the signals that fired, in the order of the module docs'
    /// table.
    pub signals: Vec<&'static str>,
}

/// For a route trace header: `complex(score=7;code,multi_step)`. Only the
/// tier, the score and signal names — never prompt text — so it is safe to
/// return to the client and to log; ASCII only.
pub fn explain(a: &Assessment) -> String {
    format!("{}(score={};{})", a.tier, a.score, a.signals.join(","))
}

// Thresholds, in ≈tokens (bytes / 4) unless said otherwise.
const SHORT_TOKENS: usize = 12;
const MEDIUM_TOKENS: usize = 60;
const LONG_TOKENS: usize = 300;
const VERY_LONG_TOKENS: usize = 1_500;
const CHIT_CHAT_MAX_TOKENS: usize = 30;
const LONG_SYSTEM_TOKENS: usize = 400;
const LONG_CONVERSATION_MESSAGES: usize = 8;
const CODE_KEYWORDS_MIN: usize = 3;
/// Code symbols per 1,000 non-space characters.
const CODE_SYMBOL_PERMILLE: usize = 40;
const CODE_LONG_LINES: usize = 25;

/// Counts gathered in one scan of a text.
#[derive(Debug, Default, PartialEq, Eq)]
struct Features {
    bytes: usize,
    fences: usize,
    fenced_lines: usize,
    list_items: usize,
    trace_lines: usize,
    questions: usize,
    non_space: usize,
    code_symbols: usize,
    code_words: usize,
    math_points: usize,
    proof: bool,
    steps: usize,
    first_then: bool,
    reasoning: u32,
    generation: bool,
    code_topic: bool,
    agentic: bool,
    simple: u32,
    chit_chat: bool,
}

impl Features {
    fn tokens(&self) -> usize {
        self.bytes / 4
    }

    fn has_code(&self) -> bool {
        self.fences >= 1
            || (self.code_words >= CODE_KEYWORDS_MIN
                && self.code_symbols * 1_000 >= self.non_space * CODE_SYMBOL_PERMILLE)
    }
}

/// Reads a message's text parts into `out` (separated by newlines) and
/// returns how many non-text parts it has.
fn message_text(msg: &Value, out: &mut String) -> usize {
    match msg.get("content") {
        Some(Value::String(s)) => {
            out.push_str(s);
            0
        }
        Some(Value::Array(parts)) => {
            let mut media = 0;
            for p in parts {
                match p.get("type").and_then(Value::as_str) {
                    Some("text") | Some("input_text") => {
                        if let Some(t) = p.get("text").and_then(Value::as_str) {
                            if !out.is_empty() {
                                out.push('\n');
                            }
                            out.push_str(t);
                        }
                    }
                    Some(_) => media += 1,
                    None => {}
                }
            }
            media
        }
        _ => 0,
    }
}

fn role(msg: &Value) -> &str {
    msg.get("role").and_then(Value::as_str).unwrap_or("")
}

/// Classifies a chat request; see the module docs for every signal.
pub fn assess(messages: &[Value], tools_present: bool) -> Assessment {
    let last_user = messages
        .iter()
        .rposition(|m| role(m) == "user")
        .or_else(|| messages.len().checked_sub(1));

    let mut user_text = String::new();
    let mut media = 0;
    let mut system_text = String::new();
    let mut earlier_code = false;
    for (i, m) in messages.iter().enumerate() {
        if Some(i) == last_user {
            media = message_text(m, &mut user_text);
        } else if matches!(role(m), "system" | "developer") {
            message_text(m, &mut system_text);
        } else if !earlier_code {
            let mut t = String::new();
            message_text(m, &mut t);
            earlier_code = t.contains("```");
        }
    }

    let mut f = Features::default();
    scan(&user_text, &mut f);
    let mut sys = Features::default();
    scan(&system_text, &mut sys);

    let mut score = 0;
    let mut signals = Vec::new();
    let mut fire = |name: &'static str, weight: i32| {
        score += weight;
        signals.push(name);
    };

    let tokens = f.tokens();
    let first_turn = messages
        .iter()
        .filter(|m| !matches!(role(m), "system" | "developer"))
        .count()
        <= 1;
    if tokens < SHORT_TOKENS && !f.generation && first_turn {
        fire("short", -1);
    } else if tokens >= VERY_LONG_TOKENS {
        fire("very_long", 3);
    } else if tokens >= LONG_TOKENS {
        fire("long", 2);
    } else if tokens >= MEDIUM_TOKENS {
        fire("medium", 1);
    }
    if f.generation {
        fire("generation", 1);
    }
    let code = f.has_code();
    if code || f.code_topic {
        fire("code", 1);
    }
    if f.fenced_lines >= CODE_LONG_LINES {
        fire("code_long", 1);
    }
    if f.trace_lines >= 2 {
        fire("stack_trace", 3);
    }
    if f.math_points >= 4 {
        fire("math_heavy", 2);
    } else if f.math_points >= 2 {
        fire("math", 1);
    }
    if f.proof {
        fire("proof", 4);
    }
    let step_points = usize::from(f.list_items >= 3)
        + usize::from(f.list_items >= 6)
        + f.steps.min(2)
        + usize::from(f.first_then);
    if step_points >= 2 {
        fire("multi_step_long", 2);
    } else if step_points == 1 {
        fire("multi_step", 1);
    }
    if f.questions >= 3 {
        fire("questions", 1);
    }
    match f.reasoning.count_ones() {
        0 => {}
        1 => fire("reasoning", 1),
        2 => fire("reasoning_2", 2),
        3 => fire("reasoning_3", 3),
        _ => fire("reasoning_4", 4),
    }
    if f.agentic {
        fire("agentic", 1);
    }
    match (f.simple | sys.simple).count_ones() {
        0 => {}
        1 => fire("simple_task", -2),
        _ => fire("simple_task_2", -3),
    }
    if f.chit_chat && tokens < CHIT_CHAT_MAX_TOKENS {
        fire("chit_chat", -1);
    }
    if tools_present {
        fire("tools", 1);
    }
    if media > 0 {
        fire("image", 1);
    }
    if sys.tokens() >= LONG_SYSTEM_TOKENS {
        fire("long_system", 1);
    }
    if messages.len() >= LONG_CONVERSATION_MESSAGES {
        fire("long_conversation", 1);
    }
    if earlier_code && !code {
        fire("code_context", 1);
    }

    Assessment {
        tier: Tier::from_score(score),
        score,
        signals,
    }
}

/// One pass over lines, one over characters, one over words.
fn scan(text: &str, f: &mut Features) {
    f.bytes += text.len();
    scan_lines(text, f);
    scan_chars(text, f);
    // Every lexicon word is ASCII; ASCII lowercasing is a fraction of the
    // cost of Unicode's and leaves other scripts as they are.
    let lower = text.to_ascii_lowercase();
    scan_words(&lower, f);
}

fn is_list_marker(line: &str) -> bool {
    if line.starts_with("- ") || line.starts_with("* ") || line.starts_with("• ") {
        return true;
    }
    let digits = line.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > 3 {
        return false;
    }
    let rest = line.get(digits..).unwrap_or("");
    rest.starts_with(". ") || rest.starts_with(") ")
}

/// Lines that only appear in stack traces and compiler errors.
fn is_trace_line(line: &str) -> bool {
    (line.starts_with("at ") && (line.contains('(') || line.contains(".js:")))
        || line.starts_with("File \"")
        || line.starts_with("Traceback (most recent call last)")
        || line.contains("panicked at")
        || line.starts_with("error[E")
        || line.starts_with("--> ")
        || line.starts_with("Caused by:")
        || line.starts_with("E   ")
        || line.contains(" ERROR ")
        || line.contains(" WARN ")
        || (line.contains(".py:") && line.contains("Error"))
        || line.starts_with("Exception in thread")
        || line.contains("Segmentation fault")
        || (line.contains("Error: ")
            && (line.starts_with("TypeError")
                || line.starts_with("ValueError")
                || line.starts_with("KeyError")
                || line.starts_with("AttributeError")
                || line.starts_with("ReferenceError")
                || line.starts_with("Uncaught")))
        || (line.starts_with("#") && line.contains(" in ") && line.contains(" at "))
}

fn scan_lines(text: &str, f: &mut Features) {
    let mut in_fence = false;
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("```") || t.starts_with("~~~") {
            f.fences += usize::from(!in_fence);
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            f.fenced_lines += 1;
        } else if is_list_marker(t) {
            f.list_items += 1;
        }
        if is_trace_line(t) {
            f.trace_lines += 1;
        }
    }
}

fn is_operator(c: char) -> bool {
    matches!(
        c,
        '+' | '-' | '*' | '/' | '^' | '=' | '<' | '>' | '×' | '÷' | '·'
    )
}

fn scan_chars(text: &str, f: &mut Features) {
    // The last two non-space characters, for digit-operator-digit runs.
    let mut p2 = ' ';
    let mut p1 = ' ';
    let mut latex = 0usize;
    let mut ops = 0usize;
    let mut symbols = 0usize;
    let mut after_backslash = 0usize;
    // Whether whitespace came before `p1` and after it: `-` and `/` only
    // count as operators when spaced (`3 - 4`), not in `2024-03-14` or `1/2`.
    let mut space_before_p1 = false;
    let mut space = false;
    for c in text.chars() {
        if c.is_whitespace() {
            after_backslash = 0;
            space = true;
            continue;
        }
        f.non_space += 1;
        match c {
            '?' => f.questions += 1,
            '{' | '}' | ';' | '(' | ')' | '[' | ']' | '=' | '<' | '>' | '_' | '|' | '&' | '#'
            | '$' | '\\' => f.code_symbols += 1,
            '√' | '∫' | '∑' | '∏' | '∀' | '∃' | '≤' | '≥' | '≠' | '∈' | '∞' | 'π' | '∂' | '≡'
            | '⊆' | '→' | 'λ' | 'θ' | 'σ' | 'μ' | '²' | '³' => symbols += 1,
            _ => {}
        }
        // `\frac`, `\int`, `\mathbb`: a backslash followed by at least three letters.
        if c == '\\' {
            after_backslash = 1;
        } else if after_backslash > 0 && c.is_ascii_alphabetic() {
            after_backslash += 1;
            if after_backslash == 4 {
                latex += 1;
            }
        } else {
            after_backslash = 0;
        }
        let spaced = !matches!(p1, '-' | '/') || (space_before_p1 && space);
        if (c.is_ascii_digit() || c == '(' || c == 'x' || c == 'n')
            && is_operator(p1)
            && spaced
            && (p2.is_ascii_digit() || p2 == ')' || p2 == 'x' || p2 == 'n')
        {
            ops += 1;
        }
        p2 = p1;
        p1 = c;
        space_before_p1 = space;
        space = false;
    }
    f.math_points += latex.min(3) + (ops / 2).min(2) + symbols.min(2);
}

/// Reasoning categories: each counts once however often its words appear.
mod cue {
    pub const WHY: u32 = 1 << 0;
    pub const ANALYZE: u32 = 1 << 1;
    pub const COMPARE: u32 = 1 << 2;
    pub const DESIGN: u32 = 1 << 3;
    pub const DEBUG: u32 = 1 << 4;
    pub const OPTIMIZE: u32 = 1 << 5;
    pub const RIGOR: u32 = 1 << 6;
    pub const SECURITY: u32 = 1 << 7;
    pub const CONCURRENCY: u32 = 1 << 8;
    pub const ALGORITHM: u32 = 1 << 9;
    pub const RESEARCH: u32 = 1 << 10;
}

/// Every word a rule below compares a word (or the word before it) with,
/// sorted: a word outside it, whose first five letters are no rule's stem
/// ([`STEMS5`]), cannot fire anything, so [`scan_words`] skips it after a
/// filter test ([`in_lexicon`]) instead of a few hundred comparisons. A rule that gains a
/// word must add it here; `gate_is_lossless` checks the gate against the
/// ungated rules over the labelled set.
const LEXICON: &[&str] = &[
    "after",
    "afterwards",
    "agent",
    "algorithm",
    "alternative",
    "alternatives",
    "analy",
    "and",
    "answer",
    "antonym",
    "api",
    "architect",
    "are",
    "argue",
    "assess",
    "asymptotic",
    "async",
    "atomic",
    "attack",
    "attacks",
    "autonomous",
    "await",
    "bash",
    "bayes",
    "bayesian",
    "bijection",
    "bottleneck",
    "brainstorm",
    "bug",
    "by",
    "bye",
    "c++",
    "can",
    "capital",
    "carefully",
    "categori",
    "causal",
    "causation",
    "cause",
    "class",
    "classif",
    "closed",
    "codebase",
    "combinatorics",
    "compar",
    "compile",
    "compiler",
    "complexity",
    "compose",
    "concurren",
    "condition",
    "conditions",
    "confound",
    "cons",
    "consensus",
    "consistency",
    "console",
    "const",
    "continuous",
    "contour",
    "contrast",
    "converge",
    "convergence",
    "converges",
    "convert",
    "correctness",
    "count",
    "counterexample",
    "crash",
    "create",
    "critic",
    "css",
    "deadlock",
    "debug",
    "def",
    "deploy",
    "derivative",
    "derive",
    "describe",
    "design",
    "diagnos",
    "difference",
    "differences",
    "differentiable",
    "differentiate",
    "disprove",
    "distributed",
    "diverges",
    "do",
    "docker",
    "dockerfile",
    "does",
    "draft",
    "drift",
    "dynamic",
    "eigenvalue",
    "eigenvalues",
    "eigenvector",
    "election",
    "elif",
    "equation",
    "equations",
    "evaluate",
    "exactly",
    "expected",
    "experiment",
    "explain",
    "exploit",
    "extract",
    "failing",
    "failover",
    "false",
    "finally",
    "first",
    "firstly",
    "fix",
    "fn",
    "form",
    "formal",
    "from",
    "function",
    "fuzz",
    "generate",
    "geometric",
    "git",
    "golang",
    "grammar",
    "group",
    "guarantee",
    "hangs",
    "hello",
    "hey",
    "hi",
    "how",
    "html",
    "hypothes",
    "ideas",
    "impl",
    "implement",
    "import",
    "include",
    "indexes",
    "induction",
    "infinitely",
    "int",
    "integer",
    "integers",
    "integral",
    "integrate",
    "integration",
    "invariant",
    "invented",
    "investigate",
    "irrational",
    "is",
    "java",
    "javascript",
    "json",
    "just",
    "justif",
    "kubernetes",
    "label",
    "lambda",
    "latency",
    "leak",
    "leakage",
    "lemma",
    "let",
    "letter",
    "liveness",
    "lock",
    "logarithm",
    "lol",
    "lowercase",
    "matrices",
    "matrix",
    "migrate",
    "migration",
    "modulo",
    "morning",
    "mutex",
    "namespace",
    "next",
    "night",
    "no",
    "none",
    "null",
    "nullptr",
    "number",
    "occupancy",
    "of",
    "off",
    "offs",
    "one",
    "only",
    "oom",
    "opposite",
    "optimi",
    "or",
    "outline",
    "output",
    "painted",
    "pandas",
    "paraphrase",
    "parser",
    "permutations",
    "pipeline",
    "plan",
    "planet",
    "planner",
    "plural",
    "polynomial",
    "prime",
    "primes",
    "printf",
    "println",
    "probability",
    "programming",
    "proof",
    "propose",
    "pros",
    "protocol",
    "prove",
    "public",
    "pull",
    "python",
    "query",
    "race",
    "react",
    "real",
    "reciprocals",
    "recommend",
    "recommendation",
    "recurrence",
    "refactor",
    "reformat",
    "regex",
    "regions",
    "rename",
    "replication",
    "reply",
    "repo",
    "repository",
    "request",
    "return",
    "review",
    "rewrite",
    "rigor",
    "risks",
    "root",
    "rust",
    "scalab",
    "scale",
    "schema",
    "script",
    "second",
    "secondly",
    "security",
    "select",
    "self",
    "sentiment",
    "should",
    "show",
    "single",
    "sort",
    "spell",
    "spelling",
    "sql",
    "static",
    "std",
    "step",
    "str",
    "strategies",
    "strategy",
    "struct",
    "study",
    "subgroup",
    "suggest",
    "summarise",
    "summarize",
    "summary",
    "synonym",
    "tag",
    "thank",
    "thanks",
    "that",
    "the",
    "then",
    "theorem",
    "threat",
    "throughput",
    "thx",
    "to",
    "tone",
    "trade",
    "tradeoff",
    "tradeoffs",
    "transactions",
    "translat",
    "true",
    "typescript",
    "typo",
    "typos",
    "unwrap",
    "uppercase",
    "usize",
    "var",
    "variance",
    "vector",
    "versus",
    "void",
    "vulnerab",
    "what",
    "what's",
    "where",
    "which",
    "who",
    "why",
    "word",
    "write",
    "wrong",
    "wrote",
    "year",
    "yes",
    "you",
];

/// The first five letters of every `starts_with` stem (all have at least five).
const STEMS5: &[&str] = &[
    "analy", "archi", "categ", "causa", "class", "compa", "concu", "confo", "crash", "criti",
    "deadl", "debug", "desig", "diagn", "explo", "forma", "guara", "hypot", "justi", "optim",
    "rigor", "scala", "trans", "vulne",
];

/// Bits in each gate filter: ~330 words set ~4 % of them, so ~4 % of other
/// words pass the gate needlessly (and then fire nothing).
const FILTER_BITS: usize = 8_192;
const FILTER_WORDS: usize = FILTER_BITS / 64;

/// FNV-1a over at most `max` bytes, reduced to a filter bit.
#[allow(clippy::indexing_slicing)] // const fn: `i < b.len()` is checked.
const fn filter_bit(b: &[u8], max: usize) -> usize {
    let mut h: u32 = 0x811c_9dc5;
    let mut i = 0;
    while i < b.len() && i < max {
        h ^= b[i] as u32;
        h = h.wrapping_mul(0x0100_0193);
        i += 1;
    }
    h as usize % FILTER_BITS
}

/// A one-hash Bloom filter of `words` (their first `max` bytes), built at
/// compile time: membership is one hash and one bit test, with no false
/// negatives, so the gate never hides a word from the rules.
#[allow(clippy::indexing_slicing)] // const fn: `bit / 64 < FILTER_WORDS` by construction.
const fn build_filter(words: &[&str], max: usize) -> [u64; FILTER_WORDS] {
    let mut f = [0u64; FILTER_WORDS];
    let mut i = 0;
    while i < words.len() {
        let bit = filter_bit(words[i].as_bytes(), max);
        f[bit / 64] |= 1 << (bit % 64);
        i += 1;
    }
    f
}

const LEXICON_FILTER: [u64; FILTER_WORDS] = build_filter(LEXICON, usize::MAX);
const STEMS5_FILTER: [u64; FILTER_WORDS] = build_filter(STEMS5, 5);

fn filter_has(f: &[u64; FILTER_WORDS], bit: usize) -> bool {
    f.get(bit / 64).is_some_and(|w| w & (1 << (bit % 64)) != 0)
}

fn in_lexicon(w: &str) -> bool {
    let b = w.as_bytes();
    filter_has(&LEXICON_FILTER, filter_bit(b, usize::MAX))
        || (b.len() >= 5 && filter_has(&STEMS5_FILTER, filter_bit(b, 5)))
}

/// Words (lowercase) that name code or a programming language or tool.
fn is_code_word(w: &str) -> bool {
    matches!(
        w,
        "fn" | "def"
            | "impl"
            | "struct"
            | "const"
            | "let"
            | "var"
            | "function"
            | "return"
            | "import"
            | "elif"
            | "async"
            | "await"
            | "lambda"
            | "void"
            | "int"
            | "println"
            | "printf"
            | "console"
            | "nullptr"
            | "null"
            | "self"
            | "std"
            | "usize"
            | "str"
            | "include"
            | "namespace"
            | "public"
            | "static"
            | "class"
            | "select"
            | "from"
            | "where"
            | "unwrap"
            | "true"
            | "false"
            | "none"
    )
}

/// Programming topics named in prose ("write a Python function").
fn is_code_topic(w: &str) -> bool {
    matches!(
        w,
        "python"
            | "javascript"
            | "typescript"
            | "rust"
            | "golang"
            | "java"
            | "c++"
            | "sql"
            | "bash"
            | "regex"
            | "css"
            | "html"
            | "react"
            | "pandas"
            | "docker"
            | "dockerfile"
            | "kubernetes"
            | "git"
            | "api"
            | "function"
            | "script"
            | "query"
            | "compile"
            | "compiler"
    )
}

fn is_math_word(w: &str) -> bool {
    matches!(
        w,
        "integral"
            | "integrate"
            | "derivative"
            | "differentiate"
            | "differentiable"
            | "continuous"
            | "eigenvalue"
            | "eigenvalues"
            | "eigenvector"
            | "matrix"
            | "matrices"
            | "probability"
            | "equation"
            | "equations"
            | "polynomial"
            | "theorem"
            | "lemma"
            | "prime"
            | "primes"
            | "irrational"
            | "induction"
            | "converge"
            | "converges"
            | "convergence"
            | "diverges"
            | "modulo"
            | "asymptotic"
            | "logarithm"
            | "variance"
            | "bayes"
            | "bayesian"
            | "combinatorics"
            | "permutations"
            | "integer"
            | "integers"
            | "infinitely"
            | "vector"
            | "expected"
            | "recurrence"
            | "geometric"
            | "subgroup"
            | "group"
            | "bijection"
            | "real"
            | "reciprocals"
            | "integration"
            | "contour"
    )
}

/// Open-ended generation: more than a lookup, less than reasoning.
fn is_generation(p1: &str, w: &str) -> bool {
    matches!(
        w,
        "write"
            | "draft"
            | "summarize"
            | "summarise"
            | "summary"
            | "rewrite"
            | "paraphrase"
            | "explain"
            | "describe"
            | "create"
            | "generate"
            | "compose"
            | "outline"
            | "brainstorm"
            | "ideas"
            | "plan"
            | "recommend"
            | "recommendation"
            | "suggest"
            | "why"
            | "difference"
            | "differences"
            | "refactor"
            | "implement"
            | "fix"
            | "strategies"
    ) || (p1 == "how" && matches!(w, "do" | "does" | "can" | "should" | "to"))
}

/// The reasoning category of a word (with the one or two before it), 0 if none.
fn reasoning_cue(p2: &str, p1: &str, w: &str) -> u32 {
    if (p1 == "explain" && (w == "why" || w == "exactly")) || (p2 == "explain" && w == "why") {
        return cue::WHY;
    }
    if w.starts_with("analy")
        || w.starts_with("critic")
        || w.starts_with("diagnos")
        || w == "review"
        || w == "investigate"
        || w == "assess"
        || w == "evaluate"
        || (p1 == "root" && w == "cause")
        || (p1 == "what's" && w == "wrong")
    {
        return cue::ANALYZE;
    }
    if w.starts_with("compar")
        || w == "contrast"
        || w == "versus"
        || w == "alternative"
        || w == "alternatives"
        || w == "tradeoffs"
        || w == "tradeoff"
        || (p1 == "trade" && (w == "offs" || w == "off"))
        || (p2 == "pros" && p1 == "and" && w == "cons")
    {
        return cue::COMPARE;
    }
    if w.starts_with("design")
        || w.starts_with("architect")
        || w == "schema"
        || w == "propose"
        || w == "strategy"
        || w == "migration"
        || w == "migrate"
    {
        return cue::DESIGN;
    }
    if w.starts_with("debug")
        || w.starts_with("deadlock")
        || w.starts_with("crash")
        || w == "hangs"
        || w == "leak"
        || w == "oom"
        || (p1 == "race" && w == "condition")
        || (p1 == "race" && w == "conditions")
        || w == "failing"
        || w == "bug"
    {
        return cue::DEBUG;
    }
    if w.starts_with("optimi")
        || w == "bottleneck"
        || w == "throughput"
        || w == "latency"
        || w == "scale"
        || w.starts_with("scalab")
        || w == "occupancy"
        || w == "indexes"
        || w == "planner"
    {
        return cue::OPTIMIZE;
    }
    if w.starts_with("rigor")
        || w.starts_with("justif")
        || w == "correctness"
        || w == "argue"
        || w.starts_with("formal")
        || w.starts_with("guarantee")
        || w == "invariant"
        || w == "counterexample"
        || w == "carefully"
        || w == "liveness"
        || w == "fuzz"
    {
        return cue::RIGOR;
    }
    if w == "security"
        || w.starts_with("vulnerab")
        || w.starts_with("exploit")
        || w == "attack"
        || w == "attacks"
        || w == "threat"
        || w == "risks"
    {
        return cue::SECURITY;
    }
    if w.starts_with("concurren")
        || w == "distributed"
        || w == "consistency"
        || w == "replication"
        || w == "transactions"
        || w == "atomic"
        || w == "mutex"
        || w == "failover"
        || w == "protocol"
        || w == "consensus"
        || w == "election"
        || w == "regions"
        || w == "lock"
    {
        return cue::CONCURRENCY;
    }
    if w == "algorithm"
        || w == "parser"
        || w == "complexity"
        || w == "recurrence"
        || (p1 == "closed" && w == "form")
        || (p1 == "dynamic" && w == "programming")
    {
        return cue::ALGORITHM;
    }
    if w.starts_with("hypothes")
        || w.starts_with("causal")
        || w == "causation"
        || w.starts_with("confound")
        || w == "experiment"
        || w == "drift"
        || w == "leakage"
        || w == "study"
    {
        return cue::RESEARCH;
    }
    0
}

/// Simple-task cues, as bits so each counts once.
fn simple_cue(i: usize, p2: &str, p1: &str, w: &str) -> u32 {
    let bit = if w.starts_with("translat") {
        0
    } else if w.starts_with("classif") || w.starts_with("categori") || w == "label" || w == "tag" {
        1
    } else if w == "extract" {
        2
    } else if (p2 == "yes" && p1 == "or" && w == "no")
        || (p2 == "true" && p1 == "or" && w == "false")
    {
        3
    } else if (p1 == "one" || p1 == "single") && matches!(w, "word" | "number" | "letter" | "label")
    {
        4
    } else if w == "sentiment" || (p1 == "the" && w == "tone") {
        5
    } else if matches!(w, "typo" | "typos" | "spelling" | "grammar" | "spell") {
        6
    } else if (p1 == "capital" && w == "of")
        || (p1 == "who" && matches!(w, "wrote" | "painted" | "invented" | "is"))
        || (p1 == "what" && w == "year")
        || (p1 == "which" && w == "planet")
        || matches!(w, "synonym" | "antonym" | "plural" | "opposite")
        || (p1 == "what" && w == "does" && p2.is_empty())
    {
        7
    } else if i == 0
        && matches!(
            w,
            "convert" | "reformat" | "uppercase" | "lowercase" | "rename" | "sort" | "count"
        )
    {
        8
    } else if (p1 == "only" && matches!(w, "the" | "reply" | "answer" | "output" | "json"))
        || (p1 == "just" && matches!(w, "the" | "reply" | "answer"))
    {
        9
    } else {
        return 0;
    };
    1 << bit
}

/// Words of a turn longer than this (in words) only take simple-task cues
/// from their first [`SIMPLE_CUE_WORDS`] words: the instruction comes first.
const SIMPLE_CUE_ANYWHERE_WORDS: usize = 40;
/// "first … then" must be this close (in words) to count as steps.
const FIRST_THEN_WINDOW_WORDS: usize = 25;
const SIMPLE_CUE_WORDS: usize = 20;

fn scan_words(lower: &str, f: &mut Features) {
    scan_words_gated(lower, f, true);
}

fn scan_words_gated(lower: &str, f: &mut Features, gate: bool) {
    let mut p2 = "";
    let mut p1 = "";
    let mut math_words = 0usize;
    let mut first_at: Option<usize> = None;
    // Simple-task cues of the opening words and of the rest, kept apart
    // until the turn's length is known.
    let mut simple_head = 0u32;
    let mut simple_tail = 0u32;
    let mut total = 0usize;
    let words = lower
        .split(|c: char| {
            !(c.is_ascii_alphanumeric() || matches!(c, '_' | '\'' | '+') || !c.is_ascii())
        })
        .filter(|w| !w.is_empty());
    for (i, w) in words.enumerate() {
        total = i + 1;
        // Nothing in the lexicons is longer; long tokens are identifiers,
        // URLs or base64.
        if w.len() <= 16 && (!gate || in_lexicon(w)) {
            if is_code_word(w) {
                f.code_words += 1;
            }
            if is_code_topic(w) {
                f.code_topic = true;
            }
            if is_math_word(w) {
                math_words += 1;
            }
            if matches!(w, "prove" | "proof" | "disprove" | "derive")
                || (p1 == "show" && w == "that")
            {
                f.proof = true;
            }
            if (p2 == "step" && p1 == "by" && w == "step")
                || (p1 == "and" && w == "then")
                || (p1 == "after" && w == "that")
                || w == "finally"
                || w == "afterwards"
            {
                f.steps += 1;
            }
            if w == "first" || w == "firstly" {
                first_at = Some(i);
            } else if first_at.is_some_and(|at| i - at <= FIRST_THEN_WINDOW_WORDS)
                && matches!(w, "then" | "next" | "second" | "secondly")
            {
                f.first_then = true;
            }
            if is_generation(p1, w) {
                f.generation = true;
            }
            f.reasoning |= reasoning_cue(p2, p1, w);
            if matches!(
                w,
                "repository" | "repo" | "codebase" | "deploy" | "pipeline" | "agent" | "autonomous"
            ) || (p1 == "pull" && w == "request")
            {
                f.agentic = true;
            }
            if i < SIMPLE_CUE_WORDS {
                simple_head |= simple_cue(i, p2, p1, w);
            } else if i < SIMPLE_CUE_ANYWHERE_WORDS {
                simple_tail |= simple_cue(i, p2, p1, w);
            }
            if matches!(
                w,
                "hi" | "hello" | "hey" | "thanks" | "thx" | "bye" | "lol" | "night" | "morning"
            ) || (p1 == "thank" && w == "you")
                || (p1 == "how" && w == "are")
            {
                f.chit_chat = true;
            }
        }
        p2 = p1;
        p1 = w;
    }
    f.math_points += math_words.min(3);
    f.simple |= simple_head;
    if total <= SIMPLE_CUE_ANYWHERE_WORDS {
        f.simple |= simple_tail;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Instant;

    fn user(text: &str) -> Vec<Value> {
        vec![json!({"role": "user", "content": text})]
    }

    fn a(text: &str) -> Assessment {
        assess(&user(text), false)
    }

    fn has(text: &str, signal: &str) -> bool {
        a(text).signals.contains(&signal)
    }

    #[test]
    fn tier_boundaries() {
        assert_eq!(Tier::from_score(i32::MIN), Tier::Simple);
        assert_eq!(Tier::from_score(SIMPLE_MAX), Tier::Simple);
        assert_eq!(Tier::from_score(SIMPLE_MAX + 1), Tier::Moderate);
        assert_eq!(Tier::from_score(COMPLEX_MIN - 1), Tier::Moderate);
        assert_eq!(Tier::from_score(COMPLEX_MIN), Tier::Complex);
        assert_eq!(Tier::from_score(i32::MAX), Tier::Complex);
    }

    #[test]
    fn tier_display_and_serde() {
        assert_eq!(Tier::Simple.to_string(), "simple");
        assert_eq!(Tier::Moderate.to_string(), "moderate");
        assert_eq!(Tier::Complex.to_string(), "complex");
        assert_eq!(
            serde_json::to_value(Tier::Complex).unwrap(),
            json!("complex")
        );
        let t: Tier = serde_json::from_value(json!("moderate")).unwrap();
        assert_eq!(t, Tier::Moderate);
    }

    #[test]
    fn explain_lists_tier_score_and_signals_only() {
        let x = a("Debug this and explain why it deadlocks:\n```rust\nfn main() {}\n```");
        let s = explain(&x);
        assert!(
            s.starts_with(&format!("{}(score={};", x.tier, x.score)),
            "{s}"
        );
        assert!(s.contains("code"), "{s}");
        assert!(!s.contains("main"), "{s}");
        assert!(s.is_ascii());
        let empty = Assessment {
            tier: Tier::Simple,
            score: -1,
            signals: vec![],
        };
        assert_eq!(explain(&empty), "simple(score=-1;)");
        let e = Assessment {
            tier: Tier::Complex,
            score: 7,
            signals: vec!["code", "multi_step"],
        };
        assert_eq!(explain(&e), "complex(score=7;code,multi_step)");
    }

    #[test]
    fn length_signals() {
        assert!(has("hi there", "short"));
        let medium = "word ".repeat(100);
        let x = a(&medium);
        assert!(!x.signals.contains(&"short") && !x.signals.contains(&"long"));
        assert!(x.signals.contains(&"medium"));
        assert!(!has(&"word ".repeat(40), "medium"));
        assert!(has(&"word ".repeat(300), "long"));
        let huge = "word ".repeat(1_300);
        assert!(has(&huge, "very_long"));
        assert!(!has(&huge, "long"));
    }

    #[test]
    fn short_only_for_a_lone_lookup() {
        assert!(has("What is DNS?", "short"));
        // Short but asks for an explanation or a piece of writing.
        assert!(!has("Explain DNS.", "short"));
        // A short follow-up leans on the conversation.
        let msgs = vec![
            json!({"role": "user", "content": "Write a poem about the sea."}),
            json!({"role": "assistant", "content": "The sea…"}),
            json!({"role": "user", "content": "Shorter."}),
        ];
        assert!(!assess(&msgs, false).signals.contains(&"short"));
    }

    #[test]
    fn generation_cues() {
        assert!(has("Write a cover letter for a nurse", "generation"));
        assert!(has("How do I reset my router", "generation"));
        assert!(!has("What is the capital of Peru?", "generation"));
    }

    #[test]
    fn code_fence_and_inline_code() {
        assert!(has("Write a Python function that reverses a list", "code"));
        assert!(has("Rename the variable:\n```\nx = 1\n```", "code"));
        assert!(has(
            "why does let v: Vec<usize> = std::iter::empty().collect(); return Ok(v); fail",
            "code"
        ));
        // Code keywords in prose without symbols are not code.
        assert!(!has(
            "Let me know where the public class starts and what it will return",
            "code"
        ));
        let long = format!("```\n{}```", "x += 1;\n".repeat(30));
        assert!(has(&long, "code_long"));
        assert!(!has("```\nx += 1;\n```", "code_long"));
    }

    #[test]
    fn stack_traces() {
        let py = "Traceback (most recent call last):\n  File \"app.py\", line 3, in <module>\n    main()\nKeyError: 'id'";
        assert!(has(py, "stack_trace"));
        let rust = "thread 'main' panicked at src/main.rs:4:5:\nindex out of bounds\nnote: run with `RUST_BACKTRACE=1`";
        let java = "Exception in thread \"main\" java.lang.NullPointerException\n\tat com.x.Foo.bar(Foo.java:10)\n\tat com.x.Main.main(Main.java:3)";
        assert!(has(java, "stack_trace"));
        assert!(!has(rust, "stack_trace"), "one line is not a trace");
        assert!(!has("Where is the file stored at?", "stack_trace"));
        let pytest = "    def test_x():\n>       assert f() == 2\nE       assert 1 == 2\nE        +  where 1 = f()\ntests/test_x.py:4: AssertionError";
        assert!(has(pytest, "stack_trace"));
        let logs = "12:00:07 orders WARN  pool exhausted\n12:00:09 payments ERROR timeout";
        assert!(has(logs, "stack_trace"));
    }

    #[test]
    fn math_signals() {
        assert!(has(
            "Compute the integral of x^2 + 3x - 4 from 0 to 2",
            "math"
        ));
        assert!(has(
            "Find the eigenvalues of the matrix and the probability $\\frac{1}{2}$ via \\sqrt{x}",
            "math_heavy"
        ));
        assert!(!has("What is the weather like today?", "math"));
        // Dates and ranges are not arithmetic.
        assert!(!has(
            "Invoices dated 2022-11-15 and 2023-02-01, 2023-03-04 and 1/2/2024 are unpaid",
            "math"
        ));
        assert!(has("what is 3 - 4 + 5 * 6 - 7", "math"));
    }

    #[test]
    fn proofs_are_hard_even_when_short() {
        let x = a("Prove that √2 is irrational.");
        assert!(x.signals.contains(&"proof"));
        assert_eq!(x.tier, Tier::Complex, "{}", explain(&x));
        assert!(has("Show that there are infinitely many primes", "proof"));
    }

    #[test]
    fn multi_step_signals() {
        assert!(has(
            "Do this:\n1. read the file\n2. parse it\n3. print totals",
            "multi_step"
        ));
        assert!(has(
            "Please work step by step. First parse, then validate, and then store; finally report.",
            "multi_step_long"
        ));
        assert!(has("- a\n- b\n- c\n- d\n- e\n- f\n- g", "multi_step_long"));
        assert!(!has("First of all, hello.", "multi_step"));
        let far = format!("First, hello. {} Then bye.", "word ".repeat(30));
        assert!(!has(&far, "multi_step"));
        assert!(has("First read it, then answer.", "multi_step"));
        assert!(has("Why? How? When? Where?", "questions"));
        assert!(!has("Why is the sky blue?", "questions"));
    }

    #[test]
    fn reasoning_verbs_count_distinct() {
        assert!(has("Analyze this poem", "reasoning"));
        // "explain" alone asks for an explanation, not for reasoning.
        assert!(!has("Explain photosynthesis", "reasoning"));
        assert!(has("Explain photosynthesis", "generation"));
        assert!(has(
            "Compare Postgres and MySQL and analyze the results",
            "reasoning_2"
        ));
        assert!(has(
            "Design a cache, compare the trade-offs and explain why it scales",
            "reasoning_3"
        ));
        // The same cue twice counts once.
        assert!(has("compare and compare again", "reasoning"));
    }

    #[test]
    fn simple_task_cues_lower_the_score() {
        assert!(has(
            "Translate to French: good morning, my friend",
            "simple_task"
        ));
        assert!(has(
            "Classify the sentiment of this review: great!",
            "simple_task_2"
        ));
        assert!(has("Answer yes or no: is Paris in France?", "simple_task"));
        assert!(has(
            "Reply with one word: the colour of grass",
            "simple_task"
        ));
        assert!(has("Fix the typo in this sentence: teh cat", "simple_task"));
        assert!(has("What is the capital of Peru?", "simple_task"));
        let x = a("Translate this paragraph into Spanish please, thank you");
        assert!(x.score < 0, "{}", explain(&x));
        // In a long turn only the opening words give the task away: an
        // "extract" deep inside a design question is not a simple task.
        let long = format!(
            "{} and tell me which services to extract first.",
            "We run a large monolith with many teams and shared tables. ".repeat(6)
        );
        assert!(!has(&long, "simple_task"));
        let long_translate = format!(
            "Translate into French: {}",
            "The office is closed. ".repeat(20)
        );
        assert!(has(&long_translate, "simple_task"));
        // Verbs like "sort" only count as the first word.
        assert!(has("Sort these: b, a, c", "simple_task"));
        assert!(!has("Explain how merge sort works", "simple_task"));
    }

    #[test]
    fn system_prompt_cues_and_length() {
        let msgs = vec![
            json!({"role": "system", "content": "You classify support tickets. Reply with one word."}),
            json!({"role": "user", "content": "My invoice shows the wrong amount for March."}),
        ];
        let x = assess(&msgs, false);
        assert!(x.signals.contains(&"simple_task_2"), "{}", explain(&x));
        assert_eq!(x.tier, Tier::Simple);
        let long_sys = vec![
            json!({"role": "system", "content": "rule ".repeat(400)}),
            json!({"role": "user", "content": "go on"}),
        ];
        assert!(assess(&long_sys, false).signals.contains(&"long_system"));
    }

    #[test]
    fn chit_chat() {
        let x = a("hey, thanks a lot!");
        assert!(x.signals.contains(&"chit_chat"));
        assert_eq!(x.tier, Tier::Simple);
    }

    #[test]
    fn tools_images_and_conversation() {
        assert!(assess(&user("book a table"), true)
            .signals
            .contains(&"tools"));
        let img = vec![json!({"role": "user", "content": [
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
        ]})];
        let x = assess(&img, false);
        assert!(x.signals.contains(&"image"));
        let mut conv = Vec::new();
        for i in 0..8 {
            let r = if i % 2 == 0 { "user" } else { "assistant" };
            conv.push(json!({"role": r, "content": "ok"}));
        }
        assert!(assess(&conv, false).signals.contains(&"long_conversation"));
        let ctx = vec![
            json!({"role": "user", "content": "```\nfn a() {}\n```"}),
            json!({"role": "assistant", "content": "Looks fine."}),
            json!({"role": "user", "content": "Now make it generic."}),
        ];
        assert!(assess(&ctx, false).signals.contains(&"code_context"));
    }

    #[test]
    fn reads_the_last_user_turn_of_parts() {
        let msgs = vec![
            json!({"role": "user", "content": "Prove Fermat's little theorem."}),
            json!({"role": "assistant", "content": "…"}),
            json!({"role": "user", "content": [{"type": "text", "text": "thanks!"}]}),
        ];
        let x = assess(&msgs, false);
        assert!(!x.signals.contains(&"proof"), "{}", explain(&x));
        assert!(x.signals.contains(&"chit_chat"));
    }

    #[test]
    fn odd_inputs_do_not_panic() {
        assert_eq!(assess(&[], false).tier, Tier::Simple);
        let weird = vec![
            json!(3),
            json!({"role": 5, "content": {"x": 1}}),
            json!(null),
        ];
        let _ = assess(&weird, true);
        let _ = a("\\\\\\ ```` 1+ +1 é∫√ 12. 1) - ");
    }

    #[test]
    fn lexicon_is_sorted() {
        assert!(LEXICON.windows(2).all(|w| w[0] < w[1]));
        assert!(STEMS5.windows(2).all(|w| w[0] < w[1] && w[0].len() == 5));
    }

    /// The gate only skips words no rule can fire on: every rule, run on
    /// every word of the labelled set, gives the same features gated or not.
    #[test]
    fn gate_is_lossless() {
        let set = include_str!("../data/complexity/prompts.jsonl");
        let mut extra = LEXICON.join(" then ");
        extra.push_str(" analysis critique diagnosed comparing designs architecture debugging");
        for text in set.lines().chain(std::iter::once(extra.as_str())) {
            let lower = text.to_ascii_lowercase();
            let mut gated = Features::default();
            let mut ungated = Features::default();
            scan_words_gated(&lower, &mut gated, true);
            scan_words_gated(&lower, &mut ungated, false);
            assert_eq!(gated, ungated, "{text}");
        }
    }

    #[test]
    fn deterministic() {
        let t = "Design a rate limiter. Explain the trade-offs.\n1. a\n2. b\n3. c";
        assert_eq!(a(t), a(t));
    }

    #[test]
    fn fast_on_a_4000_token_prompt() {
        // ~16 KB: prose, a code block, a list — a realistic large prompt.
        let mut p = String::new();
        while p.len() < 16_000 {
            p.push_str("Please analyze the following service and explain why requests fail. ");
            p.push_str("```\nfn handle(req: Request) -> Result<Response> { let x = req.id * 2 + 1; Ok(x) }\n```\n");
            p.push_str("1. check the logs\n2. compare latencies\n");
        }
        let msgs = user(&p);
        let start = Instant::now();
        let n = 20;
        for _ in 0..n {
            std::hint::black_box(assess(std::hint::black_box(&msgs), false));
        }
        let per = start.elapsed() / n;
        // Generous for an unoptimised test build on a shared machine; the
        // release figure is printed by the eval example.
        assert!(per.as_millis() < 50, "{per:?}");
    }
}
