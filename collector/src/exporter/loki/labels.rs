//! Which attributes become Loki index labels, under what names, and the guards that keep the number of streams
//! low: a label per value of a bounded attribute, never an id.
//!
//! The defaults follow Loki 3's OTLP ingestion (`-distributor.otlp.default_resource_attributes_as_index_labels`,
//! grafana/loki `pkg/loghttp/push/otlplabels`), minus `service.instance.id` and `k8s.pod.name`: Loki's labels
//! guide (`docs/sources/get-started/labels/_index.md`) keeps them only for compatibility, and the Vigil SDK gives
//! every process a new `service.instance.id`, which would start a new stream on every restart.

use std::collections::{BTreeMap, HashMap, HashSet};

/// Resource attributes that are index labels by default.
pub const DEFAULT_RESOURCE_LABELS: &[&str] = &[
    "service.name",
    "service.namespace",
    "deployment.environment",
    "deployment.environment.name",
    "cloud.region",
    "cloud.availability_zone",
    "k8s.cluster.name",
    "k8s.namespace.name",
    "k8s.container.name",
    "container.name",
    "k8s.replicaset.name",
    "k8s.deployment.name",
    "k8s.statefulset.name",
    "k8s.daemonset.name",
    "k8s.cronjob.name",
    "k8s.job.name",
];

/// Loki's default `max_label_names_per_series`.
pub const MAX_LABEL_NAMES: usize = 15;

/// Label names that hold a per-request or per-run id: a stream per value would exhaust Loki's stream limit.
const ID_LABELS: &[&str] = &[
    "trace_id",
    "span_id",
    "request_id",
    "experiment_id",
    "run_id",
    "mlflow_run_id",
    "session_id",
    "user_id",
    "service_instance_id",
];

/// Loki's label-name syntax (the PromQL lexer's unquoted names): `[a-zA-Z_][a-zA-Z0-9_]*`. Other characters
/// become `_`, as Loki's OTLP path and the Prometheus translation do; a leading digit gets a `_` in front.
pub fn sanitize(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 1);
    if name.starts_with(|c: char| c.is_ascii_digit()) || name.is_empty() {
        out.push('_');
    }
    out.extend(
        name.chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }),
    );
    out
}

/// Why `label` (a sanitised name) may not be an index label, if it may not.
pub fn forbidden(label: &str) -> Option<&'static str> {
    if ID_LABELS.contains(&label) || label.ends_with("_trace_id") || label.ends_with("_request_id")
    {
        return Some(
            "holds an id: one stream per value exhausts Loki's stream limit and its index; it is sent as \
             structured metadata, which Grafana can filter on (`| trace_id=\"…\"`)",
        );
    }
    if label.starts_with("__") {
        return Some("names starting with `__` are reserved for Loki's internal labels");
    }
    None
}

/// Every value [`level`] gives: what a `level` selector can match.
pub const LEVELS: &[&str] = &[
    "trace", "debug", "info", "warn", "error", "critical", "fatal", "unknown",
];

/// The label value of an OTLP severity: Loki's `detected_level` values.
pub fn level(severity_text: &str, severity_number: i32) -> &'static str {
    match severity_text.to_ascii_lowercase().as_str() {
        "trace" => return "trace",
        "debug" => return "debug",
        "info" | "information" | "notice" => return "info",
        "warn" | "warning" => return "warn",
        "error" | "err" => return "error",
        "critical" | "crit" => return "critical",
        "fatal" | "panic" | "emergency" | "alert" => return "fatal",
        _ => {}
    }
    match severity_number {
        1..=4 => "trace",
        5..=8 => "debug",
        9..=12 => "info",
        13..=16 => "warn",
        17..=20 => "error",
        21..=24 => "fatal",
        _ => "unknown",
    }
}

/// A label value in a LogQL selector: quoted, with `\`, `"` and line breaks escaped (Go's `strconv.Quote`
/// for the characters that matter).
pub fn quote_into(value: &str, out: &mut String) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A label set as Loki's selector text, sorted by name: `{level="info", service_name="api"}`.
pub fn selector(labels: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(16 + labels.len() * 24);
    out.push('{');
    for (i, (name, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(name);
        out.push('=');
        quote_into(value, &mut out);
    }
    out.push('}');
    out
}

/// Distinct values seen per optional label, and streams seen: the state behind the cardinality guards.
#[derive(Debug, Default)]
pub struct Cardinality {
    values: HashMap<String, HashSet<String>>,
    streams: HashSet<String>,
}

/// What [`Cardinality::admit`] decided for one value of an optional label.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// The value may be a label.
    Label,
    /// The label has reached its cap of distinct values: the value goes to structured metadata.
    OverCap,
}

impl Cardinality {
    /// Whether `value` of the optional label `name` may be a label, given at most `cap` distinct values.
    pub fn admit(&mut self, name: &str, value: &str, cap: usize) -> Admission {
        let values = self.values.entry(name.to_string()).or_default();
        if values.contains(value) {
            return Admission::Label;
        }
        if values.len() >= cap {
            return Admission::OverCap;
        }
        values.insert(value.to_string());
        Admission::Label
    }

    /// Whether the stream `labels` is known or may be added under `max_streams`; a known stream is always
    /// admitted.
    pub fn admit_stream(&mut self, labels: &str, max_streams: usize) -> bool {
        if self.streams.contains(labels) {
            return true;
        }
        if self.streams.len() >= max_streams {
            return false;
        }
        self.streams.insert(labels.to_string());
        true
    }

    /// Records `labels` as a stream whatever the cap (the stream of the required labels alone, which every
    /// entry can fall back to).
    pub fn force_stream(&mut self, labels: &str) {
        if !self.streams.contains(labels) {
            self.streams.insert(labels.to_string());
        }
    }

    /// Streams currently known.
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_loki_syntax() {
        assert_eq!(sanitize("service.name"), "service_name");
        assert_eq!(sanitize("app.kubernetes.io/name"), "app_kubernetes_io_name");
        assert_eq!(sanitize("0day"), "_0day");
        assert_eq!(sanitize("ok_Name1"), "ok_Name1");
        assert_eq!(sanitize(""), "_");
    }

    #[test]
    fn ids_and_reserved_names_are_refused() {
        for id in [
            "trace_id",
            "request_id",
            "experiment_id",
            "run_id",
            "http_request_id",
        ] {
            assert!(forbidden(id).is_some(), "{id}");
        }
        assert!(forbidden("__name__").is_some());
        assert!(forbidden("component").is_none());
        assert!(forbidden("model_id_kind").is_none());
    }

    #[test]
    fn every_level_is_listed_in_levels() {
        let texts = [
            "",
            "trace",
            "debug",
            "info",
            "information",
            "notice",
            "warn",
            "warning",
            "error",
            "err",
            "critical",
            "crit",
            "fatal",
            "panic",
            "emergency",
            "alert",
            "other",
        ];
        let mut seen = std::collections::BTreeSet::new();
        for text in texts {
            for number in -1..=25 {
                let value = level(text, number);
                assert!(LEVELS.contains(&value), "{value}");
                seen.insert(value);
            }
        }
        assert_eq!(
            seen.len(),
            LEVELS.len(),
            "LEVELS lists a value level never gives"
        );
    }

    #[test]
    fn levels_from_text_then_number() {
        assert_eq!(level("WARNING", 0), "warn");
        assert_eq!(level("CRITICAL", 21), "critical");
        assert_eq!(level("", 17), "error");
        assert_eq!(level("", 9), "info");
        assert_eq!(level("", 24), "fatal");
        assert_eq!(level("", 4), "trace");
        assert_eq!(level("", 5), "debug");
        assert_eq!(level("", 16), "warn");
        assert_eq!(level("", 0), "unknown");
        assert_eq!(level("Info", 0), "info");
        // Every spelling overrides the number.
        for (text, expected) in [
            ("TRACE", "trace"),
            ("debug", "debug"),
            ("notice", "info"),
            ("Err", "error"),
            ("crit", "critical"),
            ("panic", "fatal"),
            ("emergency", "fatal"),
        ] {
            assert_eq!(level(text, 9), expected, "{text}");
        }
        assert_eq!(level("error", 9), "error");
    }

    #[test]
    fn selector_is_sorted_and_quoted() {
        let labels: BTreeMap<String, String> = [
            ("service_name".to_string(), "a\"b\\c\nd".to_string()),
            ("level".to_string(), "info".to_string()),
        ]
        .into();
        assert_eq!(
            selector(&labels),
            "{level=\"info\", service_name=\"a\\\"b\\\\c\\nd\"}"
        );
    }

    #[test]
    fn caps_admit_known_values_and_refuse_new_ones() {
        let mut cardinality = Cardinality::default();
        assert_eq!(cardinality.admit("pod", "a", 2), Admission::Label);
        assert_eq!(cardinality.admit("pod", "b", 2), Admission::Label);
        assert_eq!(cardinality.admit("pod", "c", 2), Admission::OverCap);
        assert_eq!(cardinality.admit("pod", "a", 2), Admission::Label);
        assert!(cardinality.admit_stream("{a=\"1\"}", 1));
        assert!(!cardinality.admit_stream("{a=\"2\"}", 1));
        assert!(cardinality.admit_stream("{a=\"1\"}", 1));
        cardinality.force_stream("{a=\"3\"}");
        assert_eq!(cardinality.stream_count(), 2);
    }
}
