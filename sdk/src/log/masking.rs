//! Masking of event and span fields before any sink formats them: a [`Visit`] wrapper that hands the sink's
//! own visitor masked values, so the JSON, text and OTLP sinks share one masking path and none of them can see
//! an original secret.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};

use crate::mask::{Masked, Masker};

/// Integers this large may be card, account or phone numbers, so their digits go through the detectors.
const SCANNED_INTEGER: u64 = 1_000_000_000;

thread_local! {
    /// Formatting space for `Debug` and error values, so masking them allocates nothing once a thread has
    /// logged.
    static SCRATCH: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Shows a string through `Debug` without quotes, so a sink's `record_debug` writes exactly what the
/// original value's `Debug` wrote, minus the secrets.
pub(crate) struct Verbatim<'a>(pub(crate) &'a str);

impl fmt::Debug for Verbatim<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// Wraps a sink's visitor: values reach it masked (or not at all, for a `drop` rule); without a masker it is a
/// plain pass-through.
pub(crate) struct Masking<'m, V> {
    masker: Option<&'m Masker>,
    inner: V,
}

impl<'m, V: Visit> Masking<'m, V> {
    /// `inner` sees what `masker` leaves; `None` passes everything through unchanged.
    pub(crate) fn new(masker: Option<&'m Masker>, inner: V) -> Self {
        Masking { masker, inner }
    }

    /// Masks the text of a field: the message is free text, any other field an attribute (its key decides).
    fn masked<'a>(masker: &Masker, field: &Field, text: &'a str) -> Masked<'a> {
        if field.name() == "message" {
            Masked::Keep(masker.text(text))
        } else {
            masker.attribute(field.name(), text)
        }
    }

    /// For numbers and booleans: a sensitive key replaces the value whatever its type.
    fn sensitive(&mut self, field: &Field, value: &dyn fmt::Display) -> bool {
        let Some(masker) = self.masker else {
            return false;
        };
        if !masker.is_sensitive_key(field.name()) {
            return false;
        }
        if let Masked::Keep(replacement) = masker.replace_whole(&value.to_string()) {
            self.inner.record_str(field, &replacement);
        }
        true
    }

    fn record_formatted(&mut self, field: &Field, value: &dyn fmt::Display) {
        let Some(masker) = self.masker else { return };
        let mut record = |text: &str| match Self::masked(masker, field, text) {
            Masked::Keep(masked) => self.inner.record_debug(field, &Verbatim(&masked)),
            Masked::Drop => {}
        };
        // A `Debug` impl that logs re-enters here while the scratch is borrowed: it gets a fresh string.
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => {
                scratch.clear();
                let _ = write!(scratch, "{value}");
                record(&scratch);
            }
            Err(_) => record(&value.to_string()),
        });
    }

    fn record_integer(&mut self, field: &Field, magnitude: u64, value: &dyn fmt::Display) -> bool {
        let Some(masker) = self.masker else {
            return false;
        };
        if magnitude < SCANNED_INTEGER {
            return false;
        }
        let text = value.to_string();
        match Self::masked(masker, field, &text) {
            Masked::Keep(Cow::Borrowed(_)) => false,
            Masked::Keep(Cow::Owned(masked)) => {
                self.inner.record_str(field, &masked);
                true
            }
            Masked::Drop => true,
        }
    }
}

/// Formats a `Debug` value through `Display`, for [`Masking::record_formatted`].
struct DebugAsDisplay<'a>(&'a dyn fmt::Debug);

impl fmt::Display for DebugAsDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// An error and its chain of causes, `outer: cause: root`.
struct ErrorChain<'a>(&'a (dyn std::error::Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

impl<V: Visit> Visit for Masking<'_, V> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        if !self.sensitive(field, &value) {
            self.inner.record_f64(field, value);
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if !self.sensitive(field, &value)
            && !self.record_integer(field, value.unsigned_abs(), &value)
        {
            self.inner.record_i64(field, value);
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if !self.sensitive(field, &value) && !self.record_integer(field, value, &value) {
            self.inner.record_u64(field, value);
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if !self.sensitive(field, &value) {
            self.inner.record_bool(field, value);
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match self.masker {
            None => self.inner.record_str(field, value),
            Some(masker) => match Self::masked(masker, field, value) {
                Masked::Keep(masked) => self.inner.record_str(field, &masked),
                Masked::Drop => {}
            },
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        match self.masker {
            None => self.inner.record_error(field, value),
            Some(_) => self.record_formatted(field, &ErrorChain(value)),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match self.masker {
            None => self.inner.record_debug(field, value),
            Some(_) => self.record_formatted(field, &DebugAsDisplay(value)),
        }
    }
}
