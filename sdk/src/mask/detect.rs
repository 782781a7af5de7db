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
use super::classify::{Block, Classifier, Detected, block_at, block_at_with};
use super::keys::{KeyMatcher, KeyVerdicts};

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

/// The longest key looked at in front of a `=` or `:`; longer ones are never sensitive (see `KeyMatcher`).
const MAX_PAIR_KEY: usize = 128;

/// Runs the enabled detectors over a text.
pub(crate) struct Scanner {
    enabled: [bool; Detector::COUNT],
    /// Which kinds of positions the enabled detectors start on (fixed, so not worked out per text).
    starts: Starts,
    pub(crate) keys: KeyMatcher,
    /// No sensitive name is made of hex digits alone, so a key inside an IPv6 address (`2001:db8` in front of
    /// its next colon) is never sensitive: when the address starts a key (nothing but a separator, `?`, `&`, `/`
    /// or `=` before it), its colons are not looked at as `key:value` separators. Each would cost a walk back
    /// over the address and a verdict, five or more per address.
    keyless_addresses: bool,
    /// E-mail addresses are read from the masks where they can be (`EmailMasks`); off only to check that
    /// against walking every token.
    pub(crate) emails_from_masks: bool,
}

/// The tokens one kind of candidate has been handed over in: each token is looked at once, whatever number of
/// `@`s or `:`s it holds.
#[derive(Default)]
struct TokenCursor {
    /// The end of the last token handed out.
    end: usize,
}

impl TokenCursor {
    /// The token (maximal run of non-separators) around `p`, or `None` when `p` is in the token handed out
    /// last. Positions only grow, so each byte is walked over a bounded number of times.
    fn next_token(&mut self, b: &[u8], p: usize) -> Option<(usize, usize)> {
        if p < self.end {
            return None;
        }
        let start = run_start(&SEPARATOR, b, self.end, p);
        let end = first_in(&SEPARATOR, b, p);
        self.end = end;
        Some((start, end))
    }
}

/// The positions of one block worth a look, by the detectors that may start there.
#[derive(Default)]
struct Candidates {
    /// `@`: e-mail addresses and URL credentials in the token.
    at: u64,
    /// `=` and `:`: sensitive `key=value` pairs.
    pairs: u64,
    /// `:`: IPv6 addresses in the token.
    colons: u64,
    /// Digit runs: cards, IPv4 addresses, phone numbers.
    numbers: u64,
    /// Word starts: keys and tokens, `Bearer`/`Basic`, IBANs.
    words: u64,
    /// `--`: private key blocks.
    dashes: u64,
}

/// The masks an e-mail address is read from around an `@` of the block starting at `base`: local-part
/// characters in the block and the one before, domain characters in the block and the one after.
struct EmailMasks {
    base: usize,
    /// Letters, digits, `_`, `-`, `.` (every local-part character but `%` and `+`); bit 0 is byte `base - 64`.
    local: u128,
    /// Letters, digits, `.`, `-`; bit 0 is byte `base`.
    domain: u128,
}

impl EmailMasks {
    fn new(previous: &Block, current: &Block, next: &Block, base: usize) -> EmailMasks {
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
    fn address_at(&self, b: &[u8], at: usize) -> Option<Option<Hit>> {
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
struct KeyMasks {
    base: usize,
    /// Key characters (letters, digits, `_`, `-`).
    words: u128,
    /// Lower-case letters and digits.
    lower: u128,
}

impl Candidates {
    fn is_empty(&self) -> bool {
        self.any() == 0
    }

    /// Every candidate position, of any kind.
    fn any(&self) -> u64 {
        self.at | self.pairs | self.colons | self.numbers | self.words | self.dashes
    }
}

/// The absolute positions of the set bits of `mask`, a block starting at `base`.
fn positions(mask: u64, base: usize) -> Positions {
    Positions { mask, base }
}

/// The iterator of [`positions`].
struct Positions {
    mask: u64,
    base: usize,
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
struct Starts {
    at: bool,
    pairs: bool,
    ipv6: bool,
    card: bool,
    ipv4: bool,
    phone: bool,
    iban: bool,
    keys: bool,
    auth: bool,
    private_key: bool,
}

impl Starts {
    /// Whether [`Starts::candidates`] of `block` with nothing around it may find any position: a cheaper,
    /// looser test, so that the many short clean values packed into a block cost a few instructions instead
    /// of every detector's start condition. Each condition here is implied by the one `candidates` uses.
    #[inline(always)]
    fn may_start_alone(&self, block: &Block) -> bool {
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
    fn candidates(&self, previous: &Block, current: &Block, next: &Block) -> Candidates {
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

impl Scanner {
    pub(crate) fn new(enabled: [bool; Detector::COUNT], keys: KeyMatcher) -> Scanner {
        let on = |detector: Detector| enabled[detector as usize];
        let starts = Starts {
            at: on(Detector::Email) || on(Detector::UrlCredentials),
            pairs: on(Detector::SecretPair),
            ipv6: on(Detector::Ipv6),
            card: on(Detector::PaymentCard),
            ipv4: on(Detector::Ipv4),
            phone: on(Detector::Phone),
            iban: on(Detector::Iban),
            keys: on(Detector::Jwt) || on(Detector::ApiKey),
            auth: on(Detector::AuthHeader),
            private_key: on(Detector::PrivateKey),
        };
        Scanner {
            enabled,
            starts,
            keyless_addresses: !keys.has_hex_name(),
            emails_from_masks: true,
            keys,
        }
    }

    fn on(&self, detector: Detector) -> bool {
        self.enabled[detector as usize]
    }

    /// Appends every match in `text` to `hits`, in order and without overlaps.
    pub(crate) fn scan(&self, text: &[u8], hits: &mut Vec<Hit>) {
        if text.len() <= 64 {
            // A short value (an attribute value, a span name) is one block: most have no candidate at all,
            // which one classification tells.
            let block = block_at(text, 0);
            let none = Block::default();
            if self.starts.candidates(&none, &block, &none).is_empty() {
                return;
            }
            // No `=` or `:`, so no key to judge: the thread's remembered verdicts are not needed.
            if block.eq | block.colon == 0 {
                let verdicts = &mut KeyVerdicts::unremembered(&self.keys);
                return self.scan_with(text, Some(block), hits, verdicts);
            }
        }
        self.keys
            .with_verdicts(|verdicts| self.scan_with(text, None, hits, verdicts));
    }

    /// The positions a detector could start on in `block`, a text of at most 64 bytes with nothing around it:
    /// a text without any has no hit.
    #[inline(always)]
    pub(crate) fn candidates_alone(&self, block: &Block) -> u64 {
        if !self.starts.may_start_alone(block) {
            return 0;
        }
        let none = Block::default();
        self.starts.candidates(&none, block, &none).any()
    }

    /// [`Scanner::candidates_alone`] without its quick test first.
    #[cfg(test)]
    pub(crate) fn candidates_alone_in_full(&self, block: &Block) -> u64 {
        let none = Block::default();
        self.starts.candidates(&none, block, &none).any()
    }

    /// [`Scanner::candidates_alone`] of `chunk`, whose bytes past `used` are zeros, classified here: in the
    /// fast build the classification is inlined, not returned through memory from a call.
    pub(crate) fn candidates_in_chunk(&self, chunk: &[u8; 64], used: usize) -> u64 {
        #[cfg(target_arch = "x86_64")]
        {
            if super::classify::has_fast_scan512() {
                // SAFETY: the CPU has every feature `candidates_in_chunk_fast512` is compiled with (checked
                // just now).
                return unsafe { self.candidates_in_chunk_fast512(chunk) };
            }
            if super::classify::has_fast_scan() {
                // SAFETY: the CPU has every feature `candidates_in_chunk_fast` is compiled with (checked just
                // now).
                return unsafe { self.candidates_in_chunk_fast(chunk, used) };
            }
        }
        // SAFETY: `Detected` asks the CPU what it has.
        self.candidates_alone(&unsafe { Detected::classify(chunk, used) })
    }

    /// [`Scanner::candidates_in_chunk`] compiled like [`Scanner::scan_fast`].
    ///
    /// # Safety
    /// The CPU must have those features (`has_fast_scan`).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,bmi1,bmi2,lzcnt,popcnt")]
    unsafe fn candidates_in_chunk_fast(&self, chunk: &[u8; 64], used: usize) -> u64 {
        // SAFETY: the caller's promise covers AVX2.
        self.candidates_alone(&unsafe { super::classify::Avx2::classify(chunk, used) })
    }

    /// [`Scanner::candidates_in_chunk`] compiled like [`Scanner::scan_fast512`].
    ///
    /// # Safety
    /// The CPU must have those features (`has_fast_scan512`).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx2,bmi1,bmi2,lzcnt,popcnt")]
    unsafe fn candidates_in_chunk_fast512(&self, chunk: &[u8; 64]) -> u64 {
        // SAFETY: the caller's promise covers AVX-512 F and BW.
        self.candidates_alone(&unsafe { super::classify::Avx512::classify(chunk, 64) })
    }

    /// The scan proper; `first_block` is the first block's classification when the caller has it already.
    fn scan_with(
        &self,
        b: &[u8],
        first_block: Option<Block>,
        hits: &mut Vec<Hit>,
        verdicts: &mut KeyVerdicts<'_>,
    ) {
        #[cfg(target_arch = "x86_64")]
        {
            if super::classify::has_fast_scan512() {
                // SAFETY: the CPU has every feature `scan_fast512` is compiled with (checked just now).
                return unsafe { self.scan_fast512(b, first_block, hits, verdicts) };
            }
            if super::classify::has_fast_scan() {
                // SAFETY: the CPU has every feature `scan_fast` is compiled with (checked just now).
                return unsafe { self.scan_fast(b, first_block, hits, verdicts) };
            }
        }
        // SAFETY: `Detected` asks the CPU what it has.
        unsafe { self.scan_blocks::<Detected>(b, first_block, hits, verdicts) }
    }

    /// Every match in `text` as the AVX2 build finds it, where the CPU can run that build (else as
    /// [`Scanner::scan`] does): to check it against the others on CPUs that take the AVX-512 build.
    #[cfg(all(test, target_arch = "x86_64"))]
    pub(crate) fn scan_avx2(&self, text: &[u8], hits: &mut Vec<Hit>) {
        if !super::classify::has_fast_scan() {
            return self.scan(text, hits);
        }
        self.keys.with_verdicts(|verdicts| {
            // SAFETY: the CPU has every feature `scan_fast` is compiled with (checked just now).
            unsafe { self.scan_fast(text, None, hits, verdicts) }
        })
    }

    /// Every match in `text` as the baseline build finds it, classified with SSE2 only: what a CPU without
    /// AVX2 runs, checked against the fast build on CPUs that have it.
    #[cfg(all(test, target_arch = "x86_64", target_feature = "sse2"))]
    pub(crate) fn scan_baseline(&self, text: &[u8], hits: &mut Vec<Hit>) {
        self.keys.with_verdicts(|verdicts| {
            // SAFETY: the whole target has SSE2.
            unsafe { self.scan_blocks::<super::classify::Sse2>(text, None, hits, verdicts) }
        })
    }

    /// [`Scanner::scan_blocks`] compiled for CPUs with AVX2 and the bit-manipulation instructions.
    ///
    /// # Safety
    /// The CPU must have those features (`has_fast_scan`).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,bmi1,bmi2,lzcnt,popcnt")]
    unsafe fn scan_fast(
        &self,
        b: &[u8],
        first_block: Option<Block>,
        hits: &mut Vec<Hit>,
        verdicts: &mut KeyVerdicts<'_>,
    ) {
        // SAFETY: the caller's promise covers AVX2.
        unsafe { self.scan_blocks::<super::classify::Avx2>(b, first_block, hits, verdicts) }
    }

    /// [`Scanner::scan_blocks`] compiled for CPUs with AVX-512 (F and BW) as well.
    ///
    /// # Safety
    /// The CPU must have those features (`has_fast_scan512`).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx2,bmi1,bmi2,lzcnt,popcnt")]
    unsafe fn scan_fast512(
        &self,
        b: &[u8],
        first_block: Option<Block>,
        hits: &mut Vec<Hit>,
        verdicts: &mut KeyVerdicts<'_>,
    ) {
        // SAFETY: the caller's promise covers AVX-512 F and BW.
        unsafe { self.scan_blocks::<super::classify::Avx512>(b, first_block, hits, verdicts) }
    }

    /// The left-to-right pass over the blocks of `b`, classified by `C`.
    ///
    /// # Safety
    /// The CPU must have the instructions `C` uses.
    #[inline(always)]
    unsafe fn scan_blocks<C: Classifier>(
        &self,
        b: &[u8],
        first_block: Option<Block>,
        hits: &mut Vec<Hit>,
        verdicts: &mut KeyVerdicts<'_>,
    ) {
        let first = hits.len();
        let starts = &self.starts;
        let mut at_tokens = TokenCursor::default();
        // The end of the last run of hex digits, colons and dots looked at for an IPv6 address.
        let mut colons_done = 0;
        // The last IPv6 address found whose colons cannot separate a sensitive key from its value.
        let mut keyless_address = Hit {
            start: 0,
            end: 0,
            detector: Detector::Ipv6,
        };
        // The end of the furthest number hit: digit runs inside a card number are not numbers of their own.
        let mut numbers_covered = 0;
        // The secret value found furthest into the text before the current block.
        let mut last_pair = Hit {
            start: 0,
            end: 0,
            detector: Detector::SecretPair,
        };
        let mut previous = Block::default();
        // SAFETY (both classifications): passed on from the caller.
        let mut current = first_block.unwrap_or_else(|| unsafe { block_at_with::<C>(b, 0) });
        let mut base = 0;
        while base < b.len() {
            let next = unsafe { block_at_with::<C>(b, base + 64) };
            let candidates = starts.candidates(&previous, &current, &next);
            let block_first = hits.len();
            // One loop per kind: each loop's branches are predictable, and hits are put in order at the end.
            let masks = KeyMasks {
                base,
                words: u128::from(previous.word) | u128::from(current.word) << 64,
                lower: u128::from(previous.alnum & !previous.upper)
                    | u128::from(current.alnum & !current.upper) << 64,
            };
            let digits = u128::from(current.digit) | u128::from(next.digit) << 64;
            // Addresses before pairs: the colons of an address are no `key:value` separators (see
            // `keyless_addresses`), and are not looked at again as such.
            for j in positions(candidates.colons, base) {
                if j >= colons_done {
                    let (hit, run_end) = ipv6_around(b, j);
                    colons_done = run_end;
                    if let Some(hit) = hit {
                        hits.push(hit);
                        if self.keyless_addresses && (hit.start == 0 || ends_key(b[hit.start - 1]))
                        {
                            keyless_address = hit;
                        }
                    }
                }
            }
            let pairs_first = hits.len();
            let address_here = keyless_address.end > base;
            for j in positions(candidates.pairs, base) {
                // Only colons after the address's first byte: a key cut from the address ends at them. The
                // first may separate a key before the address from a value that starts with `::`.
                if address_here && keyless_address.start < j && j < keyless_address.end {
                    continue;
                }
                if let Some(hit) = self.pair_at(b, j, &masks, verdicts) {
                    hits.push(hit);
                }
            }
            let pairs_end = hits.len();
            for p in positions(candidates.numbers, base) {
                if p >= numbers_covered
                    && let Some(hit) = self.number_at(b, p, digits, base)
                {
                    numbers_covered = hit.end;
                    hits.push(hit);
                }
            }
            if candidates.at != 0 {
                let email = EmailMasks::new(&previous, &current, &next, base);
                for p in positions(candidates.at, base) {
                    if p < at_tokens.end {
                        continue;
                    }
                    if self.emails_from_masks
                        && self.on(Detector::Email)
                        && let Some(hit) = email.address_at(b, p)
                    {
                        hits.extend(hit);
                        continue;
                    }
                    if let Some((s, e)) = at_tokens.next_token(b, p) {
                        self.at_signs(b, s, p, e, hits);
                    }
                }
            }
            for p in positions(candidates.words, base) {
                // A key, token or credential inside a secret value already found is masked with it (such a
                // hit ends where the value does, at a separator): not walked again. An IBAN is still looked
                // for: its groups are separated by spaces, so it runs on past a value that ends at one.
                let in_value = |hit: &Hit| hit.start <= p && p < hit.end;
                let inside =
                    in_value(&last_pair) || hits[pairs_first..pairs_end].iter().any(in_value);
                self.word_at(b, p, inside, hits);
            }
            if let Some(furthest) = hits[pairs_first..pairs_end]
                .iter()
                .max_by_key(|hit| hit.end)
            {
                last_pair = *furthest;
            }
            for p in positions(candidates.dashes, base) {
                if b[p..].starts_with(b"-----BEGIN")
                    && let Some(hit) = private_key_at(b, p)
                {
                    hits.push(hit);
                }
            }
            // Each block's hits in order (a few, found kind by kind), so the whole list is nearly sorted and
            // the final sort has little left to do.
            hits[block_first..].sort_unstable_by_key(|hit| (hit.start, std::cmp::Reverse(hit.end)));
            previous = current;
            current = next;
            base += 64;
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

    /// A card number, an IPv4 address or a phone number starting with the digit run at `p`. `digits` holds the
    /// digit masks of `p`'s block (low half), which starts at `base`, and of the next one.
    #[inline(always)]
    fn number_at(&self, b: &[u8], p: usize, digits: u128, base: usize) -> Option<Hit> {
        let previous = if p > 0 { b[p - 1] } else { b' ' };
        // A card's first group has at least four digits, and a number shorter than 13 digits must continue
        // after a space or dash; an IPv4 address starts with 1–3 digits and a dot.
        let run = (digits >> (p - base)).trailing_ones() as usize;
        let mut digits = p + run;
        if run == 128 - (p - base) {
            // The run goes on past the masks.
            while digits < b.len() && b[digits].is_ascii_digit() {
                digits += 1;
            }
        }
        let group = digits - p;
        let card_shaped = group >= 13
            || (group >= 4
                && digits + 1 < b.len()
                && matches!(b[digits], b' ' | b'-')
                && b[digits + 1].is_ascii_digit());
        let ipv4_shaped = group <= 3 && digits < b.len() && b[digits] == b'.';
        if self.on(Detector::Phone)
            && let Some(hit) = phone_at(b, p)
        {
            return Some(hit);
        }
        // Every issuer starts with 2 to 6 (`card_issuer`): ids and invoice numbers starting otherwise are not walked.
        if card_shaped && matches!(b[p], b'2'..=b'6') && self.on(Detector::PaymentCard) {
            return card_at(b, p);
        }
        if ipv4_shaped && self.on(Detector::Ipv4) && previous != b'.' {
            return ipv4_at(b, p);
        }
        None
    }

    /// Keys and tokens, `Bearer`/`Basic` credentials and IBANs starting at the word at `p`; only IBANs when
    /// the word is `in_value`, inside a secret value already found.
    #[inline(always)]
    fn word_at(&self, b: &[u8], p: usize, in_value: bool, hits: &mut Vec<Hit>) {
        let before = if p > 0 { b[p - 1] } else { b' ' };
        let token_start = is_sep(before);
        // Keys and tokens start a token or follow a delimiter inside it (`key=AKIA…`, `/hooks/xoxb-…`).
        if !in_value
            && (token_start || matches!(before, b'=' | b':' | b'/' | b'?' | b'&'))
            && key_prefix(&b[p..])
        {
            if self.on(Detector::Jwt)
                && let Some(hit) = jwt_at(b, p)
            {
                hits.push(hit);
            } else if self.on(Detector::ApiKey)
                && let Some(hit) = api_key_at(b, p)
            {
                hits.push(hit);
            }
        }
        if !token_start {
            return;
        }
        if !in_value && self.on(Detector::AuthHeader) && b[p] | 0x20 == b'b' {
            let end = (p + 6).min(b.len());
            let word_end = b[p..end]
                .iter()
                .position(|&c| !c.is_ascii_alphabetic())
                .map_or(end, |len| p + len);
            if let Some(hit) = auth_scheme(b, p, word_end) {
                hits.push(hit);
            }
        }
        if self.on(Detector::Iban)
            && p + 4 <= b.len()
            && let Some(hit) = iban_at(b, p)
        {
            hits.push(hit);
        }
    }

    /// A sensitive `key=value` or `key: value` around the `=` or `:` at `j`. `words` holds the key-character
    /// masks of the block before `j`'s block (low half) and of `j`'s block (high half), which starts at `base`.
    #[inline(always)]
    fn pair_at(
        &self,
        b: &[u8],
        j: usize,
        masks: &KeyMasks,
        verdicts: &mut KeyVerdicts<'_>,
    ) -> Option<Hit> {
        let (base, words) = (masks.base, masks.words);
        if j == 0 {
            return None;
        }
        if is_sep(b[j - 1]) {
            return self.spaced_pair_at(b, j, verdicts);
        }
        // Inside a token: the key runs back to the token start or to a `?`, `&`, `/` or `=` (query strings,
        // paths). `https://` is a scheme, not a key.
        if b[j] == b':' && b[j + 1..].starts_with(b"//") {
            return None;
        }
        // Most keys are one run of key characters after a separator: found from the masks, and their verdict
        // remembered, with no walk over the key.
        let gaps = !words & ((1u128 << (j - base + 64)) - 1);
        if gaps != 0 {
            let key_start = base + (128 - gaps.leading_zeros() as usize) - 64;
            if key_start == 0 || ends_key(b[key_start - 1]) {
                // A key of one word (`status`, `Authorization`: letters and digits, upper case first only)
                // is sensitive only if it is a name word: a table lookup on its first two bytes and length.
                let rest =
                    || ((1u128 << (j - base + 64)) - 1) & !((1u128 << (key_start + 65 - base)) - 1);
                if j - key_start >= 2
                    && b[key_start].is_ascii_alphanumeric()
                    && masks.lower & rest() == rest()
                    && !self
                        .keys
                        .may_be_word(b[key_start], b[key_start + 1], j - key_start)
                {
                    return None;
                }
                return self.pair_after(b, key_start, j, j, verdicts);
            }
        }
        let key_start = run_start(&KEY_END, b, j.saturating_sub(MAX_PAIR_KEY + 1), j);
        self.pair_after(b, key_start, j, j, verdicts)
    }

    /// `password = x`, `"password": x`: the whole token before an optional closing quote and up to four spaces.
    fn spaced_pair_at(&self, b: &[u8], j: usize, verdicts: &mut KeyVerdicts<'_>) -> Option<Hit> {
        let mut key_end = j;
        while key_end > 0 && b[key_end - 1] == b' ' && j - key_end < 4 {
            key_end -= 1;
        }
        if key_end > 0 && matches!(b[key_end - 1], b'"' | b'\'') {
            key_end -= 1;
        }
        if key_end == 0 || is_sep(b[key_end - 1]) {
            return None;
        }
        let key_start = run_start(
            &SEPARATOR,
            b,
            key_end.saturating_sub(MAX_PAIR_KEY + 1),
            key_end,
        );
        self.pair_after(b, key_start, key_end, key_end, verdicts)
    }

    /// If `key_s..key_e` is a sensitive key and `sep_from` starts (after an optional closing quote and spaces)
    /// with `:` or `=`, the value that follows.
    #[inline(always)]
    fn pair_after(
        &self,
        b: &[u8],
        key_s: usize,
        key_e: usize,
        sep_from: usize,
        verdicts: &mut KeyVerdicts<'_>,
    ) -> Option<Hit> {
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
        if key.is_empty() || !verdicts.is_sensitive(b, key_s, key_e) {
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

    /// E-mail addresses and URL credentials in the token `s..e`, whose `@`s before `first_at` were read from the
    /// masks.
    fn at_signs(&self, b: &[u8], s: usize, first_at: usize, e: usize, hits: &mut Vec<Hit>) {
        let mut credentials_at = None;
        if self.on(Detector::UrlCredentials)
            && let Some(scheme) = find_scheme_end(&b[s..e])
        {
            let authority = s + scheme + 3;
            // The authority runs to `/`, `?` or `#`; its last `@` ends the credentials.
            let authority_end = memchr::memchr3(b'/', b'?', b'#', &b[authority..e])
                .map_or(e, |end| authority + end);
            if let Some(at) =
                memchr::memrchr(b'@', &b[authority..authority_end]).map(|at| authority + at)
            {
                // `user@host` in a URL is not an e-mail address; a password after `user:` is a credential.
                credentials_at = Some(at);
                if let Some(colon) = b[authority..at].iter().position(|&c| c == b':') {
                    let password = authority + colon + 1;
                    if password < at {
                        hits.push(Hit {
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
        // From the first `@` not read from the masks: those before it were (see `EmailMasks::address_at`).
        for j in memchr::memchr_iter(b'@', &b[first_at..e]).map(|j| first_at + j) {
            if Some(j) == credentials_at {
                continue;
            }
            if let Some(hit) = email_at(b, s, e, j) {
                hits.push(hit);
            }
        }
    }
}

/// Where `://` starts in `token`, if anywhere.
fn find_scheme_end(token: &[u8]) -> Option<usize> {
    // Most tokens with an `@` (e-mail addresses) have no `:` at all.
    memchr::memchr_iter(b':', token).find(|&i| token[i + 1..].starts_with(b"//"))
}

/// Whether `b` starts like an API key or a JWT (`AKIA`, `AIza`, `gh?_`, `github_pat_`, `glpat-`, `xox?-`,
/// `sk_`, `sk-`, `rk_`, `whsec_`, `eyJ`).
fn key_prefix(b: &[u8]) -> bool {
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
    let q = first_in(&VALUE_END, b, p);
    (q > p).then_some((p, q))
}

/// `Bearer abc…` as the value of `Authorization`: the credential belongs to the value.
fn extend_scheme(b: &[u8], start: usize, end: usize) -> usize {
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
    first_in(&SEPARATOR, b, end + 1)
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
    let local_start = run_start(&NOT_LOCAL_PART, b, s, at);
    let domain_end = first_in(&NOT_DOMAIN, &b[..e], at + 1);
    email_between(b, local_start, at, domain_end)
}

/// The e-mail address made of the local-part run `local_start..at` and the domain run `at + 1..domain_end`,
/// once dots at its ends are trimmed, if its domain has a dot and a top-level domain of two letters or more.
#[inline(always)]
fn email_between(b: &[u8], mut start: usize, at: usize, mut end: usize) -> Option<Hit> {
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

/// The IPv6 address in the run of hex digits, colons and dots around the `:` at `j`, and where that run ends.
// Kept out of the scan loop: it runs before the pairs loop, and inlined there it cost clean text 3 %.
#[inline(never)]
fn ipv6_around(b: &[u8], j: usize) -> (Option<Hit>, usize) {
    let start = run_start(&NOT_IPV6, b, 0, j);
    let k = first_in(&NOT_IPV6, b, j);
    let mut end = k;
    while end > start && b[end - 1] == b'.' {
        end -= 1;
    }
    let word = |c: u8| is_alnum(c) || c == b'_';
    // Most runs are parts of longer words (`T10:30:00`, `profile:12345`): rejected before any counting.
    if (start > 0 && word(b[start - 1])) || (k < b.len() && word(b[k])) {
        return (None, k);
    }
    let candidate = &b[start..end];
    // A run of a few hex words (`be:ef::ad`) is an address only with a digit or four groups.
    let address = ipv6_groups(candidate).is_some_and(|(groups, written)| {
        (written >= 4 || candidate.iter().any(u8::is_ascii_digit))
            // Loopback and unspecified addresses (`::1`, `::`) point at no one: listen addresses stay.
            && (groups[..7] != [0; 7] || groups[7] > 1)
    });
    let hit = address.then_some(Hit {
        start,
        end,
        detector: Detector::Ipv6,
    });
    (hit, k)
}

/// The eight groups of the IPv6 address `text`, and how many groups it writes out (an IPv4 part counts as
/// four), accepting exactly what `std::net::Ipv6Addr`'s parser accepts (hex groups of one to four digits, one
/// `::` standing for at least one zero group, an IPv4 address in the last two groups) without its UTF-8 check,
/// atomic reads and error values: it runs on every address-shaped run in the text.
pub(crate) fn ipv6_groups(text: &[u8]) -> Option<([u16; 8], usize)> {
    // Without a dot there is no IPv4 part to try at each group: one pass over the groups and colons.
    if !text.contains(&b'.') {
        return hex_groups(text);
    }
    dotted_groups(text).map(|groups| (groups, 4))
}

/// [`ipv6_groups`] of an address that may end in an IPv4 part, as the standard library reads it: an IPv4 part
/// is tried at every group.
fn dotted_groups(text: &[u8]) -> Option<[u16; 8]> {
    /// A number in `radix` of one to `max_digits` digits starting at `*at`, moving `*at` past it.
    fn number(
        text: &[u8],
        at: &mut usize,
        radix: u32,
        max_digits: usize,
        zero_prefix: bool,
    ) -> Option<u32> {
        let start = *at;
        let mut value = 0u32;
        while let Some(digit) = text.get(*at).and_then(|&c| char::from(c).to_digit(radix)) {
            value = value * radix + digit;
            *at += 1;
            if *at - start > max_digits {
                return None;
            }
        }
        let digits = *at - start;
        (digits > 0 && (zero_prefix || digits == 1 || text[start] != b'0')).then_some(value)
    }
    /// An IPv4 address starting at `*at` (decimal octets, no leading zeros), moving `*at` past it.
    fn ipv4(text: &[u8], at: &mut usize) -> Option<[u16; 2]> {
        let mut octets = [0u16; 4];
        for (i, octet) in octets.iter_mut().enumerate() {
            if i > 0 {
                (text.get(*at) == Some(&b'.')).then_some(())?;
                *at += 1;
            }
            *octet = number(text, at, 10, 3, false).filter(|&v| v <= 255)? as u16;
        }
        Some([octets[0] << 8 | octets[1], octets[2] << 8 | octets[3]])
    }
    /// Groups separated by `:` into `groups`, from `*at`; how many, and whether the last was an IPv4 address.
    /// A separator and group that do not parse are not consumed.
    fn read_groups(text: &[u8], at: &mut usize, groups: &mut [u16]) -> (usize, bool) {
        let limit = groups.len();
        for i in 0..limit {
            let mark = *at;
            let separated = |at: &mut usize| {
                if i == 0 {
                    return true;
                }
                let colon = text.get(*at) == Some(&b':');
                *at += usize::from(colon);
                colon
            };
            if i + 1 < limit {
                if separated(at)
                    && let Some([high, low]) = ipv4(text, at)
                {
                    groups[i] = high;
                    groups[i + 1] = low;
                    return (i + 2, true);
                }
                *at = mark;
            }
            match separated(at)
                .then(|| number(text, at, 16, 4, true))
                .flatten()
            {
                Some(group) => groups[i] = group as u16,
                None => {
                    *at = mark;
                    return (i, false);
                }
            }
        }
        (limit, false)
    }
    let mut at = 0;
    let mut head = [0u16; 8];
    let (head_size, head_ipv4) = read_groups(text, &mut at, &mut head);
    if head_size == 8 {
        return (at == text.len()).then_some(head);
    }
    if head_ipv4 || !text[at..].starts_with(b"::") {
        return None;
    }
    at += 2;
    // `::` stands for at least one zero group.
    let mut tail = [0u16; 7];
    let limit = 8 - (head_size + 1);
    let (tail_size, _) = read_groups(text, &mut at, &mut tail[..limit]);
    if at != text.len() {
        return None;
    }
    head[8 - tail_size..].copy_from_slice(&tail[..tail_size]);
    Some(head)
}

/// [`ipv6_groups`] of an address without an IPv4 part: hex groups of one to four digits between single
/// colons, eight of them, or at most seven with one `::` among them.
fn hex_groups(text: &[u8]) -> Option<([u16; 8], usize)> {
    let mut groups = [0u16; 8];
    let (mut count, mut gap, mut at) = (0, None, 0);
    if text.starts_with(b"::") {
        gap = Some(0);
        at = 2;
    }
    while at < text.len() {
        let start = at;
        let mut value = 0u32;
        while let Some(digit) = text.get(at).and_then(|&c| char::from(c).to_digit(16)) {
            value = value << 4 | digit;
            at += 1;
        }
        if !(1..=4).contains(&(at - start)) || count == 8 {
            return None;
        }
        groups[count] = value as u16;
        count += 1;
        if at == text.len() {
            break;
        }
        if text[at] != b':' || at + 1 == text.len() {
            // Not a colon, or a single colon at the end.
            return None;
        }
        at += 1;
        if text[at] == b':' {
            if gap.is_some() {
                return None;
            }
            gap = Some(count);
            at += 1;
        }
    }
    match gap {
        None => (count == 8).then_some((groups, count)),
        Some(gap) if count <= 7 => {
            // The groups after `::` go to the end.
            let tail = count - gap;
            groups.copy_within(gap..count, 8 - tail);
            groups[gap..8 - tail].fill(0);
            Some((groups, count))
        }
        Some(_) => None,
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

const KEY_UPPER_DIGIT: u8 = 1;
const KEY_ALNUM: u8 = 2;
const KEY_WORD: u8 = 4;
const KEY_WORD_DASH: u8 = 8;
const KEY_ALNUM_DASH: u8 = 16;

/// The key-body classes each byte belongs to.
static KEY_BODY: [u8; 256] = {
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
fn api_key_at(b: &[u8], p: usize) -> Option<Hit> {
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
fn private_key_at(b: &[u8], p: usize) -> Option<Hit> {
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
