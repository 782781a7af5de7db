//! The per-span state every sink keeps: a span's fields, formatted once when the span is created or recorded,
//! then added to each record logged inside it. One mechanism for the JSON, text and OTLP sinks.

use tracing::Subscriber;
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::mask::Masker;

/// A sink's formatted copy of a span's fields, stored in the span's extensions.
pub(crate) trait SpanState: Default + Send + Sync + 'static {
    /// Adds fields (from the span's creation or a later `record`), masked by `masker` when there is one.
    fn record(&mut self, fields: &dyn RecordFields, masker: Option<&Masker>);
}

/// For `Layer::on_new_span`: stores the new span's fields.
pub(crate) fn on_new_span<S, T>(
    attrs: &Attributes<'_>,
    id: &Id,
    ctx: &Context<'_, S>,
    masker: Option<&Masker>,
) where
    S: Subscriber + for<'a> LookupSpan<'a>,
    T: SpanState,
{
    let Some(span) = ctx.span(id) else { return };
    let mut state = T::default();
    state.record(attrs, masker);
    span.extensions_mut().insert(state);
}

/// For `Layer::on_record`: adds fields recorded later.
pub(crate) fn on_record<S, T>(
    id: &Id,
    values: &Record<'_>,
    ctx: &Context<'_, S>,
    masker: Option<&Masker>,
) where
    S: Subscriber + for<'a> LookupSpan<'a>,
    T: SpanState,
{
    let Some(span) = ctx.span(id) else { return };
    let mut extensions = span.extensions_mut();
    if let Some(state) = extensions.get_mut::<T>() {
        state.record(values, masker);
    }
}
