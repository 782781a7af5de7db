//! Splitting what a run logs into `runs/log-batch` requests that a tracking server accepts.
//!
//! The server's limits (`mlflow/utils/validation.py`): at most 1,000 metrics, 100 params and 100 tags per
//! request, 1,000 entities in all, and a JSON body under 1 MB; param values up to 6,000 characters (500 before
//! MLflow 2.8) and tag values up to 8,000 (5,000 before MLflow 3). Keys may hold letters, digits, `_ - . / `
//! and spaces and must be a normalised relative path.

use serde::Serialize;

/// One metric point, as `log-batch` takes it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Metric {
    /// The metric's key (`loss`, `system/cpu_utilization_percentage`).
    pub key: String,
    /// The value (MLflow refuses NaN's JSON spelling; non-finite values are left out before sending).
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The step (epoch or batch number).
    pub step: i64,
}

/// A param or tag.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
}

impl KeyValue {
    /// A key and its value.
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        KeyValue {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// The body of one `runs/log-batch` request (without `run_id`, which the client adds).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LogBatch {
    /// Metric points.
    pub metrics: Vec<Metric>,
    /// Params (write-once on the server).
    pub params: Vec<KeyValue>,
    /// Tags (last value wins).
    pub tags: Vec<KeyValue>,
}

impl LogBatch {
    /// Whether there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.metrics.is_empty() && self.params.is_empty() && self.tags.is_empty()
    }
}

/// What one server accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Metrics per request.
    pub metrics_per_batch: usize,
    /// Params per request.
    pub params_per_batch: usize,
    /// Tags per request.
    pub tags_per_batch: usize,
    /// Metrics, params and tags together per request.
    pub entities_per_batch: usize,
    /// JSON body bytes per request (kept well under the server's 1 MB).
    pub body_bytes: usize,
    /// Characters of a param value.
    pub param_value_chars: usize,
    /// Characters of a tag value.
    pub tag_value_chars: usize,
    /// Characters of a key.
    pub key_chars: usize,
}

impl Limits {
    /// The limits of MLflow `version` (as `/version` answers, `3.17.2`); the oldest limits when it is unknown.
    pub fn for_version(version: Option<&str>) -> Limits {
        let (major, minor) = version
            .and_then(|v| {
                let mut parts = v.trim().split('.');
                let major = parts.next()?.parse::<u32>().ok()?;
                let minor = parts
                    .next()
                    .and_then(|m| m.parse::<u32>().ok())
                    .unwrap_or(0);
                Some((major, minor))
            })
            .unwrap_or((0, 0));
        Limits {
            metrics_per_batch: 1000,
            params_per_batch: 100,
            tags_per_batch: 100,
            entities_per_batch: 1000,
            body_bytes: 900_000,
            param_value_chars: if (major, minor) >= (2, 8) { 6000 } else { 500 },
            tag_value_chars: if major >= 3 { 8000 } else { 5000 },
            key_chars: 250,
        }
    }
}

/// Cut `value` to at most `chars` characters; whether it was cut.
pub fn truncate(value: &mut String, chars: usize) -> bool {
    match value.char_indices().nth(chars) {
        Some((at, _)) => {
            value.truncate(at);
            true
        }
        None => false,
    }
}

/// `key` made acceptable to the server: characters outside `[A-Za-z0-9_\-. /]` become `_`, empty and `.`/`..`
/// path segments are dropped, and the result is cut to `max_chars`. An empty result becomes `_`.
pub fn sanitize_key(key: &str, max_chars: usize) -> String {
    let replaced: String = key
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ' ' | '/') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut clean = replaced
        .split('/')
        .filter(|segment| !segment.is_empty() && *segment != "." && *segment != "..")
        .collect::<Vec<_>>()
        .join("/");
    truncate(&mut clean, max_chars);
    if clean.is_empty() {
        clean.push('_');
    }
    clean
}

/// What [`split`] changed to make the data acceptable, for one warning.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Adjusted {
    /// Param values cut to the server's limit (their keys).
    pub truncated_params: Vec<String>,
    /// Tag values cut to the server's limit (their keys).
    pub truncated_tags: Vec<String>,
    /// Metric points left out because their value is NaN or infinite.
    pub non_finite_metrics: u64,
}

impl Adjusted {
    /// Whether nothing was changed.
    pub fn is_empty(&self) -> bool {
        self.truncated_params.is_empty()
            && self.truncated_tags.is_empty()
            && self.non_finite_metrics == 0
    }
}

/// An entity's bytes in the JSON body, escapes included, plus its separating comma: exact, so requests stay
/// under `body_bytes` whatever the text (a control character takes six bytes escaped).
fn json_bytes(entity: &impl Serialize) -> usize {
    serde_json::to_vec(entity).map_or(usize::MAX / 4, |json| json.len()) + 1
}

/// Splits `batch` into requests within `limits`, after cutting over-long values and dropping non-finite
/// metric values (both reported in [`Adjusted`]). Order is kept within each kind; params come first, so a
/// run's params land before its metrics.
pub fn split(mut batch: LogBatch, limits: &Limits) -> (Vec<LogBatch>, Adjusted) {
    let mut adjusted = Adjusted::default();
    for param in &mut batch.params {
        if truncate(&mut param.value, limits.param_value_chars) {
            adjusted.truncated_params.push(param.key.clone());
        }
    }
    for tag in &mut batch.tags {
        if truncate(&mut tag.value, limits.tag_value_chars) {
            adjusted.truncated_tags.push(tag.key.clone());
        }
    }
    let before = batch.metrics.len();
    batch.metrics.retain(|m| m.value.is_finite());
    adjusted.non_finite_metrics = (before - batch.metrics.len()) as u64;

    let mut requests = Vec::new();
    let mut current = LogBatch::default();
    let mut bytes = 0usize;
    let full = |current: &LogBatch, bytes: usize, add: usize| {
        let entities = current.metrics.len() + current.params.len() + current.tags.len();
        entities >= limits.entities_per_batch || bytes + add > limits.body_bytes
    };
    for param in batch.params {
        let add = json_bytes(&param);
        if current.params.len() >= limits.params_per_batch
            // A key twice in one request is refused; the second goes into the next request.
            || current.params.iter().any(|p| p.key == param.key)
            || (full(&current, bytes, add) && !current.is_empty())
        {
            requests.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += add;
        current.params.push(param);
    }
    for tag in batch.tags {
        let add = json_bytes(&tag);
        if current.tags.len() >= limits.tags_per_batch
            || (full(&current, bytes, add) && !current.is_empty())
        {
            requests.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += add;
        current.tags.push(tag);
    }
    for metric in batch.metrics {
        let add = json_bytes(&metric);
        if current.metrics.len() >= limits.metrics_per_batch
            || (full(&current, bytes, add) && !current.is_empty())
        {
            requests.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += add;
        current.metrics.push(metric);
    }
    if !current.is_empty() {
        requests.push(current);
    }
    (requests, adjusted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn metric(key: &str, step: i64) -> Metric {
        Metric {
            key: key.into(),
            value: step as f64,
            timestamp: 1,
            step,
        }
    }

    #[test]
    fn limits_follow_the_server_version() {
        let new = Limits::for_version(Some("3.17.2"));
        assert_eq!((new.param_value_chars, new.tag_value_chars), (6000, 8000));
        let two = Limits::for_version(Some("2.22.1"));
        assert_eq!((two.param_value_chars, two.tag_value_chars), (6000, 5000));
        let old = Limits::for_version(Some("2.7.1"));
        assert_eq!((old.param_value_chars, old.tag_value_chars), (500, 5000));
        assert_eq!(Limits::for_version(None).param_value_chars, 500);
        assert_eq!(Limits::for_version(Some("garbage")).param_value_chars, 500);
    }

    #[test]
    fn five_thousand_metrics_become_five_requests() {
        let metrics = (0..5000).map(|i| metric("loss", i)).collect();
        let (requests, adjusted) = split(
            LogBatch {
                metrics,
                ..LogBatch::default()
            },
            &Limits::for_version(Some("3.0")),
        );
        assert_eq!(requests.len(), 5);
        assert!(requests.iter().all(|r| r.metrics.len() == 1000));
        assert!(adjusted.is_empty());
    }

    #[test]
    fn long_values_are_cut_and_reported() {
        let limits = Limits::for_version(Some("3.0"));
        let (requests, adjusted) = split(
            LogBatch {
                params: vec![KeyValue::new("config", "é".repeat(10_000))],
                tags: vec![KeyValue::new("note", "x".repeat(9000))],
                metrics: vec![
                    metric("ok", 1),
                    Metric {
                        value: f64::NAN,
                        ..metric("nan", 2)
                    },
                ],
            },
            &limits,
        );
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].params[0].value.chars().count(), 6000);
        assert_eq!(requests[0].tags[0].value.len(), 8000);
        assert_eq!(requests[0].metrics, vec![metric("ok", 1)]);
        assert_eq!(adjusted.truncated_params, vec!["config".to_string()]);
        assert_eq!(adjusted.truncated_tags, vec!["note".to_string()]);
        assert_eq!(adjusted.non_finite_metrics, 1);
    }

    #[test]
    fn adjustments_of_each_kind_are_reported() {
        let limits = Limits::for_version(Some("3.0"));
        let adjusted = |batch| split(batch, &limits).1;
        assert!(
            !adjusted(LogBatch {
                params: vec![KeyValue::new("p", "x".repeat(7000))],
                ..LogBatch::default()
            })
            .is_empty()
        );
        assert!(
            !adjusted(LogBatch {
                tags: vec![KeyValue::new("t", "x".repeat(9000))],
                ..LogBatch::default()
            })
            .is_empty()
        );
        assert!(
            !adjusted(LogBatch {
                metrics: vec![Metric {
                    value: f64::INFINITY,
                    ..metric("m", 1)
                }],
                ..LogBatch::default()
            })
            .is_empty()
        );
    }

    /// Every request's body under 1 MB, and everything kept, however the text escapes.
    fn assert_bodies_fit(batch: LogBatch) -> usize {
        let (requests, _) = split(batch.clone(), &Limits::for_version(Some("3.0")));
        let mut joined = LogBatch::default();
        for request in &requests {
            let body = serde_json::to_vec(request).unwrap();
            assert!(body.len() < 1_000_000, "{} bytes", body.len());
            joined.metrics.extend(request.metrics.iter().cloned());
            joined.params.extend(request.params.iter().cloned());
            joined.tags.extend(request.tags.iter().cloned());
        }
        assert_eq!(joined, batch);
        requests.len()
    }

    #[test]
    fn large_and_escaped_values_are_split_under_a_megabyte() {
        // 100 tags of 8,000 control characters: 48 KB each once escaped.
        let tags = (0..100)
            .map(|i| KeyValue::new(format!("t{i}"), "\u{1}".repeat(8000)))
            .collect();
        let requests = assert_bodies_fit(LogBatch {
            tags,
            ..LogBatch::default()
        });
        assert!(requests >= 5, "{requests}");
        // 100 params of 6,000 quotes (12 KB escaped) need two requests.
        let params = (0..100)
            .map(|i| KeyValue::new(format!("p{i}"), "\"".repeat(6000)))
            .collect();
        assert_eq!(
            assert_bodies_fit(LogBatch {
                params,
                ..LogBatch::default()
            }),
            2
        );
        // An entity bigger than a request alone goes alone, with no empty request before it.
        let (alone, _) = split(
            LogBatch {
                metrics: vec![metric(&"k".repeat(950_000), 1), metric("next", 2)],
                ..LogBatch::default()
            },
            &Limits::for_version(Some("3.0")),
        );
        assert_eq!(alone.len(), 2);
        assert!(alone.iter().all(|r| r.metrics.len() == 1));
        // 1,000 metrics with very long keys (longer than MLflow takes, but the split must still hold).
        let metrics = (0..1000).map(|i| metric(&"k".repeat(1500), i)).collect();
        assert!(
            assert_bodies_fit(LogBatch {
                metrics,
                ..LogBatch::default()
            }) >= 2
        );
    }

    #[test]
    fn a_param_key_twice_goes_into_separate_requests() {
        let (requests, _) = split(
            LogBatch {
                params: vec![KeyValue::new("lr", "0.1"), KeyValue::new("lr", "0.1")],
                ..LogBatch::default()
            },
            &Limits::for_version(Some("3.0")),
        );
        assert_eq!(requests.len(), 2);
    }

    #[test]
    fn keys_are_made_acceptable() {
        assert_eq!(sanitize_key("training.loss", 250), "training.loss");
        assert_eq!(
            sanitize_key("system/cpu_utilization_percentage", 250),
            "system/cpu_utilization_percentage"
        );
        assert_eq!(sanitize_key("a:b{c}", 250), "a_b_c_");
        assert_eq!(sanitize_key("/../x//y/", 250), "x/y");
        assert_eq!(sanitize_key("", 250), "_");
        assert_eq!(sanitize_key(&"k".repeat(300), 250).len(), 250);
    }

    proptest! {
        /// Every request is within the limits, and the requests together hold exactly the input, in order.
        #[test]
        fn requests_respect_limits_and_keep_everything(
            metrics in 0usize..3500,
            params in 0usize..260,
            tags in 0usize..260,
            key_len in 1usize..200,
        ) {
            let limits = Limits::for_version(Some("3.1"));
            let key = "k".repeat(key_len);
            let batch = LogBatch {
                metrics: (0..metrics).map(|i| metric(&key, i as i64)).collect(),
                params: (0..params).map(|i| KeyValue::new(format!("p{i}"), "v")).collect(),
                tags: (0..tags).map(|i| KeyValue::new(format!("t{i}"), "v".repeat(key_len))).collect(),
            };
            let (requests, _) = split(batch.clone(), &limits);
            let mut joined = LogBatch::default();
            for request in &requests {
                prop_assert!(!request.is_empty());
                prop_assert!(request.metrics.len() <= limits.metrics_per_batch);
                prop_assert!(request.params.len() <= limits.params_per_batch);
                prop_assert!(request.tags.len() <= limits.tags_per_batch);
                prop_assert!(request.metrics.len() + request.params.len() + request.tags.len() <= limits.entities_per_batch);
                let body = serde_json::to_vec(request).unwrap();
                prop_assert!(body.len() <= 1_000_000, "{} bytes", body.len());
                joined.metrics.extend(request.metrics.iter().cloned());
                joined.params.extend(request.params.iter().cloned());
                joined.tags.extend(request.tags.iter().cloned());
            }
            prop_assert_eq!(joined, batch);
            // Nothing wasted: the request count is the least the per-kind limits allow, give or take one
            // request where two kinds meet.
            let least = metrics.div_ceil(1000).max(params.div_ceil(100)).max(tags.div_ceil(100));
            prop_assert!(requests.len() <= metrics.div_ceil(1000) + params.div_ceil(100) + tags.div_ceil(100));
            prop_assert!(requests.len() >= least);
        }
    }
}
