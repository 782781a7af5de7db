//! Spans: `tracing` spans become OpenTelemetry spans through `tracing-opentelemetry`.

use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber, subscriber::Interest};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{FilterFn, Filtered};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// The filter that hides context spans ([`crate::context!`]) from the span exporter.
pub type NotContext = FilterFn<fn(&Metadata<'_>) -> bool>;

/// The span exporter's layer: [`SpansOnly`] around `inner`, blind to context spans.
///
/// A per-layer filter rather than a check inside [`SpansOnly`], because only a filter changes what the
/// wrapped layer's [`Context`] sees: a span created inside a context span gets the enclosing real span as its
/// parent, and an ERROR event inside one marks that real span, instead of both finding a span the exporter
/// never started.
pub fn exported_spans<S, L>(inner: L) -> Filtered<SpansOnly<L>, NotContext, S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    L: Layer<S>,
{
    fn not_context(metadata: &Metadata<'_>) -> bool {
        !crate::context::is_context_span(metadata)
    }
    SpansOnly(inner).with_filter(FilterFn::new(not_context as fn(&Metadata<'_>) -> bool))
}

/// Forwards spans and ERROR events to the wrapped layer, and no other events.
///
/// Log events travel the log pipeline, correlated with spans by trace and span ids, instead of being copied
/// into span events (which OpenTelemetry is phasing out and which cost an allocation per event). ERROR events
/// still reach the span, so it gets an error status and an exception event. A wrapper rather than a per-layer
/// filter, because per-layer filters make every disabled callsite re-check its level at run time.
#[derive(Debug)]
pub struct SpansOnly<L>(pub L);

impl<S, L> Layer<S> for SpansOnly<L>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    L: Layer<S>,
{
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        self.0.on_register_dispatch(subscriber);
    }
    fn on_layer(&mut self, subscriber: &mut S) {
        self.0.on_layer(subscriber);
    }
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        // Never `never` for events: in a layered subscriber that would silence them for every layer.
        if metadata.is_event() {
            Interest::always()
        } else {
            self.0.register_callsite(metadata)
        }
    }
    fn enabled(&self, metadata: &Metadata<'_>, ctx: Context<'_, S>) -> bool {
        metadata.is_event() || self.0.enabled(metadata, ctx)
    }
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        self.0.on_new_span(attrs, id, ctx);
    }
    fn on_record(&self, span: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        self.0.on_record(span, values, ctx);
    }
    fn on_follows_from(&self, span: &Id, follows: &Id, ctx: Context<'_, S>) {
        self.0.on_follows_from(span, follows, ctx);
    }
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if *event.metadata().level() == tracing::Level::ERROR {
            self.0.on_event(event, ctx);
        }
    }
    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        self.0.on_enter(id, ctx);
    }
    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        self.0.on_exit(id, ctx);
    }
    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        self.0.on_close(id, ctx);
    }
    fn on_id_change(&self, old: &Id, new: &Id, ctx: Context<'_, S>) {
        self.0.on_id_change(old, new, ctx);
    }
    unsafe fn downcast_raw(&self, id: std::any::TypeId) -> Option<*const ()> {
        if id == std::any::TypeId::of::<Self>() {
            return Some(self as *const Self as *const ());
        }
        // SAFETY: forwarded to the inner layer, which upholds the same contract.
        unsafe { self.0.downcast_raw(id) }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{Status, TracerProvider as _};
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
    use tracing_subscriber::layer::SubscriberExt;

    use super::{SpansOnly, exported_spans};

    #[test]
    fn errors_mark_the_span_and_other_events_stay_out_of_it() {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber = tracing_subscriber::registry().with(SpansOnly(
            tracing_opentelemetry::layer().with_tracer(provider.tracer("test")),
        ));
        tracing::subscriber::with_default(subscriber, || {
            let ok = tracing::info_span!("ok_step", rows = 3);
            ok.in_scope(|| tracing::info!("fine"));
            let failing = tracing::info_span!("failing_step");
            failing.in_scope(|| tracing::error!(error = "disk full", "write failed"));
        });
        let _ = provider.force_flush();
        let spans = exporter.get_finished_spans().unwrap();
        let ok = spans.iter().find(|s| s.name == "ok_step").unwrap();
        let failing = spans.iter().find(|s| s.name == "failing_step").unwrap();
        assert_eq!(ok.status, Status::Unset);
        assert!(
            ok.events.is_empty(),
            "INFO events are logs, not span events"
        );
        assert!(
            matches!(failing.status, Status::Error { .. }),
            "{:?}",
            failing.status
        );
        assert_eq!(failing.events.len(), 1);
    }

    #[test]
    fn context_spans_are_not_exported_and_do_not_split_the_trace() {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber = tracing_subscriber::registry().with(exported_spans(
            tracing_opentelemetry::layer().with_tracer(provider.tracer("test")),
        ));
        tracing::subscriber::with_default(subscriber, || {
            let request = tracing::info_span!("request");
            let _request = request.enter();
            let _bound = crate::context!(request_id = "r-1").entered();
            tracing::info_span!("query").in_scope(|| {});
            tracing::error!("request failed");
        });
        let _ = provider.force_flush();
        let spans = exporter.get_finished_spans().unwrap();
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_ref()).collect();
        assert_eq!(
            names.len(),
            2,
            "only the real spans are exported: {names:?}"
        );
        let request = spans.iter().find(|s| s.name == "request").unwrap();
        let query = spans.iter().find(|s| s.name == "query").unwrap();
        assert_eq!(
            query.parent_span_id,
            request.span_context.span_id(),
            "a span inside a context belongs to the enclosing span"
        );
        assert_eq!(
            query.span_context.trace_id(),
            request.span_context.trace_id()
        );
        assert!(
            matches!(request.status, Status::Error { .. }),
            "an ERROR inside a context marks the enclosing span: {:?}",
            request.status
        );
    }
}
