//! `make bench-semantic`: precision, recall and false-hit rate of the
//! semantic cache's decision (`tollgate::semantic`: cosine threshold plus the
//! near-miss guard) on a labelled pair set, with vectors from the real local
//! embedder (`bench/semantic/embed.py` writes them).
//!
//!     cargo run --release --example bench_semantic -- PAIRS.tsv VECTORS.json [THRESHOLD]
//!
//! A pair is predicted a hit when its cosine ≥ threshold and the guard finds
//! no near-miss. Prints the figures at the default threshold (or the one
//! given), a sweep, and every false hit.
#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "a command-line benchmark: bad input ends it with a message"
)]

use std::collections::{BTreeMap, HashMap};

use tollgate::semantic::{cosine, near_miss, DEFAULT_THRESHOLD};

struct Pair {
    hit: bool,
    kind: String,
    a: String,
    b: String,
    cos: f32,
    veto: Option<&'static str>,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let pairs_path = args
        .get(1)
        .expect("usage: bench_semantic PAIRS.tsv VECTORS.json [THRESHOLD]");
    let vectors_path = args
        .get(2)
        .expect("usage: bench_semantic PAIRS.tsv VECTORS.json [THRESHOLD]");
    let threshold: f32 = args
        .get(3)
        .map_or(DEFAULT_THRESHOLD, |t| t.parse().expect("threshold"));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(vectors_path).unwrap()).unwrap();
    let vectors: HashMap<String, Vec<f32>> = serde_json::from_value(v["vectors"].clone()).unwrap();
    let text = std::fs::read_to_string(pairs_path).unwrap();
    let mut pairs = Vec::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        if cols.len() < 4 {
            continue;
        }
        let (a, b) = (cols[2].trim().to_owned(), cols[3].trim().to_owned());
        let hit = match cols[0] {
            "hit" => true,
            "miss" => false,
            other => panic!("line {}: label must be hit or miss, not {other}", n + 1),
        };
        let cos = cosine(&vectors[&a], &vectors[&b]);
        let veto = near_miss(&a, &b).map(|v| v.label());
        pairs.push(Pair {
            hit,
            kind: cols[1].to_owned(),
            a,
            b,
            cos,
            veto,
        });
    }
    let positives = pairs.iter().filter(|p| p.hit).count();
    let negatives = pairs.len() - positives;
    println!(
        "{} pairs ({positives} should hit, {negatives} must not) from {pairs_path}",
        pairs.len()
    );
    println!("embedder: {}", v["model"].as_str().unwrap_or("?"));
    let score = |t: f32, guard: bool| {
        let predicted = |p: &Pair| p.cos >= t && (!guard || p.veto.is_none());
        let tp = pairs.iter().filter(|p| p.hit && predicted(p)).count();
        let fp = pairs.iter().filter(|p| !p.hit && predicted(p)).count();
        let precision = if tp + fp == 0 {
            1.0
        } else {
            tp as f64 / (tp + fp) as f64
        };
        let recall = tp as f64 / positives.max(1) as f64;
        let false_hit = fp as f64 / negatives.max(1) as f64;
        (precision, recall, false_hit, fp)
    };
    let (p, r, f, fp) = score(threshold, true);
    println!("\nthreshold {threshold:.2} with the near-miss guard (the gateway's decision):");
    println!("  precision      {:.1} %", p * 100.0);
    println!("  recall         {:.1} %", r * 100.0);
    println!(
        "  false-hit rate {:.2} % ({fp} of {negatives} must-not-hit pairs)",
        f * 100.0
    );
    let (p0, r0, f0, _) = score(threshold, false);
    println!(
        "  (similarity alone: precision {:.1} %, recall {:.1} %, false-hit rate {:.1} %)",
        p0 * 100.0,
        r0 * 100.0,
        f0 * 100.0
    );
    println!("\nsweep   guard: precision recall false-hit | similarity alone: precision recall false-hit");
    for t in [
        0.80f32, 0.85, 0.88, 0.90, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98,
    ] {
        let (p, r, f, _) = score(t, true);
        let (p0, r0, f0, _) = score(t, false);
        println!(
            "  {t:.2}  {:>8.1}% {:>6.1}% {:>8.2}%  | {:>8.1}% {:>6.1}% {:>8.2}%",
            p * 100.0,
            r * 100.0,
            f * 100.0,
            p0 * 100.0,
            r0 * 100.0,
            f0 * 100.0
        );
    }
    let mut kinds: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for p in &pairs {
        let e = kinds.entry(&p.kind).or_default();
        e.0 += 1;
        if p.cos >= threshold && p.veto.is_none() {
            e.1 += 1;
        }
    }
    println!("\nserved at {threshold:.2}, by kind:");
    for (k, (n, served)) in kinds {
        println!("  {k:<12} {served:>3} of {n:>3}");
    }
    let mut vetoes: BTreeMap<&str, usize> = BTreeMap::new();
    for p in pairs.iter().filter(|p| p.hit && p.cos >= threshold) {
        if let Some(v) = p.veto {
            *vetoes.entry(v).or_default() += 1;
        }
    }
    println!(
        "\nparaphrases above the threshold that the guard vetoed (recall it costs): {vetoes:?}"
    );
    println!("\nfalse hits at {threshold:.2}:");
    for p in pairs
        .iter()
        .filter(|p| !p.hit && p.cos >= threshold && p.veto.is_none())
    {
        println!("  [{}] {:.3}  {} | {}", p.kind, p.cos, p.a, p.b);
    }
    if std::env::var_os("VERBOSE").is_some() {
        println!("\nmissed paraphrases:");
        for p in pairs
            .iter()
            .filter(|p| p.hit && !(p.cos >= threshold && p.veto.is_none()))
        {
            println!(
                "  {:.3} {:<18} {} | {}",
                p.cos,
                p.veto.unwrap_or("below"),
                p.a,
                p.b
            );
        }
    }
}
