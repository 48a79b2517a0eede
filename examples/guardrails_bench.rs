//! `make bench-guardrails [CORPUS=path]`: precision and recall of every
//! built-in detector over a labelled corpus (JSON lines: `{"text": …,
//! "expect": {"email": ["a@b.io"], …}}`; a line with an empty `expect` is a
//! negative), then the detection latency on a 4,000-token prompt: each
//! detector alone, the input guard (all 13 on redact) and the output guard on
//! the same text streamed as 4-character deltas.
//!
//! Options (after the corpus path, or alone): `--only corpus|detectors|input|output`
//! runs one part; `--runs N` sets the timed runs (input and detectors; the
//! stream runs N/10). For instruction counts, which stay stable on a loaded
//! machine, run a part under callgrind with N and with 0 runs and divide the
//! difference by N (see README, Guardrails).
#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::{json, Value};
use tollgate::guardrails::detect::{Builtin, BUILTINS};
use tollgate::guardrails::stream::SseGuard;
use tollgate::guardrails::{Guard, GuardrailPolicy};
use tollgate::ledger::Endpoint;

#[derive(Default)]
struct Counts {
    tp: u32,
    fp: u32,
    fn_: u32,
    false_positives: Vec<String>,
    misses: Vec<String>,
}

struct Options {
    corpus: String,
    only: Option<String>,
    runs: usize,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        corpus: "tests/fixtures/guardrails/corpus.jsonl".to_owned(),
        only: None,
        runs: 200,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--only" => o.only = args.next(),
            "--runs" => {
                o.runs = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or("--runs takes a number")?;
            }
            _ if a.starts_with("--") => return Err(format!("unknown option {a}")),
            _ => o.corpus = a,
        }
    }
    if let Some(only) = &o.only {
        if !["corpus", "detectors", "input", "output"].contains(&only.as_str()) {
            return Err(format!("--only {only}: corpus, detectors, input or output"));
        }
    }
    Ok(o)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let o = options()?;
    let wants = |part: &str| o.only.as_deref().is_none_or(|p| p == part);
    if wants("corpus") {
        corpus(&o.corpus)?;
    }
    let prompt = prompt();
    if wants("detectors") {
        detectors(&prompt, o.runs);
    }
    if wants("input") || wants("output") {
        latency(&prompt, o.runs, wants("input"), wants("output"))?;
    }
    Ok(())
}

fn corpus(path: &str) -> Result<(), Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(path)?;
    let mut counts: BTreeMap<&'static str, Counts> = BTreeMap::new();
    let (mut lines, mut negatives) = (0, 0);
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let row: Value =
            serde_json::from_str(line).map_err(|e| format!("{path}:{}: {e}", n + 1))?;
        let sample = row.get("text").and_then(Value::as_str).unwrap_or_default();
        let expect = row
            .get("expect")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for name in expect.keys() {
            if Builtin::from_name(name).is_none() {
                return Err(format!("{path}:{}: unknown detector '{name}'", n + 1).into());
            }
        }
        lines += 1;
        if expect
            .values()
            .all(|v| v.as_array().is_none_or(Vec::is_empty))
        {
            negatives += 1;
        }
        for b in BUILTINS {
            let mut wanted: Vec<String> = expect
                .get(b.name())
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            let mut spans = Vec::new();
            b.find(sample, &mut spans);
            let c = counts.entry(b.name()).or_default();
            for (s, e) in spans {
                let found = sample.get(s..e).unwrap_or_default().to_owned();
                if let Some(i) = wanted.iter().position(|w| *w == found) {
                    wanted.remove(i);
                    c.tp += 1;
                } else {
                    c.fp += 1;
                    c.false_positives.push(format!("line {}: {found:?}", n + 1));
                }
            }
            c.fn_ += u32::try_from(wanted.len()).unwrap_or(u32::MAX);
            c.misses
                .extend(wanted.into_iter().map(|w| format!("line {}: {w:?}", n + 1)));
        }
    }
    println!("corpus {path}: {lines} lines, {negatives} negatives\n");
    println!(
        "{:<12} {:>4} {:>4} {:>4} {:>10} {:>8}",
        "detector", "tp", "fp", "fn", "precision", "recall"
    );
    let pct = |a: u32, b: u32| {
        if b == 0 {
            "-".to_owned()
        } else {
            format!("{:.1}%", f64::from(a) * 100.0 / f64::from(b))
        }
    };
    for (name, c) in &counts {
        println!(
            "{name:<12} {:>4} {:>4} {:>4} {:>10} {:>8}",
            c.tp,
            c.fp,
            c.fn_,
            pct(c.tp, c.tp + c.fp),
            pct(c.tp, c.tp + c.fn_)
        );
    }
    for (name, c) in &counts {
        for f in &c.false_positives {
            println!("  false positive  {name}: {f}");
        }
        for m in &c.misses {
            println!("  missed          {name}: {m}");
        }
    }
    Ok(())
}

/// A ~4,000-token prompt: 16,000 bytes of prose with a few values of each kind.
fn prompt() -> String {
    let filler = "The quarterly report covers revenue, churn and the migration plan for the billing service; \
                  the team agreed to review the numbers on Thursday and to ship the fix after the freeze. ";
    let values = "Reach jane.doe@example.com or +44 20 7946 0958, card 4111 1111 1111 1111, \
                  IBAN DE89 3704 0044 0532 0130 00, server 10.0.0.1, key sk-proj-Ab12Cd34Ef56Gh78Ij90Kl12. ";
    let mut prompt = String::new();
    while prompt.len() < 16_000 {
        prompt.push_str(filler);
        if prompt.len().is_multiple_of(4) {
            prompt.push_str(values);
        }
    }
    prompt.push_str(values);
    prompt
}

/// Each built-in alone over the prompt (its own scan, no redaction).
fn detectors(prompt: &str, runs: usize) {
    println!(
        "\neach detector alone on the {}-byte prompt (median of {runs} runs):",
        prompt.len()
    );
    let mut spans = Vec::new();
    for b in BUILTINS {
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            spans.clear();
            let t = Instant::now();
            b.find(std::hint::black_box(prompt), &mut spans);
            times.push(t.elapsed().as_secs_f64() * 1e6);
            std::hint::black_box(&spans);
        }
        times.sort_by(f64::total_cmp);
        println!(
            "  {:<12} {:>8.1} µs  {:>3} matches",
            b.name(),
            percentile(&times, 0.5),
            spans.len()
        );
    }
}

/// Every built-in on redact, over the prompt, in and out.
fn latency(
    prompt: &str,
    runs: usize,
    input_part: bool,
    output_part: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let input: serde_json::Map<String, Value> = BUILTINS
        .iter()
        .map(|b| (b.name().to_owned(), json!("redact")))
        .collect();
    let policy: GuardrailPolicy = serde_json::from_value(json!({
        "input": input, "output": input, "reversible": true
    }))?;
    let guard = Guard::compile(&policy)?.ok_or("no guard")?;
    let body = json!({"model": "m", "messages": [{"role": "user", "content": prompt}]});
    // One untimed run: the output part needs its placeholders.
    let outcome = guard
        .check_input(
            Endpoint::ChatCompletions,
            &mut body.as_object().cloned().unwrap_or_default(),
        )
        .map_err(|r| r.error.message())?;
    let input_runs = if input_part { runs } else { 0 };
    let mut times = Vec::with_capacity(input_runs);
    for _ in 0..input_runs {
        let mut b = body.as_object().cloned().unwrap_or_default();
        let t = Instant::now();
        let o = guard
            .check_input(Endpoint::ChatCompletions, &mut b)
            .map_err(|r| r.error.message())?;
        times.push(t.elapsed().as_secs_f64() * 1e6);
        std::hint::black_box(o);
    }
    times.sort_by(f64::total_cmp);
    let redactions: u32 = outcome.events.iter().map(|e| e.count).sum();
    if input_part {
        println!(
        "\ninput guardrails, {} bytes (~{} tokens), all {} built-ins on redact, {redactions} redactions:",
        prompt.len(),
        prompt.len() / 4,
        BUILTINS.len()
    );
        println!(
            "  median {:.0} µs, p95 {:.0} µs, max {:.0} µs over {runs} runs",
            percentile(&times, 0.5),
            percentile(&times, 0.95),
            times.last().copied().unwrap_or(0.0)
        );
    }
    if !output_part {
        return Ok(());
    }
    // The same text streamed back as 4-byte deltas through the output guard.
    let output = guard.output(&outcome).ok_or("no output guard")?;
    let mut frames = String::new();
    let chars: Vec<char> = prompt.chars().collect();
    for piece in chars.chunks(4) {
        let p: String = piece.iter().collect();
        let chunk =
            json!({"choices": [{"index": 0, "delta": {"content": p}, "finish_reason": null}]});
        frames.push_str(&format!("data: {chunk}\n\n"));
    }
    frames.push_str("data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n");
    let mut stream_times = Vec::new();
    for _ in 0..runs / 10 {
        let mut g = SseGuard::new(output.clone());
        let t = Instant::now();
        let out = g.push(frames.as_bytes())?;
        stream_times.push(t.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(out);
    }
    stream_times.sort_by(f64::total_cmp);
    println!(
        "output guardrails on the same text streamed as {} deltas of 4 characters: median {:.1} ms per answer ({:.1} µs per delta)",
        chars.len().div_ceil(4),
        percentile(&stream_times, 0.5),
        percentile(&stream_times, 0.5) * 1000.0 / chars.len().div_ceil(4) as f64
    );
    Ok(())
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted.get(i).copied().unwrap_or(0.0)
}
