//! Notification bodies: Alertmanager's webhook payload (version 4), Alertmanager's `POST /api/v2/alerts` body,
//! and a Slack incoming-webhook message.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::alert::state::{Alert, AlertState};
use crate::alert::tsdb::Labels;

/// Alertmanager's "zero" time, which its webhook payload uses for a firing alert's `endsAt`.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// RFC 3339 with milliseconds, UTC.
pub fn rfc3339(ms: i64) -> String {
    let time = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(time).to_string()
}

/// Now in milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Prometheus' label-set fingerprint (FNV-1a 64 over names and values, each followed by 0xff), as 16 hex digits.
pub fn fingerprint(labels: &Labels) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (name, value) in labels {
        for byte in name
            .bytes()
            .chain([0xff])
            .chain(value.bytes())
            .chain([0xff])
        {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

fn object(labels: &Labels) -> Value {
    Value::Object(
        labels
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

fn map_object(map: &BTreeMap<String, String>) -> Value {
    Value::Object(
        map.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

/// The URL a notification links back to: the expression, as a Prometheus graph URL under `external_url`.
pub fn generator_url(external_url: &str, expr: &str) -> String {
    let mut encoded = String::new();
    for byte in expr.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                encoded.push(byte as char)
            }
            _ => encoded.push_str(&format!("%{byte:02X}")),
        }
    }
    format!(
        "{}/graph?g0.expr={encoded}&g0.tab=1",
        external_url.trim_end_matches('/')
    )
}

/// Labels every alert of `alerts` has with the same value.
fn common_labels(alerts: &[&Alert]) -> Labels {
    let Some(first) = alerts.first() else {
        return Vec::new();
    };
    first
        .labels
        .iter()
        .filter(|pair| alerts.iter().all(|a| a.labels.contains(pair)))
        .cloned()
        .collect()
}

fn common_annotations(alerts: &[&Alert]) -> BTreeMap<String, String> {
    let Some(first) = alerts.first() else {
        return BTreeMap::new();
    };
    first
        .annotations
        .iter()
        .filter(|(k, v)| alerts.iter().all(|a| a.annotations.get(*k) == Some(v)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn status(alert: &Alert) -> &'static str {
    if alert.state == AlertState::Resolved {
        "resolved"
    } else {
        "firing"
    }
}

/// Alertmanager's webhook payload, version 4 (`notify/webhook/webhook.go`, `template.Data`).
pub fn webhook(
    receiver: &str,
    group_labels: &Labels,
    alerts: &[&Alert],
    external_url: &str,
) -> Value {
    let firing = alerts.iter().any(|a| a.state != AlertState::Resolved);
    let group_key = format!(
        "{{}}:{{{}}}",
        group_labels
            .iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    json!({
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": 0,
        "status": if firing { "firing" } else { "resolved" },
        "receiver": receiver,
        "groupLabels": object(group_labels),
        "commonLabels": object(&common_labels(alerts)),
        "commonAnnotations": map_object(&common_annotations(alerts)),
        "externalURL": external_url,
        "alerts": alerts.iter().map(|a| json!({
            "status": status(a),
            "labels": object(&a.labels),
            "annotations": map_object(&a.annotations),
            "startsAt": rfc3339(a.active_at),
            "endsAt": a.resolved_at.map_or_else(|| ZERO_TIME.to_string(), rfc3339),
            "generatorURL": generator_url(external_url, &a.expr),
            "fingerprint": fingerprint(&a.labels),
        })).collect::<Vec<_>>(),
    })
}

/// Alertmanager's `POST /api/v2/alerts` body. A firing alert ends `valid_for` from now unless re-sent (as
/// Prometheus does, 4 × max(evaluation interval, resend delay)); a resolved one ended when it was resolved.
pub fn alertmanager(alerts: &[&Alert], external_url: &str, now: i64, valid_for: Duration) -> Value {
    Value::Array(
        alerts
            .iter()
            .map(|a| {
                let ends = a.resolved_at.unwrap_or(now + valid_for.as_millis() as i64);
                json!({
                    "labels": object(&a.labels),
                    "annotations": map_object(&a.annotations),
                    "startsAt": rfc3339(a.active_at),
                    "endsAt": rfc3339(ends),
                    "generatorURL": generator_url(external_url, &a.expr),
                })
            })
            .collect(),
    )
}

fn severity_color(alerts: &[&Alert]) -> &'static str {
    if alerts.iter().all(|a| a.state == AlertState::Resolved) {
        return "#2eb886";
    }
    let severities: Vec<&str> = alerts
        .iter()
        .filter_map(|a| {
            a.labels
                .iter()
                .find(|(k, _)| k == "severity")
                .map(|(_, v)| v.as_str())
        })
        .collect();
    if severities
        .iter()
        .any(|s| matches!(*s, "critical" | "page" | "error"))
    {
        "#e01e5a"
    } else if severities.contains(&"warning") {
        "#ecb22e"
    } else {
        "#36c5f0"
    }
}

/// Most characters of an attachment's text Slack shows; the alerts past it are summed up in one line.
const SLACK_TEXT_LIMIT: usize = 3_000;

/// Text from alert data made inert for Slack's mrkdwn: `&`, `<` and `>` escaped, as Slack asks, so a label value
/// such as `<!channel>` or `<https://evil|click>` shows as written instead of pinging everyone or linking.
fn slack_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            _ => out.push(c),
        }
    }
    out
}

/// A Slack incoming-webhook message: one attachment per notification, coloured by severity (red for
/// critical/error, yellow for warning, blue for info, green once resolved), one line per alert. Alert data is
/// escaped ([`slack_escape`]); lines past Slack's text limit are counted in a last line instead of cut off
/// mid-alert.
pub fn slack(group_labels: &Labels, alerts: &[&Alert], external_url: &str) -> Value {
    let firing = alerts
        .iter()
        .filter(|a| a.state != AlertState::Resolved)
        .count();
    let name = group_labels
        .iter()
        .find(|(k, _)| k == "alertname")
        .map(|(_, v)| v.clone())
        .or_else(|| {
            alerts.first().and_then(|a| {
                a.labels
                    .iter()
                    .find(|(k, _)| k == "alertname")
                    .map(|(_, v)| v.clone())
            })
        })
        .unwrap_or_default();
    let name = slack_escape(&name);
    let title = if firing > 0 {
        format!("[FIRING:{firing}] {name}")
    } else {
        format!("[RESOLVED] {name}")
    };
    let lines: Vec<String> = alerts
        .iter()
        .map(|a| {
            let labels = a
                .labels
                .iter()
                .filter(|(k, _)| k != "alertname")
                .map(|(k, v)| format!("{}={}", slack_escape(k), slack_escape(v)))
                .collect::<Vec<_>>()
                .join(", ");
            let summary = a
                .annotations
                .get("summary")
                .or_else(|| a.annotations.get("description"))
                .map(|s| format!(": {}", slack_escape(s)))
                .unwrap_or_default();
            format!("*{}* {labels}{summary}", status(a).to_uppercase())
        })
        .collect();
    let mut text = String::new();
    for (shown, line) in lines.iter().enumerate() {
        // Room is kept for the last line that counts what is left out.
        if shown > 0 {
            text.push('\n');
        }
        if text.len() + line.len() > SLACK_TEXT_LIMIT - 64 {
            text.push_str(&format!("… and {} more", lines.len() - shown));
            break;
        }
        text.push_str(line);
    }
    let link = alerts
        .first()
        .map(|a| generator_url(external_url, &a.expr))
        .unwrap_or_default();
    json!({
        "text": title,
        "attachments": [{
            "color": severity_color(alerts),
            "title": title,
            "title_link": link,
            "text": text,
            "mrkdwn_in": ["text"],
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(state: AlertState, severity: &str) -> Alert {
        Alert {
            labels: vec![
                ("alertname".into(), "DiskLow".into()),
                ("instance".into(), "a".into()),
                ("severity".into(), severity.into()),
            ],
            annotations: [("summary".to_string(), "disk at 5%".to_string())].into(),
            state,
            value: 5.0,
            active_at: 1_700_000_000_000,
            fired_at: Some(1_700_000_060_000),
            resolved_at: (state == AlertState::Resolved).then_some(1_700_000_120_000),
            keep_firing_since: None,
            channels: Vec::new(),
            expr: "disk < 10".into(),
            missing: 0,
            no_data: false,
            flapping: false,
        }
    }

    #[test]
    fn webhook_payload_follows_alertmanager_version_4() {
        let firing = alert(AlertState::Firing, "warning");
        let group = vec![("alertname".to_string(), "DiskLow".to_string())];
        let body = webhook("ops", &group, &[&firing], "http://vigil:8888");
        assert_eq!(body["version"], "4");
        assert_eq!(body["status"], "firing");
        assert_eq!(body["groupKey"], "{}:{alertname=\"DiskLow\"}");
        assert_eq!(body["commonLabels"]["severity"], "warning");
        assert_eq!(body["alerts"][0]["startsAt"], "2023-11-14T22:13:20.000Z");
        assert_eq!(body["alerts"][0]["endsAt"], ZERO_TIME);
        assert_eq!(
            body["alerts"][0]["generatorURL"],
            "http://vigil:8888/graph?g0.expr=disk%20%3C%2010&g0.tab=1"
        );
        assert_eq!(body["alerts"][0]["fingerprint"].as_str().unwrap().len(), 16);
        let resolved = alert(AlertState::Resolved, "warning");
        let body = webhook("ops", &group, &[&resolved], "");
        assert_eq!(body["status"], "resolved");
        assert_eq!(body["alerts"][0]["endsAt"], "2023-11-14T22:15:20.000Z");
    }

    #[test]
    fn alertmanager_alerts_end_in_the_future_until_resolved() {
        let firing = alert(AlertState::Firing, "critical");
        let body = alertmanager(&[&firing], "", 1_700_000_000_000, Duration::from_secs(240));
        assert_eq!(body[0]["endsAt"], "2023-11-14T22:17:20.000Z");
        let resolved = alert(AlertState::Resolved, "critical");
        let body = alertmanager(
            &[&resolved],
            "",
            1_800_000_000_000,
            Duration::from_secs(240),
        );
        assert_eq!(body[0]["endsAt"], "2023-11-14T22:15:20.000Z");
    }

    #[test]
    fn slack_colours_by_severity_and_state() {
        let group = vec![("alertname".to_string(), "DiskLow".to_string())];
        let critical = alert(AlertState::Firing, "critical");
        let info = alert(AlertState::Firing, "info");
        let warning = alert(AlertState::Firing, "warning");
        let resolved = alert(AlertState::Resolved, "critical");
        assert_eq!(
            slack(&group, &[&critical], "")["attachments"][0]["color"],
            "#e01e5a"
        );
        assert_eq!(
            slack(&group, &[&warning], "")["attachments"][0]["color"],
            "#ecb22e"
        );
        assert_eq!(
            slack(&group, &[&info], "")["attachments"][0]["color"],
            "#36c5f0"
        );
        let done = slack(&group, &[&resolved], "");
        assert_eq!(done["attachments"][0]["color"], "#2eb886");
        assert_eq!(done["text"], "[RESOLVED] DiskLow");
        let body = slack(&group, &[&critical, &info], "");
        assert_eq!(body["text"], "[FIRING:2] DiskLow");
        assert!(
            body["attachments"][0]["text"]
                .as_str()
                .unwrap()
                .contains("*FIRING* instance=a, severity=critical: disk at 5%")
        );
    }

    /// Label values and annotations cannot ping a channel or plant a link, and a large group stays under
    /// Slack's text limit with a count of what did not fit.
    #[test]
    fn slack_text_is_escaped_and_bounded() {
        let group = vec![("alertname".to_string(), "Disk<Low>".to_string())];
        let mut hostile = alert(AlertState::Firing, "critical");
        hostile.labels[1].1 = "<!channel> & <https://evil.example|click>".into();
        hostile
            .annotations
            .insert("summary".into(), "<@U123> look".into());
        let body = slack(&group, &[&hostile], "");
        let text = body["attachments"][0]["text"].as_str().unwrap();
        assert!(
            text.contains("instance=&lt;!channel&gt; &amp; &lt;https://evil.example|click&gt;"),
            "{text}"
        );
        assert!(text.contains(": &lt;@U123&gt; look"), "{text}");
        assert!(!text.contains('<') && !text.contains('>'), "{text}");
        assert_eq!(body["text"], "[FIRING:1] Disk&lt;Low&gt;");
        // Grouped by other labels: the title takes the alert's own name.
        let by_instance = vec![("instance".to_string(), "a".to_string())];
        assert_eq!(
            slack(&by_instance, &[&hostile], "")["text"],
            "[FIRING:1] DiskLow"
        );

        let many: Vec<Alert> = (0..200)
            .map(|i| {
                let mut a = alert(AlertState::Firing, "warning");
                a.labels[1].1 = format!("host-{i:03}");
                a
            })
            .collect();
        let refs: Vec<&Alert> = many.iter().collect();
        let body = slack(&group, &refs, "");
        let text = body["attachments"][0]["text"].as_str().unwrap();
        assert!(text.len() <= SLACK_TEXT_LIMIT, "{}", text.len());
        assert!(text.contains("instance=host-000"), "{text}");
        let shown = text.lines().filter(|l| l.starts_with("*FIRING*")).count();
        assert!(shown > 10, "{text}");
        assert!(text.starts_with("*FIRING* instance=host-000"), "{text}");
        assert_eq!(
            text.lines().last(),
            Some(format!("… and {} more", 200 - shown).as_str()),
            "{text}"
        );
    }

    /// A line that exactly fills the room is shown whole; one more character and it is counted instead.
    #[test]
    fn slack_text_fills_its_room_exactly() {
        let group = vec![("alertname".to_string(), "DiskLow".to_string())];
        let on = |instance: &str| {
            let mut a = alert(AlertState::Firing, "warning");
            a.labels[1].1 = instance.into();
            a
        };
        let text_of = |alerts: &[&Alert]| {
            slack(&group, alerts, "")["attachments"][0]["text"]
                .as_str()
                .unwrap()
                .to_string()
        };
        let first = on("a");
        let first_len = text_of(&[&first]).len();
        let bare = text_of(&[&on("")]).len();
        // The room left for a second line after the first and its newline.
        let room = SLACK_TEXT_LIMIT - 64 - first_len - 1;
        let fits = on(&"x".repeat(room - bare));
        let text = text_of(&[&first, &fits]);
        assert_eq!(text.len(), SLACK_TEXT_LIMIT - 64, "{text}");
        assert!(!text.contains("more"), "{text}");
        let too_long = on(&"x".repeat(room - bare + 1));
        let text = text_of(&[&first, &too_long]);
        assert!(text.ends_with("\n… and 1 more"), "{text}");
    }

    #[test]
    fn fingerprints_differ_by_labels() {
        let a = vec![("a".to_string(), "1".to_string())];
        let b = vec![("a".to_string(), "2".to_string())];
        assert_ne!(fingerprint(&a), fingerprint(&b));
        assert_eq!(fingerprint(&a), fingerprint(&a.clone()));
    }
}
