//! A value that must never be printed: provider API keys, the admin token.
//!
//! `Debug` and `Display` print `[redacted]`, and the type implements neither
//! `Serialize` nor `Clone`-into-string helpers, so a secret can only leave the
//! process through an explicit [`Secret::expose`] at the one place that needs it
//! (the outbound `Authorization` header to the secret's own provider).

use std::fmt;

/// A secret string; see the module docs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The raw value. Call sites are few and each says why it needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.trim().is_empty()
    }

    /// Constant-time comparison (for bearer tokens), so response timing does not
    /// reveal how many leading bytes of a guess were right.
    pub fn matches(&self, candidate: &str) -> bool {
        let a = self.0.as_bytes();
        let b = candidate.as_bytes();
        let mut diff = a.len() ^ b.len();
        for (i, x) in a.iter().enumerate() {
            let y = b.get(i).copied().unwrap_or(0);
            diff |= usize::from(x ^ y);
        }
        diff == 0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Removes every trace of `secret` from `text`: the whole value and any 8-byte
/// window of it (providers echo masked keys such as `sk-abc***xyz`, and a
/// substring is still a leak). Used on upstream error text before it may reach a
/// client or a log line.
pub fn scrub(text: &str, secret: &Secret) -> String {
    const WINDOW: usize = 8;
    let raw = secret.expose();
    if raw.len() < WINDOW {
        return if raw.is_empty() {
            text.to_owned()
        } else {
            text.replace(raw, "[redacted]")
        };
    }
    let mut out = text.replace(raw, "[redacted]");
    let bytes = raw.as_bytes();
    for start in 0..=bytes.len() - WINDOW {
        let Some(window) = bytes.get(start..start + WINDOW) else {
            continue;
        };
        // A window that is not valid UTF-8 on its own cannot appear in `out` as a
        // `str` match; the neighbouring windows cover those bytes.
        if let Ok(w) = std::str::from_utf8(window) {
            if out.contains(w) {
                out = out.replace(w, "[redacted]");
            }
        }
    }
    out
}

/// Masks anything that looks like an API key or bearer token (`sk-…`, `tg-…`,
/// `Bearer …`) in free text from upstreams, where we do not know which secret
/// might be echoed.
pub fn scrub_key_like(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut redact_next = false;
    for (i, word) in text.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let looks_like_key = ["sk-", "tg-", "sk_", "key-", "gsk_", "xai-", "AIza"]
            .iter()
            .any(|p| word.trim_start_matches(['\'', '"', '(']).starts_with(p))
            && word.len() >= 8;
        if redact_next || looks_like_key {
            out.push_str("[redacted]");
            if word.ends_with('.') {
                out.push('.');
            }
        } else {
            out.push_str(word);
        }
        redact_next = word.eq_ignore_ascii_case("bearer");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("sk-CANARY-123456789");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{s}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(&s)), "Some([redacted])");
    }

    #[test]
    fn matches_is_exact() {
        let s = Secret::new("admin-token-0123456789");
        assert!(s.matches("admin-token-0123456789"));
        assert!(!s.matches("admin-token-012345678"));
        assert!(!s.matches("admin-token-01234567890"));
        assert!(!s.matches(""));
    }

    #[test]
    fn scrub_removes_whole_value_and_any_8_byte_window() {
        let s = Secret::new("sk-CANARY-abcdefgh12345678");
        let echoed = "Incorrect API key provided: sk-CANAR*********12345678. Also sk-CANARY-abcdefgh12345678";
        let out = scrub(echoed, &s);
        assert!(!out.contains("sk-CANARY-abcdefgh12345678"));
        assert!(!out.contains("12345678"));
        for start in 0..=s.expose().len() - 8 {
            assert!(!out.contains(&s.expose()[start..start + 8]), "{out}");
        }
        assert!(out.starts_with("Incorrect API key provided:"));
    }

    #[test]
    fn scrub_key_like_masks_tokens() {
        let out = scrub_key_like(
            "Incorrect API key provided: sk-abc***xyz. Bearer abcdef and tg-0123456789",
        );
        assert_eq!(
            out,
            "Incorrect API key provided: [redacted]. Bearer [redacted] and [redacted]"
        );
    }
}
