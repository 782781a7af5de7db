//! `encoding: otlp`: the pushes built for the push API, expressed for Loki 3's native OTLP endpoint
//! (`POST /otlp/v1/logs`, OTLP/HTTP protobuf).
//!
//! Loki's OTLP path (grafana/loki `pkg/loghttp/push/otlp.go`, `otlplabels/labels.go` @ 65e30f8) makes index
//! labels of the resource attributes its `otlp_config` lists (by default `service.name`, `service.namespace`,
//! `service.instance.id`, `deployment.environment`, `k8s.pod.name` and the other `k8s_*`/`cloud_*` names) and
//! structured metadata of everything else: other resource attributes, scope name, log attributes, `trace_id`,
//! `span_id`, `severity_text`. So each stream the translator decided on becomes one resource whose attributes
//! are exactly that stream's labels, under their original attribute names; every other value travels as a log
//! attribute. The caps, the sorting and the timestamp rules are the ones the push API gets; in particular
//! `service.instance.id` and `k8s.pod.name`, which Loki would index by default, arrive as metadata.
//!
//! Labels Loki does not index by default (`level`, `labels.resource` and `labels.attributes` outside its list)
//! reach it as resource attributes and become labels only once Loki's `limits_config.otlp_config` says so;
//! [`missing_index_config`] names them so the exporter can log the snippet at start.

use vigil_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
use vigil_proto::otlp::common::v1::{AnyValue, KeyValue, any_value::Value};
use vigil_proto::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use vigil_proto::otlp::resource::v1::Resource;

use super::translate::{TenantPush, Translator};

/// Loki's OTLP logs path under the endpoint.
pub const OTLP_PATH: &str = "/otlp/v1/logs";

/// Resource attributes Loki 3 indexes by default (`otlplabels/config.go`).
pub const LOKI_DEFAULT_INDEXED: &[&str] = &[
    "service.name",
    "service.namespace",
    "service.instance.id",
    "deployment.environment",
    "deployment.environment.name",
    "cloud.region",
    "cloud.availability_zone",
    "k8s.cluster.name",
    "k8s.namespace.name",
    "k8s.pod.name",
    "k8s.container.name",
    "container.name",
    "k8s.replicaset.name",
    "k8s.deployment.name",
    "k8s.statefulset.name",
    "k8s.daemonset.name",
    "k8s.cronjob.name",
    "k8s.job.name",
];

fn text(value: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(Value::StringValue(value.to_string())),
    })
}

fn key_value(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: text(value),
        ..KeyValue::default()
    }
}

/// Decodes lowercase hex as the translator wrote it; `None` if it is not.
fn unhex(text: &[u8]) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.chunks(2)
        .map(|pair| {
            let digit = |c: u8| (c as char).to_digit(16);
            Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8)
        })
        .collect()
}

/// The OTLP request carrying `push`: one resource per stream, attributes named by `translator`.
pub fn to_request(push: &TenantPush, translator: &Translator) -> ExportLogsServiceRequest {
    let mut resource_logs = Vec::new();
    for stream in push.push.stream_indexes() {
        let mut entries = push.push.entries(stream).peekable();
        if entries.peek().is_none() {
            continue;
        }
        let labels = push
            .stream_labels
            .get(stream.position())
            .cloned()
            .unwrap_or_default();
        let attributes = labels
            .iter()
            .map(|(label, value)| key_value(translator.attribute_of(label), value))
            .collect();
        let log_records = entries
            .map(|entry| {
                let mut record = LogRecord {
                    time_unix_nano: u64::try_from(push.push.timestamp(entry)).unwrap_or(0),
                    body: text(&String::from_utf8_lossy(push.push.line(entry))),
                    ..LogRecord::default()
                };
                for (name, value) in push.push.metadata_of(entry) {
                    match (name, unhex(value)) {
                        (b"trace_id", Some(id)) if id.len() == 16 => record.trace_id = id,
                        (b"span_id", Some(id)) if id.len() == 8 => record.span_id = id,
                        (b"severity_text", _) => {
                            record.severity_text = String::from_utf8_lossy(value).into_owned();
                        }
                        _ => record.attributes.push(key_value(
                            &String::from_utf8_lossy(name),
                            &String::from_utf8_lossy(value),
                        )),
                    }
                }
                record
            })
            .collect();
        resource_logs.push(ResourceLogs {
            resource: Some(Resource {
                attributes,
                ..Resource::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records,
                ..ScopeLogs::default()
            }],
            schema_url: String::new(),
        });
    }
    ExportLogsServiceRequest { resource_logs }
}

/// The attributes that are labels in this configuration but that Loki indexes only when its `otlp_config` lists
/// them.
pub fn missing_index_config(
    level: bool,
    resource: &[String],
    attributes: &[String],
) -> Vec<String> {
    let mut missing: Vec<String> = Vec::new();
    if level {
        missing.push("level".into());
    }
    for key in resource.iter().chain(attributes) {
        if !LOKI_DEFAULT_INDEXED.contains(&key.as_str()) && !missing.contains(key) {
            missing.push(key.clone());
        }
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_decodes_only_hex() {
        assert_eq!(unhex(b"0aff"), Some(vec![0x0a, 0xff]));
        assert_eq!(unhex(b"0af"), None);
        assert_eq!(unhex(b"zz"), None);
        assert_eq!(unhex(b""), Some(vec![]));
    }

    #[test]
    fn labels_outside_lokis_defaults_are_named() {
        assert_eq!(
            missing_index_config(
                true,
                &["k8s.pod.name".into(), "team".into()],
                &["component".into(), "team".into()]
            ),
            ["level", "team", "component"]
        );
        assert!(missing_index_config(false, &["cloud.region".into()], &[]).is_empty());
    }
}
