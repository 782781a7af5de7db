//! Keeps only the metrics that rules read, before anything is decoded: most metrics a collector receives are
//! read by no rule, and decoding and translating them would cost the metrics pipeline most of its throughput.
//!
//! The request is walked at the wire level ([`vigil_proto::otlp::wire`]); a metric is kept when one of the
//! Prometheus names it can become (`metric_name` for each kind, plus `_bucket`, `_sum`, `_count`) is named by a
//! rule's selector. A selector without a plain metric name (`{__name__=~"…"}`) turns filtering off.
//! [`reference_filter`] is the simple version the property test compares with.

use std::collections::HashSet;

use promql_parser::label::MatchOp;
use promql_parser::parser::Expr;
use vigil_proto::otlp::wire::{Reader, WireError};

use crate::prometheus::naming::{Kind, metric_name};

/// The metric names rules read.
#[derive(Clone, Debug)]
pub struct Wanted {
    names: HashSet<String>,
    /// Some selector has no plain name: keep everything.
    all: bool,
    namespace: String,
    suffixes: bool,
}

fn collect(expr: &Expr, names: &mut HashSet<String>, all: &mut bool) {
    let mut selector = |vs: &promql_parser::parser::VectorSelector| match &vs.name {
        Some(name) => {
            names.insert(name.clone());
        }
        None => {
            let named = vs
                .matchers
                .matchers
                .iter()
                .find(|m| m.name == "__name__" && matches!(m.op, MatchOp::Equal));
            match named {
                Some(m) => {
                    names.insert(m.value.clone());
                }
                None => *all = true,
            }
        }
    };
    match expr {
        Expr::Aggregate(a) => {
            collect(&a.expr, names, all);
            if let Some(p) = &a.param {
                collect(p, names, all);
            }
        }
        Expr::Unary(u) => collect(&u.expr, names, all),
        Expr::Binary(b) => {
            collect(&b.lhs, names, all);
            collect(&b.rhs, names, all);
        }
        Expr::Paren(p) => collect(&p.expr, names, all),
        Expr::VectorSelector(vs) => selector(vs),
        Expr::MatrixSelector(ms) => selector(&ms.vs),
        Expr::Call(c) => c.args.args.iter().for_each(|a| collect(a, names, all)),
        _ => {}
    }
}

impl Wanted {
    /// The names `exprs` read, for metrics named with `namespace` and (with `suffixes`) unit and type suffixes.
    pub fn new<'a>(
        exprs: impl IntoIterator<Item = &'a Expr>,
        namespace: &str,
        suffixes: bool,
    ) -> Self {
        let mut names = HashSet::new();
        let mut all = false;
        for expr in exprs {
            collect(expr, &mut names, &mut all);
        }
        Wanted {
            names,
            all,
            namespace: namespace.to_string(),
            suffixes,
        }
    }

    /// Whether every metric is kept.
    pub fn keeps_all(&self) -> bool {
        self.all
    }

    /// Whether a metric named `name` in `unit` may become a series a rule reads.
    pub fn wants(&self, name: &str, unit: &str) -> bool {
        if self.all {
            return true;
        }
        [Kind::Gauge, Kind::Counter, Kind::Histogram, Kind::Summary]
            .iter()
            .any(|&kind| {
                let base = metric_name(&self.namespace, name, unit, kind, self.suffixes);
                self.names.contains(&base)
                    || ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|s| self.names.contains(&format!("{base}{s}")))
            })
    }

    /// `request` (an encoded `ExportMetricsServiceRequest`) with only the wanted metrics, or `None` when it has
    /// none. Resources and scopes without a wanted metric are left out.
    pub fn filter(&self, request: &[u8]) -> Result<Option<Vec<u8>>, WireError> {
        if self.all {
            return Ok(Some(request.to_vec()));
        }
        let mut out = Vec::new();
        let mut reader = Reader::new(request);
        while !reader.done() {
            let (field, wire) = reader.key()?;
            if field != 1 || wire != 2 {
                reader.skip(field, wire, 64)?;
                continue;
            }
            let resource_metrics = reader.len_delimited()?;
            if let Some(kept) = self.filter_resource(resource_metrics)? {
                put_field(&mut out, 1, &kept);
            }
        }
        Ok((!out.is_empty()).then_some(out))
    }

    /// A `ResourceMetrics` with its wanted metrics (other fields as they were), or `None`.
    fn filter_resource(&self, message: &[u8]) -> Result<Option<Vec<u8>>, WireError> {
        let mut out = Vec::new();
        let mut kept_any = false;
        let mut reader = Reader::new(message);
        while !reader.done() {
            let start = reader.pos();
            let (field, wire) = reader.key()?;
            if field == 2 && wire == 2 {
                let scope_metrics = reader.len_delimited()?;
                if let Some(kept) = self.filter_scope(scope_metrics)? {
                    put_field(&mut out, 2, &kept);
                    kept_any = true;
                }
            } else {
                reader.skip(field, wire, 64)?;
                out.extend_from_slice(&message[start..reader.pos()]);
            }
        }
        Ok(kept_any.then_some(out))
    }

    /// A `ScopeMetrics` with its wanted metrics, or `None`.
    fn filter_scope(&self, message: &[u8]) -> Result<Option<Vec<u8>>, WireError> {
        let mut out = Vec::new();
        let mut kept_any = false;
        let mut reader = Reader::new(message);
        while !reader.done() {
            let start = reader.pos();
            let (field, wire) = reader.key()?;
            if field == 2 && wire == 2 {
                let metric = reader.len_delimited()?;
                let (name, unit) = name_and_unit(metric)?;
                if self.wants(name, unit) {
                    out.extend_from_slice(&message[start..reader.pos()]);
                    kept_any = true;
                }
            } else {
                reader.skip(field, wire, 64)?;
                out.extend_from_slice(&message[start..reader.pos()]);
            }
        }
        Ok(kept_any.then_some(out))
    }
}

/// A `Metric`'s name (field 1) and unit (field 3); invalid UTF-8 reads as empty (the decoder refuses it later).
fn name_and_unit(metric: &[u8]) -> Result<(&str, &str), WireError> {
    let (mut name, mut unit) = ("", "");
    let mut reader = Reader::new(metric);
    while !reader.done() {
        let (field, wire) = reader.key()?;
        match (field, wire) {
            (1, 2) => name = std::str::from_utf8(reader.len_delimited()?).unwrap_or(""),
            (3, 2) => unit = std::str::from_utf8(reader.len_delimited()?).unwrap_or(""),
            _ => reader.skip(field, wire, 64)?,
        }
    }
    Ok((name, unit))
}

fn put_field(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    let mut value = u64::from(field << 3 | 2);
    let mut length = bytes.len() as u64;
    for v in [&mut value, &mut length] {
        while *v >= 0x80 {
            out.push((*v as u8) | 0x80);
            *v >>= 7;
        }
        out.push(*v as u8);
    }
    out.extend_from_slice(bytes);
}

/// The same filtering on decoded messages: the reference the property test compares [`Wanted::filter`] with.
pub fn reference_filter(
    wanted: &Wanted,
    request: &vigil_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest,
) -> Option<vigil_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest> {
    let mut request = request.clone();
    for resource in &mut request.resource_metrics {
        for scope in &mut resource.scope_metrics {
            scope.metrics.retain(|m| wanted.wants(&m.name, &m.unit));
        }
        resource.scope_metrics.retain(|s| !s.metrics.is_empty());
    }
    request
        .resource_metrics
        .retain(|r| !r.scope_metrics.is_empty());
    (!request.resource_metrics.is_empty()).then_some(request)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use prost::Message;
    use vigil_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
    use vigil_proto::otlp::common::v1::InstrumentationScope;
    use vigil_proto::otlp::metrics::v1::{
        Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, metric,
    };
    use vigil_proto::otlp::resource::v1::Resource;

    use super::*;
    use crate::alert::promql;

    fn wanted(queries: &[&str]) -> Wanted {
        let exprs: Vec<Expr> = queries.iter().map(|q| promql::parse(q).unwrap()).collect();
        Wanted::new(exprs.iter(), "", true)
    }

    #[test]
    fn names_become_their_prometheus_forms() {
        let w = wanted(&[
            "rate(http_server_request_duration_seconds_bucket[5m]) > 1",
            "training_epochs_total > 3",
            "disk_free_pct < 10",
        ]);
        assert!(w.wants("http.server.request.duration", "s"));
        assert!(w.wants("training.epochs", ""));
        assert!(w.wants("disk_free_pct", ""));
        assert!(!w.wants("process.memory.usage", "By"));
        assert!(!w.keeps_all());
        assert!(wanted(&["{__name__=~\"a.*\"} > 1"]).keeps_all());
        assert!(!wanted(&["{__name__=\"up\"} == 0"]).keeps_all());
    }

    fn metric(name: &str, unit: &str, sum: bool) -> Metric {
        let points = vec![NumberDataPoint::default()];
        Metric {
            name: name.into(),
            unit: unit.into(),
            data: Some(if sum {
                metric::Data::Sum(Sum {
                    data_points: points,
                    is_monotonic: true,
                    ..Sum::default()
                })
            } else {
                metric::Data::Gauge(Gauge {
                    data_points: points,
                })
            }),
            ..Metric::default()
        }
    }

    proptest! {
        /// The wire-level filter gives exactly the reference's message, for any mix of wanted and other metrics
        /// in any resources and scopes.
        #[test]
        fn the_wire_filter_agrees_with_the_reference(
            layout in prop::collection::vec(
                prop::collection::vec(prop::collection::vec((0usize..6, any::<bool>()), 0..5), 0..4),
                0..4,
            )
        ) {
            let names = ["disk_free_pct", "error_rate", "other", "training.epochs", "cpu", "gpu_usage"];
            let request = ExportMetricsServiceRequest {
                resource_metrics: layout.iter().enumerate().map(|(r, scopes)| ResourceMetrics {
                    resource: Some(Resource::default()),
                    scope_metrics: scopes.iter().enumerate().map(|(s, metrics)| ScopeMetrics {
                        scope: Some(InstrumentationScope { name: format!("s{s}"), ..Default::default() }),
                        metrics: metrics.iter().map(|&(n, sum)| metric(names[n], "", sum)).collect(),
                        schema_url: format!("u{r}"),
                    }).collect(),
                    schema_url: String::new(),
                }).collect(),
            };
            let w = wanted(&["disk_free_pct < 10", "rate(training_epochs_total[5m]) > 1", "gpu_usage < 0.3"]);
            let bytes = request.encode_to_vec();
            let filtered = w.filter(&bytes).unwrap().map(|b| ExportMetricsServiceRequest::decode(b.as_slice()).unwrap());
            prop_assert_eq!(filtered, reference_filter(&w, &request));
        }
    }
}
