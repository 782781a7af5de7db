//! Where detectors could start in one 64-byte block: shifts and `and`s of the block's byte-class masks
//! ([`crate::mask::classify`]) that leave the few positions worth looking at.

use super::*;

/// The positions of one block worth a look, by the detectors that may start there.
#[derive(Default)]
pub(super) struct Candidates {
    /// `@`: e-mail addresses and URL credentials in the token.
    pub(super) at: u64,
    /// `=` and `:`: sensitive `key=value` pairs.
    pub(super) pairs: u64,
    /// `:`: IPv6 addresses in the token.
    pub(super) colons: u64,
    /// Digit runs: cards, IPv4 addresses, phone numbers.
    pub(super) numbers: u64,
    /// Word starts: keys and tokens, `Bearer`/`Basic`, IBANs.
    pub(super) words: u64,
    /// `--`: private key blocks.
    pub(super) dashes: u64,
}

/// The masks an e-mail address is read from around an `@` of the block starting at `base`: local-part
/// characters in the block and the one before, domain characters in the block and the one after.
pub(super) struct EmailMasks {
    pub(super) base: usize,
    /// Letters, digits, `_`, `-`, `.` (every local-part character but `%` and `+`); bit 0 is byte `base - 64`.
    pub(super) local: u128,
    /// Letters, digits, `.`, `-`; bit 0 is byte `base`.
    pub(super) domain: u128,
}

impl EmailMasks {
    pub(super) fn new(previous: &Block, current: &Block, next: &Block, base: usize) -> EmailMasks {
        let local = |block: &Block| u128::from(block.word | block.dot);
        let domain = |block: &Block| u128::from(block.alnum | block.dot | block.dash);
        EmailMasks {
            base,
            local: local(previous) | local(current) << 64,
            domain: domain(current) | domain(next) << 64,
        }
    }

    /// The e-mail address around the `@` at `at`, read from the masks: `Some(None)` when there is none,
    /// `None` when the masks cannot tell and the token must be walked (`Scanner::at_signs`). They tell when the
    /// local part starts the token (a separator or the text's start before it; so no `scheme://` in front
    /// makes the `@` a URL's) and both parts end inside the masks. `email_at` gives the same answer then.
    #[inline(always)]
    pub(super) fn address_at(&self, b: &[u8], at: usize) -> Option<Option<Hit>> {
        let below = (1u128 << (at + 64 - self.base)) - 1;
        let gaps = !self.local & below;
        if gaps == 0 {
            return None;
        }
        let start = self.base + (127 - gaps.leading_zeros() as usize) + 1 - 64;
        if start > 0 && !is_sep(b[start - 1]) {
            return None;
        }
        let above = !((2u128 << (at - self.base)) - 1);
        let stops = !self.domain & above;
        if stops == 0 {
            return None;
        }
        let end = self.base + stops.trailing_zeros() as usize;
        Some(email_between(b, start, at, end))
    }
}

/// What a `key=value` check reads from the masks of the block holding the separator (which starts at `base`)
/// and of the block before it: low half the block before, high half the separator's block.
pub(super) struct KeyMasks {
    pub(super) base: usize,
    /// Key characters (letters, digits, `_`, `-`).
    pub(super) words: u128,
    /// Lower-case letters and digits.
    pub(super) lower: u128,
}

impl Candidates {
    pub(super) fn is_empty(&self) -> bool {
        self.any() == 0
    }

    /// Every candidate position, of any kind.
    pub(super) fn any(&self) -> u64 {
        self.at | self.pairs | self.colons | self.numbers | self.words | self.dashes
    }
}

/// The absolute positions of the set bits of `mask`, a block starting at `base`.
pub(super) fn positions(mask: u64, base: usize) -> Positions {
    Positions { mask, base }
}

/// The iterator of [`positions`].
pub(super) struct Positions {
    pub(super) mask: u64,
    pub(super) base: usize,
}

impl Iterator for Positions {
    type Item = usize;

    #[inline(always)]
    fn next(&mut self) -> Option<usize> {
        if self.mask == 0 {
            return None;
        }
        let p = self.base + self.mask.trailing_zeros() as usize;
        self.mask &= self.mask - 1;
        Some(p)
    }
}

/// Which kinds of positions the enabled detectors start on.
pub(super) struct Starts {
    pub(super) at: bool,
    pub(super) pairs: bool,
    pub(super) ipv6: bool,
    pub(super) card: bool,
    pub(super) ipv4: bool,
    pub(super) phone: bool,
    pub(super) iban: bool,
    pub(super) keys: bool,
    pub(super) auth: bool,
    pub(super) private_key: bool,
}

impl Starts {
    /// Whether [`Starts::candidates`] of `block` with nothing around it may find any position: a cheaper,
    /// looser test, so that the many short clean values packed into a block cost a few instructions instead
    /// of every detector's start condition. Each condition here is implied by the one `candidates` uses.
    #[inline(always)]
    pub(super) fn may_start_alone(&self, block: &Block) -> bool {
        let word_starts = block.word & !(block.word << 1);
        let mut any = 0;
        if self.at {
            any |= block.at;
        }
        if self.pairs || self.ipv6 {
            any |= block.eq | block.colon;
        }
        if self.phone || self.iban {
            // A number starts at any digit, an IBAN at any letter that starts a word.
            any |= block.digit | word_starts;
        }
        if self.card {
            // Four digits in a row.
            let two = block.digit & block.digit >> 1;
            any |= two & two >> 2;
        }
        if self.ipv4 {
            // A dot with a digit after it.
            any |= block.dot & block.digit >> 1;
        }
        if self.keys {
            any |= word_starts & block.key_first;
        }
        if self.auth {
            any |= word_starts & block.letter_b;
        }
        if self.private_key {
            any |= block.dash & block.dash >> 1;
        }
        any != 0
    }

    /// The positions of `current` worth a look, from the masks of the blocks around it.
    #[inline(always)]
    pub(super) fn candidates(&self, previous: &Block, current: &Block, next: &Block) -> Candidates {
        // Bit i of `behind` describes byte i - 1, bit i of `ahead(.., k)` byte i + k.
        let behind = |now: u64, before: u64| (now << 1) | (before >> 63);
        let ahead = |now: u64, after: u64, k: u32| (now >> k) | (after << (64 - k));
        let mut out = Candidates::default();
        if self.at {
            out.at = current.at;
        }
        if self.pairs {
            out.pairs = current.eq | current.colon;
        }
        if self.ipv6 {
            // An address has two colons at most five bytes apart (a group is at most four hex digits), and
            // the first of them starts the look at its run: `key: value` and `host:port` are not looked at.
            let (colon, next_colon) = (current.colon, next.colon);
            out.colons = colon
                & (ahead(colon, next_colon, 1)
                    | ahead(colon, next_colon, 2)
                    | ahead(colon, next_colon, 3)
                    | ahead(colon, next_colon, 4)
                    | ahead(colon, next_colon, 5));
        }
        if current.digit != 0 {
            let (digit, next_digit) = (current.digit, next.digit);
            let run_starts = digit & !behind(current.alnum, previous.alnum);
            if self.phone {
                out.numbers |= run_starts;
            }
            if self.card {
                // A card starts with 2 to 6 (`card_issuer`), and its first group has at least four digits.
                out.numbers |= run_starts
                    & current.card_first
                    & ahead(digit, next_digit, 1)
                    & ahead(digit, next_digit, 2)
                    & ahead(digit, next_digit, 3);
            }
            if self.ipv4 {
                // An address starts with one to three digits and a dot, not right after a dot, and two
                // dot-digit pairs follow within a few bytes (`12.5` and `0.2345` are not looked at).
                let (dot, next_dot) = (current.dot, next.dot);
                let dot_digit = dot & ahead(digit, next_digit, 1);
                let next_dot_digit = next_dot & (next_digit >> 1);
                let second = dot_digit
                    & (ahead(dot_digit, next_dot_digit, 2)
                        | ahead(dot_digit, next_dot_digit, 3)
                        | ahead(dot_digit, next_dot_digit, 4));
                let next_second = next_dot_digit
                    & (next_dot_digit >> 2 | next_dot_digit >> 3 | next_dot_digit >> 4);
                out.numbers |= run_starts
                    & !behind(dot, previous.dot)
                    & (ahead(second, next_second, 1)
                        | ahead(second, next_second, 2)
                        | ahead(second, next_second, 3));
            }
        }
        let word_starts = current.word & !behind(current.word, previous.word);
        if self.keys {
            // Ten key characters in a row from here: the shortest JWT header; every key shape is longer.
            let word = u128::from(current.word) | u128::from(next.word) << 64;
            let two = word & word >> 1;
            let four = two & two >> 2;
            let ten = four & four >> 4 & two >> 8;
            out.words |= word_starts & current.key_first & ten as u64;
        }
        if self.auth {
            out.words |= word_starts & current.letter_b;
        }
        if self.iban {
            out.words |= word_starts & current.alnum & !current.digit;
        }
        if self.private_key {
            out.dashes = current.dash
                & !behind(current.dash, previous.dash)
                & ahead(current.dash, next.dash, 1);
        }
        out
    }
}
