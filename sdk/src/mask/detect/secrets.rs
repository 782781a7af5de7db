//! Secrets named by their context: `key=value` pairs whose key is sensitive, `Bearer`/`Basic` credentials, and
//! passwords in URLs.

use super::*;

/// Where `://` starts in `token`, if anywhere.
pub(super) fn find_scheme_end(token: &[u8]) -> Option<usize> {
    // Most tokens with an `@` (e-mail addresses) have no `:` at all.
    memchr::memchr_iter(b':', token).find(|&i| token[i + 1..].starts_with(b"//"))
}

/// A value after `key:`/`key=`: a quoted string up to its closing quote, or up to a separator, `&` or `,`.
pub(super) fn value_span(b: &[u8], p: usize) -> Option<(usize, usize)> {
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
    let q = first_in(&VALUE_END, b, p);
    (q > p).then_some((p, q))
}

/// `Bearer abc…` as the value of `Authorization`: the credential belongs to the value.
pub(super) fn extend_scheme(b: &[u8], start: usize, end: usize) -> usize {
    let word = &b[start..end];
    // Sorted by length: most values are no scheme, and are rejected on their length alone.
    let schemes: &[&[u8]] = match word.len() {
        5 => &[b"basic", b"token"],
        6 => &[b"bearer", b"digest", b"apikey"],
        9 => &[b"negotiate"],
        _ => &[],
    };
    let scheme = schemes.iter().any(|s| word.eq_ignore_ascii_case(s));
    if !scheme || end + 1 >= b.len() || b[end] != b' ' {
        return end;
    }
    // The credential may follow after several spaces (HTTP's `1*SP`): a double space must not end the value
    // before it.
    let mut credential = end + 1;
    while credential < b.len() && b[credential] == b' ' {
        credential += 1;
    }
    first_in(&SEPARATOR, b, credential)
}

/// `Bearer <token>` / `Basic <base64 of user:password>`.
pub(super) fn auth_scheme(b: &[u8], s: usize, e: usize) -> Option<Hit> {
    let word = &b[s..e];
    let bearer = word.eq_ignore_ascii_case(b"bearer");
    if !bearer && !word.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    if e >= b.len() || b[e] != b' ' {
        return None;
    }
    // HTTP allows several spaces between the scheme and the credential (`1*SP`): the credential starts after
    // all of them, or a double space would leave it in clear.
    let mut start = e + 1;
    while start < b.len() && b[start] == b' ' {
        start += 1;
    }
    let token = |c: u8| is_alnum(c) || matches!(c, b'.' | b'_' | b'~' | b'+' | b'/' | b'-');
    let mut end = start;
    while end < b.len() && token(b[end]) {
        end += 1;
    }
    // HTTP's token68: `=` only as padding at the end. After one, more of the token is a key and a value
    // (`token_type=Bearer expires_in=86400`), not a credential.
    while end < b.len() && b[end] == b'=' {
        end += 1;
    }
    if end < b.len() && token(b[end]) {
        return None;
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
pub(super) fn base64_decodes_to_pair(text: &[u8]) -> bool {
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
