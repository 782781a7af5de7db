use bytes::Bytes;
use prost::Message;
use vigil_proto::otlp::Signal;
use vigil_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use vigil_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};

use super::*;
use crate::component::ComponentId;
use crate::pipeline::Refusal;
use crate::processor::test_support::Recorder;
use crate::telemetry::Registry;

fn request(resources: &[usize]) -> Batch {
    let request = ExportTraceServiceRequest {
        resource_spans: resources
            .iter()
            .map(|&n| ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![
                        Span {
                            name: "s".into(),
                            ..Default::default()
                        };
                        n
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    };
    Batch::new(
        Signal::Traces,
        Bytes::from(request.encode_to_vec()),
        resources.iter().sum::<usize>() as u64,
    )
}

fn start(config: BatchConfig) -> (Built, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let id = ComponentId::parse("batch").unwrap();
    let registry = Registry::default();
    let context = ProcessorContext {
        id: &id,
        pipeline: "traces",
        signal: Signal::Traces,
        registry: &registry,
        memory: &crate::pipeline::memory::MemoryAccount::default(),
    };
    (build(&config, context, recorder.clone()), recorder)
}

#[tokio::test(start_paused = true)]
async fn sends_when_size_is_reached_without_waiting_for_the_timeout() {
    let (built, recorder) = start(BatchConfig {
        send_batch_size: 10,
        timeout: Duration::from_secs(3600),
        ..Default::default()
    });
    for _ in 0..4 {
        built.entry.try_consume(request(&[3])).unwrap();
    }
    let stage = built.stage.unwrap();
    let _ = stage.closing.send(true);
    stage.task.await.unwrap();
    let sizes: Vec<u64> = recorder.0.lock().unwrap().iter().map(|b| b.items).collect();
    // 12 items reach the size at once; the rest is flushed at shutdown.
    assert_eq!(sizes, [12]);
    assert_eq!(stage.held_items.load(Ordering::Relaxed), 0);
}

#[tokio::test(start_paused = true)]
async fn timeout_flushes_a_small_batch() {
    let (built, recorder) = start(BatchConfig {
        send_batch_size: 1000,
        timeout: Duration::from_millis(200),
        ..Default::default()
    });
    built.entry.try_consume(request(&[5])).unwrap();
    tokio::time::sleep(Duration::from_millis(199)).await;
    assert!(recorder.0.lock().unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(2)).await;
    tokio::task::yield_now().await;
    assert_eq!(
        recorder
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|b| b.items)
            .sum::<u64>(),
        5
    );
}

#[tokio::test(start_paused = true)]
async fn max_size_splits_at_resource_entries_and_keeps_every_item() {
    let (built, recorder) = start(BatchConfig {
        send_batch_size: 4,
        send_batch_max_size: 4,
        timeout: Duration::from_secs(60),
        ..Default::default()
    });
    built.entry.try_consume(request(&[2, 2, 2, 1])).unwrap();
    built.entry.try_consume(request(&[3])).unwrap();
    let stage = built.stage.unwrap();
    let _ = stage.closing.send(true);
    stage.task.await.unwrap();
    let batches = recorder.0.lock().unwrap();
    let sizes: Vec<u64> = batches.iter().map(|b| b.items).collect();
    assert_eq!(sizes.iter().sum::<u64>(), 10);
    assert!(sizes.iter().all(|&n| n <= 4), "{sizes:?}");
    // Every batch is still a valid request with the number of spans it claims.
    for batch in batches.iter() {
        let decoded = ExportTraceServiceRequest::decode(batch.to_bytes()).unwrap();
        let spans: usize = decoded
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        assert_eq!(spans as u64, batch.items);
    }
}

#[tokio::test]
async fn full_queue_refuses_and_closed_queue_says_shutting_down() {
    let (built, _recorder) = start(BatchConfig {
        queue_size: 1,
        ..Default::default()
    });
    let stage = built.stage.unwrap();
    let _ = stage.closing.send(true);
    stage.task.await.unwrap();
    assert_eq!(
        built.entry.try_consume(request(&[1])),
        Err(Refusal::ShuttingDown)
    );
}
