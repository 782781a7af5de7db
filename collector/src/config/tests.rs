use super::*;

fn parse(text: &str) -> Result<Config, ConfigErrors> {
    Config::parse(
        text,
        &LoadOptions {
            source: "test.yaml",
            env: &|name| (name == "VIGIL_TEST_PORT").then(|| "4999".to_string()),
        },
    )
}

const MINIMAL: &str = "receivers:\n  otlp:\nexporters:\n  nop:\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [nop]\n";

#[test]
fn embedded_default_config_is_valid_and_has_every_signal() {
    let config = Config::default_config().unwrap();
    let signals: Vec<Signal> = config.service.pipelines.keys().map(|p| p.signal).collect();
    assert_eq!(signals, [Signal::Traces, Signal::Metrics, Signal::Logs]);
    for (id, pipeline) in &config.service.pipelines {
        let first: Vec<String> = pipeline
            .processors
            .iter()
            .take(2)
            .map(|p| p.to_string())
            .collect();
        assert_eq!(
            first,
            ["memory_limiter", "mask"],
            "pipeline {id} limits memory, then masks"
        );
    }
    // What the config's comment promises: refusing before 80 % of the memory the process may use.
    let limiter = config.processors.values().find_map(|p| match p {
        ProcessorConfig::MemoryLimiter(limiter) => Some(limiter),
        _ => None,
    });
    let limits = limiter.expect("a memory_limiter").limits(1000 << 20);
    assert_eq!(limits.hard, 800 << 20);
    assert!(limits.soft < limits.hard);
}

#[test]
fn mask_processor_errors_name_the_field() {
    let with = |mask: &str| {
        format!(
            "receivers:\n  otlp:\nprocessors:\n  mask:\n{mask}exporters:\n  nop:\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [mask]\n      exporters: [nop]\n"
        )
    };
    let errors = parse(&with("    detectors:\n      emial: {enabled: false}\n"))
        .unwrap_err()
        .to_string();
    assert!(errors.contains("test.yaml:6:7"), "{errors}");
    assert!(errors.contains("emial"), "{errors}");
    let errors = parse(&with(
        "    rules:\n      - {name: ticket, pattern: '(T-'}\n",
    ))
    .unwrap_err()
    .to_string();
    assert!(errors.contains("processors.mask"), "{errors}");
    assert!(errors.contains("ticket"), "{errors}");
    let errors = parse(&with("    key_action: hash\n"))
        .unwrap_err()
        .to_string();
    assert!(errors.contains("hash_key"), "{errors}");
    assert!(parse(&with("    enabled: false\n")).is_ok());
}

#[test]
fn minimal_config_gets_otelcol_defaults() {
    let config = parse(MINIMAL).unwrap();
    let ReceiverConfig::Otlp(otlp) = &config.receivers[&ComponentId::parse("otlp").unwrap()];
    assert_eq!(
        otlp.protocols.grpc.as_ref().unwrap().endpoint,
        "127.0.0.1:4317"
    );
    assert_eq!(
        otlp.protocols.http.as_ref().unwrap().endpoint,
        "127.0.0.1:4318"
    );
    assert_eq!(config.service.shutdown_timeout, DEFAULT_SHUTDOWN_TIMEOUT);
}

#[test]
fn unknown_key_is_an_error_at_its_line_and_column() {
    let text = "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpont: 127.0.0.1:1\nexporters:\n  nop:\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [nop]\n";
    let errors = parse(text).unwrap_err();
    assert_eq!(errors.errors.len(), 1, "{errors}");
    let error = &errors.errors[0];
    assert_eq!(
        (error.location.line, error.location.column),
        (5, 9),
        "{errors}"
    );
    assert!(
        error.message.contains("unknown field `endpont`"),
        "{errors}"
    );
    assert!(
        error.message.contains("endpoint"),
        "the expected keys are listed: {errors}"
    );
    assert!(
        errors
            .to_string()
            .starts_with("test.yaml:5:9: receivers.otlp.protocols.grpc"),
        "{errors}"
    );
}

#[test]
fn every_problem_is_reported_in_one_run() {
    let text = "\
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: not-an-address
processors:
  batch:
    timeout: 5
exporters:
  nop:
  bogus:
service:
  pipelines:
    traces:
      receivers: [otlp, missing]
      exporters: [nop]
    spans:
      receivers: [otlp]
      exporters: [nop]
";
    let errors = parse(text).unwrap_err();
    let text = errors.to_string();
    assert!(text.contains("test.yaml:5:9: receivers.otlp.protocols.grpc.endpoint: `not-an-address` is not a listen address"), "{text}");
    assert!(
        text.contains("test.yaml:8:5: processors.batch.timeout: `5` has no unit"),
        "{text}"
    );
    assert!(
        text.contains("test.yaml:11:3: exporters.bogus: unknown exporter type `bogus`"),
        "{text}"
    );
    assert!(
        text.contains(
            "service.pipelines.traces.receivers[1]: `missing` is not defined in `receivers`"
        ),
        "{text}"
    );
    assert!(
        text.contains("test.yaml:17:5: service.pipelines.spans: pipeline `spans` must start with"),
        "{text}"
    );
    assert_eq!(errors.errors.len(), 5, "{text}");
}

#[test]
fn environment_substitution_types_the_value() {
    let text = MINIMAL.replace("  otlp:\n", "  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:${env:VIGIL_TEST_PORT}\n");
    let config = parse(&text).unwrap();
    let ReceiverConfig::Otlp(otlp) = &config.receivers[&ComponentId::parse("otlp").unwrap()];
    assert_eq!(
        otlp.protocols.grpc.as_ref().unwrap().endpoint,
        "127.0.0.1:4999"
    );
    assert!(
        otlp.protocols.http.is_none(),
        "a `protocols` section enables only what it names"
    );
}

#[test]
fn two_components_on_one_port_is_an_error() {
    let text = MINIMAL.replace(
        "  otlp:\n",
        "  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:5000\n  otlp/b:\n    protocols:\n      http:\n        endpoint: 127.0.0.1:5000\n",
    );
    let errors = parse(&text).unwrap_err();
    assert!(
        errors.to_string().contains("is already used by"),
        "{errors}"
    );
}

#[test]
fn component_ids_say_which_half_is_wrong() {
    assert_eq!(
        ComponentId::parse("otlp/east").unwrap().to_string(),
        "otlp/east"
    );
    assert!(ComponentId::parse("/x").unwrap_err().contains("type"));
    assert!(ComponentId::parse("otlp/").unwrap_err().contains("name"));
}

#[test]
fn secrets_do_not_appear_in_debug_output() {
    let text = MINIMAL.replace("  otlp:\n", "  otlp:\n    protocols:\n      http:\n        auth:\n          bearer_token: hunter2-secret\n");
    let config = parse(&text).unwrap();
    assert!(!format!("{config:?}").contains("hunter2"));
}

#[test]
fn empty_and_broken_yaml_are_explained() {
    assert!(
        parse("")
            .unwrap_err()
            .to_string()
            .contains("the config is empty")
    );
    let errors = parse("receivers: [\n").unwrap_err();
    assert!(errors.to_string().contains("invalid YAML"), "{errors}");
    let errors = parse("receivers: {}\nexporters: {}\nservice:\n  pipelines: {}\n").unwrap_err();
    assert!(
        errors.to_string().contains("at least one pipeline"),
        "{errors}"
    );
}

#[test]
fn sampler_errors_name_the_processor_and_policy() {
    let with = |processor: &str| {
        let id = processor
            .trim()
            .split(':')
            .next()
            .unwrap_or_default()
            .to_string();
        format!(
            "receivers:\n  otlp:\nprocessors:\n{processor}exporters:\n  nop:\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [{id}]\n      exporters: [nop]\n"
        )
    };
    let errors = parse(&with(
        "  tail_sampling/sampler:\n    decision_wait: 5s\n    policies:\n      - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}\n      - {name: slow, type: latency}\n",
    ))
    .unwrap_err()
    .to_string();
    assert!(
        errors.contains("processors.tail_sampling/sampler.policies[1]"),
        "{errors}"
    );
    assert!(errors.contains("needs its `latency` section"), "{errors}");
    let errors = parse(&with(
        "  probabilistic_sampler/sampler:\n    sampling_percentage: 150\n",
    ))
    .unwrap_err()
    .to_string();
    assert!(errors.contains("between 0 and 100"), "{errors}");
    let errors = parse(&with("  probabilistic_sampler/sampler: {}\n"))
        .unwrap_err()
        .to_string();
    assert!(errors.contains("sampling_percentage"), "{errors}");
    assert!(
        parse(&with(
            "  tail_sampling/sampler:\n    policies: [{name: all, type: always_sample}]\n"
        ))
        .is_ok()
    );
}

#[test]
fn connectors_must_join_a_pipeline_of_their_input_to_one_of_their_output() {
    let with = |pipelines: &str| {
        format!(
            "receivers:\n  otlp:\nexporters:\n  nop:\nconnectors:\n  spanmetrics:\nservice:\n  pipelines:\n{pipelines}"
        )
    };
    let good = with(
        "    traces: {receivers: [otlp], exporters: [spanmetrics]}\n    metrics: {receivers: [spanmetrics], exporters: [nop]}\n",
    );
    let config = parse(&good).unwrap();
    assert_eq!(config.connectors.len(), 1);
    let errors = parse(&with(
        "    traces: {receivers: [otlp], exporters: [spanmetrics]}\n",
    ))
    .unwrap_err()
    .to_string();
    assert!(
        errors.contains(
            "connector `spanmetrics` is used as an exporter but no pipeline lists it as a receiver"
        ),
        "{errors}"
    );
    let errors = parse(&with(
        "    logs: {receivers: [otlp], exporters: [spanmetrics]}\n    traces: {receivers: [spanmetrics], exporters: [nop]}\n",
    ))
    .unwrap_err()
    .to_string();
    assert!(
        errors.contains("consumes traces; it cannot be an exporter of a logs pipeline"),
        "{errors}"
    );
    assert!(
        errors.contains("produces metrics; it cannot feed a traces pipeline"),
        "{errors}"
    );
    let errors = parse(
        "receivers:\n  otlp:\nexporters:\n  nop:\nconnectors:\n  spanmetrics:\n    histogram:\n      explicit: {buckets: [10ms, 5ms]}\n    metrics_flush_interval: 0s\nservice:\n  pipelines:\n    traces: {receivers: [otlp], exporters: [spanmetrics]}\n    metrics: {receivers: [spanmetrics], exporters: [nop]}\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        errors.contains("connectors.spanmetrics.histogram.explicit.buckets"),
        "{errors}"
    );
    assert!(errors.contains("strictly ascending"), "{errors}");
    assert!(
        errors.contains("connectors.spanmetrics.metrics_flush_interval"),
        "{errors}"
    );
}

#[test]
fn prometheus_exporters_take_metrics_only_and_check_their_fields() {
    let errors = parse(
        "receivers:\n  otlp:\nexporters:\n  prometheus:\n    const_labels: {'bad-name': x}\n    max_series: 0\n  prometheusremotewrite:\n    endpoint: 'ftp://x'\nservice:\n  pipelines:\n    traces: {receivers: [otlp], exporters: [prometheus]}\n    metrics: {receivers: [otlp], exporters: [prometheusremotewrite]}\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        errors.contains("exports metrics only; it cannot be used in a traces pipeline"),
        "{errors}"
    );
    assert!(
        errors.contains("`bad-name` is not a Prometheus label name"),
        "{errors}"
    );
    assert!(
        errors.contains("exporters.prometheus.max_series"),
        "{errors}"
    );
    assert!(
        errors.contains("`ftp://x` is not an http(s) URL"),
        "{errors}"
    );
    let errors = parse(
        "receivers:\n  otlp: {protocols: {http: {endpoint: '127.0.0.1:9464'}}}\nexporters:\n  prometheus:\nservice:\n  pipelines:\n    metrics: {receivers: [otlp], exporters: [prometheus]}\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        errors.contains("`127.0.0.1:9464` is already used"),
        "{errors}"
    );
}
