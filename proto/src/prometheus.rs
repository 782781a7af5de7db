//! Prometheus remote-write 1.0 messages (`prompb/remote.proto` and `prompb/types.proto` of prometheus/prometheus),
//! written as prost structs so no `protoc` is needed at build time.
//!
//! Only what remote write 1.0 sends is here: `WriteRequest`, `TimeSeries`, `Label`, `Sample`, `Exemplar` and
//! `MetricMetadata`. Field numbers and types follow the upstream files exactly; the tests decode what we encode
//! and check the numbers against hand-encoded bytes.

/// `prometheus.WriteRequest`: the body of one remote-write POST (snappy block-compressed).
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    /// The series and their samples.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
    /// Type, help and unit of metric families (field 2 is reserved upstream).
    #[prost(message, repeated, tag = "3")]
    pub metadata: Vec<MetricMetadata>,
}

/// `prometheus.TimeSeries`: one label set and its samples in timestamp order.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    /// Every label including `__name__`, sorted by name.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// Samples, oldest first.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
    /// Exemplars, oldest first.
    #[prost(message, repeated, tag = "3")]
    pub exemplars: Vec<Exemplar>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Message)]
pub struct Label {
    /// Label name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Label value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    /// The value; [`STALE_NAN`] marks the end of a series.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// `prometheus.Exemplar`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Exemplar {
    /// Usually `trace_id` and `span_id`.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// The observed value.
    #[prost(double, tag = "2")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "3")]
    pub timestamp: i64,
}

/// `prometheus.MetricMetadata`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricMetadata {
    /// A [`MetricType`] value.
    #[prost(enumeration = "MetricType", tag = "1")]
    pub r#type: i32,
    /// The family name (for counters without `_total` is not required: Prometheus matches either).
    #[prost(string, tag = "2")]
    pub metric_family_name: String,
    /// HELP text.
    #[prost(string, tag = "4")]
    pub help: String,
    /// Unit.
    #[prost(string, tag = "5")]
    pub unit: String,
}

/// `prometheus.MetricMetadata.MetricType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MetricType {
    /// Untyped.
    Unknown = 0,
    /// Monotonic counter.
    Counter = 1,
    /// Gauge.
    Gauge = 2,
    /// Histogram.
    Histogram = 3,
    /// Gauge histogram.
    Gaugehistogram = 4,
    /// Summary.
    Summary = 5,
    /// Info metric.
    Info = 6,
    /// State set.
    Stateset = 7,
}

/// The NaN bit pattern Prometheus reads as "this series ended" (`value.StaleNaN`).
pub const STALE_NAN: f64 = f64::from_bits(0x7ff0_0000_0000_0002);

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn field_numbers_match_prompb() {
        let request = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![Label {
                    name: "a".into(),
                    value: "b".into(),
                }],
                samples: vec![Sample {
                    value: 1.0,
                    timestamp: 2,
                }],
                exemplars: vec![],
            }],
            metadata: vec![],
        };
        let bytes = request.encode_to_vec();
        // timeseries (1, len) { labels (1, len) { name (1) "a", value (2) "b" }, samples (2, len) { value (1,
        // fixed64) 1.0, timestamp (2, varint) 2 } }
        let mut want = vec![
            0x0a, 0x15, 0x0a, 0x06, 0x0a, 0x01, b'a', 0x12, 0x01, b'b', 0x12, 0x0b, 0x09,
        ];
        want.extend_from_slice(&1.0f64.to_le_bytes());
        want.extend_from_slice(&[0x10, 0x02]);
        assert_eq!(bytes, want);
        assert_eq!(WriteRequest::decode(bytes.as_slice()).unwrap(), request);
    }

    #[test]
    fn stale_nan_is_the_prometheus_bit_pattern() {
        assert!(STALE_NAN.is_nan());
        assert_eq!(STALE_NAN.to_bits(), 0x7ff0000000000002);
    }
}
