//! The `email` channel: SMTP with STARTTLS (port 587, the default), implicit TLS (`security: tls`, port 465) or
//! none (`security: none`, for a relay on the same host), with optional authentication. Each notification is
//! one message with a plain-text and an HTML part.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::Deserialize;

use crate::alert::state::{Alert, AlertState};
use crate::alert::tsdb::Labels;
use crate::component::Checker;
use crate::delivery::{ExportError, RetrySettings};

/// How the connection is secured.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Security {
    /// Plain connection upgraded with STARTTLS, which must succeed.
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS).
    Tls,
    /// No TLS (only for a relay on a trusted network).
    None,
}

/// `type: email`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EmailChannel {
    /// SMTP server host name (checked against its certificate).
    pub smtp_host: String,
    /// Port: 587 for STARTTLS, 465 for TLS, 25 without.
    #[serde(default)]
    pub smtp_port: Option<u16>,
    /// `starttls` (default), `tls` or `none`.
    #[serde(default)]
    pub security: Security,
    /// A CA certificate (PEM) to trust besides the system's.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// SMTP user, if the server wants one.
    #[serde(default)]
    pub username: Option<String>,
    /// SMTP password (use `${env:…}`).
    #[serde(default)]
    pub password: Option<String>,
    /// Sender address.
    pub from: String,
    /// Recipients.
    pub to: Vec<String>,
    /// Time allowed for one delivery.
    #[serde(default = "default_timeout", with = "crate::component::duration")]
    pub timeout: Duration,
    /// Retries of connection failures and temporary (4xx) SMTP answers.
    #[serde(default = "super::default_retry")]
    pub retry_on_failure: RetrySettings,
    /// Subject template: `$labels` are the labels every alert of the notification shares plus `status`
    /// (`firing` or `resolved`), `$value` the number firing. Default: `[FIRING:2] alertname=…`.
    #[serde(default)]
    pub subject: Option<String>,
    /// Template of each alert's line, in the plain-text part and (HTML-escaped) in the HTML part: `$labels`,
    /// `$annotations` and `$value` of the alert. Default: its labels, then its annotations.
    #[serde(default)]
    pub line: Option<String>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

impl EmailChannel {
    /// The user, unless unset or empty (`${env:VIGIL_SMTP_USERNAME:-}`).
    fn username(&self) -> Option<&str> {
        self.username.as_deref().filter(|u| !u.is_empty())
    }

    fn password(&self) -> Option<&str> {
        self.password.as_deref().filter(|p| !p.is_empty())
    }

    /// Checks addresses and settings.
    pub fn validate(&self, check: &mut Checker<'_>, path: &str) {
        if self.smtp_host.is_empty() {
            check.error(&format!("{path}.smtp_host"), "is required");
        }
        if self.from.parse::<Mailbox>().is_err() {
            check.error(
                &format!("{path}.from"),
                format!("`{}` is not an e-mail address", self.from),
            );
        }
        if self.to.is_empty() {
            check.error(&format!("{path}.to"), "needs at least one recipient");
        }
        for (i, to) in self.to.iter().enumerate() {
            if to.parse::<Mailbox>().is_err() {
                check.error(
                    &format!("{path}.to[{i}]"),
                    format!("`{to}` is not an e-mail address"),
                );
            }
        }
        if self.password().is_some() && self.username().is_none() {
            check.error(&format!("{path}.username"), "is required with `password`");
        }
        if let Some(file) = &self.ca_file
            && let Err(e) = std::fs::read(file)
        {
            check.error(
                &format!("{path}.ca_file"),
                format!("cannot read `{file}`: {e}"),
            );
        }
    }

    /// The SMTP transport.
    pub fn transport(&self) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
        let port = self.smtp_port.unwrap_or(match self.security {
            Security::Starttls => 587,
            Security::Tls => 465,
            Security::None => 25,
        });
        let mut builder =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(self.smtp_host.clone())
                .port(port)
                .timeout(Some(self.timeout));
        if self.security != Security::None {
            let mut params = TlsParameters::builder(self.smtp_host.clone());
            if let Some(file) = &self.ca_file {
                let pem = std::fs::read(file).map_err(|e| format!("cannot read `{file}`: {e}"))?;
                let certificate = Certificate::from_pem(&pem)
                    .map_err(|e| format!("`{file}` is not a PEM certificate: {e}"))?;
                params = params.add_root_certificate(certificate);
            }
            let params = params
                .build_rustls()
                .map_err(|e| format!("TLS setup failed: {e}"))?;
            builder = builder.tls(match self.security {
                Security::Tls => Tls::Wrapper(params),
                _ => Tls::Required(params),
            });
        }
        if let Some(user) = self.username() {
            builder = builder.credentials(Credentials::new(
                user.to_string(),
                self.password().unwrap_or_default().to_string(),
            ));
        }
        Ok(builder.build())
    }

    /// One message for `alerts` of a group.
    pub fn message(
        &self,
        group_labels: &Labels,
        alerts: &[&Alert],
        external_url: &str,
    ) -> Result<Message, String> {
        let (subject, text, html) = render_with(
            group_labels,
            alerts,
            external_url,
            self.subject.as_deref(),
            self.line.as_deref(),
        );
        let mut builder = Message::builder()
            .from(self.from.parse().map_err(|e| format!("from: {e}"))?)
            .subject(subject);
        for to in &self.to {
            builder = builder.to(to.parse().map_err(|e| format!("to: {e}"))?);
        }
        builder
            .multipart(
                MultiPart::alternative()
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_PLAIN)
                            .body(text),
                    )
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_HTML)
                            .body(html),
                    ),
            )
            .map_err(|e| format!("cannot build the message: {e}"))
    }
}

/// A message ready to send: its envelope and its bytes (kept as they are, so a message written before a restart
/// goes out unchanged after it).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Raw {
    /// Envelope sender.
    pub from: String,
    /// Envelope recipients.
    pub to: Vec<String>,
    /// The formatted message.
    pub bytes: Vec<u8>,
}

impl Raw {
    /// The envelope and bytes of `message`.
    pub fn of(message: &Message) -> Raw {
        let envelope = message.envelope();
        Raw {
            from: envelope.from().map(|a| a.to_string()).unwrap_or_default(),
            to: envelope.to().iter().map(|a| a.to_string()).collect(),
            bytes: message.formatted(),
        }
    }
}

/// Sends `raw`: connection problems, timeouts and 4xx answers are retryable, 5xx answers are not.
pub async fn send(
    transport: &AsyncSmtpTransport<Tokio1Executor>,
    raw: &Raw,
) -> Result<(), ExportError> {
    let parse = |a: &str| {
        a.parse::<lettre::Address>()
            .map_err(|e| ExportError::Permanent {
                message: format!("`{a}` is not an address: {e}"),
            })
    };
    let from = if raw.from.is_empty() {
        None
    } else {
        Some(parse(&raw.from)?)
    };
    let to = raw
        .to
        .iter()
        .map(|a| parse(a))
        .collect::<Result<Vec<_>, _>>()?;
    let envelope =
        lettre::address::Envelope::new(from, to).map_err(|e| ExportError::Permanent {
            message: format!("no envelope: {e}"),
        })?;
    match transport.send_raw(&envelope, &raw.bytes).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_permanent() => Err(ExportError::Permanent {
            message: format!("SMTP server refused the message: {e}"),
        }),
        Err(e) => Err(ExportError::Retryable {
            message: format!("SMTP delivery failed: {e}"),
            retry_after: None,
        }),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Subject, plain text and HTML of a notification.
pub fn render(
    group_labels: &Labels,
    alerts: &[&Alert],
    external_url: &str,
) -> (String, String, String) {
    render_with(group_labels, alerts, external_url, None, None)
}

/// [`render`] with the channel's `subject` and `line` templates.
pub fn render_with(
    group_labels: &Labels,
    alerts: &[&Alert],
    external_url: &str,
    subject_template: Option<&str>,
    line_template: Option<&str>,
) -> (String, String, String) {
    // Templates read the connector's `external_url` as `$externalURL`, as rule templates do.
    let external = crate::alert::template::External {
        labels: Default::default(),
        url: external_url.to_string(),
    };
    let firing: Vec<&&Alert> = alerts
        .iter()
        .filter(|a| a.state != AlertState::Resolved)
        .collect();
    let resolved: Vec<&&Alert> = alerts
        .iter()
        .filter(|a| a.state == AlertState::Resolved)
        .collect();
    let group = group_labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ");
    let subject = match subject_template {
        Some(template) => {
            let mut common: std::collections::BTreeMap<String, String> = alerts
                .first()
                .map(|a| {
                    a.labels
                        .iter()
                        .filter(|pair| alerts.iter().all(|b| b.labels.contains(pair)))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            common.insert(
                "status".into(),
                if firing.is_empty() {
                    "resolved"
                } else {
                    "firing"
                }
                .into(),
            );
            crate::alert::template::expand_external(
                template,
                &common,
                firing.len() as f64,
                &external,
            )
        }
        None if firing.is_empty() => format!("[RESOLVED] {group}"),
        None => format!("[FIRING:{}] {group}", firing.len()),
    };
    let mut text = String::new();
    let mut html = format!("<h2>{}</h2>", escape(&subject));
    for (title, list) in [("Firing", &firing), ("Resolved", &resolved)] {
        if list.is_empty() {
            continue;
        }
        text.push_str(&format!("{title}:\n"));
        html.push_str(&format!("<h3>{title}</h3><ul>"));
        for alert in list.iter() {
            let link = super::payload::generator_url(external_url, &alert.expr);
            if let Some(template) = line_template {
                let labels = alert.labels.iter().cloned().collect();
                let line = crate::alert::template::expand_with(
                    template,
                    &labels,
                    &alert.annotations,
                    alert.value,
                    &external,
                );
                text.push_str(&format!("- {line}\n"));
                html.push_str(&format!(
                    "<li>{} <a href=\"{}\">source</a></li>",
                    escape(&line),
                    escape(&link)
                ));
                continue;
            }
            let labels = alert
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ");
            text.push_str(&format!("- {labels}\n"));
            html.push_str(&format!("<li><b>{}</b>", escape(&labels)));
            for (k, v) in &alert.annotations {
                text.push_str(&format!("  {k}: {v}\n"));
                html.push_str(&format!("<br>{}: {}", escape(k), escape(v)));
            }
            text.push_str(&format!("  source: {link}\n"));
            html.push_str(&format!(
                "<br><a href=\"{}\">source</a></li>",
                escape(&link)
            ));
        }
        html.push_str("</ul>");
    }
    (subject, text, html)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_and_bodies_list_firing_and_resolved() {
        let alert = |instance: &str, state| Alert {
            labels: vec![
                ("alertname".into(), "TrainingFailed".into()),
                ("instance".into(), instance.into()),
            ],
            annotations: [("summary".to_string(), "run <b>7</b> failed".to_string())].into(),
            state,
            value: 1.0,
            active_at: 0,
            fired_at: Some(0),
            resolved_at: None,
            keep_firing_since: None,
            channels: Vec::new(),
            expr: "x == 1".into(),
            missing: 0,
            no_data: false,
            flapping: false,
        };
        let a = alert("a", AlertState::Firing);
        let b = alert("b", AlertState::Resolved);
        let group = vec![("alertname".to_string(), "TrainingFailed".to_string())];
        let (subject, text, html) = render(&group, &[&a, &b], "http://prom");
        assert_eq!(subject, "[FIRING:1] alertname=TrainingFailed");
        assert!(
            text.contains(
                "Firing:\n- alertname=TrainingFailed, instance=a\n  summary: run <b>7</b> failed"
            ),
            "{text}"
        );
        assert!(
            text.contains("Resolved:\n- alertname=TrainingFailed, instance=b"),
            "{text}"
        );
        assert!(html.contains("run &lt;b&gt;7&lt;/b&gt; failed"), "{html}");
        let (subject, _, _) = render(&group, &[&b], "");
        assert_eq!(subject, "[RESOLVED] alertname=TrainingFailed");
        let (subject, text, html) = render_with(
            &group,
            &[&a],
            "",
            Some(
                "[{{ $labels.status | toUpper }}] {{ $labels.alertname }} on {{ $labels.instance }} ({{ $value }})",
            ),
            Some("{{ $labels.instance }}: {{ $annotations.summary }}"),
        );
        assert_eq!(subject, "[FIRING] TrainingFailed on a (1)");
        assert_eq!(text, "Firing:\n- a: run <b>7</b> failed\n");
        assert!(
            html.contains("<li>a: run &lt;b&gt;7&lt;/b&gt; failed <a href="),
            "{html}"
        );
        // `$externalURL` is the connector's `external_url`, in the subject and in each line.
        let (subject, text, _) = render_with(
            &group,
            &[&a],
            "https://prom.example.com",
            Some("{{ $labels.alertname }} ({{ $externalURL }})"),
            Some("{{ $labels.instance }}: {{ .ExternalURL }}/alerts"),
        );
        assert_eq!(subject, "TrainingFailed (https://prom.example.com)");
        assert_eq!(text, "Firing:\n- a: https://prom.example.com/alerts\n");
    }
}
