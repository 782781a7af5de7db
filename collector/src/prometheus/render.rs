//! The exposition formats: Prometheus text 0.0.4 and OpenMetrics 1.0.0.
//!
//! Families are written in name order, each contiguous with its HELP and TYPE lines. Exponential histograms
//! become classic `_bucket` series with `le` at their bucket boundaries (neither text format can carry native
//! histograms), downscaled to at most [`MAX_EXPONENTIAL_BUCKETS`] buckets per sign.

use std::io::Write;
use std::sync::Arc;

use super::naming::Kind;
use super::store::{
    ExpBuckets, ExpHistogram, Family, Histogram, Labels, SeriesValue, Store, StoredExemplar,
    downscale,
};

/// The 0.0.4 text format's content type.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// OpenMetrics 1.0.0's content type.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Most classic buckets an exponential histogram becomes, per sign.
pub const MAX_EXPONENTIAL_BUCKETS: usize = 160;

/// Which exposition format to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`.
    Text,
    /// `application/openmetrics-text; version=1.0.0`.
    OpenMetrics,
}

impl Format {
    /// Picks the format from an `Accept` header: OpenMetrics when the scraper ranks it at least as high as
    /// the text format (Prometheus does by default), else text.
    pub fn negotiate(accept: Option<&str>, open_metrics_enabled: bool) -> Format {
        let Some(accept) = accept.filter(|_| open_metrics_enabled) else {
            return Format::Text;
        };
        let mut open_metrics_q = 0.0f32;
        let mut text_q = 0.0f32;
        for item in accept.split(',') {
            let mut parts = item.split(';').map(str::trim);
            let media = parts.next().unwrap_or("").to_ascii_lowercase();
            let mut q = 1.0f32;
            for parameter in parts {
                if let Some(value) = parameter.strip_prefix("q=") {
                    q = value.trim().parse().unwrap_or(0.0);
                }
            }
            match media.as_str() {
                "application/openmetrics-text" => open_metrics_q = open_metrics_q.max(q),
                "text/plain" | "*/*" => text_q = text_q.max(q),
                _ => {}
            }
        }
        if open_metrics_q > 0.0 && open_metrics_q >= text_q {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }

    /// Its `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => TEXT_CONTENT_TYPE,
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }
}

/// A family ready to be written: copied out of the [`Store`] (label texts shared, values cloned, so a shard is
/// locked only for the copy, not for the formatting), or read from the collector's self-metrics registry.
pub struct Snapshot {
    /// The family name as exposed in the text format 0.0.4 (`…_total` for counters, `…_info` for info).
    pub name: String,
    /// The family type.
    pub kind: Kind,
    /// Whether it is an info family (value 1, `info` type in OpenMetrics).
    pub info: bool,
    /// The HELP text (the name when empty).
    pub help: String,
    /// Each series: its labels as exposition text (see [`label_text`]), its value and its exemplars.
    pub rows: Vec<(Arc<str>, SeriesValue, Vec<StoredExemplar>)>,
}

/// Writes every family of `store`. Each shard is locked just long enough to copy it (a small part of the time
/// formatting takes), so a scrape does not hold ingestion up.
pub fn render(store: &Store, format: Format) -> Vec<u8> {
    let mut parts: Vec<(String, Vec<u8>)> = Vec::new();
    store.for_each_shard_copied(snapshot, |copied| {
        for family in copied {
            let mut out = Vec::with_capacity(64 + family.rows.len() * 96);
            write_family(&mut out, &family, format);
            parts.push((family.name, out));
        }
    });
    parts.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.1.len()).sum::<usize>() + 8);
    for (_, part) in parts {
        out.extend_from_slice(&part);
    }
    finish(&mut out, format);
    out
}

/// Writes `families` in the order given: the one renderer for anything else the collector exposes (its own
/// metrics), so every page it serves follows the same escaping and number rules.
pub fn render_snapshots(families: &[Snapshot], format: Format) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        64 + families
            .iter()
            .map(|f| 64 + f.rows.len() * 96)
            .sum::<usize>(),
    );
    for family in families {
        write_family(&mut out, family, format);
    }
    finish(&mut out, format);
    out
}

/// Ends an exposition: OpenMetrics requires `# EOF`.
fn finish(out: &mut Vec<u8>, format: Format) {
    if format == Format::OpenMetrics {
        out.extend_from_slice(b"# EOF\n");
    }
}

fn snapshot(name: &str, family: &Family) -> Snapshot {
    Snapshot {
        name: name.to_string(),
        kind: family.kind,
        info: family.info,
        help: family.help.clone(),
        rows: family
            .series
            .values()
            .map(|s| (s.label_text.clone(), s.value.clone(), s.exemplars.clone()))
            .collect(),
    }
}

fn write_family(out: &mut Vec<u8>, family: &Snapshot, format: Format) {
    let name = family.name.as_str();
    // OpenMetrics names a counter family without `_total` and its sample with it; info families likewise
    // drop `_info`.
    let (family_name, type_name) = match (format, family.kind, family.info) {
        (Format::OpenMetrics, _, true) => (name.strip_suffix("_info").unwrap_or(name), "info"),
        (Format::OpenMetrics, Kind::Counter, _) => {
            (name.strip_suffix("_total").unwrap_or(name), "counter")
        }
        (_, kind, _) => (name, kind.type_name()),
    };
    let help = if family.help.is_empty() {
        name
    } else {
        family.help.as_str()
    };
    out.extend_from_slice(b"# HELP ");
    out.extend_from_slice(family_name.as_bytes());
    out.push(b' ');
    escape_help(out, help, format);
    out.extend_from_slice(b"\n# TYPE ");
    out.extend_from_slice(family_name.as_bytes());
    out.push(b' ');
    out.extend_from_slice(type_name.as_bytes());
    out.push(b'\n');
    let sample_name = match (format, family.kind) {
        (Format::OpenMetrics, Kind::Counter) => format!("{family_name}_total"),
        _ => name.to_string(),
    };
    let names = Names {
        bucket: format!("{name}_bucket"),
        sum: format!("{name}_sum"),
        count: format!("{name}_count"),
    };
    // Exemplars exist only in OpenMetrics.
    let no_exemplars = Vec::new();
    for (labels, value, exemplars) in &family.rows {
        let labels = &**labels;
        let exemplars = if format == Format::OpenMetrics {
            exemplars
        } else {
            &no_exemplars
        };
        match value {
            SeriesValue::Number(v) => {
                sample(out, &sample_name, labels, None, *v, format);
                if let Some(exemplar) = exemplars.first() {
                    append_exemplar(out, exemplar);
                }
            }
            SeriesValue::Histogram(h) => histogram(out, &names, labels, h, exemplars, format),
            SeriesValue::Exponential(e) => {
                histogram(out, &names, labels, &to_classic(e), &[], format)
            }
            SeriesValue::Summary(s) => {
                for (q, v) in &s.quantiles {
                    sample(out, name, labels, Some(("quantile", *q)), *v, format);
                }
                sample(out, &names.sum, labels, None, s.sum, format);
                sample(out, &names.count, labels, None, s.count as f64, format);
            }
        }
    }
}

/// The derived sample names of a histogram or summary family, built once per family.
struct Names {
    bucket: String,
    sum: String,
    count: String,
}

fn histogram(
    out: &mut Vec<u8>,
    names: &Names,
    labels: &str,
    h: &Histogram,
    exemplars: &[StoredExemplar],
    format: Format,
) {
    let exemplar_of = |bucket: usize| exemplars.iter().find(|e| e.bucket == bucket);
    let mut cumulative = 0u64;
    for (i, (bound, count)) in h.bounds.iter().zip(&h.counts).enumerate() {
        cumulative += count;
        let le = Some(("le", *bound));
        sample(out, &names.bucket, labels, le, cumulative as f64, format);
        if let Some(exemplar) = exemplar_of(i) {
            append_exemplar(out, exemplar);
        }
    }
    // `+Inf` must equal `_count`, whatever the buckets add up to.
    let le = Some(("le", f64::INFINITY));
    sample(out, &names.bucket, labels, le, h.count as f64, format);
    if let Some(exemplar) = exemplar_of(h.bounds.len()) {
        append_exemplar(out, exemplar);
    }
    sample(out, &names.sum, labels, None, h.sum, format);
    sample(out, &names.count, labels, None, h.count as f64, format);
}

/// Turns the sample line just written into `… # {trace_id="…",span_id="…"} value timestamp`.
fn append_exemplar(out: &mut Vec<u8>, exemplar: &StoredExemplar) {
    if out.last() == Some(&b'\n') {
        out.pop();
    }
    out.extend_from_slice(b" # {");
    for (i, (k, v)) in exemplar.labels.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b"=\"");
        escape_label_value(out, v);
        out.push(b'"');
    }
    out.extend_from_slice(b"} ");
    write_value(out, exemplar.value);
    if exemplar.time_unix_nano > 0 {
        // OpenMetrics timestamps are seconds.
        let _ = write!(out, " {:?}", exemplar.time_unix_nano as f64 / 1e9);
    }
    out.push(b'\n');
}

/// A label set as exposition text: `a="x",b="y"`, values escaped.
pub fn label_text(labels: &Labels) -> Arc<str> {
    Arc::from(label_pairs_text(
        labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    ))
}

/// Label pairs as exposition text: `a="x",b="y"`, values escaped.
pub fn label_pairs_text<'a>(
    labels: impl IntoIterator<Item = (&'a str, &'a str)> + Clone,
) -> String {
    let mut out = Vec::with_capacity(
        labels
            .clone()
            .into_iter()
            .map(|(k, v)| k.len() + v.len() + 4)
            .sum(),
    );
    for (i, (k, v)) in labels.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b"=\"");
        escape_label_value(&mut out, v);
        out.push(b'"');
    }
    // Only ASCII escapes were added to valid UTF-8.
    String::from_utf8(out).unwrap_or_default()
}

/// An exponential histogram as classic buckets: negative buckets (most negative first), the zero bucket,
/// then positive buckets, each with its upper boundary as `le`.
pub fn to_classic(e: &ExpHistogram) -> Histogram {
    let mut scale = e.scale;
    let mut positive = e.positive.clone();
    let mut negative = e.negative.clone();
    while positive.counts.len().max(negative.counts.len()) > MAX_EXPONENTIAL_BUCKETS && scale > -10
    {
        positive = downscale(&positive, 1);
        negative = downscale(&negative, 1);
        scale -= 1;
    }
    let base_power = |index: i32| (index as f64 * (-scale as f64).exp2()).exp2();
    let mut bounds = Vec::with_capacity(positive.counts.len() + negative.counts.len() + 1);
    let mut counts = Vec::with_capacity(bounds.capacity());
    let ExpBuckets {
        offset: negative_offset,
        counts: negative_counts,
    } = &negative;
    for (i, count) in negative_counts.iter().enumerate().rev() {
        // Bucket `index` holds values in [-base^(index+1), -base^index): its upper bound is -base^index.
        bounds.push(-base_power(negative_offset + i as i32));
        counts.push(*count);
    }
    bounds.push(e.zero_threshold.max(0.0));
    counts.push(e.zero_count);
    for (i, count) in positive.counts.iter().enumerate() {
        bounds.push(base_power(positive.offset + i as i32 + 1));
        counts.push(*count);
    }
    // Boundaries may coincide with the zero threshold; keep them strictly ascending.
    let mut merged_bounds: Vec<f64> = Vec::with_capacity(bounds.len());
    let mut merged_counts: Vec<u64> = Vec::with_capacity(bounds.len());
    for (bound, count) in bounds.into_iter().zip(counts) {
        match merged_bounds.last() {
            Some(last) if bound <= *last => {
                if let Some(c) = merged_counts.last_mut() {
                    *c += count;
                }
            }
            _ => {
                merged_bounds.push(bound);
                merged_counts.push(count);
            }
        }
    }
    merged_counts.push(0);
    Histogram {
        bounds: merged_bounds,
        counts: merged_counts,
        sum: e.sum,
        count: e.count,
    }
}

fn sample(
    out: &mut Vec<u8>,
    name: &str,
    labels: &str,
    extra: Option<(&str, f64)>,
    value: f64,
    format: Format,
) {
    out.extend_from_slice(name.as_bytes());
    if !labels.is_empty() || extra.is_some() {
        out.push(b'{');
        out.extend_from_slice(labels.as_bytes());
        if let Some((k, v)) = extra {
            if !labels.is_empty() {
                out.push(b',');
            }
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(b"=\"");
            write_bound(out, v, format);
            out.push(b'"');
        }
        out.push(b'}');
    }
    out.push(b' ');
    write_value(out, value);
    out.push(b'\n');
}

/// A sample value: Go-parsable, always with `.` or an exponent (OpenMetrics requires it for floats).
fn write_value(out: &mut Vec<u8>, value: f64) {
    if value.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if value.is_infinite() {
        out.extend_from_slice(if value > 0.0 { b"+Inf" } else { b"-Inf" });
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        // Counts and most counters: integer formatting is several times faster than shortest-float.
        out.extend_from_slice(itoa::Buffer::new().format(value as i64).as_bytes());
        out.extend_from_slice(b".0");
    } else {
        let _ = write!(out, "{value:?}");
    }
}

/// An `le`/`quantile` value the way the Go clients write them: `1` and `0.005` in text, `1.0` in OpenMetrics.
fn write_bound(out: &mut Vec<u8>, value: f64, format: Format) {
    if value.is_infinite() {
        out.extend_from_slice(if value > 0.0 { b"+Inf" } else { b"-Inf" });
    } else if format == Format::Text && value.fract() == 0.0 && value.abs() < 1e15 {
        out.extend_from_slice(itoa::Buffer::new().format(value as i64).as_bytes());
    } else {
        write_value(out, value);
    }
}

fn escape_label_value(out: &mut Vec<u8>, value: &str) {
    if !value.bytes().any(|b| matches!(b, b'\\' | b'"' | b'\n')) {
        out.extend_from_slice(value.as_bytes());
        return;
    }
    for b in value.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'"' => out.extend_from_slice(b"\\\""),
            b'\n' => out.extend_from_slice(b"\\n"),
            _ => out.push(b),
        }
    }
}

fn escape_help(out: &mut Vec<u8>, help: &str, format: Format) {
    for b in help.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'"' if format == Format::OpenMetrics => out.extend_from_slice(b"\\\""),
            b'\r' => {}
            _ => out.push(b),
        }
    }
}
