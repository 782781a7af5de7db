//! The engine against the reference masker (`reference.rs`): generated texts, the PII corpus, and both at every
//! offset across the 64-byte block edges the engine classifies. Any difference fails.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};

use super::reference::Reference;
use super::{Action, Detector, MaskConfig, Masked, Masker};

/// The default policy.
fn default_config() -> MaskConfig {
    MaskConfig::default()
}

/// Every detector on: the default policy and the opt-in phone and IBAN detectors.
fn everything_config() -> MaskConfig {
    let mut config = MaskConfig::default();
    config.detectors.phone.enabled = Some(true);
    config.detectors.iban.enabled = Some(true);
    config
}

/// Every detector on, with each action somewhere: the replacement of trimmed matches is checked too.
fn mixed_actions_config() -> MaskConfig {
    let mut config = everything_config();
    config.detectors.payment_card.action = Some(Action::Partial);
    config.detectors.secret_pair.action = Some(Action::Partial);
    config.detectors.email.action = Some(Action::Hash);
    config.detectors.ipv6.action = Some(Action::Hash);
    config.detectors.ipv4.action = Some(Action::Drop);
    config.hash_key = Some("differential".into());
    config
}

/// Custom sensitive keys, among them a name of hex digits alone (`beef`: keys inside IPv6 addresses must be
/// judged then) and a one-letter name (every word could be it); an allow-list; sensitive keys' values partly
/// kept.
fn custom_keys_config() -> MaskConfig {
    MaskConfig {
        sensitive_keys: ["password", "beef", "q", "user_id", "Set-Cookie", "api.key"]
            .map(String::from)
            .to_vec(),
        allow_keys: vec!["X-Password".into()],
        key_action: Action::Partial,
        replacement: "<{name}>".into(),
        ..everything_config()
    }
}

/// The engine and the reference for one policy.
struct Pair {
    name: &'static str,
    engine: Masker,
    reference: Reference,
}

impl Pair {
    /// The engine and the reference compiled from `config`, reported as `name`.
    fn new(name: &'static str, config: MaskConfig) -> Pair {
        Pair {
            name,
            engine: Masker::new(&config).expect("a valid policy"),
            reference: Reference::new(&config),
        }
    }

    /// Both maskers on the value of attribute `key`.
    fn compare_attribute(&self, key: &str, value: &str) -> Result<(), String> {
        let (engine, reference) = (
            self.engine.attribute(key, value),
            self.reference.attribute(key, value),
        );
        if engine != reference {
            return Err(format!(
                "{}: attribute {key:?} = {value:?}\n  engine:    {engine:?}\n  reference: {reference:?}",
                self.name
            ));
        }
        Ok(())
    }

    /// Both maskers on `text` as free text, as an attribute value, and the engine's quick "may it change" check:
    /// a description of the first difference.
    fn compare(&self, text: &str) -> Result<(), String> {
        // The reference is the slower of the two in a debug build: its matches are found once.
        let found = self.reference.matches(text);
        let engine = self.engine.text(text);
        let reference = self.reference.replace(text, &found, false);
        if Masked::Keep(engine.clone()) != reference {
            return Err(format!(
                "{}: text {text:?}\n  engine:    {engine:?}\n  reference: {reference:?}\n  matches: {found:?}",
                self.name,
            ));
        }
        // An attribute that is not sensitive nor allowed: the same, but a `drop` match drops it.
        let engine = self.engine.attribute("message", text);
        let reference = self.reference.replace(text, &found, true);
        if engine != reference {
            return Err(format!(
                "{}: attribute {text:?}\n  engine:    {engine:?}\n  reference: {reference:?}",
                self.name
            ));
        }
        let finds = !found.is_empty();
        if self.engine.may_change(text.as_bytes()) != finds {
            return Err(format!(
                "{}: may_change {text:?} is {}, the reference finds {}",
                self.name, !finds, finds
            ));
        }
        Ok(())
    }
}

/// The policies compared.
fn pairs() -> [Pair; 4] {
    [
        Pair::new("default", default_config()),
        Pair::new("everything", everything_config()),
        Pair::new("mixed actions", mixed_actions_config()),
        Pair::new("custom keys", custom_keys_config()),
    ]
}

// ---- Generated texts ----

/// Digits (`count` of them) drawn at random.
fn digits(count: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = String> {
    proptest::collection::vec(0u8..10, count)
        .prop_map(|ds| ds.into_iter().map(|d| char::from(b'0' + d)).collect())
}

/// `count` characters drawn from `alphabet`.
fn chars_from(
    alphabet: &'static str,
    count: std::ops::RangeInclusive<usize>,
) -> impl Strategy<Value = String> {
    let alphabet: Vec<char> = alphabet.chars().collect();
    proptest::collection::vec(proptest::sample::select(alphabet), count)
        .prop_map(|cs| cs.into_iter().collect())
}

const BASE64: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const BASE64URL: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
const ALNUM: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const UPPER_DIGIT: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const HEX: &str = "0123456789abcdefABCDEF";

/// The Luhn check digit that completes `digits`.
fn luhn_digit(digits: &[u8]) -> u8 {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d) * if i % 2 == 0 { 2 } else { 1 };
            if d > 9 { d - 9 } else { d }
        })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

/// Card-like numbers: an issuer's (or no issuer's) prefix, 12–20 digits, usually Luhn-valid, whole or in
/// groups split by spaces or dashes.
fn card() -> impl Strategy<Value = String> {
    let prefixes = vec![
        "4", "4", "51", "55", "2221", "2720", "34", "37", "3528", "3589", "300", "36", "38",
        "6011", "65", "62", "50", "56", "1", "7",
    ];
    (
        proptest::sample::select(prefixes),
        12usize..=20,
        proptest::collection::vec(0u8..10, 20),
        0u8..10,
        0u8..6,
        proptest::sample::select(vec![" ", "-"]),
    )
        .prop_map(|(prefix, len, fill, valid, grouping, sep)| {
            let mut ds: Vec<u8> = prefix.bytes().map(|c| c - b'0').collect();
            ds.extend(&fill[..len.saturating_sub(ds.len() + 1)]);
            // Nine in ten pass Luhn.
            let check = if valid < 9 {
                luhn_digit(&ds)
            } else {
                (luhn_digit(&ds) + 1) % 10
            };
            ds.push(check);
            let text: String = ds.iter().map(|&d| char::from(b'0' + d)).collect();
            let size = match grouping {
                0 | 1 => return text,
                2 | 3 => 4,
                4 => 3,
                _ => 5,
            };
            let groups: Vec<&str> = text
                .as_bytes()
                .chunks(size)
                .map(|g| std::str::from_utf8(g).expect("digits"))
                .collect();
            groups.join(sep)
        })
}

/// IPv4-like groups: usually four octets of 0–299 (sometimes `127` or zero-prefixed), sometimes three or five.
fn ipv4() -> impl Strategy<Value = String> {
    let octet = prop_oneof![
        12 => (0u32..256).prop_map(|o| o.to_string()),
        1 => (256u32..300).prop_map(|o| o.to_string()),
        1 => Just("127".to_string()),
        1 => Just("0".to_string()),
        1 => (0u32..10).prop_map(|o| format!("0{o}")),
    ];
    let count = prop_oneof![8 => Just(4usize), 1 => Just(3usize), 1 => Just(5usize)];
    count
        .prop_flat_map(move |n| proptest::collection::vec(octet.clone(), n))
        .prop_map(|octets| octets.join("."))
}

/// IPv6-like runs: eight hex groups of one to four digits, often with a run of them written as `::`, sometimes
/// an IPv4 tail, sometimes groups of zero or five digits (not addresses); and a few well-known ones.
fn ipv6() -> impl Strategy<Value = String> {
    let generated = (
        proptest::collection::vec(chars_from(HEX, 1..=4), 8),
        proptest::option::weighted(0.5, (0usize..8, 1usize..8)),
        proptest::option::weighted(0.15, ipv4()),
        proptest::option::weighted(0.1, (0usize..8, prop_oneof![Just(""), Just("12345")])),
    )
        .prop_map(|(mut groups, gap, tail, broken)| {
            if let Some((at, text)) = broken {
                groups[at] = text.to_string();
            }
            if let Some(tail) = tail {
                groups.truncate(6);
                groups.push(tail);
            }
            match gap {
                Some((from, len)) if from < groups.len() => {
                    let to = (from + len).min(groups.len());
                    format!("{}::{}", groups[..from].join(":"), groups[to..].join(":"))
                }
                _ => groups.join(":"),
            }
        });
    prop_oneof![
        4 => generated,
        1 => proptest::sample::select(vec![
            "::1", "::", "2001:db8::8a2e:370:7334", "fe80::1", "dead:beef::cafe", "::ffff:192.0.2.1",
            "1::", "T10:30:00", "12:34:56",
        ])
        .prop_map(str::to_string),
    ]
}

/// JWT-like tokens: `eyJ`, base64url parts of around the shortest lengths that count, dots between.
fn jwt() -> impl Strategy<Value = String> {
    (
        chars_from(BASE64URL, 5..=12),
        chars_from(BASE64URL, 0..=4),
        chars_from(BASE64URL, 0..=8),
        0u8..4,
    )
        .prop_map(|(header, payload, signature, dots)| match dots {
            0 => format!("eyJ{header}.{payload}"),
            _ => format!("eyJ{header}.{payload}.{signature}"),
        })
}

/// API-key-like tokens: a known prefix and a body of about the shape's length, of its characters or close.
fn api_key() -> impl Strategy<Value = String> {
    let shapes: Vec<(&str, &str, usize)> = vec![
        ("AKIA", UPPER_DIGIT, 16),
        ("ASIA", UPPER_DIGIT, 16),
        ("AIza", BASE64URL, 35),
        ("ghp_", ALNUM, 36),
        ("gho_", ALNUM, 36),
        ("github_pat_", "abcXYZ019_", 22),
        ("glpat-", BASE64URL, 20),
        ("xoxb-", "abcXYZ019-", 10),
        ("xoxp-", "abcXYZ019-", 10),
        ("sk_live_", ALNUM, 16),
        ("sk_test_", ALNUM, 16),
        ("rk_live_", ALNUM, 16),
        ("whsec_", ALNUM, 24),
        ("sk-", BASE64URL, 32),
        ("sk-", "abcdefghij-", 32),
    ];
    (
        proptest::sample::select(shapes),
        0usize..4,
        proptest::collection::vec(any::<proptest::sample::Index>(), 40),
        proptest::option::weighted(0.15, proptest::sample::select(vec!["a", "_", "-", "Z"])),
    )
        .prop_map(|((prefix, alphabet, length), extra, picks, tail)| {
            let alphabet = alphabet.as_bytes();
            // Mostly the shape's length, sometimes one short or one or two long.
            let len = match extra {
                0 => length.saturating_sub(1),
                1 | 2 => length,
                _ => length + extra - 2,
            };
            let body: String = picks[..len.min(40)]
                .iter()
                .map(|i| char::from(alphabet[i.index(alphabet.len())]))
                .collect();
            format!("{prefix}{body}{}", tail.unwrap_or(""))
        })
}

/// Standard base64 of `bytes`, padded.
fn base64(bytes: &[u8]) -> String {
    let alphabet = BASE64.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(alphabet[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `Bearer`/`Basic` credentials: base64 of `user:password` (or of no pair), bearer tokens of 12–30
/// characters, sometimes with stray characters.
fn auth() -> impl Strategy<Value = String> {
    (
        proptest::sample::select(vec!["Bearer ", "Basic ", "bearer ", "BASIC ", "Basic  "]),
        chars_from("abcxyz019", 1..=6),
        proptest::sample::select(vec![":", "", "-"]),
        chars_from("abcxyz019!", 0..=8),
        chars_from("ABCabc0123456789._~+/=-", 12..=30),
        proptest::option::weighted(0.2, proptest::sample::select(vec!["=", ".", "====", "!"])),
    )
        .prop_map(|(scheme, user, colon, password, bearer, junk)| {
            let credential = if scheme.trim().eq_ignore_ascii_case("bearer") {
                bearer
            } else {
                base64(format!("{user}{colon}{password}").as_bytes())
            };
            format!("{scheme}{credential}{}", junk.unwrap_or(""))
        })
}

/// IBAN-like strings: a country, check digits that are usually right, a body of 11–30 characters, whole or
/// in groups of four.
fn iban() -> impl Strategy<Value = String> {
    (
        proptest::sample::select(vec!["GB", "DE", "FR", "NL"]),
        chars_from("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", 11..=30),
        0u8..10,
        any::<bool>(),
    )
        .prop_map(|(country, body, valid, grouped)| {
            let rotated = format!("{body}{country}00");
            let remainder = rotated.chars().fold(0u32, |r, c| {
                let v = c.to_digit(36).expect("alphanumeric");
                if v >= 10 {
                    (r * 100 + v) % 97
                } else {
                    (r * 10 + v) % 97
                }
            });
            let check = if valid < 8 {
                98 - remainder
            } else {
                (98 - remainder) % 97 + 1
            };
            let text = format!("{country}{check:02}{body}");
            if !grouped {
                return text;
            }
            let groups: Vec<&str> = text
                .as_bytes()
                .chunks(4)
                .map(|g| std::str::from_utf8(g).expect("ASCII"))
                .collect();
            groups.join(" ")
        })
}

/// Phone-like numbers: international, parenthesised and dashed forms, and digit groups with separators.
fn phone() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("+44 20 7946 0958".to_string()),
        Just("(415) 555-2671".to_string()),
        Just("415-555-2671".to_string()),
        Just("+1-415-555-2671".to_string()),
        Just("415.555.2671".to_string()),
        (
            proptest::sample::select(vec!["+", "(", ""]),
            proptest::collection::vec(digits(1..=4), 2..=4),
            proptest::sample::select(vec![" ", "-", ".", ") "]),
        )
            .prop_map(|(lead, groups, sep)| format!("{lead}{}", groups.join(sep))),
    ]
}

/// E-mail-like strings and URLs with user information.
fn address() -> impl Strategy<Value = String> {
    (
        chars_from("abcxyz019._%+-", 0..=8),
        chars_from("abcxyz019.-", 0..=8),
        proptest::sample::select(vec!["com", "org", "co.uk", "c0m", "x", "io."]),
        proptest::sample::select(vec![
            "",
            "https://",
            "https://user:",
            "ftp://u:",
            "http://:",
            "mailto:",
            "ssh://git",
        ]),
        proptest::sample::select(vec!["", "/path", "?q=1", "#top", ":8080/x", "@other.net"]),
    )
        .prop_map(|(local, domain, tld, scheme, tail)| {
            format!("{scheme}{local}@{domain}.{tld}{tail}")
        })
}

/// Long runs of one kind of character: local parts, domains, keys and values longer than the engine's windows.
fn long_run() -> impl Strategy<Value = String> {
    (
        proptest::sample::select(vec!["a", "a.", "a-", "a_", "9", "a%", "ab+", "eyJ", "x:"]),
        50usize..=140,
    )
        .prop_map(|(unit, len)| unit.repeat(len).chars().take(len).collect())
}

/// PEM fragments.
fn pem() -> impl Strategy<Value = String> {
    (
        proptest::sample::select(vec![
            "-----BEGIN PRIVATE KEY-----",
            "-----BEGIN RSA PRIVATE KEY-----",
            "-----BEGIN PUBLIC KEY-----",
            "------BEGIN PRIVATE KEY-----",
            "-----BEGIN PRIVATE KEY",
        ]),
        chars_from(BASE64, 0..=20),
        proptest::sample::select(vec![
            "-----END PRIVATE KEY-----",
            "-----END RSA PRIVATE KEY-----",
            "-----END",
            "",
        ]),
        proptest::sample::select(vec!["\n", " ", "\\n", ""]),
    )
        .prop_map(|(begin, body, end, sep)| format!("{begin}{sep}{body}{sep}{end}"))
}

/// Keys, sensitive and not, and the ways pairs are written.
fn key() -> impl Strategy<Value = String> {
    proptest::sample::select(vec![
        "password",
        "passwd",
        "token",
        "api_key",
        "apiKey",
        "APIKEY",
        "Authorization",
        "authorization",
        "secret",
        "session",
        "Set-Cookie",
        "private_key",
        "credentials",
        "db_password",
        "x.Authorization",
        "max_tokens",
        "passwords",
        "user",
        "status",
        "tokenizer",
        "a_p_i_k_e_y",
        "Token",
        "\"password\"",
        "'token'",
        "user_id",
        "userId",
        "set_cookie",
        "beef",
        "dead:beef",
        "q",
        "api.key",
        "X-Password",
        "ключ_password",
    ])
    .prop_map(str::to_string)
}

/// Keys: the listed ones, and long ones (up to and past the 128 bytes a key may have, and past 24 words) with a
/// sensitive word at the end.
fn any_key() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => key(),
        1 => (120usize..=135).prop_map(|len| format!("{}_password", "k".repeat(len - 9))),
        1 => (20usize..=28).prop_map(|words| format!("{}password", "a_".repeat(words - 1))),
    ]
}

/// A value after a key: a word, a quoted string, an auth scheme and credential, or something another detector
/// matches too.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => chars_from("abcxyz019-_./+", 0..=10),
        1 => chars_from("abc xyz019\\\"'\né", 0..=10).prop_map(|v| format!("\"{v}\"")),
        1 => long_run(),
        1 => chars_from("abc xyz019", 0..=6).prop_map(|v| format!("'{v}'")),
        1 => auth(),
        1 => proptest::sample::select(vec!["{\"a\":1}", "[1]", "", "&x=1", "Bearer  x1"]).prop_map(str::to_string),
        1 => card(),
        1 => ipv6(),
        1 => address(),
        1 => api_key(),
        1 => iban(),
    ]
}

/// A `key=value` pair, written in the ways logs, JSON, headers and query strings write them.
fn pair() -> impl Strategy<Value = String> {
    (
        proptest::sample::select(vec!["", "?", "&", "/", "x.", "\"", "{\"", " "]),
        any_key(),
        proptest::sample::select(vec![
            "=", ":", ": ", " = ", "\":", "\": ", "  :", "     =", "=\t", ":\"",
        ]),
        value(),
    )
        .prop_map(|(lead, key, sep, value)| format!("{lead}{key}{sep}{value}"))
}

/// One piece of a generated text: the detectors' alphabets and fragments, weighted so that detectors fire often.
fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => chars_from("abcdefxyzABZ0123456789", 1..=8),
        2 => digits(1..=5),
        1 => chars_from(HEX, 1..=5),
        1 => chars_from(BASE64, 4..=12),
        2 => key(),
        4 => pair(),
        3 => card(),
        3 => ipv4(),
        3 => ipv6(),
        2 => jwt(),
        3 => api_key(),
        3 => auth(),
        2 => iban(),
        3 => phone(),
        3 => address(),
        1 => pem(),
        1 => long_run(),
    ]
}

/// What stands between two pieces: mostly a space, sometimes nothing (so pieces run into each other) or the
/// punctuation the detectors look at.
fn gap() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        8 => Just(" "),
        3 => Just(""),
        6 => proptest::sample::select(vec![
            ",", ";", "-", "/", ".", "=", ":", "@", "\"", "'", "\n", "\t", "&", "?", "#", "+", "_", "(", ")",
            "[", "]", "{", "}", "\\", "|", "://", "=\"", ": ", " = ", "::", ", ", " é ", "ключ", "\u{0}",
        ]),
    ]
}

/// A text: a run of padding (to move everything across the 64-byte block edges), then pieces with gaps.
fn text() -> impl Strategy<Value = String> {
    (
        0usize..140,
        proptest::sample::select(vec!["x", " ", "ab ", "1", ".", "-"]),
        proptest::collection::vec((gap(), piece()), 1..=10),
    )
        .prop_map(|(pad, unit, pieces)| {
            let mut text: String = unit.repeat(pad).chars().take(pad).collect();
            for (gap, piece) in pieces {
                text.push_str(gap);
                text.push_str(&piece);
            }
            text
        })
}

/// `cases()` with a share of its cases, for the properties that are slower per case or need fewer.
fn share_of_cases(divisor: u32) -> ProptestConfig {
    let config = cases();
    ProptestConfig {
        cases: (config.cases / divisor).max(1),
        ..config
    }
}

/// How many cases each property runs: enough to be meaningful, few enough for a debug build (`PROPTEST_CASES`
/// asks for more, for a longer hunt).
fn cases() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(2000);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(cases())]

    /// The engine masks every generated text as the reference does, under every policy, and never panics.
    #[test]
    fn the_engine_masks_generated_texts_as_the_reference_does(text in text()) {
        for pair in &pairs() {
            if let Err(difference) = pair.compare(&text) {
                prop_assert!(false, "{}", difference);
            }
        }
    }
}

proptest! {
    #![proptest_config(share_of_cases(2))]

    /// The engine masks attribute values as the reference does, whatever the key: sensitive, allowed or neither.
    #[test]
    fn the_engine_masks_generated_attributes_as_the_reference_does(
        key in prop_oneof![3 => any_key(), 1 => chars_from("abcXYZ_-.:019", 0..=12)],
        value in text(),
    ) {
        for pair in &pairs() {
            if let Err(difference) = pair.compare_attribute(&key, &value) {
                prop_assert!(false, "{}", difference);
            }
        }
    }
}

proptest! {
    #![proptest_config(share_of_cases(4))]

    /// A `ChangeCheck` over many values (short ones packed into a block together) says a value may change
    /// exactly when the reference finds a match in one of them.
    #[test]
    fn a_change_check_finds_what_the_reference_finds(
        values in proptest::collection::vec(
            prop_oneof![6 => piece(), 1 => text(), 1 => Just(String::new())],
            1..=12,
        ),
    ) {
        for pair in &pairs() {
            let mut check = super::ChangeCheck::new(&pair.engine);
            for value in &values {
                check.add(value.as_bytes());
            }
            let finds = values.iter().any(|value| !pair.reference.matches(value).is_empty());
            prop_assert_eq!(check.finish(), finds, "{}: {:?}", pair.name, values);
        }
    }
}

/// Shapes found while reading the engine, where two detectors meet, a window ends or a rule has an edge: the
/// engine agrees with the reference on each at every offset from a block edge.
#[test]
fn handpicked_edges_are_masked_as_the_reference_does_at_every_offset() {
    let long_local = "a.".repeat(40);
    let long_key = format!("{}_password", "k".repeat(120));
    let many_words = format!("{}password", "a_".repeat(24));
    let texts = [
        // Numbers: groups of a card, a phone number inside digits, a phone number that is an IPv4 address.
        "4111 1111 1111 1111 2345 678",
        "2345 4111 1111 1111 1111",
        "+4111 1111 1111 111",
        "1234-415-555-2671",
        "123.123.123.1",
        "4111111111111111.5 and 4111111111111111.",
        "1.2.3.4.5 01.02.03.04 127.0.0.1 0.0.0.0 x1.2.3.4 _1.2.3.4",
        "(415) 555-2671 415)555)2671 (415-555-2671",
        // Pairs: spaces and quotes around the separator, keys inside tokens, schemes, escapes.
        "password     =x password    =y password' =z password'\"=w",
        "user.password:x:y a:password:x ?token=a&b=c",
        "token=Bearer  abcdefghijklmnopqrstuvwxyz0123 authorization: Basic dXNlcjpwYXNz",
        // Schemes as the value of any key, inside a secret value, and with `=` inside or after the credential.
        "auth=Bearer abcdefghijklmnopqrstuvwxyz0123 password=abc:Bearer abcdefghijklmnopqrstuvwxyz012345",
        "token_type=Bearer expires_in=86400 x:Basic dXNlcjpwYXNz== y=Basic dXNl=cjpwYXNz iban=DE89370400440532013000",
        " password=Bearer AAAAAAAAAAAA=bearer AAAAAAAAAAAAAAA0",
        "password=\"abc\\\"def\" x password=\"\\é\" password=''",
        "password={\"a\":1} token=[1] secret=",
        "ключ=значение password=é",
        "https://token:abc@host/x http://u:p@ss@host/ ftp://:@h",
        // Addresses: trims, several `@`s, URLs, long local parts.
        "a@b.com@c.org .dots.@example.org. name@-bad-.example.c0m",
        "https://u:x@a.com@host.com/ ssh://git@github.com:org/repo",
        // IPv6: around keys, words and ports.
        "token@2001:db8::1/abc123 x=2001:db8::1 T10:30:00 [2001:db8::1]:8080 ::ffff:1.2.3.4",
        "password ::cafe:1-hunter2 \"password\"::2-a dead:beef::cafe",
        "password=2001:db8::1 token=::ffff:1.2.3.4 secret=1:2:3:4:5:6:7:8",
        // Tokens: shortest shapes, neighbours, inside values.
        "eyJhbGciOiJ.ab. eyJhbGciOiJ.a.b xoxb-1234567890 AKIAABCDEFGHIJKLMNOP AKIAABCDEFGHIJKLMNOPQ",
        "password=AKIAABCDEFGHIJKLMNOP token=\"eyJhbGciOiJIUzI1NiJ9.e30.sig Bearer abcdefghijklmnop1\"",
        "Basic dXNlcjpwYXNz.abc Basic YQ==YTpi Basic ====YTpi bearer abcdefghijklmnopqrstuvwx",
        "password: GB82 WEST 1234 5698 7654 32 iban=GB82WEST12345698765432 GB82 WEST 1234 5698 7654 32",
        // Private keys: cut, after dashes, never closed.
        "KEY----------BEGIN PRIVATE KEY-----abc x-----BEGIN RSA PRIVATE KEY-----\nabc\n-----END",
        "-----BEGIN PRIVATE KEY-----",
        // Windows: long local parts and keys, keys of many words.
        &format!("{long_local}@example.com"),
        &format!("{long_key}=hunter2 {many_words}=hunter2"),
    ];
    let pairs = pairs();
    let mut failures = Vec::new();
    for text in texts {
        for offset in 0..=70 {
            let padded = format!(
                "{}{text}",
                "x ".repeat(36).get(..offset).unwrap_or_default()
            );
            for pair in &pairs {
                if let Err(difference) = pair.compare(&padded) {
                    failures.push(difference);
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{}",
        failures[..failures.len().min(10)].join("\n")
    );
}

/// The generated texts exercise every detector: most hold a match, and each detector matches in some.
#[test]
fn generated_texts_hold_matches_of_every_detector() {
    let reference = Reference::new(&everything_config());
    let mut runner = TestRunner::deterministic();
    let strategy = text();
    let total = 1000;
    let mut any = 0;
    let mut per_detector = [0usize; Detector::COUNT];
    for _ in 0..total {
        let text = strategy.new_tree(&mut runner).expect("a text").current();
        let found = reference.matches(&text);
        any += usize::from(!found.is_empty());
        for detector in Detector::ALL {
            per_detector[detector as usize] +=
                usize::from(found.iter().any(|f| f.detector == detector));
        }
    }
    let shares: Vec<String> = Detector::ALL
        .iter()
        .map(|d| {
            let share = 100.0 * per_detector[*d as usize] as f64 / total as f64;
            format!("{} {share:.1}%", d.name())
        })
        .collect();
    eprintln!(
        "texts with a match: {:.1}%; by detector: {}",
        100.0 * any as f64 / total as f64,
        shares.join(", ")
    );
    assert!(
        any * 10 >= total * 7,
        "only {any} of {total} texts hold a match"
    );
    for detector in Detector::ALL {
        assert!(
            per_detector[detector as usize] * 100 >= total,
            "{} matches in only {} of {total} texts",
            detector.name(),
            per_detector[detector as usize]
        );
    }
}

/// Every corpus line, alone and at every offset from a block edge inside long padding (its first copy crosses
/// the 64-byte edge, its second the 128-byte one), is masked by the engine as by the reference.
#[test]
fn the_engine_masks_the_corpus_as_the_reference_does_at_every_offset() {
    let corpus = include_str!("../../../tests/data/pii_corpus.jsonl");
    let filler = "2024-01-15 worker ok step=3 loss=0.25 queue idle 10.1.2 batch ready cache warm ";
    let pairs = pairs();
    let mut failures = Vec::new();
    for line in corpus.lines().filter(|line| !line.trim().is_empty()) {
        let case: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        let text = case["text"].as_str().expect("a text");
        let padding = filler.repeat(2);
        let long = (0..=70).map(|offset| format!("{}{text} {filler}{text}", &padding[..offset]));
        for candidate in std::iter::once(text.to_string()).chain(long) {
            for pair in &pairs {
                if let Err(difference) = pair.compare(&candidate) {
                    failures.push(difference);
                }
            }
        }
        if let Some(key) = case["key"].as_str() {
            for pair in &pairs {
                let (engine, reference) = (
                    pair.engine.attribute(key, text),
                    pair.reference.attribute(key, text),
                );
                if engine != reference {
                    failures.push(format!(
                        "{}: attribute {key}={text:?}: {engine:?} vs {reference:?}",
                        pair.name
                    ));
                }
            }
        }
    }
    failures.dedup();
    assert!(
        failures.is_empty(),
        "{}",
        failures[..failures.len().min(20)].join("\n")
    );
}
