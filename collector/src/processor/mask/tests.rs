use std::sync::Arc;

use vigil::mask::{MaskConfig, Masker};
use vigil_proto::otlp::trace::v1::Span;

use super::MaskStage;
use crate::pipeline::{Consumer, SharedConsumer};
use crate::processor::test_support::{Recorder, traces};
use crate::telemetry::Registry;

fn stage(masker: &Masker, next: SharedConsumer) -> MaskStage {
    MaskStage {
        masker: masker.clone(),
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
fn a_chunk_checked_by_this_engine_is_passed_on_and_any_other_is_masked() {
    let engine = Masker::new(&MaskConfig::default()).unwrap();
    let equal_but_other = Masker::new(&MaskConfig::default()).unwrap();
    let recorder = Arc::new(Recorder::default());
    let stage = stage(&engine, recorder.clone());
    let name = "GET /users/bob@example.com";
    for (checked_by, expected) in [
        (None, "GET /users/[REDACTED:email]"),
        (Some(&equal_but_other), "GET /users/[REDACTED:email]"),
        // Only the receiver's own check of this engine is trusted (here it is wrong on purpose, to see it).
        (Some(&engine), name),
    ] {
        recorder.0.lock().unwrap().clear();
        let mut batch = traces(vec![span_named(name)]);
        batch.chunks[0].mask_checked = checked_by.cloned();
        stage.try_consume(batch).unwrap();
        assert_eq!(recorder.spans()[0].name, expected);
    }
}
