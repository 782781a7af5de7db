use super::*;
use crate::config::{Config, LoadOptions};

/// The config errors of a collector config with this `mlflow:` section in every pipeline, one string.
fn problems(section: &str) -> String {
    let text = format!(
        "receivers:\n  otlp:\nexporters:\n  mlflow: {section}\nservice:\n  pipelines:\n    traces: {{receivers: [otlp], exporters: [mlflow]}}\n    metrics: {{receivers: [otlp], exporters: [mlflow]}}\n    logs: {{receivers: [otlp], exporters: [mlflow]}}\n"
    );
    match Config::parse(
        &text,
        &LoadOptions {
            source: "m.yaml",
            env: &|_| None,
        },
    ) {
        Ok(_) => String::new(),
        Err(errors) => errors.to_string(),
    }
}

#[test]
fn bad_settings_are_named() {
    assert_eq!(problems("{tracking_uri: 'http://127.0.0.1:5000'}"), "");
    let missing = problems("{}");
    assert!(
        missing.contains("exporters.mlflow.tracking_uri: is required"),
        "{missing}"
    );
    let file = problems("{tracking_uri: 'file:///tmp/mlruns'}");
    assert!(file.contains("not an http:// or https:// URL"), "{file}");
    let short =
        problems("{tracking_uri: 'http://h:5000', heartbeat: 10ms, max_queued: 1, password: x}");
    assert!(short.contains("exporters.mlflow.heartbeat"), "{short}");
    assert!(short.contains("exporters.mlflow.max_queued"), "{short}");
    assert!(
        short.contains("exporters.mlflow.password: needs `username`"),
        "{short}"
    );
    let unknown = problems("{tracking_uri: 'http://h:5000', experiment: x}");
    assert!(unknown.contains("m.yaml:4:"), "{unknown}");
    assert!(unknown.contains("experiment"), "{unknown}");
}

#[test]
fn credentials_follow_mlflow_conventions() {
    let token = MlflowExporterConfig {
        token: Some("t".into()),
        ..MlflowExporterConfig::default()
    };
    assert_eq!(
        token.auth().map(|a| a.header_value()).as_deref(),
        Some("Bearer t")
    );
    let basic = MlflowExporterConfig {
        username: Some("u".into()),
        password: Some("p".into()),
        ..MlflowExporterConfig::default()
    };
    assert_eq!(
        basic.auth().map(|a| a.header_value()).as_deref(),
        Some("Basic dTpw")
    );
    assert!(MlflowExporterConfig::default().auth().is_none());
}
