//! The scanner: one left-to-right pass that classifies 64-byte blocks and looks only where a detector could
//! start, handing each candidate to its detector family.

use super::*;

/// The longest key looked at in front of a `=` or `:`; longer ones are never sensitive (see `KeyMatcher`).
pub(super) const MAX_PAIR_KEY: usize = 128;

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
pub(super) struct TokenCursor {
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
            if crate::mask::classify::has_fast_scan512() {
                // SAFETY: the CPU has every feature `candidates_in_chunk_fast512` is compiled with (checked
                // just now).
                return unsafe { self.candidates_in_chunk_fast512(chunk) };
            }
            if crate::mask::classify::has_fast_scan() {
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
        self.candidates_alone(&unsafe { crate::mask::classify::Avx2::classify(chunk, used) })
    }

    /// [`Scanner::candidates_in_chunk`] compiled like [`Scanner::scan_fast512`].
    ///
    /// # Safety
    /// The CPU must have those features (`has_fast_scan512`).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx2,bmi1,bmi2,lzcnt,popcnt")]
    unsafe fn candidates_in_chunk_fast512(&self, chunk: &[u8; 64]) -> u64 {
        // SAFETY: the caller's promise covers AVX-512 F and BW.
        self.candidates_alone(&unsafe { crate::mask::classify::Avx512::classify(chunk, 64) })
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
            if crate::mask::classify::has_fast_scan512() {
                // SAFETY: the CPU has every feature `scan_fast512` is compiled with (checked just now).
                return unsafe { self.scan_fast512(b, first_block, hits, verdicts) };
            }
            if crate::mask::classify::has_fast_scan() {
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
        if !crate::mask::classify::has_fast_scan() {
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
            unsafe { self.scan_blocks::<crate::mask::classify::Sse2>(text, None, hits, verdicts) }
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
        unsafe { self.scan_blocks::<crate::mask::classify::Avx2>(b, first_block, hits, verdicts) }
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
        unsafe { self.scan_blocks::<crate::mask::classify::Avx512>(b, first_block, hits, verdicts) }
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

    /// Keys and tokens, `Bearer`/`Basic` credentials and IBANs starting at the word at `p`; no keys or tokens
    /// when the word is `in_value`, inside a secret value already found.
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
        // A credential or an IBAN may also be the value of any key (`auth=Bearer …`, `iban=DE89…`): its own
        // shape names it.
        let value_start = token_start || matches!(before, b'=' | b':');
        // Also inside a secret value (`password=abc:Bearer …`): the credential starts after the scheme's space,
        // where the value has ended.
        if value_start && self.on(Detector::AuthHeader) && b[p] | 0x20 == b'b' {
            let end = (p + 6).min(b.len());
            let word_end = b[p..end]
                .iter()
                .position(|&c| !c.is_ascii_alphabetic())
                .map_or(end, |len| p + len);
            if let Some(hit) = auth_scheme(b, p, word_end) {
                hits.push(hit);
            }
        }
        if value_start
            && self.on(Detector::Iban)
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
