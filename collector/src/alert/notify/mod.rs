//! Notifications: named channels, routing of alerts to them, grouping as Alertmanager does it, and delivery
//! that never holds up evaluation.
//!
//! * **Channels** (`channels:` in the connector's config, referenced by name): `webhook` (Alertmanager's
//!   webhook payload, version 4), `slack` (incoming webhook), `alertmanager` (a real Alertmanager's
//!   `/api/v2/alerts`, which then does its own routing, grouping, silences and inhibition).
//! * **Routing**: an alert goes to the channels its rule names (the seed format's `channels:`), to those of
//!   every `route.routes` entry whose `match` labels it has, and to `route.channels` (a catch-all).
//! * **Grouping** (not for `alertmanager`, which groups itself): alerts of one channel with the same values of
//!   `route.group_by` make one notification. A new group waits `group_wait`; after a notification the group
//!   is looked at again every `group_interval`, and notified when its firing alerts changed, when some
//!   resolved (with `send_resolved`), or when `repeat_interval` has passed.
//! * **Delivery**: each channel has its own queue and task; retries with backoff on network errors, 5xx and
//!   429 (honouring `Retry-After`), never on other 4xx. A full queue drops the notification (counted) rather
//!   than waiting. Every attempt's outcome is counted in `vigil_alert_notifications_total{channel,result}`.
//!   URLs are never logged: they often hold the secret (a Slack webhook's path).

pub mod email;
pub mod payload;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode, Uri, header};
use serde::Deserialize;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::alert::state::{Alert, AlertState};
use crate::alert::tsdb::Labels;
use crate::component::Checker;
use crate::delivery::http::{HttpClient, HttpClientTls, http_client, post, retrying};
use crate::delivery::{ExportError, RetrySettings};
use crate::telemetry::Registry;

/// A channel's configuration.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChannelConfig {
    /// Alertmanager's webhook payload to `url`.
    Webhook(HttpChannel),
    /// A Slack incoming webhook at `url`.
    Slack(HttpChannel),
    /// A real Alertmanager at `url` (its base URL; `/api/v2/alerts` is appended).
    Alertmanager(HttpChannel),
    /// E-mail over SMTP.
    Email(email::EmailChannel),
}

/// The settings of a channel that POSTs JSON.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpChannel {
    /// Where to POST (may hold a secret: use `${env:…}`).
    pub url: String,
    /// Extra headers (`Authorization`…).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Time allowed for one attempt.
    #[serde(default = "default_timeout", with = "crate::component::duration")]
    pub timeout: Duration,
    /// TLS for `https://` URLs.
    #[serde(default)]
    pub tls: HttpClientTls,
    /// Retries of network errors, 5xx and 429.
    #[serde(default = "default_retry")]
    pub retry_on_failure: RetrySettings,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

pub(crate) fn default_retry() -> RetrySettings {
    RetrySettings {
        initial_interval: Duration::from_secs(1),
        max_interval: Duration::from_secs(30),
        max_elapsed_time: Duration::from_secs(300),
        ..RetrySettings::default()
    }
}

impl ChannelConfig {
    fn http(&self) -> Option<&HttpChannel> {
        match self {
            ChannelConfig::Webhook(c)
            | ChannelConfig::Slack(c)
            | ChannelConfig::Alertmanager(c) => Some(c),
            ChannelConfig::Email(_) => None,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            ChannelConfig::Webhook(_) => "webhook",
            ChannelConfig::Slack(_) => "slack",
            ChannelConfig::Alertmanager(_) => "alertmanager",
            ChannelConfig::Email(_) => "email",
        }
    }

    /// The URL requests go to (empty for e-mail).
    pub fn url(&self) -> String {
        let Some(http) = self.http() else {
            return String::new();
        };
        let base = http.url.trim_end_matches('/');
        match self {
            ChannelConfig::Alertmanager(_) if !base.ends_with("/api/v2/alerts") => {
                format!("{base}/api/v2/alerts")
            }
            _ => base.to_string(),
        }
    }

    /// Checks what serde cannot.
    pub fn validate(&self, check: &mut Checker<'_>, path: &str) {
        let http = match self {
            ChannelConfig::Email(email) => return email.validate(check, path),
            _ => self.http(),
        };
        let Some(http) = http else {
            return;
        };
        if http.url.is_empty() {
            check.error(
                &format!("{path}.url"),
                "is required (set it from the environment with `${env:NAME}`)",
            );
            return;
        }
        match Uri::from_str(&self.url()) {
            Ok(uri) if matches!(uri.scheme_str(), Some("http" | "https")) => {}
            // The value may be a secret: say what is wrong without repeating it.
            _ => check.error(&format!("{path}.url"), "is not an http(s) URL"),
        }
        for (name, value) in &http.headers {
            if HeaderName::from_str(name).is_err() || HeaderValue::from_str(value).is_err() {
                check.error(
                    &format!("{path}.headers.{name}"),
                    "is not a valid HTTP header",
                );
            }
        }
    }
}

/// One route: alerts with all of `match`'s labels also go to `channels`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Labels an alert must have, with these values.
    #[serde(default, rename = "match")]
    pub matchers: BTreeMap<String, String>,
    /// Where matching alerts go.
    #[serde(default)]
    pub channels: Vec<String>,
}

/// `route`: grouping and timing, the catch-all channels and extra routes.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// Channels every alert goes to.
    pub channels: Vec<String>,
    /// Routes by labels.
    pub routes: Vec<RouteConfig>,
    /// Labels whose values make a group (`[alertname]` by default; `[...]` groups by all labels).
    pub group_by: Vec<String>,
    /// How long a new group waits for more alerts before its first notification.
    #[serde(with = "crate::component::duration")]
    pub group_wait: Duration,
    /// How often a notified group is looked at again.
    #[serde(with = "crate::component::duration")]
    pub group_interval: Duration,
    /// How long before a still-firing group is notified again.
    #[serde(with = "crate::component::duration")]
    pub repeat_interval: Duration,
    /// Notify when alerts resolve.
    pub send_resolved: bool,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        // Alertmanager's defaults.
        RoutingConfig {
            channels: Vec::new(),
            routes: Vec::new(),
            group_by: vec!["alertname".into()],
            group_wait: Duration::from_secs(30),
            group_interval: Duration::from_secs(300),
            repeat_interval: Duration::from_secs(4 * 3600),
            send_resolved: true,
        }
    }
}

/// What a channel's task delivers.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Content {
    /// A JSON body to POST.
    Json(String),
    /// An e-mail.
    Email(email::Raw),
}

/// A notification handed to a channel's task.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Notification {
    /// Its place in the outbox.
    pub id: u64,
    /// The channel.
    pub channel: String,
    /// What to deliver.
    pub content: Content,
    /// How many alerts it tells about.
    pub alerts: usize,
}

/// Notifications handed to channels and not yet delivered (or given up on). With a state directory it is
/// saved before each hand-over, so a notification is neither lost nor sent twice when the collector is killed
/// (unless killed between a delivery and the save that follows it).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Outbox {
    next_id: u64,
    /// Waiting notifications by id.
    pub waiting: BTreeMap<u64, Notification>,
}

impl Outbox {
    /// The outbox as loaded after a restart: new ids continue after the waiting ones.
    pub fn resumed(mut self) -> Self {
        self.next_id = self
            .next_id
            .max(self.waiting.keys().max().copied().unwrap_or(0));
        self
    }
}

/// Called after the outbox changed (to save it).
pub type OnChange = Arc<dyn Fn() + Send + Sync>;

/// How a channel's task delivers.
enum Transport {
    Http(Box<HttpTarget>),
    Smtp(Box<lettre::AsyncSmtpTransport<lettre::Tokio1Executor>>),
}

/// Where an HTTP channel POSTs.
struct HttpTarget {
    client: HttpClient,
    url: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    timeout: Duration,
}

impl Transport {
    /// One attempt. HTTP requests carry `X-Vigil-Notification-Id`, the same on every attempt and after a
    /// restart, so a receiver can drop a repeat.
    async fn deliver(&self, notification: &Notification) -> Result<(), ExportError> {
        match (self, &notification.content) {
            (Transport::Http(target), Content::Json(body)) => {
                let mut headers = target.headers.clone();
                if let Ok(id) = HeaderValue::from_str(&notification.id.to_string()) {
                    headers.push((HeaderName::from_static("x-vigil-notification-id"), id));
                }
                send_once(
                    &target.client,
                    &target.url,
                    &headers,
                    Bytes::from(body.clone()),
                    target.timeout,
                )
                .await
            }
            (Transport::Smtp(smtp), Content::Email(raw)) => email::send(smtp, raw).await,
            _ => Err(ExportError::Permanent {
                message: "notification does not fit the channel".into(),
            }),
        }
    }
}

/// A running channel: its queue.
struct Channel {
    kind: &'static str,
    sender: mpsc::Sender<Notification>,
    email: Option<email::EmailChannel>,
}

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct GroupState {
    next_flush: i64,
    last_sent: Option<i64>,
    notified_firing: BTreeSet<Labels>,
    notified_resolved: BTreeSet<Labels>,
}

/// The dispatcher's memory of what it notified, for saving across restarts.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct DispatchState {
    groups: Vec<((String, Labels), GroupState)>,
    pushed: Vec<((String, Labels), i64)>,
    #[serde(default)]
    flap_notified: Vec<(String, Labels)>,
}

/// Routes, groups and hands notifications to the channels' tasks.
pub struct Dispatcher {
    channels: BTreeMap<String, Channel>,
    routing: RoutingConfig,
    external_url: String,
    groups: HashMap<(String, Labels), GroupState>,
    pushed: HashMap<(String, Labels), i64>,
    resend_delay: i64,
    valid_for: Duration,
    registry: Registry,
    outbox: Arc<Mutex<Outbox>>,
    /// Notifications decided by the last tick, handed to the channels by [`Dispatcher::flush`].
    ready: Vec<Notification>,
    /// Flapping series each channel was told about (and hears nothing more of until they are stable).
    flap_notified: BTreeSet<(String, Labels)>,
}

fn count(registry: &Registry, channel: &str, result: &str, n: u64) {
    registry
        .counter(
            "vigil_alert_notifications_total",
            "Notification attempts by channel and result (sent, failed, rejected, dropped).",
            &[("channel", channel), ("result", result)],
        )
        .add(n);
}

/// What a delivery ended with.
fn deliver_outcome(error: &ExportError) -> &'static str {
    match error {
        ExportError::Permanent { .. } | ExportError::Undecodable { .. } => "rejected",
        ExportError::Retryable { .. } => "failed",
    }
}

async fn send_once(
    client: &HttpClient,
    url: &Uri,
    headers: &[(HeaderName, HeaderValue)],
    body: Bytes,
    timeout: Duration,
) -> Result<(), ExportError> {
    let reply = post(client, url, headers, body, timeout)
        .await
        .map_err(|e| redact(e, url))?;
    let status = reply.status;
    if status.is_success() {
        return Ok(());
    }
    let text: String = String::from_utf8_lossy(&reply.body)
        .chars()
        .take(300)
        .collect();
    let message = format!("answered {status}: {}", text.trim());
    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        Err(ExportError::Retryable {
            message,
            retry_after: reply.retry_after,
        })
    } else {
        Err(ExportError::Permanent { message })
    }
}

/// The error without the URL, which may be a secret.
fn redact(error: ExportError, url: &Uri) -> ExportError {
    let text = url.to_string();
    let shown = format!(
        "{}://{}/…",
        url.scheme_str().unwrap_or("http"),
        url.authority().map_or("", |a| a.as_str())
    );
    match error {
        ExportError::Retryable {
            message,
            retry_after,
        } => ExportError::Retryable {
            message: message.replace(&text, &shown),
            retry_after,
        },
        ExportError::Permanent { message } => ExportError::Permanent {
            message: message.replace(&text, &shown),
        },
        ExportError::Undecodable { message } => ExportError::Undecodable {
            message: message.replace(&text, &shown),
        },
    }
}

impl Dispatcher {
    /// Starts a task per channel. `outbox` holds notifications not yet delivered (from before a restart: they
    /// are sent first); `on_change` is called whenever it changes.
    pub fn start(
        channels: &BTreeMap<String, ChannelConfig>,
        routing: &RoutingConfig,
        external_url: &str,
        evaluation_interval: Duration,
        registry: &Registry,
        outbox: Arc<Mutex<Outbox>>,
        on_change: OnChange,
    ) -> Result<Self, String> {
        let mut running = BTreeMap::new();
        for (name, config) in channels {
            let (transport, retry) = match config {
                ChannelConfig::Email(email) => (
                    Transport::Smtp(Box::new(
                        email
                            .transport()
                            .map_err(|e| format!("alert channel `{name}`: {e}"))?,
                    )),
                    email.retry_on_failure.clone(),
                ),
                _ => {
                    let Some(http) = config.http() else {
                        continue;
                    };
                    let client = http_client(&http.tls)
                        .map_err(|e| format!("alert channel `{name}`: {e}"))?;
                    let url = Uri::from_str(&config.url())
                        .map_err(|_| format!("alert channel `{name}`: the url is not a URL"))?;
                    let mut headers = vec![(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    )];
                    for (k, v) in &http.headers {
                        if let (Ok(k), Ok(mut v)) =
                            (HeaderName::from_str(k), HeaderValue::from_str(v))
                        {
                            v.set_sensitive(true);
                            headers.push((k, v));
                        }
                    }
                    (
                        Transport::Http(Box::new(HttpTarget {
                            client,
                            url,
                            headers,
                            timeout: http.timeout,
                        })),
                        http.retry_on_failure.clone(),
                    )
                }
            };
            let (sender, mut receiver) = mpsc::channel::<Notification>(64);
            let channel = name.clone();
            let registry = registry.clone();
            let delivered_outbox = outbox.clone();
            let delivered = on_change.clone();
            tokio::spawn(async move {
                while let Some(notification) = receiver.recv().await {
                    let sent = retrying(&retry, &format!("alert channel `{channel}`"), || {
                        transport.deliver(&notification)
                    })
                    .await;
                    match sent {
                        Ok(()) => count(&registry, &channel, "sent", 1),
                        Err(error) => {
                            count(&registry, &channel, deliver_outcome(&error), 1);
                            tracing::error!(channel = %channel, alerts = notification.alerts, %error,
                                "alert notification not delivered");
                        }
                    }
                    delivered_outbox
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .waiting
                        .remove(&notification.id);
                    delivered();
                }
            });
            let email = match config {
                ChannelConfig::Email(email) => Some(email.clone()),
                _ => None,
            };
            running.insert(
                name.clone(),
                Channel {
                    kind: config.kind(),
                    sender,
                    email,
                },
            );
        }
        let resend_delay = 60_000;
        {
            // Ids never repeat, saved state or not: a fresh outbox starts from the clock.
            let mut outbox = outbox.lock().unwrap_or_else(|p| p.into_inner());
            if outbox.next_id == 0 {
                outbox.next_id = payload::now_ms().max(0) as u64 * 1000;
            }
        }
        let waiting: Vec<Notification> = outbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .waiting
            .values()
            .cloned()
            .collect();
        for notification in waiting {
            match running.get(&notification.channel) {
                Some(channel) => {
                    tracing::info!(channel = %notification.channel, "sending a notification from before the restart");
                    let _ = channel.sender.try_send(notification);
                }
                None => {
                    outbox
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .waiting
                        .remove(&notification.id);
                }
            }
        }
        Ok(Dispatcher {
            channels: running,
            routing: routing.clone(),
            external_url: external_url.to_string(),
            groups: HashMap::new(),
            pushed: HashMap::new(),
            resend_delay,
            valid_for: Duration::from_millis(
                4 * resend_delay.max(evaluation_interval.as_millis() as i64) as u64,
            ),
            registry: registry.clone(),
            outbox,
            ready: Vec::new(),
            flap_notified: BTreeSet::new(),
        })
    }

    /// What it notified, to save.
    pub fn state(&self) -> DispatchState {
        DispatchState {
            groups: self
                .groups
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            pushed: self.pushed.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            flap_notified: self.flap_notified.iter().cloned().collect(),
        }
    }

    /// Takes back what it notified before a restart.
    pub fn restore(&mut self, state: DispatchState) {
        self.groups = state.groups.into_iter().collect();
        self.pushed = state.pushed.into_iter().collect();
        self.flap_notified = state.flap_notified.into_iter().collect();
    }

    /// The channels `alert` goes to.
    fn channels_of(&self, alert: &Alert) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = alert.channels.iter().cloned().collect();
        out.extend(self.routing.channels.iter().cloned());
        for route in &self.routing.routes {
            if route
                .matchers
                .iter()
                .all(|(k, v)| alert.labels.iter().any(|(lk, lv)| lk == k && lv == v))
            {
                out.extend(route.channels.iter().cloned());
            }
        }
        out
    }

    fn group_labels(&self, alert: &Alert) -> Labels {
        if self.routing.group_by.iter().any(|g| g == "...") {
            return alert.labels.clone();
        }
        alert
            .labels
            .iter()
            .filter(|(k, _)| self.routing.group_by.contains(k))
            .cloned()
            .collect()
    }

    /// Puts a notification in the outbox; [`Dispatcher::flush`] hands it to the channel.
    fn hand_over(&mut self, channel: &str, content: Content, alerts: usize) {
        if !self.channels.contains_key(channel) {
            return;
        }
        let mut outbox = self.outbox.lock().unwrap_or_else(|p| p.into_inner());
        outbox.next_id += 1;
        let notification = Notification {
            id: outbox.next_id,
            channel: channel.to_string(),
            content,
            alerts,
        };
        outbox.waiting.insert(notification.id, notification.clone());
        self.ready.push(notification);
    }

    /// Hands the notifications of the last tick to their channels (after the caller saved the state, so a
    /// restart neither loses nor repeats them). A channel whose queue is full drops the notification, counted.
    pub fn flush(&mut self) {
        for notification in self.ready.drain(..) {
            let Some(running) = self.channels.get(&notification.channel) else {
                continue;
            };
            let (id, channel, alerts) = (
                notification.id,
                notification.channel.clone(),
                notification.alerts,
            );
            if running.sender.try_send(notification).is_err() {
                self.outbox
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .waiting
                    .remove(&id);
                count(&self.registry, &channel, "dropped", 1);
                tracing::error!(channel = %channel, alerts,
                    "alert channel is not keeping up (64 notifications queued); this notification is dropped");
            }
        }
    }

    /// The notification of `alerts` (one group) for `channel`, in its format.
    fn content(&self, channel: &str, group_labels: &Labels, alerts: &[&Alert]) -> Option<Content> {
        let running = self.channels.get(channel)?;
        Some(match (running.kind, &running.email) {
            ("email", Some(email)) => match email.message(group_labels, alerts, &self.external_url)
            {
                Ok(message) => Content::Email(email::Raw::of(&message)),
                Err(error) => {
                    count(&self.registry, channel, "rejected", 1);
                    tracing::error!(channel, %error, "cannot write the alert e-mail");
                    return None;
                }
            },
            ("slack", _) => {
                Content::Json(payload::slack(group_labels, alerts, &self.external_url).to_string())
            }
            _ => Content::Json(
                payload::webhook(channel, group_labels, alerts, &self.external_url).to_string(),
            ),
        })
    }

    /// Looks at every firing and recently resolved alert at `now` and hands out what is due.
    pub fn tick(&mut self, alerts: &[&Alert], now: i64) {
        let mut by_group: BTreeMap<(String, Labels), Vec<&Alert>> = BTreeMap::new();
        let mut pushes: BTreeMap<String, Vec<&Alert>> = BTreeMap::new();
        let mut flapping: BTreeMap<(String, Labels), Vec<Alert>> = BTreeMap::new();
        let mut still_flapping = BTreeSet::new();
        for alert in alerts {
            if alert.state == AlertState::Pending {
                continue;
            }
            for channel in self.channels_of(alert) {
                let kind = self.channels.get(&channel).map(|c| c.kind);
                if alert.flapping && kind.is_some_and(|k| k != "alertmanager") {
                    // One notification saying so, then quiet until the series is stable.
                    let key = (channel.clone(), alert.labels.clone());
                    still_flapping.insert(key.clone());
                    if !self.flap_notified.contains(&key) {
                        self.flap_notified.insert(key);
                        let mut told = (*alert).clone();
                        told.state = AlertState::Firing;
                        told.annotations.insert(
                            "flapping".into(),
                            "this alert keeps firing and resolving; no more notifications until it is stable".into(),
                        );
                        flapping
                            .entry((channel.clone(), self.group_labels(alert)))
                            .or_default()
                            .push(told);
                    }
                    continue;
                }
                match kind {
                    Some("alertmanager") => {
                        // As Prometheus: every resend delay while firing, and once more when resolved.
                        let key = (channel.clone(), alert.labels.clone());
                        let last = self.pushed.get(&key).copied();
                        let due = match (alert.state, last) {
                            (_, None) => true,
                            (AlertState::Resolved, Some(at)) => {
                                alert.resolved_at.is_some_and(|r| r > at)
                                    || now - at >= self.resend_delay
                            }
                            (_, Some(at)) => now - at >= self.resend_delay,
                        };
                        if due {
                            self.pushed.insert(key, now);
                            pushes.entry(channel).or_default().push(alert);
                        }
                    }
                    Some(_) => {
                        let group = (channel, self.group_labels(alert));
                        by_group.entry(group).or_default().push(alert);
                    }
                    None => {}
                }
            }
        }
        let live: BTreeSet<(String, Labels)> = alerts
            .iter()
            .flat_map(|a| {
                self.channels_of(a)
                    .into_iter()
                    .map(|c| (c, a.labels.clone()))
            })
            .collect();
        self.pushed.retain(|key, _| live.contains(key));
        self.flap_notified
            .retain(|key| still_flapping.contains(key));
        for ((channel, group_labels), told) in flapping {
            let told: Vec<&Alert> = told.iter().collect();
            if let Some(content) = self.content(&channel, &group_labels, &told) {
                self.hand_over(&channel, content, told.len());
            }
        }
        for (channel, batch) in pushes {
            let body = payload::alertmanager(&batch, &self.external_url, now, self.valid_for);
            self.hand_over(&channel, Content::Json(body.to_string()), batch.len());
        }
        self.groups.retain(|key, _| by_group.contains_key(key));
        for (key, members) in by_group {
            let routing = &self.routing;
            let state = self
                .groups
                .entry(key.clone())
                .or_insert_with(|| GroupState {
                    next_flush: now + routing.group_wait.as_millis() as i64,
                    ..GroupState::default()
                });
            if now < state.next_flush {
                continue;
            }
            state.next_flush = now + routing.group_interval.as_millis() as i64;
            let firing: BTreeSet<Labels> = members
                .iter()
                .filter(|a| a.state != AlertState::Resolved)
                .map(|a| a.labels.clone())
                .collect();
            // An alert firing again may resolve again: that resolution is news.
            state.notified_resolved.retain(|l| !firing.contains(l));
            // Resolved alerts worth telling about: ones a notification said were firing.
            let resolved: Vec<&Alert> = members
                .iter()
                .copied()
                .filter(|a| {
                    a.state == AlertState::Resolved
                        && state.notified_firing.contains(&a.labels)
                        && !state.notified_resolved.contains(&a.labels)
                })
                .collect();
            let new_firing = !firing.is_subset(&state.notified_firing);
            let repeat = !firing.is_empty()
                && state
                    .last_sent
                    .is_some_and(|at| now - at >= routing.repeat_interval.as_millis() as i64);
            let send_resolved = routing.send_resolved && !resolved.is_empty();
            if !(new_firing || repeat || send_resolved) {
                // Alerts that resolved unnoticed no longer count as notified firing.
                state.notified_firing.retain(|l| firing.contains(l));
                continue;
            }
            let mut included: Vec<&Alert> = members
                .iter()
                .copied()
                .filter(|a| a.state != AlertState::Resolved)
                .collect();
            if routing.send_resolved {
                included.extend(resolved.iter().copied());
            }
            state.last_sent = Some(now);
            for a in &resolved {
                state.notified_resolved.insert(a.labels.clone());
            }
            state.notified_firing = firing;
            let (channel, group_labels) = key;
            let Some(content) = self.content(&channel, &group_labels, &included) else {
                continue;
            };
            self.hand_over(&channel, content, included.len());
        }
    }
}

#[cfg(test)]
impl Dispatcher {
    /// A dispatcher over test channels `(name, kind)`, with their queues.
    fn for_test(
        channels: &[(&str, &'static str)],
        routing: RoutingConfig,
    ) -> (Self, BTreeMap<String, mpsc::Receiver<Notification>>) {
        let mut running = BTreeMap::new();
        let mut receivers = BTreeMap::new();
        for (name, kind) in channels {
            let (sender, receiver) = mpsc::channel(64);
            running.insert(
                name.to_string(),
                Channel {
                    kind,
                    sender,
                    email: None,
                },
            );
            receivers.insert(name.to_string(), receiver);
        }
        let dispatcher = Dispatcher {
            channels: running,
            routing,
            external_url: "http://vigil".into(),
            groups: HashMap::new(),
            pushed: HashMap::new(),
            resend_delay: 60_000,
            valid_for: Duration::from_secs(240),
            registry: Registry::default(),
            outbox: Default::default(),
            ready: Vec::new(),
            flap_notified: BTreeSet::new(),
        };
        (dispatcher, receivers)
    }
}

#[cfg(test)]
mod tests;
