use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use vigil_proto::otlp::Signal;

use super::*;
use crate::exporter::Exported;
use crate::pipeline::{BoxFuture, Consumer as _};

/// Answers each attempt from a script, then succeeds.
struct Scripted {
    script: Mutex<Vec<Result<Exported, ExportError>>>,
    attempts: AtomicU64,
}

impl Exporter for Scripted {
    fn export<'a>(&'a self, _batch: &'a Batch) -> BoxFuture<'a, Result<Exported, ExportError>> {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        let next = {
            let mut script = self.script.lock().unwrap();
            if script.is_empty() {
                Ok(Exported::default())
            } else {
                script.remove(0)
            }
        };
        Box::pin(async move { next })
    }
}

/// Never answers.
struct Stuck;

impl Exporter for Stuck {
    fn export<'a>(&'a self, _batch: &'a Batch) -> BoxFuture<'a, Result<Exported, ExportError>> {
        Box::pin(std::future::pending())
    }
}

fn retry() -> RetrySettings {
    RetrySettings {
        initial_interval: Duration::from_millis(100),
        max_interval: Duration::from_secs(1),
        max_elapsed_time: Duration::from_secs(10),
        ..RetrySettings::default()
    }
}

fn batch(items: u64) -> Batch {
    Batch::new(Signal::Logs, Bytes::from_static(b""), items)
}

fn retryable(retry_after: Option<Duration>) -> Result<Exported, ExportError> {
    Err(ExportError::Retryable {
        message: "503".into(),
        retry_after,
    })
}

async fn run(
    script: Vec<Result<Exported, ExportError>>,
    batches: &[u64],
) -> (Registry, Arc<Scripted>) {
    let registry = Registry::default();
    let exporter = Arc::new(Scripted {
        script: Mutex::new(script),
        attempts: AtomicU64::new(0),
    });
    struct Shared(Arc<Scripted>);
    impl Exporter for Shared {
        fn export<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<Exported, ExportError>> {
            self.0.export(batch)
        }
    }
    let settings = QueueSettings {
        queue_size: 16,
        num_consumers: 1,
        storage: None,
    };
    let worker = ExporterWorker::start(
        "x",
        Box::new(Shared(exporter.clone())),
        &settings,
        retry(),
        &registry,
    )
    .unwrap();
    for &items in batches {
        worker.queue().try_consume(batch(items)).unwrap();
    }
    let lost = worker
        .shutdown(Instant::now() + Duration::from_secs(3600))
        .await;
    assert_eq!(lost, 0);
    (registry, exporter)
}

fn sent(registry: &Registry) -> u64 {
    registry.counter_sum("vigil_exporter_sent_items_total", &[("exporter", "x")])
}

fn dropped(registry: &Registry, reason: &str) -> u64 {
    registry.counter_sum(
        "vigil_exporter_dropped_items_total",
        &[("exporter", "x"), ("reason", reason)],
    )
}

#[tokio::test(start_paused = true)]
async fn retryable_failures_are_retried_until_delivered() {
    let (registry, exporter) = run(
        vec![retryable(None), retryable(Some(Duration::from_secs(2)))],
        &[7],
    )
    .await;
    assert_eq!(exporter.attempts.load(Ordering::Relaxed), 3);
    assert_eq!(sent(&registry), 7);
    assert_eq!(registry.counter_sum("vigil_exporter_retries_total", &[]), 2);
}

#[tokio::test(start_paused = true)]
async fn server_retry_hint_is_honoured() {
    let started = Instant::now();
    let (registry, _) = run(vec![retryable(Some(Duration::from_secs(5)))], &[1]).await;
    assert!(started.elapsed() >= Duration::from_secs(5));
    assert_eq!(sent(&registry), 1);
}

#[tokio::test(start_paused = true)]
async fn permanent_errors_drop_at_once_and_are_counted() {
    let (registry, exporter) = run(
        vec![Err(ExportError::Permanent {
            message: "400".into(),
        })],
        &[4, 6],
    )
    .await;
    assert_eq!(exporter.attempts.load(Ordering::Relaxed), 2);
    assert_eq!(dropped(&registry, "permanent_error"), 4);
    assert_eq!(sent(&registry), 6);
}

#[tokio::test(start_paused = true)]
async fn retries_stop_after_max_elapsed_time() {
    let script = (0..1000).map(|_| retryable(None)).collect();
    let (registry, _) = run(script, &[9]).await;
    assert_eq!(dropped(&registry, "retries_exhausted"), 9);
    assert_eq!(sent(&registry), 0);
}

#[tokio::test(start_paused = true)]
async fn partial_success_counts_rejected_items_as_dropped() {
    let (registry, _) = run(
        vec![Ok(Exported {
            rejected: 2,
            message: "bad".into(),
            ..Default::default()
        })],
        &[5],
    )
    .await;
    assert_eq!(sent(&registry), 3);
    assert_eq!(dropped(&registry, "rejected_by_backend"), 2);
}

#[tokio::test(start_paused = true)]
async fn items_an_exporter_could_not_read_are_dropped_as_undecodable_and_the_rest_sent() {
    let (registry, exporter) = run(
        vec![Ok(Exported {
            rejected: 1,
            undecodable: 3,
            message: "a request does not read".into(),
        })],
        &[10],
    )
    .await;
    assert_eq!(sent(&registry), 6);
    assert_eq!(dropped(&registry, "undecodable"), 3);
    assert_eq!(dropped(&registry, "rejected_by_backend"), 1);
    assert_eq!(
        exporter.attempts.load(Ordering::SeqCst),
        1,
        "never retried, never resent"
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_deadline_counts_everything_not_delivered() {
    let registry = Registry::default();
    let settings = QueueSettings {
        queue_size: 16,
        num_consumers: 2,
        storage: None,
    };
    let worker =
        ExporterWorker::start("x", Box::new(Stuck), &settings, retry(), &registry).unwrap();
    for items in [1, 2, 3, 4, 5] {
        worker.queue().try_consume(batch(items)).unwrap();
    }
    let lost = worker
        .shutdown(Instant::now() + Duration::from_secs(1))
        .await;
    assert_eq!(lost, 15, "in-flight and queued items are all accounted for");
    assert_eq!(dropped(&registry, "shutdown"), 15);
}

/// Decodes every request of a batch before delivering any, as the decoding exporters do, and records the
/// span names it delivered.
#[derive(Default)]
struct Decoding {
    delivered: Mutex<Vec<String>>,
}

impl Exporter for Decoding {
    fn export<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<Exported, ExportError>> {
        use prost::Message as _;
        use vigil_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
        let decoded: Result<Vec<_>, _> = batch
            .chunks
            .iter()
            .map(|chunk| ExportTraceServiceRequest::decode(chunk.bytes.clone()))
            .collect();
        let result = match decoded {
            Err(e) => Err(ExportError::Undecodable {
                message: format!("batch does not decode as OTLP traces: {e}"),
            }),
            Ok(requests) => {
                let mut delivered = self.delivered.lock().unwrap();
                for request in requests {
                    for rs in request.resource_spans {
                        for ss in rs.scope_spans {
                            delivered.extend(ss.spans.into_iter().map(|s| s.name));
                        }
                    }
                }
                Ok(Exported::default())
            }
        };
        Box::pin(async move { result })
    }
}

/// The data-loss report: one undecodable request in a batch made the exporter drop every client's data in it.
#[tokio::test(start_paused = true)]
async fn a_poisoned_batch_costs_only_the_poisoned_request() {
    use prost::Message as _;
    use vigil_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
    use vigil_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};
    let request = |names: &[&str]| {
        let spans = names
            .iter()
            .map(|name| Span {
                trace_id: vec![1; 16],
                span_id: vec![2; 8],
                name: name.to_string(),
                ..Default::default()
            })
            .collect();
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    };
    // The report's reproducer: a span whose start time is sent as a varint.
    let poison: Vec<u8> = (0..88)
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(
                &"0a2a122812260a1001010101010101010101010101010101120802020202020202022a06706f69736f6e3805"
                    [i..i + 2],
                16,
            )
            .unwrap()
        })
        .collect();
    let mut batch = Batch::empty(Signal::Traces);
    batch.push(crate::pipeline::Chunk::new(
        Bytes::from(request(&["a1", "a2"])),
        2,
    ));
    batch.push(crate::pipeline::Chunk::new(Bytes::from(poison), 1));
    batch.push(crate::pipeline::Chunk::new(
        Bytes::from(request(&["b1"])),
        1,
    ));

    let registry = Registry::default();
    let exporter = Arc::new(Decoding::default());
    struct Shared(Arc<Decoding>);
    impl Exporter for Shared {
        fn export<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<Exported, ExportError>> {
            self.0.export(batch)
        }
    }
    let worker = ExporterWorker::start(
        "x",
        Box::new(Shared(exporter.clone())),
        &QueueSettings {
            queue_size: 4,
            num_consumers: 1,
            storage: None,
        },
        retry(),
        &registry,
    )
    .unwrap();
    worker.queue().try_consume(batch).unwrap();
    let lost = worker
        .shutdown(Instant::now() + Duration::from_secs(3600))
        .await;
    assert_eq!(lost, 0);
    assert_eq!(*exporter.delivered.lock().unwrap(), ["a1", "a2", "b1"]);
    assert_eq!(sent(&registry), 3);
    assert_eq!(dropped(&registry, "undecodable"), 1);
    assert_eq!(dropped(&registry, "permanent_error"), 0);
}

#[tokio::test(start_paused = true)]
async fn a_permanent_error_is_a_problem_on_readyz_until_an_export_succeeds() {
    let permanent = || {
        Err(ExportError::Permanent {
            message: "401 Unauthorized".into(),
        })
    };
    let (registry, _) = run(vec![permanent()], &[1]).await;
    assert_eq!(
        registry
            .problems()
            .list()
            .get("exporter/x")
            .map(String::as_str),
        Some("401 Unauthorized")
    );
    let partial = Ok(Exported {
        rejected: 1,
        message: "one refused".into(),
        ..Default::default()
    });
    let (registry, _) = run(vec![permanent(), partial], &[1, 2]).await;
    assert!(
        registry.problems().list().contains_key("exporter/x"),
        "a partial success does not clear it"
    );
    let (registry, _) = run(vec![permanent()], &[1, 2]).await;
    assert!(registry.problems().list().is_empty());
}

/// Counts the items it is given.
#[derive(Default)]
struct Counting(std::sync::atomic::AtomicU64);

impl Exporter for Arc<Counting> {
    fn export<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<Exported, ExportError>> {
        self.0
            .fetch_add(batch.items, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async { Ok(Exported::default()) })
    }
}

#[tokio::test]
async fn a_persistent_queue_keeps_what_a_stuck_exporter_held_for_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let settings = QueueSettings {
        queue_size: 10,
        num_consumers: 2,
        storage: Some(crate::pipeline::persistent::StorageSettings {
            directory: dir.path().to_path_buf(),
            fsync: crate::pipeline::persistent::Fsync::Never,
            max_size_mib: 16,
        }),
    };
    let registry = Registry::default();
    let worker =
        ExporterWorker::start("x", Box::new(Stuck), &settings, retry(), &registry).unwrap();
    for items in [1, 2, 3, 4, 5] {
        worker.queue().consume(batch(items)).await.unwrap();
    }
    // Both consumers are stuck exporting the first two records (1 + 2 items).
    let in_flight = "vigil_exporter_in_flight_items{exporter=\"x\"} 3";
    let deadline = Instant::now() + Duration::from_secs(10);
    while !registry.render().contains(in_flight) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        registry.render().contains(in_flight),
        "{}",
        registry.render()
    );
    let lost = worker
        .shutdown(Instant::now() + Duration::from_millis(300))
        .await;
    assert_eq!(lost, 0, "nothing is dropped: it stays on disk");
    assert_eq!(dropped(&registry, "shutdown"), 0);

    let registry = Registry::default();
    let counting = Arc::new(Counting::default());
    let worker = ExporterWorker::start(
        "x",
        Box::new(counting.clone()),
        &settings,
        retry(),
        &registry,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while counting.0.load(std::sync::atomic::Ordering::SeqCst) < 15 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(sent(&registry), 15);
    // The two the stuck consumers held were handed out before: they are redeliveries.
    assert_eq!(
        registry.counter_sum("vigil_exporter_redelivered_items_total", &[]),
        3
    );
    worker
        .shutdown(Instant::now() + Duration::from_secs(5))
        .await;
}
