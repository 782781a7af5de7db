//! The Prometheus data model the collector shares between components: OTel → Prometheus names
//! ([`naming`]), series built from OTLP metrics ([`store`]), and the text formats ([`render`]). Used by the
//! `prometheus` and `prometheusremotewrite` exporters and by the `alerting` connector, so every one of them names
//! a series the same way.

pub mod naming;
pub mod options;
pub mod render;
pub mod store;
