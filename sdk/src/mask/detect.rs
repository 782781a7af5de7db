//! The built-in detectors: one left-to-right pass over the text.
//!
//! Why not a regex per detector: the text is cut into tokens with a byte-class table, and a token is looked at
//! only when its classes say a detector could match (an `@` for e-mail, digits for cards and addresses, `=` or
//! `:` for pairs, 16+ characters for keys and tokens). Plain words — almost all of a log line — cost a table
//! lookup per byte. Checks that regexes cannot do cheaply (Luhn, issuer prefixes, IPv6 grammar, Basic
//! credentials that decode to `user:password`, IBAN mod-97) keep ids, timestamps and version numbers intact.

use super::Detector;
use super::keys::KeyMatcher;

/// A match: bytes `start..end` of the text, found by `detector`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Hit {
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) detector: Detector,
}

const SEP: u8 = 0;
const ALPHA: u8 = 1;
const DIGIT: u8 = 2;
const AT: u8 = 4;
const COLON: u8 = 8;
const EQ: u8 = 16;
const DOT: u8 = 32;
const DASH: u8 = 64;
const OTHER: u8 = 128;

static CLASS: [u8; 256] = {
    let mut table = [OTHER; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = if b.is_ascii_alphabetic() || b >= 0x80 {
            ALPHA
        } else if b.is_ascii_digit() {
            DIGIT
        } else {
            match b {
                b'@' => AT,
                b':' => COLON,
                b'=' => EQ,
                b'.' => DOT,
                b'-' => DASH,
                b' ' | b'\t' | b'\n' | b'\r' | b'"' | b'\'' | b',' | b';' | b'(' | b')' | b'['
                | b']' | b'{' | b'}' | b'<' | b'>' | b'|' | b'`' | b'\\' => SEP,
                0..=0x1f | 0x7f => SEP,
                _ => OTHER,
            }
        };
        i += 1;
    }
    table
};

fn is_alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

fn is_sep(b: u8) -> bool {
    CLASS[b as usize] == SEP
}

/// Runs the enabled detectors over a text.
pub(crate) struct Scanner<'a> {
    pub(crate) enabled: [bool; Detector::COUNT],
    pub(crate) keys: &'a KeyMatcher,
}

impl Scanner<'_> {
    fn on(&self, detector: Detector) -> bool {
        self.enabled[detector as usize]
    }

    /// A conservative one-pass check: `false` means no enabled detector can match anywhere in `text`, so the
    /// scan is skipped. Most attribute values (`GET`, `200`, `/api/v1/orders`, ids) are rejected here at about
    /// a table lookup per byte.
    pub(crate) fn could_match(&self, text: &str) -> bool {
        let b = text.as_bytes();
        // Any `@`, `=` or `:` sends the text to the scan; memchr finds the first one with SIMD, so long texts
        // that have one (most log lines) are answered at once.
        // Short values (most attributes) skip it: the call costs more than the counting pass below.
        if b.len() >= 64 && memchr::memchr3(b'@', b'=', b':', b).is_some() {
            return true;
        }
        // One branch-free pass: counts, and which kinds of bytes that need a closer look occur at all.
        let (mut digits, mut dots, mut colons, mut seen) = (0usize, 0usize, 0usize, 0u8);
        for &c in b {
            let t = TRIGGER[usize::from(c)];
            digits += usize::from(t == T_DIGIT);
            dots += usize::from(t == T_DOT);
            colons += usize::from(t == T_COLON);
            seen |= SEEN[usize::from(t)];
        }
        if seen & S_AT_EQ != 0
            || colons >= 1
            || digits >= 12
            || (dots >= 3 && digits >= 4)
            || (self.on(Detector::Phone) && digits >= 7)
            || (self.on(Detector::Iban) && digits >= 2 && b.len() >= 15)
        {
            return true;
        }
        // Private keys.
        if seen & S_DASH != 0 {
            let mut run = 0;
            for &c in b {
                run = if c == b'-' { run + 1 } else { 0 };
                if run == 5 {
                    return true;
                }
            }
        }
        // `Bearer x` / `Basic x`: a space after such a word.
        if seen & S_SPACE != 0
            && b.len() >= 6
            && b.iter().enumerate().any(|(i, &c)| {
                c == b' '
                    && ((i >= 6 && b[i - 6..i].eq_ignore_ascii_case(b"bearer"))
                        || (i >= 5 && b[i - 5..i].eq_ignore_ascii_case(b"basic")))
            })
        {
            return true;
        }
        // A key or token shape starting at a token start or after a delimiter.
        seen & S_KEY_START != 0
            && b.len() >= 15
            && (0..=b.len() - 15).any(|i| {
                TRIGGER[usize::from(b[i])] == T_KEY_START
                    && (i == 0 || is_sep(b[i - 1]) || matches!(b[i - 1], b'/' | b'?' | b'&'))
                    && key_prefix(&b[i..])
            })
    }

    /// Appends every match in `text` to `hits`, in order and without overlaps.
    pub(crate) fn scan(&self, text: &str, hits: &mut Vec<Hit>) {
        let b = text.as_bytes();
        let n = b.len();
        let first = hits.len();
        let mut i = 0;
        while i < n {
            if is_sep(b[i]) {
                i += 1;
                continue;
            }
            let s = i;
            let mut flags = 0u8;
            while i < n {
                let class = CLASS[b[i] as usize];
                if class == SEP {
                    break;
                }
                flags |= class;
                i += 1;
            }
            // Most tokens are short words that can only matter as the key of a pair: skip them unless a `:`
            // or `=` follows.
            let len = i - s;
            if flags == ALPHA && len < 16 && len != 5 && len != 6 && !separator_follows(b, i) {
                continue;
            }
            let resume = self.token(text, s, i, flags, hits);
            i = i.max(resume);
        }
        resolve_overlaps(&mut hits[first..]);
        let mut keep = first;
        for k in first..hits.len() {
            if hits[k].end > hits[k].start {
                hits[keep] = hits[k];
                keep += 1;
            }
        }
        hits.truncate(keep);
    }

    /// Looks at one token `s..e`; returns where scanning resumes (past a match that ran beyond the token).
    fn token(&self, text: &str, s: usize, e: usize, flags: u8, hits: &mut Vec<Hit>) -> usize {
        let b = text.as_bytes();
        let len = e - s;
        let mut resume = e;
        let mut push = |hit: Hit, resume: &mut usize| {
            *resume = (*resume).max(hit.end);
            hits.push(hit);
        };
        // A key followed (after an optional closing quote and spaces) by `:` or `=`: `"password": "x"`,
        // `password = x`, `password: x`.
        if self.on(Detector::SecretPair)
            && separator_follows(b, e)
            && let Some(hit) = self.pair_after(b, s, e, e)
        {
            push(hit, &mut resume);
        }
        if flags & !ALPHA == 0 {
            // Letters only: the common case.
            if self.on(Detector::AuthHeader)
                && (len == 5 || len == 6)
                && let Some(hit) = auth_scheme(b, s, e)
            {
                push(hit, &mut resume);
            }
            if len >= 20
                && self.on(Detector::ApiKey)
                && let Some(hit) = api_key_at(b, s)
            {
                push(hit, &mut resume);
            }
            return resume;
        }
        if flags & AT != 0 {
            self.at_signs(b, s, e, flags, &mut |hit| push(hit, &mut resume));
        }
        if flags & (EQ | COLON) != 0 && self.on(Detector::SecretPair) {
            for j in s..e {
                if b[j] == b'=' || (b[j] == b':' && !b[j + 1..].starts_with(b"//")) {
                    let mut key_start = j;
                    while key_start > s && !matches!(b[key_start - 1], b'?' | b'&' | b'/' | b'=') {
                        key_start -= 1;
                    }
                    if let Some(hit) = self.pair_after(b, key_start, j, j) {
                        push(hit, &mut resume);
                    }
                }
            }
        }
        if flags & COLON != 0 && self.on(Detector::Ipv6) {
            ipv6_in(b, s, e, &mut |hit| push(hit, &mut resume));
        }
        if flags & DIGIT != 0 {
            if self.on(Detector::Iban)
                && len >= 4
                && let Some(hit) = iban_at(b, s)
            {
                push(hit, &mut resume);
            }
            let mut j = s;
            while j < e {
                let starts_run = b[j].is_ascii_digit() && (j == s || !is_alnum(b[j - 1]));
                if !starts_run {
                    j += 1;
                    continue;
                }
                let previous = if j > 0 { b[j - 1] } else { b' ' };
                let mut next = j + 1;
                // A card's first group has at least four digits, and a number shorter than 13 digits must
                // continue after a space or dash; an IPv4 address starts with 1–3 digits and a dot.
                let mut digits = j;
                while digits < e && b[digits].is_ascii_digit() {
                    digits += 1;
                }
                let group = digits - j;
                let card_shaped = group >= 13
                    || (group >= 4
                        && digits + 1 < b.len()
                        && matches!(b[digits], b' ' | b'-')
                        && b[digits + 1].is_ascii_digit());
                let ipv4_shaped = group <= 3 && digits < e && b[digits] == b'.';
                if self.on(Detector::Phone)
                    && let Some(hit) = phone_at(b, j)
                {
                    next = next.max(hit.end);
                    push(hit, &mut resume);
                } else if card_shaped
                    && self.on(Detector::PaymentCard)
                    && let Some(hit) = card_at(b, j)
                {
                    next = next.max(hit.end);
                    push(hit, &mut resume);
                } else if ipv4_shaped
                    && self.on(Detector::Ipv4)
                    && previous != b'.'
                    && let Some(hit) = ipv4_at(b, j)
                {
                    next = next.max(hit.end);
                    push(hit, &mut resume);
                }
                j = next.max(digits);
            }
        }
        if len >= 16 {
            // Keys and tokens start the token or follow a delimiter inside it (`key=AKIA…`, `/hooks/xoxb-…`).
            let mut j = s;
            while j < e {
                let starts = j == s || matches!(b[j - 1], b'=' | b':' | b'/' | b'?' | b'&');
                if starts && e - j >= 16 {
                    if self.on(Detector::Jwt)
                        && let Some(hit) = jwt_at(b, j)
                    {
                        j = hit.end;
                        push(hit, &mut resume);
                        continue;
                    }
                    if self.on(Detector::ApiKey)
                        && let Some(hit) = api_key_at(b, j)
                    {
                        j = hit.end;
                        push(hit, &mut resume);
                        continue;
                    }
                }
                j += 1;
            }
        }
        if flags & DASH != 0
            && self.on(Detector::PrivateKey)
            && b[s..].starts_with(b"-----BEGIN")
            && let Some(hit) = private_key_at(text, s)
        {
            push(hit, &mut resume);
        }
        resume
    }

    /// If `key_s..key_e` is a sensitive key and `sep_from` starts (after an optional closing quote and spaces)
    /// with `:` or `=`, the value that follows.
    fn pair_after(&self, b: &[u8], key_s: usize, key_e: usize, sep_from: usize) -> Option<Hit> {
        let n = b.len();
        let mut p = sep_from;
        if p < n && (b[p] == b'"' || b[p] == b'\'') && p == key_e {
            p += 1;
        }
        let mut spaces = 0;
        while p < n && b[p] == b' ' && spaces < 4 {
            p += 1;
            spaces += 1;
        }
        if p >= n || (b[p] != b':' && b[p] != b'=') {
            return None;
        }
        let key = &b[key_s..key_e];
        if key.is_empty() || !self.keys.is_sensitive_bytes(key) {
            return None;
        }
        p += 1;
        while p < n && b[p] == b' ' {
            p += 1;
        }
        let (start, end) = value_span(b, p)?;
        Some(Hit {
            start,
            end: extend_scheme(b, start, end),
            detector: Detector::SecretPair,
        })
    }

    fn at_signs(&self, b: &[u8], s: usize, e: usize, flags: u8, push: &mut dyn FnMut(Hit)) {
        let mut credentials_at = None;
        if flags & COLON != 0
            && self.on(Detector::UrlCredentials)
            && let Some(scheme) = find(&b[s..e], b"://")
        {
            let authority = s + scheme + 3;
            let authority_end = b[authority..e]
                .iter()
                .position(|&c| c == b'/' || c == b'?' || c == b'#')
                .map_or(e, |p| authority + p);
            if let Some(at) = b[authority..authority_end]
                .iter()
                .rposition(|&c| c == b'@')
                .map(|p| authority + p)
            {
                // `user@host` in a URL is not an e-mail address; a password after `user:` is a credential.
                credentials_at = Some(at);
                if let Some(colon) = b[authority..at].iter().position(|&c| c == b':') {
                    let password = authority + colon + 1;
                    if password < at {
                        push(Hit {
                            start: password,
                            end: at,
                            detector: Detector::UrlCredentials,
                        });
                    }
                }
            }
        }
        if !self.on(Detector::Email) {
            return;
        }
        for j in s..e {
            if b[j] != b'@' || Some(j) == credentials_at {
                continue;
            }
            if let Some(hit) = email_at(b, s, e, j) {
                push(hit);
            }
        }
    }
}

const T_NONE: u8 = 0;
const T_DIGIT: u8 = 1;
const T_DOT: u8 = 2;
const T_COLON: u8 = 3;
const T_AT_EQ: u8 = 4;
const T_DASH: u8 = 5;
const T_SPACE: u8 = 6;
const T_KEY_START: u8 = 7;

const S_AT_EQ: u8 = 1;
const S_DASH: u8 = 2;
const S_SPACE: u8 = 4;
const S_KEY_START: u8 = 8;

/// Which byte kinds need a closer look, by `TRIGGER` class.
static SEEN: [u8; 8] = [0, 0, 0, 0, S_AT_EQ, S_DASH, S_SPACE, S_KEY_START];

/// What each byte can mean to [`Scanner::could_match`].
static TRIGGER: [u8; 256] = {
    let mut table = [T_NONE; 256];
    let mut i = b'0';
    while i <= b'9' {
        table[i as usize] = T_DIGIT;
        i += 1;
    }
    table[b'.' as usize] = T_DOT;
    table[b':' as usize] = T_COLON;
    table[b'@' as usize] = T_AT_EQ;
    table[b'=' as usize] = T_AT_EQ;
    table[b'-' as usize] = T_DASH;
    table[b' ' as usize] = T_SPACE;
    table[b'A' as usize] = T_KEY_START;
    table[b'g' as usize] = T_KEY_START;
    table[b'x' as usize] = T_KEY_START;
    table[b's' as usize] = T_KEY_START;
    table[b'r' as usize] = T_KEY_START;
    table[b'e' as usize] = T_KEY_START;
    table
};

/// Whether `b` starts like an API key or a JWT (`AKIA`, `AIza`, `gh?_`, `github_pat_`, `glpat-`, `xox?-`,
/// `sk_`, `sk-`, `rk_`, `eyJ`).
fn key_prefix(b: &[u8]) -> bool {
    matches!(
        b,
        [b'A', b'K' | b'S' | b'B' | b'C' | b'I', ..]
            | [b'g', b'h' | b'l', ..]
            | [b'x', b'o', b'x', ..]
            | [b's' | b'r', b'k', b'_' | b'-', ..]
            | [b'e', b'y', b'J', ..]
    )
}

/// Whether `:` or `=` follows position `p`, after an optional closing quote and up to four spaces.
#[inline(always)]
fn separator_follows(b: &[u8], mut p: usize) -> bool {
    if p < b.len() && (b[p] == b'"' || b[p] == b'\'') {
        p += 1;
    }
    let mut spaces = 0;
    while p < b.len() && b[p] == b' ' && spaces < 4 {
        p += 1;
        spaces += 1;
    }
    p < b.len() && (b[p] == b':' || b[p] == b'=')
}

/// Keeps the earliest (then longest) of overlapping hits.
fn resolve_overlaps(hits: &mut [Hit]) {
    hits.sort_unstable_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
    let mut covered = 0;
    for hit in hits.iter_mut() {
        if hit.start < covered {
            // Overlaps an earlier hit: trim it to what is left, or empty it.
            hit.start = covered.min(hit.end);
        }
        covered = covered.max(hit.end);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A value after `key:`/`key=`: a quoted string up to its closing quote, or up to a separator, `&` or `,`.
fn value_span(b: &[u8], p: usize) -> Option<(usize, usize)> {
    let n = b.len();
    if p >= n {
        return None;
    }
    if b[p] == b'"' || b[p] == b'\'' {
        let quote = b[p];
        let mut q = p + 1;
        while q < n && b[q] != quote && b[q] != b'\n' {
            q += if b[q] == b'\\' { 2 } else { 1 };
        }
        let q = q.min(n);
        return (q > p + 1).then_some((p + 1, q));
    }
    if matches!(b[p], b'{' | b'[') {
        return None;
    }
    let mut q = p;
    while q < n && !is_sep(b[q]) && b[q] != b'&' {
        q += 1;
    }
    (q > p).then_some((p, q))
}

/// `Bearer abc…` as the value of `Authorization`: the credential belongs to the value.
fn extend_scheme(b: &[u8], start: usize, end: usize) -> usize {
    let word = &b[start..end];
    let scheme = [
        &b"bearer"[..],
        b"basic",
        b"digest",
        b"token",
        b"apikey",
        b"negotiate",
    ]
    .iter()
    .any(|s| word.eq_ignore_ascii_case(s));
    if !scheme || end + 1 >= b.len() || b[end] != b' ' {
        return end;
    }
    let mut q = end + 1;
    while q < b.len() && !is_sep(b[q]) {
        q += 1;
    }
    q
}

/// `Bearer <token>` / `Basic <base64 of user:password>`.
fn auth_scheme(b: &[u8], s: usize, e: usize) -> Option<Hit> {
    let word = &b[s..e];
    let bearer = word.eq_ignore_ascii_case(b"bearer");
    if !bearer && !word.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    if e >= b.len() || b[e] != b' ' {
        return None;
    }
    let start = e + 1;
    let mut end = start;
    while end < b.len()
        && (is_alnum(b[end]) || matches!(b[end], b'.' | b'_' | b'~' | b'+' | b'/' | b'=' | b'-'))
    {
        end += 1;
    }
    let credential = &b[start..end];
    let ok = if bearer {
        credential.len() >= 16 && credential.iter().any(|c| c.is_ascii_digit())
            || credential.len() >= 24
    } else {
        credential.len() >= 8
            && credential.len().is_multiple_of(4)
            && base64_decodes_to_pair(credential)
    };
    ok.then_some(Hit {
        start,
        end,
        detector: Detector::AuthHeader,
    })
}

/// Whether standard base64 `text` decodes to something with a `:` (a Basic credential is `user:password`).
fn base64_decodes_to_pair(text: &[u8]) -> bool {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    for chunk in text.chunks(4) {
        let mut bits = 0u32;
        let mut count = 0;
        for &c in chunk {
            if c == b'=' {
                break;
            }
            let Some(v) = value(c) else {
                return false;
            };
            bits = bits << 6 | v;
            count += 1;
        }
        let bytes = bits.to_be_bytes();
        let decoded: &[u8] = match count {
            4 => &bytes[1..4],
            3 => &[(bits >> 10) as u8, (bits >> 2) as u8],
            2 => &[(bits >> 4) as u8],
            _ => return false,
        };
        if decoded.contains(&b':') {
            return true;
        }
    }
    false
}

fn email_at(b: &[u8], s: usize, e: usize, at: usize) -> Option<Hit> {
    let local_char = |c: u8| is_alnum(c) || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-');
    let mut start = at;
    while start > s && local_char(b[start - 1]) {
        start -= 1;
    }
    while start < at && b[start] == b'.' {
        start += 1;
    }
    if start == at {
        return None;
    }
    let mut end = at + 1;
    while end < e && (is_alnum(b[end]) || b[end] == b'.' || b[end] == b'-') {
        end += 1;
    }
    while end > at + 1 && matches!(b[end - 1], b'.' | b'-') {
        end -= 1;
    }
    let domain = &b[at + 1..end];
    let dot = domain.iter().rposition(|&c| c == b'.')?;
    let tld = &domain[dot + 1..];
    if dot == 0 || tld.len() < 2 || !tld.iter().all(u8::is_ascii_alphabetic) || !is_alnum(domain[0])
    {
        return None;
    }
    Some(Hit {
        start,
        end,
        detector: Detector::Email,
    })
}

/// Whether the first digits are a payment card issuer's (Visa, Mastercard, Amex, Discover, JCB, Diners,
/// UnionPay, Maestro) and the length is one it issues.
fn card_issuer(digits: &[u8], len: usize) -> bool {
    let prefix = |n: usize| -> u32 {
        digits[..n]
            .iter()
            .fold(0u32, |acc, &d| acc * 10 + u32::from(d))
    };
    match digits[0] {
        4 => matches!(len, 13 | 16 | 19),
        5 => {
            let p2 = prefix(2);
            ((51..=55).contains(&p2) && len == 16) || (matches!(p2, 50 | 56..=59) && len >= 12)
        }
        2 => (2221..=2720).contains(&prefix(4)) && len == 16,
        3 => {
            let p2 = prefix(2);
            let p3 = prefix(3);
            (matches!(p2, 34 | 37) && len == 15)
                || ((3528..=3589).contains(&prefix(4)) && len >= 16)
                || ((300..=305).contains(&p3) || matches!(p2, 36 | 38 | 39))
                    && (14..=19).contains(&len)
        }
        6 => {
            let p2 = prefix(2);
            let p3 = prefix(3);
            (prefix(4) == 6011 || p2 == 65 || (644..=649).contains(&p3) || p2 == 62 || p2 >= 60)
                && len >= 16
        }
        _ => false,
    }
}

fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, &d) in digits.iter().rev().enumerate() {
        let mut d = u32::from(d);
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum.is_multiple_of(10)
}

/// A card number starting at `p`: 13–19 digits, single spaces or dashes allowed between groups.
fn card_at(b: &[u8], p: usize) -> Option<Hit> {
    let mut digits = [0u8; 19];
    let mut count = 0;
    let mut q = p;
    // Every place the number could end (digit count ≥ 12, followed by a non-alphanumeric).
    let mut ends = [(0usize, 0usize); 8];
    let mut candidates = 0;
    while q < b.len() && count < 19 {
        let c = b[q];
        if c.is_ascii_digit() {
            digits[count] = c - b'0';
            count += 1;
            q += 1;
            let at_boundary = q >= b.len() || !(is_alnum(b[q]));
            if count >= 12
                && at_boundary
                && !(q < b.len() && b[q] == b'.' && q + 1 < b.len() && b[q + 1].is_ascii_digit())
            {
                ends[candidates % 8] = (q, count);
                candidates += 1;
            }
        } else if (c == b' ' || c == b'-') && q + 1 < b.len() && b[q + 1].is_ascii_digit() && q > p
        {
            q += 1;
        } else {
            break;
        }
    }
    // The longest valid candidate wins: a trailing group that is not part of the number leaves the shorter one.
    for k in (candidates.saturating_sub(8)..candidates).rev() {
        let (end, count) = ends[k % 8];
        if count >= 13 && card_issuer(&digits[..count], count) && luhn(&digits[..count]) {
            return Some(Hit {
                start: p,
                end,
                detector: Detector::PaymentCard,
            });
        }
    }
    None
}

fn ipv4_at(b: &[u8], p: usize) -> Option<Hit> {
    let mut q = p;
    let mut first = 0;
    let mut any = 0;
    for octet in 0..4 {
        let start = q;
        let mut value = 0u32;
        while q < b.len() && b[q].is_ascii_digit() && q - start < 3 {
            value = value * 10 + u32::from(b[q] - b'0');
            q += 1;
        }
        if q == start || value > 255 || (q < b.len() && b[q].is_ascii_digit()) {
            return None;
        }
        if octet == 0 {
            first = value;
        }
        any |= value;
        if octet < 3 {
            if q >= b.len() || b[q] != b'.' {
                return None;
            }
            q += 1;
        }
    }
    let trailing_dot_digit = q + 1 < b.len() && b[q] == b'.' && b[q + 1].is_ascii_digit();
    // Loopback (`127.x.x.x`) and unspecified (`0.0.0.0`) addresses point at no one: listen addresses stay.
    if (q < b.len() && is_alnum(b[q])) || trailing_dot_digit || first == 127 || any == 0 {
        return None;
    }
    Some(Hit {
        start: p,
        end: q,
        detector: Detector::Ipv4,
    })
}

fn ipv6_in(b: &[u8], s: usize, e: usize, push: &mut dyn FnMut(Hit)) {
    let part = |c: u8| c.is_ascii_hexdigit() || c == b':' || c == b'.';
    let mut k = s;
    while k < e {
        if !part(b[k]) {
            k += 1;
            continue;
        }
        let start = k;
        while k < e && part(b[k]) {
            k += 1;
        }
        let mut end = k;
        while end > start && b[end - 1] == b'.' {
            end -= 1;
        }
        let candidate = &b[start..end];
        let colons = candidate.iter().filter(|&&c| c == b':').count();
        let groups = candidate
            .split(|&c| c == b':')
            .filter(|g| !g.is_empty())
            .count();
        let bounded = (start == s || !(is_alnum(b[start - 1]) || b[start - 1] == b'_'))
            && (k == e || !(is_alnum(b[k]) || b[k] == b'_'));
        if colons >= 2
            && bounded
            && (candidate.iter().any(u8::is_ascii_digit) || groups >= 4)
            && std::str::from_utf8(candidate)
                .ok()
                .and_then(|c| c.parse::<std::net::Ipv6Addr>().ok())
                // Loopback and unspecified addresses (`::1`, `::`) point at no one: listen addresses stay.
                .is_some_and(|ip| !ip.is_loopback() && !ip.is_unspecified())
        {
            push(Hit {
                start,
                end,
                detector: Detector::Ipv6,
            });
        }
    }
}

/// `+44 20 7946 0958`, `+1-415-555-2671`, `(415) 555-2671`, `415-555-2671`.
fn phone_at(b: &[u8], p: usize) -> Option<Hit> {
    let mut start = p;
    let international = p > 0 && b[p - 1] == b'+';
    let parenthesised = p > 0 && b[p - 1] == b'(';
    if international || parenthesised {
        start = p - 1;
    }
    let mut q = p;
    let mut digits = 0;
    let mut separators = 0;
    while q < b.len() {
        let c = b[q];
        if c.is_ascii_digit() {
            digits += 1;
            q += 1;
        } else if matches!(c, b' ' | b'-' | b'.' | b')') && q + 1 < b.len() {
            let after = if c == b')' && b[q + 1] == b' ' {
                q + 2
            } else {
                q + 1
            };
            if after < b.len() && b[after].is_ascii_digit() {
                separators += 1;
                q = after;
            } else {
                break;
            }
        } else {
            break;
        }
    }
    if q < b.len() && is_alnum(b[q]) {
        return None;
    }
    let ok = if international {
        (8..=15).contains(&digits) && separators >= 1
    } else {
        digits == 10 && separators >= 2 && (parenthesised || b[p + 3] == b[p + 7])
    };
    ok.then_some(Hit {
        start,
        end: q,
        detector: Detector::Phone,
    })
}

/// An IBAN at `p`: country code, check digits, 11–30 alphanumerics (groups of four may be space-separated),
/// valid by mod 97.
fn iban_at(b: &[u8], p: usize) -> Option<Hit> {
    if !(b[p].is_ascii_uppercase()
        && b[p + 1].is_ascii_uppercase()
        && b[p + 2].is_ascii_digit()
        && b[p + 3].is_ascii_digit())
    {
        return None;
    }
    let mut chars = [0u8; 34];
    let mut count = 0;
    let mut q = p;
    let mut end = p;
    while q < b.len() && count < 34 {
        let c = b[q];
        if c.is_ascii_digit() || c.is_ascii_uppercase() {
            chars[count] = c;
            count += 1;
            q += 1;
            end = q;
        } else if c == b' ' && count % 4 == 0 && q + 1 < b.len() && is_alnum(b[q + 1]) {
            q += 1;
        } else {
            break;
        }
    }
    if !(15..=34).contains(&count) || (end < b.len() && is_alnum(b[end])) {
        return None;
    }
    // Move the first four characters to the end, letters to 10..35, and take the remainder mod 97.
    let mut remainder = 0u32;
    for &c in chars[4..count].iter().chain(&chars[..4]) {
        let v = if c.is_ascii_digit() {
            u32::from(c - b'0')
        } else {
            u32::from(c - b'A') + 10
        };
        remainder = if v >= 10 {
            (remainder * 100 + v) % 97
        } else {
            (remainder * 10 + v) % 97
        };
    }
    (remainder == 1).then_some(Hit {
        start: p,
        end,
        detector: Detector::Iban,
    })
}

fn base64url_run(b: &[u8], mut q: usize) -> usize {
    while q < b.len() && (is_alnum(b[q]) || b[q] == b'_' || b[q] == b'-') {
        q += 1;
    }
    q
}

/// `eyJ<header>.<payload>.<signature>`.
fn jwt_at(b: &[u8], p: usize) -> Option<Hit> {
    if !b[p..].starts_with(b"eyJ") {
        return None;
    }
    let header_end = base64url_run(b, p);
    if header_end - p < 10 || header_end >= b.len() || b[header_end] != b'.' {
        return None;
    }
    let payload_end = base64url_run(b, header_end + 1);
    if payload_end - header_end < 3 || payload_end >= b.len() || b[payload_end] != b'.' {
        return None;
    }
    let end = base64url_run(b, payload_end + 1);
    Some(Hit {
        start: p,
        end,
        detector: Detector::Jwt,
    })
}

/// Well-known key shapes: prefix, the characters that follow it, and how many at least (exactly, for fixed
/// lengths).
fn api_key_at(b: &[u8], p: usize) -> Option<Hit> {
    type Class = fn(u8) -> bool;
    let upper_digit: Class = |c| c.is_ascii_uppercase() || c.is_ascii_digit();
    let alnum: Class = |c| c.is_ascii_alphanumeric();
    let word: Class = |c| c.is_ascii_alphanumeric() || c == b'_';
    let word_dash: Class = |c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-';
    let alnum_dash: Class = |c| c.is_ascii_alphanumeric() || c == b'-';
    // (prefix, class, minimum, exact length?)
    let shapes: &[(&[u8], Class, usize, bool)] = match b[p] {
        b'A' => &[
            (b"AKIA", upper_digit, 16, true),
            (b"ASIA", upper_digit, 16, true),
            (b"ABIA", upper_digit, 16, true),
            (b"ACCA", upper_digit, 16, true),
            (b"AIza", word_dash, 35, true),
        ],
        b'g' => &[
            (b"ghp_", alnum, 36, false),
            (b"gho_", alnum, 36, false),
            (b"ghu_", alnum, 36, false),
            (b"ghs_", alnum, 36, false),
            (b"ghr_", alnum, 36, false),
            (b"github_pat_", word, 22, false),
            (b"glpat-", word_dash, 20, false),
        ],
        b'x' => &[
            (b"xoxb-", alnum_dash, 10, false),
            (b"xoxp-", alnum_dash, 10, false),
            (b"xoxa-", alnum_dash, 10, false),
            (b"xoxr-", alnum_dash, 10, false),
            (b"xoxs-", alnum_dash, 10, false),
            (b"xoxe-", alnum_dash, 10, false),
        ],
        b's' => &[
            (b"sk_live_", alnum, 16, false),
            (b"sk_test_", alnum, 16, false),
            (b"sk-", word_dash, 32, false),
        ],
        b'r' => &[
            (b"rk_live_", alnum, 16, false),
            (b"rk_test_", alnum, 16, false),
        ],
        b'w' => &[(b"whsec_", alnum, 24, false)],
        _ => return None,
    };
    for &(prefix, class, minimum, exact) in shapes {
        if !b[p..].starts_with(prefix) {
            continue;
        }
        let body = p + prefix.len();
        let mut end = body;
        while end < b.len() && class(b[end]) {
            end += 1;
        }
        let length = end - body;
        let fits = if exact {
            length == minimum
        } else {
            length >= minimum
        };
        if !fits || (end < b.len() && is_alnum(b[end])) {
            continue;
        }
        // `sk-` is also how people abbreviate scikit-learn: a real key mixes cases and digits.
        if prefix == b"sk-" {
            let key = &b[body..end];
            if !(key.iter().any(u8::is_ascii_digit) && key.iter().any(u8::is_ascii_uppercase)) {
                continue;
            }
        }
        return Some(Hit {
            start: p,
            end,
            detector: Detector::ApiKey,
        });
    }
    None
}

/// A PEM private key block, through its END line (or to the end of the text when it was cut).
fn private_key_at(text: &str, p: usize) -> Option<Hit> {
    let rest = &text[p..];
    let header_end = rest[10..].find("-----")? + 10;
    if !rest[..header_end].ends_with("PRIVATE KEY") {
        return None;
    }
    let end = match rest[header_end + 5..].find("-----END") {
        Some(end_line) => {
            let after = header_end + 5 + end_line + 8;
            rest[after..]
                .find("-----")
                .map_or(rest.len(), |close| after + close + 5)
        }
        None => rest.len(),
    };
    Some(Hit {
        start: p,
        end: p + end,
        detector: Detector::PrivateKey,
    })
}
