//! PII redaction for the optional body logs (`[vars.GATEWAY.logging] bodies`).
//!
//! A small, dependency-free scanner over the text: e-mail addresses, payment
//! card numbers (13–19 digits that pass the Luhn check, spaces or dashes
//! allowed), phone numbers (7–15 digits with the usual separators, or a
//! leading `+`), US social security numbers, IBANs, IPv4 addresses and
//! key-shaped secrets (`sk-…`, `tg-…`, `Bearer …`). Each match becomes a
//! `[REDACTED_<KIND>]` marker. It errs towards redacting: a logged prompt
//! loses a number rather than leaking one.

/// Redacts `text` and truncates the result to `max_chars` characters.
pub fn redact(text: &str, max_chars: usize) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if let Some((len, kind)) = match_at(&chars, i) {
            out.push_str("[REDACTED_");
            out.push_str(kind);
            out.push(']');
            i += len;
        } else if let Some(c) = chars.get(i) {
            out.push(*c);
            i += 1;
        }
    }
    if out.chars().count() > max_chars {
        let cut: String = out.chars().take(max_chars).collect();
        return format!("{cut}…[truncated]");
    }
    out
}

fn at(chars: &[char], i: usize) -> Option<char> {
    chars.get(i).copied()
}

/// Whether a token boundary lies before `i` (nothing word-like glued to it).
fn boundary_before(chars: &[char], i: usize) -> bool {
    i == 0 || at(chars, i - 1).is_none_or(|c| !c.is_alphanumeric() && c != '_')
}

fn match_at(chars: &[char], i: usize) -> Option<(usize, &'static str)> {
    let c = at(chars, i)?;
    if !boundary_before(chars, i) {
        return None;
    }
    if let Some(len) = secret_at(chars, i) {
        return Some((len, "SECRET"));
    }
    if c.is_alphanumeric() || matches!(c, '.' | '_' | '%' | '+' | '-') {
        if let Some(len) = email_at(chars, i) {
            return Some((len, "EMAIL"));
        }
    }
    if c.is_ascii_uppercase() {
        if let Some(len) = iban_at(chars, i) {
            return Some((len, "IBAN"));
        }
    }
    if c.is_ascii_digit() || c == '+' || c == '(' {
        if let Some(len) = ipv4_at(chars, i) {
            return Some((len, "IP"));
        }
        if let Some(len) = ssn_at(chars, i) {
            return Some((len, "SSN"));
        }
        if let Some(len) = card_at(chars, i) {
            return Some((len, "CARD"));
        }
        if let Some(len) = phone_at(chars, i) {
            return Some((len, "PHONE"));
        }
    }
    None
}

/// `sk-…`, `tg-…` (≥ 16 key characters) and `Bearer <token>`.
fn secret_at(chars: &[char], i: usize) -> Option<usize> {
    let rest: String = chars.iter().skip(i).take(7).collect();
    let key_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if rest.starts_with("sk-") || rest.starts_with("tg-") {
        let len = chars
            .iter()
            .skip(i + 3)
            .take_while(|c| key_char(**c))
            .count();
        return (len >= 16).then_some(3 + len);
    }
    if rest.eq_ignore_ascii_case("bearer ") {
        let len = chars
            .iter()
            .skip(i + 7)
            .take_while(|c| key_char(**c) || **c == '.')
            .count();
        return (len >= 8).then_some(7 + len);
    }
    None
}

fn email_at(chars: &[char], i: usize) -> Option<usize> {
    let local = |c: char| c.is_alphanumeric() || matches!(c, '.' | '_' | '%' | '+' | '-');
    let l = chars.iter().skip(i).take_while(|c| local(**c)).count();
    if l == 0 || at(chars, i + l) != Some('@') {
        return None;
    }
    let domain = |c: char| c.is_alphanumeric() || matches!(c, '.' | '-');
    let start = i + l + 1;
    let mut d = chars.iter().skip(start).take_while(|c| domain(**c)).count();
    // A sentence may end right after the address.
    while d > 0 && at(chars, start + d - 1) == Some('.') {
        d -= 1;
    }
    let dom: String = chars.iter().skip(start).take(d).collect();
    let tld_ok = dom.rsplit_once('.').is_some_and(|(host, tld)| {
        !host.is_empty() && tld.len() >= 2 && tld.chars().all(char::is_alphabetic)
    });
    tld_ok.then_some(l + 1 + d)
}

/// Runs of digits with single separators from `seps` between them: the
/// consumed length and the digits. Stops before a trailing separator.
fn digit_run(chars: &[char], i: usize, seps: &[char]) -> (usize, String) {
    let mut digits = String::new();
    let mut end = i;
    let mut j = i;
    while let Some(c) = at(chars, j) {
        if c.is_ascii_digit() {
            digits.push(c);
            j += 1;
            end = j;
        } else if seps.contains(&c) && at(chars, j + 1).is_some_and(|n| n.is_ascii_digit()) {
            j += 1;
        } else {
            break;
        }
    }
    (end - i, digits)
}

fn ends_cleanly(chars: &[char], end: usize) -> bool {
    at(chars, end).is_none_or(|c| !c.is_alphanumeric())
}

fn luhn(digits: &str) -> bool {
    let mut sum = 0;
    for (n, c) in digits.chars().rev().enumerate() {
        let Some(mut d) = c.to_digit(10) else {
            return false;
        };
        if n % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum % 10 == 0
}

fn card_at(chars: &[char], i: usize) -> Option<usize> {
    let (len, digits) = digit_run(chars, i, &[' ', '-']);
    ((13..=19).contains(&digits.len()) && luhn(&digits) && ends_cleanly(chars, i + len))
        .then_some(len)
}

fn ssn_at(chars: &[char], i: usize) -> Option<usize> {
    let s: String = chars.iter().skip(i).take(11).collect();
    let b = s.as_bytes();
    let shape = s.len() == 11
        && b.iter().enumerate().all(|(n, c)| match n {
            3 | 6 => *c == b'-',
            _ => c.is_ascii_digit(),
        });
    (shape && ends_cleanly(chars, i + 11)).then_some(11)
}

fn ipv4_at(chars: &[char], i: usize) -> Option<usize> {
    let mut j = i;
    for part in 0..4 {
        let n = chars
            .iter()
            .skip(j)
            .take_while(|c| c.is_ascii_digit())
            .count();
        let num: String = chars.iter().skip(j).take(n).collect();
        if !(1..=3).contains(&n) || num.parse::<u16>().map_or(true, |v| v > 255) {
            return None;
        }
        j += n;
        if part < 3 {
            if at(chars, j) != Some('.') {
                return None;
            }
            j += 1;
        }
    }
    ends_cleanly(chars, j).then_some(j - i)
}

/// `+` and 8–15 digits, or 7–15 digits with at least one separator
/// (`555-123-4567`, `(555) 123 4567`, `+44 20 7946 0958`). Bare digit runs
/// without separators are left alone (order numbers, counts).
fn phone_at(chars: &[char], i: usize) -> Option<usize> {
    let plus = at(chars, i) == Some('+');
    let mut j = i + usize::from(plus);
    let mut digits = 0;
    let mut separators = 0;
    let mut end = j;
    while let Some(c) = at(chars, j) {
        if c.is_ascii_digit() {
            digits += 1;
            j += 1;
            end = j;
        } else if c == ')'
            || (matches!(c, ' ' | '-' | '.' | '(')
                && at(chars, j + 1).is_some_and(|n| n.is_ascii_digit() || n == '('))
        {
            separators += 1;
            j += 1;
        } else {
            break;
        }
    }
    let ok = if plus {
        (8..=15).contains(&digits)
    } else {
        (7..=15).contains(&digits) && separators >= 1
    };
    (ok && ends_cleanly(chars, end)).then_some(end - i)
}

/// Two letters, two check digits, 11–30 alphanumerics (spaces allowed in
/// groups of four), passing the mod-97 check.
fn iban_at(chars: &[char], i: usize) -> Option<usize> {
    let mut j = i;
    let mut compact = String::new();
    while let Some(c) = at(chars, j) {
        if c.is_ascii_uppercase() || c.is_ascii_digit() {
            compact.push(c);
            j += 1;
        } else if c == ' '
            && at(chars, j + 1).is_some_and(|n| n.is_ascii_alphanumeric())
            && compact.len().is_multiple_of(4)
        {
            j += 1;
        } else {
            break;
        }
        if compact.len() > 34 {
            return None;
        }
    }
    let b = compact.as_bytes();
    let shape = (15..=34).contains(&compact.len())
        && b.first().is_some_and(u8::is_ascii_uppercase)
        && b.get(1).is_some_and(u8::is_ascii_uppercase)
        && b.get(2).is_some_and(u8::is_ascii_digit)
        && b.get(3).is_some_and(u8::is_ascii_digit);
    if !shape || !ends_cleanly(chars, j) {
        return None;
    }
    let rearranged = format!("{}{}", compact.get(4..)?, compact.get(..4)?);
    let mut rem: u32 = 0;
    for c in rearranged.chars() {
        let v = c.to_digit(36)?;
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    (rem == 1).then_some(j - i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> String {
        redact(s, 10_000)
    }

    #[test]
    fn emails() {
        assert_eq!(
            r("mail jane.doe+x@example.co.uk."),
            "mail [REDACTED_EMAIL]."
        );
        assert_eq!(r("a@b"), "a@b");
        assert_eq!(r("user@@example.com"), "user@@example.com");
    }

    #[test]
    fn cards_need_luhn() {
        assert_eq!(r("card 4111 1111 1111 1111 ok"), "card [REDACTED_CARD] ok");
        assert_eq!(r("4111-1111-1111-1111"), "[REDACTED_CARD]");
        assert_eq!(r("5500005555555559"), "[REDACTED_CARD]");
        // Fails Luhn: an order number stays.
        assert_eq!(r("order 4111111111111112"), "order 4111111111111112");
    }

    #[test]
    fn phones() {
        assert_eq!(r("call +1 415 555 2671 now"), "call [REDACTED_PHONE] now");
        assert_eq!(r("call 555-123-4567"), "call [REDACTED_PHONE]");
        assert_eq!(r("(555) 123 4567"), "[REDACTED_PHONE]");
        assert_eq!(r("+442079460958"), "[REDACTED_PHONE]");
        // Plain numbers are not phones.
        assert_eq!(
            r("I have 1234567 apples and 42 pears"),
            "I have 1234567 apples and 42 pears"
        );
        assert_eq!(r("in 2024-05"), "in 2024-05");
    }

    #[test]
    fn ssn_ip_iban_secrets() {
        assert_eq!(r("ssn 078-05-1120."), "ssn [REDACTED_SSN].");
        assert_eq!(r("from 192.168.1.20:80"), "from [REDACTED_IP]:80");
        assert_eq!(r("version 1.2.3"), "version 1.2.3");
        assert_eq!(
            r("iban GB82 WEST 1234 5698 7654 32 thanks"),
            "iban [REDACTED_IBAN] thanks"
        );
        assert_eq!(r("DE89370400440532013000"), "[REDACTED_IBAN]");
        assert_eq!(r("GB00WEST12345698765432"), "GB00WEST12345698765432");
        assert_eq!(
            r("key sk-proj-abcdefghijklmnop1234"),
            "key [REDACTED_SECRET]"
        );
        assert_eq!(
            r("Authorization: Bearer abc.def.ghijkl"),
            "Authorization: [REDACTED_SECRET]"
        );
        assert_eq!(r("ask-me anything"), "ask-me anything");
    }

    #[test]
    fn keeps_text_and_unicode_and_truncates() {
        let s = "Grüße, schreib an müller@beispiel.de — 👋";
        assert_eq!(r(s), "Grüße, schreib an [REDACTED_EMAIL] — 👋");
        assert_eq!(redact("abcdef", 3), "abc…[truncated]");
        assert_eq!(r(""), "");
        // Inside JSON.
        assert_eq!(
            r(r#"{"content":"reach me at bob@corp.io or 555.867.5309"}"#),
            r#"{"content":"reach me at [REDACTED_EMAIL] or [REDACTED_PHONE]"}"#
        );
    }
}
