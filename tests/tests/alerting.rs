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
) -> Collector {
    let text = std::fs::read_to_string(workspace_root().join("configs/examples/alerting.yaml"))
        .unwrap()
        .replace("0.0.0.0:4317", "{grpc}")
        .replace("0.0.0.0:4318", "{http}")
        .replace("0.0.0.0:9464", "{prometheus}")
        .replace("0.0.0.0:13133", "{health}")
        .replace("127.0.0.1:8888", "{metrics}");
    let rules = workspace_root().join("configs/monitoring");
    Collector::start_with_env(
        &text,
        &[
            ("VIGIL_RULES_DIR", rules.to_str().unwrap()),
            ("VIGIL_ALERT_EVAL_INTERVAL", "1s"),
            ("VIGIL_ALERT_GROUP_WAIT", "0s"),
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
    )
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
    let mut collector = example(&smtp, &slack, &webhook, &alertmanager);
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
