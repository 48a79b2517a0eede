//! Pure detectors: each finds byte ranges of one kind of sensitive data in a
//! text. Hand-written scanners rather than regular expressions for the
//! built-ins: one linear pass each, checksums where the format has one (Luhn,
//! mod-97, Verhoeff, the DNI letter), and context rules for the look-alikes
//! (order numbers, versions, times, file names). Operator patterns use
//! `regex-lite` (small; no Unicode tables), word lists a case-insensitive
//! whole-word search.
//!
//! Offsets are byte offsets into the text, always on character boundaries
//! (every built-in match starts and ends on an ASCII byte).

/// A built-in detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    Email,
    Phone,
    Card,
    Iban,
    Ssn,
    Ip,
    ApiKey,
    Jwt,
    PrivateKey,
    UkNino,
    CaSin,
    EsDni,
    InAadhaar,
}

/// Every built-in, in the order their names are listed to operators.
pub const BUILTINS: &[Builtin] = &[
    Builtin::Email,
    Builtin::Phone,
    Builtin::Card,
    Builtin::Iban,
    Builtin::Ssn,
    Builtin::Ip,
    Builtin::ApiKey,
    Builtin::Jwt,
    Builtin::PrivateKey,
    Builtin::UkNino,
    Builtin::CaSin,
    Builtin::EsDni,
    Builtin::InAadhaar,
];

impl Builtin {
    /// The name used in config and in the ledger.
    pub fn name(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Phone => "phone",
            Self::Card => "card",
            Self::Iban => "iban",
            Self::Ssn => "ssn",
            Self::Ip => "ip",
            Self::ApiKey => "api_key",
            Self::Jwt => "jwt",
            Self::PrivateKey => "private_key",
            Self::UkNino => "uk_nino",
            Self::CaSin => "ca_sin",
            Self::EsDni => "es_dni",
            Self::InAadhaar => "in_aadhaar",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        BUILTINS.iter().copied().find(|b| b.name() == name)
    }

    /// Appends the byte ranges of every match in `text`.
    pub fn find(self, text: &str, out: &mut Vec<(usize, usize)>) {
        self.find_with(text, first_digit(text), out);
    }

    /// [`Builtin::find`] with `text`'s [`first_digit`] already known.
    pub fn find_with(self, text: &str, first_digit: Option<usize>, out: &mut Vec<(usize, usize)>) {
        let b = text.as_bytes();
        // Where a scanner whose matches contain a digit may begin: at most
        // `lead` bytes before the first digit ("+(", an IBAN's country code,
        // "JG 1" of a spaced NINO). Starting there instead of at 0 changes
        // nothing: before it each scanner would only step over non-starts.
        let from = |lead: usize| first_digit.map(|d| d.saturating_sub(lead));
        match self {
            Self::Email => find_emails(b, out),
            Self::Ip => {
                if let Some(f) = from(0) {
                    find_ipv4(b, f, out);
                }
                find_ipv6(b, out);
            }
            Self::ApiKey => find_api_keys(b, out),
            Self::Jwt => find_jwts(b, out),
            Self::PrivateKey => find_private_keys(text, out),
            _ => {
                let (lead, scanner): (usize, DigitScanner) = match self {
                    Self::Phone => (2, find_phones),
                    Self::Card => (0, find_cards),
                    Self::Iban => (2, find_ibans),
                    Self::Ssn => (0, find_ssns),
                    Self::UkNino => (3, find_uk_nino),
                    Self::CaSin => (0, find_ca_sin),
                    Self::EsDni => (1, find_es_dni),
                    _ => (0, find_aadhaar),
                };
                if let Some(f) = from(lead) {
                    scanner(b, f, out);
                }
            }
        }
    }
}

/// A scanner whose matches all contain a digit: text, where to begin, matches.
type DigitScanner = fn(&[u8], usize, &mut Vec<(usize, usize)>);

/// A detector ready to scan: a built-in, an operator regex, or a word list.
#[derive(Debug, Clone)]
pub enum Kind {
    Builtin(Builtin),
    Regex(regex_lite::Regex),
    /// Lowercase ASCII-folded words or phrases, matched whole-word.
    Words(Vec<String>),
}

impl Kind {
    pub fn find(&self, text: &str, out: &mut Vec<(usize, usize)>) {
        self.find_with(text, first_digit(text), out);
    }

    /// [`Kind::find`] with `text`'s [`first_digit`] already known.
    pub fn find_with(&self, text: &str, first_digit: Option<usize>, out: &mut Vec<(usize, usize)>) {
        match self {
            Self::Builtin(b) => b.find_with(text, first_digit, out),
            Self::Regex(re) => {
                out.extend(
                    re.find_iter(text)
                        .filter(|m| !m.is_empty())
                        .map(|m| (m.start(), m.end())),
                );
            }
            Self::Words(words) => find_words(text, words, out),
        }
    }
}

fn at(b: &[u8], i: usize) -> u8 {
    b.get(i).copied().unwrap_or(0)
}

fn before(b: &[u8], i: usize) -> u8 {
    i.checked_sub(1).map_or(0, |j| at(b, j))
}

fn is_alnum(c: u8) -> bool {
    c.is_ascii_alphanumeric()
}

/// The first index at or after `from` whose byte satisfies `can_start`, or
/// `b.len()`. Every scanner jumps over the bytes that cannot begin one of its
/// matches with this tight loop (prose is mostly such bytes) instead of
/// running its full per-position checks on each; a scanner whose trigger
/// bytes are absent ends after one pass.
fn skip_to(b: &[u8], from: usize, can_start: impl Fn(u8) -> bool) -> usize {
    b.get(from..)
        .and_then(|rest| rest.iter().position(|c| can_start(*c)))
        .map_or(b.len(), |p| from + p)
}

/// Positions from `from` on whose byte satisfies `can_start` (for scanners
/// that try every position independently).
fn starts<'a>(
    b: &'a [u8],
    from: usize,
    can_start: impl Fn(u8) -> bool + 'a,
) -> impl Iterator<Item = usize> + 'a {
    b.iter()
        .enumerate()
        .skip(from)
        .filter(move |(_, c)| can_start(**c))
        .map(|(i, _)| i)
}

/// The index of the first ASCII digit of `text`: computed once per text and
/// shared by the nine scanners whose matches all contain a digit, which then
/// start just before it (or do nothing when there is none).
pub fn first_digit(text: &str) -> Option<usize> {
    text.bytes().position(|c| c.is_ascii_digit())
}

/// The ASCII digits of `run`, copied into `buf` (no allocation); `None` when
/// there are more than `buf` holds.
fn digits_of<'a>(run: &[u8], buf: &'a mut [u8]) -> Option<&'a [u8]> {
    let mut n = 0;
    for c in run.iter().filter(|c| c.is_ascii_digit()) {
        *buf.get_mut(n)? = *c;
        n += 1;
    }
    buf.get(..n)
}

/// Luhn checksum over ASCII digits.
pub fn luhn_valid(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d.wrapping_sub(b'0'));
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    !digits.is_empty() && sum.is_multiple_of(10)
}

// ---------------------------------------------------------------- email

fn local_char(c: u8) -> bool {
    is_alnum(c) || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn domain_char(c: u8) -> bool {
    is_alnum(c) || matches!(c, b'.' | b'-')
}

/// Image-asset names (`icon@2x.png`) look like addresses; these "TLDs" are
/// file extensions.
const FILE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "bmp"];

fn find_emails(b: &[u8], out: &mut Vec<(usize, usize)>) {
    for pos in starts(b, 0, |c| c == b'@') {
        let mut start = pos;
        while start > 0 && local_char(before(b, start)) {
            start -= 1;
        }
        while at(b, start) == b'.' && start < pos {
            start += 1;
        }
        let mut end = pos + 1;
        while domain_char(at(b, end)) {
            end += 1;
        }
        while end > pos + 1 && matches!(before(b, end), b'.' | b'-') {
            end -= 1;
        }
        let (Some(local), Some(domain)) = (b.get(start..pos), b.get(pos + 1..end)) else {
            continue;
        };
        if local.is_empty() || local.len() > 64 || domain.len() > 253 {
            continue;
        }
        // At least two labels, none empty.
        let mut labels = domain.split(|c| *c == b'.');
        let mut count = 0;
        let mut tld: &[u8] = &[];
        if labels.any(|l| {
            count += 1;
            tld = l;
            l.is_empty()
        }) || count < 2
        {
            continue;
        }
        if tld.len() < 2
            || !tld.iter().all(u8::is_ascii_alphabetic)
            || FILE_EXTENSIONS
                .iter()
                .any(|e| e.as_bytes().eq_ignore_ascii_case(tld))
        {
            continue;
        }
        out.push((start, end));
    }
}

// ---------------------------------------------------------------- phone

/// Words that, just before a number, say it is not a phone number.
const NOT_PHONE_CONTEXT: &[&str] = &[
    "order",
    "invoice",
    "ref",
    "reference",
    "tracking",
    "ticket",
    "case",
    "sku",
    "serial",
    "isbn",
    "po",
    "account",
    "acct",
    "transaction",
    "confirmation",
    "booking",
    "id",
];

/// Whether the words just before `start` name the number as something else
/// ("order #", "invoice no.").
fn number_context_says_not(b: &[u8], start: usize, words: &[&str]) -> bool {
    let from = start.saturating_sub(24);
    let Some(window) = b.get(from..start) else {
        return false;
    };
    if !window.is_ascii() {
        return number_context_says_not_unicode(window, words);
    }
    // ASCII (the usual case): no allocation. `str::trim_end` also trims
    // vertical tab, which `trim_ascii_end` keeps.
    let keep = window
        .iter()
        .rposition(|c| !matches!(c, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r'))
        .map_or(0, |p| p + 1);
    let trimmed = window.get(..keep).unwrap_or_default();
    let ends = |suffix: &[u8]| {
        trimmed.len() >= suffix.len()
            && trimmed
                .get(trimmed.len() - suffix.len()..)
                .is_some_and(|t| t.eq_ignore_ascii_case(suffix))
    };
    if ends(b"#") || ends(b"no.") || ends(b"nr.") {
        return true;
    }
    trimmed
        .split(|c| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .rev()
        .take(2)
        .any(|w| words.iter().any(|k| k.as_bytes().eq_ignore_ascii_case(w)))
}

/// [`number_context_says_not`] for a window with non-ASCII text (Unicode
/// spaces before the number are trimmed like ASCII ones).
fn number_context_says_not_unicode(window: &[u8], words: &[&str]) -> bool {
    let window = String::from_utf8_lossy(window).to_ascii_lowercase();
    let trimmed = window.trim_end();
    if trimmed.ends_with('#') || trimmed.ends_with("no.") || trimmed.ends_with("nr.") {
        return true;
    }
    trimmed
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .rev()
        .take(2)
        .any(|w| words.contains(&w))
}

fn find_phones(b: &[u8], from: usize, out: &mut Vec<(usize, usize)>) {
    let mut i = from;
    while i < b.len() {
        i = skip_to(b, i, |c| c == b'+' || c == b'(' || c.is_ascii_digit());
        let c = at(b, i);
        let starts = c == b'+' || c == b'(' || c.is_ascii_digit();
        let prev = before(b, i);
        if !starts || is_alnum(prev) || matches!(prev, b'.' | b'-' | b'/' | b'_' | b'+' | b':') {
            i += 1;
            continue;
        }
        // The run: digits with single separators (space, -, ., parentheses).
        let mut end = i + 1;
        let mut last_sep = false;
        while end < b.len() {
            let d = at(b, end);
            if d.is_ascii_digit() {
                last_sep = false;
            } else if matches!(d, b' ' | b'-' | b'.' | b'(' | b')') {
                let allow = !last_sep || (before(b, end) == b')' && d == b' ');
                if !allow {
                    break;
                }
                last_sep = true;
            } else {
                break;
            }
            end += 1;
        }
        while end > i && !at(b, end - 1).is_ascii_digit() {
            end -= 1;
        }
        if end <= i {
            i += 1;
            continue;
        }
        let run = b.get(i..end).unwrap_or_default();
        if is_alnum(at(b, end)) || (at(b, end) == b'.' && at(b, end + 1).is_ascii_digit()) {
            i = end.max(i + 1);
            continue;
        }
        if phone_shape(run) && !number_context_says_not(b, i, NOT_PHONE_CONTEXT) {
            out.push((i, end));
        }
        i = end.max(i + 1);
    }
}

/// Whether a digit run is shaped like a phone number: international
/// (`+` and 8-15 digits), North American (3-3-4 groups, optional leading 1)
/// or a national number with a trunk 0 in groups.
fn phone_shape(run: &[u8]) -> bool {
    let mut buf = [0u8; 16];
    let Some(digits) = digits_of(run, &mut buf) else {
        return false; // more than 15 digits: no phone shape below allows it
    };
    let mut group_buf = [0usize; 5];
    let mut n_groups = 0;
    for g in run.split(|c| !c.is_ascii_digit()).filter(|g| !g.is_empty()) {
        // Past 5 groups the count alone matters (only `>= 2` is asked).
        if let Some(slot) = group_buf.get_mut(n_groups) {
            *slot = g.len();
        }
        n_groups += 1;
    }
    let groups = group_buf.get(..n_groups.min(5)).unwrap_or_default();
    let n = digits.len();
    if run.first() == Some(&b'+') {
        return (8..=15).contains(&n) && digits.first() != Some(&b'0');
    }
    let dots = run.iter().filter(|c| **c == b'.').count();
    let nanp_groups = groups == [3, 3, 4] || groups == [1, 3, 3, 4];
    if nanp_groups && (n == 10 || (n == 11 && digits.first() == Some(&b'1'))) {
        let area = if n == 11 {
            digits.get(1)
        } else {
            digits.first()
        };
        // Dotted numbers are phones only in the plain 3.3.4 shape.
        return area.is_some_and(|a| *a >= b'2') && (dots == 0 || groups == [3, 3, 4]);
    }
    // National formats with a trunk prefix: "020 7946 0958", "07700 900123".
    (10..=11).contains(&n)
        && digits.first() == Some(&b'0')
        && digits.get(1) != Some(&b'0')
        && n_groups >= 2
        && groups.first().is_some_and(|g| (2..=5).contains(g))
        && dots == 0
}

// ---------------------------------------------------------------- cards

fn card_prefix_known(d: &[u8]) -> bool {
    let num = |k: usize| -> u32 {
        d.iter()
            .take(k)
            .fold(0, |acc, c| acc * 10 + u32::from(c.wrapping_sub(b'0')))
    };
    let n = d.len();
    match d.first() {
        Some(b'4') => matches!(n, 13 | 16 | 19),
        Some(b'5') => (51..=55).contains(&num(2)) && n == 16,
        Some(b'2') => (2221..=2720).contains(&num(4)) && n == 16,
        Some(b'3') => {
            let two = num(2);
            ((two == 34 || two == 37) && n == 15)
                || ((3528..=3589).contains(&num(4)) && (16..=19).contains(&n))
                || ((two == 36 || two == 38 || (300..=305).contains(&num(3)))
                    && (14..=19).contains(&n))
        }
        Some(b'6') => {
            (num(4) == 6011 || num(2) == 65 || (644..=649).contains(&num(3)) || num(2) == 62)
                && (16..=19).contains(&n)
        }
        _ => false,
    }
}

fn find_cards(b: &[u8], from: usize, out: &mut Vec<(usize, usize)>) {
    let mut i = from;
    while i < b.len() {
        i = skip_to(b, i, |c| c.is_ascii_digit());
        if !at(b, i).is_ascii_digit()
            || is_alnum(before(b, i))
            || matches!(before(b, i), b'-' | b'.')
        {
            i += 1;
            continue;
        }
        let mut end = i;
        let mut sep: Option<u8> = None;
        // Group lengths without a Vec: how many, the first three, the
        // current (last) one, and whether all before it are 4 long.
        let mut n_groups = 1usize;
        let mut first = [0usize; 3];
        let mut last = 0usize;
        let mut fours_before_last = true;
        loop {
            let c = at(b, end);
            if c.is_ascii_digit() {
                last += 1;
                end += 1;
            } else if (c == b' ' || c == b'-')
                && at(b, end + 1).is_ascii_digit()
                && sep.is_none_or(|s| s == c)
            {
                sep = Some(c);
                if let Some(g) = first.get_mut(n_groups - 1) {
                    *g = last;
                }
                fours_before_last &= last == 4;
                n_groups += 1;
                last = 0;
                end += 1;
            } else {
                break;
            }
        }
        if let Some(g) = first.get_mut(n_groups - 1) {
            *g = last;
        }
        let mut buf = [0u8; 19];
        let digits = digits_of(b.get(i..end).unwrap_or_default(), &mut buf).unwrap_or_default();
        let grouped_ok = n_groups == 1
            || (n_groups == 3 && (first == [4, 6, 5] || first == [4, 6, 4]))
            || (n_groups >= 4 && fours_before_last && (1..=4).contains(&last));
        let boundary_after = !is_alnum(at(b, end));
        if (13..=19).contains(&digits.len())
            && grouped_ok
            && boundary_after
            && card_prefix_known(digits)
            && luhn_valid(digits)
        {
            out.push((i, end));
        }
        i = end.max(i + 1);
    }
}

// ---------------------------------------------------------------- IBAN

/// IBAN lengths by country (ISO 13616 registry).
const IBAN_LENGTHS: &[(&[u8; 2], usize)] = &[
    (b"AD", 24),
    (b"AE", 23),
    (b"AL", 28),
    (b"AT", 20),
    (b"AZ", 28),
    (b"BA", 20),
    (b"BE", 16),
    (b"BG", 22),
    (b"BH", 22),
    (b"BR", 29),
    (b"BY", 28),
    (b"CH", 21),
    (b"CR", 22),
    (b"CY", 28),
    (b"CZ", 24),
    (b"DE", 22),
    (b"DK", 18),
    (b"DO", 28),
    (b"EE", 20),
    (b"EG", 29),
    (b"ES", 24),
    (b"FI", 18),
    (b"FO", 18),
    (b"FR", 27),
    (b"GB", 22),
    (b"GE", 22),
    (b"GI", 23),
    (b"GL", 18),
    (b"GR", 27),
    (b"GT", 28),
    (b"HR", 21),
    (b"HU", 28),
    (b"IE", 22),
    (b"IL", 23),
    (b"IQ", 23),
    (b"IS", 26),
    (b"IT", 27),
    (b"JO", 30),
    (b"KW", 30),
    (b"KZ", 20),
    (b"LB", 28),
    (b"LC", 32),
    (b"LI", 21),
    (b"LT", 20),
    (b"LU", 20),
    (b"LV", 21),
    (b"MC", 27),
    (b"MD", 24),
    (b"ME", 22),
    (b"MK", 19),
    (b"MR", 27),
    (b"MT", 31),
    (b"MU", 30),
    (b"NL", 18),
    (b"NO", 15),
    (b"PK", 24),
    (b"PL", 28),
    (b"PS", 29),
    (b"PT", 25),
    (b"QA", 29),
    (b"RO", 24),
    (b"RS", 22),
    (b"SA", 24),
    (b"SC", 31),
    (b"SE", 24),
    (b"SI", 19),
    (b"SK", 24),
    (b"SM", 27),
    (b"TL", 23),
    (b"TN", 24),
    (b"TR", 26),
    (b"UA", 29),
    (b"VA", 22),
    (b"VG", 24),
    (b"XK", 20),
];

/// ISO 7064 mod 97-10 over an IBAN's characters (country and check digits
/// moved to the end, letters as 10-35).
pub fn iban_valid(chars: &[u8]) -> bool {
    if chars.len() < 5 {
        return false;
    }
    let (head, rest) = chars.split_at(4);
    let mut rem = 0u32;
    for c in rest.iter().chain(head.iter()) {
        let v = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'A'..=b'Z' => u32::from(c - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

fn find_ibans(b: &[u8], from: usize, out: &mut Vec<(usize, usize)>) {
    let mut i = from;
    while i + 4 <= b.len() {
        i = skip_to(b, i, |c| c.is_ascii_uppercase());
        if i + 4 > b.len() {
            break;
        }
        let ok_start = at(b, i).is_ascii_uppercase()
            && at(b, i + 1).is_ascii_uppercase()
            && at(b, i + 2).is_ascii_digit()
            && at(b, i + 3).is_ascii_digit()
            && !is_alnum(before(b, i));
        if !ok_start {
            i += 1;
            continue;
        }
        let len = IBAN_LENGTHS
            .iter()
            .find(|(cc, _)| cc.first() == Some(&at(b, i)) && cc.get(1) == Some(&at(b, i + 1)))
            .map(|(_, l)| *l);
        let (true, Some(len)) = (ok_start, len) else {
            i += 1;
            continue;
        };
        // The longest IBAN is 34 characters (ISO 13616).
        let mut buf = [0u8; 34];
        let mut n = 0;
        let mut end = i;
        while n < len {
            let c = at(b, end);
            if c.is_ascii_uppercase() || c.is_ascii_digit() {
                let Some(slot) = buf.get_mut(n) else { break };
                *slot = c;
                n += 1;
                end += 1;
            } else if c == b' ' && (at(b, end + 1).is_ascii_alphanumeric()) && n > 0 {
                end += 1;
            } else {
                break;
            }
        }
        let chars = buf.get(..n).unwrap_or_default();
        if n == len && !is_alnum(at(b, end)) && iban_valid(chars) {
            out.push((i, end));
            i = end;
        } else {
            i += 1;
        }
    }
}

// ---------------------------------------------------------------- SSN

/// `ddd-dd-dddd` (or with spaces), valid area/group/serial; plain nine
/// digits only right after "SSN" or "social security".
fn find_ssns(b: &[u8], from: usize, out: &mut Vec<(usize, usize)>) {
    let mut i = from;
    while i < b.len() {
        i = skip_to(b, i, |c| c.is_ascii_digit());
        if !at(b, i).is_ascii_digit()
            || is_alnum(before(b, i))
            || matches!(before(b, i), b'-' | b'.')
        {
            i += 1;
            continue;
        }
        let digits_at = |from: usize, k: usize| (from..from + k).all(|j| at(b, j).is_ascii_digit());
        let sep = at(b, i + 3);
        let (end, groups) = if digits_at(i, 3)
            && matches!(sep, b'-' | b' ')
            && digits_at(i + 4, 2)
            && at(b, i + 6) == sep
            && digits_at(i + 7, 4)
        {
            (i + 11, [(i, 3), (i + 4, 2), (i + 7, 4)])
        } else if digits_at(i, 9) && ssn_keyword_before(b, i) {
            (i + 9, [(i, 3), (i + 3, 2), (i + 5, 4)])
        } else {
            i += 1;
            continue;
        };
        let after = at(b, end);
        let continues = matches!(after, b'-' | b'.') && at(b, end + 1).is_ascii_digit();
        let boundary = !is_alnum(after) && !continues;
        let group = |(from, k): (usize, usize)| b.get(from..from + k).unwrap_or_default();
        let area = group(groups[0]);
        let valid = area != b"000"
            && area != b"666"
            && area.first() != Some(&b'9')
            && group(groups[1]) != b"00"
            && group(groups[2]) != b"0000";
        if boundary && valid {
            out.push((i, end));
        }
        i = end;
    }
}

fn ssn_keyword_before(b: &[u8], start: usize) -> bool {
    let from = start.saturating_sub(40);
    let window = b.get(from..start).unwrap_or_default();
    let has = |word: &[u8]| {
        window
            .windows(word.len())
            .any(|w| w.eq_ignore_ascii_case(word))
    };
    has(b"ssn") || has(b"social security")
}

// ---------------------------------------------------------------- IP

fn find_ipv4(b: &[u8], from: usize, out: &mut Vec<(usize, usize)>) {
    let mut i = from;
    while i < b.len() {
        i = skip_to(b, i, |c| c.is_ascii_digit());
        let prev = before(b, i);
        if !at(b, i).is_ascii_digit() || is_alnum(prev) || prev == b'.' {
            i += 1;
            continue;
        }
        let mut end = i;
        let mut parts = 0;
        let mut ok = true;
        while parts < 4 {
            let from = end;
            while at(b, end).is_ascii_digit() && end - from < 4 {
                end += 1;
            }
            let part = b.get(from..end).unwrap_or_default();
            let value = part.iter().fold(0u32, |v, d| v * 10 + u32::from(d - b'0'));
            if part.is_empty() || part.len() > 3 || value > 255 {
                ok = false;
                break;
            }
            parts += 1;
            if parts < 4 {
                if at(b, end) != b'.' {
                    ok = false;
                    break;
                }
                end += 1;
            }
        }
        let after = at(b, end);
        // "1.2.3.4.5" is a version, not an address.
        let continues = is_alnum(after) || (after == b'.' && at(b, end + 1).is_ascii_digit());
        if ok && !continues {
            out.push((i, end));
            i = end;
        } else {
            // Skip the rest of this run of digits and dots.
            i += 1;
            while at(b, i).is_ascii_digit() || at(b, i) == b'.' {
                i += 1;
            }
        }
    }
}

/// Candidates are maximal runs of hex digits and colons, not preceded by a
/// letter or digit, that contain a colon: found from each colon outwards, so
/// text without colons costs one pass.
fn find_ipv6(b: &[u8], out: &mut Vec<(usize, usize)>) {
    let in_run = |c: u8| c.is_ascii_hexdigit() || c == b':';
    let mut from = 0;
    while from < b.len() {
        let colon = skip_to(b, from, |c| c == b':');
        if colon >= b.len() {
            break;
        }
        // The run's start: never before `from`, where the last run ended on a
        // byte outside any run.
        let mut i = colon;
        while i > from && in_run(before(b, i)) {
            i -= 1;
        }
        let mut end = colon;
        while in_run(at(b, end)) {
            end += 1;
        }
        let run = b.get(i..end).unwrap_or_default();
        if !is_alnum(before(b, i)) && !is_alnum(at(b, end)) && ipv6_shape(run) {
            out.push((i, end));
        }
        from = end;
    }
}

fn ipv6_shape(run: &[u8]) -> bool {
    let text = std::str::from_utf8(run).unwrap_or_default();
    let doubles = text.matches("::").count();
    if doubles > 1 || text.contains(":::") {
        return false;
    }
    let mut groups = 0;
    for g in text.split(':').filter(|g| !g.is_empty()) {
        if g.len() > 4 {
            return false;
        }
        groups += 1;
    }
    let has_digit = text.bytes().any(|c| c.is_ascii_digit());
    if doubles == 1 {
        // "::1", "2001:db8::1", "fe80::1ff:fe23:4567:890a"
        groups <= 7 && groups > 0 && has_digit
    } else {
        groups == 8 && text.split(':').count() == 8
    }
}

// ---------------------------------------------------------------- secrets

/// Provider key formats: prefix, minimum and maximum length of the part after
/// it, and which characters that part may use.
struct KeyFormat {
    prefix: &'static [u8],
    min: usize,
    max: usize,
    charset: fn(u8) -> bool,
}

fn b64url(c: u8) -> bool {
    is_alnum(c) || c == b'-' || c == b'_'
}
fn alnum_underscore(c: u8) -> bool {
    is_alnum(c) || c == b'_'
}
fn upper_alnum(c: u8) -> bool {
    c.is_ascii_uppercase() || c.is_ascii_digit()
}
fn slack(c: u8) -> bool {
    is_alnum(c) || c == b'-'
}
fn lower_hex(c: u8) -> bool {
    c.is_ascii_digit() || (b'a'..=b'f').contains(&c)
}

const KEY_FORMATS: &[KeyFormat] = &[
    // OpenAI (sk-, sk-proj-, sk-svcacct-), Anthropic (sk-ant-), DeepSeek …
    KeyFormat {
        prefix: b"sk-",
        min: 20,
        max: 256,
        charset: b64url,
    },
    // AWS access key ids.
    KeyFormat {
        prefix: b"AKIA",
        min: 16,
        max: 16,
        charset: upper_alnum,
    },
    KeyFormat {
        prefix: b"ASIA",
        min: 16,
        max: 16,
        charset: upper_alnum,
    },
    // Google API keys.
    KeyFormat {
        prefix: b"AIza",
        min: 35,
        max: 35,
        charset: b64url,
    },
    // GitHub tokens.
    KeyFormat {
        prefix: b"ghp_",
        min: 36,
        max: 255,
        charset: is_alnum,
    },
    KeyFormat {
        prefix: b"gho_",
        min: 36,
        max: 255,
        charset: is_alnum,
    },
    KeyFormat {
        prefix: b"ghu_",
        min: 36,
        max: 255,
        charset: is_alnum,
    },
    KeyFormat {
        prefix: b"ghs_",
        min: 36,
        max: 255,
        charset: is_alnum,
    },
    KeyFormat {
        prefix: b"ghr_",
        min: 36,
        max: 255,
        charset: is_alnum,
    },
    KeyFormat {
        prefix: b"github_pat_",
        min: 22,
        max: 255,
        charset: alnum_underscore,
    },
    // Slack.
    KeyFormat {
        prefix: b"xoxb-",
        min: 10,
        max: 255,
        charset: slack,
    },
    KeyFormat {
        prefix: b"xoxp-",
        min: 10,
        max: 255,
        charset: slack,
    },
    KeyFormat {
        prefix: b"xoxa-",
        min: 10,
        max: 255,
        charset: slack,
    },
    KeyFormat {
        prefix: b"xoxr-",
        min: 10,
        max: 255,
        charset: slack,
    },
    // Stripe.
    KeyFormat {
        prefix: b"sk_live_",
        min: 16,
        max: 255,
        charset: is_alnum,
    },
    KeyFormat {
        prefix: b"rk_live_",
        min: 16,
        max: 255,
        charset: is_alnum,
    },
    KeyFormat {
        prefix: b"sk_test_",
        min: 16,
        max: 255,
        charset: is_alnum,
    },
    // GitLab, Hugging Face, Groq, xAI.
    KeyFormat {
        prefix: b"glpat-",
        min: 20,
        max: 255,
        charset: b64url,
    },
    KeyFormat {
        prefix: b"hf_",
        min: 30,
        max: 255,
        charset: is_alnum,
    },
    KeyFormat {
        prefix: b"gsk_",
        min: 40,
        max: 255,
        charset: is_alnum,
    },
    KeyFormat {
        prefix: b"xai-",
        min: 40,
        max: 255,
        charset: is_alnum,
    },
    // This gateway's own virtual keys.
    KeyFormat {
        prefix: b"tg-",
        min: 48,
        max: 48,
        charset: lower_hex,
    },
];

/// Whether `c` is the first byte of some [`KEY_FORMATS`] prefix (a unit
/// test keeps the two in step).
fn key_start(c: u8) -> bool {
    matches!(c, b's' | b'A' | b'g' | b'x' | b'r' | b'h' | b't')
}

fn find_api_keys(b: &[u8], out: &mut Vec<(usize, usize)>) {
    let mut i = 0;
    'outer: while i < b.len() {
        i = skip_to(b, i, key_start);
        let prev = before(b, i);
        if b64url(prev) {
            i += 1;
            continue;
        }
        let c = at(b, i);
        for f in KEY_FORMATS {
            if f.prefix.first() != Some(&c)
                || !b.get(i..).is_some_and(|rest| rest.starts_with(f.prefix))
            {
                continue;
            }
            let from = i + f.prefix.len();
            let mut end = from;
            while end - from < f.max && (f.charset)(at(b, end)) {
                end += 1;
            }
            let tail = b.get(from..end).unwrap_or_default();
            let mixed =
                tail.iter().any(u8::is_ascii_digit) && tail.iter().any(u8::is_ascii_alphabetic);
            if tail.len() >= f.min && !b64url(at(b, end)) && mixed {
                out.push((i, end));
                i = end;
                continue 'outer;
            }
        }
        i += 1;
    }
}

fn find_jwts(b: &[u8], out: &mut Vec<(usize, usize)>) {
    let mut i = 0;
    while i + 3 < b.len() {
        i = skip_to(b, i, |c| c == b'e');
        if i + 3 >= b.len() {
            break;
        }
        if !b.get(i..).is_some_and(|r| r.starts_with(b"eyJ")) || b64url(before(b, i)) {
            i += 1;
            continue;
        }
        let segment = |from: usize| {
            let mut e = from;
            while b64url(at(b, e)) {
                e += 1;
            }
            e
        };
        let e1 = segment(i);
        if e1 - i < 10 || at(b, e1) != b'.' {
            i = e1.max(i + 1);
            continue;
        }
        let e2 = segment(e1 + 1);
        if e2 - e1 - 1 < 10 || at(b, e2) != b'.' {
            i = e2.max(i + 1);
            continue;
        }
        let e3 = segment(e2 + 1);
        out.push((i, e3));
        i = e3;
    }
}

/// `-----BEGIN … PRIVATE KEY-----` through its END line; to the end of the
/// text when the END line has not arrived (a stream still owes it).
fn find_private_keys(text: &str, out: &mut Vec<(usize, usize)>) {
    let mut from = 0;
    while let Some(rel) = text.get(from..).and_then(|t| t.find("-----BEGIN ")) {
        let start = from + rel;
        let header_from = start + "-----BEGIN ".len();
        let Some(close) = text.get(header_from..).and_then(|t| t.find("-----")) else {
            // Header not complete yet: everything from here is suspect.
            out.push((start, text.len()));
            return;
        };
        let label = text
            .get(header_from..header_from + close)
            .unwrap_or_default();
        let body_from = header_from + close + 5;
        if !(label.ends_with("PRIVATE KEY") || label.ends_with("PRIVATE KEY BLOCK"))
            || label.len() > 64
        {
            from = body_from;
            continue;
        }
        let end_marker = format!("-----END {label}-----");
        match text.get(body_from..).and_then(|t| t.find(&end_marker)) {
            Some(rel_end) => {
                let end = body_from + rel_end + end_marker.len();
                out.push((start, end));
                from = end;
            }
            None => {
                out.push((start, text.len()));
                return;
            }
        }
    }
    // A BEGIN line cut mid-word at the very end of a streamed buffer.
    if let Some(pos) = text.rfind("-----BEGIN") {
        if pos >= from && !out.iter().any(|(s, _)| *s == pos) && text.len() - pos < 12 {
            out.push((pos, text.len()));
        }
    }
}

// ---------------------------------------------------------------- national IDs

/// UK National Insurance number: two letters (with the excluded ones), six
/// digits (optionally in pairs), suffix A-D.
fn find_uk_nino(b: &[u8], from: usize, out: &mut Vec<(usize, usize)>) {
    for i in starts(b, from, |c| c.is_ascii_uppercase()) {
        let (c1, c2) = (at(b, i), at(b, i + 1));
        if is_alnum(before(b, i)) || !c1.is_ascii_uppercase() || !c2.is_ascii_uppercase() {
            continue;
        }
        if b"DFIQUV".contains(&c1) || b"DFIOQUV".contains(&c2) {
            continue;
        }
        let pair = [c1, c2];
        if [b"BG", b"GB", b"NK", b"KN", b"TN", b"NT", b"ZZ"]
            .iter()
            .any(|p| **p == pair)
        {
            continue;
        }
        let mut end = i + 2;
        let spaced = at(b, end) == b' ';
        let mut digits = 0;
        while digits < 6 {
            if spaced && digits % 2 == 0 {
                if at(b, end) != b' ' {
                    break;
                }
                end += 1;
            }
            if !at(b, end).is_ascii_digit() {
                break;
            }
            digits += 1;
            end += 1;
        }
        if digits != 6 {
            continue;
        }
        if spaced && at(b, end) == b' ' {
            end += 1;
        }
        if !(b'A'..=b'D').contains(&at(b, end)) || is_alnum(at(b, end + 1)) {
            continue;
        }
        out.push((i, end + 1));
    }
}

/// Canadian SIN: 3-3-3 digits (separated), Luhn-valid, not starting 0 or 8.
fn find_ca_sin(b: &[u8], from: usize, out: &mut Vec<(usize, usize)>) {
    for i in starts(b, from, |c| c.is_ascii_digit()) {
        if is_alnum(before(b, i)) || matches!(before(b, i), b'-' | b'.') {
            continue;
        }
        let sep = at(b, i + 3);
        let d = |from: usize| (from..from + 3).all(|j| at(b, j).is_ascii_digit());
        if !(d(i) && matches!(sep, b'-' | b' ') && d(i + 4) && at(b, i + 7) == sep && d(i + 8)) {
            continue;
        }
        let end = i + 11;
        if is_alnum(at(b, end))
            || (matches!(at(b, end), b'-' | b'.') && at(b, end + 1).is_ascii_digit())
        {
            continue;
        }
        let mut buf = [0u8; 9];
        let digits = digits_of(b.get(i..end).unwrap_or_default(), &mut buf).unwrap_or_default();
        if !matches!(digits.first(), Some(b'0' | b'8')) && luhn_valid(digits) {
            out.push((i, end));
        }
    }
}

/// Spanish DNI (8 digits + check letter) and NIE (X/Y/Z + 7 digits + letter).
fn find_es_dni(b: &[u8], from: usize, out: &mut Vec<(usize, usize)>) {
    const LETTERS: &[u8; 23] = b"TRWAGMYFPDXBNJZSQVHLCKE";
    for i in starts(b, from, |c| {
        c.is_ascii_digit() || matches!(c, b'X' | b'Y' | b'Z')
    }) {
        if is_alnum(before(b, i)) {
            continue;
        }
        let first = at(b, i);
        let prefix = match first {
            b'X' => Some(0),
            b'Y' => Some(1),
            b'Z' => Some(2),
            _ => None,
        };
        let digits_from = if prefix.is_some() { i + 1 } else { i };
        let count = if prefix.is_some() { 7 } else { 8 };
        if !(digits_from..digits_from + count).all(|j| at(b, j).is_ascii_digit()) {
            continue;
        }
        let mut end = digits_from + count;
        if at(b, end) == b'-' {
            end += 1;
        }
        let letter = at(b, end);
        if !letter.is_ascii_uppercase() || is_alnum(at(b, end + 1)) {
            continue;
        }
        let mut n: u32 = prefix.unwrap_or(0);
        for j in digits_from..digits_from + count {
            n = n * 10 + u32::from(at(b, j) - b'0');
        }
        let expected = LETTERS.get((n % 23) as usize).copied();
        if expected == Some(letter) {
            out.push((i, end + 1));
        }
    }
}

const VERHOEFF_D: [[u8; 10]; 10] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
    [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
    [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
    [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
    [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
    [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
    [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
    [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
];
const VERHOEFF_P: [[u8; 10]; 8] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
    [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
    [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
    [9, 4, 5, 3, 1, 2, 6, 8, 7, 0],
    [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
    [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
    [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
];

/// Verhoeff check over ASCII digits (Aadhaar's checksum).
pub fn verhoeff_valid(digits: &[u8]) -> bool {
    let mut c = 0usize;
    for (i, d) in digits.iter().rev().enumerate() {
        let v = usize::from(d.wrapping_sub(b'0'));
        let p = VERHOEFF_P
            .get(i % 8)
            .and_then(|row| row.get(v))
            .copied()
            .unwrap_or(0);
        c = VERHOEFF_D
            .get(c)
            .and_then(|row| row.get(usize::from(p)))
            .copied()
            .map_or(0, usize::from);
    }
    !digits.is_empty() && c == 0
}

/// Indian Aadhaar: 12 digits (4-4-4 or plain), first digit 2-9, Verhoeff-valid.
fn find_aadhaar(b: &[u8], from: usize, out: &mut Vec<(usize, usize)>) {
    for i in starts(b, from, |c| (b'2'..=b'9').contains(&c)) {
        if is_alnum(before(b, i))
            || matches!(before(b, i), b'-' | b'.')
            || !(b'2'..=b'9').contains(&at(b, i))
        {
            continue;
        }
        let d4 = |from: usize| (from..from + 4).all(|j| at(b, j).is_ascii_digit());
        let sep = at(b, i + 4);
        let end = if d4(i)
            && matches!(sep, b' ' | b'-')
            && d4(i + 5)
            && at(b, i + 9) == sep
            && d4(i + 10)
        {
            i + 14
        } else if (i..i + 12).all(|j| at(b, j).is_ascii_digit()) {
            i + 12
        } else {
            continue;
        };
        if is_alnum(at(b, end))
            || (matches!(at(b, end), b'-' | b'.' | b' ') && at(b, end + 1).is_ascii_digit())
        {
            continue;
        }
        let mut buf = [0u8; 12];
        let digits = digits_of(b.get(i..end).unwrap_or_default(), &mut buf).unwrap_or_default();
        if verhoeff_valid(digits) {
            out.push((i, end));
        }
    }
}

// ---------------------------------------------------------------- words

/// Whole-word, ASCII-case-insensitive occurrences of any of `words` (which
/// are already lowercase). ASCII folding keeps byte offsets unchanged.
fn find_words(text: &str, words: &[String], out: &mut Vec<(usize, usize)>) {
    let lower = text.to_ascii_lowercase();
    let b = lower.as_bytes();
    for w in words {
        let mut from = 0;
        while let Some(rel) = lower.get(from..).and_then(|t| t.find(w.as_str())) {
            let start = from + rel;
            let end = start + w.len();
            let word_char = |c: u8| is_alnum(c) || c == b'_';
            if !word_char(before(b, start)) && !word_char(at(b, end)) {
                out.push((start, end));
            }
            from = start + w.len().max(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(d: Builtin, text: &str) -> Vec<&str> {
        let mut out = Vec::new();
        d.find(text, &mut out);
        out.iter().map(|(s, e)| &text[*s..*e]).collect()
    }

    #[test]
    fn emails() {
        assert_eq!(
            found(Builtin::Email, "mail jane.doe+x@example.co.uk, or a@b.io."),
            ["jane.doe+x@example.co.uk", "a@b.io"]
        );
        assert!(found(
            Builtin::Email,
            "icon@2x.png user@localhost @Override npm i x@1.2.3"
        )
        .is_empty());
    }

    #[test]
    fn phones() {
        assert_eq!(
            found(
                Builtin::Phone,
                "call +44 20 7946 0958 or (415) 555-2671 or 415.555.2671 or 020 7946 0958"
            ),
            [
                "+44 20 7946 0958",
                "(415) 555-2671",
                "415.555.2671",
                "020 7946 0958"
            ]
        );
        for not in [
            "order #415-555-2671",
            "Order number 415-555-2671",
            "invoice 4155552671",
            "on 2024-01-15 at 10:30",
            "ip 192.168.100.200",
            "card 4111 1111 1111 1111",
            "version 1.415.555.2671",
            "ssn 123-45-6789",
        ] {
            assert!(
                found(Builtin::Phone, not).is_empty(),
                "{not}: {:?}",
                found(Builtin::Phone, not)
            );
        }
    }

    #[test]
    fn cards_need_luhn_and_a_known_prefix() {
        assert_eq!(
            found(
                Builtin::Card,
                "visa 4111 1111 1111 1111, amex 3782-822463-10005, mc 5555555555554444"
            ),
            [
                "4111 1111 1111 1111",
                "3782-822463-10005",
                "5555555555554444"
            ]
        );
        assert!(found(
            Builtin::Card,
            "4111 1111 1111 1112 and 1234567812345670 and 4111-1111 1111-1111"
        )
        .is_empty());
    }

    #[test]
    fn ibans_need_mod_97() {
        assert_eq!(
            found(
                Builtin::Iban,
                "pay DE89 3704 0044 0532 0130 00 or GB82WEST12345698765432."
            ),
            ["DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432"]
        );
        assert!(found(
            Builtin::Iban,
            "DE89 3704 0044 0532 0130 01 and XX12345678901234"
        )
        .is_empty());
    }

    #[test]
    fn ssns() {
        assert_eq!(found(Builtin::Ssn, "SSN 123-45-6789."), ["123-45-6789"]);
        assert_eq!(found(Builtin::Ssn, "my ssn is 123456789"), ["123456789"]);
        assert!(found(
            Builtin::Ssn,
            "000-12-3456 666-12-3456 912-12-3456 123-00-4567 123456789 123-45-6789-1"
        )
        .is_empty());
    }

    #[test]
    fn ips() {
        assert_eq!(
            found(
                Builtin::Ip,
                "from 10.0.0.1 and 2001:db8::8a2e:370:7334, ::1"
            ),
            ["10.0.0.1", "2001:db8::8a2e:370:7334", "::1"]
        );
        assert!(found(
            Builtin::Ip,
            "v1.2.3.4 1.2.3.4.5 999.1.1.1 12:30:45 std::vector 00:1A:2B:3C:4D:5E"
        )
        .is_empty());
    }

    #[test]
    fn secrets() {
        let text = "key sk-proj-abc123DEF456ghi789JKL0 and AKIAIOSFODNN7EXAMPLE and ghp_0123456789abcdefghijABCDEFGHIJ012345";
        assert_eq!(found(Builtin::ApiKey, text).len(), 3);
        assert!(found(
            Builtin::ApiKey,
            "sk-learn is great; task-abcdefghijklmnopqrstuvwx1"
        )
        .is_empty());
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        assert_eq!(found(Builtin::Jwt, &format!("Bearer {jwt} ok")), [jwt]);
        let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----";
        assert_eq!(found(Builtin::PrivateKey, &format!("x {pem} y")), [pem]);
        assert!(found(
            Builtin::PrivateKey,
            "-----BEGIN CERTIFICATE-----\nMII\n-----END CERTIFICATE-----"
        )
        .is_empty());
        // An unterminated block runs to the end (a stream may still owe it).
        assert_eq!(
            found(Builtin::PrivateKey, "a -----BEGIN PRIVATE KEY-----\nMII"),
            ["-----BEGIN PRIVATE KEY-----\nMII"]
        );
    }

    #[test]
    fn national_ids() {
        assert_eq!(
            found(Builtin::UkNino, "NI JG 12 34 56 C and AB123456D"),
            ["JG 12 34 56 C", "AB123456D"]
        );
        assert!(found(Builtin::UkNino, "GB123456A DQ123456A QQ123456E").is_empty());
        assert_eq!(found(Builtin::CaSin, "SIN 130-692-544"), ["130-692-544"]);
        assert!(found(Builtin::CaSin, "130-692-545 046-454-286").is_empty());
        assert_eq!(
            found(Builtin::EsDni, "DNI 12345678Z, NIE X1234567L"),
            ["12345678Z", "X1234567L"]
        );
        assert!(found(Builtin::EsDni, "12345678A").is_empty());
        assert!(verhoeff_valid(b"2363"));
        assert_eq!(
            found(Builtin::InAadhaar, "aadhaar 2345 6789 0124"),
            ["2345 6789 0124"]
        );
        assert!(found(Builtin::InAadhaar, "2345 6789 0123").is_empty());
    }

    /// `key_start` (the api_key scanner's first-byte dispatch) names the
    /// first byte of every key format, so no format is skipped.
    #[test]
    fn key_start_covers_every_key_format() {
        for f in KEY_FORMATS {
            assert!(key_start(f.prefix[0]), "{:?}", f.prefix);
        }
    }

    /// Scanners start at the first digit minus their lead: values right at
    /// the start of a text, and texts without digits, behave as before.
    #[test]
    fn digit_bound_scanners_start_before_the_first_digit() {
        for (d, text, want) in [
            (Builtin::Phone, "+(44) 20 7946 0958", "+(44) 20 7946 0958"),
            (
                Builtin::Iban,
                "GB82WEST12345698765432",
                "GB82WEST12345698765432",
            ),
            (Builtin::UkNino, "JG 12 34 56 C", "JG 12 34 56 C"),
            (Builtin::EsDni, "X1234567L", "X1234567L"),
        ] {
            assert_eq!(found(d, text), [want], "{d:?}");
        }
        for d in BUILTINS {
            assert!(found(*d, "no digits here, only words.").is_empty(), "{d:?}");
        }
    }

    #[test]
    fn words_are_whole_and_case_insensitive() {
        let mut out = Vec::new();
        find_words(
            "Project FALCON and falconry",
            &["project falcon".into(), "falcon".into()],
            &mut out,
        );
        assert_eq!(out, [(0, 14), (8, 14)]);
    }
}
