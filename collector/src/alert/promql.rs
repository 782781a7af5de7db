//! PromQL over the connector's recent samples: what alerting and recording rules need, with Prometheus'
//! semantics (5-minute lookback for instant selectors, extrapolated `rate`, vector matching rules).
//!
//! Parsing is `promql-parser`'s (GreptimeTeam). [`check`] walks a parsed expression at load time and refuses
//! whatever this evaluator does not implement, naming the construct, so a rule is never silently false.
//!
//! Supported: instant and range selectors with matchers and `offset`; numbers; unary minus; arithmetic,
//! comparison (with `bool`) and set operators with `on`/`ignoring` and `group_left`/`group_right`;
//! `sum`, `avg`, `min`, `max`, `count`, `group`, `stddev`, `stdvar`, `topk`, `bottomk`, `quantile` with
//! `by`/`without`; and the functions in [`FUNCTIONS`].

use std::collections::{BTreeMap, HashMap};

use promql_parser::label::{MatchOp, Matchers};
use promql_parser::parser::{
    self, AggregateExpr, BinaryExpr, Call, Expr, LabelModifier, Offset, VectorMatchCardinality,
    VectorSelector,
};

use super::tsdb::{Labels, NAME, Tsdb, is_stale, label};

/// How far back an instant selector looks for a sample (Prometheus' default `lookback_delta`).
pub const LOOKBACK_MS: i64 = 5 * 60 * 1000;

/// Functions the evaluator implements.
pub const FUNCTIONS: &[&str] = &[
    "rate",
    "irate",
    "increase",
    "delta",
    "idelta",
    "avg_over_time",
    "min_over_time",
    "max_over_time",
    "sum_over_time",
    "count_over_time",
    "last_over_time",
    "present_over_time",
    "absent",
    "absent_over_time",
    "histogram_quantile",
    "abs",
    "ceil",
    "floor",
    "round",
    "exp",
    "ln",
    "log2",
    "log10",
    "sqrt",
    "clamp",
    "clamp_min",
    "clamp_max",
    "time",
    "vector",
    "scalar",
    "timestamp",
];

const AGGREGATIONS: &[&str] = &[
    "sum", "avg", "min", "max", "count", "group", "stddev", "stdvar", "topk", "bottomk", "quantile",
];

/// A query that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueryError {
    /// Not PromQL.
    #[error("{0}")]
    Parse(String),
    /// PromQL this evaluator does not implement.
    #[error("{0} is not supported by Vigil's rule evaluator")]
    Unsupported(String),
}

/// A query that failed while evaluating (Prometheus fails the same way).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EvalError {
    /// Two series on the "one" side of a match share a signature.
    #[error("found duplicate series for the match group {0} on the {1} side of the operation")]
    DuplicateMatch(String, &'static str),
    /// A result would hold two series with the same labels.
    #[error("vector cannot contain metrics with the same labelset {0}")]
    DuplicateLabels(String),
}

/// Parses `text` and checks that every construct is supported.
pub fn parse(text: &str) -> Result<Expr, QueryError> {
    let expr = parser::parse(text).map_err(QueryError::Parse)?;
    check(&expr)?;
    Ok(expr)
}

/// Refuses constructs the evaluator does not implement.
pub fn check(expr: &Expr) -> Result<(), QueryError> {
    match expr {
        Expr::Aggregate(a) => {
            let op = a.op.to_string();
            if !AGGREGATIONS.contains(&op.as_str()) {
                return Err(QueryError::Unsupported(format!("the aggregation `{op}`")));
            }
            if let Some(param) = &a.param {
                check(param)?;
            }
            check(&a.expr)
        }
        Expr::Unary(u) => check(&u.expr),
        Expr::Binary(b) => {
            if b.modifier
                .as_ref()
                .is_some_and(|m| m.fill_values.lhs.is_some() || m.fill_values.rhs.is_some())
            {
                return Err(QueryError::Unsupported("`fill` modifiers".into()));
            }
            check(&b.lhs)?;
            check(&b.rhs)
        }
        Expr::Paren(p) => check(&p.expr),
        Expr::Subquery(_) => Err(QueryError::Unsupported("a subquery".into())),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) => Ok(()),
        Expr::VectorSelector(vs) => selector_check(vs),
        Expr::MatrixSelector(ms) => selector_check(&ms.vs),
        Expr::Call(call) => {
            if !FUNCTIONS.contains(&call.func.name) {
                return Err(QueryError::Unsupported(format!(
                    "the function `{}`",
                    call.func.name
                )));
            }
            call.args.args.iter().try_for_each(|a| check(a))
        }
        Expr::Extension(_) => Err(QueryError::Unsupported("an extension expression".into())),
    }
}

fn selector_check(vs: &VectorSelector) -> Result<(), QueryError> {
    if vs.at.is_some() {
        return Err(QueryError::Unsupported("the `@` modifier".into()));
    }
    Ok(())
}

/// The longest time before the evaluation time that `expr` reads (ranges, offsets and the lookback), in ms.
pub fn reach_ms(expr: &Expr) -> i64 {
    fn offset_ms(offset: &Option<Offset>) -> i64 {
        match offset {
            Some(Offset::Pos(d)) => d.as_millis() as i64,
            _ => 0,
        }
    }
    match expr {
        Expr::Aggregate(a) => reach_ms(&a.expr).max(a.param.as_deref().map_or(0, reach_ms)),
        Expr::Unary(u) => reach_ms(&u.expr),
        Expr::Binary(b) => reach_ms(&b.lhs).max(reach_ms(&b.rhs)),
        Expr::Paren(p) => reach_ms(&p.expr),
        Expr::VectorSelector(vs) => LOOKBACK_MS + offset_ms(&vs.offset),
        Expr::MatrixSelector(ms) => ms.range.as_millis() as i64 + offset_ms(&ms.vs.offset),
        Expr::Call(call) => call
            .args
            .args
            .iter()
            .map(|a| reach_ms(a))
            .max()
            .unwrap_or(0),
        _ => 0,
    }
}

/// How many stored series the selectors of `expr` match (with their offsets ignored), to tell a rule that
/// reads nothing from one whose condition is false.
pub fn selected_series(expr: &Expr, db: &Tsdb) -> usize {
    fn walk<'a>(expr: &'a Expr, out: &mut Vec<&'a VectorSelector>) {
        match expr {
            Expr::Aggregate(a) => {
                walk(&a.expr, out);
                if let Some(p) = &a.param {
                    walk(p, out);
                }
            }
            Expr::Unary(u) => walk(&u.expr, out),
            Expr::Binary(b) => {
                walk(&b.lhs, out);
                walk(&b.rhs, out);
            }
            Expr::Paren(p) => walk(&p.expr, out),
            Expr::VectorSelector(vs) => out.push(vs),
            Expr::MatrixSelector(ms) => out.push(&ms.vs),
            Expr::Call(c) => c.args.args.iter().for_each(|a| walk(a, out)),
            _ => {}
        }
    }
    let mut selectors = Vec::new();
    walk(expr, &mut selectors);
    selectors.iter().map(|vs| select(db, vs).count()).sum()
}

/// One element of an instant vector.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Labels, sorted (with `__name__` while the value is still the metric's own).
    pub labels: Labels,
    /// Value.
    pub value: f64,
}

/// A range vector element.
#[derive(Clone, Debug)]
struct RangeSeries {
    labels: Labels,
    points: Vec<(i64, f64)>,
}

#[derive(Clone, Debug)]
enum Value {
    Scalar(f64),
    Vector(Vec<Sample>),
    Matrix(Vec<RangeSeries>, i64),
    Text,
}

/// Evaluates `expr` at `t_ms` as an instant vector (a scalar becomes one sample without labels).
pub fn instant(expr: &Expr, db: &Tsdb, t_ms: i64) -> Result<Vec<Sample>, EvalError> {
    match eval(expr, db, t_ms)? {
        Value::Scalar(value) => Ok(vec![Sample {
            labels: Vec::new(),
            value,
        }]),
        Value::Vector(samples) => Ok(samples),
        Value::Matrix(..) | Value::Text => Ok(Vec::new()),
    }
}

fn matches(matchers: &Matchers, labels: &Labels) -> bool {
    let all = |list: &[promql_parser::label::Matcher]| {
        list.iter()
            .all(|m| m.is_match(label(labels, &m.name).unwrap_or("")))
    };
    if matchers.or_matchers.is_empty() {
        all(&matchers.matchers)
    } else {
        matchers.or_matchers.iter().any(|group| all(group))
    }
}

fn shifted(t_ms: i64, offset: &Option<Offset>) -> i64 {
    match offset {
        Some(Offset::Pos(d)) => t_ms - d.as_millis() as i64,
        Some(Offset::Neg(d)) => t_ms + d.as_millis() as i64,
        None => t_ms,
    }
}

fn select<'a>(
    db: &'a Tsdb,
    vs: &'a VectorSelector,
) -> impl Iterator<Item = super::tsdb::SeriesRef<'a>> + 'a {
    db.select(vs.name.as_deref())
        .filter(move |(labels, _)| matches(&vs.matchers, labels))
}

fn without_name(mut labels: Labels) -> Labels {
    labels.retain(|(k, _)| k != NAME);
    labels
}

fn labels_text(labels: &Labels) -> String {
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", inner.join(", "))
}

fn eval(expr: &Expr, db: &Tsdb, t: i64) -> Result<Value, EvalError> {
    Ok(match expr {
        Expr::NumberLiteral(n) => Value::Scalar(n.val),
        Expr::StringLiteral(_) => Value::Text,
        Expr::Paren(p) => eval(&p.expr, db, t)?,
        Expr::Unary(u) => match eval(&u.expr, db, t)? {
            Value::Scalar(v) => Value::Scalar(-v),
            Value::Vector(samples) => Value::Vector(
                samples
                    .into_iter()
                    .map(|s| Sample {
                        labels: without_name(s.labels),
                        value: -s.value,
                    })
                    .collect(),
            ),
            other => other,
        },
        Expr::VectorSelector(vs) => {
            let at = shifted(t, &vs.offset);
            Value::Vector(
                select(db, vs)
                    .filter_map(|(labels, samples)| {
                        let (ts, value) = *samples.iter().rev().find(|(ts, _)| *ts <= at)?;
                        (ts > at - LOOKBACK_MS && !is_stale(value)).then(|| Sample {
                            labels: labels.clone(),
                            value,
                        })
                    })
                    .collect(),
            )
        }
        Expr::MatrixSelector(ms) => {
            let end = shifted(t, &ms.vs.offset);
            let range = ms.range.as_millis() as i64;
            Value::Matrix(
                select(db, &ms.vs)
                    .filter_map(|(labels, samples)| {
                        let points: Vec<(i64, f64)> = samples
                            .iter()
                            .copied()
                            .filter(|(ts, v)| *ts > end - range && *ts <= end && !is_stale(*v))
                            .collect();
                        (!points.is_empty()).then(|| RangeSeries {
                            labels: labels.clone(),
                            points,
                        })
                    })
                    .collect(),
                range,
            )
        }
        Expr::Call(call) => call_function(call, db, t)?,
        Expr::Aggregate(a) => aggregate(a, db, t)?,
        Expr::Binary(b) => binary(b, db, t)?,
        Expr::Subquery(_) | Expr::Extension(_) => Value::Vector(Vec::new()),
    })
}

fn vector_of(value: Value) -> Vec<Sample> {
    match value {
        Value::Vector(samples) => samples,
        _ => Vec::new(),
    }
}

fn scalar_of(value: &Value) -> f64 {
    match value {
        Value::Scalar(v) => *v,
        _ => f64::NAN,
    }
}

/// Prometheus' `extrapolatedRate` (promql/functions.go): the increase over the samples in the range,
/// corrected for counter resets and extrapolated to the range edges when the samples come close enough.
fn extrapolated_rate(
    points: &[(i64, f64)],
    range_ms: i64,
    t: i64,
    counter: bool,
    rate: bool,
) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let (first_t, first_v) = points[0];
    let (last_t, last_v) = points[points.len() - 1];
    let mut result = last_v - first_v;
    if counter {
        for pair in points.windows(2) {
            if pair[1].1 < pair[0].1 {
                result += pair[0].1;
            }
        }
    }
    let range_start = t - range_ms;
    let mut to_start = (first_t - range_start) as f64 / 1000.0;
    let to_end = (t - last_t) as f64 / 1000.0;
    let sampled = (last_t - first_t) as f64 / 1000.0;
    let average = sampled / (points.len() - 1) as f64;
    if counter && result > 0.0 && first_v >= 0.0 {
        let to_zero = sampled * (first_v / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    let threshold = average * 1.1;
    let mut interval = sampled;
    interval += if to_start < threshold {
        to_start
    } else {
        average / 2.0
    };
    interval += if to_end < threshold {
        to_end
    } else {
        average / 2.0
    };
    result *= interval / sampled;
    if rate {
        result /= range_ms as f64 / 1000.0;
    }
    Some(result)
}

fn instant_rate(points: &[(i64, f64)], counter: bool, rate: bool) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let (prev_t, prev_v) = points[points.len() - 2];
    let (last_t, last_v) = points[points.len() - 1];
    let mut result = if counter && last_v < prev_v {
        last_v
    } else {
        last_v - prev_v
    };
    if rate {
        let seconds = (last_t - prev_t) as f64 / 1000.0;
        if seconds == 0.0 {
            return None;
        }
        result /= seconds;
    }
    Some(result)
}

/// The labels `absent` gives its one sample: the selector's equality matchers.
fn absent_labels(arg: &Expr) -> Labels {
    let vs = match arg {
        Expr::VectorSelector(vs) => vs,
        Expr::MatrixSelector(ms) => &ms.vs,
        _ => return Vec::new(),
    };
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    let mut repeated = Vec::new();
    for m in &vs.matchers.matchers {
        if m.name == NAME || !matches!(m.op, MatchOp::Equal) {
            continue;
        }
        if labels.insert(m.name.clone(), m.value.clone()).is_some() {
            repeated.push(m.name.clone());
        }
    }
    for name in repeated {
        labels.remove(&name);
    }
    labels.into_iter().collect()
}

/// Prometheus' `bucketQuantile` for classic buckets `(upper bound, cumulative count)`.
fn bucket_quantile(q: f64, mut buckets: Vec<(f64, f64)>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    if buckets.len() < 2 || buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
        return f64::NAN;
    }
    // Counts must not decrease (they can, with scrapes racing updates); Prometheus makes them monotonic.
    for i in 1..buckets.len() {
        if buckets[i].1 < buckets[i - 1].1 {
            buckets[i].1 = buckets[i - 1].1;
        }
    }
    let observations = buckets[buckets.len() - 1].1;
    if observations == 0.0 {
        return f64::NAN;
    }
    let rank = q * observations;
    let index = buckets
        .iter()
        .position(|b| b.1 >= rank)
        .unwrap_or(buckets.len() - 1);
    if index == buckets.len() - 1 {
        return buckets[buckets.len() - 2].0;
    }
    if index == 0 && buckets[0].0 <= 0.0 {
        return buckets[0].0;
    }
    let (mut start, mut count, mut rank) = (0.0, buckets[index].1, rank);
    let end = buckets[index].0;
    if index > 0 {
        start = buckets[index - 1].0;
        count -= buckets[index - 1].1;
        rank -= buckets[index - 1].1;
    }
    start + (end - start) * (rank / count)
}

fn math(samples: Vec<Sample>, f: impl Fn(f64) -> f64) -> Value {
    Value::Vector(
        samples
            .into_iter()
            .map(|s| Sample {
                labels: without_name(s.labels),
                value: f(s.value),
            })
            .collect(),
    )
}

/// A function of a range's points and its length in ms.
type RangeFn<'a> = dyn Fn(&[(i64, f64)], i64) -> Option<f64> + 'a;

fn call_function(call: &Call, db: &Tsdb, t: i64) -> Result<Value, EvalError> {
    let name = call.func.name;
    let args: Vec<Value> = call
        .args
        .args
        .iter()
        .map(|a| eval(a, db, t))
        .collect::<Result<_, _>>()?;
    let arg = |i: usize| args.get(i).cloned().unwrap_or(Value::Vector(Vec::new()));
    let over_range = |f: &RangeFn<'_>| -> Value {
        let Value::Matrix(series, range) = arg(0) else {
            return Value::Vector(Vec::new());
        };
        Value::Vector(
            series
                .into_iter()
                .filter_map(|s| {
                    Some(Sample {
                        value: f(&s.points, range)?,
                        labels: without_name(s.labels),
                    })
                })
                .collect(),
        )
    };
    let values = |points: &[(i64, f64)]| points.iter().map(|p| p.1).collect::<Vec<f64>>();
    Ok(match name {
        "rate" => over_range(&|p, r| extrapolated_rate(p, r, t, true, true)),
        "increase" => over_range(&|p, r| extrapolated_rate(p, r, t, true, false)),
        "delta" => over_range(&|p, r| extrapolated_rate(p, r, t, false, false)),
        "irate" => over_range(&|p, _| instant_rate(p, true, true)),
        "idelta" => over_range(&|p, _| instant_rate(p, false, false)),
        "avg_over_time" => over_range(&|p, _| {
            let v = values(p);
            Some(v.iter().sum::<f64>() / v.len() as f64)
        }),
        "min_over_time" => over_range(&|p, _| values(p).into_iter().reduce(f64::min)),
        "max_over_time" => over_range(&|p, _| values(p).into_iter().reduce(f64::max)),
        "sum_over_time" => over_range(&|p, _| Some(values(p).iter().sum())),
        "count_over_time" => over_range(&|p, _| Some(p.len() as f64)),
        "present_over_time" => over_range(&|_, _| Some(1.0)),
        "last_over_time" => {
            let Value::Matrix(series, _) = arg(0) else {
                return Ok(Value::Vector(Vec::new()));
            };
            Value::Vector(
                series
                    .into_iter()
                    .filter_map(|s| {
                        Some(Sample {
                            value: s.points.last()?.1,
                            labels: s.labels,
                        })
                    })
                    .collect(),
            )
        }
        "absent" | "absent_over_time" => {
            let present = match arg(0) {
                Value::Vector(v) => !v.is_empty(),
                Value::Matrix(m, _) => !m.is_empty(),
                _ => true,
            };
            if present {
                Value::Vector(Vec::new())
            } else {
                Value::Vector(vec![Sample {
                    labels: absent_labels(&call.args.args[0]),
                    value: 1.0,
                }])
            }
        }
        "histogram_quantile" => {
            let q = scalar_of(&arg(0));
            let mut groups: BTreeMap<Labels, Vec<(f64, f64)>> = BTreeMap::new();
            for sample in vector_of(arg(1)) {
                let Some(le) = label(&sample.labels, "le").and_then(parse_float) else {
                    continue;
                };
                let mut key = without_name(sample.labels);
                key.retain(|(k, _)| k != "le");
                groups.entry(key).or_default().push((le, sample.value));
            }
            Value::Vector(
                groups
                    .into_iter()
                    .map(|(labels, buckets)| Sample {
                        labels,
                        value: bucket_quantile(q, buckets),
                    })
                    .collect(),
            )
        }
        "abs" => math(vector_of(arg(0)), f64::abs),
        "ceil" => math(vector_of(arg(0)), f64::ceil),
        "floor" => math(vector_of(arg(0)), f64::floor),
        "exp" => math(vector_of(arg(0)), f64::exp),
        "ln" => math(vector_of(arg(0)), f64::ln),
        "log2" => math(vector_of(arg(0)), f64::log2),
        "log10" => math(vector_of(arg(0)), f64::log10),
        "sqrt" => math(vector_of(arg(0)), f64::sqrt),
        "round" => {
            let to = if args.len() > 1 {
                scalar_of(&arg(1))
            } else {
                1.0
            };
            // Prometheus rounds half up: floor(v / to + 0.5) * to.
            math(vector_of(arg(0)), move |v| (v / to + 0.5).floor() * to)
        }
        "clamp" => {
            let (lo, hi) = (scalar_of(&arg(1)), scalar_of(&arg(2)));
            if lo > hi {
                Value::Vector(Vec::new())
            } else {
                math(vector_of(arg(0)), move |v| v.max(lo).min(hi))
            }
        }
        "clamp_min" => {
            let lo = scalar_of(&arg(1));
            math(vector_of(arg(0)), move |v| v.max(lo))
        }
        "clamp_max" => {
            let hi = scalar_of(&arg(1));
            math(vector_of(arg(0)), move |v| v.min(hi))
        }
        "time" => Value::Scalar(t as f64 / 1000.0),
        "vector" => Value::Vector(vec![Sample {
            labels: Vec::new(),
            value: scalar_of(&arg(0)),
        }]),
        "scalar" => {
            let v = vector_of(arg(0));
            Value::Scalar(if v.len() == 1 { v[0].value } else { f64::NAN })
        }
        "timestamp" => {
            // The time of each selected sample (instant selectors only, as in Prometheus).
            let Some(Expr::VectorSelector(vs)) = call.args.args.first().map(|a| &**a) else {
                return Ok(math(vector_of(arg(0)), |_| t as f64 / 1000.0));
            };
            let at = shifted(t, &vs.offset);
            Value::Vector(
                select(db, vs)
                    .filter_map(|(labels, samples)| {
                        let (ts, _) = *samples.iter().rev().find(|(ts, _)| *ts <= at)?;
                        (ts > at - LOOKBACK_MS).then(|| Sample {
                            labels: without_name(labels.clone()),
                            value: ts as f64 / 1000.0,
                        })
                    })
                    .collect(),
            )
        }
        _ => Value::Vector(Vec::new()),
    })
}

/// A float as Prometheus writes them in labels (`+Inf`, `0.5`).
fn parse_float(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        _ => text.parse().ok(),
    }
}

fn grouping(labels: &Labels, modifier: &Option<LabelModifier>) -> Labels {
    match modifier {
        None => Vec::new(),
        Some(LabelModifier::Include(keep)) => labels
            .iter()
            .filter(|(k, _)| keep.labels.contains(k))
            .cloned()
            .collect(),
        Some(LabelModifier::Exclude(drop)) => labels
            .iter()
            .filter(|(k, _)| k != NAME && !drop.labels.contains(k))
            .cloned()
            .collect(),
    }
}

fn aggregate(a: &AggregateExpr, db: &Tsdb, t: i64) -> Result<Value, EvalError> {
    let op = a.op.to_string();
    let param = match &a.param {
        Some(p) => scalar_of(&eval(p, db, t)?),
        None => f64::NAN,
    };
    let samples = vector_of(eval(&a.expr, db, t)?);
    let mut groups: BTreeMap<Labels, Vec<Sample>> = BTreeMap::new();
    for sample in samples {
        groups
            .entry(grouping(&sample.labels, &a.modifier))
            .or_default()
            .push(sample);
    }
    let mut out = Vec::new();
    for (labels, members) in groups {
        let values: Vec<f64> = members.iter().map(|s| s.value).collect();
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        let value = match op.as_str() {
            "sum" => values.iter().sum(),
            "avg" => mean,
            "min" => values.iter().copied().reduce(f64::min).unwrap_or(f64::NAN),
            "max" => values.iter().copied().reduce(f64::max).unwrap_or(f64::NAN),
            "count" => n,
            "group" => 1.0,
            "stddev" => variance.sqrt(),
            "stdvar" => variance,
            "quantile" => quantile(param, values),
            "topk" | "bottomk" => {
                let k = if param.is_finite() {
                    param.max(0.0) as usize
                } else {
                    0
                };
                let mut members = members;
                members.sort_by(|x, y| {
                    let order = x.value.total_cmp(&y.value);
                    if op == "topk" { order.reverse() } else { order }
                });
                out.extend(members.into_iter().take(k));
                continue;
            }
            _ => continue,
        };
        out.push(Sample { labels, value });
    }
    Ok(Value::Vector(out))
}

/// Prometheus' `quantile` aggregation (linear interpolation between ranks).
fn quantile(q: f64, mut values: Vec<f64>) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(f64::total_cmp);
    let rank = q * (values.len() - 1) as f64;
    let lower = rank.floor() as usize;
    let upper = (lower + 1).min(values.len() - 1);
    let weight = rank - rank.floor();
    values[lower] * (1.0 - weight) + values[upper] * weight
}

fn apply(op: &str, l: f64, r: f64) -> (f64, bool) {
    match op {
        "+" => (l + r, true),
        "-" => (l - r, true),
        "*" => (l * r, true),
        "/" => (l / r, true),
        "%" => (l % r, true),
        "^" => (l.powf(r), true),
        "atan2" => (l.atan2(r), true),
        "==" => (l, l == r),
        "!=" => (l, l != r),
        ">" => (l, l > r),
        "<" => (l, l < r),
        ">=" => (l, l >= r),
        "<=" => (l, l <= r),
        _ => (f64::NAN, false),
    }
}

fn is_comparison(op: &str) -> bool {
    matches!(op, "==" | "!=" | ">" | "<" | ">=" | "<=")
}

fn signature(labels: &Labels, on: bool, names: &[String]) -> Labels {
    labels
        .iter()
        .filter(|(k, _)| {
            if on {
                names.contains(k)
            } else {
                k != NAME && !names.contains(k)
            }
        })
        .cloned()
        .collect()
}

fn binary(b: &BinaryExpr, db: &Tsdb, t: i64) -> Result<Value, EvalError> {
    let op = b.op.to_string();
    let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
    let lhs = eval(&b.lhs, db, t)?;
    let rhs = eval(&b.rhs, db, t)?;
    let comparison = is_comparison(&op);
    let drop_name = !comparison || return_bool;
    // Scalar results of a comparison, and values kept by `bool`.
    let finish = |l: f64, r: f64| -> Option<f64> {
        let (value, keep) = apply(&op, l, r);
        if comparison {
            if return_bool {
                Some(if keep { 1.0 } else { 0.0 })
            } else {
                keep.then_some(value)
            }
        } else {
            Some(value)
        }
    };
    Ok(match (lhs, rhs) {
        (Value::Scalar(l), Value::Scalar(r)) => Value::Scalar(finish(l, r).unwrap_or(f64::NAN)),
        (Value::Vector(v), Value::Scalar(s)) => Value::Vector(
            v.into_iter()
                .filter_map(|x| {
                    Some(Sample {
                        value: finish(x.value, s)?,
                        labels: if drop_name {
                            without_name(x.labels)
                        } else {
                            x.labels
                        },
                    })
                })
                .collect(),
        ),
        (Value::Scalar(s), Value::Vector(v)) => Value::Vector(
            v.into_iter()
                .filter_map(|x| {
                    // A comparison keeps the vector's own value (Prometheus `VectorscalarBinop`).
                    let (value, keep) = apply(&op, s, x.value);
                    let value = match (comparison, return_bool) {
                        (true, true) => f64::from(u8::from(keep)),
                        (true, false) => keep.then_some(x.value)?,
                        _ => value,
                    };
                    Some(Sample {
                        value,
                        labels: if drop_name {
                            without_name(x.labels)
                        } else {
                            x.labels
                        },
                    })
                })
                .collect(),
        ),
        (Value::Vector(l), Value::Vector(r)) => vector_binary(b, &op, l, r, &finish, drop_name)?,
        _ => Value::Vector(Vec::new()),
    })
}

fn vector_binary(
    b: &BinaryExpr,
    op: &str,
    lhs: Vec<Sample>,
    rhs: Vec<Sample>,
    finish: &dyn Fn(f64, f64) -> Option<f64>,
    drop_name: bool,
) -> Result<Value, EvalError> {
    let (on, names) = match b.modifier.as_ref().and_then(|m| m.matching.as_ref()) {
        Some(LabelModifier::Include(l)) => (true, l.labels.clone()),
        Some(LabelModifier::Exclude(l)) => (false, l.labels.clone()),
        None => (false, Vec::new()),
    };
    let card = b
        .modifier
        .as_ref()
        .map_or(VectorMatchCardinality::OneToOne, |m| m.card.clone());
    match op {
        "and" | "or" | "unless" => {
            let rhs_sigs: std::collections::HashSet<Labels> = rhs
                .iter()
                .map(|s| signature(&s.labels, on, &names))
                .collect();
            return Ok(Value::Vector(match op {
                "and" => lhs
                    .into_iter()
                    .filter(|s| rhs_sigs.contains(&signature(&s.labels, on, &names)))
                    .collect(),
                "unless" => lhs
                    .into_iter()
                    .filter(|s| !rhs_sigs.contains(&signature(&s.labels, on, &names)))
                    .collect(),
                _ => {
                    let lhs_sigs: std::collections::HashSet<Labels> = lhs
                        .iter()
                        .map(|s| signature(&s.labels, on, &names))
                        .collect();
                    let mut out = lhs;
                    out.extend(
                        rhs.into_iter()
                            .filter(|s| !lhs_sigs.contains(&signature(&s.labels, on, &names))),
                    );
                    out
                }
            }));
        }
        _ => {}
    }
    // The "one" side is indexed by signature; for group_right it is the left.
    let (one, many, swapped, include) = match &card {
        VectorMatchCardinality::OneToMany(include) => (lhs, rhs, true, include.labels.clone()),
        VectorMatchCardinality::ManyToOne(include) => (rhs, lhs, false, include.labels.clone()),
        VectorMatchCardinality::OneToOne => (rhs, lhs, false, Vec::new()),
        // Only set operators match many to many; they were handled above.
        VectorMatchCardinality::ManyToMany => return Ok(Value::Vector(Vec::new())),
    };
    let one_to_one = matches!(card, VectorMatchCardinality::OneToOne);
    let mut index: HashMap<Labels, Sample> = HashMap::new();
    for sample in one {
        let sig = signature(&sample.labels, on, &names);
        if index.contains_key(&sig) {
            return Err(EvalError::DuplicateMatch(
                labels_text(&sig),
                if swapped { "left" } else { "right" },
            ));
        }
        index.insert(sig, sample);
    }
    let mut seen: HashMap<Labels, ()> = HashMap::new();
    let mut out = Vec::new();
    let mut result_labels_seen: std::collections::HashSet<Labels> = Default::default();
    for sample in many {
        let sig = signature(&sample.labels, on, &names);
        let Some(other) = index.get(&sig) else {
            continue;
        };
        if one_to_one && seen.insert(sig.clone(), ()).is_some() {
            return Err(EvalError::DuplicateMatch(labels_text(&sig), "left"));
        }
        let (l, r) = if swapped {
            (other.value, sample.value)
        } else {
            (sample.value, other.value)
        };
        let Some(value) = finish(l, r) else {
            continue;
        };
        // Prometheus `resultMetric`: the "many" side's labels (the left for one-to-one).
        let mut labels = sample.labels.clone();
        if drop_name {
            labels.retain(|(k, _)| k != NAME);
        }
        if one_to_one {
            if on {
                labels.retain(|(k, _)| names.contains(k));
            } else {
                labels.retain(|(k, _)| !names.contains(k));
            }
        }
        for name in &include {
            labels.retain(|(k, _)| k != name);
            if let Some(v) = label(&other.labels, name) {
                labels.push((name.clone(), v.to_string()));
            }
        }
        labels.sort();
        if !result_labels_seen.insert(labels.clone()) && !one_to_one {
            return Err(EvalError::DuplicateLabels(labels_text(&labels)));
        }
        out.push(Sample { labels, value });
    }
    Ok(Value::Vector(out))
}

#[cfg(test)]
mod tests;
