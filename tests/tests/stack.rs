//! The local stack (`docker-compose.yml`) short of `docker compose up`, which cannot run here: the compose file
//! is valid for Debian's `docker-compose` and every file, service and port it refers to exists; the Grafana
//! dashboards are well formed, use only provisioned datasources and only the labels the `loki` exporter
//! writes; the Alertmanager config renders and passes `amtool`; and every query of every dashboard panel returns
//! data from a real Prometheus scraping a collector that runs `configs/examples/stack.yaml`, fed by the example
//! programs through `scripts/demo`, with a real Alertmanager and MLflow behind it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use vigil_e2e::alerting::Alertmanager;
use vigil_e2e::loki::FakeLoki;
use vigil_e2e::{
    Collector, MlflowServer, OTLP_TO_FILE, Prometheus, eventually, file_exporter_lines, http,
    percent_encode, python, reserve_port, spans, workspace_binary, workspace_root,
};

fn root(path: &str) -> PathBuf {
    workspace_root().join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A YAML file as a JSON value (`${env:…}` references take their defaults).
fn yaml(text: &str, what: &str) -> Value {
    vigil::config::yaml::parse(text, &|_| None)
        .unwrap_or_else(|e| panic!("{what}: {e:?}"))
        .0
}

fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?} (scripts/test installs it): {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

// --- dashboards ---------------------------------------------------------------------------------------------

/// Every dashboard file, by name.
fn dashboards() -> BTreeMap<String, Value> {
    let dir = root("configs/grafana/dashboards");
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).expect("configs/grafana/dashboards") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).expect("read");
            let json: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            out.insert(name.into_owned(), json);
        }
    }
    assert!(out.len() >= 7, "dashboards missing: {:?}", out.keys());
    out
}

/// Every panel, those inside collapsed rows included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        out.push(panel);
        out.extend(panel["panels"].as_array().into_iter().flatten());
    }
    out
}

fn variables(dashboard: &Value) -> Vec<&Value> {
    dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .collect()
}

/// The datasources Grafana is provisioned with: uid → type.
fn provisioned_datasources() -> BTreeMap<String, String> {
    let file = yaml(
        &read("configs/grafana/provisioning/datasources/vigil.yaml"),
        "datasources",
    );
    file["datasources"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            (
                d["uid"].as_str().unwrap_or_default().to_string(),
                d["type"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn the_dashboards_are_what_generate_py_writes() {
    run(Command::new("python3")
        .arg(root("configs/grafana/generate.py"))
        .arg("--check"));
}

#[test]
fn every_dashboard_is_well_formed_and_uses_provisioned_datasources() {
    let provisioned = provisioned_datasources();
    let mut uids = BTreeSet::new();
    let mut titles = BTreeSet::new();
    let mut problems = Vec::new();
    for (file, dashboard) in dashboards() {
        let uid = dashboard["uid"].as_str().unwrap_or_default();
        if !(8..=40).contains(&uid.len()) || !uids.insert(uid.to_string()) {
            problems.push(format!(
                "{file}: uid `{uid}` missing, duplicated or not 8-40 characters"
            ));
        }
        if !titles.insert(dashboard["title"].as_str().unwrap_or_default().to_string()) {
            problems.push(format!("{file}: title duplicated"));
        }
        if dashboard.get("id").is_some_and(|id| !id.is_null()) {
            problems.push(format!("{file}: has an `id` (Grafana assigns it)"));
        }
        // Datasource variables: name → datasource type, defaulting to a provisioned datasource of that type.
        let mut datasource_variables = BTreeMap::new();
        for variable in variables(&dashboard) {
            let name = variable["name"].as_str().unwrap_or_default();
            if variable["type"] == "datasource" {
                let kind = variable["query"].as_str().unwrap_or_default();
                let default = variable["current"]["value"].as_str().unwrap_or_default();
                if provisioned.get(default).map(String::as_str) != Some(kind) {
                    problems.push(format!(
                        "{file}: variable `{name}` defaults to `{default}`, not a provisioned {kind} datasource"
                    ));
                }
                datasource_variables.insert(format!("${{{name}}}"), kind.to_string());
            }
        }
        let resolves = |reference: &Value| -> bool {
            let uid = reference["uid"].as_str().unwrap_or_default();
            let kind = reference["type"].as_str().unwrap_or_default();
            datasource_variables.get(uid).map(String::as_str) == Some(kind)
                || provisioned.get(uid).map(String::as_str) == Some(kind)
        };
        for variable in variables(&dashboard) {
            if variable["type"] == "query" && !resolves(&variable["datasource"]) {
                problems.push(format!(
                    "{file}: variable `{}` uses an unknown datasource",
                    variable["name"]
                ));
            }
        }
        let mut ids = BTreeSet::new();
        for panel in panels(&dashboard) {
            let title = panel["title"].as_str().unwrap_or_default();
            let at = format!("{file}: panel `{title}`");
            if title.is_empty() {
                problems.push(format!("{file}: a panel has no title"));
            }
            if !ids.insert(panel["id"].as_u64().unwrap_or(0)) || panel["id"].as_u64().is_none() {
                problems.push(format!("{at}: id missing or duplicated"));
            }
            let grid = &panel["gridPos"];
            let (x, w) = (grid["x"].as_u64(), grid["w"].as_u64());
            if !matches!((x, w), (Some(x), Some(w)) if w >= 1 && x + w <= 24)
                || grid["h"].as_u64().is_none()
            {
                problems.push(format!("{at}: gridPos {grid} does not fit 24 columns"));
            }
            if panel["type"] == "row" {
                continue;
            }
            if panel["description"].as_str().unwrap_or_default().is_empty() {
                problems.push(format!("{at}: no description"));
            }
            let shows_quantity = matches!(
                panel["type"].as_str(),
                Some("timeseries" | "stat" | "gauge" | "bargauge" | "table" | "state-timeline")
            );
            if shows_quantity
                && panel["fieldConfig"]["defaults"]["unit"]
                    .as_str()
                    .unwrap_or_default()
                    .is_empty()
            {
                problems.push(format!("{at}: no unit"));
            }
            if !resolves(&panel["datasource"]) {
                problems.push(format!(
                    "{at}: datasource {} is not provisioned",
                    panel["datasource"]
                ));
            }
            let targets = panel["targets"].as_array().cloned().unwrap_or_default();
            if targets.is_empty() {
                problems.push(format!("{at}: no query"));
            }
            let mut refs = BTreeSet::new();
            for target in &targets {
                if !resolves(&target["datasource"]) {
                    problems.push(format!(
                        "{at}: a query's datasource {} is not provisioned",
                        target["datasource"]
                    ));
                }
                if target["expr"]
                    .as_str()
                    .unwrap_or_default()
                    .trim()
                    .is_empty()
                {
                    problems.push(format!("{at}: an empty query"));
                }
                if !refs.insert(target["refId"].as_str().unwrap_or_default().to_string()) {
                    problems.push(format!("{at}: refId missing or duplicated"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The stream selectors of a LogQL query: each `{…}` that is not a `[…]` range or a template variable.
fn stream_selectors(logql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = logql;
    while let Some(open) = rest.find('{') {
        // `${var}` and `{{legend}}` are not selectors.
        let before = &rest[..open];
        if before.ends_with('$') || rest[open..].starts_with("{{") {
            rest = &rest[open + 1..];
            continue;
        }
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        out.push(rest[open + 1..open + close].to_string());
        rest = &rest[open + close + 1..];
    }
    out
}

#[test]
fn loki_queries_use_only_labels_the_loki_exporter_writes() {
    let stack = yaml(&read("configs/examples/stack.yaml"), "stack.yaml");
    let loki: vigil_collector::exporter::loki::LokiExporterConfig =
        serde_json::from_value(stack["exporters"]["loki"].clone())
            .expect("the stack's loki exporter");
    let labels = loki.label_names();
    let levels: BTreeSet<&str> = vigil_collector::exporter::loki::labels::LEVELS
        .iter()
        .copied()
        .collect();
    let mut checked = 0;
    for (file, dashboard) in dashboards() {
        for panel in panels(&dashboard) {
            for target in panel["targets"].as_array().into_iter().flatten() {
                if target["datasource"]["type"] != "loki" {
                    continue;
                }
                let expr = target["expr"].as_str().unwrap_or_default();
                let selectors = stream_selectors(expr);
                assert!(
                    !selectors.is_empty(),
                    "{file}: `{expr}` has no stream selector"
                );
                for selector in selectors {
                    for matcher in selector.split(',') {
                        let matcher = matcher.trim();
                        let name: String = matcher
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect();
                        assert!(
                            labels.contains(&name),
                            "{file}: `{expr}` selects on `{name}`, which the loki exporter never writes \
                             (it writes {labels:?})"
                        );
                        if name == "level" {
                            let value = matcher.split('"').nth(1).unwrap_or_default();
                            for level in value.split('|') {
                                assert!(
                                    levels.contains(level),
                                    "{file}: `{expr}`: level `{level}` is not one the exporter writes ({levels:?})"
                                );
                            }
                        }
                        checked += 1;
                    }
                }
            }
        }
    }
    assert!(checked >= 4, "only {checked} Loki matchers found");
}

// --- compose, Prometheus, Alertmanager, Dockerfile ----------------------------------------------------------

/// `docker-compose config`'s view of the file (Debian's `docker-compose`, installed by scripts/test).
fn compose() -> Value {
    let text = run(Command::new("docker-compose")
        .current_dir(workspace_root())
        .args(["-f", "docker-compose.yml", "config"]));
    yaml(&text, "docker-compose config")
}

/// The ports a compose service listens on for the other services: its published targets and `expose`.
fn service_ports(service: &Value) -> BTreeSet<u16> {
    let mut ports = BTreeSet::new();
    for port in service["ports"].as_array().into_iter().flatten() {
        if let Some(target) = port["target"].as_u64() {
            ports.insert(target as u16);
        }
    }
    for port in service["expose"].as_array().into_iter().flatten() {
        if let Some(p) = port.as_str().and_then(|p| p.parse().ok()) {
            ports.insert(p);
        }
    }
    ports
}

/// `host:port` of a URL or an endpoint (`http://loki:3100/x`, `jaeger:4317`).
fn host_port(endpoint: &str) -> (String, u16) {
    let rest = endpoint.split("://").last().unwrap_or(endpoint);
    let authority = rest.split('/').next().unwrap_or(rest);
    let (host, port) = authority
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("`{endpoint}` names no port"));
    (
        host.to_string(),
        port.parse()
            .unwrap_or_else(|_| panic!("`{endpoint}`: bad port")),
    )
}

/// The default of every `${env:NAME:-default}` in `text` that looks like an endpoint of another service.
fn endpoint_defaults(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (name, rest) in text
        .split("${env:")
        .skip(1)
        .filter_map(|s| s.split_once(":-"))
    {
        let default = rest.split('}').next().unwrap_or_default();
        // Addresses for a browser (`external_url`: localhost) are not the collector's to reach.
        // Nor are the addresses it listens on.
        let for_browser = default.contains("://localhost") || default.starts_with("0.0.0.0:");
        if (name.ends_with("ENDPOINT") || name.ends_with("_URI") || name.ends_with("_URL"))
            && !for_browser
        {
            out.push((name.to_string(), default.to_string()));
        }
    }
    out
}

#[test]
fn the_compose_file_is_valid_and_every_reference_resolves() {
    let compose = compose();
    let services = compose["services"].as_object().cloned().unwrap_or_default();
    let expected: BTreeSet<&str> = [
        "collector",
        "prometheus",
        "alertmanager",
        "alert-log",
        "loki",
        "jaeger",
        "mlflow",
        "grafana",
        "demo",
    ]
    .into();
    let names: BTreeSet<&str> = services.keys().map(String::as_str).collect();
    assert_eq!(names, expected);
    let declared_volumes: BTreeSet<String> = compose["volumes"]
        .as_object()
        .map(|v| v.keys().cloned().collect())
        .unwrap_or_default();
    let mut mounts: BTreeMap<(String, String), PathBuf> = BTreeMap::new();
    for (name, service) in &services {
        // Pinned images, health checks (Jaeger's image cannot run one), waits on healthy dependencies.
        if let Some(image) = service["image"].as_str()
            && service.get("build").is_none()
        {
            let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
            assert!(
                tag != "latest" && !tag.contains('/'),
                "{name}: image `{image}` is not pinned"
            );
        }
        if name != "jaeger" && name != "demo" {
            assert!(
                service.get("healthcheck").is_some(),
                "{name} has no health check"
            );
        }
        for (dependency, condition) in service["depends_on"].as_object().into_iter().flatten() {
            assert!(
                services.contains_key(dependency),
                "{name} depends on unknown `{dependency}`"
            );
            if condition["condition"] == "service_healthy" {
                assert!(
                    services[dependency].get("healthcheck").is_some(),
                    "{name} waits for {dependency} to be healthy, which has no health check"
                );
            }
        }
        for volume in service["volumes"].as_array().into_iter().flatten() {
            let text = volume.as_str().unwrap_or_default();
            let mut parts = text.split(':');
            let (source, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            if source.starts_with('/') {
                assert!(
                    Path::new(source).exists(),
                    "{name} mounts `{source}`, which does not exist"
                );
                mounts.insert((name.clone(), target.to_string()), PathBuf::from(source));
            } else {
                assert!(
                    declared_volumes.contains(source),
                    "{name} uses undeclared volume `{source}`"
                );
            }
        }
    }
    let mounted = |service: &str, target: &str| -> PathBuf {
        mounts
            .get(&(service.to_string(), target.to_string()))
            .cloned()
            .unwrap_or_else(|| panic!("{service} has nothing mounted at {target}"))
    };
    // Every address one service uses for another names a service and a port it listens on.
    let reaches = |from: &str, endpoint: &str| {
        let (host, port) = host_port(endpoint);
        let service = services
            .get(&host)
            .unwrap_or_else(|| panic!("{from}: `{endpoint}` names no compose service"));
        assert!(
            service_ports(service).contains(&port),
            "{from}: `{endpoint}`: {host} does not listen on {port} ({:?})",
            service_ports(service)
        );
    };
    // The collector runs the stack config, with the rules at its default rules directory.
    let collector = &services["collector"];
    assert_eq!(
        collector["command"],
        serde_json::json!(["--config", "/etc/vigil/collector.yaml"])
    );
    assert_eq!(
        mounted("collector", "/etc/vigil/collector.yaml"),
        root("configs/examples/stack.yaml")
    );
    assert_eq!(
        mounted("collector", "/etc/vigil/rules"),
        root("configs/monitoring")
    );
    let stack_text = read("configs/examples/stack.yaml");
    assert!(stack_text.contains("${env:VIGIL_RULES_DIR:-/etc/vigil/rules}"));
    let defaults = endpoint_defaults(&stack_text);
    assert!(defaults.len() >= 4, "{defaults:?}");
    for (name, default) in &defaults {
        reaches(&format!("stack.yaml {name}"), default);
    }
    // Prometheus: its config and rules, the collector's two endpoints, Alertmanager.
    assert_eq!(
        mounted("prometheus", "/etc/prometheus/prometheus.yml"),
        root("configs/prometheus/prometheus.yml")
    );
    assert_eq!(
        mounted("prometheus", "/etc/prometheus/rules"),
        root("configs/prometheus/rules")
    );
    let prometheus = yaml(&read("configs/prometheus/prometheus.yml"), "prometheus.yml");
    let mut targets = Vec::new();
    for job in prometheus["scrape_configs"]
        .as_array()
        .into_iter()
        .flatten()
    {
        for group in job["static_configs"].as_array().into_iter().flatten() {
            targets.extend(group["targets"].as_array().into_iter().flatten().cloned());
        }
    }
    for group in prometheus["alerting"]["alertmanagers"]
        .as_array()
        .into_iter()
        .flatten()
    {
        for config in group["static_configs"].as_array().into_iter().flatten() {
            targets.extend(config["targets"].as_array().into_iter().flatten().cloned());
        }
    }
    assert_eq!(targets.len(), 4, "{targets:?}");
    for target in &targets {
        reaches("prometheus.yml", target.as_str().unwrap_or_default());
    }
    // Alertmanager renders its config with the script mounted, and notifies alert-log.
    assert_eq!(
        mounted("alertmanager", "/etc/alertmanager/render.sh"),
        root("configs/alertmanager/render.sh")
    );
    assert_eq!(
        services["alertmanager"]["entrypoint"][1],
        "/etc/alertmanager/render.sh"
    );
    reaches(
        "alertmanager ALERT_LOG_URL",
        services["alertmanager"]["environment"]["ALERT_LOG_URL"]
            .as_str()
            .unwrap_or_default(),
    );
    assert_eq!(
        mounted("alert-log", "/app/alert-log.py"),
        root("configs/alertmanager/alert-log.py")
    );
    assert_eq!(
        mounted("loki", "/etc/loki/loki.yaml"),
        root("configs/loki/loki.yaml")
    );
    // Grafana: provisioning, the dashboards where the provider looks, datasource URLs.
    assert_eq!(
        mounted("grafana", "/etc/grafana/provisioning"),
        root("configs/grafana/provisioning")
    );
    let provider = yaml(
        &read("configs/grafana/provisioning/dashboards/vigil.yaml"),
        "dashboard provider",
    );
    let path = provider["providers"][0]["options"]["path"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        mounted("grafana", &path),
        root("configs/grafana/dashboards")
    );
    let home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
        .as_str()
        .unwrap_or_default();
    let home = home
        .strip_prefix(&format!("{path}/"))
        .unwrap_or_else(|| panic!("home dashboard `{home}`"));
    assert!(
        root("configs/grafana/dashboards").join(home).exists(),
        "home dashboard {home}"
    );
    let datasources = yaml(
        &read("configs/grafana/provisioning/datasources/vigil.yaml"),
        "datasources",
    );
    for datasource in datasources["datasources"].as_array().into_iter().flatten() {
        reaches(
            "grafana datasource",
            datasource["url"].as_str().unwrap_or_default(),
        );
        // Links from one datasource to another name provisioned uids.
        let text = datasource["jsonData"].to_string();
        for uid in text
            .split("\"datasourceUid\":\"")
            .skip(1)
            .filter_map(|s| s.split('"').next())
        {
            assert!(
                provisioned_datasources().contains_key(uid),
                "datasource link to unknown uid `{uid}`"
            );
        }
    }
    // The README's "Local stack" section gives every port the stack publishes.
    let readme = read("README.md");
    let section = readme
        .split("### The local stack")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("README: ### The local stack");
    for (name, service) in &services {
        for port in service["ports"].as_array().into_iter().flatten() {
            let published = port["published"].as_u64().unwrap_or(0);
            assert!(
                section.contains(&format!(":{published}")),
                "README's local stack section does not mention {name}'s port {published}"
            );
        }
    }
    // The demo sends to the collector.
    for variable in ["OTEL_EXPORTER_OTLP_ENDPOINT", "DEMO_PYTHON_OTLP_ENDPOINT"] {
        reaches(
            "demo",
            services["demo"]["environment"][variable]
                .as_str()
                .unwrap_or_default(),
        );
    }
}

#[test]
fn the_stack_configs_pass_their_own_tools() {
    // The collector's config, with the rules where the compose file mounts them.
    run(Command::new(workspace_binary("vigil-collector"))
        .env("VIGIL_RULES_DIR", root("configs/monitoring"))
        .args(["validate"])
        .arg(root("configs/examples/stack.yaml")));
    run(Command::new("promtool")
        .arg("check")
        .arg("config")
        .arg(root("configs/prometheus/prometheus.yml")));
    let rules: Vec<PathBuf> = std::fs::read_dir(root("configs/prometheus/rules"))
        .expect("rules")
        .map(|e| e.expect("entry").path())
        .collect();
    run(Command::new("promtool")
        .arg("check")
        .arg("rules")
        .args(&rules));
    // The exported copy of the seed rules is current.
    let exported = run(Command::new(workspace_binary("vigil-collector"))
        .current_dir(workspace_root())
        .args([
            "rules",
            "export",
            "configs/monitoring/alerts.yaml",
            "configs/monitoring/recording.yaml",
        ]));
    let committed = read("configs/prometheus/rules/vigil-alerts.yml");
    let committed: String = committed
        .lines()
        .skip_while(|l| l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        committed, exported,
        "configs/prometheus/rules/vigil-alerts.yml is stale: regenerate it with the command in its header"
    );
    run(Command::new("docker-compose")
        .current_dir(workspace_root())
        .args([
            "-f",
            "docker-compose.yml",
            "--profile",
            "demo",
            "config",
            "-q",
        ]));
}

/// `render.sh` run with `env` (and nothing else from this process's environment): the config it writes.
fn render_alertmanager(env: &[(&str, &str)]) -> (PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("alertmanager.yml");
    run(Command::new("sh")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .arg(root("configs/alertmanager/render.sh"))
        .arg(&path)
        .arg("--check"));
    run(Command::new("amtool").arg("check-config").arg(&path));
    (path, dir)
}

#[test]
fn alertmanager_routes_each_severity_and_adds_mail_and_slack_only_when_configured() {
    let (path, _dir) = render_alertmanager(&[]);
    let config = yaml(&std::fs::read_to_string(&path).expect("config"), "rendered");
    let routes: Vec<String> = config["route"]["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            format!(
                "{}->{}",
                r["matchers"][0].as_str().unwrap_or(""),
                r["receiver"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        routes,
        [
            "severity=\"critical\"->critical",
            "severity=\"error\"->error",
            "severity=\"warning\"->warning",
            "severity=\"info\"->info"
        ]
    );
    let text = config.to_string();
    assert!(
        !text.contains("email_configs") && !text.contains("slack_configs"),
        "{text}"
    );
    assert!(text.contains("http://alert-log:8080/"), "{text}");

    let password = "p\\w\"d $x";
    let (path, _dir) = render_alertmanager(&[
        ("SMTP_SMARTHOST", "smtp.example.com:587"),
        ("SMTP_FROM", "vigil@example.com"),
        ("ALERT_EMAIL_TO", "oncall@example.com"),
        ("SMTP_AUTH_USERNAME", "vigil"),
        ("SMTP_AUTH_PASSWORD", password),
        (
            "SLACK_WEBHOOK_URL",
            "https://hooks.slack.com/services/T/B/X",
        ),
        ("SLACK_CHANNEL", "#alerts"),
    ]);
    let config = yaml(&std::fs::read_to_string(&path).expect("config"), "rendered");
    assert_eq!(config["global"]["smtp_auth_password"], password);
    assert_eq!(config["global"]["smtp_smarthost"], "smtp.example.com:587");
    let receiver = |name: &str| -> Value {
        config["receivers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("receiver {name}"))
    };
    for (severity, email, slack) in [
        ("critical", true, true),
        ("error", true, false),
        ("warning", false, true),
        ("info", false, true),
    ] {
        let receiver = receiver(severity);
        assert_eq!(
            receiver.get("email_configs").is_some(),
            email,
            "{severity}: {receiver}"
        );
        assert_eq!(
            receiver.get("slack_configs").is_some(),
            slack,
            "{severity}: {receiver}"
        );
        assert_eq!(
            receiver["webhook_configs"][0]["url"],
            "http://alert-log:8080/"
        );
    }
    assert_eq!(
        receiver("warning")["slack_configs"][0]["channel"],
        "#alerts"
    );
}

#[test]
fn the_collector_image_is_non_root_checks_its_health_and_builds_from_files_that_exist() {
    let dockerfile = read("Dockerfile");
    let stages: Vec<&str> = dockerfile.split("\nFROM ").skip(1).collect();
    let last = stages.last().expect("stages");
    assert!(
        last.contains("AS collector"),
        "the default (last) stage is the collector: {last}"
    );
    assert!(last.contains("\nUSER nonroot"), "{last}");
    assert!(
        last.contains("CMD [\"/usr/local/bin/vigil-collector\", \"health\"]"),
        "{last}"
    );
    let exposed: BTreeSet<u16> = last
        .lines()
        .find_map(|l| l.strip_prefix("EXPOSE "))
        .expect("EXPOSE")
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    assert_eq!(exposed, service_ports(&compose()["services"]["collector"]));
    // Every file the build copies or installs from the context exists, and the context leaves target/ out.
    for path in [
        "configs/monitoring/alerts.yaml",
        "configs/monitoring/recording.yaml",
        "examples/python",
        "scripts/demo",
    ] {
        assert!(dockerfile.contains(path), "{path}");
        assert!(
            root(path).exists(),
            "the Dockerfile uses {path}, which does not exist"
        );
    }
    assert!(read(".dockerignore").lines().any(|l| l == "target/"));
}

// --- every panel on real data -------------------------------------------------------------------------------

/// What Grafana substitutes for the built-in variables, with Prometheus scraping every second.
fn expand_builtins(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "15s")
        .replace("$__range", "1h")
        .replace("$__auto", "1m")
}

/// `query` with each `$name` / `${name}` of `values` replaced, longest names first.
fn expand(query: &str, values: &BTreeMap<String, String>) -> String {
    let mut names: Vec<&String> = values.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    let mut out = expand_builtins(query);
    for name in names {
        out = out
            .replace(&format!("${{{name}}}"), &values[name])
            .replace(&format!("${name}"), &values[name]);
    }
    out
}

/// Runs PromQL over the last five minutes (a range query, as a time series panel does) or now (instant); the
/// series that have at least one non-NaN value, or Prometheus's error.
fn evaluate(prometheus: &Prometheus, promql: &str, instant: bool) -> Result<usize, String> {
    let encoded = percent_encode(promql);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let path = if instant {
        format!("/api/v1/query?query={encoded}")
    } else {
        format!(
            "/api/v1/query_range?query={encoded}&start={}&end={now}&step=1",
            now - 300
        )
    };
    let response = http("GET", &prometheus.address, &path, &[], b"").map_err(|e| e.to_string())?;
    let body: Value = serde_json::from_slice(&response.body).map_err(|e| e.to_string())?;
    if body["status"] != "success" {
        return Err(format!("{}: {}", body["errorType"], body["error"]));
    }
    let number = |v: &Value| {
        v[1].as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    Ok(body["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|series| {
            if instant {
                !number(&series["value"]).is_nan()
            } else {
                series["values"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|v| !number(v).is_nan())
            }
        })
        .count())
}

/// The values of a `label_values(selector, label)` variable.
fn label_values(prometheus: &Prometheus, query: &str) -> Result<Vec<String>, String> {
    let inner = query
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
        .ok_or_else(|| format!("`{query}` is not label_values(…)"))?;
    let (selector, label) = inner.rsplit_once(',').ok_or("no label")?;
    let mut values: Vec<String> = prometheus
        .query(selector.trim())
        .into_iter()
        .filter_map(|(labels, _)| labels.get(label.trim())?.as_str().map(str::to_string))
        .collect();
    values.sort();
    values.dedup();
    Ok(values)
}

/// Every Prometheus query of every dashboard with its variables expanded as Grafana does with "All" selected
/// (each variable's `allValue`); a problem for each query that fails or returns nothing, and for each variable
/// whose dropdown would be empty.
/// A query counts once it has returned data at one check (`shown`): a rate over a window shows data while the
/// programs run, not necessarily at the moment of the last check.
fn empty_panels(prometheus: &Prometheus, shown: &mut BTreeSet<String>) -> Vec<String> {
    let mut problems = Vec::new();
    for (file, dashboard) in dashboards() {
        let mut values = BTreeMap::new();
        for variable in variables(&dashboard) {
            let name = variable["name"].as_str().unwrap_or_default().to_string();
            match variable["type"].as_str() {
                Some("query") => {
                    let query =
                        expand(variable["definition"].as_str().unwrap_or_default(), &values);
                    match label_values(prometheus, &query) {
                        _ if shown.contains(&query) => {}
                        Ok(found) if !found.is_empty() => {
                            shown.insert(query);
                        }
                        Ok(_) => problems
                            .push(format!("{file}: variable `{name}` has no values ({query})")),
                        Err(e) => problems.push(format!("{file}: variable `{name}`: {e}")),
                    }
                    values.insert(
                        name,
                        variable["allValue"].as_str().unwrap_or(".*").to_string(),
                    );
                }
                Some("textbox") => {
                    values.insert(
                        name,
                        variable["query"].as_str().unwrap_or_default().to_string(),
                    );
                }
                _ => {}
            }
        }
        for panel in panels(&dashboard) {
            for target in panel["targets"].as_array().into_iter().flatten() {
                if target["datasource"]["type"] != "prometheus" {
                    continue;
                }
                let expr = expand(target["expr"].as_str().unwrap_or_default(), &values);
                let instant = target["instant"] == true;
                let at = format!(
                    "{file}: `{}` {}",
                    panel["title"].as_str().unwrap_or(""),
                    target["refId"]
                );
                if shown.contains(&expr) {
                    continue;
                }
                match evaluate(prometheus, &expr, instant) {
                    Ok(0) => problems.push(format!("{at}: no data from {expr}")),
                    Ok(_) => {
                        shown.insert(expr);
                    }
                    Err(e) => problems.push(format!("{at}: {e} in {expr}")),
                }
            }
        }
    }
    problems
}

/// GPU readings shaped as the SDK's NVML collector writes them (this machine has no GPU): two devices, every
/// metric of `sdk/src/system/gpu.rs` with its unit from the SDK's own table, sent over OTLP/HTTP by a process
/// of the training job's service.
fn send_gpu_readings(collector: &Collector) {
    use vigil_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
    use vigil_proto::otlp::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
    use vigil_proto::otlp::metrics::v1::{
        Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
    };
    use vigil_proto::otlp::resource::v1::Resource;
    let text = |key: &str, value: &str| KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    };
    /// A metric, its value, and the attribute that tells its series apart.
    type Reading<'a> = (&'a str, f64, Option<(&'a str, &'a str)>);
    let readings: &[Reading] = &[
        ("hw.gpu.utilization", 0.93, Some(("hw.gpu.task", "general"))),
        ("hw.gpu.utilization", 0.41, Some(("hw.gpu.task", "memory"))),
        (
            "hw.gpu.memory.usage",
            61e9,
            Some(("hw.gpu.memory.state", "used")),
        ),
        (
            "hw.gpu.memory.usage",
            80e9,
            Some(("hw.gpu.memory.state", "free")),
        ),
        ("hw.gpu.memory.limit", 141e9, None),
        ("hw.gpu.temperature", 64.0, None),
        ("hw.gpu.power", 512.0, None),
        ("hw.gpu.power.limit", 700.0, None),
        ("hw.gpu.clock", 1980.0, Some(("hw.gpu.clock.type", "sm"))),
        (
            "hw.gpu.clock",
            2619.0,
            Some(("hw.gpu.clock.type", "memory")),
        ),
    ];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut metrics: BTreeMap<&str, Vec<NumberDataPoint>> = BTreeMap::new();
    for gpu in 0..2i64 {
        for (name, value, extra) in readings {
            let mut attributes = vec![
                KeyValue {
                    key: "gpu.index".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::IntValue(gpu)),
                    }),
                    ..Default::default()
                },
                text("hw.name", "NVIDIA H200"),
            ];
            attributes.extend(extra.map(|(k, v)| text(k, v)));
            metrics.entry(name).or_default().push(NumberDataPoint {
                attributes,
                time_unix_nano: now,
                value: Some(number_data_point::Value::AsDouble(*value)),
                ..Default::default()
            });
        }
    }
    let request = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    text("service.name", "training-job"),
                    text("service.instance.id", "gpu-node-1"),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "vigil.system".into(),
                    ..Default::default()
                }),
                metrics: metrics
                    .into_iter()
                    .map(|(name, data_points)| Metric {
                        name: name.into(),
                        unit: vigil::system::unit_of(name)
                            .unwrap_or_else(|| panic!("the SDK reports no `{name}`"))
                            .into(),
                        data: Some(metric::Data::Gauge(Gauge { data_points })),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let body = prost::Message::encode_to_vec(&request);
    let response = http(
        "POST",
        &collector.http,
        "/v1/metrics",
        &[("Content-Type", "application/x-protobuf")],
        &body,
    )
    .expect("send GPU readings");
    assert_eq!(response.status, 200, "{}", response.text());
}

/// The shipped Prometheus config pointed at this collector and Alertmanager, scraping and evaluating every
/// second, with the shipped rule files.
fn prometheus_config(collector: &Collector, alertmanager: &str, rules: &Path) -> String {
    read("configs/prometheus/prometheus.yml")
        .replace(
            "scrape_interval: 15s",
            "scrape_interval: 1s\n  scrape_timeout: 1s",
        )
        .replace("evaluation_interval: 15s", "evaluation_interval: 1s")
        .replace(
            "/etc/prometheus/rules/*.yml",
            &format!("{}/*.yml", rules.display()),
        )
        .replace("collector:9464", &collector.prometheus)
        .replace("collector:8888", &collector.metrics_address)
        .replace("alertmanager:9093", alertmanager)
}

/// Alertmanager's webhook receiver of the stack (`configs/alertmanager/alert-log.py`), on a free port.
struct AlertLog {
    child: std::process::Child,
    url: String,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl AlertLog {
    fn start() -> AlertLog {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = dir.path().join("alert-log.out");
        let (port, held) = reserve_port();
        drop(held);
        let child = Command::new("python3")
            .arg(root("configs/alertmanager/alert-log.py"))
            .arg(port.to_string())
            .stdout(std::fs::File::create(&out).expect("out"))
            .stderr(Stdio::null())
            .spawn()
            .expect("start alert-log.py");
        let log = AlertLog {
            child,
            url: format!("http://127.0.0.1:{port}/"),
            out,
            _dir: dir,
        };
        assert!(
            eventually(Duration::from_secs(10), || log
                .output()
                .contains("listening")),
            "alert-log.py did not start"
        );
        log
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }
}

impl Drop for AlertLog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The stack config as shipped, with its fixed listen addresses moved to the harness's free ports.
fn stack_config() -> String {
    read("configs/examples/stack.yaml")
        .replace("0.0.0.0:4317", "{grpc}")
        .replace("0.0.0.0:4318", "{http}")
        .replace("0.0.0.0:8888", "{metrics}")
        .replace("0.0.0.0:9464", "{prometheus}")
        .replace("0.0.0.0:13133", "{health}")
}

#[test]
fn every_panel_of_every_dashboard_shows_data_from_the_example_programs() {
    let started = std::time::Instant::now();
    let mlflow = MlflowServer::start();
    let loki = FakeLoki::start(256 * 1024);
    // Jaeger's part: an OTLP receiver that keeps what it gets.
    let mut jaeger = Collector::start(OTLP_TO_FILE);
    let alert_log = AlertLog::start();
    let (alertmanager_config, _config_dir) = render_alertmanager(&[
        ("ALERT_LOG_URL", &alert_log.url),
        ("ALERTMANAGER_GROUP_WAIT", "1s"),
        ("ALERTMANAGER_GROUP_INTERVAL", "1s"),
    ]);
    let alertmanager = Alertmanager::start_with_config(
        &std::fs::read_to_string(alertmanager_config).expect("config"),
    );
    let state = tempfile::tempdir().expect("state dir");
    let rules = root("configs/monitoring");
    let collector = Collector::start_with_env(
        &stack_config(),
        &[
            ("VIGIL_RULES_DIR", rules.to_str().unwrap_or_default()),
            (
                "VIGIL_ALERT_STATE_DIR",
                state.path().to_str().unwrap_or_default(),
            ),
            ("VIGIL_JAEGER_ENDPOINT", &format!("http://{}", jaeger.grpc)),
            ("VIGIL_LOKI_ENDPOINT", &loki.url),
            ("VIGIL_MLFLOW_TRACKING_URI", &mlflow.url),
            ("VIGIL_ALERTMANAGER_URL", &alertmanager.url),
            ("VIGIL_SPANMETRICS_FLUSH_INTERVAL", "1s"),
            // Runs are forgotten 3 s after they end, so the finished runs' links are what the test sees.
            ("VIGIL_MLFLOW_HEARTBEAT", "3s"),
            ("VIGIL_ALERT_EVAL_INTERVAL", "1s"),
            ("VIGIL_ALERT_GROUP_WAIT", "1s"),
            ("VIGIL_ALERT_GROUP_INTERVAL", "1s"),
        ],
    );
    let alertmanager_address = alertmanager.url.trim_start_matches("http://").to_string();
    let prometheus = Prometheus::start_with_config(&prometheus_config(
        &collector,
        &alertmanager_address,
        &root("configs/prometheus/rules"),
    ));
    // The container's health check, against this collector.
    run(Command::new(workspace_binary("vigil-collector")).args([
        "health",
        "--endpoint",
        &collector.health,
    ]));

    send_gpu_readings(&collector);
    let binaries = workspace_binary("training_job")
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let demo = Command::new("bash")
        .arg(root("scripts/demo"))
        .current_dir(workspace_root())
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://{}", collector.grpc),
        )
        .env(
            "DEMO_PYTHON_OTLP_ENDPOINT",
            format!("http://{}", collector.http),
        )
        .env("OTEL_METRIC_EXPORT_INTERVAL", "1000")
        .env("OTEL_BSP_SCHEDULE_DELAY", "500")
        .env("DEMO_ITERATIONS", "4")
        .env("DEMO_PAUSE", "2")
        .env("DEMO_EPOCHS", "4")
        .env("DEMO_EPOCH_DELAY_MS", "300")
        .env("DEMO_REQUESTS", "40")
        .env("DEMO_BIN", &binaries)
        .env("DEMO_PYTHON", python())
        .output()
        .expect("run scripts/demo");
    let demo_log = format!(
        "{}{}",
        String::from_utf8_lossy(&demo.stdout),
        String::from_utf8_lossy(&demo.stderr)
    );
    assert!(demo.status.success(), "scripts/demo failed:\n{demo_log}");
    assert_eq!(demo_log.matches("demo: round").count(), 4, "{demo_log}");
    assert!(!demo_log.contains("failed"), "{demo_log}");

    let mut problems = Vec::new();
    let mut shown = BTreeSet::new();
    let filled = eventually(Duration::from_secs(90), || {
        problems = empty_panels(&prometheus, &mut shown);
        problems.is_empty()
    });
    assert!(
        filled,
        "after {:?}, panels without data:\n{}\nPrometheus log:\n{}\ncollector log:\n{}",
        started.elapsed(),
        problems.join("\n"),
        prometheus.log(),
        collector.log()
    );

    // The failed run fired `training_failed`, evaluated by the collector and by Prometheus: Alertmanager
    // holds one alert for it, and alert-log printed the notification.
    let failed_runs = prometheus
        .query("training_status{status=\"failed\"} == 1")
        .len();
    assert_eq!(failed_runs, 1, "one of four rounds fails");
    assert!(
        eventually(Duration::from_secs(30), || alert_log.output().contains(
            "[error] FIRING training_failed severity=error job=training-job"
        )),
        "alert-log printed:\n{}\nAlertmanager log:\n{}",
        alert_log.output(),
        alertmanager.log()
    );
    let training_failed: Vec<Value> = alertmanager
        .alerts()
        .into_iter()
        .filter(|a| a["labels"]["alertname"] == "training_failed")
        .collect();
    assert_eq!(training_failed.len(), failed_runs, "{training_failed:?}");
    // Each run links to its MLflow page: the ids the collector reports are MLflow's.
    let runs = prometheus.query("vigil_mlflow_run_info");
    assert!(runs.len() >= 3, "{runs:?}");
    for (labels, _) in &runs {
        let run_id = labels["mlflow_run_id"].as_str().unwrap_or_default();
        let response = http(
            "GET",
            mlflow.url.trim_start_matches("http://"),
            &format!("/api/2.0/mlflow/runs/get?run_id={run_id}"),
            &[],
            b"",
        )
        .expect("MLflow");
        assert_eq!(response.status, 200, "{}", response.text());
        let run: Value = serde_json::from_slice(&response.body).expect("JSON");
        assert_eq!(
            run["run"]["info"]["experiment_id"], labels["mlflow_experiment_id"],
            "{run}"
        );
    }
    // The latency panels' exemplars: spanmetrics attaches the ids of real spans, which "Jaeger" has.
    let exemplar_ids = prometheus.exemplar_trace_ids("traces_span_metrics_duration_seconds_bucket");
    assert!(
        !exemplar_ids.is_empty(),
        "no exemplars on the spanmetrics histogram"
    );
    // The links from a Jaeger span: its operation's metrics run in Prometheus; its logs query selects on
    // labels the loki exporter writes, with a matcher that cannot match the empty string (Loki requires one).
    let datasources = yaml(
        &read("configs/grafana/provisioning/datasources/vigil.yaml"),
        "datasources",
    );
    let jaeger_links = datasources["datasources"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["uid"] == "jaeger")
        .map(|d| d["jsonData"].clone())
        .expect("the jaeger datasource");
    let span_name = prometheus
        .query("traces_span_metrics_calls_total{span_kind=\"SPAN_KIND_SERVER\"}")
        .first()
        .and_then(|(labels, _)| labels["span_name"].as_str().map(str::to_string))
        .expect("a server span");
    let link_queries: Vec<String> = jaeger_links["tracesToMetrics"]["queries"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|q| {
            q["query"]
                .as_str()
                .unwrap_or_default()
                .replace("${__span.name}", &span_name)
        })
        .collect();
    assert_eq!(link_queries.len(), 3);
    for query in &link_queries {
        assert!(!query.contains("${"), "{query}");
        let result = evaluate(&prometheus, query, false);
        // The error rate of an operation without errors is rightly empty; the query must still be valid.
        let fine = match result {
            Ok(n) => n > 0 || query.contains("STATUS_CODE_ERROR"),
            Err(_) => false,
        };
        assert!(fine, "the span's metrics link `{query}` gives {result:?}");
    }
    let logs_link = jaeger_links["tracesToLogsV2"]["query"]
        .as_str()
        .unwrap_or_default();
    let labels = {
        let stack = yaml(&read("configs/examples/stack.yaml"), "stack.yaml");
        serde_json::from_value::<vigil_collector::exporter::loki::LokiExporterConfig>(
            stack["exporters"]["loki"].clone(),
        )
        .expect("loki")
        .label_names()
    };
    let selectors = stream_selectors(logs_link);
    assert_eq!(selectors.len(), 1, "{logs_link}");
    let name: String = selectors[0]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    assert!(labels.contains(&name), "{logs_link}");
    assert!(selectors[0].ends_with("=~\".+\""), "{logs_link}");
    assert!(
        logs_link.contains("trace_id=\"${__trace.traceId}\""),
        "{logs_link}"
    );

    // Logs reached Loki with only the labels the dashboards select on, and traces reached "Jaeger".
    assert!(loki.entry_count() > 0);
    for stream in loki.streams().keys() {
        assert!(
            stream.contains("service_name=") && stream.contains("level="),
            "{stream}"
        );
    }
    assert!(jaeger.stop().success(), "{}", jaeger.log());
    let traced = spans(&file_exporter_lines(
        &jaeger.dir.path().join("out"),
        "traces",
    ));
    assert!(
        traced.iter().any(|s| s["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("GET /orders/"))),
        "no trace of the HTTP service reached Jaeger's OTLP endpoint: {} spans",
        traced.len()
    );
    let jaeger_traces: BTreeSet<String> = traced
        .iter()
        .filter_map(|s| s["traceId"].as_str().map(str::to_string))
        .collect();
    assert!(
        exemplar_ids.iter().any(|id| jaeger_traces.contains(id)),
        "no exemplar trace id is a trace Jaeger has: {exemplar_ids:?}"
    );
}

// --- scripts/stack ------------------------------------------------------------------------------------------

#[test]
fn scripts_stack_starts_the_packaged_services_wires_them_and_stops_them_all() {
    let dir = tempfile::tempdir().expect("temp dir");
    let names = [
        "OTLP_GRPC",
        "OTLP_HTTP",
        "METRICS",
        "SELF_METRICS",
        "HEALTH",
        "PROMETHEUS",
        "ALERTMANAGER",
        "ALERT_LOG",
        "MLFLOW",
    ];
    let ports: BTreeMap<&str, u16> = names
        .iter()
        .map(|name| {
            let (port, held) = reserve_port();
            drop(held);
            (*name, port)
        })
        .collect();
    // A stand-in for `mlflow server` that, like the real one, serves from a child process (uvicorn there): the
    // script must stop the child too. It answers /health from a directory holding a `health` file.
    let fake_mlflow = dir.path().join("mlflow");
    let site = dir.path().join("site");
    std::fs::create_dir_all(&site).expect("site");
    std::fs::write(site.join("health"), "OK").expect("health");
    std::fs::write(
        &fake_mlflow,
        format!(
            "#!/bin/sh\nwhile [ $# -gt 0 ]; do [ \"$1\" = --port ] && port=$2; shift; done\n\
             python3 -m http.server \"$port\" --bind 127.0.0.1 --directory '{}' &\nwait\n",
            site.display()
        ),
    )
    .expect("fake mlflow");
    run(Command::new("chmod").arg("+x").arg(&fake_mlflow));
    let output = dir.path().join("stack.out");
    let mut stack = Command::new("bash");
    stack
        .arg(root("scripts/stack"))
        .env("VIGIL_STACK_DIR", dir.path().join("state"))
        .env("VIGIL_COLLECTOR_BIN", workspace_binary("vigil-collector"))
        .env("MLFLOW_BIN", &fake_mlflow)
        .env_remove("VIGIL_JAEGER_ENDPOINT")
        .env_remove("VIGIL_LOKI_ENDPOINT")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&output).expect("output"));
    for (name, port) in &ports {
        stack.env(format!("VIGIL_STACK_{name}_PORT"), port.to_string());
    }
    let mut child = stack.spawn().expect("start scripts/stack");
    let read = || std::fs::read_to_string(&output).unwrap_or_default();
    let up = eventually(Duration::from_secs(60), || {
        read().contains("stack: up") || matches!(child.try_wait(), Ok(Some(_)))
    });
    assert!(up && read().contains("stack: up"), "{}", read());
    let text = read();
    assert!(
        text.contains(&format!(
            "MLflow         http://127.0.0.1:{}\n",
            ports["MLFLOW"]
        )),
        "{text}"
    );
    assert!(
        text.contains("(no VIGIL_JAEGER_ENDPOINT)") && text.contains("(no VIGIL_LOKI_ENDPOINT)"),
        "{text}"
    );
    let prometheus = format!("127.0.0.1:{}", ports["PROMETHEUS"]);
    // Prometheus scrapes both of the collector's endpoints and knows the Alertmanager.
    let targets_up = eventually(Duration::from_secs(30), || {
        let Ok(response) = http("GET", &prometheus, "/api/v1/targets", &[], b"") else {
            return false;
        };
        let body: Value = serde_json::from_slice(&response.body).unwrap_or_default();
        let healthy = body["data"]["activeTargets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["health"] == "up")
            .count();
        healthy == 2
    });
    assert!(targets_up, "{}", read());
    let alertmanagers =
        http("GET", &prometheus, "/api/v1/alertmanagers", &[], b"").expect("alertmanagers");
    assert!(
        alertmanagers
            .text()
            .contains(&format!("127.0.0.1:{}", ports["ALERTMANAGER"])),
        "{}",
        alertmanagers.text()
    );
    // A span sent to it lands in the archive directory (no Jaeger here).
    let collector_http = format!("127.0.0.1:{}", ports["OTLP_HTTP"]);
    let sent = http(
        "POST",
        &collector_http,
        "/v1/traces",
        &[("Content-Type", "application/x-protobuf")],
        &vigil_e2e::otlp::traces(1, 3),
    )
    .expect("send spans");
    assert_eq!(sent.status, 200, "{}", sent.text());

    // SIGTERM stops every service it started.
    run(Command::new("kill").arg(child.id().to_string()));
    let status = child.wait().expect("wait");
    assert!(status.success(), "{status}: {}", read());
    assert!(read().contains("stack: stopped"), "{}", read());
    for (name, port) in &ports {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", *port)).is_err(),
            "{name} still listens on {port} after scripts/stack stopped"
        );
    }
    let archived = file_exporter_lines(&dir.path().join("state/otlp"), "traces");
    assert_eq!(spans(&archived).len(), 3, "{archived:?}");
}
