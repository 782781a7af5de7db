//! Durations written the way people write them: `200ms`, `5s`, `1m30s`.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// Deserialises a human duration string; bare numbers are rejected because their unit would be a guess.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Number(serde_json::Number),
    }
    match Raw::deserialize(deserializer)? {
        Raw::Text(text) => humantime::parse_duration(text.trim()).map_err(|e| {
            serde::de::Error::custom(format!(
                "`{text}` is not a duration ({e}); write it with a unit, like `200ms`, `5s` or `1m`"
            ))
        }),
        Raw::Number(n) if n.as_u64() == Some(0) => Ok(Duration::ZERO),
        Raw::Number(n) => Err(serde::de::Error::custom(format!(
            "`{n}` has no unit; write durations like `{n}s` or `{n}ms`"
        ))),
    }
}

/// Serialises as a human duration string.
pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&humantime::format_duration(*value).to_string())
}

/// The same for `Option<Duration>` fields (absent or `null` is `None`).
pub mod option {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    /// Deserialises an optional human duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapped(#[serde(deserialize_with = "super::deserialize")] Duration);
        Ok(Option::<Wrapped>::deserialize(deserializer)?.map(|Wrapped(d)| d))
    }
}
