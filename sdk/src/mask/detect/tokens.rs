//! Credentials recognised by their shape: JSON Web Tokens, well-known API key formats and PEM private keys.

use super::*;

/// Whether `b` starts like an API key or a JWT (`AKIA`, `AIza`, `gh?_`, `github_pat_`, `glpat-`, `xox?-`,
/// `sk_`, `sk-`, `rk_`, `whsec_`, `eyJ`).
pub(super) fn key_prefix(b: &[u8]) -> bool {
    matches!(
        b,
        [b'A', b'K' | b'S' | b'B' | b'C' | b'I', ..]
            | [b'g', b'h' | b'l', ..]
            | [b'g', b'i', b't', b'h', b'u', b'b', b'_', ..]
            | [b'x', b'o', b'x', ..]
            | [b's' | b'r', b'k', b'_' | b'-', ..]
            | [b'e', b'y', b'J', ..]
            | [b'w', b'h', b's', ..]
    )
}

pub(super) fn base64url_run(b: &[u8], mut q: usize) -> usize {
    while q < b.len() && (is_alnum(b[q]) || b[q] == b'_' || b[q] == b'-') {
        q += 1;
    }
    q
}

/// `eyJ<header>.<payload>.<signature>`.
pub(super) fn jwt_at(b: &[u8], p: usize) -> Option<Hit> {
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

pub(super) const KEY_UPPER_DIGIT: u8 = 1;
pub(super) const KEY_ALNUM: u8 = 2;
pub(super) const KEY_WORD: u8 = 4;
pub(super) const KEY_WORD_DASH: u8 = 8;
pub(super) const KEY_ALNUM_DASH: u8 = 16;

/// The key-body classes each byte belongs to.
pub(super) static KEY_BODY: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        let mut classes = 0;
        if c.is_ascii_uppercase() || c.is_ascii_digit() {
            classes |= KEY_UPPER_DIGIT;
        }
        if c.is_ascii_alphanumeric() {
            classes |= KEY_ALNUM | KEY_WORD | KEY_WORD_DASH | KEY_ALNUM_DASH;
        }
        if c == b'_' {
            classes |= KEY_WORD | KEY_WORD_DASH;
        }
        if c == b'-' {
            classes |= KEY_WORD_DASH | KEY_ALNUM_DASH;
        }
        table[i] = classes;
        i += 1;
    }
    table
};

/// Well-known key shapes: prefix, the characters that follow it, and how many at least (exactly, for fixed
/// lengths).
pub(super) fn api_key_at(b: &[u8], p: usize) -> Option<Hit> {
    // Character classes of key bodies, as bits of `KEY_BODY` (a table, not a function per byte).
    let (upper_digit, alnum, word, word_dash, alnum_dash) = (
        KEY_UPPER_DIGIT,
        KEY_ALNUM,
        KEY_WORD,
        KEY_WORD_DASH,
        KEY_ALNUM_DASH,
    );
    // (prefix, class, minimum, exact length?)
    let shapes: &[(&[u8], u8, usize, bool)] = match b[p] {
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
        // Compared byte by byte: `starts_with` on a prefix of unknown length is a `memcmp` call.
        if b.len() - p < prefix.len() || b[p..].iter().zip(prefix).any(|(a, b)| a != b) {
            continue;
        }
        let body = p + prefix.len();
        let mut end = body;
        while end < b.len() && KEY_BODY[usize::from(b[end])] & class != 0 {
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
pub(super) fn private_key_at(b: &[u8], p: usize) -> Option<Hit> {
    use memchr::memmem::find;
    let rest = &b[p..];
    let header_end = find(&rest[10..], b"-----")? + 10;
    if !rest[..header_end].ends_with(b"PRIVATE KEY") {
        return None;
    }
    let end = match find(&rest[header_end + 5..], b"-----END") {
        Some(end_line) => {
            let after = header_end + 5 + end_line + 8;
            find(&rest[after..], b"-----").map_or(rest.len(), |close| after + close + 5)
        }
        None => rest.len(),
    };
    Some(Hit {
        start: p,
        end: p + end,
        detector: Detector::PrivateKey,
    })
}
