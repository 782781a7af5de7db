//! The text formatter: Python `logging` format strings (`'%(asctime)s - %(name)s - %(levelname)s - %(message)s'`)
//! for people reading logs, followed by the event's structured fields and the trace ids as ` key=value` pairs,
//! so nothing the JSON formatter would show is lost.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::sync::Arc;

use tracing::field::{Field, FieldSet, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use super::clock::{Clock, civil_date};
use super::json::{CRITICAL_FIELD, event_level_name};
use super::masking::Masking;
use super::span_state::{Keyed, Segments, Sink, SpanFormat, SpanValues, Written};
use super::writer::AsyncWriter;
use crate::mask::Masker;

/// One piece of a format string.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Field {
        name: Attribute,
        width: usize,
        left: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Attribute {
    AscTime,
    Name,
    LevelName,
    Message,
    FileName,
    LineNo,
    Module,
    Process,
    ThreadName,
}

/// A parsed Python `logging` format string; the default is `%(message)s`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern(Vec<Piece>);

impl Default for Pattern {
    fn default() -> Self {
        Pattern(vec![Piece::Field {
            name: Attribute::Message,
            width: 0,
            left: false,
        }])
    }
}

/// The attributes a format string may use.
pub const SUPPORTED: &str =
    "asctime, name, levelname, message, filename, lineno, module, process, threadName";

impl Pattern {
    /// Parses `%(name)s`-style placeholders (with optional `-` and width, e.g. `%(levelname)-8s`); `%%` is `%`.
    pub fn parse(format: &str) -> Result<Pattern, String> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = format;
        while let Some(at) = rest.find('%') {
            literal.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            if let Some(tail) = after.strip_prefix('%') {
                literal.push('%');
                rest = tail;
                continue;
            }
            let Some(body) = after.strip_prefix('(') else {
                return Err(format!(
                    "`%` at byte {at} must start a `%(name)s` placeholder (write `%%` for a percent sign)"
                ));
            };
            let close = body
                .find(')')
                .ok_or_else(|| format!("unclosed `%(` in `{format}`"))?;
            let key = &body[..close];
            let spec = &body[close + 1..];
            let left = spec.starts_with('-');
            let spec = spec.trim_start_matches('-');
            let digits = spec.bytes().take_while(u8::is_ascii_digit).count();
            let width = spec[..digits].parse().unwrap_or(0);
            let conversion = spec[digits..].chars().next();
            if !matches!(conversion, Some('s' | 'd')) {
                return Err(format!(
                    "`%({key})` must end with a conversion such as `s` or `d`"
                ));
            }
            let name = match key {
                "asctime" => Attribute::AscTime,
                "name" => Attribute::Name,
                "levelname" => Attribute::LevelName,
                "message" => Attribute::Message,
                "filename" | "pathname" => Attribute::FileName,
                "lineno" => Attribute::LineNo,
                "module" => Attribute::Module,
                "process" => Attribute::Process,
                "threadName" => Attribute::ThreadName,
                other => {
                    return Err(format!(
                        "unknown attribute `%({other})`; supported: {SUPPORTED}"
                    ));
                }
            };
            if !literal.is_empty() {
                pieces.push(Piece::Literal(std::mem::take(&mut literal)));
            }
            pieces.push(Piece::Field { name, width, left });
            rest = &spec[digits + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        Ok(Pattern(pieces))
    }
}

/// Python's default `asctime`: `2026-11-22 11:19:26,123`.
fn write_asctime(now: std::time::Duration, out: &mut String) {
    let secs = now.as_secs() as i64;
    let (y, m, d) = civil_date(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02},{:03}",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        now.subsec_millis()
    );
}

struct TextFields<'a> {
    fields: &'a mut String,
    message: Option<&'a mut String>,
    /// Where a multi-line stack trace goes, to be printed as indented lines under the record (events only).
    trailer: Option<&'a mut String>,
}

/// Fields that hold a stack trace: on a console they read as indented lines, not one 30-frame line.
fn is_stack_trace(name: &str) -> bool {
    name == "exception.stacktrace" || name == "backtrace"
}

impl Visit for TextFields<'_> {
    fn record_bool(&mut self, field: &Field, value: bool) {
        if field.name() == CRITICAL_FIELD && self.message.is_some() {
            return;
        }
        let _ = write!(self.fields, " {}={value}", field.name());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message"
            && let Some(message) = self.message.as_deref_mut()
        {
            message.push_str(value);
            return;
        }
        if is_stack_trace(field.name())
            && value.contains('\n')
            && let Some(trailer) = self.trailer.as_deref_mut()
        {
            trailer.push_str(value);
            return;
        }
        let _ = write!(self.fields, " {}={value:?}", field.name());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message"
            && let Some(message) = self.message.as_deref_mut()
        {
            let _ = write!(message, "{value:?}");
            return;
        }
        if is_stack_trace(field.name())
            && let Some(trailer) = self.trailer.as_deref_mut()
        {
            // `%backtrace` arrives as Debug of its Display: write it as it reads.
            let start = trailer.len();
            let _ = write!(trailer, "{value:?}");
            if trailer[start..].contains('\n') {
                return;
            }
            let single = trailer.split_off(start);
            let _ = write!(self.fields, " {}={single:?}", field.name());
            return;
        }
        let _ = write!(self.fields, " {}={value:?}", field.name());
    }
}

/// A span's fields as ` key=value` pairs, formatted and masked at the first line logged inside the span.
struct SpanText(Segments<String>);

impl SpanFormat for SpanText {
    const SINK: Sink = Sink::Text;

    fn format(values: &SpanValues, fields: &FieldSet, masker: Option<&Masker>) -> Self {
        let mut segments = Segments::for_fields(values.len());
        let Segments { text, ends } = &mut segments;
        values.replay(
            fields,
            &mut super::masking::Masking::new(
                masker,
                Keyed::new(
                    TextFields {
                        fields: text,
                        message: None,
                        trailer: None,
                    },
                    ends,
                ),
            ),
        );
        SpanText(segments)
    }
}

impl Written for TextFields<'_> {
    fn written(&self) -> usize {
        self.fields.len()
    }
}

#[derive(Default)]
struct Buffers {
    line: String,
    message: String,
    fields: String,
    trailer: String,
    /// The span fields' keys already on the line.
    written: Vec<&'static str>,
}

thread_local! {
    static BUFFERS: RefCell<Buffers> = RefCell::new(Buffers::default());
}

/// A tracing layer writing lines in a Python `logging` format through an [`AsyncWriter`].
pub struct TextLayer {
    pattern: Pattern,
    writer: Arc<AsyncWriter>,
    clock: Arc<dyn Clock>,
    colour: bool,
    masker: Option<Masker>,
    /// This layer's identity: the first log layer to see a span keeps its values for all (see `span_state`).
    owner: u64,
}

/// The console's default format.
pub const CONSOLE_FORMAT: &str = "%(asctime)s %(levelname)-8s %(name)s: %(message)s";

impl TextLayer {
    /// A layer formatting with `pattern`.
    pub fn new(pattern: Pattern, writer: Arc<AsyncWriter>, clock: Arc<dyn Clock>) -> Self {
        TextLayer {
            pattern,
            writer,
            clock,
            colour: false,
            masker: None,
            owner: super::span_state::next_owner(),
        }
    }

    /// Masks every message and field with `masker` before it is formatted.
    pub fn with_masker(mut self, masker: Option<Masker>) -> Self {
        self.masker = masker;
        self
    }

    /// Colours level names with ANSI escapes (for terminals).
    pub fn with_colour(mut self, colour: bool) -> Self {
        self.colour = colour;
        self
    }

    fn format<S>(&self, event: &Event<'_>, ctx: &Context<'_, S>, buffers: &mut Buffers)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let Buffers {
            line,
            message,
            fields,
            trailer,
            written,
        } = buffers;
        line.clear();
        message.clear();
        fields.clear();
        trailer.clear();
        written.clear();
        event.record(&mut Masking::new(
            self.masker.as_ref(),
            TextFields {
                fields,
                message: Some(message),
                trailer: Some(trailer),
            },
        ));
        let metadata = event.metadata();
        let mut value = String::new();
        for piece in &self.pattern.0 {
            match piece {
                Piece::Literal(text) => line.push_str(text),
                Piece::Field { name, width, left } => {
                    value.clear();
                    match name {
                        Attribute::AscTime => write_asctime(self.clock.now(), &mut value),
                        Attribute::Name | Attribute::Module => value.push_str(metadata.target()),
                        Attribute::LevelName => value.push_str(event_level_name(event)),
                        Attribute::Message => value.push_str(message),
                        Attribute::FileName => value.push_str(metadata.file().unwrap_or("?")),
                        Attribute::LineNo => {
                            let _ = write!(value, "{}", metadata.line().unwrap_or(0));
                        }
                        Attribute::Process => {
                            let _ = write!(value, "{}", std::process::id());
                        }
                        Attribute::ThreadName => {
                            value.push_str(std::thread::current().name().unwrap_or("-"))
                        }
                    }
                    let pad = width.saturating_sub(value.chars().count());
                    if !left {
                        line.extend(std::iter::repeat_n(' ', pad));
                    }
                    let colour = match (self.colour, name) {
                        (true, Attribute::LevelName) => match *metadata.level() {
                            tracing::Level::ERROR => Some("\x1b[31m"),
                            tracing::Level::WARN => Some("\x1b[33m"),
                            tracing::Level::INFO => Some("\x1b[32m"),
                            _ => Some("\x1b[2m"),
                        },
                        _ => None,
                    };
                    if let Some(code) = colour {
                        line.push_str(code);
                    }
                    line.push_str(&value);
                    if colour.is_some() {
                        line.push_str("\x1b[0m");
                    }
                    if *left {
                        line.extend(std::iter::repeat_n(' ', pad));
                    }
                }
            }
        }
        line.push_str(fields);
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope {
                let extensions = span.extensions();
                if let Some(text) = extensions.get::<SpanValues>().and_then(|values| {
                    values.formatted::<SpanText>(span.fields(), self.masker.as_ref())
                }) {
                    text.0.append_new(line, metadata.fields(), written);
                }
            }
        }
        let mut ids = Vec::new();
        super::correlation::append_ids(&mut ids);
        if !ids.is_empty() {
            // `,"trace_id":"…","span_id":"…"` as ` trace_id=… span_id=…`.
            let text = String::from_utf8_lossy(&ids)
                .replace(",\"", " ")
                .replace("\":\"", "=")
                .replace('"', "");
            line.push_str(&text);
        }
        line.push('\n');
        for frame in trailer.lines().filter(|l| !l.trim().is_empty()) {
            line.push_str("    ");
            line.push_str(frame.trim_end());
            line.push('\n');
        }
    }
}

impl<S> Layer<S> for TextLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        super::span_state::on_new_span(attrs, id, &ctx, self.owner);
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: Context<'_, S>,
    ) {
        super::span_state::on_record(id, values, &ctx, self.owner);
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        BUFFERS.with(|cell| match cell.try_borrow_mut() {
            Ok(mut buffers) => {
                self.format(event, &ctx, &mut buffers);
                self.writer.write(buffers.line.as_bytes());
            }
            Err(_) => {
                let mut buffers = Buffers::default();
                self.format(event, &ctx, &mut buffers);
                self.writer.write(buffers.line.as_bytes());
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_seed_format_and_rejects_unknown_attributes() {
        let pattern =
            Pattern::parse("%(asctime)s - %(name)s - %(levelname)-8s - %(message)s").unwrap();
        assert_eq!(pattern.0.len(), 7);
        assert!(
            Pattern::parse("%(funcName)s")
                .unwrap_err()
                .contains("unknown attribute `%(funcName)`")
        );
        assert!(Pattern::parse("100% done").is_err());
        assert!(Pattern::parse(CONSOLE_FORMAT).is_ok());
        assert_eq!(
            Pattern::parse("100%% done").unwrap().0,
            vec![Piece::Literal("100% done".into())]
        );
    }

    #[test]
    fn asctime_looks_like_pythons() {
        let mut out = String::new();
        write_asctime(
            std::time::Duration::new(1_795_346_366, 123_456_789),
            &mut out,
        );
        assert_eq!(out, "2026-11-22 11:19:26,123");
    }
}
