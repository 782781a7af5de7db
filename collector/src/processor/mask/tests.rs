use std::sync::Arc;

use vigil::mask::{MaskConfig, Masker};
use vigil_proto::otlp::trace::v1::Span;

use super::MaskStage;
use super::precheck::MaskCheck;
use crate::pipeline::precheck::SharedPrecheck;
use crate::pipeline::{Consumer, SharedConsumer};
use crate::processor::test_support::{Recorder, traces};
use crate::telemetry::Registry;

fn stage(masker: &Masker, next: SharedConsumer) -> MaskStage {
    MaskStage {
        masker: masker.clone(),
        precheck: SharedPrecheck::new(MaskCheck(masker.clone())),
        next,
        failed_items: Registry::default().counter("failed_total", "test", &[]),
    }
}

fn span_named(name: &str) -> Span {
    Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        name: name.into(),
        ..Default::default()
    }
}

#[test]
fn a_chunk_checked_by_this_stage_s_check_is_passed_on_and_any_other_is_masked() {
    let engine = Masker::new(&MaskConfig::default()).unwrap();
    let recorder = Arc::new(Recorder::default());
    let stage = stage(&engine, recorder.clone());
    let other_check_of_the_same_engine = SharedPrecheck::new(MaskCheck(engine.clone()));
    let name = "GET /users/bob@example.com";
    for (checked_by, expected) in [
        (None, "GET /users/[REDACTED:email]"),
        (
            Some(&other_check_of_the_same_engine),
            "GET /users/[REDACTED:email]",
        ),
        // Only the check this stage declared is trusted (here it is wrong on purpose, to see it).
        (Some(&stage.precheck), name),
    ] {
        recorder.0.lock().unwrap().clear();
        let mut batch = traces(vec![span_named(name)]);
        batch.chunks[0].prechecked = checked_by.cloned();
        stage.try_consume(batch).unwrap();
        assert_eq!(recorder.spans()[0].name, expected);
    }
}

/// A `KeyValue` whose value field is sent twice is decoded by merging the two: a secret in the first value
/// survives in what exporters decode when only the last value is masked.
#[test]
fn every_value_of_an_attribute_sent_twice_is_masked() {
    use prost::Message as _;
    use vigil_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
    use vigil_proto::otlp::common::v1::{AnyValue, KeyValue, any_value::Value};
    use vigil_proto::otlp::wire::put_bytes;

    let mut attribute = KeyValue {
        key: "note".into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue("card 4111 1111 1111 1111".into())),
        }),
        ..Default::default()
    }
    .encode_to_vec();
    // An empty second `value` (field 2): decoders merge it into the first, keeping the card number.
    put_bytes(&mut attribute, 2, &[]);
    let mut span = span_named("checkout").encode_to_vec();
    put_bytes(&mut span, 9, &attribute);
    let (mut scope_spans, mut resource_spans, mut request) = (Vec::new(), Vec::new(), Vec::new());
    put_bytes(&mut scope_spans, 2, &span);
    put_bytes(&mut resource_spans, 2, &scope_spans);
    put_bytes(&mut request, 1, &resource_spans);
    let decoded = ExportTraceServiceRequest::decode(request.as_slice()).unwrap();
    let seen = format!(
        "{:?}",
        decoded.resource_spans[0].scope_spans[0].spans[0].attributes
    );
    assert!(
        seen.contains("4111 1111"),
        "decoders see the card number: {seen}"
    );

    let engine = Masker::new(&MaskConfig::default()).unwrap();
    let recorder = Arc::new(Recorder::default());
    let stage = stage(&engine, recorder.clone());
    let batch = crate::pipeline::Batch::new(vigil_proto::otlp::Signal::Traces, request.into(), 1);
    stage.try_consume(batch).unwrap();
    let masked = format!("{:?}", recorder.spans()[0].attributes);
    assert!(!masked.contains("4111"), "{masked}");
}
