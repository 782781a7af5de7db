//! YAML to a JSON value tree, remembering where every node was written (used by the collector config and the
//! SDK logging config alike).
//!
//! Typed config structs are deserialised from the tree with `serde_path_to_error`; the path of a failure is then
//! looked up in [`Locations`] so every error names the line and column a user has to fix. Keeping the tree
//! untyped until each component's factory claims its own section lets `validate` report every broken component
//! in one run instead of stopping at the first.
//!
//! `${env:NAME}`, `${env:NAME:-default}` and `${NAME}` in scalars are replaced before typing; `$$` is a literal
//! `$`. Plain scalars are typed after substitution, so `port: ${env:PORT}` is a number.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use serde_json::{Map, Number, Value};

/// A 1-based line and column in the config text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Location {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

/// Where each node of the tree was written, keyed by its dotted path (`receivers.otlp.protocols.grpc`).
#[derive(Debug, Default)]
pub struct Locations {
    by_path: HashMap<String, Location>,
}

impl Locations {
    /// Makes every location under `from` (`mask`, `mask.detectors`…) also known under `to` (`logging.mask`…),
    /// for a section that is read from a place other than where it was written.
    pub fn alias(&mut self, from: &str, to: &str) {
        let moved: Vec<(String, Location)> = self
            .by_path
            .iter()
            .filter_map(|(path, location)| {
                let rest = path.strip_prefix(from)?;
                (rest.is_empty() || rest.starts_with(['.', '[']))
                    .then(|| (format!("{to}{rest}"), *location))
            })
            .collect();
        self.by_path.extend(moved);
    }

    /// The location of `path`, or of its nearest ancestor that has one.
    pub fn find(&self, path: &str) -> Location {
        let mut path = path;
        loop {
            if let Some(location) = self.by_path.get(path) {
                return *location;
            }
            match path.rfind(['.', '[']) {
                Some(cut) => path = &path[..cut],
                None => return self.by_path.get("").copied().unwrap_or_default(),
            }
        }
    }
}

/// A problem found while reading YAML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    /// Where it is.
    pub location: Location,
    /// What is wrong.
    pub message: String,
}

/// A typed-decoding failure: the full key path, where it is, and what serde said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Dotted key path (`handlers.file.maxBytes`).
    pub path: String,
    /// Where it is.
    pub location: Location,
    /// What is wrong and what was expected.
    pub message: String,
}

/// Deserialises `value`, found at `path` in the document, into `T`; a failure names the exact key and its
/// location. `null` reads as an empty mapping, so `otlp:` alone means "all defaults".
pub fn decode<T: serde::de::DeserializeOwned>(
    value: &Value,
    path: &str,
    locations: &Locations,
) -> Result<T, DecodeError> {
    let empty = Value::Object(Map::new());
    let value = if value.is_null() { &empty } else { value };
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let inner = e.path().to_string();
        let full = match inner.as_str() {
            "." | "" => path.to_string(),
            inner if path.is_empty() => inner.to_string(),
            inner if inner.starts_with('[') => format!("{path}{inner}"),
            inner => format!("{path}.{inner}"),
        };
        DecodeError {
            location: locations.find(&full),
            path: full,
            message: plain_words(&e.into_inner().to_string()),
        }
    })
}

/// [`decode`], reporting every problem of the section, not only the first: after each failure the offending key
/// is taken out and the section decoded again, until it decodes or nothing more can be taken out. A required
/// key taken out this way is not reported again as missing.
pub fn decode_all<T: serde::de::DeserializeOwned>(
    value: &Value,
    path: &str,
    locations: &Locations,
) -> Result<T, Vec<DecodeError>> {
    /// More problems than this in one section are not worth listing.
    const MOST: usize = 50;
    let mut value = value.clone();
    let mut errors: Vec<DecodeError> = Vec::new();
    let mut removed: Vec<String> = Vec::new();
    while errors.len() < MOST {
        let error = match decode::<T>(&value, path, locations) {
            Ok(typed) if errors.is_empty() => return Ok(typed),
            Ok(_) => break,
            Err(error) => error,
        };
        let inner = relative(&error.path, path);
        if let Some(field) = error
            .message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
        {
            let missing = if inner.is_empty() {
                field.to_string()
            } else {
                format!("{inner}.{field}")
            };
            if removed.contains(&missing) {
                break;
            }
        }
        let taken_out = !inner.is_empty() && remove(&mut value, &inner);
        errors.push(error);
        if !taken_out {
            break;
        }
        removed.push(inner);
    }
    Err(errors)
}

/// `full` (`processors.batch.timeout`) relative to the section at `section` (`processors.batch`).
fn relative(full: &str, section: &str) -> String {
    if section.is_empty() {
        return full.to_string();
    }
    match full.strip_prefix(section) {
        Some(rest) => rest.trim_start_matches('.').to_string(),
        None => String::new(),
    }
}

/// Takes the node at `path` (`protocols.grpc.endpont`, `policies[1].name`) out of `value`; whether it was there.
fn remove(value: &mut Value, path: &str) -> bool {
    let mut segments: Vec<Segment> = Vec::new();
    for part in path.split('.') {
        let (key, indexes) = match part.find('[') {
            Some(at) => (&part[..at], &part[at..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            segments.push(Segment::Key(key.to_string()));
        }
        for index in indexes.split('[').filter(|i| !i.is_empty()) {
            match index.trim_end_matches(']').parse() {
                Ok(i) => segments.push(Segment::Index(i)),
                Err(_) => return false,
            }
        }
    }
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let mut node = value;
    for segment in parents {
        let next = match (segment, node) {
            (Segment::Key(key), Value::Object(map)) => map.get_mut(key),
            (Segment::Index(i), Value::Array(items)) => items.get_mut(*i),
            _ => None,
        };
        match next {
            Some(next) => node = next,
            None => return false,
        }
    }
    match (last, node) {
        (Segment::Key(key), Value::Object(map)) => map.remove(key).is_some(),
        (Segment::Index(i), Value::Array(items)) if *i < items.len() => {
            items.remove(*i);
            true
        }
        _ => false,
    }
}

/// One step of a key path.
enum Segment {
    Key(String),
    Index(usize),
}

/// serde's messages in the words of a config file's reader: `expected u64` is "a whole number", and an
/// unknown key gets the nearest known one as a suggestion.
fn plain_words(message: &str) -> String {
    let mut text = message.to_string();
    for (rust, plain) in [
        ("expected u8", "expected a whole number (0 to 255)"),
        ("expected u16", "expected a whole number (0 to 65535)"),
        ("expected u32", "expected a whole number"),
        ("expected u64", "expected a whole number"),
        ("expected usize", "expected a whole number"),
        ("expected i32", "expected a whole number"),
        ("expected i64", "expected a whole number"),
        ("expected f32", "expected a number"),
        ("expected f64", "expected a number"),
    ] {
        if let Some(rest) = text.strip_suffix(rust) {
            text = format!("{rest}{plain}");
        }
    }
    if let Some(rest) = text.strip_prefix("unknown field `")
        && let Some((unknown, expected)) = rest.split_once("`, expected ")
        && let Some(nearest) = expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(|known| (edit_distance(unknown, known), known))
            .filter(|(distance, known)| *distance <= (known.len() / 3).max(2))
            .min()
            .map(|(_, known)| known)
    {
        text = format!("{text}; did you mean `{nearest}`?");
    }
    text
}

/// Levenshtein distance, for "did you mean" suggestions on short keys.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// Deepest nesting of mappings and sequences a config may have; deeper is refused before it can exhaust the
/// stack (a 16 KB file of nested `- ` reaches thousands of levels).
pub const MAX_DEPTH: usize = 64;
/// Most nodes a document may expand to once aliases are copied in; a few hundred bytes of aliases to aliases
/// (an "alias bomb") would otherwise expand to billions.
pub const MAX_NODES: usize = 200_000;
/// Most aliases a document may use.
pub const MAX_ALIASES: usize = 10_000;

/// Reads a config file as UTF-8 text. A file that is not UTF-8 (Latin-1, binary) is refused with the line and
/// column of its first bad byte; a file that cannot be read, with the system's reason and no location.
pub fn read_text(path: &std::path::Path) -> Result<String, YamlError> {
    let bytes = std::fs::read(path).map_err(|e| YamlError {
        location: Location::default(),
        message: format!("cannot read {}: {}", path.display(), io_reason(&e)),
    })?;
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = valid
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |at| at + 1);
        let column = String::from_utf8_lossy(&valid[line_start..])
            .chars()
            .count()
            + 1;
        let byte = e.as_bytes()[valid.len()];
        YamlError {
            location: Location { line, column },
            message: format!(
                "the file is not UTF-8 text (byte 0x{byte:02x}); save it as UTF-8{}",
                if e.as_bytes().contains(&0) {
                    " (it looks binary: is this the right file?)"
                } else {
                    ""
                }
            ),
        }
    })
}

/// `No such file or directory`, without Rust's `(os error 2)` suffix.
fn io_reason(error: &std::io::Error) -> String {
    let text = error.to_string();
    match text.rfind(" (os error") {
        Some(cut) => text[..cut].to_string(),
        None => text,
    }
}

/// Parses one YAML document into a value tree and the location of each node.
///
/// `env` resolves variable names for `${env:…}` substitution.
pub fn parse(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Value, Locations), Vec<YamlError>> {
    let mut builder = Builder {
        env,
        locations: Locations::default(),
        anchors: HashMap::new(),
        errors: Vec::new(),
        depth: 0,
        nodes: 0,
        aliases: 0,
        fatal: false,
    };
    let mut parser = Parser::new_from_str(text);
    let mut root = Value::Null;
    let mut started = false;
    while let Some(next) = parser.next_event() {
        let (event, span) = match next {
            Ok(pair) => pair,
            Err(e) => {
                return Err(vec![YamlError {
                    location: Location {
                        line: e.marker().line(),
                        column: e.marker().col() + 1,
                    },
                    message: format!("invalid YAML: {}", e.info()),
                }]);
            }
        };
        match event {
            Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
            Event::StreamEnd => break,
            Event::DocumentStart(_) => {
                if started {
                    return Err(vec![YamlError {
                        location: location(span),
                        message: "only one YAML document is allowed in a config file".into(),
                    }]);
                }
                started = true;
                builder
                    .locations
                    .by_path
                    .insert(String::new(), location(span));
                let Some(first) = parser.next_event() else {
                    break;
                };
                match first {
                    Ok((Event::DocumentEnd, _)) => {}
                    Ok((event, span)) => {
                        root = builder.node(&mut parser, event, span, String::new());
                        if builder.fatal {
                            return Err(builder.errors);
                        }
                    }
                    Err(e) => {
                        return Err(vec![YamlError {
                            location: Location {
                                line: e.marker().line(),
                                column: e.marker().col() + 1,
                            },
                            message: format!("invalid YAML: {}", e.info()),
                        }]);
                    }
                }
            }
            other => {
                builder.errors.push(YamlError {
                    location: location(span),
                    message: format!("unexpected YAML event {other:?}"),
                });
                break;
            }
        }
    }
    if builder.errors.is_empty() {
        Ok((root, builder.locations))
    } else {
        Err(builder.errors)
    }
}

fn location(span: Span) -> Location {
    Location {
        line: span.start.line(),
        column: span.start.col() + 1,
    }
}

struct Builder<'e> {
    env: &'e dyn Fn(&str) -> Option<String>,
    locations: Locations,
    /// Anchored values and how many nodes each holds.
    anchors: HashMap<usize, (Value, usize)>,
    errors: Vec<YamlError>,
    /// Nesting of the node being built.
    depth: usize,
    /// Nodes built so far, aliases counted by what they expand to.
    nodes: usize,
    /// Aliases seen so far.
    aliases: usize,
    /// A limit was crossed: the rest of the document is not read.
    fatal: bool,
}

impl Builder<'_> {
    fn next(
        &mut self,
        parser: &mut Parser<'_, saphyr_parser::StrInput<'_>>,
    ) -> Option<(Event<'static>, Span)> {
        match parser.next_event()? {
            Ok((event, span)) => Some((into_owned(event), span)),
            Err(e) => {
                self.errors.push(YamlError {
                    location: Location {
                        line: e.marker().line(),
                        column: e.marker().col() + 1,
                    },
                    message: format!("invalid YAML: {}", e.info()),
                });
                None
            }
        }
    }

    /// Stops the build with `message` at `span`.
    fn give_up(&mut self, span: Span, message: String) -> Value {
        self.errors.push(YamlError {
            location: location(span),
            message,
        });
        self.fatal = true;
        Value::Null
    }

    fn node(
        &mut self,
        parser: &mut Parser<'_, saphyr_parser::StrInput<'_>>,
        event: Event<'_>,
        span: Span,
        path: String,
    ) -> Value {
        if self.fatal {
            return Value::Null;
        }
        let nodes_before = self.nodes;
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return self.give_up(
                span,
                format!("the document expands to more than {MAX_NODES} values (aliases included); is it an alias bomb?"),
            );
        }
        let nested = matches!(event, Event::SequenceStart(..) | Event::MappingStart(..));
        if nested {
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return self.give_up(
                    span,
                    format!("mappings and sequences nested deeper than {MAX_DEPTH} levels"),
                );
            }
        }
        let value = self.node_inner(parser, event, span, path, nodes_before);
        if nested {
            self.depth -= 1;
        }
        value
    }

    fn node_inner(
        &mut self,
        parser: &mut Parser<'_, saphyr_parser::StrInput<'_>>,
        event: Event<'_>,
        span: Span,
        path: String,
        nodes_before: usize,
    ) -> Value {
        self.locations
            .by_path
            .entry(path.clone())
            .or_insert(location(span));
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                let value = self.scalar(
                    &text,
                    style,
                    tag.as_deref().map(|t| t.suffix.as_str()),
                    span,
                );
                if anchor > 0 {
                    self.anchors.insert(anchor, (value.clone(), 1));
                }
                value
            }
            Event::Alias(anchor) => match self.anchors.get(&anchor) {
                Some((value, size)) => {
                    self.aliases += 1;
                    // The alias node itself was counted; what it expands to is the anchored node's size.
                    self.nodes += size - 1;
                    if self.aliases > MAX_ALIASES || self.nodes > MAX_NODES {
                        return self.give_up(
                            span,
                            format!(
                                "aliases expand the document past {MAX_NODES} values or {MAX_ALIASES} aliases; is it an alias bomb?"
                            ),
                        );
                    }
                    value.clone()
                }
                None => {
                    self.errors.push(YamlError {
                        location: location(span),
                        message: "alias refers to an unknown anchor".into(),
                    });
                    Value::Null
                }
            },
            Event::SequenceStart(anchor, _) => {
                let mut items = Vec::new();
                while let Some((event, span)) = self.next(parser) {
                    if matches!(event, Event::SequenceEnd) {
                        break;
                    }
                    let child = format!("{path}[{}]", items.len());
                    items.push(self.node(parser, event, span, child));
                    if self.fatal {
                        return Value::Null;
                    }
                }
                let value = Value::Array(items);
                if anchor > 0 {
                    self.anchors
                        .insert(anchor, (value.clone(), self.nodes - nodes_before));
                }
                value
            }
            Event::MappingStart(anchor, _) => {
                let mut map = Map::new();
                let mut explicit = std::collections::HashSet::new();
                while let Some((key_event, key_span)) = self.next(parser) {
                    if matches!(key_event, Event::MappingEnd) {
                        break;
                    }
                    let key = match key_event {
                        Event::Scalar(text, ..) => text.into_owned(),
                        _ => {
                            self.errors.push(YamlError {
                                location: location(key_span),
                                message: "mapping keys must be plain scalars".into(),
                            });
                            return Value::Null;
                        }
                    };
                    let child = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    self.locations
                        .by_path
                        .insert(child.clone(), location(key_span));
                    let Some((value_event, value_span)) = self.next(parser) else {
                        break;
                    };
                    let value = self.node(parser, value_event, value_span, child);
                    if self.fatal {
                        return Value::Null;
                    }
                    if key == "<<" {
                        // YAML merge key: copy the anchored mapping's entries that are not set here.
                        if let Value::Object(merged) = value {
                            for (k, v) in merged {
                                map.entry(k).or_insert(v);
                            }
                        }
                        continue;
                    }
                    if !explicit.insert(key.clone()) {
                        self.errors.push(YamlError {
                            location: location(key_span),
                            message: format!("duplicate key `{key}`"),
                        });
                    }
                    map.insert(key, value);
                }
                let value = Value::Object(map);
                if anchor > 0 {
                    self.anchors
                        .insert(anchor, (value.clone(), self.nodes - nodes_before));
                }
                value
            }
            other => {
                self.errors.push(YamlError {
                    location: location(span),
                    message: format!("unexpected YAML event {other:?}"),
                });
                Value::Null
            }
        }
    }

    fn scalar(&mut self, text: &str, style: ScalarStyle, tag: Option<&str>, span: Span) -> Value {
        let text = match substitute(text, self.env) {
            Ok(text) => text,
            Err(message) => {
                self.errors.push(YamlError {
                    location: location(span),
                    message,
                });
                return Value::Null;
            }
        };
        if tag == Some("str") || !matches!(style, ScalarStyle::Plain) {
            return Value::String(text);
        }
        // Plain scalars (substituted or not) are typed by the YAML 1.2 core schema.
        resolve_plain(&text)
    }
}

fn into_owned(event: Event<'_>) -> Event<'static> {
    use std::borrow::Cow;
    match event {
        Event::Scalar(text, style, anchor, tag) => Event::Scalar(
            Cow::Owned(text.into_owned()),
            style,
            anchor,
            tag.map(|t| Cow::Owned(t.into_owned())),
        ),
        Event::SequenceStart(anchor, tag) => {
            Event::SequenceStart(anchor, tag.map(|t| Cow::Owned(t.into_owned())))
        }
        Event::MappingStart(anchor, tag) => {
            Event::MappingStart(anchor, tag.map(|t| Cow::Owned(t.into_owned())))
        }
        Event::Nothing => Event::Nothing,
        Event::StreamStart => Event::StreamStart,
        Event::StreamEnd => Event::StreamEnd,
        Event::DocumentStart(explicit) => Event::DocumentStart(explicit),
        Event::DocumentEnd => Event::DocumentEnd,
        Event::Alias(id) => Event::Alias(id),
        Event::SequenceEnd => Event::SequenceEnd,
        Event::MappingEnd => Event::MappingEnd,
    }
}

/// Resolves a plain scalar by the YAML 1.2 core schema: null, booleans, integers, floats, else a string.
fn resolve_plain(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | "+.inf" | ".Inf" | "+.Inf" | ".INF" | "+.INF" | "-.inf" | "-.Inf" | "-.INF"
        | ".nan" | ".NaN" | ".NAN" => return Value::String(text.to_string()),
        _ => {}
    }
    if let Ok(i) = text.parse::<i64>() {
        return Value::Number(i.into());
    }
    if let Ok(u) = text.parse::<u64>() {
        return Value::Number(u.into());
    }
    if let Some(hex) = text.strip_prefix("0x")
        && let Ok(i) = i64::from_str_radix(hex, 16)
    {
        return Value::Number(i.into());
    }
    if let Some(oct) = text.strip_prefix("0o")
        && let Ok(i) = i64::from_str_radix(oct, 8)
    {
        return Value::Number(i.into());
    }
    let looks_numeric = text
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
        && text.bytes().any(|b| b.is_ascii_digit());
    if looks_numeric
        && let Ok(f) = text.parse::<f64>()
        && let Some(n) = Number::from_f64(f)
    {
        return Value::Number(n);
    }
    Value::String(text.to_string())
}

/// Replaces `${env:NAME}`, `${env:NAME:-default}` and `${NAME}`; `$$` is a literal `$`.
///
/// The error names the variable and how to give it a default.
pub fn substitute(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    if !text.contains('$') {
        return Ok(text.to_string());
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                return Err(format!("unterminated `${{` in `{text}`"));
            };
            let expression = &body[..end];
            let expression = expression.strip_prefix("env:").unwrap_or(expression);
            let (name, default) = match expression.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (expression, None),
            };
            let valid = !name.is_empty()
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !name.as_bytes()[0].is_ascii_digit();
            if !valid {
                return Err(format!(
                    "`${{{}}}` is not a valid environment reference (expected `${{env:NAME}}` or `${{env:NAME:-default}}`)",
                    &body[..end]
                ));
            }
            match (env(name), default) {
                (Some(value), _) => out.push_str(&value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => {
                    return Err(format!(
                        "environment variable `{name}` is not set (give a default with `${{env:{name}:-value}}`)"
                    ));
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn builds_typed_tree_with_locations() {
        let text = "a:\n  port: 4317\n  name: x\n  on: true\n  list:\n    - 1.5\n    - \"2\"\n";
        let (value, locations) = parse(text, &no_env).unwrap();
        assert_eq!(value["a"]["port"], 4317);
        assert_eq!(value["a"]["on"], true);
        assert_eq!(value["a"]["list"][0], 1.5);
        assert_eq!(value["a"]["list"][1], "2");
        assert_eq!(locations.find("a.name"), Location { line: 3, column: 3 });
        assert_eq!(locations.find("a.list[1]"), Location { line: 7, column: 7 });
        assert_eq!(
            locations.find("a.name.missing"),
            Location { line: 3, column: 3 }
        );
    }

    #[test]
    fn substitutes_environment_and_retypes_whole_plain_scalars() {
        let env = |name: &str| (name == "PORT").then(|| "9000".to_string());
        let (value, _) = parse(
            "port: ${env:PORT}\nquoted: \"${env:PORT}\"\nhost: \"h:${PORT}\"\nd: ${env:NOPE:-5s}\nlit: $$x\n",
            &env,
        )
        .unwrap();
        assert_eq!(value["port"], 9000);
        assert_eq!(value["quoted"], "9000");
        assert_eq!(value["host"], "h:9000");
        assert_eq!(value["d"], "5s");
        assert_eq!(value["lit"], "$x");
    }

    #[test]
    fn missing_variable_is_an_error_with_location() {
        let errors = parse("a:\n  b: ${env:VIGIL_TEST_UNSET}\n", &no_env).unwrap_err();
        assert_eq!(errors[0].location, Location { line: 2, column: 6 });
        assert!(
            errors[0].message.contains("VIGIL_TEST_UNSET"),
            "{:?}",
            errors
        );
    }

    #[test]
    fn syntax_error_and_duplicate_keys_are_located() {
        let errors = parse("a: [1, 2\nb: 3\n", &no_env).unwrap_err();
        assert!(errors[0].message.starts_with("invalid YAML"), "{errors:?}");
        let errors = parse("a: 1\na: 2\n", &no_env).unwrap_err();
        assert_eq!(errors[0].location.line, 2);
        assert!(errors[0].message.contains("duplicate key"));
    }

    #[test]
    fn anchors_and_merge_keys() {
        let (value, _) =
            parse("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\n", &no_env).unwrap();
        assert_eq!(value["other"]["x"], 1);
        assert_eq!(value["other"]["y"], 3);
    }
}

#[cfg(test)]
mod limits {
    use super::*;

    #[test]
    fn every_problem_of_a_section_is_reported_in_one_run() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Batch {
            send_batch_size: u64,
            #[serde(default)]
            send_batch_max_size: u64,
            #[serde(default)]
            timeout: Option<String>,
        }
        let text = "batch:\n  send_batch_size: lots\n  send_batch_max_size: many\n  timout: 1s\n";
        let (tree, locations) = parse_text(text).unwrap();
        let errors = decode_all::<Batch>(&tree["batch"], "batch", &locations).unwrap_err();
        let lines: Vec<usize> = errors.iter().map(|e| e.location.line).collect();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert_eq!(
            lines
                .iter()
                .copied()
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
            3,
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .all(|e| !e.message.starts_with("missing field")),
            "a key taken out is not reported as missing: {errors:?}"
        );
        // A valid section decodes as before.
        let (tree, locations) = parse_text("batch: {send_batch_size: 5}\n").unwrap();
        assert!(decode_all::<Batch>(&tree["batch"], "batch", &locations).is_ok());
    }

    #[test]
    fn messages_use_plain_words_and_suggest_the_nearest_key() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Batch {
            send_batch_size: u64,
            timeout: Option<String>,
        }
        let (tree, locations) = parse_text("batch:\n  send_batch_sise: 5\n").unwrap();
        let error = decode::<Batch>(&tree["batch"], "batch", &locations).unwrap_err();
        assert!(
            error.message.ends_with("; did you mean `send_batch_size`?"),
            "{}",
            error.message
        );
        let (tree, locations) = parse_text("batch:\n  send_batch_size: lots\n").unwrap();
        let error = decode::<Batch>(&tree["batch"], "batch", &locations).unwrap_err();
        assert!(
            error.message.ends_with("expected a whole number"),
            "{}",
            error.message
        );
        assert_eq!(edit_distance("endpont", "endpoint"), 1);
        assert_eq!(
            plain_words("unknown field `zzz`, expected `endpoint`"),
            "unknown field `zzz`, expected `endpoint`"
        );
    }

    fn parse_text(text: &str) -> Result<(Value, Locations), Vec<YamlError>> {
        parse(text, &|_| None)
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        // The report's 16 KB file: `- ` nested thousands deep.
        let text: String = (0..8000)
            .map(|depth| format!("{}- \n", "  ".repeat(depth)))
            .collect();
        let errors = parse_text(&text).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].message.contains("nested deeper than 64"),
            "{errors:?}"
        );
        assert_eq!(errors[0].location.line, MAX_DEPTH + 1);
        // Flow style, on one line.
        let flow = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let errors = parse_text(&flow).unwrap_err();
        // The YAML parser has its own limit for flow collections; either way it is an error, not a crash.
        assert!(
            errors[0].message.contains("nested") || errors[0].message.contains("recursion limit"),
            "{errors:?}"
        );
        // At the limit it still loads.
        let ok: String = (0..MAX_DEPTH)
            .map(|depth| format!("{}- \n", "  ".repeat(depth)))
            .collect();
        assert!(parse_text(&ok).is_ok());
    }

    #[test]
    fn an_alias_bomb_is_refused_before_it_expands() {
        // The "billion laughs": each level lists the previous one nine times.
        let mut text = String::from(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
        for pair in names.windows(2) {
            let (previous, name) = (pair[0], pair[1]);
            let refs = vec![format!("*{previous}"); 9].join(",");
            text.push_str(&format!("{name}: &{name} [{refs}]\n"));
        }
        assert!(text.len() < 1000);
        let errors = parse_text(&text).unwrap_err();
        assert!(errors[0].message.contains("alias bomb"), "{errors:?}");
        assert!(errors[0].location.line > 1);
        // Ordinary aliases still work.
        let (tree, _) = parse_text("base: &base {x: 1}\nother: *base\n").unwrap();
        assert_eq!(tree["other"]["x"], 1);
    }

    #[test]
    fn files_that_are_not_utf8_text_are_named_with_the_place_of_the_first_bad_byte() {
        let dir = tempfile::tempdir().unwrap();
        let latin1 = dir.path().join("latin1.yaml");
        std::fs::write(&latin1, b"receivers:\n  otlp: {}\n# caf\xe9\n").unwrap();
        let error = read_text(&latin1).unwrap_err();
        assert_eq!(error.location, Location { line: 3, column: 6 });
        assert!(
            error.message.contains("not UTF-8 text (byte 0xe9)"),
            "{}",
            error.message
        );
        let binary = dir.path().join("binary.yaml");
        std::fs::write(&binary, [0x7f, b'E', b'L', b'F', 0, 0xff, 0xfe]).unwrap();
        assert!(
            read_text(&binary)
                .unwrap_err()
                .message
                .contains("looks binary")
        );
        let missing = read_text(&dir.path().join("missing.yaml")).unwrap_err();
        assert!(
            missing
                .message
                .ends_with("missing.yaml: No such file or directory"),
            "{}",
            missing.message
        );
        assert_eq!(missing.location, Location::default());
    }
}
