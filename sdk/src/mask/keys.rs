//! Word-wise, case-insensitive matching of attribute keys against the sensitive-key list.
//!
//! A key is split into words at non-alphanumeric characters and lower-to-upper case changes (`dbPassword` →
//! `db`, `password`); a sensitive name matches when its words appear consecutively (`api_key` in
//! `X-Api-Key`), or when the key with separators removed equals the name with separators removed (`apikey`).
//! Whole words, so `token` does not hit `max_tokens` — an ML user's everyday attribute.

/// The longest key examined; longer keys are not attribute names a person wrote.
const MAX_KEY: usize = 128;
/// The most words a key is split into.
const MAX_WORDS: usize = 24;

/// The compiled sensitive-key list.
#[derive(Debug, Clone)]
pub(crate) struct KeyMatcher {
    /// Unique per compiled list, so a thread's remembered verdicts never outlive the list they came from.
    id: u64,
    /// Each name as its lowercase words.
    names: Vec<Vec<String>>,
    /// Each name lowercased with separators removed.
    compact: Vec<String>,
    /// Every word of every name (at most 254 distinct words).
    words: Vec<String>,
    /// Each name as indices into `words`.
    name_ids: Vec<Vec<u8>>,
    /// For each word index, the names that start with that word.
    names_by_first: Vec<Vec<usize>>,
    /// `words` by hash of their lowercase bytes: `(hash, index + 1)`, open addressing, 0 = empty.
    word_table: Box<[(u64, u8); WORD_TABLE]>,
    /// Bit `min(len, 63)` of `starts[start_index(a, b)]` is set when a name word of `len` characters starts
    /// with `a b` (any case), and likewise for each name of several words with its separators removed. A key
    /// none of whose words has a listed start and length is rejected after a table lookup per word.
    starts: Box<[u64; 1024]>,
    /// Some name word is a single character: any word could be it, so `starts` rejects nothing.
    single_letter_word: bool,
}

/// Keys whose verdicts one thread remembers before starting over.
const CACHED_KEYS: usize = 4096;

/// FNV-1a as a `Hasher`, for short keys (SipHash costs more than the lookup it protects).
#[derive(Default)]
struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut hash = if self.0 == 0 { HASH_START } else { self.0 };
        for &byte in bytes {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = hash;
    }
}

/// One thread's remembered verdicts, for the matcher it last served.
#[derive(Default)]
struct Verdicts {
    matcher: u64,
    verdicts: std::collections::HashMap<Box<[u8]>, bool, std::hash::BuildHasherDefault<Fnv>>,
}

thread_local! {
    static VERDICTS: std::cell::RefCell<Verdicts> = std::cell::RefCell::new(Verdicts::default());
}

/// Slots of the per-thread table of verdicts on short keys found in text (a power of two).
const SHORT_SLOTS: usize = 512;

/// One thread's verdicts on keys of up to 31 bytes found in front of `=` and `:` in text, direct-mapped:
/// a key is its bytes and length packed into two `u128`s, tagged with the matcher that judged it.
struct ShortVerdicts {
    keys: [(u128, u128); SHORT_SLOTS],
    matchers: [u64; SHORT_SLOTS],
    verdicts: [bool; SHORT_SLOTS],
}

thread_local! {
    static SHORT_VERDICTS: std::cell::RefCell<ShortVerdicts> = const {
        std::cell::RefCell::new(ShortVerdicts {
            keys: [(0, 0); SHORT_SLOTS],
            matchers: [0; SHORT_SLOTS],
            verdicts: [false; SHORT_SLOTS],
        })
    };
}

/// Slots of the word hash table (a power of two, well above the number of distinct name words).
const WORD_TABLE: usize = 512;

/// FNV-1a step over a lowercased byte: the word hash is built while the key is split, with no second pass.
#[inline(always)]
fn hash_step(hash: u64, byte: u8) -> u64 {
    (hash ^ u64::from(byte.to_ascii_lowercase())).wrapping_mul(0x0000_0100_0000_01b3)
}

const HASH_START: u64 = 0xcbf2_9ce4_8422_2325;

/// Where a word starting with `a b` is found in `KeyMatcher::starts`: the low five bits of each byte, so
/// upper and lower case share a slot (digits share slots with letters, which only lets more keys through to
/// the exact check).
fn start_index(a: u8, b: u8) -> usize {
    (usize::from(a & 0x1f) << 5) | usize::from(b & 0x1f)
}

fn length_bit(len: usize) -> u64 {
    1 << len.min(63)
}

fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c >= 0x80
}

/// A key split into lowercase words in a stack buffer: no allocation per lookup.
struct Words {
    text: [u8; MAX_KEY],
    /// (start, end) of each word in `text`.
    spans: [(u8, u8); MAX_WORDS],
    count: usize,
    len: usize,
}

impl Words {
    fn split(bytes: &[u8]) -> Option<Words> {
        if bytes.len() > MAX_KEY {
            return None;
        }
        let mut words = Words {
            text: [0; MAX_KEY],
            spans: [(0, 0); MAX_WORDS],
            count: 0,
            len: 0,
        };
        let mut start: Option<usize> = None;
        let mut previous_lower = false;
        for &b in bytes {
            let alnum = b.is_ascii_alphanumeric() || b >= 0x80;
            let boundary = !alnum || (b.is_ascii_uppercase() && previous_lower);
            if boundary && let Some(s) = start.take() {
                words.push(s)?;
            }
            if alnum {
                if start.is_none() {
                    start = Some(words.len);
                }
                words.text[words.len] = b.to_ascii_lowercase();
                words.len += 1;
            }
            previous_lower = b.is_ascii_lowercase() || b.is_ascii_digit();
        }
        if let Some(s) = start {
            words.push(s)?;
        }
        Some(words)
    }

    fn push(&mut self, start: usize) -> Option<()> {
        if self.count == MAX_WORDS {
            return None;
        }
        self.spans[self.count] = (start as u8, self.len as u8);
        self.count += 1;
        Some(())
    }

    fn word(&self, index: usize) -> &[u8] {
        let (s, e) = self.spans[index];
        &self.text[s as usize..e as usize]
    }

    fn compact(&self) -> &[u8] {
        &self.text[..self.len]
    }
}

/// A matcher with its thread's remembered verdicts on short keys, for the length of one scan.
pub(crate) struct KeyVerdicts<'a> {
    matcher: &'a KeyMatcher,
    /// `None` when a scan on this thread already holds the table (masking inside masking): nothing is
    /// remembered then.
    table: Option<std::cell::RefMut<'a, ShortVerdicts>>,
}

impl<'a> KeyVerdicts<'a> {
    /// Verdicts that are worked out and not remembered.
    pub(crate) fn unremembered(matcher: &'a KeyMatcher) -> KeyVerdicts<'a> {
        KeyVerdicts {
            matcher,
            table: None,
        }
    }

    /// [`KeyMatcher::is_sensitive_bytes`] for the key `text[key_start..key_end]`, cut out of text. The keys of a
    /// log format (`method=`, `status=`) repeat on every line, so verdicts on keys of up to 31 bytes are
    /// remembered per thread; a remembered verdict costs a table lookup, not a walk over the key.
    #[inline(always)]
    pub(crate) fn is_sensitive(&mut self, text: &[u8], key_start: usize, key_end: usize) -> bool {
        let len = key_end - key_start;
        if len == 0 || len > 31 {
            return self.matcher.is_sensitive_bytes(&text[key_start..key_end]);
        }
        let key = &text[key_start..key_end];
        let matcher = self.matcher;
        let Some(table) = self.table.as_mut() else {
            return matcher.is_sensitive_bytes(key);
        };
        // The key's last 16 bytes in `low`, the bytes before them in `high`, its length in the top byte of
        // `high`. Read from the 32 bytes that end with the key, straight from the text where it has them (two
        // loads; building the values byte by byte stalls the CPU).
        let mut padded = [0u8; 32];
        let window: &[u8] = match key_end.checked_sub(32) {
            Some(from) => &text[from..key_end],
            None => {
                padded[32 - len..].copy_from_slice(key);
                &padded
            }
        };
        let half = |range: std::ops::Range<usize>| {
            u128::from_le_bytes(window[range].try_into().expect("16 bytes"))
        };
        let (low, high) = if len <= 16 {
            (half(16..32) >> (8 * (16 - len)), 0)
        } else {
            (half(16..32), half(0..16) >> (8 * (32 - len)))
        };
        let high = high | (len as u128) << 120;
        let folded = (low ^ high.rotate_left(29)) as u64 ^ ((low ^ high) >> 64) as u64 ^ matcher.id;
        let slot = (folded.wrapping_mul(0x9e37_79b9_7f4a_7c15)
            >> (64 - SHORT_SLOTS.trailing_zeros())) as usize;
        if table.keys[slot] == (low, high) && table.matchers[slot] == matcher.id {
            return table.verdicts[slot];
        }
        let verdict = matcher.is_sensitive_bytes(key);
        table.keys[slot] = (low, high);
        table.matchers[slot] = matcher.id;
        table.verdicts[slot] = verdict;
        verdict
    }
}

impl KeyMatcher {
    pub(crate) fn new(names: &[String]) -> KeyMatcher {
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let mut matcher = KeyMatcher {
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            names: Vec::new(),
            compact: Vec::new(),
            words: Vec::new(),
            name_ids: Vec::new(),
            names_by_first: Vec::new(),
            word_table: Box::new([(0, 0); WORD_TABLE]),
            starts: Box::new([0; 1024]),
            single_letter_word: false,
        };
        for name in names {
            let Some(words) = Words::split(name.as_bytes()) else {
                continue;
            };
            if words.count == 0 {
                continue;
            }
            matcher.names.push(
                (0..words.count)
                    .map(|i| String::from_utf8_lossy(words.word(i)).into_owned())
                    .collect(),
            );
            matcher
                .compact
                .push(String::from_utf8_lossy(words.compact()).into_owned());
        }
        matcher.words = matcher.names.iter().flatten().cloned().collect();
        matcher.words.sort();
        matcher.words.dedup();
        matcher.words.truncate(usize::from(u8::MAX) - 1);
        for (index, word) in matcher.words.iter().enumerate() {
            let hash = word.bytes().fold(HASH_START, hash_step);
            let mut slot = hash as usize % WORD_TABLE;
            while matcher.word_table[slot].1 != 0 {
                slot = (slot + 1) % WORD_TABLE;
            }
            matcher.word_table[slot] = (hash, index as u8 + 1);
        }
        matcher.name_ids = matcher
            .names
            .iter()
            .map(|name| {
                name.iter()
                    .map(|word| {
                        matcher
                            .words
                            .iter()
                            .position(|w| w == word)
                            .map_or(u8::MAX - 1, |i| i as u8)
                    })
                    .collect()
            })
            .collect();
        matcher.names_by_first = vec![Vec::new(); matcher.words.len()];
        for (name, ids) in matcher.name_ids.iter().enumerate() {
            if let Some(&first) = ids.first()
                && let Some(list) = matcher.names_by_first.get_mut(usize::from(first))
            {
                list.push(name);
            }
        }
        for word in matcher.words.iter().chain(&matcher.compact) {
            match word.as_bytes() {
                [a, b, ..] => matcher.starts[start_index(*a, *b)] |= length_bit(word.len()),
                _ => matcher.single_letter_word = true,
            }
        }
        matcher
    }

    /// Whether some name is made of hex digits alone (`dead_beef`, `c0ffee`): only such a name can match a key
    /// cut out of an IPv6 address, whose words are all hex digits.
    pub(crate) fn has_hex_name(&self) -> bool {
        self.names.iter().any(|words| {
            words
                .iter()
                .all(|word| word.bytes().all(|c| c.is_ascii_hexdigit()))
        })
    }

    /// Whether a key that is one word, `len` bytes starting with `first second`, may be sensitive: the
    /// start-and-length test of `could_match` on its only word, with no walk over the key.
    pub(crate) fn may_be_word(&self, first: u8, second: u8, len: usize) -> bool {
        self.single_letter_word || self.starts[start_index(first, second)] & length_bit(len) != 0
    }

    /// Whether some word of `key`, or the whole key without separators, has the start and length of a name
    /// word (or of a name without separators). False means `key` is certainly not sensitive; the common keys
    /// (`method`, `path`, `max_tokens`, `duration_ms`) are rejected here.
    fn could_match(&self, key: &[u8]) -> bool {
        if self.single_letter_word {
            return true;
        }
        let listed =
            |a: u8, b: u8, len: usize| self.starts[start_index(a, b)] & length_bit(len) != 0;
        let n = key.len();
        let (mut first, mut second) = (None, None);
        let mut total = 0;
        let mut i = 0;
        while i < n {
            if !is_word_byte(key[i]) {
                i += 1;
                continue;
            }
            let start = i;
            i += 1;
            while i < n
                && is_word_byte(key[i])
                && !(key[i].is_ascii_uppercase()
                    && (key[i - 1].is_ascii_lowercase() || key[i - 1].is_ascii_digit()))
            {
                i += 1;
            }
            let len = i - start;
            if len >= 2 && listed(key[start], key[start + 1], len) {
                return true;
            }
            if first.is_none() {
                first = Some(key[start]);
                second = key
                    .get(start + 1)
                    .copied()
                    .filter(|&c| len >= 2 && is_word_byte(c));
            } else if second.is_none() {
                second = Some(key[start]);
            }
            total += len;
        }
        matches!((first, second), (Some(a), Some(b)) if listed(a, b, total))
    }

    /// Whether `key` names a sensitive value. Attribute keys repeat endlessly (semantic conventions, a
    /// program's field names), so verdicts are remembered per thread.
    pub(crate) fn is_sensitive(&self, key: &str) -> bool {
        let bytes = key.as_bytes();
        // Most keys fail the start-and-length test, which is cheaper than the cache.
        if bytes.len() > MAX_KEY || self.names.is_empty() || !self.could_match(bytes) {
            return false;
        }
        let matcher = self.id;
        VERDICTS.with(|cell| {
            let Ok(mut cache) = cell.try_borrow_mut() else {
                return self.is_sensitive_bytes(bytes);
            };
            if cache.matcher != matcher {
                cache.matcher = matcher;
                cache.verdicts.clear();
            }
            if let Some(&verdict) = cache.verdicts.get(bytes) {
                return verdict;
            }
            let verdict = self.is_sensitive_bytes(bytes);
            if cache.verdicts.len() >= CACHED_KEYS {
                cache.verdicts.clear();
            }
            cache.verdicts.insert(bytes.into(), verdict);
            verdict
        })
    }

    /// Runs `f` with this thread's remembered verdicts on short keys at hand (one thread-local access for a
    /// whole scan, not one per key).
    pub(crate) fn with_verdicts<R>(&self, f: impl FnOnce(&mut KeyVerdicts<'_>) -> R) -> R {
        SHORT_VERDICTS.with(|cell| {
            let mut verdicts = KeyVerdicts {
                matcher: self,
                table: cell.try_borrow_mut().ok(),
            };
            f(&mut verdicts)
        })
    }

    /// [`KeyMatcher::is_sensitive`] on bytes (a key cut out of text).
    pub(crate) fn is_sensitive_bytes(&self, key: &[u8]) -> bool {
        if self.names.is_empty() || key.len() < 3 || key.len() > MAX_KEY || !self.could_match(key) {
            return false;
        }
        // One pass over the key: each word becomes the index of the name word it equals (or NONE), and the
        // letters and digits are counted for the separator-free comparison (`APIKEY` for `api_key`).
        const NONE: u8 = u8::MAX;
        let mut ids = [NONE; MAX_WORDS];
        let mut count = 0;
        let mut alnum_count = 0;
        let mut any_known = false;
        let mut overflow = false;
        let mut record = |word: &[u8], hash: u64, count: &mut usize| {
            if *count == MAX_WORDS {
                overflow = true;
                return;
            }
            let mut id = NONE;
            let mut slot = hash as usize % WORD_TABLE;
            while let (stored, index @ 1..) = self.word_table[slot] {
                if stored == hash
                    && self.words[usize::from(index - 1)]
                        .as_bytes()
                        .eq_ignore_ascii_case(word)
                {
                    id = index - 1;
                    break;
                }
                slot = (slot + 1) % WORD_TABLE;
            }
            any_known |= id != NONE;
            ids[*count] = id;
            *count += 1;
        };
        let mut start: Option<usize> = None;
        let mut hash = HASH_START;
        let mut previous_lower = false;
        for (i, &b) in key.iter().enumerate() {
            let alnum = b.is_ascii_alphanumeric() || b >= 0x80;
            let boundary = !alnum || (b.is_ascii_uppercase() && previous_lower);
            if boundary && let Some(s) = start.take() {
                record(&key[s..i], hash, &mut count);
            }
            if alnum {
                alnum_count += 1;
                if start.is_none() {
                    start = Some(i);
                    hash = HASH_START;
                }
                hash = hash_step(hash, b);
            }
            previous_lower = b.is_ascii_lowercase() || b.is_ascii_digit();
        }
        if let Some(s) = start {
            record(&key[s..], hash, &mut count);
        }
        if overflow {
            return false;
        }
        if any_known {
            for (position, &id) in ids[..count].iter().enumerate() {
                if id == NONE {
                    continue;
                }
                for &name in &self.names_by_first[usize::from(id)] {
                    let words = &self.name_ids[name];
                    if position + words.len() <= count
                        && words
                            .iter()
                            .zip(&ids[position..])
                            .all(|(want, have)| want == have)
                    {
                        return true;
                    }
                }
            }
        }
        for (name, compact) in self.name_ids.iter().zip(&self.compact) {
            if compact.len() == alnum_count && name.len() > 1 {
                let mut letters = key
                    .iter()
                    .filter(|b| b.is_ascii_alphanumeric() || **b >= 0x80);
                if compact
                    .bytes()
                    .all(|c| letters.next().is_some_and(|b| b.to_ascii_lowercase() == c))
                {
                    return true;
                }
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mask::config::DEFAULT_SENSITIVE_KEYS;

    fn default_matcher() -> KeyMatcher {
        KeyMatcher::new(
            &DEFAULT_SENSITIVE_KEYS
                .iter()
                .map(|k| k.to_string())
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn keys_match_by_whole_words_in_any_case_style() {
        let m = default_matcher();
        for key in [
            "password",
            "PASSWORD",
            "db_password",
            "dbPassword",
            "X-Api-Key",
            "apiKey",
            "APIKEY",
            "access_token",
            "http.request.header.authorization",
            "Set-Cookie",
            "session",
            "session_id",
            "sessionId",
            "client_secret",
            "aws.secret.access.key",
            "a_p_i_k_e_y",
            "x.SET_COOKIE",
        ] {
            assert!(m.is_sensitive(key), "{key} should be sensitive");
        }
        for key in [
            "max_tokens",
            "tokens_used",
            "user_id",
            "model_type",
            "passage",
            "secretary_name",
            "http.method",
            "",
        ] {
            assert!(!m.is_sensitive(key), "{key} should not be sensitive");
        }
    }

    #[test]
    fn common_keys_are_rejected_before_the_exact_check() {
        let m = default_matcher();
        for key in [
            "method",
            "path",
            "max_tokens",
            "duration_ms",
            "tokens_used",
            "status",
        ] {
            assert!(
                !m.could_match(key.as_bytes()),
                "{key} should be rejected early"
            );
        }
        let single = KeyMatcher::new(&["x".to_string()]);
        assert!(single.is_sensitive("max_x"));
    }

    #[test]
    fn remembered_verdicts_belong_to_their_own_list() {
        for _ in 0..100 {
            let plain = default_matcher();
            let custom = KeyMatcher::new(&["user_id".to_string()]);
            assert!(!plain.is_sensitive("user_id"));
            assert!(custom.is_sensitive("user_id"));
            assert!(plain.is_sensitive("password"));
            assert!(!custom.is_sensitive("password"));
        }
    }
}
