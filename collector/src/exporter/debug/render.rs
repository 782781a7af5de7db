//! What the `debug` exporter prints: a summary line per batch (signal, items, services, first trace id), and for
//! `detailed` every record as indented lines, like the OpenTelemetry Collector's `detailed` verbosity.

use std::fmt::Write as _;

use vigil_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
use vigil_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
use vigil_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use vigil_proto::otlp::common::v1::{AnyValue, KeyValue, any_value::Value};
use vigil_proto::otlp::metrics::v1::{exemplar, metric, number_data_point};
use vigil_proto::otlp::resource::v1::Resource;

/// One decoded request of any signal.
pub(super) enum Decoded {
    /// Spans.
    Traces(ExportTraceServiceRequest),
    /// Metrics.
    Metrics(ExportMetricsServiceRequest),
    /// Log records.
    Logs(ExportLogsServiceRequest),
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn service(resource: Option<&Resource>) -> Option<String> {
    let value = resource?
        .attributes
        .iter()
        .find(|kv| kv.key == "service.name")?
        .value
        .as_ref();
    Some(match value.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(name)) => name.clone(),
        _ => value_text(value),
    })
}

/// An `AnyValue` as otelcol prints it: `Str(checkout)`, `Int(3)`, `Slice([...])`.
pub(super) fn value_text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        None => "Empty()".into(),
        Some(Value::StringValue(s)) => format!("Str({s})"),
        Some(Value::BoolValue(b)) => format!("Bool({b})"),
        Some(Value::IntValue(i)) => format!("Int({i})"),
        Some(Value::DoubleValue(d)) => format!("Double({d})"),
        Some(Value::BytesValue(b)) => format!("Bytes({})", hex(b)),
        Some(Value::StringValueStrindex(i)) => format!("StrIndex({i})"),
        Some(Value::ArrayValue(array)) => format!(
            "Slice([{}])",
            array
                .values
                .iter()
                .map(|v| value_text(Some(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Some(Value::KvlistValue(list)) => format!(
            "Map({{{}}})",
            list.values
                .iter()
                .map(|kv| format!("{}: {}", kv.key, value_text(kv.value.as_ref())))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn attributes(out: &mut String, indent: &str, title: &str, attributes: &[KeyValue]) {
    if attributes.is_empty() {
        return;
    }
    let _ = writeln!(out, "{indent}{title}:");
    for kv in attributes {
        let _ = writeln!(
            out,
            "{indent}     -> {}: {}",
            kv.key,
            value_text(kv.value.as_ref())
        );
    }
}

impl Decoded {
    /// The services (`service.name`) the batch comes from, in order, each once.
    pub(super) fn services(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        let mut add = |resource: Option<&Resource>| {
            let name = service(resource).unwrap_or_else(|| "(no service.name)".into());
            if !names.contains(&name) {
                names.push(name);
            }
        };
        match self {
            Decoded::Traces(r) => r
                .resource_spans
                .iter()
                .for_each(|e| add(e.resource.as_ref())),
            Decoded::Metrics(r) => r
                .resource_metrics
                .iter()
                .for_each(|e| add(e.resource.as_ref())),
            Decoded::Logs(r) => r
                .resource_logs
                .iter()
                .for_each(|e| add(e.resource.as_ref())),
        }
        names
    }

    /// The first trace id in the batch, if any item has one.
    pub(super) fn first_trace_id(&self) -> Option<String> {
        let found = match self {
            Decoded::Traces(r) => r
                .resource_spans
                .iter()
                .flat_map(|e| &e.scope_spans)
                .flat_map(|s| &s.spans)
                .map(|s| &s.trace_id)
                .find(|id| !id.is_empty()),
            Decoded::Logs(r) => r
                .resource_logs
                .iter()
                .flat_map(|e| &e.scope_logs)
                .flat_map(|s| &s.log_records)
                .map(|l| &l.trace_id)
                .find(|id| !id.is_empty()),
            Decoded::Metrics(_) => None,
        };
        found.map(|id| hex(id))
    }

    /// Every record as indented lines.
    pub(super) fn detailed(&self, out: &mut String) {
        match self {
            Decoded::Traces(request) => {
                for (r, entry) in request.resource_spans.iter().enumerate() {
                    let _ = writeln!(out, "ResourceSpans #{r}");
                    if let Some(resource) = &entry.resource {
                        attributes(out, "", "Resource attributes", &resource.attributes);
                    }
                    for (s, scope) in entry.scope_spans.iter().enumerate() {
                        let _ = writeln!(out, "ScopeSpans #{s}");
                        if let Some(scope) = &scope.scope {
                            let _ = writeln!(
                                out,
                                "InstrumentationScope {} {}",
                                scope.name, scope.version
                            );
                        }
                        for (i, span) in scope.spans.iter().enumerate() {
                            let _ = writeln!(out, "Span #{i}");
                            let _ = writeln!(out, "    Trace ID       : {}", hex(&span.trace_id));
                            let _ =
                                writeln!(out, "    Parent ID      : {}", hex(&span.parent_span_id));
                            let _ = writeln!(out, "    ID             : {}", hex(&span.span_id));
                            let _ = writeln!(out, "    Name           : {}", span.name);
                            let _ = writeln!(out, "    Kind           : {}", span_kind(span.kind));
                            let _ =
                                writeln!(out, "    Start time     : {}", span.start_time_unix_nano);
                            let _ =
                                writeln!(out, "    End time       : {}", span.end_time_unix_nano);
                            if let Some(status) = &span.status {
                                let _ = writeln!(
                                    out,
                                    "    Status code    : {}",
                                    status_code(status.code)
                                );
                                let _ = writeln!(out, "    Status message : {}", status.message);
                            }
                            attributes(out, "", "Attributes", &span.attributes);
                            for (e, event) in span.events.iter().enumerate() {
                                let _ = writeln!(out, "SpanEvent #{e}");
                                let _ = writeln!(out, "     -> Name: {}", event.name);
                                let _ =
                                    writeln!(out, "     -> Timestamp: {}", event.time_unix_nano);
                                attributes(out, "     ", "Attributes", &event.attributes);
                            }
                        }
                    }
                }
            }
            Decoded::Logs(request) => {
                for (r, entry) in request.resource_logs.iter().enumerate() {
                    let _ = writeln!(out, "ResourceLog #{r}");
                    if let Some(resource) = &entry.resource {
                        attributes(out, "", "Resource attributes", &resource.attributes);
                    }
                    for (s, scope) in entry.scope_logs.iter().enumerate() {
                        let _ = writeln!(out, "ScopeLogs #{s}");
                        if let Some(scope) = &scope.scope {
                            let _ = writeln!(
                                out,
                                "InstrumentationScope {} {}",
                                scope.name, scope.version
                            );
                        }
                        for (i, record) in scope.log_records.iter().enumerate() {
                            let _ = writeln!(out, "LogRecord #{i}");
                            let _ = writeln!(
                                out,
                                "ObservedTimestamp: {}",
                                record.observed_time_unix_nano
                            );
                            let _ = writeln!(out, "Timestamp: {}", record.time_unix_nano);
                            let _ = writeln!(out, "SeverityText: {}", record.severity_text);
                            let _ = writeln!(out, "SeverityNumber: {}", record.severity_number);
                            let _ = writeln!(out, "Body: {}", value_text(record.body.as_ref()));
                            attributes(out, "", "Attributes", &record.attributes);
                            let _ = writeln!(out, "Trace ID: {}", hex(&record.trace_id));
                            let _ = writeln!(out, "Span ID: {}", hex(&record.span_id));
                        }
                    }
                }
            }
            Decoded::Metrics(request) => {
                for (r, entry) in request.resource_metrics.iter().enumerate() {
                    let _ = writeln!(out, "ResourceMetrics #{r}");
                    if let Some(resource) = &entry.resource {
                        attributes(out, "", "Resource attributes", &resource.attributes);
                    }
                    for (s, scope) in entry.scope_metrics.iter().enumerate() {
                        let _ = writeln!(out, "ScopeMetrics #{s}");
                        if let Some(scope) = &scope.scope {
                            let _ = writeln!(
                                out,
                                "InstrumentationScope {} {}",
                                scope.name, scope.version
                            );
                        }
                        for (m, metric) in scope.metrics.iter().enumerate() {
                            let _ = writeln!(out, "Metric #{m}");
                            let _ = writeln!(out, "Descriptor:");
                            let _ = writeln!(out, "     -> Name: {}", metric.name);
                            let _ = writeln!(out, "     -> Description: {}", metric.description);
                            let _ = writeln!(out, "     -> Unit: {}", metric.unit);
                            metric_points(out, metric.data.as_ref());
                        }
                    }
                }
            }
        }
    }
}

fn metric_points(out: &mut String, data: Option<&metric::Data>) {
    let number = |value: Option<&number_data_point::Value>| match value {
        Some(number_data_point::Value::AsDouble(d)) => d.to_string(),
        Some(number_data_point::Value::AsInt(i)) => i.to_string(),
        None => "(none)".into(),
    };
    match data {
        Some(metric::Data::Gauge(g)) => {
            let _ = writeln!(out, "     -> DataType: Gauge");
            for (i, p) in g.data_points.iter().enumerate() {
                let _ = writeln!(out, "NumberDataPoints #{i}");
                attributes(out, "", "Data point attributes", &p.attributes);
                let _ = writeln!(out, "Value: {}", number(p.value.as_ref()));
            }
        }
        Some(metric::Data::Sum(s)) => {
            let _ = writeln!(out, "     -> DataType: Sum");
            let _ = writeln!(out, "     -> IsMonotonic: {}", s.is_monotonic);
            for (i, p) in s.data_points.iter().enumerate() {
                let _ = writeln!(out, "NumberDataPoints #{i}");
                attributes(out, "", "Data point attributes", &p.attributes);
                let _ = writeln!(out, "Value: {}", number(p.value.as_ref()));
            }
        }
        Some(metric::Data::Histogram(h)) => {
            let _ = writeln!(out, "     -> DataType: Histogram");
            for (i, p) in h.data_points.iter().enumerate() {
                let _ = writeln!(out, "HistogramDataPoints #{i}");
                attributes(out, "", "Data point attributes", &p.attributes);
                let _ = writeln!(out, "Count: {}", p.count);
                if let Some(sum) = p.sum {
                    let _ = writeln!(out, "Sum: {sum}");
                }
                for (bound, count) in p.explicit_bounds.iter().zip(&p.bucket_counts) {
                    let _ = writeln!(out, "Bucket (≤ {bound}), Count: {count}");
                }
                for exemplar in &p.exemplars {
                    let value = match exemplar.value {
                        Some(exemplar::Value::AsDouble(d)) => d.to_string(),
                        Some(exemplar::Value::AsInt(i)) => i.to_string(),
                        None => String::new(),
                    };
                    let _ = writeln!(out, "Exemplar: {value} trace {}", hex(&exemplar.trace_id));
                }
            }
        }
        Some(metric::Data::ExponentialHistogram(h)) => {
            let _ = writeln!(out, "     -> DataType: ExponentialHistogram");
            for (i, p) in h.data_points.iter().enumerate() {
                let _ = writeln!(out, "ExponentialHistogramDataPoints #{i}");
                attributes(out, "", "Data point attributes", &p.attributes);
                let _ = writeln!(out, "Count: {}", p.count);
                let _ = writeln!(out, "Scale: {}", p.scale);
                if let Some(sum) = p.sum {
                    let _ = writeln!(out, "Sum: {sum}");
                }
            }
        }
        Some(metric::Data::Summary(s)) => {
            let _ = writeln!(out, "     -> DataType: Summary");
            for (i, p) in s.data_points.iter().enumerate() {
                let _ = writeln!(out, "SummaryDataPoints #{i}");
                attributes(out, "", "Data point attributes", &p.attributes);
                let _ = writeln!(out, "Count: {}", p.count);
                let _ = writeln!(out, "Sum: {}", p.sum);
            }
        }
        None => {
            let _ = writeln!(out, "     -> DataType: Empty");
        }
    }
}

fn span_kind(kind: i32) -> &'static str {
    match kind {
        1 => "Internal",
        2 => "Server",
        3 => "Client",
        4 => "Producer",
        5 => "Consumer",
        _ => "Unspecified",
    }
}

fn status_code(code: i32) -> &'static str {
    match code {
        1 => "Ok",
        2 => "Error",
        _ => "Unset",
    }
}
