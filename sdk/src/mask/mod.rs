//! PII and secret masking: one engine for every sink of the SDK and for the collector's `mask` processor.
//!
//! ```
//! use vigil::mask::{MaskConfig, Masker, Masked};
//!
//! let masker = Masker::new(&MaskConfig::default()).expect("the default policy is valid");
//! assert_eq!(
//!     masker.text("login failed for jane.doe@example.com from 203.0.113.7"),
//!     "login failed for [REDACTED:email] from [REDACTED:ipv4]"
//! );
//! // Sensitive keys are replaced whole; `max_tokens` is not `token`.
//! assert_eq!(masker.attribute("db_password", "hunter2"), Masked::Keep("[REDACTED:sensitive_key]".into()));
//! assert_eq!(masker.attribute("max_tokens", "512"), Masked::Keep("512".into()));
//! ```
//!
//! Text that holds nothing to mask is returned borrowed: no allocation, one tokenising pass over the bytes in
//! which a token is examined only when its byte classes say a detector could match. Replacements are counted per detector ([`Masker::replacements`]); the
//! original value is never kept, logged or put in an error.

mod check;
mod classify;
mod config;
mod detect;
#[cfg(test)]
mod differential;
mod keys;
mod otel;
#[cfg(test)]
mod reference;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;

/// The collector's packed check of many short values (hidden: a hook for `vigil-collector`'s `mask` processor).
#[doc(hidden)]
pub use check::ChangeCheck;
pub use config::{
    DEFAULT_SENSITIVE_KEYS, DetectorSetting, DetectorSettings, MaskConfig, RuleConfig,
};
use detect::{Hit, Scanner};
use keys::KeyMatcher;
pub use otel::MaskingSpanExporter;

/// What happens to a match.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Replace with the configured replacement (`[REDACTED:email]`).
    #[default]
    Redact,
    /// Replace with a keyed HMAC-SHA256, truncated to 16 hex digits (`[HASH:email:1f0c…]`): stable, so records
    /// about one user still correlate, but not reversible without the key.
    Hash,
    /// Keep the last `partial_keep` characters (`****1111`); values too short to hide that way are redacted.
    Partial,
    /// Remove the attribute that holds the match (in free text, where there is nothing to remove: redact).
    Drop,
}

/// A built-in detector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Detector {
    /// E-mail addresses.
    Email,
    /// Payment card numbers.
    PaymentCard,
    /// IPv4 addresses.
    Ipv4,
    /// IPv6 addresses.
    Ipv6,
    /// JSON Web Tokens.
    Jwt,
    /// `Bearer`/`Basic` credentials.
    AuthHeader,
    /// Well-known API key shapes.
    ApiKey,
    /// PEM private keys.
    PrivateKey,
    /// `password=…` pairs in text.
    SecretPair,
    /// Passwords in URLs.
    UrlCredentials,
    /// Phone numbers (opt-in).
    Phone,
    /// IBANs (opt-in).
    Iban,
}

impl Detector {
    /// How many built-in detectors there are.
    pub const COUNT: usize = 12;
    /// All of them.
    pub const ALL: [Detector; Detector::COUNT] = [
        Detector::Email,
        Detector::PaymentCard,
        Detector::Ipv4,
        Detector::Ipv6,
        Detector::Jwt,
        Detector::AuthHeader,
        Detector::ApiKey,
        Detector::PrivateKey,
        Detector::SecretPair,
        Detector::UrlCredentials,
        Detector::Phone,
        Detector::Iban,
    ];

    /// The name used in config, replacements and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Detector::Email => "email",
            Detector::PaymentCard => "payment_card",
            Detector::Ipv4 => "ipv4",
            Detector::Ipv6 => "ipv6",
            Detector::Jwt => "jwt",
            Detector::AuthHeader => "auth_header",
            Detector::ApiKey => "api_key",
            Detector::PrivateKey => "private_key",
            Detector::SecretPair => "secret_pair",
            Detector::UrlCredentials => "url_credentials",
            Detector::Phone => "phone",
            Detector::Iban => "iban",
        }
    }

    fn on_by_default(self) -> bool {
        !matches!(self, Detector::Phone | Detector::Iban)
    }
}

/// The name of the sensitive-key rule in replacements and metrics.
pub const SENSITIVE_KEY: &str = "sensitive_key";

/// A masking policy that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MaskError {
    /// A user rule's pattern does not compile.
    #[error("rules[{index}] (`{name}`): invalid pattern: {reason}")]
    InvalidRule {
        /// Position in `rules`.
        index: usize,
        /// The rule's name.
        name: String,
        /// What the regex compiler said.
        reason: String,
    },
    /// A user rule has no name.
    #[error("rules[{index}]: `name` must not be empty")]
    UnnamedRule {
        /// Position in `rules`.
        index: usize,
    },
    /// `hash` is used but no key was given.
    #[error(
        "{what} uses the `hash` action, which needs `hash_key` (e.g. `hash_key: ${{env:VIGIL_MASK_HASH_KEY}}`)"
    )]
    MissingHashKey {
        /// The first rule or detector that hashes.
        what: String,
    },
}

/// The outcome for an attribute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Masked<'a> {
    /// Keep the attribute with this value (borrowed when unchanged).
    Keep(Cow<'a, str>),
    /// Remove the attribute.
    Drop,
}

struct Rule {
    regex: regex::Regex,
    action: Action,
}

struct Inner {
    enabled: [bool; Detector::COUNT],
    actions: [Action; Detector::COUNT],
    scanner: Scanner,
    key_action: Action,
    allow: Vec<String>,
    rules: Vec<Rule>,
    /// Names by counter index: detectors, then the sensitive-key rule, then user rules.
    names: Vec<String>,
    /// The `redact` replacement per counter index.
    redactions: Vec<String>,
    counts: Vec<AtomicU64>,
    hash_key: Option<Hmac<Sha256>>,
    partial_keep: usize,
}

/// The compiled masking engine; cheap to clone and share between threads.
#[derive(Clone)]
pub struct Masker {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Masker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Masker")
            .field("detectors", &self.inner.enabled)
            .field("rules", &self.inner.rules.len())
            .finish_non_exhaustive()
    }
}

impl Masker {
    /// Compiles `config`.
    pub fn new(config: &MaskConfig) -> Result<Masker, MaskError> {
        let mut enabled = [false; Detector::COUNT];
        let mut actions = [Action::Redact; Detector::COUNT];
        let mut hashing: Option<String> = None;
        for detector in Detector::ALL {
            let setting = config.detectors.get(detector);
            enabled[detector as usize] = setting.enabled.unwrap_or(detector.on_by_default());
            actions[detector as usize] = setting.action.unwrap_or_default();
            if enabled[detector as usize] && actions[detector as usize] == Action::Hash {
                hashing.get_or_insert_with(|| format!("detectors.{}", detector.name()));
            }
        }
        if config.key_action == Action::Hash && !config.sensitive_keys.is_empty() {
            hashing.get_or_insert_with(|| "key_action".into());
        }
        let mut names: Vec<String> = Detector::ALL.iter().map(|d| d.name().to_string()).collect();
        names.push(SENSITIVE_KEY.into());
        let mut rules = Vec::new();
        for (index, rule) in config.rules.iter().enumerate() {
            if rule.name.trim().is_empty() {
                return Err(MaskError::UnnamedRule { index });
            }
            let regex = regex::Regex::new(&rule.pattern).map_err(|e| MaskError::InvalidRule {
                index,
                name: rule.name.clone(),
                reason: e.to_string(),
            })?;
            let action = rule.action.unwrap_or_default();
            if action == Action::Hash {
                hashing.get_or_insert_with(|| format!("rules[{index}] (`{}`)", rule.name));
            }
            names.push(rule.name.clone());
            rules.push(Rule { regex, action });
        }
        let hash_key = match (&config.hash_key, hashing) {
            (Some(key), _) if !key.is_empty() => Some(
                Hmac::<Sha256>::new_from_slice(key.as_bytes())
                    .expect("HMAC accepts keys of any length"),
            ),
            (_, Some(what)) => return Err(MaskError::MissingHashKey { what }),
            _ => None,
        };
        let redactions = names
            .iter()
            .map(|name| config.replacement.replace("{name}", name))
            .collect();
        Ok(Masker {
            inner: Arc::new(Inner {
                enabled,
                actions,
                scanner: Scanner::new(enabled, KeyMatcher::new(&config.sensitive_keys)),
                key_action: config.key_action,
                allow: config
                    .allow_keys
                    .iter()
                    .map(|k| k.to_ascii_lowercase())
                    .collect(),
                counts: names.iter().map(|_| AtomicU64::new(0)).collect(),
                names,
                redactions,
                rules,
                hash_key,
                partial_keep: config.partial_keep,
            }),
        })
    }

    /// Whether `key` is on the allow-list (never touched).
    pub fn is_allowed(&self, key: &str) -> bool {
        !self.inner.allow.is_empty() && self.inner.allow.iter().any(|a| a.eq_ignore_ascii_case(key))
    }

    /// Whether the value of `key` is replaced whole whatever it holds (and the key is not allowed).
    pub fn is_sensitive_key(&self, key: &str) -> bool {
        self.inner.scanner.keys.is_sensitive(key) && !self.is_allowed(key)
    }

    /// Masks free text: log bodies, span names, status and exception messages. A `drop` match redacts here.
    pub fn text<'a>(&self, text: &'a str) -> Cow<'a, str> {
        match self.apply(text, false) {
            Masked::Keep(text) => text,
            Masked::Drop => Cow::Owned(String::new()),
        }
    }

    /// Masks the value of attribute `key`: allow-listed keys pass, sensitive keys are replaced whole, other
    /// values go through the detectors and rules.
    pub fn attribute<'a>(&self, key: &str, value: &'a str) -> Masked<'a> {
        if self.is_allowed(key) {
            return Masked::Keep(Cow::Borrowed(value));
        }
        if self.inner.scanner.keys.is_sensitive(key) {
            return self.replace_whole(value);
        }
        self.apply(value, true)
    }

    /// Masks a value by its content only, for a caller that has already checked its key with
    /// [`Masker::is_allowed`] and [`Masker::is_sensitive_key`] (the collector walks keys once). A hook for
    /// `vigil-collector`, hidden from the documentation.
    #[doc(hidden)]
    pub fn content<'a>(&self, value: &'a str) -> Masked<'a> {
        self.apply(value, true)
    }

    /// Whether masking `value` (as text or as an attribute value) could change it: some detector matches in
    /// it, or user rules exist (they need the text). A caller holding raw bytes (the collector walking
    /// encoded requests) skips the UTF-8 check and the masking call for the clean values that are nearly all
    /// of them. Allocates nothing when nothing matches. A hook for `vigil-collector`, hidden from the
    /// documentation.
    #[doc(hidden)]
    pub fn may_change(&self, value: &[u8]) -> bool {
        let inner = &*self.inner;
        if !inner.rules.is_empty() {
            return true;
        }
        let mut hits = Vec::new();
        inner.scanner.scan(value, &mut hits);
        !hits.is_empty()
    }

    /// The replacement of a sensitive key's value (`value` is its text form, used by `hash` and `partial`). A
    /// hook for `vigil-collector`, hidden from the documentation.
    #[doc(hidden)]
    pub fn replace_whole<'a>(&self, value: &str) -> Masked<'a> {
        let index = Detector::COUNT;
        self.count(index);
        match self.inner.key_action {
            Action::Drop => Masked::Drop,
            action => Masked::Keep(Cow::Owned(
                self.replacement(index, action, value).into_owned(),
            )),
        }
    }

    /// Replacements made so far, by detector or rule name (every name listed, zeros included).
    pub fn replacements(&self) -> Vec<(&str, u64)> {
        self.inner
            .names
            .iter()
            .zip(&self.inner.counts)
            .map(|(name, count)| (name.as_str(), count.load(Ordering::Relaxed)))
            .collect()
    }

    fn count(&self, index: usize) {
        self.inner.counts[index].fetch_add(1, Ordering::Relaxed);
    }

    fn apply<'a>(&self, text: &'a str, in_attribute: bool) -> Masked<'a> {
        let inner = &*self.inner;
        let mut hits: Vec<Hit> = Vec::new();
        inner.scanner.scan(text.as_bytes(), &mut hits);
        let mut current: Cow<'a, str> = Cow::Borrowed(text);
        if !hits.is_empty() {
            // Counted here and added to the shared counters once per detector: a dense text has a hit every
            // few dozen bytes, and threads masking at once would fight over the counters' cache line.
            let mut counts = [0u64; Detector::COUNT];
            let flush = |counts: &[u64; Detector::COUNT]| {
                for (index, &count) in counts.iter().enumerate() {
                    if count > 0 {
                        inner.counts[index].fetch_add(count, Ordering::Relaxed);
                    }
                }
            };
            let mut out = String::with_capacity(text.len());
            let mut copied = 0;
            for hit in &hits {
                let index = hit.detector as usize;
                let action = inner.actions[index];
                counts[index] += 1;
                if action == Action::Drop && in_attribute {
                    flush(&counts);
                    return Masked::Drop;
                }
                out.push_str(&text[copied..hit.start]);
                match action {
                    // The common case, without a call.
                    Action::Redact => out.push_str(&inner.redactions[index]),
                    _ => out.push_str(&self.replacement(index, action, &text[hit.start..hit.end])),
                }
                copied = hit.end;
            }
            flush(&counts);
            out.push_str(&text[copied..]);
            current = Cow::Owned(out);
        }
        for (offset, rule) in inner.rules.iter().enumerate() {
            let index = Detector::COUNT + 1 + offset;
            if !rule.regex.is_match(&current) {
                continue;
            }
            if rule.action == Action::Drop && in_attribute {
                self.count(index);
                return Masked::Drop;
            }
            let replaced = rule
                .regex
                .replace_all(&current, |found: &regex::Captures<'_>| {
                    self.count(index);
                    self.replacement(index, rule.action, &found[0]).into_owned()
                })
                .into_owned();
            current = Cow::Owned(replaced);
        }
        Masked::Keep(current)
    }

    fn replacement(&self, index: usize, action: Action, original: &str) -> Cow<'_, str> {
        let inner = &*self.inner;
        Cow::Owned(match action {
            // The common case borrows: no allocation per redaction.
            Action::Redact | Action::Drop => return Cow::Borrowed(&inner.redactions[index]),
            Action::Hash => match &inner.hash_key {
                Some(key) => {
                    let mut mac = key.clone();
                    mac.update(original.as_bytes());
                    let digest = mac.finalize().into_bytes();
                    let mut out = format!("[HASH:{}:", inner.names[index]);
                    for byte in &digest[..8] {
                        out.push_str(&format!("{byte:02x}"));
                    }
                    out.push(']');
                    out
                }
                None => return Cow::Borrowed(&inner.redactions[index]),
            },
            Action::Partial => {
                let keep = inner.partial_keep;
                let length = original.chars().count();
                if keep == 0 || length <= keep * 2 {
                    return Cow::Borrowed(&inner.redactions[index]);
                }
                let tail: String = original.chars().skip(length - keep).collect();
                format!("****{tail}")
            }
        })
    }
}
