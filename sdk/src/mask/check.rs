//! Whether any of many short values may change, found by classifying them together.
//!
//! Most values are short (attribute values, span names) and clean, and classifying each on its own costs more
//! than looking at its candidates. So values are packed into one 64-byte block, each followed by a zero byte,
//! and the block is classified once. A zero byte is in no class, and every detector's start condition looks at
//! most one byte back for what must *not* be there (and further only for what must be there: the digits after
//! a card's first digit, the second colon of an IPv6 address), so each value's candidate positions in the
//! block include all it has when alone (patterns reaching across a zero byte may add some, never remove any). Only a value
//! that holds a candidate in the block is then scanned on its own.

use super::Masker;

/// The most values a block holds: each takes at least two bytes.
const MAX_VALUES: usize = 32;

/// Answers "may masking change any of these values?" ([`Masker::may_change`] over all of them) for a caller
/// that hands values over one at a time and only needs the overall answer, such as a receiver checking a
/// request while it validates it. Values may be looked at later than they are added; [`ChangeCheck::finish`]
/// gives the answer for everything added.
pub struct ChangeCheck<'m> {
    masker: &'m Masker,
    block: [u8; 64],
    /// Bytes of `block` in use, separators included.
    used: usize,
    /// Where each packed value lies in `block`.
    values: [(u8, u8); MAX_VALUES],
    count: usize,
    changes: bool,
}

impl<'m> ChangeCheck<'m> {
    /// An empty check against `masker`.
    pub fn new(masker: &'m Masker) -> Self {
        ChangeCheck {
            masker,
            block: [0; 64],
            used: 0,
            values: [(0, 0); MAX_VALUES],
            count: 0,
            changes: !masker.inner.rules.is_empty(),
        }
    }

    /// Adds `value` (text, as bytes). Returns `true` once some value added so far is known to change; `false`
    /// means only "not known yet".
    #[inline]
    pub fn add(&mut self, value: &[u8]) -> bool {
        if self.changes || value.is_empty() {
            return self.changes;
        }
        if value.len() >= 64 {
            self.changes = self.masker.may_change(value);
            return self.changes;
        }
        if self.used + value.len() > 64 {
            self.look();
            if self.changes {
                return true;
            }
        }
        let start = self.used;
        copy_short(value, &mut self.block[start..start + value.len()]);
        self.values[self.count] = (start as u8, (start + value.len()) as u8);
        self.count += 1;
        // The separator is the zero byte after the value (or the end of the block).
        self.used = start + value.len() + 1;
        false
    }

    /// Whether masking may change any value added since the check was made or last finished; the check is then
    /// empty again.
    pub fn finish(&mut self) -> bool {
        self.look();
        let changes = self.changes;
        self.changes = !self.masker.inner.rules.is_empty();
        changes
    }

    /// Classifies the packed values and scans those with candidates; empties the block.
    fn look(&mut self) {
        if self.count == 0 {
            return;
        }
        let used = self.used.min(64);
        let candidates = self
            .masker
            .inner
            .scanner
            .candidates_in_chunk(&self.block, used);
        if candidates != 0 {
            for &(start, end) in &self.values[..self.count] {
                let (start, end) = (usize::from(start), usize::from(end));
                let span = (u64::MAX >> (64 - (end - start))) << start;
                if candidates & span != 0 && self.masker.may_change(&self.block[start..end]) {
                    self.changes = true;
                    break;
                }
            }
        }
        // The whole block, a fixed size: a few vector stores rather than a call to `memset`.
        self.block = [0; 64];
        self.used = 0;
        self.count = 0;
    }
}

/// `to.copy_from_slice(from)` for values shorter than 64 bytes, as at most two overlapping fixed-size copies
/// instead of a call to `memcpy`: nearly every value is that short, and the call costs more than the copy.
#[inline(always)]
fn copy_short(from: &[u8], to: &mut [u8]) {
    #[inline(always)]
    fn halves<const N: usize>(from: &[u8], to: &mut [u8]) {
        let tail = from.len() - N;
        let (head_bytes, tail_bytes): ([u8; N], [u8; N]) = (
            from[..N].try_into().expect("N bytes"),
            from[tail..].try_into().expect("N bytes"),
        );
        to[..N].copy_from_slice(&head_bytes);
        to[tail..].copy_from_slice(&tail_bytes);
    }
    match from.len() {
        32.. => halves::<32>(from, to),
        16..32 => halves::<16>(from, to),
        8..16 => halves::<8>(from, to),
        4..8 => halves::<4>(from, to),
        _ => to.copy_from_slice(from),
    }
}

#[cfg(test)]
mod tests {
    use super::ChangeCheck;
    use crate::mask::{MaskConfig, Masker};

    fn default_masker() -> Masker {
        Masker::new(&MaskConfig::default()).unwrap()
    }

    #[test]
    fn a_secret_is_found_among_clean_values_wherever_it_is_packed() {
        let masker = default_masker();
        let clean = [
            "GET /api/v1/items/7",
            "value-1-2-abcdefgh",
            "ok",
            "2026-11-23T02:00:00Z",
            "a",
            "1.2",
            "user_agent",
        ];
        let secrets = [
            "bob@example.com",
            "4111 1111 1111 1111",
            "10.1.2.3",
            "password=hunter2",
            "Bearer abcdef0123456789abcdef",
            "ghp_0123456789abcdefghijABCDEFGHIJ012345",
            "fe80::1:2",
            "-----BEGIN PRIVATE KEY-----",
        ];
        for secret in secrets {
            assert!(masker.may_change(secret.as_bytes()), "{secret} alone");
            for position in 0..=clean.len() {
                let mut check = ChangeCheck::new(&masker);
                for (i, value) in clean.iter().enumerate() {
                    if i == position {
                        check.add(secret.as_bytes());
                    }
                    check.add(value.as_bytes());
                }
                if position == clean.len() {
                    check.add(secret.as_bytes());
                }
                assert!(check.finish(), "{secret} at {position}");
            }
        }
        let mut check = ChangeCheck::new(&masker);
        for _ in 0..50 {
            for value in clean {
                assert!(!check.add(value.as_bytes()));
            }
        }
        assert!(!check.finish(), "clean values packed together stay clean");
    }

    #[test]
    fn short_copies_copy_every_length_exactly() {
        let source: Vec<u8> = (1..=64).collect();
        for len in 0..64 {
            let mut to = [0u8; 64];
            super::copy_short(&source[..len], &mut to[..len]);
            assert_eq!(&to[..len], &source[..len], "{len} bytes");
            assert!(
                to[len..].iter().all(|&byte| byte == 0),
                "{len} bytes: nothing past the end"
            );
        }
    }

    #[test]
    fn finish_starts_over_and_long_values_are_checked_alone() {
        let masker = default_masker();
        let mut check = ChangeCheck::new(&masker);
        check.add(b"mail bob@example.com");
        assert!(check.finish());
        check.add(b"nothing here");
        assert!(!check.finish(), "the previous answer does not carry over");
        let long = format!("{} token=abcdef123456", "x".repeat(80));
        assert!(
            check.add(long.as_bytes()),
            "a long value is answered at once"
        );
        assert!(check.finish());
    }

    #[test]
    fn with_user_rules_every_value_may_change() {
        let mut config = MaskConfig::default();
        config.rules.push(crate::mask::RuleConfig {
            name: "ticket".into(),
            pattern: r"T-\d+".into(),
            action: None,
        });
        let masker = Masker::new(&config).unwrap();
        let mut check = ChangeCheck::new(&masker);
        assert!(check.add(b"anything"));
        assert!(check.finish());
        assert!(check.finish(), "rules need the text itself, every time");
    }
}
