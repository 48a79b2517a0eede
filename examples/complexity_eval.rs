//! Evaluates the `complexity` classifier on a labelled set and prices the
//! routing it would do.
//!
//! ```text
//! cargo run --release --example complexity_eval -- [path] [--errors]
//! ```
//!
//! `path` defaults to `data/complexity/prompts.jsonl`: one JSON object a line,
//! `{"messages": [...], "tier": "simple|moderate|complex", "note": "...",
//! "tools": true?}`. `--errors` also lists the misclassified lines of the
//! tuning half (index, label, decision, signals and the note — never the
//! prompt); `--errors=all` lists the held-out half's too.
//!
//! Printed: accuracy overall, per labelled tier and per half (even lines were
//! used to tune the weights, odd lines are held out), the confusion matrix,
//! how many complex prompts would go to the simple tier, the cost of the set
//! routed by tier against "always frontier" (and against a perfect
//! classifier), and the time `assess` takes on a ~4,000-token prompt.
//!
//! ## Cost model
//!
//! Prices come from the built-in table (`data/prices.json`, looked up with
//! `pricing::builtin().lookup("openai", model)`), for two tier→model mappings:
//!
//! | mapping | simple | moderate | complex = "frontier" |
//! |---|---|---|---|
//! | gpt-4o family | openai/gpt-4o-mini | openai/gpt-4.1-mini | openai/gpt-4o |
//! | gpt-5 family | openai/gpt-5-nano | openai/gpt-5-mini | openai/gpt-5.5 |
//!
//! Prompt tokens ≈ the bytes of every message's text / 4 (rounded up). Output
//! tokens are assumed per *labelled* tier — how long an answer is depends on
//! what was asked, not on which model answers: simple 60, moderate 400,
//! complex 1,200. No prompt caching, no reasoning tokens beyond those.

#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::error::Error;
use std::time::Instant;

use serde::Deserialize;
use serde_json::Value;
use tollgate::complexity::{assess, explain, Tier};
use tollgate::pricing::{builtin, cost_of, Billable, MicroUsd, Priced};

const TIERS: [Tier; 3] = [Tier::Simple, Tier::Moderate, Tier::Complex];

/// Assumed completion tokens by labelled tier (see the module docs).
fn output_tokens(label: Tier) -> u64 {
    match label {
        Tier::Simple => 60,
        Tier::Moderate => 400,
        Tier::Complex => 1_200,
    }
}

struct Mapping {
    name: &'static str,
    simple: &'static str,
    moderate: &'static str,
    frontier: &'static str,
}

impl Mapping {
    fn model(&self, t: Tier) -> &'static str {
        match t {
            Tier::Simple => self.simple,
            Tier::Moderate => self.moderate,
            Tier::Complex => self.frontier,
        }
    }
}

const MAPPINGS: [Mapping; 2] = [
    Mapping {
        name: "gpt-4o family",
        simple: "gpt-4o-mini",
        moderate: "gpt-4.1-mini",
        frontier: "gpt-4o",
    },
    Mapping {
        name: "gpt-5 family",
        simple: "gpt-5-nano",
        moderate: "gpt-5-mini",
        frontier: "gpt-5.5",
    },
];

#[derive(Deserialize)]
struct Line {
    messages: Vec<Value>,
    tier: Tier,
    #[serde(default)]
    note: String,
    #[serde(default)]
    tools: bool,
}

struct Row {
    line: Line,
    got: Tier,
    explained: String,
    prompt_tokens: u64,
}

fn text_bytes(messages: &[Value]) -> usize {
    messages
        .iter()
        .map(|m| match m.get("content") {
            Some(Value::String(s)) => s.len(),
            Some(Value::Array(parts)) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .map(str::len)
                .sum(),
            _ => 0,
        })
        .sum()
}

fn pct(n: usize, d: usize) -> String {
    if d == 0 {
        "   -  ".to_owned()
    } else {
        format!("{:5.1}%", 100.0 * n as f64 / d as f64)
    }
}

fn usd(m: MicroUsd) -> String {
    format!("${:.4}", m as f64 / 1e6)
}

fn cost(model: &str, prompt: u64, output: u64) -> Result<MicroUsd, Box<dyn Error>> {
    let table = builtin().map_err(|e| e.join("; "))?;
    match table.lookup("openai", model) {
        Priced::Price(p) => Ok(cost_of(
            &p,
            &Billable {
                input: prompt,
                output,
                ..Billable::default()
            },
        )),
        _ => Err(format!("openai/{model} is not in data/prices.json").into()),
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut path = format!(
        "{}/data/complexity/prompts.jsonl",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut list_errors = false;
    let mut list_held_out = false;
    for a in std::env::args().skip(1) {
        if a == "--errors" {
            list_errors = true;
        } else if a == "--errors=all" {
            list_errors = true;
            list_held_out = true;
        } else {
            path = a;
        }
    }
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let mut rows = Vec::new();
    for (i, l) in text.lines().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        let line: Line =
            serde_json::from_str(l).map_err(|e| format!("{path} line {}: {e}", i + 1))?;
        let a = assess(&line.messages, line.tools);
        let prompt_tokens = u64::try_from(text_bytes(&line.messages).div_ceil(4))?;
        rows.push(Row {
            got: a.tier,
            explained: explain(&a),
            prompt_tokens,
            line,
        });
    }
    let n = rows.len();
    println!("complexity classifier on {path}: {n} labelled prompts\n");

    // Accuracy.
    let ok = |r: &Row| r.got == r.line.tier;
    let correct = rows.iter().filter(|r| ok(r)).count();
    println!(
        "accuracy overall           {}  ({correct}/{n})",
        pct(correct, n)
    );
    for (half, name) in [(0, "even lines (tuning)  "), (1, "odd lines (held out) ")] {
        let in_half: Vec<&Row> = rows
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 2 == half)
            .map(|(_, r)| r)
            .collect();
        let c = in_half.iter().filter(|r| ok(r)).count();
        println!(
            "accuracy {name}{}  ({c}/{})",
            pct(c, in_half.len()),
            in_half.len()
        );
    }
    for t in TIERS {
        let of: Vec<&Row> = rows.iter().filter(|r| r.line.tier == t).collect();
        let c = of.iter().filter(|r| ok(r)).count();
        println!(
            "accuracy on {:<9}      {}  ({c}/{})",
            t.as_str(),
            pct(c, of.len()),
            of.len()
        );
    }

    // Confusion matrix.
    let mut m: BTreeMap<(Tier, Tier), usize> = BTreeMap::new();
    for r in &rows {
        *m.entry((r.line.tier, r.got)).or_default() += 1;
    }
    let cell = |l: Tier, g: Tier| m.get(&(l, g)).copied().unwrap_or(0);
    println!("\nconfusion matrix (rows: label, columns: decision)");
    println!(
        "{:<12}{:>10}{:>10}{:>10}",
        "", "simple", "moderate", "complex"
    );
    for l in TIERS {
        println!(
            "{:<12}{:>10}{:>10}{:>10}",
            l.as_str(),
            cell(l, Tier::Simple),
            cell(l, Tier::Moderate),
            cell(l, Tier::Complex)
        );
    }
    let complex_total = rows.iter().filter(|r| r.line.tier == Tier::Complex).count();
    println!(
        "\nquality risk: {} of {complex_total} complex prompts routed to the simple tier, {} to moderate",
        cell(Tier::Complex, Tier::Simple),
        cell(Tier::Complex, Tier::Moderate)
    );
    let simple_total = rows.iter().filter(|r| r.line.tier == Tier::Simple).count();
    println!(
        "over-spend:   {} of {simple_total} simple prompts routed to the complex tier",
        cell(Tier::Simple, Tier::Complex)
    );

    // Cost.
    println!(
        "\ncost of the set (prompt ≈ bytes/4; output by label: simple 60, moderate 400, complex 1200 tokens)"
    );
    for map in &MAPPINGS {
        let (mut routed, mut frontier, mut oracle) = (0u64, 0u64, 0u64);
        for r in &rows {
            let out = output_tokens(r.line.tier);
            routed += cost(map.model(r.got), r.prompt_tokens, out)?;
            frontier += cost(map.frontier, r.prompt_tokens, out)?;
            oracle += cost(map.model(r.line.tier), r.prompt_tokens, out)?;
        }
        let saved = 100.0 * (1.0 - routed as f64 / frontier.max(1) as f64);
        println!(
            "  {} ({} / {} / {}): routed {}, always {} {}, saved {saved:.1}%; with perfect labels {}",
            map.name,
            map.simple,
            map.moderate,
            map.frontier,
            usd(routed),
            map.frontier,
            usd(frontier),
            usd(oracle)
        );
    }

    // Speed: a ~4,000-token prompt made of the set's own texts.
    let mut big = String::new();
    'fill: loop {
        for r in &rows {
            for msg in &r.line.messages {
                if let Some(s) = msg.get("content").and_then(Value::as_str) {
                    big.push_str(s);
                    big.push('\n');
                }
                if big.len() >= 16_000 {
                    break 'fill;
                }
            }
        }
    }
    let msgs = vec![serde_json::json!({"role": "user", "content": big})];
    // The fastest of 20 batches: on a shared machine the mean mostly
    // measures other processes.
    let (batches, per_batch) = (20u32, 100u32);
    for _ in 0..per_batch {
        std::hint::black_box(assess(std::hint::black_box(&msgs), false));
    }
    let mut best = std::time::Duration::MAX;
    for _ in 0..batches {
        let start = Instant::now();
        for _ in 0..per_batch {
            std::hint::black_box(assess(std::hint::black_box(&msgs), false));
        }
        best = best.min(start.elapsed() / per_batch);
    }
    println!(
        "\nspeed: {:.1} µs per assess on a {}-byte (~{} token) prompt (fastest batch of {per_batch}, {batches} batches)",
        best.as_secs_f64() * 1e6,
        big.len(),
        big.len() / 4
    );

    if list_errors {
        println!(
            "\nmisclassified{} (index: label -> decision):",
            if list_held_out {
                ""
            } else {
                ", tuning half only"
            }
        );
        for (i, r) in rows
            .iter()
            .enumerate()
            .filter(|(i, r)| !ok(r) && (list_held_out || i % 2 == 0))
        {
            println!(
                "  {i:>3} [{}] {} -> {}  {}  ({})",
                if i % 2 == 0 { "tune" } else { "held" },
                r.line.tier,
                r.got,
                r.explained,
                r.line.note
            );
        }
    }
    Ok(())
}
