//! OpenTelemetry → Prometheus names, following the specification's compatibility rules and
//! `prometheus/otlptranslator` (`UnderscoreEscapingWithSuffixes`): metric names get their unit and type suffixes,
//! label names are sanitised, and everything becomes `[a-zA-Z_:][a-zA-Z0-9_:]*` / `[a-zA-Z_][a-zA-Z0-9_]*`.

/// What kind of Prometheus family an OTel metric becomes; decides the name's type suffix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Monotonic sum.
    Counter,
    /// Gauge or non-monotonic sum.
    Gauge,
    /// Explicit or exponential histogram.
    Histogram,
    /// Summary.
    Summary,
}

impl Kind {
    /// The `# TYPE` word.
    pub fn type_name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
            Kind::Summary => "summary",
        }
    }
}

/// The Prometheus metric name of an OTel metric. With `suffixes` the unit (`_seconds`, `_bytes`,
/// `_per_second`…) and type (`_total`, `_ratio`) suffixes are added, as Prometheus users expect.
pub fn metric_name(namespace: &str, name: &str, unit: &str, kind: Kind, suffixes: bool) -> String {
    let mut tokens: Vec<&str> = Vec::with_capacity(8);
    if !namespace.is_empty() {
        tokens.extend(split_tokens(namespace));
    }
    tokens.extend(split_tokens(name));
    let mut owned: Vec<String> = tokens.iter().map(|t| (*t).to_string()).collect();
    if suffixes {
        let (main, per) = unit_words(unit);
        if let Some(main) = main
            && !owned.contains(&main)
        {
            owned.push(main);
        }
        if let Some(per) = per
            && !owned.windows(2).any(|w| w[0] == "per" && w[1] == per)
        {
            owned.push("per".into());
            owned.push(per);
        }
        match kind {
            Kind::Counter => {
                owned.retain(|t| t != "total");
                owned.push("total".into());
            }
            Kind::Gauge
                if strip_annotations(unit) == "1" && !owned.iter().any(|t| t == "ratio") =>
            {
                owned.push("ratio".into());
            }
            _ => {}
        }
    }
    let mut out = owned.join("_");
    if out.is_empty() {
        out.push('_');
    }
    if out.as_bytes()[0].is_ascii_digit() {
        out.insert(0, '_');
    }
    out
}

/// Splits on everything that may not appear in a metric name, dropping empty tokens (so `a..b` → `a`, `b`).
fn split_tokens(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == ':'))
        .filter(|t| !t.is_empty())
}

fn strip_annotations(unit: &str) -> String {
    let mut out = String::with_capacity(unit.len());
    let mut depth = 0;
    for c in unit.chars() {
        match c {
            '{' => depth += 1,
            '}' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out.trim().to_string()
}

/// The name words of a UCUM unit: `ms` → (`milliseconds`, none), `By/s` → (`bytes`, `second`), `1` → none.
fn unit_words(unit: &str) -> (Option<String>, Option<String>) {
    let unit = strip_annotations(unit);
    if unit.is_empty() || unit == "1" {
        return (None, None);
    }
    let (main, per) = match unit.split_once('/') {
        Some((main, per)) => (main.trim(), Some(per.trim())),
        None => (unit.as_str(), None),
    };
    let word = |text: &str, table: fn(&str) -> Option<&'static str>| -> Option<String> {
        if text.is_empty() || text == "1" {
            return None;
        }
        let word = table(text).map(str::to_string).unwrap_or_else(|| {
            text.chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect()
        });
        let word = word.trim_matches('_').to_string();
        (!word.is_empty()).then_some(word)
    };
    (word(main, main_unit), per.and_then(|p| word(p, per_unit)))
}

fn main_unit(unit: &str) -> Option<&'static str> {
    Some(match unit {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tebibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "%" => "percent",
        _ => return None,
    })
}

fn per_unit(unit: &str) -> Option<&'static str> {
    Some(match unit {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        _ => return None,
    })
}

/// A valid Prometheus label name for an OTel attribute key: other characters become `_`, a leading digit gets
/// a `key_` prefix, and the reserved `__` prefix is kept out of user labels.
pub fn label_name(key: &str) -> String {
    let mut out: String = key
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if out.is_empty() {
        return "key_".into();
    }
    if out.as_bytes()[0].is_ascii_digit() {
        out.insert_str(0, "key_");
    } else if out.starts_with("__") {
        out.insert_str(0, "key");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_follow_the_compatibility_spec() {
        let cases = [
            (
                "http.server.request.duration",
                "s",
                Kind::Histogram,
                "http_server_request_duration_seconds",
            ),
            ("requests.count", "1", Kind::Counter, "requests_count_total"),
            (
                "system.cpu.utilization",
                "1",
                Kind::Gauge,
                "system_cpu_utilization_ratio",
            ),
            (
                "process.memory.usage",
                "By",
                Kind::Gauge,
                "process_memory_usage_bytes",
            ),
            ("net.io", "By/s", Kind::Gauge, "net_io_bytes_per_second"),
            ("latency", "ms", Kind::Histogram, "latency_milliseconds"),
            (
                "http.requests.total",
                "{request}",
                Kind::Counter,
                "http_requests_total",
            ),
            ("total.bytes.sent", "By", Kind::Counter, "bytes_sent_total"),
            ("duration_seconds", "s", Kind::Histogram, "duration_seconds"),
            ("9lives", "", Kind::Gauge, "_9lives"),
            ("a..b--c", "", Kind::Gauge, "a_b_c"),
            ("queue.size", "{batch}", Kind::Gauge, "queue_size"),
            ("temp", "Cel", Kind::Gauge, "temp_celsius"),
            (
                "weird",
                "furlongs/fortnight",
                Kind::Gauge,
                "weird_furlongs_per_fortnight",
            ),
        ];
        for (name, unit, kind, want) in cases {
            assert_eq!(
                metric_name("", name, unit, kind, true),
                want,
                "{name} [{unit}]"
            );
        }
        assert_eq!(
            metric_name("vigil", "requests", "1", Kind::Counter, true),
            "vigil_requests_total"
        );
        assert_eq!(
            metric_name(
                "",
                "http.server.request.duration",
                "s",
                Kind::Histogram,
                false
            ),
            "http_server_request_duration"
        );
    }

    #[test]
    fn label_names_are_sanitised() {
        assert_eq!(label_name("http.method"), "http_method");
        assert_eq!(label_name("0day"), "key_0day");
        assert_eq!(label_name("__name__"), "key__name__");
        assert_eq!(label_name("_private"), "_private");
        assert_eq!(label_name("ключ"), "key____");
        assert_eq!(label_name(""), "key_");
    }
}
