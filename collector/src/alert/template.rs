//! The part of Prometheus' annotation templates that rules use: `{{ $labels.name }}`, `{{ $value }}`,
//! `{{ $externalLabels.name }}`, `{{ $externalURL }}` (and the `.Labels.name`, `.Value`, `.ExternalLabels.name`,
//! `.ExternalURL` forms); functions `humanize`, `humanize1024`, `humanizePercentage`, `humanizeDuration`,
//! `printf "%.2f"`, `toUpper`, `toLower`, either as `{{ f $value }}` or `{{ $value | f }}`. A block that is none
//! of these is left as written, so a mistake shows in the notification.

use std::collections::BTreeMap;

/// What Prometheus' templates call `$externalLabels` and `$externalURL`: the labels and address of the
/// Prometheus evaluating the rules (`global.external_labels`, `--web.external-url`), given per test group in
/// `promtool` test files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct External {
    /// `$externalLabels`.
    pub labels: BTreeMap<String, String>,
    /// `$externalURL`.
    pub url: String,
}

/// Expands the blocks of `text` for a series with `labels` and `value`.
pub fn expand(text: &str, labels: &BTreeMap<String, String>, value: f64) -> String {
    expand_external(text, labels, value, &External::default())
}

/// [`expand`], with `$externalLabels` and `$externalURL` from `external` (rule labels and annotations).
pub fn expand_external(
    text: &str,
    labels: &BTreeMap<String, String>,
    value: f64,
    external: &External,
) -> String {
    expand_with(text, labels, &BTreeMap::new(), value, external)
}

/// [`expand_external`], with `{{ $annotations.name }}` too (notification templates).
pub fn expand_with(
    text: &str,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
    value: f64,
    external: &External,
) -> String {
    render(
        text,
        &Context {
            labels,
            annotations,
            value,
            external,
        },
    )
}

fn render(text: &str, context: &Context<'_>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let block = &rest[start + 2..start + end];
        match evaluate(block.trim().trim_matches('-').trim(), context) {
            Some(text) => out.push_str(&text),
            None => out.push_str(&rest[start..start + end + 2]),
        }
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    out
}

enum Val {
    Num(f64),
    Text(String),
}

impl Val {
    fn text(self) -> String {
        match self {
            Val::Num(n) => format_float(n),
            Val::Text(t) => t,
        }
    }
}

/// A float as Go's `%v` would print a Prometheus sample value (shortest form).
pub fn format_float(n: f64) -> String {
    if n.is_nan() {
        "NaN".into()
    } else if n.is_infinite() {
        if n > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{n}")
    }
}

/// What a template can read.
struct Context<'a> {
    labels: &'a BTreeMap<String, String>,
    annotations: &'a BTreeMap<String, String>,
    value: f64,
    external: &'a External,
}

fn operand(word: &str, context: &Context<'_>) -> Option<Val> {
    if word == "$value" || word == ".Value" {
        return Some(Val::Num(context.value));
    }
    if let Some(name) = word
        .strip_prefix("$labels.")
        .or_else(|| word.strip_prefix(".Labels."))
    {
        return Some(Val::Text(
            context.labels.get(name).cloned().unwrap_or_default(),
        ));
    }
    if let Some(name) = word
        .strip_prefix("$annotations.")
        .or_else(|| word.strip_prefix(".Annotations."))
    {
        return Some(Val::Text(
            context.annotations.get(name).cloned().unwrap_or_default(),
        ));
    }
    if let Some(name) = word
        .strip_prefix("$externalLabels.")
        .or_else(|| word.strip_prefix(".ExternalLabels."))
    {
        return Some(Val::Text(
            context
                .external
                .labels
                .get(name)
                .cloned()
                .unwrap_or_default(),
        ));
    }
    if word == "$externalURL" || word == ".ExternalURL" {
        return Some(Val::Text(context.external.url.clone()));
    }
    if let Some(quoted) = word.strip_prefix('"').and_then(|w| w.strip_suffix('"')) {
        return Some(Val::Text(quoted.to_string()));
    }
    word.parse().ok().map(Val::Num)
}

fn number(v: &Val) -> Option<f64> {
    match v {
        Val::Num(n) => Some(*n),
        Val::Text(t) => t.parse().ok(),
    }
}

fn humanize(n: f64, base: f64, prefixes: &[&str], small: &[&str]) -> String {
    if n == 0.0 || !n.is_finite() {
        return format!("{:.4}", n)
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string();
    }
    let mut v = n;
    let mut prefix = "";
    if v.abs() >= 1.0 {
        for p in prefixes {
            if v.abs() < base {
                break;
            }
            v /= base;
            prefix = p;
        }
    } else {
        for p in small {
            if v.abs() >= 1.0 {
                break;
            }
            v *= base;
            prefix = p;
        }
    }
    format!("{}{prefix}", significant(v, 4))
}

/// `%.4g` as Go prints it.
fn significant(v: f64, digits: i32) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let magnitude = v.abs().log10().floor() as i32;
    let decimals = (digits - 1 - magnitude).max(0) as usize;
    let text = format!("{v:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

fn apply(function: &str, args: &[Val]) -> Option<Val> {
    let first = args.first()?;
    Some(Val::Text(match function {
        "humanize" => humanize(
            number(first)?,
            1000.0,
            &["k", "M", "G", "T", "P", "E", "Z", "Y"],
            &["m", "u", "n", "p", "f", "a", "z", "y"],
        ),
        "humanize1024" => humanize(
            number(first)?,
            1024.0,
            &["ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"],
            &[],
        ),
        "humanizePercentage" => format!("{}%", significant(number(first)? * 100.0, 4)),
        "humanizeDuration" => {
            let seconds = number(first)?;
            if seconds.abs() < 1.0 {
                format!("{}ms", significant(seconds * 1000.0, 4))
            } else {
                let total = seconds.round() as i64;
                let (d, h, m, s) = (
                    total / 86400,
                    total / 3600 % 24,
                    total / 60 % 60,
                    total % 60,
                );
                let mut out = String::new();
                for (n, unit) in [(d, "d"), (h, "h"), (m, "m")] {
                    if n != 0 {
                        out.push_str(&format!("{n}{unit} "));
                    }
                }
                out.push_str(&format!("{s}s"));
                out
            }
        }
        "toUpper" => first_text(args)?.to_uppercase(),
        "toLower" => first_text(args)?.to_lowercase(),
        "printf" => {
            let Val::Text(format) = first else {
                return None;
            };
            let value = number(args.get(1)?)?;
            let precision = format
                .strip_prefix("%.")
                .and_then(|f| f.strip_suffix('f'))
                .and_then(|p| p.parse::<usize>().ok())?;
            format!("{value:.precision$}")
        }
        _ => return None,
    }))
}

fn first_text(args: &[Val]) -> Option<String> {
    match args.first()? {
        Val::Text(t) => Some(t.clone()),
        Val::Num(n) => Some(format_float(*n)),
    }
}

fn words(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        if rest.starts_with('"') {
            let end = rest[1..].find('"').map_or(rest.len(), |i| i + 2);
            out.push(&rest[..end]);
            rest = rest[end..].trim_start();
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            out.push(&rest[..end]);
            rest = rest[end..].trim_start();
        }
    }
    out
}

fn evaluate(block: &str, context: &Context<'_>) -> Option<String> {
    let mut current: Option<Val> = None;
    for stage in block.split('|') {
        let parts = words(stage);
        let (head, tail) = parts.split_first()?;
        current = Some(match operand(head, context) {
            Some(v) if tail.is_empty() && current.is_none() => v,
            _ => {
                let mut args: Vec<Val> = tail
                    .iter()
                    .map(|w| operand(w, context))
                    .collect::<Option<_>>()?;
                if let Some(previous) = current.take() {
                    args.push(previous);
                }
                apply(head, &args)?
            }
        });
    }
    current.map(Val::text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_labels_and_url_in_both_forms() {
        let external = External {
            labels: [("region".to_string(), "eu-west".to_string())].into(),
            url: "https://prom.example.com".into(),
        };
        assert_eq!(
            expand_external(
                "{{ $labels.instance }} in {{ $externalLabels.region }} ({{ .ExternalLabels.region }}), \
                 {{ $externalURL }}/alerts {{ .ExternalURL }} {{ $externalLabels.zone }}.",
                &labels(),
                1.0,
                &external
            ),
            "db-1 in eu-west (eu-west), https://prom.example.com/alerts https://prom.example.com ."
        );
        // Without them, both are empty, as in a Prometheus with none.
        assert_eq!(
            expand(
                "[{{ $externalLabels.region }}|{{ $externalURL }}]",
                &labels(),
                1.0
            ),
            "[|]"
        );
        assert_eq!(
            expand_external("{{ $externalURL | toUpper }}", &labels(), 1.0, &external),
            "HTTPS://PROM.EXAMPLE.COM"
        );
    }

    fn labels() -> BTreeMap<String, String> {
        [("instance".to_string(), "db-1".to_string())].into()
    }

    #[test]
    fn labels_values_and_helpers() {
        let l = labels();
        assert_eq!(
            expand("{{ $labels.instance }} is at {{ $value }}", &l, 7.5),
            "db-1 is at 7.5"
        );
        assert_eq!(expand("{{$labels.missing}}!", &l, 0.0), "!");
        assert_eq!(
            expand("{{ $value | humanizePercentage }}", &l, 0.1234),
            "12.34%"
        );
        assert_eq!(expand("{{ humanize $value }}", &l, 1234567.0), "1.235M");
        assert_eq!(expand("{{ $value | humanize }}", &l, 0.0012), "1.2m");
        assert_eq!(expand("{{ humanize1024 $value }}", &l, 2048.0), "2ki");
        assert_eq!(
            expand("{{ $value | humanizeDuration }}", &l, 3725.0),
            "1h 2m 5s"
        );
        assert_eq!(expand("{{ printf \"%.2f\" $value }}", &l, 1.23456), "1.23");
        assert_eq!(expand("{{ $labels.instance | toUpper }}", &l, 0.0), "DB-1");
        assert_eq!(
            expand("{{ nonsense $value }} {{ unclosed", &l, 1.0),
            "{{ nonsense $value }} {{ unclosed"
        );
        assert_eq!(format_float(f64::INFINITY), "+Inf");
        let annotations = [("summary".to_string(), "disk full".to_string())].into();
        assert_eq!(
            expand_with(
                "{{ $labels.instance }}: {{ $annotations.summary }}",
                &l,
                &annotations,
                0.0,
                &External::default()
            ),
            "db-1: disk full"
        );
    }
}
