//! Byte classification 64 bytes at a time, as bit masks (bit `i` stands for byte `i` of the block).
//!
//! Why: almost every byte of a log line is a letter, a digit or a space that no detector starts on. Turning a
//! block into a handful of `u64` masks costs a few SIMD instructions per 16 bytes, and the scanner then combines
//! masks with shifts to find the few positions worth a closer look (`@`, `=`, `:`, long key-shaped words, card-
//! and address-shaped digit runs), instead of looking at every byte.

/// What each byte of a 64-byte block is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Block {
    /// ASCII letters and digits.
    pub(crate) alnum: u64,
    /// ASCII upper-case letters.
    pub(crate) upper: u64,
    /// Letters, digits, `_` and `-`: the characters of API keys and base64url tokens.
    pub(crate) word: u64,
    pub(crate) digit: u64,
    /// `2`–`6`: the digits a payment card number starts with (every issuer's prefix does).
    pub(crate) card_first: u64,
    pub(crate) at: u64,
    pub(crate) eq: u64,
    pub(crate) colon: u64,
    pub(crate) dot: u64,
    pub(crate) dash: u64,
    /// `b` or `B`: where `Bearer` and `Basic` start.
    pub(crate) letter_b: u64,
    /// `A`, `e`–`g`, `r`, `s`, `w`, `x`: the first letters of key shapes and JWTs (`AKIA…`, `eyJ…`, `ghp_…`,
    /// `rk_…`, `sk-…`, `whsec_…`, `xoxb-…`).
    pub(crate) key_first: u64,
}

/// The block of `bytes` starting at `start`, zero-padded past the end (a zero byte is in no class).
#[inline]
pub(crate) fn block_at(bytes: &[u8], start: usize) -> Block {
    // SAFETY: `Detected` asks the CPU what it has on each call.
    unsafe { block_at_with::<Detected>(bytes, start) }
}

/// [`block_at`] with the classifier `C`.
///
/// # Safety
/// The CPU must have the instructions `C` uses (see [`Classifier::classify`]).
#[inline(always)]
pub(crate) unsafe fn block_at_with<C: Classifier>(bytes: &[u8], start: usize) -> Block {
    if let Some(chunk) = bytes.get(start..start + 64) {
        let chunk: &[u8; 64] = chunk.try_into().expect("a 64-byte slice");
        // SAFETY: passed on from the caller.
        unsafe { C::classify(chunk, 64) }
    } else if start < bytes.len() {
        let mut padded = [0u8; 64];
        padded[..bytes.len() - start].copy_from_slice(&bytes[start..]);
        // Only the lanes that hold text are classified: the rest are zeros, in no class.
        // SAFETY: passed on from the caller.
        unsafe { C::classify(&padded, bytes.len() - start) }
    } else {
        Block::default()
    }
}

/// One way of classifying a block. The scanner is compiled once per classifier, so that the one for the
/// CPU's best instructions is inlined into a scan compiled for those instructions too (a `target_feature`
/// function is never inlined into code compiled without the feature: each block would cost a call).
pub(crate) trait Classifier {
    /// The [`Block`] of `chunk`, whose bytes past `used` are zeros.
    ///
    /// # Safety
    /// The CPU must have the instructions this classifier is compiled for.
    unsafe fn classify(chunk: &[u8; 64], used: usize) -> Block;
}

/// The classifier for whatever CPU runs the code, asked at run time: usable anywhere.
pub(crate) struct Detected;

impl Classifier for Detected {
    #[inline(always)]
    unsafe fn classify(chunk: &[u8; 64], used: usize) -> Block {
        classify_prefix(chunk, used)
    }
}

/// The AVX2 classifier, for code compiled with AVX2 enabled (then it is inlined there).
#[cfg(target_arch = "x86_64")]
pub(crate) struct Avx2;

#[cfg(target_arch = "x86_64")]
impl Classifier for Avx2 {
    #[inline(always)]
    unsafe fn classify(chunk: &[u8; 64], used: usize) -> Block {
        // SAFETY: the caller's promise (the CPU has AVX2).
        unsafe { avx2::classify(chunk, used) }
    }
}

/// The AVX-512 classifier, for code compiled with AVX-512 (F and BW) enabled: the whole block is one vector,
/// and each class is one compare straight into a 64-bit mask.
#[cfg(target_arch = "x86_64")]
pub(crate) struct Avx512;

#[cfg(target_arch = "x86_64")]
impl Classifier for Avx512 {
    #[inline(always)]
    unsafe fn classify(chunk: &[u8; 64], _used: usize) -> Block {
        // SAFETY: the caller's promise (the CPU has AVX-512 F and BW).
        unsafe { avx512::classify(chunk) }
    }
}

/// The SSE2 classifier, whatever the CPU has (to check the scanner's builds against each other).
#[cfg(all(test, target_arch = "x86_64", target_feature = "sse2"))]
pub(crate) struct Sse2;

#[cfg(all(test, target_arch = "x86_64", target_feature = "sse2"))]
impl Classifier for Sse2 {
    unsafe fn classify(chunk: &[u8; 64], used: usize) -> Block {
        // SAFETY: the whole target has SSE2.
        unsafe { sse2::classify(chunk, used) }
    }
}

/// Whether this CPU has what the scanner's fast build needs: AVX2 for classifying, and BMI1/BMI2/LZCNT/POPCNT
/// for the bit work on the masks (`tzcnt`, `lzcnt`, `blsr`, shifts by a register without the `cl` register).
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_fast_scan() -> bool {
    static FAST: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FAST.get_or_init(|| {
        std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("bmi1")
            && std::arch::is_x86_feature_detected!("bmi2")
            && std::arch::is_x86_feature_detected!("lzcnt")
            && std::arch::is_x86_feature_detected!("popcnt")
    })
}

/// Whether this CPU can run the scanner's AVX-512 build: everything [`has_fast_scan`] asks for, and AVX-512 F
/// and BW (64-byte vectors, and compares of bytes into mask registers).
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_fast_scan512() -> bool {
    static FAST: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FAST.get_or_init(|| {
        has_fast_scan()
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
    })
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::{
        __m512i, _mm512_cmpeq_epi8_mask, _mm512_cmple_epu8_mask, _mm512_loadu_si512,
        _mm512_or_si512, _mm512_set1_epi8, _mm512_sub_epi8,
    };

    use super::Block;

    /// Bytes in `low..=low + width`.
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    fn in_range(x: __m512i, low: u8, width: u8) -> u64 {
        _mm512_cmple_epu8_mask(
            _mm512_sub_epi8(x, _mm512_set1_epi8(low as i8)),
            _mm512_set1_epi8(width as i8),
        )
    }

    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    fn is(x: __m512i, byte: u8) -> u64 {
        _mm512_cmpeq_epi8_mask(x, _mm512_set1_epi8(byte as i8))
    }

    /// The [`Block`] of `chunk` (zeros are in no class, so a zero-padded chunk needs nothing special).
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    pub(super) fn classify(chunk: &[u8; 64]) -> Block {
        // SAFETY: `chunk` is 64 readable bytes, and an unaligned load has no alignment requirement.
        let x = unsafe { _mm512_loadu_si512(chunk.as_ptr().cast()) };
        let lower = _mm512_or_si512(x, _mm512_set1_epi8(0x20));
        let digit = in_range(x, b'0', 9);
        let dash = is(x, b'-');
        let alnum = in_range(lower, b'a', 25) | digit;
        Block {
            alnum,
            upper: in_range(x, b'A', 25),
            word: alnum | dash | is(x, b'_'),
            digit,
            card_first: in_range(x, b'2', 4),
            at: is(x, b'@'),
            eq: is(x, b'='),
            colon: is(x, b':'),
            dot: is(x, b'.'),
            dash,
            letter_b: is(lower, b'b'),
            key_first: is(x, b'A')
                | in_range(x, b'e', 2)
                | in_range(x, b'r', 1)
                | in_range(x, b'w', 1),
        }
    }
}

/// One SIMD classifier: the same steps for SSE2 (16 bytes per vector) and AVX2 (32).
macro_rules! simd_classifier {
    ($module:ident, $feature:literal, $width:literal, $vector:ident, $bits:ty,
     $load:ident, $set1:ident, $sub:ident, $min:ident, $cmpeq:ident, $or:ident, $movemask:ident) => {
        mod $module {
            use std::arch::x86_64::{$cmpeq, $load, $min, $movemask, $or, $set1, $sub, $vector};

            use super::Block;

            /// Bytes in `low..=low + width`.
            #[target_feature(enable = $feature)]
            fn in_range(x: $vector, low: u8, width: u8) -> $vector {
                let offset = $sub(x, $set1(low as i8));
                $cmpeq($min(offset, $set1(width as i8)), offset)
            }

            #[target_feature(enable = $feature)]
            fn is(x: $vector, byte: u8) -> $vector {
                $cmpeq(x, $set1(byte as i8))
            }

            #[target_feature(enable = $feature)]
            fn bits(mask: $vector) -> u64 {
                u64::from($movemask(mask) as $bits)
            }

            /// The [`Block`] of `chunk`, whose bytes past `used` are zeros (their lanes are not looked at).
            #[target_feature(enable = $feature)]
            #[inline]
            pub(super) fn classify(chunk: &[u8; 64], used: usize) -> Block {
                let mut block = Block::default();
                for lane in 0..used.div_ceil($width) {
                    let shift = lane * $width;
                    let bytes = &chunk[shift..shift + $width];
                    // SAFETY: `bytes` is one vector's worth of readable bytes, and an unaligned load has no
                    // alignment requirement.
                    let x = unsafe { $load(bytes.as_ptr().cast()) };
                    let lower = $or(x, $set1(0x20));
                    let letter = in_range(lower, b'a', 25);
                    let digit = in_range(x, b'0', 9);
                    let dash = is(x, b'-');
                    let alnum = $or(letter, digit);
                    let word = $or($or(alnum, dash), is(x, b'_'));
                    let key_first = $or(
                        $or(is(x, b'A'), in_range(x, b'e', 2)),
                        $or(in_range(x, b'r', 1), in_range(x, b'w', 1)),
                    );
                    block.alnum |= bits(alnum) << shift;
                    block.upper |= bits(in_range(x, b'A', 25)) << shift;
                    block.word |= bits(word) << shift;
                    block.digit |= bits(digit) << shift;
                    block.card_first |= bits(in_range(x, b'2', 4)) << shift;
                    block.at |= bits(is(x, b'@')) << shift;
                    block.eq |= bits(is(x, b'=')) << shift;
                    block.colon |= bits(is(x, b':')) << shift;
                    block.dot |= bits(is(x, b'.')) << shift;
                    block.dash |= bits(dash) << shift;
                    block.letter_b |= bits(is(lower, b'b')) << shift;
                    block.key_first |= bits(key_first) << shift;
                }
                block
            }
        }
    };
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
simd_classifier!(
    sse2,
    "sse2",
    16,
    __m128i,
    u16,
    _mm_loadu_si128,
    _mm_set1_epi8,
    _mm_sub_epi8,
    _mm_min_epu8,
    _mm_cmpeq_epi8,
    _mm_or_si128,
    _mm_movemask_epi8
);

#[cfg(target_arch = "x86_64")]
simd_classifier!(
    avx2,
    "avx2",
    32,
    __m256i,
    u32,
    _mm256_loadu_si256,
    _mm256_set1_epi8,
    _mm256_sub_epi8,
    _mm256_min_epu8,
    _mm256_cmpeq_epi8,
    _mm256_or_si256,
    _mm256_movemask_epi8
);

/// Whether this CPU has AVX2, asked once (the answer is cached by the standard library too, but behind an
/// atomic load and a branch per call).
#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    static AVX2: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVX2.get_or_init(|| std::arch::is_x86_feature_detected!("avx2"))
}

/// A whole block, classified for this CPU.
#[cfg(test)]
pub(crate) fn classify(chunk: &[u8; 64]) -> Block {
    classify_prefix(chunk, 64)
}

/// [`classify`] of a chunk whose bytes past `used` are zeros.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline]
pub(crate) fn classify_prefix(chunk: &[u8; 64], used: usize) -> Block {
    if has_fast_scan512() {
        // SAFETY: the CPU has AVX-512 F and BW (checked at run time).
        return unsafe { avx512::classify(chunk) };
    }
    if has_avx2() {
        // SAFETY: the CPU has AVX2 (checked at run time).
        return unsafe { avx2::classify(chunk, used) };
    }
    // SAFETY: this is compiled only where the whole target enables SSE2 (every x86_64 target does), so the
    // CPU running it has the instructions `sse2::classify` uses.
    unsafe { sse2::classify(chunk, used) }
}

/// The AVX2 classification where the CPU has AVX2, else the portable one (to check it against the others on
/// CPUs where [`classify`] takes the AVX-512 path).
#[cfg(all(test, target_arch = "x86_64"))]
fn classify_avx2(chunk: &[u8; 64]) -> Block {
    if !has_avx2() {
        return classify_portable(chunk);
    }
    // SAFETY: the CPU has AVX2 (checked just now).
    unsafe { Avx2::classify(chunk, 64) }
}

/// The SSE2 classification, whatever the CPU has (to check it against the others).
#[cfg(all(test, target_arch = "x86_64", target_feature = "sse2"))]
fn classify_sse2(chunk: &[u8; 64]) -> Block {
    // SAFETY: the whole target has SSE2.
    unsafe { Sse2::classify(chunk, 64) }
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline]
pub(crate) fn classify_prefix(chunk: &[u8; 64], _used: usize) -> Block {
    classify_portable(chunk)
}

/// The same classification one byte at a time, for targets without the SIMD path (and to check it).
#[cfg(any(test, not(all(target_arch = "x86_64", target_feature = "sse2"))))]
pub(crate) fn classify_portable(chunk: &[u8; 64]) -> Block {
    let mut block = Block::default();
    for (i, &c) in chunk.iter().enumerate() {
        let bit = |yes: bool| u64::from(yes) << i;
        block.alnum |= bit(c.is_ascii_alphanumeric());
        block.upper |= bit(c.is_ascii_uppercase());
        block.word |= bit(c.is_ascii_alphanumeric() || c == b'_' || c == b'-');
        block.digit |= bit(c.is_ascii_digit());
        block.card_first |= bit(matches!(c, b'2'..=b'6'));
        block.at |= bit(c == b'@');
        block.eq |= bit(c == b'=');
        block.colon |= bit(c == b':');
        block.dot |= bit(c == b'.');
        block.dash |= bit(c == b'-');
        block.letter_b |= bit(c | 0x20 == b'b');
        block.key_first |= bit(matches!(c, b'A' | b'e'..=b'g' | b'r' | b's' | b'w' | b'x'));
    }
    block
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simd_and_portable_classification_agree_on_every_byte() {
        let mut chunk = [0u8; 64];
        for round in 0..4u8 {
            for (i, byte) in chunk.iter_mut().enumerate() {
                *byte = (i as u8).wrapping_mul(4).wrapping_add(round);
            }
            assert_eq!(classify(&chunk), classify_portable(&chunk), "round {round}");
            #[cfg(target_arch = "x86_64")]
            assert_eq!(
                classify_avx2(&chunk),
                classify_portable(&chunk),
                "round {round}"
            );
            #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
            assert_eq!(
                classify_sse2(&chunk),
                classify_portable(&chunk),
                "round {round}"
            );
        }
        let text = b"key=AKIA_x-9 @: b.B-{}\xc3\xa9\x00\xff a@example.com 4111-1111:x=y/z?q&r";
        chunk[..text.len()].copy_from_slice(text);
        assert_eq!(classify(&chunk), classify_portable(&chunk));
        #[cfg(target_arch = "x86_64")]
        assert_eq!(classify_avx2(&chunk), classify_portable(&chunk));
        #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
        assert_eq!(classify_sse2(&chunk), classify_portable(&chunk));
    }

    #[test]
    fn blocks_past_the_end_are_zero_padded() {
        let text = b"a@b";
        let block = block_at(text, 0);
        assert_eq!(block.at, 0b010);
        assert_eq!(block.alnum, 0b101);
        assert_eq!(block_at(text, 64), Block::default());
        // A short text classifies only the lanes it fills; the result is the whole padded block's.
        for len in [1, 15, 16, 17, 31, 32, 33, 63] {
            let text: Vec<u8> = (0..len).map(|i| b"a@1=:.-_Bx9 "[i % 12]).collect();
            let mut padded = [0u8; 64];
            padded[..len].copy_from_slice(&text);
            assert_eq!(
                block_at(&text, 0),
                classify_portable(&padded),
                "{len} bytes"
            );
        }
    }
}
