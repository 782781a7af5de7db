use super::*;

#[test]
fn replacements_name_the_detector_and_are_counted() {
    let masker = Masker::new(&MaskConfig::default()).unwrap();
    assert_eq!(
        masker.text("mail a@example.com and b@example.com"),
        "mail [REDACTED:email] and [REDACTED:email]"
    );
    assert_eq!(
        masker.text("card 4111-1111-1111-1111."),
        "card [REDACTED:payment_card]."
    );
    let counts: std::collections::HashMap<_, _> = masker.replacements().into_iter().collect();
    assert_eq!(counts["email"], 2);
    assert_eq!(counts["payment_card"], 1);
    assert_eq!(counts["jwt"], 0);
}

#[test]
fn luhn_and_issuer_checks_keep_numbers_that_are_not_cards() {
    let masker = Masker::new(&MaskConfig::default()).unwrap();
    // Valid Visa length and prefix, wrong check digit.
    assert_eq!(masker.text("4111111111111112"), "4111111111111112");
    // Luhn-valid but no issuer starts with 1.
    assert_eq!(masker.text("1000000000000008"), "1000000000000008");
    assert_eq!(masker.text("4111111111111111"), "[REDACTED:payment_card]");
}

#[test]
fn hash_is_keyed_stable_and_unreadable() {
    let mut config = MaskConfig::default();
    config.detectors.email.action = Some(Action::Hash);
    config.hash_key = Some("k1".into());
    let a = Masker::new(&config).unwrap();
    let first = a.text("user jane@example.com").into_owned();
    assert_eq!(first, a.text("user jane@example.com"), "stable");
    assert!(first.starts_with("user [HASH:email:") && !first.contains("jane"));
    assert_ne!(first, a.text("user john@example.com"));
    config.hash_key = Some("k2".into());
    let b = Masker::new(&config).unwrap();
    assert_ne!(first, b.text("user jane@example.com"), "keyed");
}

#[test]
fn hash_without_a_key_is_a_config_error_that_names_the_rule() {
    let mut config = MaskConfig::default();
    config.detectors.payment_card.action = Some(Action::Hash);
    let error = Masker::new(&config).unwrap_err().to_string();
    assert!(
        error.contains("detectors.payment_card") && error.contains("hash_key"),
        "{error}"
    );
}

#[test]
fn partial_keeps_the_tail_and_drop_removes_the_attribute() {
    let mut config = MaskConfig::default();
    config.detectors.payment_card.action = Some(Action::Partial);
    config.detectors.email.action = Some(Action::Drop);
    let masker = Masker::new(&config).unwrap();
    assert_eq!(masker.text("card 4111111111111111"), "card ****1111");
    assert_eq!(
        masker.attribute("contact", "jane@example.com"),
        Masked::Drop
    );
    // In free text there is nothing to drop: the match is redacted.
    assert_eq!(masker.text("to jane@example.com"), "to [REDACTED:email]");
}

#[test]
fn key_rules_allow_list_and_custom_replacement() {
    let config = MaskConfig {
        allow_keys: vec!["session.kind".into()],
        replacement: "***{name}***".into(),
        key_action: Action::Drop,
        ..MaskConfig::default()
    };
    let masker = Masker::new(&config).unwrap();
    assert_eq!(
        masker.attribute("Session.Kind", "interactive a@example.com"),
        Masked::Keep("interactive a@example.com".into())
    );
    assert_eq!(masker.attribute("user.password", "x"), Masked::Drop);
    assert_eq!(masker.text("from 10.1.2.3"), "from ***ipv4***");
}

#[test]
fn user_rules_apply_after_the_detectors() {
    let config = MaskConfig {
        rules: vec![
            RuleConfig {
                name: "employee_id".into(),
                pattern: r"\bEMP-\d{6}\b".into(),
                action: None,
            },
            RuleConfig {
                name: "internal_host".into(),
                pattern: r"\b[a-z0-9-]+\.corp\.internal\b".into(),
                action: Some(Action::Drop),
            },
        ],
        ..MaskConfig::default()
    };
    let masker = Masker::new(&config).unwrap();
    assert_eq!(
        masker.text("EMP-123456 mailed x@example.com"),
        "[REDACTED:employee_id] mailed [REDACTED:email]"
    );
    assert_eq!(masker.attribute("host", "db1.corp.internal"), Masked::Drop);
    let counts: std::collections::HashMap<_, _> = masker.replacements().into_iter().collect();
    assert_eq!(counts["employee_id"], 1);
    assert_eq!(counts["internal_host"], 1);
}

#[test]
fn invalid_rules_are_reported_without_panicking() {
    let config = MaskConfig {
        rules: vec![RuleConfig {
            name: "broken".into(),
            pattern: "(unclosed".into(),
            action: None,
        }],
        ..MaskConfig::default()
    };
    let error = Masker::new(&config).unwrap_err().to_string();
    assert!(
        error.starts_with("rules[0] (`broken`): invalid pattern"),
        "{error}"
    );
}

#[test]
fn detectors_can_be_switched_off() {
    let mut config = MaskConfig::default();
    config.detectors.ipv4.enabled = Some(false);
    config.detectors.ipv6.enabled = Some(false);
    let masker = Masker::new(&config).unwrap();
    assert_eq!(
        masker.text("from 10.1.2.3 and ::1"),
        "from 10.1.2.3 and ::1"
    );
}

#[test]
fn the_config_rejects_unknown_detectors_and_actions() {
    let error =
        serde_json::from_str::<MaskConfig>(r#"{"detectors": {"emial": {"enabled": true}}}"#)
            .unwrap_err()
            .to_string();
    assert!(error.contains("unknown field `emial`"), "{error}");
    let error = serde_json::from_str::<MaskConfig>(r#"{"key_action": "shred"}"#)
        .unwrap_err()
        .to_string();
    assert!(error.contains("unknown variant `shred`"), "{error}");
}

#[test]
fn odd_input_never_panics() {
    let mut config = MaskConfig::default();
    config.detectors.phone.enabled = Some(true);
    config.detectors.iban.enabled = Some(true);
    let masker = Masker::new(&config).unwrap();
    for text in [
        "",
        "@",
        "a@",
        "@b.c",
        "::",
        ":::",
        "=",
        "password=",
        "password:",
        "\"password\"",
        "-----BEGIN",
        "-----BEGIN RSA PRIVATE KEY-----",
        "Bearer",
        "Basic ",
        "4111 ",
        "+",
        "+1",
        "(",
        "GB82",
        "eyJ",
        "eyJabcdefghij.",
        "é@ü.de",
        "ключ=значение",
        "password=\"unterminated",
        "http://a:b@",
        "AKIA",
        "0.0.0.",
        "1.2.3.4.5",
    ] {
        let _ = masker.text(text);
        let _ = masker.attribute("k", text);
    }
}

#[test]
fn the_hash_key_never_appears_in_debug_output() {
    let config = MaskConfig {
        hash_key: Some("k3y-do-not-print".into()),
        ..MaskConfig::default()
    };
    let shown = format!("{config:?} {:?}", Masker::new(&config).unwrap());
    assert!(!shown.contains("k3y-do-not-print"), "{shown}");
}

#[test]
fn keys_in_text_are_judged_in_every_case_style() {
    let masker = Masker::new(&MaskConfig::default()).unwrap();
    for key in [
        "password",
        "Password",
        "PASSWORD",
        "dbPassword",
        "db_password",
        "api-key",
        "APIKEY",
        "x.Authorization",
    ] {
        let line = format!("status=200 lr=3e-4 {key}=hunter2 user=bob");
        assert_eq!(
            masker.text(&line),
            format!("status=200 lr=3e-4 {key}=[REDACTED:secret_pair] user=bob"),
            "{key}"
        );
    }
    for key in ["passwords", "max_tokens", "Tokens", "keyboard"] {
        let line = format!("status=200 {key}=hunter2");
        assert_eq!(masker.text(&line), line, "{key}");
    }
}

#[test]
fn stripe_webhook_secrets_are_found_in_short_and_long_values() {
    let masker = Masker::new(&MaskConfig::default()).unwrap();
    let secret = "whsec_5WbX5kEWLlfzsGNjH64I8lOOqUB6e8FH";
    assert_eq!(masker.text(secret), "[REDACTED:api_key]");
    let long = format!(
        "{} webhook {secret} configured",
        "step done lr 3 ".repeat(5)
    );
    assert!(!masker.text(&long).contains("whsec_"));
}

/// GitHub fine-grained tokens (`github_pat_…`) start with `gi`, not `gh`: the quick prefix test in front of the
/// key shapes once let none of them through (found by the reference masker).
#[test]
fn github_fine_grained_tokens_are_masked() {
    let masker = Masker::new(&MaskConfig::default()).unwrap();
    let token = "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUV";
    assert_eq!(masker.text(token), "[REDACTED:api_key]");
    assert_eq!(
        masker.text(&format!("push with {token} failed")),
        "push with [REDACTED:api_key] failed"
    );
    assert_eq!(masker.text("github_pat_tooshort"), "github_pat_tooshort");
}

/// A span two detectors match alike is named by the same one wherever the text falls in the 64-byte blocks: an
/// address that is a password's value was `ipv6` when its first colon shared the block of the `=`, `secret_pair`
/// otherwise (found by the reference masker).
#[test]
fn identical_matches_are_named_the_same_at_every_offset() {
    let masker = Masker::new(&MaskConfig::default()).unwrap();
    for pad in 0..=140 {
        let padding = "x".repeat(pad);
        assert_eq!(
            masker.text(&format!("{padding} password=2001:db8::1 ok")),
            format!("{padding} password=[REDACTED:secret_pair] ok"),
            "offset {pad}"
        );
    }
}

/// An IBAN written in groups that starts a secret value runs past the value, which ends at the first space: the
/// groups after it were left in clear (found by the reference masker).
#[test]
fn an_iban_in_groups_after_a_sensitive_key_is_masked_whole() {
    let mut config = MaskConfig::default();
    config.detectors.iban.enabled = Some(true);
    let masker = Masker::new(&config).unwrap();
    assert_eq!(
        masker.text("password: GB82 WEST 1234 5698 7654 32 ok"),
        "password: [REDACTED:iban] ok"
    );
    // Without spaces the value and the IBAN are the same span, named by the pair.
    assert_eq!(
        masker.text("password: GB82WEST12345698765432 ok"),
        "password: [REDACTED:secret_pair] ok"
    );
}

/// The first colon of an address can be a pair's separator (`"password"::…`, `password ::…`): the key before it
/// is judged, and the rest of its value after the address masked. Colons inside the address were skipped from
/// its first byte on, which left that rest in clear (found by the reference masker).
#[test]
fn a_value_starting_with_an_ipv6_address_is_masked_to_its_end() {
    let masker = Masker::new(&MaskConfig::default()).unwrap();
    assert_eq!(
        masker.text(r#"{"password"::2-hunter2}"#),
        r#"{"password"[REDACTED:ipv6][REDACTED:secret_pair]}"#
    );
    assert_eq!(
        masker.text("password ::cafe:1-hunter2 ok"),
        "password [REDACTED:ipv6][REDACTED:secret_pair] ok"
    );
    // Colons inside an address that starts a key still separate nothing.
    assert_eq!(masker.text("via ::cafe:1 ok"), "via [REDACTED:ipv6] ok");
}

/// The scanner is built twice: for CPUs with AVX2 and the bit-manipulation instructions, and for any x86-64.
/// Both must find the same matches in every corpus line, at every offset across the 64-byte block edges.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[test]
fn the_fast_and_baseline_scanners_find_the_same_matches() {
    let mut config = MaskConfig::default();
    config.detectors.phone.enabled = Some(true);
    config.detectors.iban.enabled = Some(true);
    let masker = Masker::new(&config).unwrap();
    let scanner = &masker.inner.scanner;
    let corpus = include_str!("../../../tests/data/pii_corpus.jsonl");
    let filler = "2024-01-15 worker ok step=3 loss=0.25 queue idle 10.1.2 batch ready cache warm ";
    let mut compared = 0;
    for line in corpus.lines().filter(|line| !line.trim().is_empty()) {
        let case: serde_json::Value = serde_json::from_str(line).unwrap();
        let text = case["text"].as_str().unwrap();
        for offset in 0..=70 {
            let long = format!("{}{text} {filler}{text}", &filler[..offset]);
            let (mut fast, mut avx2, mut baseline) = (Vec::new(), Vec::new(), Vec::new());
            scanner.scan(long.as_bytes(), &mut fast);
            scanner.scan_avx2(long.as_bytes(), &mut avx2);
            scanner.scan_baseline(long.as_bytes(), &mut baseline);
            assert_eq!(fast, baseline, "offset {offset} of {text:?}");
            assert_eq!(avx2, baseline, "AVX2 build, offset {offset} of {text:?}");
            compared += usize::from(!fast.is_empty());
        }
    }
    assert!(compared > 1000, "only {compared} texts had matches");
}

/// The scanner's IPv6 parser accepts exactly what the standard library's does, with the same groups: checked
/// on address-shaped strings made of the characters an address holds.
#[test]
fn the_ipv6_parser_agrees_with_the_standard_library() {
    let alphabet = b"0123456789abcdefABCDEF:.::";
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut texts: Vec<String> = [
        "::",
        "::1",
        "1::",
        "1:2:3:4:5:6:7:8",
        "1:2:3:4:5:6:7::",
        "::2:3:4:5:6:7:8",
        "1:2:3:4:5:6:7:8::",
        "2001:db8::8a2e:370:7334",
        "::ffff:192.0.2.1",
        "::ffff:192.0.2.01",
        "1:2:3:4:5:6:1.2.3.4",
        "1:2:3:4:5:6:7:1.2.3.4",
        "::1.2.3.4",
        "1::1.2.3.4",
        "1.2.3.4",
        "12345::",
        "fe80::1:2:3:4:5:6",
        ":1:2:3:4:5:6:7",
        "1:2:3:4:5:6:7:",
        "1:::2",
        "1::2::3",
        "00000::",
        "0000::",
        "::256.1.1.1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for _ in 0..200_000 {
        // Groups of zero to five hex digits (an empty one makes `::`), sometimes an IPv4 tail (an octet of
        // 0 to 299, sometimes zero-prefixed), sometimes a stray character: near-addresses and addresses.
        let mut text = String::new();
        for group in 0..1 + next() % 9 {
            if group > 0 {
                text.push(':');
            }
            for _ in 0..next() % 6 {
                text.push(char::from(
                    b"0123456789abcdefABCDEF"[(next() % 22) as usize],
                ));
            }
        }
        if next() % 4 == 0 {
            let octets: Vec<String> = (0..3 + next() % 2)
                .map(|_| match next() % 8 {
                    0 => format!("0{}", next() % 10),
                    _ => (next() % 300).to_string(),
                })
                .collect();
            text.push(':');
            text.push_str(&octets.join("."));
        }
        if next() % 10 == 0 {
            let at = (next() as usize) % (text.len() + 1);
            text.insert(
                at,
                char::from(alphabet[(next() % alphabet.len() as u64) as usize]),
            );
        }
        texts.push(text);
    }
    let mut parsed = 0;
    for text in &texts {
        let ours = super::detect::ipv6_groups(text.as_bytes()).map(|(groups, _)| groups);
        let std = text
            .parse::<std::net::Ipv6Addr>()
            .ok()
            .map(|ip| ip.segments());
        assert_eq!(ours, std, "{text:?}");
        parsed += usize::from(std.is_some());
    }
    assert!(
        parsed > 10_000,
        "only {parsed} of the strings were addresses"
    );
}

/// The colons of an IPv6 address are skipped as `key:value` separators only where no key can be sensitive:
/// the address starts its key, and no sensitive name is made of hex digits alone.
#[test]
fn keys_inside_ipv6_addresses_are_judged_whenever_they_could_be_sensitive() {
    let default = Masker::new(&MaskConfig::default()).unwrap();
    // Nothing but the address to mask when it starts the key.
    assert_eq!(
        default.text("route 2001:db8::beef:1234:5/64 ok"),
        "route [REDACTED:ipv6]/64 ok"
    );
    // A key running into the address from before it (`token@2001`) is sensitive: its value, to the next
    // separator, is masked, past the end of the address.
    assert_eq!(
        default.text("login token@2001:db8::1/abc123 done"),
        "login token@[REDACTED:ipv6][REDACTED:secret_pair] done"
    );
    // A hex-only sensitive name (`beef`) can be a key inside an address: its value is masked too.
    let mut config = MaskConfig::default();
    config.sensitive_keys.push("beef".into());
    let hex_name = Masker::new(&config).unwrap();
    assert_eq!(
        hex_name.text("route 2001:db8::beef:1234:5/64 ok"),
        "route [REDACTED:ipv6][REDACTED:secret_pair] ok"
    );
}

/// E-mail addresses read from the masks are the ones walking each token finds, wherever the `@` sits in its
/// block and whatever surrounds the address (URLs with credentials, `%` and `+` in local parts, several `@`s).
#[test]
fn emails_read_from_the_masks_are_the_ones_walking_finds() {
    let masker = Masker::new(&MaskConfig::default()).unwrap();
    let mut walking = Masker::new(&MaskConfig::default()).unwrap();
    Arc::get_mut(&mut walking.inner)
        .unwrap()
        .scanner
        .emails_from_masks = false;
    let shapes = [
        "jane.doe@example.com",
        "a@b.co",
        "x@localhost",
        ".dots.@example.org.",
        "j.smith+billing@corp.example.co.uk",
        "100%off@shop.example.com",
        "user=jane@example.com",
        "mailto:jane@example.com",
        "https://app:Sup3rS3cret@db.example.com/prod",
        "ssh://git@github.com:org/repo",
        "a@b.com@c.org",
        "jane@example.com://host:pw@other.example.net/x",
        "@example.com",
        "name@-bad-.example.c0m",
        "very.long.local.part.with.many.words.and.more.words.still.going.on@sub.domain.example.com",
        "first@example.com,second@example.org;third@example.net",
    ];
    let mut found = 0;
    for shape in shapes {
        for offset in 0..=130 {
            let text = format!(
                "{}{shape} tail",
                "w".repeat(offset % 7) + &" ".repeat(offset - offset % 7)
            );
            let (ours, theirs) = (masker.text(&text), walking.text(&text));
            assert_eq!(ours, theirs, "offset {offset}: {text:?}");
            found += usize::from(ours != text);
        }
    }
    assert!(found > 1000, "only {found} texts had something masked");
}

/// Runs of hex words with colons are IPv6 addresses only with a digit or at least four groups written out:
/// `dead:beef::cafe` parses as an address, but reads as words.
#[test]
fn hex_words_are_an_ipv6_address_only_with_a_digit_or_four_groups() {
    let masker = Masker::new(&MaskConfig::default()).unwrap();
    for (text, masked) in [
        ("tag dead:beef::cafe ok", "tag dead:beef::cafe ok"),
        ("tag dead:beef::cafe:1 ok", "tag [REDACTED:ipv6] ok"),
        ("tag dead:beef:cafe::face ok", "tag [REDACTED:ipv6] ok"),
        ("tag ::ffff:192.0.2.1 ok", "tag [REDACTED:ipv6] ok"),
        ("tag ::1 and :: ok", "tag ::1 and :: ok"),
    ] {
        assert_eq!(masker.text(text), masked, "{text:?}");
    }
}

/// The quick test in front of the start conditions of a packed block never hides a candidate: checked on
/// every corpus text and on generated blocks made of the characters the conditions look at, with every
/// detector on and with the default set.
#[test]
fn the_quick_test_for_packed_values_never_hides_a_candidate() {
    let mut everything = MaskConfig::default();
    everything.detectors.phone.enabled = Some(true);
    everything.detectors.iban.enabled = Some(true);
    let maskers = [
        Masker::new(&MaskConfig::default()).unwrap(),
        Masker::new(&everything).unwrap(),
    ];
    let corpus = include_str!("../../../tests/data/pii_corpus.jsonl");
    let mut chunks: Vec<[u8; 64]> = Vec::new();
    for line in corpus.lines().filter(|line| !line.trim().is_empty()) {
        let case: serde_json::Value = serde_json::from_str(line).unwrap();
        for piece in case["text"].as_str().unwrap().as_bytes().chunks(63) {
            let mut chunk = [0u8; 64];
            chunk[..piece.len()].copy_from_slice(piece);
            chunks.push(chunk);
        }
    }
    // Each generated block draws from four characters of the alphabet, so that few blocks hold a candidate
    // of more than one kind.
    let alphabet = b"0123456789.:=@-_ abeAKIrsfgwxyz/\\0";
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..50_000 {
        let letters: Vec<u8> = (0..4)
            .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
            .collect();
        let mut chunk = [0u8; 64];
        for byte in chunk.iter_mut().take(63) {
            *byte = letters[(next() % 4) as usize];
        }
        chunks.push(chunk);
    }
    let mut with_candidates = 0;
    for masker in &maskers {
        let scanner = &masker.inner.scanner;
        for chunk in &chunks {
            let block = super::classify::classify_prefix(chunk, 64);
            let full = scanner.candidates_alone_in_full(&block);
            assert_eq!(
                scanner.candidates_alone(&block),
                full,
                "{:?}",
                String::from_utf8_lossy(chunk)
            );
            with_candidates += usize::from(full != 0);
        }
    }
    assert!(
        with_candidates > 1000,
        "only {with_candidates} blocks had candidates"
    );
}

/// HTTP allows several spaces between the scheme and the credential: a double space must not leave the token
/// in clear (it did: the credential was looked for right after the first space only).
#[test]
fn a_credential_after_several_spaces_is_masked() {
    let masker = Masker::new(&MaskConfig::default()).unwrap();
    for text in [
        "Authorization: Bearer  abcdefghijklmnopqrstuvwxyz012345",
        "sent with Bearer   abcdefghijklmnopqrstuvwxyz012345 next",
        "header Basic  dXNlcjpwYXNzd29yZA==",
    ] {
        let masked = masker.text(text);
        assert!(
            !masked.contains("abcdefghijklmnopqrstuvwxyz012345")
                && !masked.contains("dXNlcjpwYXNzd29yZA"),
            "{text} -> {masked}"
        );
        assert!(masked.contains("[REDACTED:"), "{text} -> {masked}");
    }
}

/// A credential that is the value of a key the masker does not know (`auth=Bearer …`) is named by its scheme:
/// it was left in clear, because a scheme was looked for only where a token starts.
#[test]
fn a_credential_as_the_value_of_any_key_is_masked() {
    let masker = Masker::new(&MaskConfig::default()).unwrap();
    for text in [
        "auth=Bearer abcdefghijklmnopqrstuvwxyz012345",
        "request hdr:Bearer abcdefghijklmnopqrstuvwxyz012345 sent",
        "x-upstream=Basic dXNlcjpwYXNzd29yZA==&next=1",
        "{\"auth\":\"Bearer abcdefghijklmnopqrstuvwxyz012345\"}",
    ] {
        let masked = masker.text(text);
        assert!(
            !masked.contains("abcdefghijklmnopqrstuvwxyz012345")
                && !masked.contains("dXNlcjpwYXNzd29yZA"),
            "{text} -> {masked}"
        );
        assert!(
            masked.contains("[REDACTED:auth_header]"),
            "{text} -> {masked}"
        );
    }
    // Inside a secret value, the credential after the scheme's space is masked too (the value ends at the
    // space; the reference masker finds it there as well).
    let masked = masker.text("password=abc:Bearer abcdefghijklmnopqrstuvwxyz012345");
    assert!(
        !masked.contains("abcdefghijklmnopqrstuvwxyz012345") && !masked.contains("abc:"),
        "{masked}"
    );
    // Inside a word the scheme is no scheme, a short value is no credential, and a credential has `=` only as
    // padding at its end: after `Bearer`, `expires_in=86400` is the next key and value (an OAuth token
    // response in logfmt), not a token.
    for text in [
        "mode=Bearerish abcdefghijklmnopqrstuvwxyz012345",
        "auth=Bearer short",
        "type=Bearer expires_in=86400",
        "kind: Bearer expires_in=86400 scope=read",
    ] {
        assert_eq!(masker.text(text), text);
    }
    // Padding is part of the credential.
    assert_eq!(
        masker.text("auth=Basic dXNlcjpwYXNzd29yZA== next"),
        "auth=Basic [REDACTED:auth_header] next"
    );
}

/// With IBANs on, an IBAN that is the value of a key the masker does not know (`iban=DE89…`) is masked: it was
/// looked for only where a token starts.
#[test]
fn an_iban_as_the_value_of_any_key_is_masked() {
    let mut config = MaskConfig::default();
    config.detectors.iban.enabled = Some(true);
    let masker = Masker::new(&config).unwrap();
    for (text, expected) in [
        ("iban=DE89370400440532013000", "iban=[REDACTED:iban]"),
        (
            "account:GB82WEST12345698765432 ok",
            "account:[REDACTED:iban] ok",
        ),
        (
            "to iban=DE89 3704 0044 0532 0130 00",
            "to iban=[REDACTED:iban]",
        ),
    ] {
        assert_eq!(masker.text(text), expected);
    }
    // Not at the start of a value: inside a word it is no IBAN.
    assert_eq!(
        masker.text("ref=XDE89370400440532013000"),
        "ref=XDE89370400440532013000"
    );
}
