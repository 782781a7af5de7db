//! Spans: `tracing` spans become OpenTelemetry spans through `tracing-opentelemetry`.

use std::cell::RefCell;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use tracing::dispatcher::WeakDispatch;
use tracing::span::{Attributes, Id, Record};
use tracing::{Dispatch, Event, Metadata, Subscriber, subscriber::Interest};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::context::is_context_span;
use crate::field::OwnedValues;

/// The span exporter's layer: `inner` (a `tracing-opentelemetry` layer) behind [`SpansOnly`].
pub fn exported_spans<L>(inner: L) -> SpansOnly<L> {
    SpansOnly::new(inner)
}

/// The OpenTelemetry context of the innermost exported span here: [`tracing::Span::current`]'s, or inside a
/// context span ([`crate::context!`], never exported) the enclosing span's. For propagation headers and for
/// setting a span's status.
pub fn current_context() -> opentelemetry::Context {
    let span = tracing::Span::current();
    if span.metadata().is_some_and(is_context_span) {
        // Entering a context span activates its enclosing span's context (see `SpansOnly`).
        opentelemetry::Context::current()
    } else {
        span.context()
    }
}

thread_local! {
    /// The exported spans entered on this thread, innermost last, each with the layer that saw it enter: where a
    /// context span entered here without an exported ancestor finds the span it runs in.
    static ENTERED: RefCell<Vec<(LayerKey, Id)>> = const { RefCell::new(Vec::new()) };
    /// The enclosing span contexts that entered context spans activated on this thread, innermost last.
    static ACTIVATED: RefCell<Vec<(LayerKey, Id, opentelemetry::ContextGuard)>> =
        const { RefCell::new(Vec::new()) };
}

/// Which [`SpansOnly`] an entry of the thread-local stacks belongs to: span ids are only meaningful within one
/// subscriber, and a thread can run several (a test's `with_default` inside the global one).
type LayerKey = usize;

/// The exported span a context span was entered in (when it has no exported ancestor), held open by a reference
/// of the context span's until the context span closes. The reference is released when the registry drops the
/// context span's extensions, after its close has finished, which is also how the registry releases parents.
struct Enclosing {
    id: Id,
    dispatch: WeakDispatch,
}

impl Drop for Enclosing {
    fn drop(&mut self) {
        if let Some(dispatch) = self.dispatch.upgrade() {
            dispatch.try_close(self.id.clone());
        }
    }
}

/// The exported span that `span` belongs to: the nearest exported span at or above it, where a context span on
/// the way that was entered inside some exported span stands for that span.
fn enclosing_of<S>(span: &tracing_subscriber::registry::SpanRef<'_, S>) -> Option<Id>
where
    S: for<'a> LookupSpan<'a>,
{
    for span in span.scope() {
        if !is_context_span(span.metadata()) {
            return Some(span.id());
        }
        if let Some(enclosing) = span.extensions().get::<Enclosing>() {
            return Some(enclosing.id.clone());
        }
    }
    None
}

/// Forwards spans and ERROR events to the wrapped OpenTelemetry layer, and no other events; keeps context spans
/// ([`crate::context!`]) out of the trace.
///
/// Log events travel the log pipeline, correlated with spans by trace and span ids, instead of being copied
/// into span events (which OpenTelemetry is phasing out and which cost an allocation per event). ERROR events
/// still reach the span, so it gets an error status and an exception event. A wrapper rather than a per-layer
/// filter, because per-layer filters make every disabled callsite re-check its level at run time, and add a
/// span lookup to every span's entry, exit and close.
///
/// A context span is never shown to the wrapped layer, and everything inside it belongs to the span that
/// encloses it: its nearest exported ancestor, else the exported span it is entered in (the README's
/// `.instrument(vigil::context!(..)).instrument(span)` creates the context before the span), else, in a task
/// spawned inside it, the span it was last entered in. Entering a context
/// span activates the enclosing span's OpenTelemetry context, so spans created inside it, the trace ids on log
/// lines and propagation headers use it, also in a task spawned inside the context; a span whose explicit
/// parent is a context span gets the enclosing span as its parent; an ERROR event inside one is handed on as
/// the enclosing span's. This relies on the wrapped layer's context activation, which `tracing-opentelemetry`
/// turns on by default.
pub struct SpansOnly<L> {
    inner: L,
    /// Context spans open now: while there are none, which is the usual case, no callback has to look a span
    /// up to ask whether it is one.
    open_contexts: AtomicUsize,
    /// The subscriber this layer is part of, to read an enclosing span's OpenTelemetry context.
    dispatch: OnceLock<WeakDispatch>,
}

impl<L> SpansOnly<L> {
    /// Wraps `inner`.
    pub fn new(inner: L) -> Self {
        SpansOnly {
            inner,
            open_contexts: AtomicUsize::new(0),
            dispatch: OnceLock::new(),
        }
    }

    /// This layer's key in the thread-local stacks (its address: it does not move once part of a subscriber).
    fn key(&self) -> LayerKey {
        self as *const Self as *const () as LayerKey
    }

    /// Whether `id` may be a context span and is one.
    fn is_context<S>(&self, id: &Id, ctx: &Context<'_, S>) -> bool
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        self.open_contexts.load(Ordering::Relaxed) > 0
            && ctx.metadata(id).is_some_and(is_context_span)
    }
}

impl<L: std::fmt::Debug> std::fmt::Debug for SpansOnly<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpansOnly")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// The exported span that context span `id` belongs to (see [`enclosing_of`]).
fn enclosing<S>(id: &Id, ctx: &Context<'_, S>) -> Option<Id>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    enclosing_of(&ctx.span(id)?)
}

impl<S, L> Layer<S> for SpansOnly<L>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    L: Layer<S>,
{
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        let _ = self.dispatch.set(subscriber.downgrade());
        self.inner.on_register_dispatch(subscriber);
    }
    fn on_layer(&mut self, subscriber: &mut S) {
        self.inner.on_layer(subscriber);
    }
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        // Never `never` for events: in a layered subscriber that would silence them for every layer.
        if metadata.is_event() {
            Interest::always()
        } else {
            self.inner.register_callsite(metadata)
        }
    }
    fn enabled(&self, metadata: &Metadata<'_>, ctx: Context<'_, S>) -> bool {
        metadata.is_event() || self.inner.enabled(metadata, ctx)
    }
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if is_context_span(attrs.metadata()) {
            self.open_contexts.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match attrs.parent() {
            Some(parent) if self.is_context(parent, &ctx) => {
                let (metadata, values) = (attrs.metadata(), attrs.values());
                let attrs = match enclosing(parent, &ctx) {
                    Some(enclosing) => Attributes::child_of(enclosing, metadata, values),
                    None => Attributes::new_root(metadata, values),
                };
                self.inner.on_new_span(&attrs, id, ctx);
            }
            _ => self.inner.on_new_span(attrs, id, ctx),
        }
    }
    fn on_record(&self, span: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        self.inner.on_record(span, values, ctx);
    }
    fn on_follows_from(&self, span: &Id, follows: &Id, ctx: Context<'_, S>) {
        self.inner.on_follows_from(span, follows, ctx);
    }
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if *event.metadata().level() != tracing::Level::ERROR {
            return;
        }
        let span = match event.parent() {
            Some(parent) => Some(parent.clone()),
            None if event.is_contextual() => ctx.current_span().id().cloned(),
            None => None,
        };
        match span {
            Some(span) if self.is_context(&span, &ctx) => {
                // The same event, as the enclosing span's (or as no span's, outside any).
                let metadata = event.metadata();
                let values = OwnedValues::of(metadata.fields(), |visit| event.record(visit));
                let enclosing = enclosing(&span, &ctx);
                values.with_value_set(metadata.fields(), |values| {
                    self.inner
                        .on_event(&Event::new_child_of(enclosing, metadata, values), ctx)
                });
            }
            _ => self.inner.on_event(event, ctx),
        }
    }
    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        let key = self.key();
        if !self.is_context(id, &ctx) {
            ENTERED.with(|entered| entered.borrow_mut().push((key, id.clone())));
            self.inner.on_enter(id, ctx);
            return;
        }
        let Some(dispatch) = self.dispatch.get().and_then(WeakDispatch::upgrade) else {
            return;
        };
        let Some(span) = ctx.span(id) else { return };
        // Its exported ancestor if it has one; else the exported span it is entered in now (a context can be
        // reused across requests); else, in a task spawned inside it, the span it was last entered in.
        let above = span.parent().and_then(|parent| enclosing_of(&parent));
        let enclosing = match above {
            Some(above) => Some(above),
            None => {
                let entered_in = ENTERED.with(|entered| {
                    let entered = entered.borrow();
                    let mut mine = entered.iter().rev().filter(|(k, _)| *k == key);
                    mine.next().map(|(_, span)| span.clone())
                });
                let mut extensions = span.extensions_mut();
                let known = extensions.get_mut::<Enclosing>().map(|e| e.id.clone());
                match entered_in {
                    Some(entered_in) if known.as_ref() != Some(&entered_in) => {
                        let held = Enclosing {
                            id: dispatch.clone_span(&entered_in),
                            dispatch: dispatch.downgrade(),
                        };
                        // The previous span's reference is released after the lock is.
                        let previous = extensions.replace(held);
                        drop(extensions);
                        drop(previous);
                        Some(entered_in)
                    }
                    Some(entered_in) => Some(entered_in),
                    None => known,
                }
            }
        };
        if let Some(enclosing) = enclosing
            && let Some(context) = tracing_opentelemetry::get_otel_context(&enclosing, &dispatch)
        {
            let guard = context.attach();
            ACTIVATED.with(|activated| activated.borrow_mut().push((key, id.clone(), guard)));
        }
    }
    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        let key = self.key();
        if !self.is_context(id, &ctx) {
            ENTERED.with(|entered| {
                let mut entered = entered.borrow_mut();
                if let Some(position) = entered.iter().rposition(|e| e.0 == key && e.1 == *id) {
                    entered.remove(position);
                }
            });
            self.inner.on_exit(id, ctx);
            return;
        }
        let guard = ACTIVATED.with(|activated| {
            let mut activated = activated.borrow_mut();
            let position = activated
                .iter()
                .rposition(|(k, entered, _)| *k == key && entered == id)?;
            Some(activated.remove(position).2)
        });
        // Dropped outside the borrow: restoring the previous context runs OpenTelemetry code.
        drop(guard);
    }
    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        if self.is_context(&id, &ctx) {
            // Its `Enclosing` reference goes when the registry drops its extensions.
            self.open_contexts.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        self.inner.on_close(id, ctx);
    }
    fn on_id_change(&self, old: &Id, new: &Id, ctx: Context<'_, S>) {
        self.inner.on_id_change(old, new, ctx);
    }
    unsafe fn downcast_raw(&self, id: std::any::TypeId) -> Option<*const ()> {
        if id == std::any::TypeId::of::<Self>() {
            return Some(self as *const Self as *const ());
        }
        // SAFETY: forwarded to the inner layer, which upholds the same contract.
        unsafe { self.inner.downcast_raw(id) }
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
        let subscriber = tracing_subscriber::registry().with(SpansOnly::new(
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

    /// A subscriber with the span exporter over an in-memory exporter.
    fn exporting() -> (InMemorySpanExporter, SdkTracerProvider, tracing::Dispatch) {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber = tracing_subscriber::registry().with(exported_spans(
            tracing_opentelemetry::layer().with_tracer(provider.tracer("test")),
        ));
        (exporter, provider, tracing::Dispatch::new(subscriber))
    }

    fn finished(
        exporter: &InMemorySpanExporter,
        provider: &SdkTracerProvider,
    ) -> Vec<opentelemetry_sdk::trace::SpanData> {
        let _ = provider.force_flush();
        exporter.get_finished_spans().unwrap()
    }

    #[test]
    fn a_context_holding_the_last_reference_to_its_span_lets_it_and_its_parent_close() {
        let (exporter, provider, dispatch) = exporting();
        tracing::dispatcher::with_default(&dispatch, || {
            let outer = tracing::info_span!("outer");
            let context = crate::context!(request_id = "r-1");
            outer.in_scope(|| {
                let job = tracing::info_span!("job");
                let _job = job.enter();
                let _context = context.enter();
            });
            drop(outer);
            // The context now holds the only reference to `job`, which holds `outer`.
            drop(context);
        });
        let spans = finished(&exporter, &provider);
        let mut names: Vec<&str> = spans.iter().map(|s| s.name.as_ref()).collect();
        names.sort_unstable();
        assert_eq!(names, ["job", "outer"], "both closed and exported");
    }

    #[test]
    fn a_reused_context_belongs_to_the_span_it_is_entered_in() {
        let (exporter, provider, dispatch) = exporting();
        tracing::dispatcher::with_default(&dispatch, || {
            let connection = crate::context!(peer = "10.0.0.7");
            for _ in 0..2 {
                tracing::info_span!("job").in_scope(|| {
                    connection.in_scope(|| tracing::info_span!("step").in_scope(|| {}));
                });
            }
        });
        let spans = finished(&exporter, &provider);
        let jobs: Vec<_> = spans.iter().filter(|s| s.name == "job").collect();
        let steps: Vec<_> = spans.iter().filter(|s| s.name == "step").collect();
        assert_eq!((jobs.len(), steps.len()), (2, 2));
        for step in steps {
            let job = jobs
                .iter()
                .find(|job| job.span_context.span_id() == step.parent_span_id)
                .expect("each step's parent is a job");
            assert_eq!(step.span_context.trace_id(), job.span_context.trace_id());
        }
        assert_ne!(
            jobs[0].span_context.trace_id(),
            jobs[1].span_context.trace_id()
        );
    }

    #[test]
    fn a_nested_context_entered_only_on_another_thread_stays_in_the_trace() {
        let (exporter, provider, dispatch) = exporting();
        tracing::dispatcher::with_default(&dispatch, || {
            let outer_context = crate::context!(request_id = "r-2");
            let request = tracing::info_span!("request");
            let inner_context =
                request.in_scope(|| outer_context.in_scope(|| crate::context!(user_id = 7)));
            let worker_dispatch = dispatch.clone();
            std::thread::spawn(move || {
                tracing::dispatcher::with_default(&worker_dispatch, || {
                    inner_context.in_scope(|| {
                        tracing::info_span!("work").in_scope(|| {});
                        tracing::error!("work failed");
                    });
                    // Closed under the subscriber: the registry releases a closed span's parent through the
                    // thread's default dispatcher.
                    drop(inner_context);
                })
            })
            .join()
            .unwrap();
            drop(request);
        });
        let spans = finished(&exporter, &provider);
        let request = spans.iter().find(|s| s.name == "request").unwrap();
        let work = spans.iter().find(|s| s.name == "work").unwrap();
        assert_eq!(work.parent_span_id, request.span_context.span_id());
        assert!(
            matches!(request.status, Status::Error { .. }),
            "{:?}",
            request.status
        );
    }

    #[test]
    fn a_span_whose_explicit_parent_is_a_context_gets_the_enclosing_span() {
        let (exporter, provider, dispatch) = exporting();
        tracing::dispatcher::with_default(&dispatch, || {
            let request = tracing::info_span!("request");
            let context = request.in_scope(|| crate::context!(request_id = "r-3"));
            tracing::info_span!(parent: &context, "child").in_scope(|| {});
            let orphan_context = crate::context!(request_id = "r-4");
            tracing::info_span!(parent: &orphan_context, "orphan").in_scope(|| {});
            // An ERROR in a context outside any span marks nothing and breaks nothing.
            orphan_context.in_scope(|| tracing::error!("nowhere"));
        });
        let spans = finished(&exporter, &provider);
        let request = spans.iter().find(|s| s.name == "request").unwrap();
        let child = spans.iter().find(|s| s.name == "child").unwrap();
        let orphan = spans.iter().find(|s| s.name == "orphan").unwrap();
        assert_eq!(child.parent_span_id, request.span_context.span_id());
        assert_eq!(
            orphan.parent_span_id,
            opentelemetry::trace::SpanId::INVALID,
            "a root"
        );
        assert_eq!(request.status, Status::Unset);
    }

    #[test]
    fn a_context_under_an_inner_subscriber_ignores_the_outer_subscribers_spans() {
        // A test's `with_default` inside a span of another subscriber: span ids mean nothing across subscribers.
        let (outer_exporter, outer_provider, outer) = exporting();
        let (inner_exporter, inner_provider, inner) = exporting();
        tracing::dispatcher::with_default(&inner, || {
            // Ids the inner registry has handed out and taken back.
            tracing::info_span!("warm_up").in_scope(|| {});
        });
        tracing::dispatcher::with_default(&outer, || {
            tracing::info_span!("outer_span").in_scope(|| {
                tracing::dispatcher::with_default(&inner, || {
                    let context = crate::context!(request_id = "r-5");
                    context.in_scope(|| tracing::info_span!("inner_child").in_scope(|| {}));
                });
            });
        });
        let outer_spans = finished(&outer_exporter, &outer_provider);
        let inner_spans = finished(&inner_exporter, &inner_provider);
        assert!(outer_spans.iter().any(|s| s.name == "outer_span"));
        assert!(inner_spans.iter().any(|s| s.name == "inner_child"));
    }

    #[test]
    fn links_reach_the_exporter_and_an_error_outside_every_span_marks_none() {
        let (exporter, provider, dispatch) = exporting();
        tracing::dispatcher::with_default(&dispatch, || {
            let producer = tracing::info_span!("producer");
            let consumer = tracing::info_span!("consumer");
            consumer.follows_from(&producer);
            consumer.in_scope(|| {
                crate::context!(job = "j-1")
                    .in_scope(|| tracing::error!(parent: None, "not the consumer's"))
            });
        });
        let spans = finished(&exporter, &provider);
        let producer = spans.iter().find(|s| s.name == "producer").unwrap();
        let consumer = spans.iter().find(|s| s.name == "consumer").unwrap();
        let linked: Vec<_> = consumer
            .links
            .iter()
            .map(|link| link.span_context.span_id())
            .collect();
        assert_eq!(linked, [producer.span_context.span_id()]);
        assert_eq!(consumer.status, Status::Unset, "an explicit root event");
    }

    #[test]
    fn a_span_exited_out_of_order_leaves_the_right_one_for_a_context() {
        // Guards dropped out of order (legal in `tracing`): the span still entered decides where a context
        // without an exported ancestor belongs.
        let (exporter, provider, dispatch) = exporting();
        tracing::dispatcher::with_default(&dispatch, || {
            let context = crate::context!(a = 1);
            let first = tracing::info_span!("first");
            let second = tracing::info_span!("second");
            let entered_first = first.enter();
            let entered_second = second.enter();
            drop(entered_first);
            // Only `second` is entered now.
            context.in_scope(|| tracing::info_span!("child").in_scope(|| {}));
            drop(entered_second);
        });
        let spans = finished(&exporter, &provider);
        let second = spans.iter().find(|s| s.name == "second").unwrap();
        let child = spans.iter().find(|s| s.name == "child").unwrap();
        assert_eq!(child.parent_span_id, second.span_context.span_id());
    }
}
