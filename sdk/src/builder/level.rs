//! The level filter (`RUST_LOG` and its fallbacks) as the cheapest layer that means the same thing.
//!
//! `EnvFilter` takes a read lock and looks the span up in a map on every span's creation, entry, exit and
//! close, to track the spans its dynamic directives (`target[span{field=value}]=level`) might match. A filter
//! made only of targets and levels never needs that, and such a filter is what nearly everyone writes
//! (`info`, `my_app=debug,hyper=warn`). For those, `Targets` holds the same directives with the same
//! most-specific-target-wins rule and no per-span work; `EnvFilter` is kept for filters that name a span or a
//! field. Either way the text is first checked by `EnvFilter`, so errors read the same.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::Targets;

use crate::Error;

/// The level filter: exactly one of the two is `Some`. Two options rather than an enum, because
/// `tracing_subscriber` already knows how to stack an absent `Option` layer without changing the
/// subscriber's level hint.
pub(crate) struct LevelFilter {
    /// The filter of targets and levels (the common case).
    pub(crate) targets: Option<Targets>,
    /// The filter with span or field directives.
    pub(crate) dynamic: Option<EnvFilter>,
}

impl LevelFilter {
    /// Parses `text` with `RUST_LOG`'s syntax.
    pub(crate) fn parse(text: &str) -> Result<Self, Error> {
        let env_filter = EnvFilter::try_new(text).map_err(|e| Error::Filter {
            filter: text.to_string(),
            reason: e.to_string(),
        })?;
        // Span and field directives are the only ones written with brackets; every other directive is a
        // target, a level, or both, which `Targets` reads the same way.
        if !text.contains('[')
            && let Ok(targets) = text.parse::<Targets>()
        {
            return Ok(LevelFilter {
                targets: Some(targets),
                dynamic: None,
            });
        }
        Ok(LevelFilter {
            targets: None,
            dynamic: Some(env_filter),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tracing::Level;
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;

    use super::LevelFilter;

    /// Counts the events that reach it.
    struct Count(Arc<AtomicUsize>);

    impl<S: tracing::Subscriber> Layer<S> for Count {
        fn on_event(&self, _: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One event per target and level (targets must be constants in `tracing`'s macros), each tagged with its
    /// index so a disagreement names the event.
    fn emit_all(seen: &dyn Fn() -> usize, out: &mut Vec<(String, Level, bool)>) {
        macro_rules! each_level {
            ($target:literal) => {
                for level in [
                    Level::TRACE,
                    Level::DEBUG,
                    Level::INFO,
                    Level::WARN,
                    Level::ERROR,
                ] {
                    let before = seen();
                    match level {
                        Level::TRACE => tracing::trace!(target: $target, "e"),
                        Level::DEBUG => tracing::debug!(target: $target, "e"),
                        Level::INFO => tracing::info!(target: $target, "e"),
                        Level::WARN => tracing::warn!(target: $target, "e"),
                        _ => tracing::error!(target: $target, "e"),
                    }
                    out.push(($target.to_string(), level, seen() > before));
                }
            };
        }
        each_level!("app");
        each_level!("app::db");
        each_level!("app::db::pool");
        each_level!("application");
        each_level!("hyper");
        each_level!("hyper::proto::h1");
        each_level!("vigil");
    }

    /// What a subscriber with `layer` as its level filter lets through.
    fn enabled_by<L>(layer: L) -> Vec<(String, Level, bool)>
    where
        L: Layer<tracing_subscriber::Registry> + Send + Sync + 'static,
    {
        let count = Arc::new(AtomicUsize::new(0));
        let subscriber = tracing_subscriber::registry()
            .with(layer)
            .with(Count(count.clone()));
        let mut out = Vec::new();
        tracing::subscriber::with_default(subscriber, || {
            emit_all(&|| count.load(Ordering::Relaxed), &mut out)
        });
        out
    }

    #[test]
    fn targets_and_levels_filter_exactly_as_env_filter_does() {
        let texts = [
            "info",
            "INFO",
            "warn",
            "off",
            "trace",
            "app=debug",
            "app=debug,warn",
            "app=trace,app::db=warn,info",
            "app::db=off,app=info",
            "app::db::pool=trace,app::db=error,debug",
            "app",
            "hyper=warn,app=debug,error",
            "vigil=debug,hyper::proto=trace",
            "application=info,app=warn",
            "error,app=trace",
        ];
        for text in texts {
            let filter = LevelFilter::parse(text).expect("valid filter");
            assert!(
                filter.targets.is_some() && filter.dynamic.is_none(),
                "`{text}` is made of targets and levels only"
            );
            let targets = enabled_by(filter.targets);
            let env = enabled_by(tracing_subscriber::EnvFilter::new(text));
            assert_eq!(targets, env, "filter `{text}`");
            assert!(
                targets.iter().any(|e| e.2) || text == "off",
                "`{text}` lets something through"
            );
        }
    }

    #[test]
    fn span_and_field_directives_keep_env_filter() {
        for text in ["app[request]=debug", "info,app[request{id=7}]=trace"] {
            let filter = LevelFilter::parse(text).expect("valid filter");
            assert!(
                filter.targets.is_none() && filter.dynamic.is_some(),
                "{text}"
            );
        }
    }

    #[test]
    fn a_bad_filter_is_the_same_error_as_before() {
        let Err(crate::Error::Filter { filter, reason }) = LevelFilter::parse("app=loud") else {
            panic!("`app=loud` is not a level");
        };
        assert_eq!(filter, "app=loud");
        assert!(reason.contains("expected one of \"off\""), "{reason}");
    }
}
