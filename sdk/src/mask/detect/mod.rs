//! The built-in detectors: one left-to-right pass over the text.
//!
//! Why not a regex per detector: each detector starts on something rare — an `@` for e-mail, `=` or `:` for
//! pairs and IPv6, a run of four digits (or one to three digits and a dot) for cards and IPv4, a word of ten or
//! more key characters for keys and tokens. The text is classified 64 bytes at a time into bit masks
//! ([`super::classify`]); shifts and `and`s of those masks leave the few positions where a detector could
//! start, and only those are looked at. Plain words and numbers — almost all of a log line — are never looked
//! at one by one. Checks that regexes cannot do cheaply (Luhn, issuer prefixes, IPv6 grammar, Basic
//! credentials that decode to `user:password`, IBAN mod-97) keep ids, timestamps and version numbers intact.

use super::Detector;
use super::keys::{KeyMatcher, KeyVerdicts};
use crate::mask::classify::{Block, Classifier, Detected, block_at, block_at_with};

mod candidates;
mod email;
mod ip;
mod numbers;
mod scanner;
mod secrets;
mod tokens;

use candidates::*;
use email::*;
#[cfg(test)]
pub(crate) use ip::ipv6_groups;
use ip::*;
use numbers::*;
pub(crate) use scanner::Scanner;
use secrets::*;
use tokens::*;

/// A match: bytes `start..end` of the text, found by `detector`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Hit {
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) detector: Detector,
}

/// Bytes that end a token: white space, quotes, brackets, and other punctuation that never belongs to an
/// address, a key or a number.
static SEPARATOR: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = matches!(
            b,
            b' ' | b'\t'
                | b'\n'
                | b'\r'
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
                | 0..=0x1f | 0x7f
        );
        i += 1;
    }
    table
};

fn is_alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

fn is_sep(b: u8) -> bool {
    SEPARATOR[usize::from(b)]
}

/// Whether a key inside a token starts after `b`: a separator, or the `?`, `&`, `/`, `=` of a query string or
/// path.
fn ends_key(b: u8) -> bool {
    KEY_END[usize::from(b)]
}

/// [`ends_key`] as a table.
static KEY_END: [bool; 256] = {
    let mut table = SEPARATOR;
    table[b'?' as usize] = true;
    table[b'&' as usize] = true;
    table[b'/' as usize] = true;
    table[b'=' as usize] = true;
    table
};

/// A walk's stop table: every byte but ASCII letters and digits (only hex digits with `hex_only`) and the
/// bytes of `also`.
const fn all_but(hex_only: bool, also: &[u8]) -> [bool; 256] {
    let mut table = [true; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        table[i] = !(if hex_only {
            c.is_ascii_hexdigit()
        } else {
            c.is_ascii_alphanumeric()
        });
        i += 1;
    }
    let mut k = 0;
    while k < also.len() {
        table[also[k] as usize] = false;
        k += 1;
    }
    table
}

/// Bytes that end an e-mail address's local part going back from its `@`.
static NOT_LOCAL_PART: [bool; 256] = all_but(false, b"._%+-");

/// Bytes that end an e-mail address's domain.
static NOT_DOMAIN: [bool; 256] = all_but(false, b".-");

/// Bytes that are no part of an IPv6 address.
static NOT_IPV6: [bool; 256] = all_but(true, b":.");

/// Where a value after `key=` ends: a separator or the `&` of a query string.
static VALUE_END: [bool; 256] = {
    let mut table = SEPARATOR;
    table[b'&' as usize] = true;
    table
};

/// The first position at or after `from` whose byte is in `stop`, or the end of `b`. Tokens, values and
/// credentials run for tens to hundreds of bytes: eight bytes are looked up per step, with one branch.
#[inline]
fn first_in(stop: &[bool; 256], b: &[u8], mut from: usize) -> usize {
    while let Some(chunk) = b.get(from..from + 8) {
        if chunk
            .iter()
            .fold(false, |any, &c| any | stop[usize::from(c)])
        {
            break;
        }
        from += 8;
    }
    while from < b.len() && !stop[usize::from(b[from])] {
        from += 1;
    }
    from
}

/// The start of the run of bytes not in `stop` that ends at `to`, going back no further than `floor`.
#[inline]
fn run_start(stop: &[bool; 256], b: &[u8], floor: usize, mut to: usize) -> usize {
    while to >= floor + 8 {
        if b[to - 8..to]
            .iter()
            .fold(false, |any, &c| any | stop[usize::from(c)])
        {
            break;
        }
        to -= 8;
    }
    while to > floor && !stop[usize::from(b[to - 1])] {
        to -= 1;
    }
    to
}

/// Keeps the earliest (then longest) of overlapping hits; of hits with the same span, the one whose detector
/// comes first in [`tie_rank`].
fn resolve_overlaps(hits: &mut [Hit]) {
    // A stable sort: it finds the runs already in order and merges them.
    hits.sort_by_key(|hit| {
        (
            hit.start,
            std::cmp::Reverse(hit.end),
            tie_rank(hit.detector),
        )
    });
    let mut covered = 0;
    for hit in hits.iter_mut() {
        if hit.start < covered {
            // Overlaps an earlier hit: trim it to what is left, or empty it.
            hit.start = covered.min(hit.end);
        }
        covered = covered.max(hit.end);
    }
}

/// Which detector keeps a span that two matched alike (`password=2001:db8::1`: the value is an address too).
/// Not the order hits were found in: that depends on where the 64-byte blocks fall, and the replacement, its
/// counter and its hash must not. A secret value names what it holds, as it does the words inside it that are
/// not looked at; a URL's password (`https://u:x@a.com@host`) is not named as the address it looks like.
fn tie_rank(detector: Detector) -> u8 {
    match detector {
        Detector::SecretPair => 0,
        Detector::Ipv6 => 1,
        Detector::Phone => 2,
        Detector::PaymentCard => 3,
        Detector::Ipv4 => 4,
        Detector::UrlCredentials => 5,
        Detector::Email => 6,
        Detector::Jwt => 7,
        Detector::ApiKey => 8,
        Detector::AuthHeader => 9,
        Detector::Iban => 10,
        Detector::PrivateKey => 11,
    }
}
