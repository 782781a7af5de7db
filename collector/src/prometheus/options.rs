//! The options both Prometheus exporters (`prometheus`, `prometheusremotewrite`) share, and how they become
//! [`StoreSettings`].

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::store::{PromotedResource, StoreSettings};
use crate::component::Checker;

/// `resource_to_telemetry_conversion`, as in otelcol.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ResourceConversion {
    /// Copy every resource attribute onto every series.
    pub enabled: bool,
}

/// Store settings from the options both Prometheus exporters share.
#[allow(clippy::too_many_arguments)]
pub fn store_settings(
    namespace: &str,
    const_labels: &BTreeMap<String, String>,
    suffixes: bool,
    all_resource_attributes: bool,
    promote: &[String],
    metric_expiration: Duration,
    max_series: usize,
    scope_labels: bool,
    target_info: bool,
) -> StoreSettings {
    StoreSettings {
        namespace: namespace.to_string(),
        suffixes,
        promoted_resource: if all_resource_attributes {
            PromotedResource::All
        } else if promote.is_empty() {
            PromotedResource::None
        } else {
            PromotedResource::Keys(promote.to_vec())
        },
        target_info,
        scope_labels,
        const_labels: const_labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        metric_expiration,
        max_series,
    }
}

/// Constant and external labels must already be valid Prometheus label names.
pub fn validate_const_labels(
    labels: &BTreeMap<String, String>,
    check: &mut Checker<'_>,
    path: &str,
) {
    for name in labels.keys() {
        let valid = !name.is_empty()
            && !name.as_bytes()[0].is_ascii_digit()
            && !name.starts_with("__")
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            check.error(
                &format!("{path}.const_labels.{name}"),
                format!("`{name}` is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, no `__` prefix)"),
            );
        }
    }
}
