//! A test Loki: Grafana Loki does not run on these machines, so this server speaks its push contract.
//!
//! It decodes what it receives with the messages of Loki's own `pkg/push/push.proto` (block snappy, or JSON when
//! the content type says so), and enforces the rules of Loki v3.7 (grafana/loki @ 65e30f8) with its status codes
//! and error bodies:
//!
//! * a missing `Content-Type` is 400 `mime: no media type` (`pkg/loghttp/push/push.go`, `mime.ParseMediaType`);
//! * label strings must parse as a LogQL selector with names `[a-zA-Z_][a-zA-Z0-9_]*`, else the whole request
//!   is 400 `couldn't parse labels: …` (`push.go` `ParseLokiRequest`);
//! * the distributor's checks (`pkg/distributor/validator.go`): more than 15 label names (not counting
//!   `service_name`) rejects the stream, `entry for stream '%s' has %d label names; limit %d`; an entry older
//!   than 7 days, `entry for stream '%s' has timestamp too old: %v, oldest acceptable timestamp is: %v`; a
//!   line over `max_line_size`, `max entry size '%d' bytes exceeded for stream '%s' while adding an entry with
//!   length '%d' bytes`. Errors are grouped as `GroupedErrors` writes them (`pkg/util/errors/errors.go`):
//!   `"<n> errors like: <msg>"` joined with `"; "`, a single error bare;
//! * the ingester's per-stream window (`pkg/ingester/stream.go`): an entry older than the stream's newest minus
//!   one hour is refused with `entry too far behind, …`, reported as `errorForFailedEntries` writes it;
//! * valid entries are stored even when the answer is 400; success is 204.
//!
//! * `POST /otlp/v1/logs` is Loki 3's OTLP endpoint: the request is turned into streams as Loki's default
//!   `otlp_config` does (see `decode_otlp`), then the same rules apply.
//!
//! Scripted answers (`FakeLoki::answer_next`) come first, for rate limits and outages; they store nothing.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::Read;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;
use vigil_proto::loki::PushRequest;

/// One stored entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Stored {
    /// Nanoseconds since the epoch.
    pub timestamp: i64,
    /// The line.
    pub line: String,
    /// Structured metadata.
    pub metadata: BTreeMap<String, String>,
}

/// One request as received.
#[derive(Clone, Debug)]
pub struct Received {
    /// The request path.
    pub path: String,
    /// `X-Scope-OrgID`.
    pub tenant: Option<String>,
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// `Content-Encoding`.
    pub content_encoding: Option<String>,
    /// `Authorization`.
    pub authorization: Option<String>,
    /// The status answered.
    pub status: u16,
    /// The body answered.
    pub answer: String,
}

#[derive(Default)]
struct State {
    streams: BTreeMap<String, Vec<Stored>>,
    newest: HashMap<String, i64>,
    requests: Vec<Received>,
    script: VecDeque<(u16, String)>,
    max_line_size: usize,
}

/// A running test Loki on a loopback port.
pub struct FakeLoki {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    state: Arc<Mutex<State>>,
}

/// The tenant rate-limit body of Loki v3.7 (`RateLimitedErrorMsg`, `pkg/validation/validate.go`).
pub const TENANT_RATE_LIMITED: &str = "ingestion rate limit exceeded for user fake (limit: 4194304 bytes/sec) while attempting to ingest '3' lines totaling '300' bytes, reduce log volume or contact your Loki administrator to see if the limit can be increased";

impl FakeLoki {
    /// Starts the server; lines over `max_line_size` bytes are refused.
    pub fn start(max_line_size: usize) -> FakeLoki {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let state = Arc::new(Mutex::new(State {
            max_line_size,
            ..State::default()
        }));
        let shared = state.clone();
        crate::http_server::serve(
            listener,
            Arc::new(move |request_line, headers, body| {
                handle(request_line, headers, body, &shared)
            }),
        );
        FakeLoki { url, state }
    }

    /// The next request gets `status` with `body`, before any rule is applied (and nothing is stored).
    pub fn answer_next(&self, status: u16, body: &str) {
        self.lock().script.push_back((status, body.to_string()));
    }

    /// Stored entries by stream labels (as sent, e.g. `{level="info", service_name="api"}`).
    pub fn streams(&self) -> BTreeMap<String, Vec<Stored>> {
        self.lock().streams.clone()
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Received> {
        self.lock().requests.clone()
    }

    /// Stored entries in all streams.
    pub fn entry_count(&self) -> usize {
        self.lock().streams.values().map(Vec::len).sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn handle(
    request_line: &str,
    headers: &HashMap<String, String>,
    body: &[u8],
    state: &Mutex<State>,
) -> (u16, String) {
    let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
    let (status, answer) = match state.script.pop_front() {
        Some(scripted) => scripted,
        None if request_line.starts_with("POST /loki/api/v1/push ") => {
            match decode(headers, body) {
                Ok(streams) => store(streams, &mut state),
                Err(error) => (400, error),
            }
        }
        None if request_line.starts_with("POST /otlp/v1/logs ") => {
            match decode_otlp(headers, body) {
                Ok(streams) => store(streams, &mut state),
                Err(error) => (400, error),
            }
        }
        None => (404, "404 page not found".to_string()),
    };
    state.requests.push(Received {
        path: request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("")
            .to_string(),
        tenant: headers.get("x-scope-orgid").cloned(),
        content_type: headers.get("content-type").cloned(),
        content_encoding: headers.get("content-encoding").cloned(),
        authorization: headers.get("authorization").cloned(),
        status,
        answer: answer.clone(),
    });
    (status, answer)
}

/// An entry as decoded: `(timestamp ns, line, metadata)`.
type DecodedEntry = (i64, String, BTreeMap<String, String>);

/// Streams as decoded: labels and entries.
type Decoded = Vec<(String, Vec<DecodedEntry>)>;

fn decode(headers: &HashMap<String, String>, body: &[u8]) -> Result<Decoded, String> {
    let Some(content_type) = headers.get("content-type") else {
        return Err("mime: no media type".into());
    };
    let media = content_type.split(';').next().unwrap_or("").trim();
    let body = match headers.get("content-encoding").map(String::as_str) {
        None | Some("" | "snappy") => body.to_vec(),
        Some("gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut out)
                .map_err(|e| e.to_string())?;
            out
        }
        Some(other) => return Err(format!("Content-Encoding {other:?} not supported")),
    };
    if media == "application/json" {
        let value: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        let mut streams = Vec::new();
        for stream in value["streams"].as_array().cloned().unwrap_or_default() {
            // Loki joins JSON stream keys unquoted (`pkg/loghttp/labels.go`), so they must parse as names.
            let labels: Vec<String> = stream["stream"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| {
                            format!(
                                "{k}={}",
                                serde_json::Value::String(v.as_str().unwrap_or("").into())
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let mut entries = Vec::new();
            for value in stream["values"].as_array().cloned().unwrap_or_default() {
                let timestamp = value[0]
                    .as_str()
                    .ok_or("Value is string, but can't find closing '\"' symbol")?
                    .parse::<i64>()
                    .map_err(|e| e.to_string())?;
                let line = value[1].as_str().unwrap_or("").to_string();
                let metadata = value[2]
                    .as_object()
                    .map(|o| {
                        o.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                            .collect()
                    })
                    .unwrap_or_default();
                entries.push((timestamp, line, metadata));
            }
            streams.push((format!("{{{}}}", labels.join(", ")), entries));
        }
        return Ok(streams);
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(&body)
        .map_err(|e| format!("snappy: corrupt input: {e}"))?;
    let request = PushRequest::decode(raw.as_slice()).map_err(|e| e.to_string())?;
    Ok(request
        .streams
        .into_iter()
        .map(|stream| {
            let entries = stream
                .entries
                .into_iter()
                .map(|entry| {
                    let timestamp = entry
                        .timestamp
                        .map_or(0, |t| t.seconds * 1_000_000_000 + i64::from(t.nanos));
                    let metadata = entry
                        .structured_metadata
                        .into_iter()
                        .map(|pair| (pair.name, pair.value))
                        .collect();
                    (timestamp, entry.line, metadata)
                })
                .collect();
            (stream.labels, entries)
        })
        .collect())
}

/// Resource attributes Loki 3 indexes by default (`pkg/loghttp/push/otlplabels/config.go`).
const OTLP_INDEXED: &[&str] = &[
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

fn otlp_text(value: Option<&vigil_proto::otlp::common::v1::AnyValue>) -> String {
    use vigil_proto::otlp::common::v1::any_value::Value;
    match value.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

/// Loki's OTLP conversion with its default `otlp_config` (`pkg/loghttp/push/otlp.go` `otlpToLokiPushRequest`,
/// `otlplabels/labels.go`): listed resource attributes are labels (dots become `_`), `service_name` falls back to
/// `unknown_service`; other resource attributes, the scope name, log attributes, `severity_text`, `trace_id` and
/// `span_id` (hex) are structured metadata; the body is the line. Encodings: gzip, zstd or none, as
/// `extractLogs` accepts.
fn decode_otlp(headers: &HashMap<String, String>, body: &[u8]) -> Result<Decoded, String> {
    use vigil_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
    let body = match headers.get("content-encoding").map(String::as_str) {
        None | Some("") => body.to_vec(),
        Some("gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut out)
                .map_err(|e| e.to_string())?;
            out
        }
        Some("zstd") => zstd::decode_all(body).map_err(|e| e.to_string())?,
        Some(other) => {
            return Err(format!(
                "unsupported content encoding {other}: only gzip, lz4 and zstd are supported"
            ));
        }
    };
    match headers.get("content-type").map(String::as_str) {
        Some("application/x-protobuf") => {}
        other => {
            return Err(format!(
                "content type: {} is not supported",
                other.unwrap_or("")
            ));
        }
    }
    let request = ExportLogsServiceRequest::decode(body.as_slice()).map_err(|e| e.to_string())?;
    let name = |key: &str| key.replace(['.', '-', '/'], "_");
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let mut streams: BTreeMap<String, Vec<DecodedEntry>> = BTreeMap::new();
    for resource_logs in request.resource_logs {
        let attributes = resource_logs
            .resource
            .map(|r| r.attributes)
            .unwrap_or_default();
        let mut labels = BTreeMap::new();
        let mut resource_metadata = BTreeMap::new();
        for kv in &attributes {
            let value = otlp_text(kv.value.as_ref());
            if OTLP_INDEXED.contains(&kv.key.as_str()) {
                labels.insert(name(&kv.key), value);
            } else {
                resource_metadata.insert(name(&kv.key), value);
            }
        }
        labels
            .entry("service_name".to_string())
            .or_insert_with(|| "unknown_service".to_string());
        let selector = format!(
            "{{{}}}",
            labels
                .iter()
                .map(|(k, v)| format!("{k}={v:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for scope_logs in resource_logs.scope_logs {
            let scope_name = scope_logs.scope.map(|s| s.name).unwrap_or_default();
            for record in scope_logs.log_records {
                let mut metadata = BTreeMap::new();
                for kv in &record.attributes {
                    metadata.insert(name(&kv.key), otlp_text(kv.value.as_ref()));
                }
                if !record.severity_text.is_empty() {
                    metadata.insert("severity_text".into(), record.severity_text.clone());
                }
                if !record.trace_id.is_empty() {
                    metadata.insert("trace_id".into(), hex(&record.trace_id));
                }
                if !record.span_id.is_empty() {
                    metadata.insert("span_id".into(), hex(&record.span_id));
                }
                metadata.extend(resource_metadata.clone());
                if !scope_name.is_empty() {
                    metadata.insert("scope_name".into(), scope_name.clone());
                }
                let timestamp = if record.time_unix_nano != 0 {
                    record.time_unix_nano
                } else {
                    record.observed_time_unix_nano
                };
                streams.entry(selector.clone()).or_default().push((
                    timestamp as i64,
                    otlp_text(record.body.as_ref()),
                    metadata,
                ));
            }
        }
    }
    Ok(streams.into_iter().collect())
}

/// The names of a LogQL selector `{a="b", c="d"}`, or the PromQL parser's error.
fn parse_labels(text: &str) -> Result<Vec<String>, String> {
    let inner = text
        .trim()
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .ok_or_else(|| "1:1: parse error: unexpected end of input inside braces".to_string())?;
    let mut names = Vec::new();
    let mut rest = inner.trim();
    while !rest.is_empty() {
        let end = rest
            .find('=')
            .ok_or("parse error: unexpected end of input inside braces")?;
        let name = rest[..end].trim();
        let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!(
                "parse error: unexpected character inside braces: {name:?}"
            ));
        }
        rest = rest[end + 1..].trim_start();
        let mut chars = rest.char_indices();
        if chars.next().map(|(_, c)| c) != Some('"') {
            return Err("parse error: unexpected character inside braces".into());
        }
        let mut close = None;
        let mut escaped = false;
        for (i, c) in chars {
            match c {
                '\\' if !escaped => escaped = true,
                '"' if !escaped => {
                    close = Some(i);
                    break;
                }
                _ => escaped = false,
            }
        }
        let close = close.ok_or("parse error: unterminated quoted string")?;
        names.push(name.to_string());
        rest = rest[close + 1..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Ok(names)
}

fn rfc3339(nanos: i64) -> String {
    let secs = nanos.div_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

fn store(streams: Decoded, state: &mut State) -> (u16, String) {
    for (labels, _) in &streams {
        if let Err(error) = parse_labels(labels) {
            return (400, format!("couldn't parse labels: {error}"));
        }
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    let oldest = now - 7 * 24 * 3600 * 1_000_000_000;
    let mut distributor: Vec<String> = Vec::new();
    let mut ingester = String::new();
    for (labels, entries) in streams {
        let names = parse_labels(&labels).unwrap_or_default();
        let counted = names.iter().filter(|n| *n != "service_name").count();
        if counted > 15 {
            distributor.push(format!(
                "entry for stream '{labels}' has {counted} label names; limit 15"
            ));
            continue;
        }
        let mut failed = Vec::new();
        let total = entries.len();
        for (timestamp, line, metadata) in entries {
            if timestamp < oldest {
                distributor.push(format!(
                    "entry for stream '{labels}' has timestamp too old: {}, oldest acceptable timestamp is: {}",
                    rfc3339(timestamp),
                    rfc3339(oldest)
                ));
                continue;
            }
            if line.len() > state.max_line_size {
                distributor.push(format!(
                    "max entry size '{}' bytes exceeded for stream '{labels}' while adding an entry with length '{}' bytes",
                    state.max_line_size,
                    line.len()
                ));
                continue;
            }
            let newest = state.newest.get(&labels).copied().unwrap_or(i64::MIN);
            let cutoff = newest.saturating_sub(3600 * 1_000_000_000);
            if timestamp < cutoff {
                failed.push(format!(
                    "entry with timestamp {} ignored, reason: 'entry too far behind, entry timestamp is: {}, oldest acceptable timestamp is: {}',\n",
                    rfc3339(timestamp),
                    rfc3339(timestamp),
                    rfc3339(cutoff)
                ));
                continue;
            }
            state.newest.insert(labels.clone(), newest.max(timestamp));
            state
                .streams
                .entry(labels.clone())
                .or_default()
                .push(Stored {
                    timestamp,
                    line,
                    metadata,
                });
        }
        if !failed.is_empty() {
            ingester = failed.iter().take(10).cloned().collect::<String>();
            ingester.push_str(&format!(
                "user 'fake', total ignored: {} out of {total} for stream: {labels}",
                failed.len()
            ));
        }
    }
    if !ingester.is_empty() {
        return (400, ingester);
    }
    if distributor.is_empty() {
        return (204, String::new());
    }
    let mut groups: Vec<(String, usize)> = Vec::new();
    for message in distributor {
        match groups.iter_mut().find(|(m, _)| *m == message) {
            Some((_, n)) => *n += 1,
            None => groups.push((message, 1)),
        }
    }
    let single = groups.len() == 1 && groups[0].1 == 1;
    let text = groups
        .iter()
        .map(|(message, n)| {
            if single {
                message.clone()
            } else {
                format!("{n} errors like: {message}")
            }
        })
        .collect::<Vec<_>>()
        .join("; ");
    (400, text)
}
