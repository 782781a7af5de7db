use super::*;

fn alert(name: &str, instance: &str, state: AlertState, channels: &[&str]) -> Alert {
    Alert {
        labels: vec![
            ("alertname".into(), name.into()),
            ("instance".into(), instance.into()),
            ("severity".into(), "critical".into()),
        ],
        annotations: BTreeMap::new(),
        state,
        value: 1.0,
        active_at: 0,
        fired_at: Some(0),
        resolved_at: (state == AlertState::Resolved).then_some(1),
        keep_firing_since: None,
        channels: channels.iter().map(|c| c.to_string()).collect(),
        expr: "x > 1".into(),
        missing: 0,
        no_data: false,
        flapping: false,
    }
}

fn drain(receiver: &mut mpsc::Receiver<Notification>) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    while let Ok(n) = receiver.try_recv() {
        let Content::Json(body) = n.content else {
            panic!("JSON");
        };
        out.push(serde_json::from_str(&body).unwrap());
    }
    out
}

fn tick(d: &mut Dispatcher, alerts: &[&Alert], now: i64) {
    d.tick(alerts, now);
    d.flush();
}

fn routing(wait: u64, interval: u64, repeat: u64) -> RoutingConfig {
    RoutingConfig {
        group_wait: Duration::from_secs(wait),
        group_interval: Duration::from_secs(interval),
        repeat_interval: Duration::from_secs(repeat),
        ..RoutingConfig::default()
    }
}

#[test]
fn one_notification_per_group_after_group_wait_then_resolved() {
    let (mut d, mut rx) = Dispatcher::for_test(&[("hook", "webhook")], routing(30, 300, 3600));
    let a = alert("High", "a", AlertState::Firing, &["hook"]);
    let b = alert("High", "b", AlertState::Firing, &["hook"]);
    let pending = alert("High", "c", AlertState::Pending, &["hook"]);
    tick(&mut d, &[&a, &pending], 0);
    assert!(drain(rx.get_mut("hook").unwrap()).is_empty(), "group_wait");
    tick(&mut d, &[&a, &b, &pending], 30_000);
    let sent = drain(rx.get_mut("hook").unwrap());
    assert_eq!(sent.len(), 1, "one notification for the group");
    assert_eq!(sent[0]["alerts"].as_array().unwrap().len(), 2);
    assert_eq!(sent[0]["groupLabels"]["alertname"], "High");
    // Nothing new: quiet at the next group interval.
    tick(&mut d, &[&a, &b], 330_000);
    assert!(drain(rx.get_mut("hook").unwrap()).is_empty());
    // b resolves: told at the next group interval, with a still firing.
    let b_done = alert("High", "b", AlertState::Resolved, &["hook"]);
    tick(&mut d, &[&a, &b_done], 400_000);
    assert!(
        drain(rx.get_mut("hook").unwrap()).is_empty(),
        "waits for group_interval"
    );
    tick(&mut d, &[&a, &b_done], 630_000);
    let sent = drain(rx.get_mut("hook").unwrap());
    assert_eq!(sent.len(), 1);
    let statuses: Vec<&str> = sent[0]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["firing", "resolved"]);
    // Not told twice.
    tick(&mut d, &[&a, &b_done], 930_000);
    assert!(drain(rx.get_mut("hook").unwrap()).is_empty());
    // Repeat interval.
    tick(&mut d, &[&a], 630_000 + 3_600_000);
    assert_eq!(drain(rx.get_mut("hook").unwrap()).len(), 1);
}

#[test]
fn routes_add_channels_and_group_wait_zero_sends_at_once() {
    let mut r = routing(0, 60, 3600);
    r.channels = vec!["all".into()];
    r.routes = vec![RouteConfig {
        matchers: [("severity".to_string(), "critical".to_string())].into(),
        channels: vec!["pager".into()],
    }];
    let (mut d, mut rx) = Dispatcher::for_test(
        &[("all", "webhook"), ("pager", "slack"), ("mail", "webhook")],
        r,
    );
    tick(
        &mut d,
        &[&alert("Down", "a", AlertState::Firing, &["mail"])],
        0,
    );
    assert_eq!(drain(rx.get_mut("all").unwrap()).len(), 1);
    assert_eq!(drain(rx.get_mut("mail").unwrap()).len(), 1);
    let slack = drain(rx.get_mut("pager").unwrap());
    assert_eq!(slack[0]["text"], "[FIRING:1] Down");
}

#[test]
fn alertmanager_gets_every_alert_again_after_the_resend_delay_and_its_resolution() {
    let (mut d, mut rx) = Dispatcher::for_test(&[("am", "alertmanager")], routing(30, 300, 3600));
    let a = alert("Down", "a", AlertState::Firing, &["am"]);
    tick(&mut d, &[&a], 0);
    let sent = drain(rx.get_mut("am").unwrap());
    assert_eq!(sent.len(), 1, "no group_wait: Alertmanager groups itself");
    assert_eq!(sent[0][0]["labels"]["instance"], "a");
    tick(&mut d, &[&a], 30_000);
    assert!(drain(rx.get_mut("am").unwrap()).is_empty());
    tick(&mut d, &[&a], 60_000);
    assert_eq!(drain(rx.get_mut("am").unwrap()).len(), 1);
    let mut done = alert("Down", "a", AlertState::Resolved, &["am"]);
    done.resolved_at = Some(75_000);
    tick(&mut d, &[&done], 75_000);
    let sent = drain(rx.get_mut("am").unwrap());
    assert_eq!(sent[0][0]["endsAt"], payload::rfc3339(75_000));
}

#[test]
fn a_flapping_alert_is_told_once_then_held_until_stable() {
    let (mut d, mut rx) = Dispatcher::for_test(&[("hook", "webhook")], routing(0, 1, 3600));
    let mut a = alert("Flappy", "a", AlertState::Firing, &["hook"]);
    a.flapping = true;
    tick(&mut d, &[&a], 0);
    let sent = drain(rx.get_mut("hook").unwrap());
    assert_eq!(sent.len(), 1);
    assert!(
        sent[0]["alerts"][0]["annotations"]["flapping"]
            .as_str()
            .is_some_and(|t| t.contains("no more notifications"))
    );
    let mut resolved = alert("Flappy", "a", AlertState::Resolved, &["hook"]);
    resolved.flapping = true;
    tick(&mut d, &[&resolved], 5_000);
    tick(&mut d, &[&a], 10_000);
    assert!(
        drain(rx.get_mut("hook").unwrap()).is_empty(),
        "held while flapping"
    );
    let stable = alert("Flappy", "a", AlertState::Firing, &["hook"]);
    tick(&mut d, &[&stable], 20_000);
    assert_eq!(
        drain(rx.get_mut("hook").unwrap()).len(),
        1,
        "normal again once stable"
    );
}
