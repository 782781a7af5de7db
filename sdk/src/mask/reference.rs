//! A reference masker to check the engine against (tests only).
//!
//! The engine finds matches from bit masks of 64-byte blocks, reads e-mail addresses straight from those masks,
//! remembers key verdicts per thread and skips positions it has already walked over. None of that is here: each
//! detector is a plain loop over the positions where it may start, written from the detector's documented rules,
//! and the matches are combined and replaced the way `Masker::apply` combines and replaces them. Nothing here
//! calls into `detect`, `classify` or `keys`; the sensitive-key names, actions and replacement come from the
//! `MaskConfig`, as they do for the engine. `differential.rs` feeds both the same texts and requires the same
//! output.
//!
//! Written for clarity, not speed: quadratic walks and small allocations are fine on test-sized texts.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::net::Ipv6Addr;
use std::ops::Range;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::{Action, Detector, MaskConfig, Masked};

/// A match: bytes `range` of the text, found by `detector`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Found {
    pub(crate) range: Range<usize>,
    pub(crate) detector: Detector,
}

/// Which detector keeps a span that two matched identically: the first in this order, wherever the text falls.
/// A secret value names whatever it holds (`password=4111…` is a secret pair, not a card); the password of
/// `https://u:x@a.com@h` is a URL credential, not an address.
const ORDER: [Detector; Detector::COUNT] = [
    Detector::SecretPair,
    Detector::Ipv6,
    Detector::Phone,
    Detector::PaymentCard,
    Detector::Ipv4,
    Detector::UrlCredentials,
    Detector::Email,
    Detector::Jwt,
    Detector::ApiKey,
    Detector::AuthHeader,
    Detector::Iban,
    Detector::PrivateKey,
];

/// A user rule, as the engine compiles it.
struct Rule {
    name: String,
    regex: regex::Regex,
    action: Action,
}

/// The reference masker for one `MaskConfig`.
pub(crate) struct Reference {
    enabled: [bool; Detector::COUNT],
    actions: [Action; Detector::COUNT],
    /// Each sensitive-key name as its lower-case words (`api_key` → `api`, `key`).
    names: Vec<Vec<Vec<u8>>>,
    key_action: Action,
    allow: Vec<String>,
    rules: Vec<Rule>,
    replacement: String,
    hash_key: Option<String>,
    partial_keep: usize,
}

impl Reference {
    /// The reference for `config` (whose user rules must compile; the engine reports those that do not).
    pub(crate) fn new(config: &MaskConfig) -> Reference {
        let mut enabled = [false; Detector::COUNT];
        let mut actions = [Action::Redact; Detector::COUNT];
        for detector in Detector::ALL {
            let setting = config.detectors.get(detector);
            // Phone numbers and IBANs are opt-in; everything else is on unless switched off.
            let default_on = !matches!(detector, Detector::Phone | Detector::Iban);
            enabled[detector as usize] = setting.enabled.unwrap_or(default_on);
            actions[detector as usize] = setting.action.unwrap_or(Action::Redact);
        }
        Reference {
            enabled,
            actions,
            names: config
                .sensitive_keys
                .iter()
                // A name is words of at most 128 bytes, like the keys it is compared with.
                .filter(|name| name.len() <= 128)
                .map(|name| key_words(name.as_bytes()))
                .filter(|words| !words.is_empty() && words.len() <= 24)
                .collect(),
            key_action: config.key_action,
            allow: config.allow_keys.clone(),
            rules: config
                .rules
                .iter()
                .map(|rule| Rule {
                    name: rule.name.clone(),
                    regex: regex::Regex::new(&rule.pattern).expect("a valid rule"),
                    action: rule.action.unwrap_or(Action::Redact),
                })
                .collect(),
            replacement: config.replacement.clone(),
            hash_key: config.hash_key.clone(),
            partial_keep: config.partial_keep,
        }
    }

    /// Whether `detector` is enabled.
    fn on(&self, detector: Detector) -> bool {
        self.enabled[detector as usize]
    }

    /// Every match of every enabled detector in `text`, overlaps resolved: what gets replaced.
    pub(crate) fn matches(&self, text: &str) -> Vec<Found> {
        let b = text.as_bytes();
        // Numbers come tagged already: one walk finds all three kinds (see `numbers`).
        let mut found = numbers(
            b,
            self.on(Detector::Phone),
            self.on(Detector::PaymentCard),
            self.on(Detector::Ipv4),
        );
        let mut add = |detector: Detector, ranges: Vec<Range<usize>>| {
            found.extend(ranges.into_iter().map(|range| Found { range, detector }));
        };
        if self.on(Detector::SecretPair) {
            add(Detector::SecretPair, secret_pairs(b, &self.names));
        }
        if self.on(Detector::Ipv6) {
            add(Detector::Ipv6, ipv6_addresses(b));
        }
        if self.on(Detector::UrlCredentials) {
            add(Detector::UrlCredentials, url_credentials(b));
        }
        if self.on(Detector::Email) {
            add(
                Detector::Email,
                emails(b, self.on(Detector::UrlCredentials)),
            );
        }
        if self.on(Detector::Jwt) {
            add(Detector::Jwt, all_at(b, key_starts(b), jwt_at));
        }
        if self.on(Detector::ApiKey) {
            add(Detector::ApiKey, all_at(b, key_starts(b), api_key_at));
        }
        if self.on(Detector::AuthHeader) {
            add(Detector::AuthHeader, all_at(b, value_starts(b), auth_at));
        }
        if self.on(Detector::Iban) {
            add(Detector::Iban, all_at(b, value_starts(b), iban_at));
        }
        if self.on(Detector::PrivateKey) {
            add(Detector::PrivateKey, private_keys(b));
        }
        resolve(found)
    }

    /// `Masker::attribute`: allowed keys pass, sensitive keys are replaced whole, other values are masked.
    pub(crate) fn attribute(&self, key: &str, value: &str) -> Masked<'static> {
        if self
            .allow
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(key))
        {
            return Masked::Keep(Cow::Owned(value.to_string()));
        }
        if is_sensitive_key(key.as_bytes(), &self.names) {
            return match self.key_action {
                Action::Drop => Masked::Drop,
                action => Masked::Keep(Cow::Owned(self.replacement(
                    super::SENSITIVE_KEY,
                    action,
                    value,
                ))),
            };
        }
        self.apply(value, true)
    }

    /// Masks `text` with the detectors, then the user rules; in an attribute a `drop` match drops it.
    fn apply(&self, text: &str, in_attribute: bool) -> Masked<'static> {
        self.replace(text, &self.matches(text), in_attribute)
    }

    /// Masks `text` whose detector matches are `matches` (from [`Reference::matches`]), then applies the user
    /// rules; in an attribute a `drop` match drops it.
    pub(crate) fn replace(
        &self,
        text: &str,
        matches: &[Found],
        in_attribute: bool,
    ) -> Masked<'static> {
        let mut out = String::new();
        let mut copied = 0;
        for found in matches {
            let action = self.actions[found.detector as usize];
            if action == Action::Drop && in_attribute {
                return Masked::Drop;
            }
            out.push_str(&text[copied..found.range.start]);
            let original = &text[found.range.clone()];
            out.push_str(&self.replacement(found.detector.name(), action, original));
            copied = found.range.end;
        }
        out.push_str(&text[copied..]);
        for rule in &self.rules {
            if !rule.regex.is_match(&out) {
                continue;
            }
            if rule.action == Action::Drop && in_attribute {
                return Masked::Drop;
            }
            out = rule
                .regex
                .replace_all(&out, |m: &regex::Captures<'_>| {
                    self.replacement(&rule.name, rule.action, &m[0])
                })
                .into_owned();
        }
        Masked::Keep(Cow::Owned(out))
    }

    /// What `original`, matched by `name`, becomes under `action`.
    fn replacement(&self, name: &str, action: Action, original: &str) -> String {
        let redacted = self.replacement.replace("{name}", name);
        match action {
            Action::Redact | Action::Drop => redacted,
            Action::Hash => {
                let Some(key) = &self.hash_key else {
                    return redacted;
                };
                let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("any key");
                mac.update(original.as_bytes());
                let digest = mac.finalize().into_bytes();
                let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
                format!("[HASH:{name}:{hex}]")
            }
            Action::Partial => {
                // Keeping the tail of a value no longer than twice the tail would show half of it.
                let chars: Vec<char> = original.chars().collect();
                let keep = self.partial_keep;
                if keep == 0 || chars.len() <= 2 * keep {
                    return redacted;
                }
                let tail: String = chars[chars.len() - keep..].iter().collect();
                format!("****{tail}")
            }
        }
    }
}

/// Keeps the earliest, then longest, of overlapping matches; a later match reaching past the kept ones keeps only
/// its part past them (every byte any detector matched is masked, by the match that started first). Identical
/// spans go to the detector that comes first in [`ORDER`].
pub(crate) fn resolve(mut found: Vec<Found>) -> Vec<Found> {
    let rank = |detector: Detector| ORDER.iter().position(|&d| d == detector);
    found.sort_by_key(|f| (f.range.start, Reverse(f.range.end), rank(f.detector)));
    let mut covered = 0;
    let mut kept = Vec::new();
    for mut f in found {
        if f.range.end <= covered {
            continue;
        }
        f.range.start = f.range.start.max(covered);
        covered = f.range.end;
        kept.push(f);
    }
    kept
}

// ---- Characters and positions ----

/// Whether `c` ends a token: white space and control bytes, quotes, brackets, `,`, `;`, `|`, `` ` `` and `\`.
fn is_separator(c: u8) -> bool {
    matches!(
        c,
        0..=0x1f
            | 0x7f
            | b' '
            | b'"'
            | b'\''
            | b','
            | b';'
            | b'('
            | b')'
            | b'['
            | b']'
            | b'{'
            | b'}'
            | b'<'
            | b'>'
            | b'|'
            | b'`'
            | b'\\'
    )
}

/// Whether a key inside a token starts after `c`: a separator, or the `?`, `&`, `/` or `=` of a query string or
/// path.
fn ends_key(c: u8) -> bool {
    is_separator(c) || matches!(c, b'?' | b'&' | b'/' | b'=')
}

/// The start of the run of bytes satisfying `belongs` that ends at `end`.
fn run_back(b: &[u8], end: usize, belongs: impl Fn(u8) -> bool) -> usize {
    let mut start = end;
    while start > 0 && belongs(b[start - 1]) {
        start -= 1;
    }
    start
}

/// The end of the run of bytes satisfying `belongs` that starts at `start`.
fn run_forward(b: &[u8], start: usize, belongs: impl Fn(u8) -> bool) -> usize {
    let mut end = start;
    while end < b.len() && belongs(b[end]) {
        end += 1;
    }
    end
}

/// The token (maximal run of non-separators) holding position `p`.
fn token_around(b: &[u8], p: usize) -> Range<usize> {
    run_back(b, p, |c| !is_separator(c))..run_forward(b, p, |c| !is_separator(c))
}

/// Where a credential or an IBAN may start: where a token starts, or right after a `=` or `:` (`auth=Bearer …`,
/// `iban=DE89…`).
fn value_starts(b: &[u8]) -> Vec<usize> {
    (0..b.len())
        .filter(|&p| p == 0 || is_separator(b[p - 1]) || matches!(b[p - 1], b'=' | b':'))
        .collect()
}

/// Where keys and tokens may start: where a token starts, or after a `=`, `:`, `/`, `?` or `&` inside one
/// (`key=AKIA…`, `/hooks/xoxb-…`).
fn key_starts(b: &[u8]) -> Vec<usize> {
    (0..b.len())
        .filter(|&p| p == 0 || ends_key(b[p - 1]) || b[p - 1] == b':')
        .collect()
}

/// Every match `at` finds at one of `starts`.
fn all_at(
    b: &[u8],
    starts: Vec<usize>,
    at: fn(&[u8], usize) -> Option<Range<usize>>,
) -> Vec<Range<usize>> {
    starts.into_iter().filter_map(|p| at(b, p)).collect()
}

/// Whether `b` continues at `p` with a letter or digit.
fn alnum_at(b: &[u8], p: usize) -> bool {
    b.get(p).is_some_and(u8::is_ascii_alphanumeric)
}

/// Whether `b` continues at `p` with a digit.
fn digit_at(b: &[u8], p: usize) -> bool {
    b.get(p).is_some_and(u8::is_ascii_digit)
}

// ---- Sensitive keys ----

/// The words of a key, lower-cased: runs of letters and digits (bytes above 0x7f count as letters), also split
/// before an upper-case letter that follows a lower-case letter or a digit (`dbPassword` → `db`, `password`).
fn key_words(key: &[u8]) -> Vec<Vec<u8>> {
    let mut words: Vec<Vec<u8>> = Vec::new();
    let mut in_word = false;
    for (i, &c) in key.iter().enumerate() {
        let letter = c.is_ascii_alphanumeric() || c >= 0x80;
        let camel_hump = i > 0
            && c.is_ascii_uppercase()
            && (key[i - 1].is_ascii_lowercase() || key[i - 1].is_ascii_digit());
        if !letter {
            in_word = false;
            continue;
        }
        if !in_word || camel_hump {
            words.push(Vec::new());
        }
        in_word = true;
        words
            .last_mut()
            .expect("a word was just started")
            .push(c.to_ascii_lowercase());
    }
    words
}

/// Whether `key` names a sensitive value: some name's words appear in it consecutively (`api_key` in
/// `X-Api-Key`), or it is a name of several words with the separators left out (`APIKEY`, `a_p_i_k_e_y`). Keys
/// shorter than three bytes, longer than 128 or of more than 24 words are not judged (not sensitive).
fn is_sensitive_key(key: &[u8], names: &[Vec<Vec<u8>>]) -> bool {
    if key.len() < 3 || key.len() > 128 {
        return false;
    }
    let words = key_words(key);
    if words.len() > 24 {
        return false;
    }
    let joined = words.concat();
    names.iter().any(|name| {
        words
            .windows(name.len())
            .any(|window| window == name.as_slice())
            || (name.len() > 1 && joined == name.concat())
    })
}

// ---- Secret pairs ----

/// Values of sensitive keys in text: `password=x`, `"token": "x"`, `?api_key=x&`, `Authorization: Bearer x`.
/// The key ends at a `=` or `:` (not the `:` of `scheme://`); its value follows.
fn secret_pairs(b: &[u8], names: &[Vec<Vec<u8>>]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    for j in 1..b.len() {
        if !matches!(b[j], b'=' | b':') {
            continue;
        }
        let key = if is_separator(b[j - 1]) {
            spaced_key(b, j)
        } else {
            inline_key(b, j)
        };
        if let Some(key) = key
            && is_sensitive_key(&b[key], names)
            && let Some(value) = pair_value(b, j + 1)
        {
            out.push(value);
        }
    }
    out
}

/// The key before a `=` or `:` at `j` that follows a separator (`password = x`, `"password": x`): up to four
/// spaces, then at most one closing quote, may stand between the key and `j`; the key is the token before them.
fn spaced_key(b: &[u8], j: usize) -> Option<Range<usize>> {
    let mut end = j;
    while end > 0 && b[end - 1] == b' ' && j - end < 4 {
        end -= 1;
    }
    if end > 0 && matches!(b[end - 1], b'"' | b'\'') {
        end -= 1;
    }
    if end == 0 || is_separator(b[end - 1]) {
        return None;
    }
    Some(run_back(b, end, |c| !is_separator(c))..end)
}

/// The key before a `=` or `:` at `j` inside a token (`password=x`, `?token=x`, `user.password:x`): back to the
/// token's start or to a `?`, `&`, `/` or `=`. The `:` of `scheme://` ends no key.
fn inline_key(b: &[u8], j: usize) -> Option<Range<usize>> {
    if b[j] == b':' && b[j + 1..].starts_with(b"//") {
        return None;
    }
    Some(run_back(b, j, |c| !ends_key(c))..j)
}

/// The value of a pair, from `from` (just after its `=` or `:`), spaces skipped: a quoted string's contents up to
/// its closing quote, the line's end or the text's end (a backslash escapes the byte after it), or, unless it
/// opens an object or array, the bytes up to a separator or `&`. Empty values are none. An auth scheme
/// (`Bearer`, `Basic`, `Token`, `Digest`, `ApiKey`, `Negotiate`) followed by one or more spaces takes the
/// credential after them along.
fn pair_value(b: &[u8], from: usize) -> Option<Range<usize>> {
    let start = run_forward(b, from, |c| c == b' ');
    let &first = b.get(start)?;
    if matches!(first, b'"' | b'\'') {
        let mut end = start + 1;
        while end < b.len() && b[end] != first && b[end] != b'\n' {
            end += if b[end] == b'\\' { 2 } else { 1 };
        }
        let end = end.min(b.len());
        return (end > start + 1).then_some(start + 1..end);
    }
    if matches!(first, b'{' | b'[') {
        return None;
    }
    let end = run_forward(b, start, |c| !is_separator(c) && c != b'&');
    if end == start {
        return None;
    }
    let schemes = ["basic", "bearer", "token", "digest", "apikey", "negotiate"];
    let scheme = schemes
        .iter()
        .any(|s| b[start..end].eq_ignore_ascii_case(s.as_bytes()));
    if scheme && b.get(end) == Some(&b' ') && end + 1 < b.len() {
        // The credential, after any number of spaces, runs to the next separator.
        let credential = run_forward(b, end + 1, |c| c == b' ');
        let credential_end = run_forward(b, credential, |c| !is_separator(c));
        return Some(start..credential_end.max(end + 1));
    }
    Some(start..end)
}

// ---- IPv6 ----

/// IPv6 addresses: a maximal run of hex digits, `:` and `.` (trailing dots dropped) that the standard library
/// parses as an address, touching no letter, digit or `_` on either side, with a decimal digit in it or four
/// groups written out (`dead:beef::cafe` reads as words), and neither `::` nor `::1` (they point at no one).
fn ipv6_addresses(b: &[u8]) -> Vec<Range<usize>> {
    let in_run = |c: u8| c.is_ascii_hexdigit() || c == b':' || c == b'.';
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut out = Vec::new();
    let mut p = 0;
    while p < b.len() {
        if !in_run(b[p]) {
            p += 1;
            continue;
        }
        let (start, run_end) = (p, run_forward(b, p, in_run));
        p = run_end;
        let touches_word =
            (start > 0 && word(b[start - 1])) || b.get(run_end).is_some_and(|&c| word(c));
        let mut end = run_end;
        while end > start && b[end - 1] == b'.' {
            end -= 1;
        }
        let run = &b[start..end];
        if touches_word || !run.contains(&b':') {
            continue;
        }
        let Some(address) = std::str::from_utf8(run)
            .ok()
            .and_then(|s| s.parse::<Ipv6Addr>().ok())
        else {
            continue;
        };
        let written = if run.contains(&b'.') {
            4
        } else {
            run.split(|&c| c == b':').filter(|g| !g.is_empty()).count()
        };
        let segments = address.segments();
        let nobody = segments[..7] == [0; 7] && segments[7] <= 1;
        if (written >= 4 || run.iter().any(u8::is_ascii_digit)) && !nobody {
            out.push(start..end);
        }
    }
    out
}

// ---- Numbers: phone numbers, cards, IPv4 ----

/// Phone numbers, card numbers and IPv4 addresses. All start where a run of digits starts (no letter or digit
/// before it); at one start a phone number is tried first, then a card, then an address. A number starting inside
/// one found already is none of its own: the groups of a card are not numbers.
fn numbers(b: &[u8], phone: bool, card: bool, ipv4: bool) -> Vec<Found> {
    let mut out = Vec::new();
    let mut covered = 0;
    for p in 0..b.len() {
        let run_start = b[p].is_ascii_digit() && (p == 0 || !b[p - 1].is_ascii_alphanumeric());
        if !run_start || p < covered {
            continue;
        }
        let found = None
            .or_else(|| {
                phone
                    .then(|| phone_at(b, p))
                    .flatten()
                    .map(|r| (r, Detector::Phone))
            })
            .or_else(|| {
                card.then(|| card_at(b, p))
                    .flatten()
                    .map(|r| (r, Detector::PaymentCard))
            })
            .or_else(|| {
                ipv4.then(|| ipv4_at(b, p))
                    .flatten()
                    .map(|r| (r, Detector::Ipv4))
            });
        if let Some((range, detector)) = found {
            covered = range.end;
            out.push(Found { range, detector });
        }
    }
    out
}

/// A phone number at the digit run at `p`: `+` and 8–15 digits, or ten digits, possibly after `(`; groups
/// separated by one space, `-`, `.` or `)` (or `) `); followed by no letter or digit. Ten digits need two
/// separators and either the `(` or the same separator after the third and the sixth digit (`415-555-2671`).
fn phone_at(b: &[u8], p: usize) -> Option<Range<usize>> {
    let international = p > 0 && b[p - 1] == b'+';
    let parenthesised = p > 0 && b[p - 1] == b'(';
    let start = if international || parenthesised {
        p - 1
    } else {
        p
    };
    let (mut q, mut digits, mut separators) = (p, 0, 0);
    while q < b.len() {
        if b[q].is_ascii_digit() {
            digits += 1;
            q += 1;
            continue;
        }
        if !matches!(b[q], b' ' | b'-' | b'.' | b')') {
            break;
        }
        let next = if b[q] == b')' && b.get(q + 1) == Some(&b' ') {
            q + 2
        } else {
            q + 1
        };
        if !digit_at(b, next) {
            break;
        }
        separators += 1;
        q = next;
    }
    if alnum_at(b, q) {
        return None;
    }
    let ok = if international {
        (8..=15).contains(&digits) && separators >= 1
    } else {
        digits == 10 && separators >= 2 && (parenthesised || b[p + 3] == b[p + 7])
    };
    ok.then_some(start..q)
}

/// A payment card number at `p`: 13–19 digits starting with 2–6, in groups separated by a single space or dash
/// (a first group of 4–12 digits must be followed by one), with an issuer's prefix and length and a valid Luhn
/// digit. It ends before no letter, digit or `.digit` (`4111….5` is a decimal); of the places it could end the
/// furthest valid one wins, so a trailing group that is no part of it stays.
fn card_at(b: &[u8], p: usize) -> Option<Range<usize>> {
    let first_group = run_forward(b, p, |c| c.is_ascii_digit()) - p;
    let grouped = first_group >= 4
        && matches!(b.get(p + first_group), Some(b' ' | b'-'))
        && digit_at(b, p + first_group + 1);
    if !matches!(b[p], b'2'..=b'6') || !(first_group >= 13 || grouped) {
        return None;
    }
    let mut digits = Vec::new();
    let mut ends = Vec::new();
    let mut q = p;
    while q < b.len() && digits.len() < 19 {
        if b[q].is_ascii_digit() {
            digits.push(b[q] - b'0');
            q += 1;
            let decimal = b.get(q) == Some(&b'.') && digit_at(b, q + 1);
            if !alnum_at(b, q) && !decimal {
                ends.push((q, digits.len()));
            }
        } else if matches!(b[q], b' ' | b'-') && digit_at(b, q + 1) {
            q += 1;
        } else {
            break;
        }
    }
    ends.into_iter()
        .rev()
        .find(|&(_, count)| {
            count >= 13 && issuer_allows(&digits[..count]) && luhn_valid(&digits[..count])
        })
        .map(|(end, _)| p..end)
}

/// Whether an issuer (Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay, Maestro, RuPay) issues numbers
/// with these first digits and this many of them.
fn issuer_allows(digits: &[u8]) -> bool {
    let prefix = |n: usize| digits[..n].iter().fold(0u32, |v, &d| v * 10 + u32::from(d));
    let len = digits.len();
    match prefix(1) {
        4 => [13, 16, 19].contains(&len),
        5 => match prefix(2) {
            51..=55 => len == 16,
            50 | 56..=59 => len >= 12,
            _ => false,
        },
        2 => (2221..=2720).contains(&prefix(4)) && len == 16,
        3 => {
            let amex = matches!(prefix(2), 34 | 37) && len == 15;
            let jcb = (3528..=3589).contains(&prefix(4)) && len >= 16;
            let diners = ((300..=305).contains(&prefix(3)) || matches!(prefix(2), 36 | 38 | 39))
                && (14..=19).contains(&len);
            amex || jcb || diners
        }
        // Discover (6011, 644–649, 65), UnionPay (62), Maestro and RuPay between them use every 6x prefix.
        6 => len >= 16,
        _ => false,
    }
}

/// The Luhn check: every second digit from the right doubled (less 9 when over 9), the sum a multiple of 10.
fn luhn_valid(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d) * if i % 2 == 1 { 2 } else { 1 };
            if d > 9 { d - 9 } else { d }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// An IPv4 address at `p` (not right after a `.`): four decimal octets of one to three digits, each at most 255,
/// between dots; followed by no letter, digit or `.digit`. Loopback (`127.…`) and `0.0.0.0` point at no one.
fn ipv4_at(b: &[u8], p: usize) -> Option<Range<usize>> {
    if p > 0 && b[p - 1] == b'.' {
        return None;
    }
    let mut octets = Vec::new();
    let mut q = p;
    for i in 0..4 {
        if i > 0 {
            if b.get(q) != Some(&b'.') {
                return None;
            }
            q += 1;
        }
        let end = run_forward(b, q, |c| c.is_ascii_digit());
        if !(1..=3).contains(&(end - q)) {
            return None;
        }
        let value: u32 = std::str::from_utf8(&b[q..end]).ok()?.parse().ok()?;
        if value > 255 {
            return None;
        }
        octets.push(value);
        q = end;
    }
    let decimal = b.get(q) == Some(&b'.') && digit_at(b, q + 1);
    if alnum_at(b, q) || decimal || octets[0] == 127 || octets.iter().all(|&o| o == 0) {
        return None;
    }
    Some(p..q)
}

// ---- E-mail addresses and URL credentials ----

/// The user information of the URL in token `token`, if it has one: the `@` that ends it (the last `@` of the
/// authority, which runs from after the token's first `://` to the next `/`, `?` or `#`), and the password in
/// it (after its first `:`) when not empty.
fn url_user_info(b: &[u8], token: Range<usize>) -> Option<(usize, Option<Range<usize>>)> {
    let scheme = b[token.clone()].windows(3).position(|w| w == b"://")?;
    let authority = token.start + scheme + 3;
    let authority_end =
        run_forward(b, authority, |c| !matches!(c, b'/' | b'?' | b'#')).min(token.end);
    let at = (authority..authority_end).rev().find(|&i| b[i] == b'@')?;
    let password = (authority..at)
        .find(|&i| b[i] == b':')
        .map(|colon| colon + 1..at)
        .filter(|password| !password.is_empty());
    Some((at, password))
}

/// Passwords in URLs: `scheme://user:password@host`.
fn url_credentials(b: &[u8]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut p = 0;
    while p < b.len() {
        let token = token_around(b, p);
        p = token.end + 1;
        if let Some((_, Some(password))) = url_user_info(b, token) {
            out.push(password);
        }
    }
    out
}

/// E-mail addresses: a local part of letters, digits and `._%+-` (leading dots dropped), `@`, and a domain of
/// letters, digits, `.` and `-` (trailing dots and dashes dropped) that starts with a letter or digit and ends
/// with a dot and a top-level domain of two letters or more. The `@` that ends a URL's user information is no
/// address's when URL credentials are looked for (`https://user@host.com` names a user, not a mailbox).
fn emails(b: &[u8], url_credentials: bool) -> Vec<Range<usize>> {
    let local = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-');
    let domain = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-');
    let mut out = Vec::new();
    for at in (0..b.len()).filter(|&i| b[i] == b'@') {
        if url_credentials
            && url_user_info(b, token_around(b, at)).is_some_and(|(user_end, _)| user_end == at)
        {
            continue;
        }
        let mut start = run_back(b, at, local);
        while start < at && b[start] == b'.' {
            start += 1;
        }
        let mut end = run_forward(b, at + 1, domain);
        while end > at + 1 && matches!(b[end - 1], b'.' | b'-') {
            end -= 1;
        }
        let name = &b[at + 1..end];
        let Some(dot) = name.iter().rposition(|&c| c == b'.') else {
            continue;
        };
        let tld = &name[dot + 1..];
        let ok = start < at
            && dot > 0
            && name[0].is_ascii_alphanumeric()
            && tld.len() >= 2
            && tld.iter().all(u8::is_ascii_alphabetic);
        if ok {
            out.push(start..end);
        }
    }
    out
}

// ---- Tokens and keys ----

/// The end of the base64url run (letters, digits, `_`, `-`) starting at `p`.
fn base64url_end(b: &[u8], p: usize) -> usize {
    run_forward(b, p, |c| {
        c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-')
    })
}

/// A JSON Web Token at `p`: `eyJ<header>.<payload>.<signature>` in base64url, a header of at least ten
/// characters (`eyJ` included), a payload of at least two, and a signature of any length (`alg: none` tokens
/// have none).
fn jwt_at(b: &[u8], p: usize) -> Option<Range<usize>> {
    if !b[p..].starts_with(b"eyJ") {
        return None;
    }
    let header_end = base64url_end(b, p);
    if header_end - p < 10 || b.get(header_end) != Some(&b'.') {
        return None;
    }
    let payload_end = base64url_end(b, header_end + 1);
    if payload_end - (header_end + 1) < 2 || b.get(payload_end) != Some(&b'.') {
        return None;
    }
    Some(p..base64url_end(b, payload_end + 1))
}

/// The characters of an API key's body.
#[derive(Clone, Copy)]
enum Body {
    /// `A`–`Z`, `0`–`9`.
    UpperDigit,
    /// Letters and digits.
    Alnum,
    /// Letters, digits, `_`.
    Word,
    /// Letters, digits, `_`, `-`.
    WordDash,
    /// Letters, digits, `-`.
    AlnumDash,
}

impl Body {
    /// Whether `c` may be part of a body of this kind.
    fn allows(self, c: u8) -> bool {
        match self {
            Body::UpperDigit => c.is_ascii_uppercase() || c.is_ascii_digit(),
            Body::Alnum => c.is_ascii_alphanumeric(),
            Body::Word => c.is_ascii_alphanumeric() || c == b'_',
            Body::WordDash => c.is_ascii_alphanumeric() || c == b'_' || c == b'-',
            Body::AlnumDash => c.is_ascii_alphanumeric() || c == b'-',
        }
    }
}

/// Well-known key shapes: prefix, body characters, body length, and whether that length is exact (else a
/// minimum).
const KEY_SHAPES: &[(&str, Body, usize, bool)] = &[
    // AWS access key ids.
    ("AKIA", Body::UpperDigit, 16, true),
    ("ASIA", Body::UpperDigit, 16, true),
    ("ABIA", Body::UpperDigit, 16, true),
    ("ACCA", Body::UpperDigit, 16, true),
    // Google API keys.
    ("AIza", Body::WordDash, 35, true),
    // GitHub and GitLab tokens.
    ("ghp_", Body::Alnum, 36, false),
    ("gho_", Body::Alnum, 36, false),
    ("ghu_", Body::Alnum, 36, false),
    ("ghs_", Body::Alnum, 36, false),
    ("ghr_", Body::Alnum, 36, false),
    ("github_pat_", Body::Word, 22, false),
    ("glpat-", Body::WordDash, 20, false),
    // Slack tokens.
    ("xoxb-", Body::AlnumDash, 10, false),
    ("xoxp-", Body::AlnumDash, 10, false),
    ("xoxa-", Body::AlnumDash, 10, false),
    ("xoxr-", Body::AlnumDash, 10, false),
    ("xoxs-", Body::AlnumDash, 10, false),
    ("xoxe-", Body::AlnumDash, 10, false),
    // Stripe keys and webhook secrets, OpenAI-style keys.
    ("sk_live_", Body::Alnum, 16, false),
    ("sk_test_", Body::Alnum, 16, false),
    ("rk_live_", Body::Alnum, 16, false),
    ("rk_test_", Body::Alnum, 16, false),
    ("whsec_", Body::Alnum, 24, false),
    ("sk-", Body::WordDash, 32, false),
];

/// An API key at `p`: a known prefix, then a body (the whole run of the shape's characters) of the shape's length,
/// followed by no letter or digit. `sk-` bodies must mix in a digit and an upper-case letter (`sk-learn` docs are
/// not keys).
fn api_key_at(b: &[u8], p: usize) -> Option<Range<usize>> {
    KEY_SHAPES
        .iter()
        .find_map(|&(prefix, body, length, exact)| {
            if !b[p..].starts_with(prefix.as_bytes()) {
                return None;
            }
            let from = p + prefix.len();
            let end = run_forward(b, from, |c| body.allows(c));
            let len = end - from;
            let fits = if exact { len == length } else { len >= length };
            let key = &b[from..end];
            let mixed =
                key.iter().any(u8::is_ascii_digit) && key.iter().any(u8::is_ascii_uppercase);
            (fits && !alnum_at(b, end) && (prefix != "sk-" || mixed)).then_some(p..end)
        })
}

/// The credential of `Bearer <credential>` or `Basic <credential>` (any case, one or more spaces) at `p`: letters,
/// digits and `._~+/-`, then any `=` padding. A bearer credential has 24 characters or more, or 16 with a digit among them; a basic
/// one is base64 of `user:password` (see [`basic_has_colon`]).
fn auth_at(b: &[u8], p: usize) -> Option<Range<usize>> {
    let starts = |scheme: &[u8]| {
        b.len() >= p + scheme.len() && b[p..p + scheme.len()].eq_ignore_ascii_case(scheme)
    };
    let (bearer, basic) = (starts(b"bearer "), starts(b"basic "));
    let after_scheme = if bearer {
        p + 7
    } else if basic {
        p + 6
    } else {
        return None;
    };
    // Any further spaces before the credential (HTTP's `1*SP`).
    let from = run_forward(b, after_scheme, |c| c == b' ');
    let token =
        |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'~' | b'+' | b'/' | b'-');
    // HTTP's token68: `=` only as padding at the end. After one, more of the token is a key and a value
    // (`token_type=Bearer expires_in=86400`), not a credential.
    let end = run_forward(b, run_forward(b, from, token), |c| c == b'=');
    if end < b.len() && token(b[end]) {
        return None;
    }
    let credential = &b[from..end];
    let ok = if bearer {
        credential.len() >= 24
            || (credential.len() >= 16 && credential.iter().any(u8::is_ascii_digit))
    } else {
        credential.len() >= 8 && credential.len().is_multiple_of(4) && basic_has_colon(credential)
    };
    ok.then_some(from..end)
}

/// Whether a Basic credential decodes to something with a `:`. It is read as standard base64 four characters
/// at a time; a group is its characters up to a `=` (padding), and must hold two to four base64 digits. Groups
/// are decoded until one is not like that; a colon in what was decoded by then is enough.
fn basic_has_colon(credential: &[u8]) -> bool {
    const DIGITS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut decoded = Vec::new();
    for group in credential.chunks(4) {
        let data = group.split(|&c| c == b'=').next().unwrap_or_default();
        let values: Option<Vec<u32>> = data
            .iter()
            .map(|c| DIGITS.iter().position(|d| d == c).map(|v| v as u32))
            .collect();
        let Some(values) = values.filter(|v| (2..=4).contains(&v.len())) else {
            break;
        };
        // n base64 digits carry 6n bits, of which the whole bytes (n - 1 of them) are data.
        let bits = values.iter().fold(0u32, |acc, v| acc << 6 | v) << (6 * (4 - values.len()));
        let bytes = bits.to_be_bytes();
        decoded.extend_from_slice(&bytes[1..values.len()]);
    }
    decoded.contains(&b':')
}

/// An IBAN at `p`: two upper-case letters (the country), two check digits, then upper-case letters and digits
/// (one space allowed after each group of four, before a letter or digit), 15–34 characters in all, followed by no
/// letter or digit, and valid by mod 97.
fn iban_at(b: &[u8], p: usize) -> Option<Range<usize>> {
    let head = b.get(p..p + 4)?;
    if !(head[0].is_ascii_uppercase()
        && head[1].is_ascii_uppercase()
        && head[2].is_ascii_digit()
        && head[3].is_ascii_digit())
    {
        return None;
    }
    let mut chars = Vec::new();
    let (mut q, mut end) = (p, p);
    while q < b.len() && chars.len() < 34 {
        let c = b[q];
        if c.is_ascii_digit() || c.is_ascii_uppercase() {
            chars.push(c);
            q += 1;
            end = q;
        } else if c == b' ' && chars.len() % 4 == 0 && alnum_at(b, q + 1) {
            q += 1;
        } else {
            break;
        }
    }
    if !(15..=34).contains(&chars.len()) || alnum_at(b, end) {
        return None;
    }
    // The country and check digits move to the end; letters count as 10–35; the whole is 1 mod 97.
    let rotated = chars[4..].iter().chain(&chars[..4]);
    let remainder = rotated.fold(0u32, |r, &c| {
        let v = (c as char).to_digit(36).expect("a letter or digit");
        if v >= 10 {
            (r * 100 + v) % 97
        } else {
            (r * 10 + v) % 97
        }
    });
    (remainder == 1).then_some(p..end)
}

/// PEM private keys: from a `-----BEGIN` (not after another `-`) whose header, up to the next `-----`, ends with
/// `PRIVATE KEY`, through the `-----` that closes the `-----END` line after it; to the end of the text when the
/// block was cut.
fn private_keys(b: &[u8]) -> Vec<Range<usize>> {
    let find = |from: usize, what: &[u8]| -> Option<usize> {
        b.get(from..)?
            .windows(what.len())
            .position(|w| w == what)
            .map(|i| from + i)
    };
    let mut out = Vec::new();
    for p in 0..b.len() {
        if !b[p..].starts_with(b"-----BEGIN") || (p > 0 && b[p - 1] == b'-') {
            continue;
        }
        let Some(header_end) = find(p + 10, b"-----") else {
            continue;
        };
        if !b[p..header_end].ends_with(b"PRIVATE KEY") {
            continue;
        }
        let end = find(header_end + 5, b"-----END")
            .and_then(|end_line| find(end_line + 8, b"-----"))
            .map_or(b.len(), |close| close + 5);
        out.push(p..end);
    }
    out
}
