//! OTLP log records into Loki pushes: labels, structured metadata, lines, and the timestamp rules Loki enforces
//! per stream.

use std::collections::{BTreeMap, HashMap};

use vigil_proto::loki::{EntryIndex, Push, StreamIndex};
use vigil_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
use vigil_proto::otlp::common::v1::{AnyValue, KeyValue, any_value::Value};

use super::labels::{self, Admission, Cardinality, MAX_LABEL_NAMES};
use super::{LineFormat, LokiExporterConfig, OldEntryAction, TooLongAction};

/// Nanoseconds.
const SECOND: i64 = 1_000_000_000;

/// One push for one tenant.
#[derive(Debug, Default)]
pub struct TenantPush {
    /// `X-Scope-OrgID`, when there is one.
    pub tenant: Option<String>,
    /// The streams and entries.
    pub push: Push,
    /// Each stream's labels, by stream index (the JSON encoding wants them as pairs).
    pub stream_labels: Vec<BTreeMap<String, String>>,
    streams: HashMap<String, StreamIndex>,
}

impl TenantPush {
    fn new(tenant: Option<String>) -> Self {
        TenantPush {
            tenant,
            ..TenantPush::default()
        }
    }

    fn stream(&mut self, labels: &BTreeMap<String, String>, selector: &str) -> StreamIndex {
        if let Some(&index) = self.streams.get(selector) {
            return index;
        }
        let index = self.push.stream(selector);
        self.streams.insert(selector.to_string(), index);
        self.stream_labels.push(labels.clone());
        index
    }
}

/// What the translation changed or left out, by reason, for the exporter's counters.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Adjustments {
    /// `(reason, action)` → entries: `("line_too_long", "truncated")`, `("too_far_behind", "rewritten")`…
    pub entries: BTreeMap<(&'static str, &'static str), u64>,
    /// Label values moved to structured metadata by a cap, by label name.
    pub label_overflow: BTreeMap<String, u64>,
}

impl Adjustments {
    fn count(&mut self, reason: &'static str, action: &'static str) {
        *self.entries.entry((reason, action)).or_default() += 1;
    }

    /// Entries left out of the pushes.
    pub fn dropped(&self) -> u64 {
        self.entries
            .iter()
            .filter(|((_, action), _)| *action == "dropped")
            .map(|(_, n)| n)
            .sum()
    }
}

/// State that outlives a batch: the cardinality guards and each stream's newest timestamp sent.
#[derive(Debug, Default)]
pub struct StreamState {
    /// Distinct label values and streams.
    pub cardinality: Cardinality,
    /// Newest timestamp sent per tenant and stream.
    newest: HashMap<(Option<String>, String), i64>,
}

impl StreamState {
    /// Forgets streams whose newest entry is older than `before`.
    fn forget_before(&mut self, before: i64) {
        self.newest.retain(|_, newest| *newest >= before);
    }
}

/// Where the records of one level and one set of record-label values go.
#[derive(Debug)]
struct Decision {
    /// The stream's labels.
    labels: BTreeMap<String, String>,
    /// The same as a selector.
    selector: String,
    /// Label values a cap sent to structured metadata instead.
    metadata: Vec<(String, String)>,
    /// The names of those labels, counted once per record.
    overflowed: Vec<String>,
    /// Positions in `Translator::record_labels` of the attributes used as labels or moved to metadata (they
    /// are left out of the line and of the attribute metadata).
    label_keys: Vec<usize>,
}

/// The translation rules of one exporter.
#[derive(Debug)]
pub struct Translator {
    resource_labels: Vec<(String, String)>,
    optional_resource_labels: Vec<(String, String)>,
    record_labels: Vec<(String, String)>,
    level: bool,
    max_values: usize,
    max_streams: usize,
    tenant_attribute: Option<String>,
    tenant_id: Option<String>,
    line_format: LineFormat,
    max_line_size: usize,
    too_long: TooLongAction,
    window: i64,
    max_age: i64,
    grace: i64,
    old_entries: OldEntryAction,
    max_batch_bytes: usize,
    max_batch_entries: usize,
}

impl Translator {
    /// The rules `config` describes.
    pub fn new(config: &LokiExporterConfig) -> Self {
        let pair = |key: &String| (key.clone(), labels::sanitize(key));
        Translator {
            resource_labels: if config.default_labels {
                labels::DEFAULT_RESOURCE_LABELS
                    .iter()
                    .map(|k| (k.to_string(), labels::sanitize(k)))
                    .collect()
            } else {
                vec![("service.name".into(), "service_name".into())]
            },
            optional_resource_labels: config.labels.resource.iter().map(pair).collect(),
            record_labels: config.labels.attributes.iter().map(pair).collect(),
            level: config.labels.level,
            max_values: config.labels.max_values_per_label,
            max_streams: config.max_streams,
            tenant_attribute: config.tenant_id_attribute.clone(),
            tenant_id: config.tenant_id.clone(),
            line_format: config.line_format,
            max_line_size: config.max_line_size,
            too_long: config.line_too_long,
            window: nanos(config.out_of_order_window),
            max_age: nanos(config.reject_old_samples_max_age),
            grace: nanos(config.creation_grace_period),
            old_entries: config.old_entries,
            max_batch_bytes: config.max_batch_bytes,
            max_batch_entries: config.max_batch_entries,
        }
    }

    /// The attribute a stream label was made from (`service_name` → `service.name`), which is the name Loki's
    /// OTLP endpoint must be given to make the same label; `level` and unknown names stay as they are.
    pub fn attribute_of<'a>(&'a self, label: &'a str) -> &'a str {
        self.resource_labels
            .iter()
            .chain(&self.optional_resource_labels)
            .chain(&self.record_labels)
            .find(|(_, name)| name == label)
            .map_or(label, |(key, _)| key.as_str())
    }

    /// Turns `requests` into pushes (per tenant, bounded by bytes and entries, entries sorted per stream) and
    /// applies the timestamp rules against `state`. `now` is in nanoseconds since the epoch.
    pub fn translate(
        &self,
        requests: &[ExportLogsServiceRequest],
        state: &mut StreamState,
        now: i64,
    ) -> (Vec<TenantPush>, Adjustments) {
        let mut done: Vec<TenantPush> = Vec::new();
        let mut open: HashMap<Option<String>, TenantPush> = HashMap::new();
        let mut adjustments = Adjustments::default();
        let mut line = Vec::new();
        let mut key = String::new();
        for resource_logs in requests.iter().flat_map(|r| &r.resource_logs) {
            let resource: &[KeyValue] = resource_logs
                .resource
                .as_ref()
                .map_or(&[], |r| r.attributes.as_slice());
            let tenant = self
                .tenant_attribute
                .as_ref()
                .and_then(|key| find(resource, key))
                .map(any_text)
                .or_else(|| self.tenant_id.clone());
            // Labels every entry of the resource has, and the resource attributes that go to metadata.
            let mut base = BTreeMap::new();
            let mut used = Vec::new();
            for (key, label) in &self.resource_labels {
                if let Some(value) = find(resource, key) {
                    base.insert(label.clone(), any_text(value));
                    used.push(key.as_str());
                }
            }
            base.entry("service_name".to_string())
                .or_insert_with(|| "unknown_service".to_string());
            let mut optional = BTreeMap::new();
            let mut overflow_metadata: Vec<(String, String)> = Vec::new();
            for (key, label) in &self.optional_resource_labels {
                if let Some(value) = find(resource, key) {
                    let text = any_text(value);
                    used.push(key.as_str());
                    match state.cardinality.admit(label, &text, self.max_values) {
                        Admission::Label => {
                            optional.insert(label.clone(), text);
                        }
                        Admission::OverCap => {
                            *adjustments.label_overflow.entry(label.clone()).or_default() += 1;
                            overflow_metadata.push((label.clone(), text));
                        }
                    }
                }
            }
            let resource_metadata: Vec<(String, String)> = resource
                .iter()
                .filter(|kv| !used.contains(&kv.key.as_str()))
                .filter(|kv| Some(&kv.key) != self.tenant_attribute.as_ref())
                .map(|kv| {
                    (
                        labels::sanitize(&kv.key),
                        kv.value.as_ref().map_or_else(String::new, any_text),
                    )
                })
                .chain(overflow_metadata)
                .collect();
            let mut decisions: HashMap<String, Decision> = HashMap::new();
            for scope_logs in &resource_logs.scope_logs {
                let scope_name = scope_logs
                    .scope
                    .as_ref()
                    .map(|s| s.name.as_str())
                    .unwrap_or("");
                for record in &scope_logs.log_records {
                    // The labels of a record depend only on its level and the values of the configured record
                    // labels: decide once per combination and resource.
                    let level = labels::level(&record.severity_text, record.severity_number);
                    key.clear();
                    key.push_str(level);
                    for (attribute, _) in &self.record_labels {
                        key.push('\u{0}');
                        match find(&record.attributes, attribute) {
                            Some(value) => key.push_str(&any_text(value)),
                            None => key.push('\u{1}'),
                        }
                    }
                    if !decisions.contains_key(key.as_str()) {
                        let decision = self.decide(
                            &base,
                            &optional,
                            level,
                            &record.attributes,
                            &mut state.cardinality,
                        );
                        decisions.insert(key.clone(), decision);
                    }
                    let decision = &decisions[key.as_str()];
                    for name in &decision.overflowed {
                        *adjustments.label_overflow.entry(name.clone()).or_default() += 1;
                    }
                    let mut metadata = decision.metadata.clone();
                    let label_keys: Vec<&str> = decision
                        .label_keys
                        .iter()
                        .map(|&i| self.record_labels[i].0.as_str())
                        .collect();

                    line.clear();
                    self.format_line(
                        record.body.as_ref(),
                        &record.attributes,
                        &label_keys,
                        &mut line,
                    );
                    if line.len() > self.max_line_size {
                        match self.too_long {
                            TooLongAction::Drop => {
                                adjustments.count("line_too_long", "dropped");
                                continue;
                            }
                            TooLongAction::Truncate => {
                                let mut end = self.max_line_size;
                                while end > 0 && !is_char_boundary(&line, end) {
                                    end -= 1;
                                }
                                metadata
                                    .push(("truncated_from_bytes".into(), line.len().to_string()));
                                line.truncate(end);
                                adjustments.count("line_too_long", "truncated");
                            }
                        }
                    }
                    let timestamp = if record.time_unix_nano != 0 {
                        record.time_unix_nano
                    } else if record.observed_time_unix_nano != 0 {
                        record.observed_time_unix_nano
                    } else {
                        now as u64
                    };
                    let timestamp = i64::try_from(timestamp).unwrap_or(i64::MAX);

                    let target = open
                        .entry(tenant.clone())
                        .or_insert_with(|| TenantPush::new(tenant.clone()));
                    if target.push.entry_count() >= self.max_batch_entries
                        || target.push.byte_len() >= self.max_batch_bytes
                    {
                        let full = std::mem::replace(target, TenantPush::new(tenant.clone()));
                        done.push(full);
                    }
                    let stream = target.stream(&decision.labels, &decision.selector);
                    let entry = target.push.entry(stream, timestamp, &line);
                    if !record.trace_id.is_empty() {
                        target
                            .push
                            .metadata(entry, "trace_id", &hex(&record.trace_id));
                    }
                    if !record.span_id.is_empty() {
                        target
                            .push
                            .metadata(entry, "span_id", &hex(&record.span_id));
                    }
                    if !record.severity_text.is_empty() {
                        target
                            .push
                            .metadata(entry, "severity_text", &record.severity_text);
                    }
                    if self.line_format == LineFormat::Raw {
                        for kv in &record.attributes {
                            if label_keys.contains(&kv.key.as_str()) {
                                continue;
                            }
                            let value = kv.value.as_ref().map_or_else(String::new, any_text);
                            target
                                .push
                                .metadata(entry, &labels::sanitize(&kv.key), &value);
                        }
                    }
                    for (name, value) in &metadata {
                        target.push.metadata(entry, name, value);
                    }
                    if !scope_name.is_empty() {
                        target.push.metadata(entry, "scope_name", scope_name);
                    }
                    for (name, value) in &resource_metadata {
                        target.push.metadata(entry, name, value);
                    }
                }
            }
        }
        done.extend(open.into_values());
        for push in &mut done {
            self.apply_time_rules(push, state, now, &mut adjustments);
        }
        done.retain(|p| p.push.entry_count() > 0);
        // A stream idle for two windows has been flushed by Loki, and its window no longer applies; forgetting
        // it keeps the state bounded.
        state.forget_before(now.saturating_sub(self.window.saturating_mul(2)));
        (done, adjustments)
    }

    /// The stream of a record of `level` with `attributes` in a resource whose required labels are `base` and
    /// optional ones `optional`, under the cardinality caps.
    fn decide(
        &self,
        base: &BTreeMap<String, String>,
        optional: &BTreeMap<String, String>,
        level: &'static str,
        attributes: &[KeyValue],
        cardinality: &mut Cardinality,
    ) -> Decision {
        let mut stream_labels = base.clone();
        let mut optional_labels = optional.clone();
        let mut metadata: Vec<(String, String)> = Vec::new();
        let mut overflowed = Vec::new();
        if self.level {
            stream_labels.insert("level".into(), level.into());
        }
        let mut label_keys = Vec::new();
        for (i, (key, label)) in self.record_labels.iter().enumerate() {
            if let Some(value) = find(attributes, key) {
                let text = any_text(value);
                label_keys.push(i);
                match cardinality.admit(label, &text, self.max_values) {
                    Admission::Label => {
                        optional_labels.insert(label.clone(), text);
                    }
                    Admission::OverCap => {
                        overflowed.push(label.clone());
                        metadata.push((label.clone(), text));
                    }
                }
            }
        }
        // Loki accepts 15 label names besides `service_name`: beyond that, optional labels go to metadata
        // first, then default ones (never `service_name` or `level`).
        while stream_labels.len() - 1 + optional_labels.len() > MAX_LABEL_NAMES {
            let (name, value) = match optional_labels.pop_last() {
                Some(pair) => pair,
                None => {
                    let Some(name) = stream_labels
                        .keys()
                        .rev()
                        .find(|k| *k != "service_name" && *k != "level")
                        .cloned()
                    else {
                        break;
                    };
                    let value = stream_labels.remove(&name).unwrap_or_default();
                    (name, value)
                }
            };
            overflowed.push(name.clone());
            metadata.push((name, value));
        }
        let mut all = stream_labels.clone();
        all.extend(optional_labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        let mut selector = labels::selector(&all);
        if !optional_labels.is_empty() && !cardinality.admit_stream(&selector, self.max_streams) {
            // Over max_streams: the entry goes to the stream of the required labels, the optional values with
            // it as metadata.
            for (name, value) in optional_labels {
                overflowed.push(name.clone());
                metadata.push((name, value));
            }
            all = stream_labels;
            selector = labels::selector(&all);
        }
        cardinality.force_stream(&selector);
        Decision {
            labels: all,
            selector,
            metadata,
            overflowed,
            label_keys,
        }
    }

    /// Sorts each stream's entries and rewrites (or drops) those Loki would refuse for their timestamp: older than
    /// the stream's newest entry minus the window, older than `reject_old_samples_max_age`, or newer than now plus
    /// the creation grace period.
    fn apply_time_rules(
        &self,
        target: &mut TenantPush,
        state: &mut StreamState,
        now: i64,
        adjustments: &mut Adjustments,
    ) {
        let push = &mut target.push;
        push.sort_entries();
        let streams: Vec<StreamIndex> = push.stream_indexes().collect();
        for stream in streams {
            let key = (target.tenant.clone(), push.labels(stream).to_string());
            let newest = state.newest.get(&key).copied();
            let too_old_before = now.saturating_sub(self.max_age);
            let behind_before = newest.map(|n| n.saturating_sub(self.window));
            let future_after = now.saturating_add(self.grace);
            // Rewritten timestamps land just inside what Loki accepts, with margins for its clock.
            let floor = (too_old_before.saturating_add(60 * SECOND))
                .max(behind_before.map_or(i64::MIN, |b| b.saturating_add(SECOND)));
            let entries: Vec<EntryIndex> = push.entries(stream).collect();
            let mut changed = false;
            for entry in entries {
                let timestamp = push.timestamp(entry);
                let reason = if timestamp < too_old_before {
                    Some(("too_old", floor))
                } else if behind_before.is_some_and(|b| timestamp < b) {
                    Some(("too_far_behind", floor))
                } else if timestamp > future_after {
                    Some(("too_new", now))
                } else {
                    None
                };
                let Some((reason, replacement)) = reason else {
                    continue;
                };
                match self.old_entries {
                    OldEntryAction::Drop => {
                        push.remove(stream, entry);
                        adjustments.count(reason, "dropped");
                    }
                    OldEntryAction::Rewrite => {
                        push.set_timestamp(entry, replacement);
                        push.metadata(entry, "original_timestamp", &timestamp.to_string());
                        adjustments.count(reason, "rewritten");
                        changed = true;
                    }
                }
            }
            if changed {
                push.sort_entries();
            }
            if let Some(last) = push.entries(stream).map(|e| push.timestamp(e)).max() {
                let newest = state.newest.entry(key).or_insert(last);
                *newest = (*newest).max(last);
            }
        }
    }

    /// Writes the line of a record in the configured format.
    fn format_line(
        &self,
        body: Option<&AnyValue>,
        attributes: &[KeyValue],
        label_keys: &[&str],
        out: &mut Vec<u8>,
    ) {
        let body_text = body.map_or_else(String::new, any_text);
        match self.line_format {
            LineFormat::Raw => out.extend_from_slice(body_text.as_bytes()),
            LineFormat::Json => {
                let mut object = serde_json::Map::new();
                object.insert(
                    "body".into(),
                    body.map_or(serde_json::Value::Null, any_json),
                );
                for kv in attributes {
                    if label_keys.contains(&kv.key.as_str()) {
                        continue;
                    }
                    object.insert(
                        kv.key.clone(),
                        kv.value.as_ref().map_or(serde_json::Value::Null, any_json),
                    );
                }
                // Serialising a map of JSON values cannot fail.
                let _ = serde_json::to_writer(&mut *out, &object);
            }
            LineFormat::Logfmt => {
                out.extend_from_slice(b"msg=");
                logfmt_value(&body_text, out);
                for kv in attributes {
                    if label_keys.contains(&kv.key.as_str()) {
                        continue;
                    }
                    out.push(b' ');
                    out.extend_from_slice(labels::sanitize(&kv.key).as_bytes());
                    out.push(b'=');
                    logfmt_value(&kv.value.as_ref().map_or_else(String::new, any_text), out);
                }
            }
        }
    }
}

fn nanos(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX)
}

fn is_char_boundary(bytes: &[u8], index: usize) -> bool {
    index >= bytes.len() || (bytes[index] as i8) >= -0x40
}

fn find<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attributes
        .iter()
        .rev()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// An attribute value as text, as Loki's OTLP path stringifies it: strings as they are, numbers and booleans
/// in their usual form, bytes in base64, arrays and maps as JSON.
pub fn any_text(value: &AnyValue) -> String {
    match &value.value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::BytesValue(b)) => base64(b),
        Some(Value::ArrayValue(_) | Value::KvlistValue(_)) => any_json(value).to_string(),
        Some(Value::StringValueStrindex(_)) | None => String::new(),
    }
}

fn any_json(value: &AnyValue) -> serde_json::Value {
    use serde_json::Value as J;
    match &value.value {
        Some(Value::StringValue(s)) => J::String(s.clone()),
        Some(Value::BoolValue(b)) => J::Bool(*b),
        Some(Value::IntValue(i)) => J::from(*i),
        Some(Value::DoubleValue(d)) => {
            serde_json::Number::from_f64(*d).map_or_else(|| J::String(d.to_string()), J::Number)
        }
        Some(Value::BytesValue(b)) => J::String(base64(b)),
        Some(Value::ArrayValue(array)) => J::Array(array.values.iter().map(any_json).collect()),
        Some(Value::KvlistValue(list)) => J::Object(
            list.values
                .iter()
                .map(|kv| (kv.key.clone(), kv.value.as_ref().map_or(J::Null, any_json)))
                .collect(),
        ),
        Some(Value::StringValueStrindex(_)) | None => J::Null,
    }
}

/// Standard base64 with padding (bytes attributes, as OTel's `AsString` writes them; basic auth).
pub fn base64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A logfmt value: bare when it has no space, `=` or quote, else quoted with escapes.
fn logfmt_value(value: &str, out: &mut Vec<u8>) {
    if !value.is_empty()
        && !value
            .bytes()
            .any(|b| b == b' ' || b == b'=' || b == b'"' || b < 0x20)
    {
        out.extend_from_slice(value.as_bytes());
        return;
    }
    vigil_proto::loki::json_string(out, value.as_bytes());
}
