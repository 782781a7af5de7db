//! Numbers that identify people or accounts: payment cards (issuer prefix and Luhn), phone numbers and IBANs
//! (mod 97).

use super::*;

/// Whether the first digits are a payment card issuer's (Visa, Mastercard, Amex, Discover, JCB, Diners,
/// UnionPay, Maestro) and the length is one it issues.
pub(super) fn card_issuer(digits: &[u8], len: usize) -> bool {
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

pub(super) fn luhn(digits: &[u8]) -> bool {
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
pub(super) fn card_at(b: &[u8], p: usize) -> Option<Hit> {
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

/// `+44 20 7946 0958`, `+1-415-555-2671`, `(415) 555-2671`, `415-555-2671`.
pub(super) fn phone_at(b: &[u8], p: usize) -> Option<Hit> {
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
pub(super) fn iban_at(b: &[u8], p: usize) -> Option<Hit> {
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
