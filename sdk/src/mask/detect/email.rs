//! E-mail addresses around an `@`.

use super::*;

pub(super) fn email_at(b: &[u8], s: usize, e: usize, at: usize) -> Option<Hit> {
    let local_start = run_start(&NOT_LOCAL_PART, b, s, at);
    let domain_end = first_in(&NOT_DOMAIN, &b[..e], at + 1);
    email_between(b, local_start, at, domain_end)
}

/// The e-mail address made of the local-part run `local_start..at` and the domain run `at + 1..domain_end`,
/// once dots at its ends are trimmed, if its domain has a dot and a top-level domain of two letters or more.
#[inline(always)]
pub(super) fn email_between(b: &[u8], mut start: usize, at: usize, mut end: usize) -> Option<Hit> {
    while start < at && b[start] == b'.' {
        start += 1;
    }
    if start == at {
        return None;
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
