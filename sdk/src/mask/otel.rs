//! Masking of OpenTelemetry data in the SDK: span names, status messages, attributes (arrays included), events
//! (exception messages and stack traces are event attributes), links and the resource. Spans are masked by an
//! exporter wrapper, so spans made through the `tracing` bridge and through the OpenTelemetry API directly are
//! both covered before anything leaves the process.

use std::borrow::Cow;
use std::future::Future;
use std::time::Duration;

use opentelemetry::{Array, KeyValue, StringValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

use super::{Masked, Masker};

/// Integers this large may be card, account or phone numbers, so their digits go through the detectors.
const SCANNED_INTEGER: u64 = 1_000_000_000;

impl Masker {
    /// Masks attributes in place: values are replaced, attributes a `drop` rule hits are removed.
    pub fn key_values(&self, attributes: &mut Vec<KeyValue>) {
        attributes.retain_mut(|attribute| {
            match self.value(attribute.key.as_str(), &attribute.value) {
                Change::None => true,
                Change::Replace(value) => {
                    attribute.value = value;
                    true
                }
                Change::Drop => false,
            }
        });
    }

    /// What masking does to one attribute value.
    fn value(&self, key: &str, value: &Value) -> Change {
        if self.is_allowed(key) {
            return Change::None;
        }
        if self.is_sensitive_key(key) {
            return match self.replace_whole(&value.as_str()) {
                Masked::Keep(text) => Change::Replace(Value::String(text.into_owned().into())),
                Masked::Drop => Change::Drop,
            };
        }
        let text = |text: &str| match self.content(text) {
            Masked::Keep(Cow::Borrowed(_)) => Change::None,
            Masked::Keep(Cow::Owned(text)) => Change::Replace(Value::String(text.into())),
            Masked::Drop => Change::Drop,
        };
        match value {
            Value::String(value) => text(value.as_str()),
            Value::I64(number) if number.unsigned_abs() >= SCANNED_INTEGER => {
                text(&number.to_string())
            }
            Value::Array(Array::String(items)) => {
                let mut masked: Option<Vec<StringValue>> = None;
                for (index, item) in items.iter().enumerate() {
                    match self.content(item.as_str()) {
                        Masked::Keep(Cow::Borrowed(_)) => {}
                        Masked::Keep(Cow::Owned(text)) => {
                            masked.get_or_insert_with(|| items.clone())[index] = text.into();
                        }
                        Masked::Drop => return Change::Drop,
                    }
                }
                masked.map_or(Change::None, |items| {
                    Change::Replace(Value::Array(Array::String(items)))
                })
            }
            _ => Change::None,
        }
    }

    /// Masks a span before export: name, status message, attributes, events and links.
    pub fn span(&self, span: &mut SpanData) {
        if let Cow::Owned(name) = self.text(&span.name) {
            span.name = Cow::Owned(name);
        }
        if let opentelemetry::trace::Status::Error { description } = &mut span.status
            && let Cow::Owned(text) = self.text(description)
        {
            *description = Cow::Owned(text);
        }
        self.key_values(&mut span.attributes);
        for event in &mut span.events.events {
            if let Cow::Owned(name) = self.text(&event.name) {
                event.name = Cow::Owned(name);
            }
            self.key_values(&mut event.attributes);
        }
        for link in &mut span.links.links {
            self.key_values(&mut link.attributes);
        }
    }

    /// A copy of `resource` with its attributes masked (the schema URL kept).
    pub fn resource(&self, resource: &Resource) -> Resource {
        let mut attributes: Vec<KeyValue> = resource
            .iter()
            .map(|(key, value)| KeyValue::new(key.clone(), value.clone()))
            .collect();
        self.key_values(&mut attributes);
        let builder = Resource::builder_empty();
        match resource.schema_url() {
            Some(url) => builder.with_schema_url(attributes, url.to_string()),
            None => builder.with_attributes(attributes),
        }
        .build()
    }
}

/// What masking does to an attribute.
enum Change {
    None,
    Replace(Value),
    Drop,
}

/// A span exporter that masks every span (and the resource) before handing it to `inner`.
#[derive(Debug)]
pub struct MaskingSpanExporter<E> {
    inner: E,
    masker: Masker,
}

impl<E> MaskingSpanExporter<E> {
    /// Masks with `masker`, then exports through `inner`.
    pub fn new(inner: E, masker: Masker) -> Self {
        MaskingSpanExporter { inner, masker }
    }
}

impl<E: SpanExporter> SpanExporter for MaskingSpanExporter<E> {
    fn export(&self, mut batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        for span in &mut batch {
            self.masker.span(span);
        }
        self.inner.export(batch)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(&self.masker.resource(resource));
    }
}
