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
    /// Bit `(a << 8) | b` is set when some name word starts with the lowercase letters `a b`: a key none of
    /// whose words starts that way is rejected after a table lookup per word.
    bigrams: Box<[u64; 1024]>,
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

/// Slots of the word hash table (a power of two, well above the number of distinct name words).
const WORD_TABLE: usize = 512;

/// FNV-1a step over a lowercased byte: the word hash is built while the key is split, with no second pass.
#[inline(always)]
fn hash_step(hash: u64, byte: u8) -> u64 {
    (hash ^ u64::from(byte.to_ascii_lowercase())).wrapping_mul(0x0000_0100_0000_01b3)
}

const HASH_START: u64 = 0xcbf2_9ce4_8422_2325;

fn bigram(a: u8, b: u8) -> usize {
    (usize::from(a.to_ascii_lowercase()) << 8) | usize::from(b.to_ascii_lowercase())
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
            bigrams: Box::new([0; 1024]),
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
            let bytes = word.as_bytes();
            let index = match bytes {
                [a, b, ..] => bigram(*a, *b),
                // A one-letter word could start anything: no quick rejection.
                _ => {
                    matcher.bigrams.fill(u64::MAX);
                    break;
                }
            };
            matcher.bigrams[index / 64] |= 1 << (index % 64);
        }
        matcher
    }

    /// Whether some word of `key` (or its first two letters and digits, for the separator-free form) starts
    /// like a word of a name. False means `key` is certainly not sensitive.
    fn could_match(&self, key: &[u8]) -> bool {
        let has = |a: u8, b: u8| {
            let index = bigram(a, b);
            self.bigrams[index / 64] & (1 << (index % 64)) != 0
        };
        let alnum = |c: u8| c.is_ascii_alphanumeric() || c >= 0x80;
        let mut first_two = key.iter().copied().filter(|&c| alnum(c));
        if let (Some(a), Some(b)) = (first_two.next(), first_two.next())
            && has(a, b)
        {
            return true;
        }
        let mut previous_alnum = false;
        let mut previous_lower = false;
        for (i, &c) in key.iter().enumerate() {
            let is_alnum = alnum(c);
            let starts =
                is_alnum && (!previous_alnum || (c.is_ascii_uppercase() && previous_lower));
            if starts && i + 1 < key.len() && has(c, key[i + 1]) {
                return true;
            }
            previous_alnum = is_alnum;
            previous_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        }
        false
    }

    /// Whether `key` names a sensitive value. Attribute keys repeat endlessly (semantic conventions, a
    /// program's field names), so verdicts are remembered per thread.
    pub(crate) fn is_sensitive(&self, key: &str) -> bool {
        let bytes = key.as_bytes();
        // Most keys fail the bigram test, which is cheaper than the cache.
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
