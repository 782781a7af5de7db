//! Which metrics rules read: most metrics a collector receives are read by no rule, and decoding and
//! translating them would cost the metrics pipeline most of its throughput, so the connector's ingestion
//! ([`super::numbers`]) keeps only these, looking at each metric's name and unit before anything is decoded.
//!
//! A metric is kept when one of the Prometheus names it can become (`metric_name` for each kind, plus `_bucket`,
//! `_sum`, `_count`) is named by a rule's selector. A selector without a plain metric name (`{__name__=~"…"}`)
//! keeps every metric.

use std::collections::HashSet;

use promql_parser::label::MatchOp;
use promql_parser::parser::Expr;

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
}

#[cfg(test)]
mod tests {
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
}
