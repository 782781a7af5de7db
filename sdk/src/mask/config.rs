//! The masking configuration, shared word for word by the SDK (`mask:` in the logging YAML, or
//! [`crate::Builder::mask`]) and the collector's `mask` processor.

use serde::Deserialize;

use super::{Action, Detector};

/// One built-in detector's setting: `{enabled: false}`, `{action: hash}`, or both.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DetectorSetting {
    /// On or off; unset keeps the detector's default.
    pub enabled: Option<bool>,
    /// What to do with a match; unset means `redact`.
    pub action: Option<Action>,
}

/// The built-in detectors, by name. Every one is on by default except `phone` and `iban`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorSettings {
    /// E-mail addresses.
    pub email: DetectorSetting,
    /// Payment card numbers (13–19 digits, known issuer prefix, Luhn-valid; spaces or dashes between groups).
    pub payment_card: DetectorSetting,
    /// IPv4 addresses.
    pub ipv4: DetectorSetting,
    /// IPv6 addresses.
    pub ipv6: DetectorSetting,
    /// JSON Web Tokens.
    pub jwt: DetectorSetting,
    /// `Bearer …` and `Basic …` credentials, where a word starts or as the value of any key (`auth=Bearer …`).
    pub auth_header: DetectorSetting,
    /// Well-known API key shapes (AWS, GitHub, GitLab, Slack, Stripe, OpenAI-style `sk-…`, Google).
    pub api_key: DetectorSetting,
    /// PEM private key blocks.
    pub private_key: DetectorSetting,
    /// `password=…`, `token: …`, `"secret": "…"` pairs in text, URLs and query strings (same key list as
    /// `sensitive_keys`).
    pub secret_pair: DetectorSetting,
    /// The password in `scheme://user:password@host` URLs.
    pub url_credentials: DetectorSetting,
    /// Phone numbers in international (`+44 20 7946 0958`) or North American (`(415) 555-2671`) form; opt-in.
    pub phone: DetectorSetting,
    /// IBANs (mod-97 checked); opt-in.
    pub iban: DetectorSetting,
}

impl DetectorSettings {
    /// The setting of `detector`.
    pub fn get(&self, detector: Detector) -> DetectorSetting {
        match detector {
            Detector::Email => self.email,
            Detector::PaymentCard => self.payment_card,
            Detector::Ipv4 => self.ipv4,
            Detector::Ipv6 => self.ipv6,
            Detector::Jwt => self.jwt,
            Detector::AuthHeader => self.auth_header,
            Detector::ApiKey => self.api_key,
            Detector::PrivateKey => self.private_key,
            Detector::SecretPair => self.secret_pair,
            Detector::UrlCredentials => self.url_credentials,
            Detector::Phone => self.phone,
            Detector::Iban => self.iban,
        }
    }
}

/// A user rule: every match of `pattern` (Rust `regex` syntax) is replaced.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// The name used in replacements and in the `detector` label of the replacement counter.
    pub name: String,
    /// The regular expression.
    pub pattern: String,
    /// What to do with a match (`redact` by default; `drop` drops the attribute holding it).
    #[serde(default)]
    pub action: Option<Action>,
}

/// The masking policy. Its `Debug` output never shows `hash_key`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct MaskConfig {
    /// Masking is on unless this is `false` (the explicit opt-out; default `true`).
    pub enabled: bool,
    /// Built-in detectors.
    pub detectors: DetectorSettings,
    /// Attribute keys whose values are replaced whole, matched case-insensitively by word: `password` matches
    /// `db_password`, `dbPassword` and `X-Password`, `api_key` matches `apiKey`, but `token` does not match
    /// `max_tokens`. Replaces the default list when given.
    pub sensitive_keys: Vec<String>,
    /// What happens to the value of a sensitive key (`redact` by default).
    pub key_action: Action,
    /// Keys that are never touched, matched exactly but case-insensitively.
    pub allow_keys: Vec<String>,
    /// User rules, applied after the built-in detectors.
    pub rules: Vec<RuleConfig>,
    /// The replacement for `redact`; `{name}` is the detector's or rule's name.
    pub replacement: String,
    /// The key of the `hash` action's HMAC-SHA256 (required when any rule hashes). Use `${env:…}` in YAML
    /// rather than writing it in the file.
    pub hash_key: Option<String>,
    /// How many trailing characters `partial` keeps.
    pub partial_keep: usize,
}

/// The default sensitive keys.
pub const DEFAULT_SENSITIVE_KEYS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "authorization",
    "cookie",
    "set-cookie",
    "session",
    "private_key",
    "credentials",
];

impl Default for MaskConfig {
    fn default() -> Self {
        MaskConfig {
            enabled: true,
            detectors: DetectorSettings::default(),
            sensitive_keys: DEFAULT_SENSITIVE_KEYS
                .iter()
                .map(|k| k.to_string())
                .collect(),
            key_action: Action::Redact,
            allow_keys: Vec::new(),
            rules: Vec::new(),
            replacement: "[REDACTED:{name}]".into(),
            hash_key: None,
            partial_keep: 4,
        }
    }
}

impl std::fmt::Debug for MaskConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaskConfig")
            .field("enabled", &self.enabled)
            .field("detectors", &self.detectors)
            .field("sensitive_keys", &self.sensitive_keys)
            .field("key_action", &self.key_action)
            .field("allow_keys", &self.allow_keys)
            .field("rules", &self.rules)
            .field("replacement", &self.replacement)
            .field("hash_key", &self.hash_key.as_ref().map(|_| "<redacted>"))
            .field("partial_keep", &self.partial_keep)
            .finish()
    }
}
