//! Reversible redaction: typed placeholders (`<EMAIL_1>`) for values taken
//! out of a prompt, and their restoration in the answer — whole, or streamed
//! in deltas that may split a placeholder anywhere.

use std::collections::BTreeMap;

/// Placeholders handed out for one request, both ways.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placeholders {
    by_value: BTreeMap<(String, String), String>,
    by_placeholder: BTreeMap<String, String>,
    next: BTreeMap<String, u32>,
}

impl Placeholders {
    /// The placeholder for `value` of type `tag` (`EMAIL`): the same value
    /// gets the same placeholder throughout the request, so the model can
    /// still tell two people apart and refer back to one.
    pub fn placeholder(&mut self, tag: &str, value: &str) -> String {
        let key = (tag.to_owned(), value.to_owned());
        if let Some(p) = self.by_value.get(&key) {
            return p.clone();
        }
        let n = self.next.entry(tag.to_owned()).or_insert(0);
        *n += 1;
        let p = format!("<{tag}_{n}>");
        self.by_value.insert(key, p.clone());
        self.by_placeholder.insert(p.clone(), value.to_owned());
        p
    }

    pub fn is_empty(&self) -> bool {
        self.by_placeholder.is_empty()
    }

    /// The longest placeholder, in bytes (how much a streamed restorer may
    /// have to hold back).
    fn longest(&self) -> usize {
        self.by_placeholder
            .keys()
            .map(String::len)
            .max()
            .unwrap_or(0)
    }

    fn has_prefix(&self, partial: &str) -> bool {
        self.by_placeholder
            .range(partial.to_owned()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(partial) && k.len() > partial.len())
    }

    /// `text` with every known placeholder replaced by its value.
    pub fn restore(&self, text: &str) -> String {
        if self.is_empty() {
            return text.to_owned();
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(open) = rest.find('<') {
            let (before, from_open) = rest.split_at(open);
            out.push_str(before);
            let close = from_open.get(1..).and_then(|t| t.find(['>', '<']));
            match close.and_then(|c| from_open.get(..c + 2)) {
                Some(candidate) if candidate.ends_with('>') => {
                    match self.by_placeholder.get(candidate) {
                        Some(value) => out.push_str(value),
                        None => out.push_str(candidate),
                    }
                    rest = from_open.get(candidate.len()..).unwrap_or_default();
                }
                _ => {
                    out.push('<');
                    rest = from_open.get(1..).unwrap_or_default();
                }
            }
        }
        out.push_str(rest);
        out
    }
}

/// Restores placeholders in a text that arrives in pieces. It holds back the
/// tail from the last `<` while that tail could still grow into a
/// placeholder (`<`, then `A-Z 0-9 _`, shorter than the longest one), and
/// releases everything else at once.
#[derive(Debug, Clone)]
pub struct StreamRestorer {
    map: Placeholders,
    longest: usize,
    pending: String,
}

impl StreamRestorer {
    pub fn new(map: Placeholders) -> Self {
        Self {
            longest: map.longest(),
            map,
            pending: String::new(),
        }
    }

    /// Text in; restored text that is safe to send now.
    pub fn push(&mut self, text: &str) -> String {
        if self.map.is_empty() {
            return text.to_owned();
        }
        self.pending.push_str(text);
        let cut = self.safe_prefix_len();
        let rest = self.pending.split_off(cut);
        let ready = std::mem::replace(&mut self.pending, rest);
        self.map.restore(&ready)
    }

    /// Everything still held (the text ended).
    pub fn finish(&mut self) -> String {
        let rest = std::mem::take(&mut self.pending);
        self.map.restore(&rest)
    }

    /// Bytes of `pending` that can no longer be part of an unfinished placeholder.
    fn safe_prefix_len(&self) -> usize {
        let Some(open) = self.pending.rfind('<') else {
            return self.pending.len();
        };
        let tail = self.pending.get(open..).unwrap_or_default();
        // Still a proper prefix of a placeholder this request handed out.
        let could_grow = tail.len() < self.longest && self.map.has_prefix(tail);
        if could_grow {
            open
        } else {
            self.pending.len()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Placeholders {
        let mut p = Placeholders::default();
        assert_eq!(p.placeholder("EMAIL", "jane@example.com"), "<EMAIL_1>");
        assert_eq!(p.placeholder("PHONE", "+44 20 7946 0958"), "<PHONE_1>");
        assert_eq!(p.placeholder("EMAIL", "bob@example.org"), "<EMAIL_2>");
        assert_eq!(p.placeholder("EMAIL", "jane@example.com"), "<EMAIL_1>");
        p
    }

    #[test]
    fn restores_whole_texts() {
        let p = sample();
        assert_eq!(
            p.restore("Write to <EMAIL_1> (or <EMAIL_2>), call <PHONE_1>; <EMAIL_9> and a < b > c <<EMAIL_1>>"),
            "Write to jane@example.com (or bob@example.org), call +44 20 7946 0958; <EMAIL_9> and a < b > c <jane@example.com>"
        );
    }

    /// Every way of cutting the answer into two or three pieces gives the
    /// same client text as restoring it whole.
    #[test]
    fn restores_across_every_split_point() {
        let p = sample();
        let answer = "Sure <EMAIL_1>, I'll call <PHONE_1>. <EMAIL_2>< x <EMAIL_1><EMAIL_";
        let whole = p.restore(answer);
        let cuts: Vec<usize> = (0..=answer.len())
            .filter(|i| answer.is_char_boundary(*i))
            .collect();
        for &a in &cuts {
            for &b in cuts.iter().filter(|b| **b >= a) {
                let mut r = StreamRestorer::new(p.clone());
                let mut out = r.push(&answer[..a]);
                out += &r.push(&answer[a..b]);
                out += &r.push(&answer[b..]);
                out += &r.finish();
                assert_eq!(out, whole, "cut at {a}, {b}");
            }
        }
    }

    #[test]
    fn holds_back_only_what_could_be_a_placeholder() {
        let mut r = StreamRestorer::new(sample());
        assert_eq!(r.push("Hello <EM"), "Hello ");
        assert_eq!(r.push("AIL_1> and <b>"), "jane@example.com and <b>");
        assert_eq!(r.push("x <"), "x ");
        assert_eq!(r.push("3"), "<3");
        assert_eq!(r.finish(), "");
        let mut none = StreamRestorer::new(Placeholders::default());
        assert_eq!(none.push("<EMAIL_"), "<EMAIL_");
    }
}
