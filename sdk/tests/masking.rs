//! The PII corpus (`tests/data/pii_corpus.jsonl`) through the masking engine and through every sink of the SDK:
//! JSON file, text file, OTLP log records and exported spans. No planted secret may come out, and nothing that
//! is not a secret may be changed.

use std::borrow::Cow;

use opentelemetry::logs::AnyValue;
use opentelemetry::trace::{Span as _, Status, Tracer as _, TracerProvider as _};
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::logs::{InMemoryLogExporter, SdkLoggerProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing_subscriber::layer::SubscriberExt as _;
use vigil::config::logging::LoggingConfig;
use vigil::log::otlp::OtlpLogLayer;
use vigil::mask::{MaskConfig, Masked, Masker, MaskingSpanExporter};
use vigil_e2e::{PiiCase, pii_corpus};

type Case = PiiCase;

fn corpus() -> Vec<Case> {
    pii_corpus()
}

fn opt_in_config() -> MaskConfig {
    let mut config = MaskConfig::default();
    config.detectors.phone.enabled = Some(true);
    config.detectors.iban.enabled = Some(true);
    config
}

/// Records one sink's problems with one case: a leaked secret, a lost fragment, a changed clean line.
fn check(sink: &str, case: &Case, output: &str, failures: &mut Vec<String>) {
    failures.extend(case.problems(sink, output));
}

#[test]
fn the_corpus_has_no_leak_and_no_false_positive() {
    let default = Masker::new(&MaskConfig::default()).unwrap();
    let opt_in = Masker::new(&opt_in_config()).unwrap();
    let mut failures = Vec::new();
    for case in corpus() {
        let masker = if case.opt_in { &opt_in } else { &default };
        let masked: Cow<'_, str> = match &case.key {
            Some(key) => match masker.attribute(key, &case.text) {
                Masked::Keep(value) => value,
                Masked::Drop => Cow::Borrowed(""),
            },
            None => masker.text(&case.text),
        };
        check("engine", &case, &masked, &mut failures);
        if case.secrets.is_empty() && matches!(masked, Cow::Owned(_)) {
            failures.push(format!("ALLOCATED for {:?}", case.text));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The scanner classifies text in 64-byte blocks and looks ahead and behind across block edges: every corpus
/// line must be masked the same at every offset inside a long text.
#[test]
fn the_corpus_is_masked_the_same_at_every_offset_of_a_long_text() {
    const FILLER: &str =
        "2024-01-15 worker ok step done lr 3 loss low queue idle batch ready cache warm ";
    let default = Masker::new(&MaskConfig::default()).unwrap();
    let opt_in = Masker::new(&opt_in_config()).unwrap();
    let mut failures = Vec::new();
    for case in corpus().iter().filter(|case| case.key.is_none()) {
        let masker = if case.opt_in { &opt_in } else { &default };
        let alone = masker.text(&case.text).into_owned();
        for offset in 0..=66 {
            let head = format!("{} ", &FILLER[..offset]);
            let long = format!("{head}{}\n{FILLER}{FILLER}", case.text);
            let expected = format!("{head}{alone}\n{FILLER}{FILLER}");
            let masked = masker.text(&long);
            if masked != expected {
                failures.push(format!(
                    "offset {offset}: {masked:?}\n  expected {expected:?}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_detector_is_exercised_by_the_corpus() {
    let masker = Masker::new(&opt_in_config()).unwrap();
    for case in corpus() {
        match &case.key {
            Some(key) => drop(masker.attribute(key, &case.text)),
            None => drop(masker.text(&case.text)),
        }
    }
    for (name, count) in masker.replacements() {
        assert!(count > 0, "no corpus line exercises `{name}`");
    }
}

const CASE_END: &str = "--- end of case ---";

/// Logs every text case of the corpus (as the message, as an event field and as a span field) through JSON and
/// text file handlers built from a logging config, and checks both files.
fn file_sinks_for(opt_in: bool) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let mask = if opt_in {
        "  mask:\n    detectors:\n      phone: {enabled: true}\n      iban: {enabled: true}\n"
    } else {
        ""
    };
    let yaml = format!(
        "logging:\n  version: 1\n  formatters:\n    json: {{class: json}}\n    plain: {{format: '%(message)s'}}\n  \
         handlers:\n    json_file: {{class: logging.FileHandler, formatter: json, filename: '{dir}/app.jsonl'}}\n    \
         text_file: {{class: file, formatter: plain, filename: '{dir}/app.log'}}\n  \
         root: {{level: INFO, handlers: [json_file, text_file]}}\n{mask}",
        dir = dir.path().display()
    );
    let config = LoggingConfig::parse(&yaml, "test.yaml").unwrap();
    let (subscriber, guard) = vigil::Builder::new("masking")
        .otlp(false)
        .logging_config(config)
        .build()
        .unwrap();
    let cases: Vec<Case> = corpus()
        .into_iter()
        .filter(|c| c.key.is_none() && c.opt_in == opt_in)
        .collect();
    tracing::subscriber::with_default(subscriber, || {
        for case in &cases {
            tracing::info_span!("request", context = %case.text).in_scope(|| {
                tracing::info!(detail = %case.text, "{}", case.text);
            });
            tracing::info!("{CASE_END}");
        }
    });
    assert!(guard.flush());
    let mut failures = Vec::new();
    let json = std::fs::read_to_string(dir.path().join("app.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|l: &serde_json::Value| l["message"] != CASE_END)
        .collect();
    assert_eq!(lines.len(), cases.len());
    for (case, line) in cases.iter().zip(&lines) {
        for field in ["message", "detail", "context"] {
            let value = line[field].as_str().unwrap_or_default();
            check(&format!("json {field}"), case, value, &mut failures);
        }
    }
    let text = std::fs::read_to_string(dir.path().join("app.log")).unwrap();
    let messages: Vec<&str> = text.split(&format!("{CASE_END}\n")).collect();
    assert_eq!(
        messages.len(),
        cases.len() + 1,
        "one chunk per case, then nothing"
    );
    for (case, chunk) in cases.iter().zip(&messages) {
        // `message detail="…" context="…"`: the fields are Debug-quoted, so only the message is compared whole.
        let message = chunk.split(" detail=").next().unwrap_or_default();
        check("text", case, message, &mut failures);
        for secret in &case.secrets {
            let escaped = format!("{secret:?}");
            if chunk.contains(secret.as_str()) || chunk.contains(&escaped[1..escaped.len() - 1]) {
                failures.push(format!("text: LEAK {secret:?} in {chunk:?}"));
            }
        }
    }
    failures
}

#[test]
fn json_and_text_files_carry_no_secret_from_the_corpus() {
    let mut failures = file_sinks_for(false);
    failures.extend(file_sinks_for(true));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn any_value_text(value: &AnyValue) -> String {
    match value {
        AnyValue::String(text) => text.as_str().to_string(),
        other => format!("{other:?}"),
    }
}

fn attribute_text(attributes: &[KeyValue], key: &str) -> String {
    attributes
        .iter()
        .find(|a| a.key.as_str() == key)
        .map(|a| a.value.as_str().into_owned())
        .unwrap_or_default()
}

#[test]
fn otlp_log_records_and_spans_carry_no_secret_from_the_corpus() {
    let mut failures = Vec::new();
    for opt_in in [false, true] {
        let config = if opt_in {
            opt_in_config()
        } else {
            MaskConfig::default()
        };
        let masker = Masker::new(&config).unwrap();
        let logs = InMemoryLogExporter::default();
        let logger_provider = SdkLoggerProvider::builder()
            .with_simple_exporter(logs.clone())
            .build();
        let spans = InMemorySpanExporter::default();
        let tracer_provider = SdkTracerProvider::builder()
            .with_simple_exporter(MaskingSpanExporter::new(spans.clone(), masker.clone()))
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(OtlpLogLayer::new(&logger_provider).with_masker(Some(masker.clone())))
            .with(tracing_opentelemetry::layer().with_tracer(tracer_provider.tracer("bridge")));
        let cases: Vec<Case> = corpus()
            .into_iter()
            .filter(|c| c.opt_in == opt_in)
            .collect();
        let tracer = tracer_provider.tracer("api");
        tracing::subscriber::with_default(subscriber, || {
            for case in &cases {
                let key = case.key.clone().unwrap_or_else(|| "detail".into());
                // A span made through the OpenTelemetry API: name, attribute, array, event and status.
                let mut span = tracer.start(case.text.clone());
                span.set_attribute(KeyValue::new(key.clone(), case.text.clone()));
                span.set_attribute(KeyValue::new(
                    "items",
                    Value::Array(vec![opentelemetry::StringValue::from(case.text.clone())].into()),
                ));
                span.add_event(
                    "exception",
                    vec![
                        KeyValue::new("exception.message", case.text.clone()),
                        KeyValue::new(key.clone(), case.text.clone()),
                    ],
                );
                span.set_status(Status::error(case.text.clone()));
                span.end();
                if case.key.is_none() {
                    // A span and an event made through `tracing`.
                    let bridged = tracing::info_span!("bridged", detail = %case.text);
                    let _entered = bridged.enter();
                    tracing::info!(detail = %case.text, "{}", case.text);
                }
            }
        });
        let _ = tracer_provider.force_flush();
        let _ = logger_provider.force_flush();
        let exported = spans.get_finished_spans().unwrap();
        let api: Vec<&SpanData> = exported
            .iter()
            .filter(|s| s.instrumentation_scope.name() == "api")
            .collect();
        assert_eq!(api.len(), cases.len());
        for (case, span) in cases.iter().zip(&api) {
            let key = case.key.as_deref().unwrap_or("detail");
            let event = &span.events.events[0].attributes;
            check(
                "span attribute",
                case,
                &attribute_text(&span.attributes, key),
                &mut failures,
            );
            check(
                "span event",
                case,
                &attribute_text(event, key),
                &mut failures,
            );
            if case.key.is_none() {
                check("span name", case, &span.name, &mut failures);
                check(
                    "exception.message",
                    case,
                    &attribute_text(event, "exception.message"),
                    &mut failures,
                );
                match &span.attributes.iter().find(|a| a.key.as_str() == "items") {
                    Some(KeyValue {
                        value: Value::Array(opentelemetry::Array::String(items)),
                        ..
                    }) => check("array item", case, items[0].as_str(), &mut failures),
                    other => failures.push(format!("array lost: {other:?}")),
                }
                match &span.status {
                    Status::Error { description } => {
                        check("status", case, description, &mut failures)
                    }
                    other => failures.push(format!("status lost: {other:?}")),
                }
            }
        }
        let bridged: Vec<&SpanData> = exported.iter().filter(|s| s.name == "bridged").collect();
        let records = logs.get_emitted_logs().unwrap();
        let text_cases: Vec<&Case> = cases.iter().filter(|c| c.key.is_none()).collect();
        assert_eq!(bridged.len(), text_cases.len());
        assert_eq!(records.len(), text_cases.len());
        for ((case, span), log) in text_cases.iter().zip(&bridged).zip(&records) {
            check(
                "bridged span",
                case,
                &attribute_text(&span.attributes, "detail"),
                &mut failures,
            );
            let body = log.record.body().map(any_value_text).unwrap_or_default();
            check("log body", case, &body, &mut failures);
            let field = log
                .record
                .attributes_iter()
                .find(|(k, _)| k.as_str() == "detail")
                .map(|(_, v)| any_value_text(v))
                .unwrap_or_default();
            check("log attribute", case, &field, &mut failures);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn sensitive_keys_of_any_type_and_drop_rules_apply_in_the_sinks() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = MaskConfig::default();
    config.rules.push(vigil::mask::RuleConfig {
        name: "internal_host".into(),
        pattern: r"\bdb-[0-9]+\.internal\b".into(),
        action: Some(vigil::mask::Action::Drop),
    });
    let (subscriber, guard) = vigil::Builder::new("masking")
        .console(false)
        .otlp(false)
        .json_file(vigil::log::file::FileOptions::new(
            dir.path().join("app.jsonl"),
        ))
        .mask(config)
        .build()
        .unwrap();
    tracing::subscriber::with_default(subscriber, || {
        tracing::info!(
            password = 123456789u64,
            session = true,
            api_key = 42.5,
            card = 4111111111111111u64,
            order_id = 4111111111111112u64,
            host = "db-7.internal",
            user_id = 42u64,
            "login"
        );
    });
    assert!(guard.flush());
    let text = std::fs::read_to_string(dir.path().join("app.jsonl")).unwrap();
    let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(line["password"], "[REDACTED:sensitive_key]");
    assert_eq!(line["session"], "[REDACTED:sensitive_key]");
    assert_eq!(line["api_key"], "[REDACTED:sensitive_key]");
    assert_eq!(line["card"], "[REDACTED:payment_card]");
    assert_eq!(
        line["order_id"], 4111111111111112u64,
        "fails Luhn: not a card"
    );
    assert!(
        line.get("host").is_none(),
        "a drop rule removes the field: {line}"
    );
    assert_eq!(line["user_id"], 42);
}

#[test]
fn masking_is_on_by_default_and_off_only_when_asked() {
    let run = |builder: vigil::Builder| {
        let dir = tempfile::tempdir().unwrap();
        let (subscriber, guard) = builder
            .console(false)
            .otlp(false)
            .json_file(vigil::log::file::FileOptions::new(
                dir.path().join("app.jsonl"),
            ))
            .build()
            .unwrap();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("welcome jane.doe@example.com");
        });
        assert!(guard.flush());
        std::fs::read_to_string(dir.path().join("app.jsonl")).unwrap()
    };
    let default = run(vigil::Builder::new("masking"));
    assert!(default.contains("welcome [REDACTED:email]"), "{default}");
    let opted_out = run(vigil::Builder::new("masking").without_masking());
    assert!(
        opted_out.contains("welcome jane.doe@example.com"),
        "{opted_out}"
    );
}

#[test]
fn a_bad_mask_section_is_a_located_config_error() {
    let yaml = "logging:\n  version: 1\n  mask:\n    rules:\n      - name: broken\n        pattern: '(unclosed'\n";
    let error = LoggingConfig::parse(yaml, "logging.yaml")
        .unwrap_err()
        .to_string();
    assert!(error.starts_with("logging.yaml:3:"), "{error}");
    assert!(error.contains("broken"), "{error}");
    let yaml = "logging:\n  version: 1\n  mask:\n    detectors:\n      emails: {enabled: false}\n";
    let error = LoggingConfig::parse(yaml, "logging.yaml")
        .unwrap_err()
        .to_string();
    assert!(error.contains("emails"), "{error}");
}
