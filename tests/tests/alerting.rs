//! Alerting end to end with real components: the collector's `alerting` connector evaluates the seed rules
//! (`configs/monitoring/alerts.yaml` with `recording.yaml`) through `configs/examples/alerting.yaml`, and
//! notifies an SMTP server (aiosmtpd), Slack and webhook stand-ins, and a real Alertmanager whose own webhook
//! receiver passes alerts on.

use std::process::Command;
use std::time::Duration;

use vigil_e2e::alerting::{Alertmanager, HttpSink, SmtpSink};
use vigil_e2e::{Collector, eventually, http, workspace_binary, workspace_root};

const WAIT: Duration = Duration::from_secs(60);

/// The shipped example on test ports, with every endpoint from the environment as its text says.
fn example(
    smtp: &SmtpSink,
    slack: &HttpSink,
    webhook: &HttpSink,
    alertmanager: &Alertmanager,
) -> (Collector, tempfile::TempDir) {
    let state = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(workspace_root().join("configs/examples/alerting.yaml"))
        .unwrap()
        .replace("0.0.0.0:4317", "{grpc}")
        .replace("0.0.0.0:4318", "{http}")
        .replace("0.0.0.0:9464", "{prometheus}")
        .replace("0.0.0.0:13133", "{health}")
        .replace("127.0.0.1:8888", "{metrics}");
    let rules = workspace_root().join("configs/monitoring");
    let collector = Collector::start_with_env(
        &text,
        &[
            ("VIGIL_RULES_DIR", rules.to_str().unwrap()),
            ("VIGIL_ALERT_STATE_DIR", state.path().to_str().unwrap()),
            ("VIGIL_ALERT_EVAL_INTERVAL", "1s"),
            ("VIGIL_ALERT_GROUP_WAIT", "0s"),
            ("VIGIL_ALERT_GROUP_INTERVAL", "1s"),
            ("VIGIL_SPANMETRICS_FLUSH_INTERVAL", "1s"),
            ("VIGIL_SMTP_HOST", "127.0.0.1"),
            ("VIGIL_SMTP_PORT", &smtp.port.to_string()),
            ("VIGIL_SMTP_SECURITY", "none"),
            ("VIGIL_SMTP_FROM", "vigil@example.com"),
            ("VIGIL_ALERT_EMAIL_TO", "oncall@example.com"),
            (
                "VIGIL_SLACK_WEBHOOK_URL",
                &format!("{}/services/T0/B0/secret", slack.url),
            ),
            ("VIGIL_ALERT_WEBHOOK_URL", &format!("{}/hook", webhook.url)),
            ("VIGIL_ALERTMANAGER_URL", &alertmanager.url),
        ],
    );
    (collector, state)
}

fn alert_names(posted: &[vigil_e2e::alerting::Posted]) -> Vec<String> {
    posted
        .iter()
        .flat_map(|p| p.json["alerts"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a["labels"]["alertname"].as_str().map(str::to_string))
        .collect()
}

/// The training job with a simulated failure: `training_failed` fires within an evaluation, by e-mail (its
/// rule's channel), to Alertmanager and the webhook (the catch-all), not to Slack; `ALERTS` shows it.
#[test]
fn a_failing_training_run_fires_training_failed_on_every_channel_it_names() {
    let smtp = SmtpSink::start(None);
    let slack = HttpSink::start();
    let webhook = HttpSink::start();
    let am_receiver = HttpSink::start();
    let alertmanager = Alertmanager::start(&format!("{}/from-alertmanager", am_receiver.url));
    let (mut collector, _state) = example(&smtp, &slack, &webhook, &alertmanager);
    let output = Command::new(workspace_binary("training_job"))
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://{}", collector.grpc),
        )
        .env("VIGIL_LOG_FILE", collector.dir.path().join("job.jsonl"))
        .env("EPOCHS", "3")
        .env("SIMULATE_TRAINING_FAILURE", "2")
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    assert!(
        eventually(WAIT, || alert_names(&webhook.posted())
            .contains(&"training_failed".into())),
        "webhook got {:?}\n{}",
        webhook.posted(),
        collector.log()
    );
    let hook = webhook
        .posted()
        .into_iter()
        .find(|p| alert_names(std::slice::from_ref(p)).contains(&"training_failed".into()))
        .unwrap();
    assert_eq!(hook.path, "/hook");
    assert_eq!(hook.json["version"], "4");
    assert_eq!(hook.json["status"], "firing");
    let labels = &hook.json["alerts"][0]["labels"];
    assert_eq!(labels["severity"], "error");
    assert_eq!(labels["status"], "failed");
    assert_eq!(labels["job"], "training-job");

    assert!(
        eventually(WAIT, || !smtp.messages().is_empty()),
        "no e-mail\n{}",
        collector.log()
    );
    let mail = &smtp.messages()[0];
    assert_eq!(mail["from"], "vigil@example.com");
    assert_eq!(mail["to"], serde_json::json!(["oncall@example.com"]));
    let data = mail["data"].as_str().unwrap();
    assert!(
        data.contains("Subject: [FIRING:1] alertname=training_failed"),
        "{data}"
    );
    assert!(data.contains("text/html"), "{data}");

    // The real Alertmanager holds it, with the rule's labels, and its own receiver was told.
    assert!(
        eventually(WAIT, || alertmanager
            .alerts()
            .iter()
            .any(|a| a["labels"]["alertname"] == "training_failed")),
        "{:?}\n{}",
        alertmanager.alerts(),
        alertmanager.log()
    );
    assert!(
        eventually(WAIT, || alert_names(&am_receiver.posted())
            .contains(&"training_failed".into())),
        "{:?}",
        am_receiver.posted()
    );
    // training_failed names only e-mail: Slack hears nothing of it.
    assert!(!alert_names(&slack.posted()).contains(&"training_failed".into()));

    let scraped = http("GET", &collector.prometheus, "/metrics", &[], b"")
        .unwrap()
        .text();
    assert!(
        scraped.lines().any(|l| l.starts_with("ALERTS{")
            && l.contains("alertname=\"training_failed\"")
            && l.contains("alertstate=\"firing\"")),
        "{scraped}"
    );
    assert_eq!(
        collector.metric(
            "vigil_alert_notifications_total",
            &["channel=\"email\"", "result=\"sent\""]
        ),
        1.0
    );
    assert!(
        !collector.log().contains("/services/T0/B0/secret"),
        "the Slack URL is a secret"
    );
    assert_eq!(collector.stop().code(), Some(0), "{}", collector.log());
}

fn send_gauges(collector: &Collector, service: &str, gauges: &[&str]) {
    let output = Command::new(vigil_e2e::python())
        .arg(workspace_root().join("tests/python/send_gauges.py"))
        .arg(&collector.grpc)
        .arg(service)
        .args(gauges)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "python client failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn statuses_of(posted: &[vigil_e2e::alerting::Posted], name: &str) -> Vec<String> {
    posted
        .iter()
        .flat_map(|p| p.json["alerts"].as_array().cloned().unwrap_or_default())
        .filter(|a| a["labels"]["alertname"] == name)
        .filter_map(|a| a["status"].as_str().map(str::to_string))
        .collect()
}

/// An application that reports `error_rate`, `disk_free_pct` and `gpu_usage` itself (OpenTelemetry Python SDK)
/// fires the seed rules on its own gauges: `high_error_rate` by e-mail and Slack (red), `low_disk_space` and
/// `gpu_utilization_low` on Slack; once the values recover, the webhook is told they resolved and Alertmanager
/// gets them with an `endsAt` in the past.
#[test]
fn an_application_reporting_the_seed_gauges_fires_and_resolves_the_seed_rules() {
    let smtp = SmtpSink::start(None);
    let slack = HttpSink::start();
    let webhook = HttpSink::start();
    let am_receiver = HttpSink::start();
    let alertmanager = Alertmanager::start(&format!("{}/from-alertmanager", am_receiver.url));
    let (mut collector, _state) = example(&smtp, &slack, &webhook, &alertmanager);
    send_gauges(
        &collector,
        "python-app",
        &["error_rate=0.25", "disk_free_pct=4", "gpu_usage=0.1"],
    );
    let names = ["high_error_rate", "low_disk_space", "gpu_utilization_low"];
    assert!(
        eventually(WAIT, || {
            let fired = alert_names(&webhook.posted());
            names.iter().all(|n| fired.contains(&n.to_string()))
        }),
        "webhook got {:?}\n{}",
        alert_names(&webhook.posted()),
        collector.log()
    );
    assert!(
        eventually(WAIT, || {
            let told = slack.posted();
            ["high_error_rate", "low_disk_space", "gpu_utilization_low"]
                .iter()
                .all(|n| {
                    told.iter()
                        .any(|p| p.json["text"] == format!("[FIRING:1] {n}"))
                })
        }),
        "slack got {:?}",
        slack.posted()
    );
    let red = slack
        .posted()
        .into_iter()
        .find(|p| p.json["text"] == "[FIRING:1] high_error_rate")
        .unwrap();
    assert_eq!(red.path, "/services/T0/B0/secret");
    assert_eq!(red.json["attachments"][0]["color"], "#e01e5a");
    assert!(eventually(WAIT, || smtp.messages().iter().any(|m| {
        m["data"]
            .as_str()
            .unwrap_or("")
            .contains("alertname=high_error_rate")
    })));
    assert!(
        !smtp.messages().iter().any(|m| m["data"]
            .as_str()
            .unwrap_or("")
            .contains("alertname=low_disk_space")),
        "low_disk_space names only Slack"
    );

    // Values back to normal: every alert resolves, and the channels that were told it fired are told it ended.
    send_gauges(
        &collector,
        "python-app",
        &["error_rate=0", "disk_free_pct=60", "gpu_usage=0.9"],
    );
    assert!(
        eventually(WAIT, || names.iter().all(|n| statuses_of(
            &webhook.posted(),
            n
        )
        .contains(&"resolved".to_string()))),
        "webhook got {:?}",
        webhook.posted()
    );
    assert!(
        eventually(WAIT, || alertmanager
            .alerts()
            .iter()
            .all(|a| a["status"]["state"] != "active")),
        "{:?}",
        alertmanager.alerts()
    );
    assert!(
        eventually(WAIT, || statuses_of(
            &am_receiver.posted(),
            "high_error_rate"
        )
        .contains(&"resolved".to_string())),
        "{:?}",
        am_receiver.posted()
    );
    assert_eq!(collector.stop().code(), Some(0), "{}", collector.log());
}

/// A webhook answering 500 is retried until it takes the notification; one answering 400 is not retried, and
/// both outcomes are counted.
#[test]
fn server_errors_are_retried_and_client_errors_are_not() {
    let smtp = SmtpSink::start(None);
    let slack = HttpSink::start();
    let webhook = HttpSink::start();
    let am_receiver = HttpSink::start();
    let alertmanager = Alertmanager::start(&format!("{}/from-alertmanager", am_receiver.url));
    webhook.answer_next(&[500, 500]);
    slack.answer_next(&[400]);
    let (mut collector, _state) = example(&smtp, &slack, &webhook, &alertmanager);
    send_gauges(&collector, "flaky", &["disk_free_pct=3"]);
    assert!(
        eventually(WAIT, || collector.metric(
            "vigil_alert_notifications_total",
            &["channel=\"webhook\"", "result=\"sent\""]
        ) == 1.0),
        "{}",
        collector.log()
    );
    assert_eq!(webhook.posted().len(), 3, "two 500s, then delivered");
    assert!(
        eventually(WAIT, || collector.metric(
            "vigil_alert_notifications_total",
            &["channel=\"slack\"", "result=\"rejected\""]
        ) == 1.0),
        "{}",
        collector.log()
    );
    assert_eq!(slack.posted().len(), 1, "a 400 is not retried");
    assert!(
        collector.log().contains("answered 400 Bad Request"),
        "{}",
        collector.log()
    );
    assert!(
        !collector.log().contains("/services/T0/B0/secret"),
        "{}",
        collector.log()
    );
    assert_eq!(collector.stop().code(), Some(0), "{}", collector.log());
}

/// A collector with one rule file and the given channels, every alert routed by its rule.
fn with_rules(rules: &str, channels: &str, env: &[(&str, &str)]) -> (Collector, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let rules_path = dir.path().join("rules.yaml");
    std::fs::write(&rules_path, rules).unwrap();
    let config = format!(
        "
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: '{{grpc}}'}}
exporters:
  nop: {{}}
connectors:
  alerting:
    rule_files: ['{}']
    evaluation_interval: 1s
    route: {{group_wait: 0s, group_interval: 1s}}
    channels:
{channels}
extensions:
  health_check: {{endpoint: '{{health}}'}}
service:
  extensions: [health_check]
  pipelines:
    metrics: {{receivers: [otlp], exporters: [alerting]}}
    metrics/alerts: {{receivers: [alerting], exporters: [nop]}}
  telemetry:
    metrics: {{address: '{{metrics}}'}}
",
        rules_path.display()
    );
    (Collector::start_with_env(&config, env), dir)
}

/// E-mail over STARTTLS to a server whose certificate comes from a test CA, with authentication; the
/// password comes from the environment and never shows in the log.
#[test]
fn email_goes_over_starttls_with_authentication() {
    let certs_dir = tempfile::tempdir().unwrap();
    let certs = vigil_e2e::test_certs(certs_dir.path());
    let smtp = SmtpSink::start(Some((&certs, "vigil", "s3cret-pass")));
    let channels = format!(
        "      email:\n        type: email\n        smtp_host: 127.0.0.1\n        smtp_port: {}\n        security: starttls\n        ca_file: '{}'\n        username: vigil\n        password: ${{env:TEST_SMTP_PASSWORD}}\n        from: 'Vigil <vigil@example.com>'\n        to: [oncall@example.com, ml-team@example.com]\n        subject: '[{{{{ $labels.severity | toUpper }}}}] {{{{ $labels.alertname }}}} on {{{{ $labels.job }}}}'\n",
        smtp.port,
        certs.ca.display()
    );
    let (mut collector, _dir) = with_rules(
        "alerts:\n  - name: disk_low\n    condition: disk_free_pct < 10\n    severity: warning\n    channels: [email]\n    annotations:\n      summary: '{{ $labels.job }} has {{ $value }}% free'\n",
        &channels,
        &[("TEST_SMTP_PASSWORD", "s3cret-pass")],
    );
    send_gauges(&collector, "db", &["disk_free_pct=3"]);
    assert!(
        eventually(WAIT, || !smtp.messages().is_empty()),
        "{}",
        collector.log()
    );
    let mail = &smtp.messages()[0];
    assert_eq!(mail["tls"], true);
    assert_eq!(mail["user"], "vigil");
    assert_eq!(
        mail["to"],
        serde_json::json!(["oncall@example.com", "ml-team@example.com"])
    );
    let data = mail["data"].as_str().unwrap();
    assert!(data.contains("Subject: [WARNING] disk_low on db"), "{data}");
    assert!(data.contains("summary: db has 3% free"), "{data}");
    assert_eq!(collector.stop().code(), Some(0), "{}", collector.log());
    assert!(!collector.log().contains("s3cret-pass"));
}

/// Bad rules and references are refused by `validate` with the file, line and what is wrong.
#[test]
fn bad_rules_and_undefined_channels_fail_validate_with_their_location() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yaml");
    std::fs::write(
        &rules,
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: rate(errors_total)\n      - alert: B\n        expr: label_replace(up, \"a\", \"$1\", \"b\", \"(.*)\")\n      - alert: C\n        expr: up == 0\n",
    )
    .unwrap();
    let seed = dir.path().join("seed.yaml");
    std::fs::write(
        &seed,
        "alerts:\n  - name: training_failed\n    condition: training_status == 'failed'\n    severity: error\n    channels: [email]\n",
    )
    .unwrap();
    let config = dir.path().join("collector.yaml");
    std::fs::write(
        &config,
        format!(
            "receivers:\n  otlp: {{}}\nexporters:\n  nop: {{}}\nconnectors:\n  alerting:\n    rule_files: ['{}', '{}']\n    channels:\n      slack: {{type: slack, url: 'not a url'}}\nservice:\n  pipelines:\n    metrics: {{receivers: [otlp], exporters: [alerting]}}\n    metrics/a: {{receivers: [alerting], exporters: [nop]}}\n",
            rules.display(),
            seed.display()
        ),
    )
    .unwrap();
    let output = Command::new(vigil_e2e::collector_binary())
        .arg("validate")
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    for expected in [
        "rules.yaml:5:9: groups[0].rules[0].expr: rule `A`: not valid PromQL: expected type matrix in call to function 'rate', got vector",
        "rules.yaml:7:9: groups[0].rules[1].expr: rule `B`: the function `label_replace` is not supported by Vigil's rule evaluator",
        "rule `training_failed` (",
        "seed.yaml:2) sends to channel `email`, which is not defined under `connectors.alerting.channels` (defined: slack)",
        "connectors.alerting.channels.slack.url: is not an http(s) URL",
    ] {
        assert!(
            stderr.contains(expected),
            "missing `{expected}` in:\n{stderr}"
        );
    }
}

/// Test groups' `external_labels` and `external_url` mean what `promtool test rules` makes of them: the rules'
/// templates read them as `$externalLabels` and `$externalURL`, and a label that expands to nothing is dropped.
/// Both tools pass the fixture and both fail it with one expectation changed.
#[test]
fn external_labels_in_rule_tests_mean_what_promtool_makes_them() {
    let fixture = workspace_root().join("tests/data/external-labels");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture.join("rules.yaml"), dir.path().join("rules.yaml")).unwrap();
    let tests = std::fs::read_to_string(fixture.join("tests.yaml")).unwrap();
    for (name, text, passes) in [
        ("good.yaml", tests.clone(), true),
        (
            "wrong-url.yaml",
            tests.replace("see https://prom", "see http://prom"),
            false,
        ),
        (
            "empty-label-kept.yaml",
            tests.replace(
                "exp_labels: {job: api}",
                "exp_labels: {job: api, region: ''}",
            ),
            false,
        ),
    ] {
        let file = dir.path().join(name);
        std::fs::write(&file, text).unwrap();
        let vigil = vigil_e2e::collector_binary().display().to_string();
        for tool in [
            [vigil.as_str(), "rules", "test"],
            ["promtool", "test", "rules"],
        ] {
            let output = Command::new(tool[0])
                .args(&tool[1..])
                .arg(&file)
                .output()
                .unwrap();
            assert_eq!(
                output.status.success(),
                passes,
                "{} on {name}:\n{}{}",
                tool[0],
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}

/// The shipped rule tests pass under `vigil-collector rules test` and under the real `promtool test rules`
/// (with the seed file exported), and a broken expectation fails under both.
#[test]
fn rules_test_and_promtool_give_the_same_verdicts() {
    let monitoring = workspace_root().join("configs/monitoring");
    let dir = tempfile::tempdir().unwrap();
    let export = Command::new(vigil_e2e::collector_binary())
        .args(["rules", "export", "--format", "prometheus"])
        .arg(monitoring.join("alerts.yaml"))
        .output()
        .unwrap();
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    std::fs::write(dir.path().join("alerts.prom.yaml"), &export.stdout).unwrap();
    std::fs::copy(
        monitoring.join("recording.yaml"),
        dir.path().join("recording.yaml"),
    )
    .unwrap();
    let checked = Command::new("promtool")
        .args(["check", "rules"])
        .arg(dir.path().join("alerts.prom.yaml"))
        .arg(dir.path().join("recording.yaml"))
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stdout)
    );
    let tests = std::fs::read_to_string(monitoring.join("tests.yaml")).unwrap();
    let for_promtool = tests.replace(
        "[recording.yaml, alerts.yaml]",
        "[recording.yaml, alerts.prom.yaml]",
    );
    let broken = for_promtool.replace("value: 6.25", "value: 7");
    for (name, text, passes) in [
        ("good.yaml", for_promtool, true),
        ("broken.yaml", broken, false),
    ] {
        let file = dir.path().join(name);
        std::fs::write(&file, text).unwrap();
        let vigil = Command::new(vigil_e2e::collector_binary())
            .args(["rules", "test"])
            .arg(&file)
            .output()
            .unwrap();
        let promtool = Command::new("promtool")
            .args(["test", "rules"])
            .arg(&file)
            .output()
            .unwrap();
        let show = |o: &std::process::Output| {
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        };
        assert_eq!(
            vigil.status.success(),
            passes,
            "vigil on {name}:\n{}",
            show(&vigil)
        );
        assert_eq!(
            promtool.status.success(),
            passes,
            "promtool on {name}:\n{}",
            show(&promtool)
        );
    }
    // The repository's own file, seed format included, passes as it is.
    let own = Command::new(vigil_e2e::collector_binary())
        .args(["rules", "test"])
        .arg(monitoring.join("tests.yaml"))
        .output()
        .unwrap();
    assert!(
        own.status.success(),
        "{}",
        String::from_utf8_lossy(&own.stdout)
    );
    let check = Command::new(vigil_e2e::collector_binary())
        .args(["rules", "check"])
        .arg(monitoring.join("alerts.yaml"))
        .arg(monitoring.join("recording.yaml"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(String::from_utf8_lossy(&check.stdout).contains("4 rules (4 alerting, 0 recording)"));
}

/// The README's alerting snippet, completed with the receiver and exporters it names, is a valid config that
/// loads the shipped rules from the repository root.
#[test]
fn the_readme_alerting_snippet_validates() {
    let snippet = vigil_e2e::readme_yaml_after("#### Alerting");
    let config = format!(
        "receivers:\n  otlp: {{}}\nprocessors:\n  batch: {{}}\nexporters:\n  prometheus: {{}}\n{snippet}"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("alerting.yaml");
    std::fs::write(&file, config).unwrap();
    let output = Command::new(vigil_e2e::collector_binary())
        .current_dir(workspace_root())
        .arg("validate")
        .arg(&file)
        .env("VIGIL_SMTP_PASSWORD", "x")
        .env(
            "VIGIL_SLACK_WEBHOOK_URL",
            "https://hooks.slack.com/services/T/B/C",
        )
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The alerts of a Vigil `ALERTS` exposition: each firing series' labels without `alertstate`.
fn vigil_firing(exposition: &str) -> Vec<std::collections::BTreeMap<String, String>> {
    let mut out = Vec::new();
    for line in exposition.lines().filter(|l| l.starts_with("ALERTS{")) {
        let inner = &line["ALERTS{".len()..line.rfind('}').unwrap_or(line.len())];
        let mut labels = std::collections::BTreeMap::new();
        for pair in inner.split("\",") {
            if let Some((k, v)) = pair.split_once("=\"") {
                labels.insert(k.to_string(), v.trim_end_matches('"').to_string());
            }
        }
        if labels.remove("alertstate").as_deref() == Some("firing") {
            out.push(labels);
        }
    }
    out.sort();
    out
}

/// The same metrics, scraped by a real Prometheus loaded with `rules export` output and evaluated by Vigil:
/// both fire the same alerts with the same labels, and both resolve them.
#[test]
fn vigil_and_prometheus_fire_and_resolve_the_same_alerts() {
    let monitoring = workspace_root().join("configs/monitoring");
    let dir = tempfile::tempdir().unwrap();
    let exported = dir.path().join("alerts.prom.yaml");
    let export = Command::new(vigil_e2e::collector_binary())
        .args(["rules", "export"])
        .arg(monitoring.join("alerts.yaml"))
        .output()
        .unwrap();
    std::fs::write(&exported, &export.stdout).unwrap();
    let sink = HttpSink::start();
    let config = format!(
        "
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: '{{grpc}}'}}
exporters:
  prometheus: {{endpoint: '{{prometheus}}'}}
connectors:
  alerting:
    rule_files: ['{alerts}', '{recording}']
    evaluation_interval: 1s
    channels:
      email: {{type: webhook, url: '{sink}/email'}}
      slack: {{type: webhook, url: '{sink}/slack'}}
extensions:
  health_check: {{endpoint: '{{health}}'}}
service:
  extensions: [health_check]
  pipelines:
    metrics: {{receivers: [otlp], exporters: [prometheus, alerting]}}
    metrics/alerts: {{receivers: [alerting], exporters: [prometheus]}}
  telemetry:
    metrics: {{address: '{{metrics}}'}}
",
        alerts = monitoring.join("alerts.yaml").display(),
        recording = monitoring.join("recording.yaml").display(),
        sink = sink.url,
    );
    let mut collector = Collector::start(&config);
    let prometheus = vigil_e2e::Prometheus::start_with_rules(
        &[&collector.prometheus],
        &[&exported, &monitoring.join("recording.yaml")],
    );
    let prometheus_firing = || {
        let mut out: Vec<_> = prometheus
            .alerts()
            .into_iter()
            .filter(|(_, state)| state == "firing")
            .map(|(labels, _)| labels)
            .collect();
        out.sort();
        out
    };
    let vigil_now = || {
        vigil_firing(
            &http("GET", &collector.prometheus, "/metrics", &[], b"")
                .map(|r| r.text())
                .unwrap_or_default(),
        )
    };
    send_gauges(
        &collector,
        "python-app",
        &["error_rate=0.25", "disk_free_pct=4", "gpu_usage=0.9"],
    );
    let mut last = (Vec::new(), Vec::new());
    let agreed = eventually(WAIT, || {
        last = (vigil_now(), prometheus_firing());
        last.0.len() == 2 && last.0 == last.1
    });
    assert!(
        agreed,
        "vigil {:?}\nprometheus {:?}\nup {:?}\nerror_rate {:?}\nrules {}\n{}",
        last.0,
        last.1,
        prometheus.query("up"),
        prometheus.query("error_rate"),
        http("GET", &prometheus.address, "/api/v1/rules", &[], b"")
            .map(|r| r.text())
            .unwrap_or_default(),
        prometheus.log()
    );
    let names: Vec<&str> = last.0.iter().map(|l| l["alertname"].as_str()).collect();
    assert_eq!(names, ["high_error_rate", "low_disk_space"]);

    send_gauges(
        &collector,
        "python-app",
        &["error_rate=0", "disk_free_pct=60", "gpu_usage=0.9"],
    );
    let resolved = eventually(WAIT, || {
        last = (vigil_now(), prometheus_firing());
        last.0.is_empty() && last.1.is_empty()
    });
    assert!(resolved, "vigil {:?}\nprometheus {:?}", last.0, last.1);
    assert_eq!(collector.stop().code(), Some(0), "{}", collector.log());
}

fn firing_and_resolved(sink: &HttpSink, name: &str) -> (usize, usize) {
    let statuses = statuses_of(&sink.posted(), name);
    (
        statuses.iter().filter(|s| *s == "firing").count(),
        statuses.iter().filter(|s| *s == "resolved").count(),
    )
}

/// `kill -9` while an alert is pending, then while it fires: the pending alert keeps its start and fires on
/// time after the restart, the firing one is not announced again, and its resolution is told exactly once.
#[test]
fn alerts_survive_kill_9_without_lost_or_repeated_notifications() {
    let state = tempfile::tempdir().unwrap();
    let webhook = HttpSink::start();
    let channels = format!(
        "      hook: {{type: webhook, url: '{}/hook'}}\n",
        webhook.url
    );
    let rules = "alerts:\n  - name: disk_low\n    condition: disk_free_pct < 10\n    severity: warning\n    channels: [hook]\n    for: 3s\n";
    let text = format!(
        "{channels}    state_directory: '{}'\n    restore_grace: 1m\n",
        state.path().display()
    );
    let start = || with_rules(rules, &text, &[]);
    let state_file = state.path().join("alerting-state.json");
    let saved = || std::fs::read_to_string(&state_file).unwrap_or_default();

    // Pending, then killed.
    let (collector, _dir) = start();
    send_gauges(&collector, "db", &["disk_free_pct=3"]);
    assert!(
        eventually(WAIT, || saved().contains("\"Pending\"")),
        "{}",
        collector.log()
    );
    drop(collector);
    assert_eq!(firing_and_resolved(&webhook, "disk_low"), (0, 0));

    // Restarted: it fires on time with no new data (its source has not reported again), and is told once.
    let (collector, _dir) = start();
    assert!(
        eventually(WAIT, || firing_and_resolved(&webhook, "disk_low").0 == 1),
        "{}",
        collector.log()
    );
    assert!(eventually(WAIT, || saved().contains("\"Firing\"")));
    drop(collector);

    // Restarted while firing: not announced again; the recovery resolves it, told once.
    let (mut collector, _dir) = start();
    send_gauges(&collector, "db", &["disk_free_pct=50"]);
    assert!(
        eventually(WAIT, || firing_and_resolved(&webhook, "disk_low").1 == 1),
        "{:?}\n{}",
        webhook.posted(),
        collector.log()
    );
    assert_eq!(collector.stop().code(), Some(0), "{}", collector.log());
    assert_eq!(
        firing_and_resolved(&webhook, "disk_low"),
        (1, 1),
        "{:?}",
        webhook.posted()
    );
    assert!(
        collector.log().contains("alert state restored"),
        "{}",
        collector.log()
    );
}

/// Twenty cycles of random values and `kill -9` at random moments: the webhook hears of the alert's firing and
/// resolution alternately, never twice in a row and never missing one (repeats of one notification, which a
/// kill between delivery and save can cause, carry the same `X-Vigil-Notification-Id` and are counted once).
#[test]
fn twenty_random_kill_cycles_lose_and_repeat_nothing() {
    let state = tempfile::tempdir().unwrap();
    let webhook = HttpSink::start();
    let channels = format!(
        "      hook: {{type: webhook, url: '{}/hook'}}\n    state_directory: '{}'\n    restore_grace: 1m\n",
        webhook.url,
        state.path().display()
    );
    let rules =
        "alerts:\n  - name: disk_low\n    condition: disk_free_pct < 10\n    channels: [hook]\n";
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let mut random = seed | 1;
    let mut next = move |n: u64| {
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        random % n
    };
    for _ in 0..20 {
        let (collector, _dir) = with_rules(rules, &channels, &[]);
        let value = if next(2) == 0 { "3" } else { "50" };
        send_gauges(&collector, "db", &[&format!("disk_free_pct={value}")]);
        std::thread::sleep(Duration::from_millis(next(1500)));
        drop(collector);
    }
    let (mut collector, _dir) = with_rules(rules, &channels, &[]);
    send_gauges(&collector, "db", &["disk_free_pct=50"]);
    let sequence = || {
        let mut seen = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        for posted in webhook.posted() {
            let id = posted
                .headers
                .get("x-vigil-notification-id")
                .cloned()
                .unwrap_or_default();
            if seen.insert(id) {
                out.extend(statuses_of(std::slice::from_ref(&posted), "disk_low"));
            }
        }
        out
    };
    assert!(
        eventually(WAIT, || sequence().len() % 2 == 0
            && sequence().last().map(String::as_str) != Some("firing")),
        "seed {seed}: {:?}\n{}",
        sequence(),
        collector.log()
    );
    assert_eq!(collector.stop().code(), Some(0), "{}", collector.log());
    let sequence = sequence();
    assert!(!sequence.is_empty(), "seed {seed}: the alert never fired");
    for (i, status) in sequence.iter().enumerate() {
        let expected = if i % 2 == 0 { "firing" } else { "resolved" };
        assert_eq!(status, expected, "seed {seed}: {sequence:?}");
    }
}

/// A Python service whose spans fail one time in five: `spanmetrics` counts them, the shipped recording rule
/// turns the counts into `error_rate` 0.2, and `high_error_rate` fires for that service.
#[test]
fn a_service_with_a_fifth_of_its_spans_failing_fires_high_error_rate() {
    let smtp = SmtpSink::start(None);
    let slack = HttpSink::start();
    let webhook = HttpSink::start();
    let am_receiver = HttpSink::start();
    let alertmanager = Alertmanager::start(&format!("{}/from-alertmanager", am_receiver.url));
    let (mut collector, _state) = example(&smtp, &slack, &webhook, &alertmanager);
    let output = Command::new(vigil_e2e::python())
        .arg(workspace_root().join("tests/python/send_error_spans.py"))
        .arg(&collector.grpc)
        .arg("checkout")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "python client failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        eventually(WAIT, || alert_names(&webhook.posted())
            .contains(&"high_error_rate".into())),
        "webhook got {:?}\n{}",
        webhook.posted(),
        collector.log()
    );
    let hook = webhook
        .posted()
        .into_iter()
        .find(|p| alert_names(std::slice::from_ref(p)).contains(&"high_error_rate".into()))
        .unwrap();
    let labels = &hook.json["alerts"][0]["labels"];
    assert_eq!(labels["service_name"], "checkout");
    assert_eq!(labels["severity"], "critical");
    assert_eq!(collector.stop().code(), Some(0), "{}", collector.log());
}
