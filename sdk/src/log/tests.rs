use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tracing::{info, info_span, warn};

use super::clock::{Clock, ManualClock};
use super::file::{FileOptions, RotatingFile, rotated_files};
use super::writer::{AsyncWriter, FullPolicy, LineSink};
use crate::Builder;

const NOV_22_2026_23H: i64 = 1_795_388_400;

fn read_lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

fn options(dir: &std::path::Path) -> FileOptions {
    FileOptions {
        compress: false,
        max_age: None,
        ..FileOptions::new(dir.join("app.jsonl"))
    }
}

#[test]
fn json_line_has_typed_fields_span_context_and_trace_ids() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(NOV_22_2026_23H);
    let (subscriber, guard) = Builder::new("trainer")
        .console(false)
        .otlp(false)
        .json_file(options(dir.path()))
        .clock(Arc::new(clock))
        .build()
        .unwrap();
    tracing::subscriber::with_default(subscriber, || {
        let span = info_span!("training", experiment_id = "exp_001", request_id = 42u64);
        let _entered = span.enter();
        info!(
            model_type = "lightgbm",
            duration_sec = 125.5,
            final_loss = 0.234,
            epochs = -3i64,
            gpu_used = true,
            note = "quote \" backslash \\ newline \n tab \t ctl \u{1}",
            "Training completed"
        );
    });
    assert!(guard.flush());
    let lines = read_lines(&dir.path().join("app.jsonl"));
    assert_eq!(lines.len(), 1);
    let line = &lines[0];
    assert_eq!(line["timestamp"], "2026-11-22T23:00:00.000000Z");
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["message"], "Training completed");
    assert_eq!(line["model_type"], "lightgbm");
    assert_eq!(line["duration_sec"], 125.5);
    assert_eq!(line["final_loss"], 0.234);
    assert_eq!(line["epochs"], -3);
    assert_eq!(line["gpu_used"], true);
    assert_eq!(
        line["note"],
        "quote \" backslash \\ newline \n tab \t ctl \u{1}"
    );
    assert_eq!(line["experiment_id"], "exp_001");
    assert_eq!(line["request_id"], 42);
    assert_eq!(line["trace_id"].as_str().unwrap().len(), 32);
    assert_eq!(line["span_id"].as_str().unwrap().len(), 16);
    // Stable order: the envelope first, then event fields, then context, then ids.
    let raw = std::fs::read_to_string(dir.path().join("app.jsonl")).unwrap();
    let order = [
        "\"timestamp\"",
        "\"level\"",
        "\"target\"",
        "\"message\"",
        "\"model_type\"",
        "\"experiment_id\"",
        "\"trace_id\"",
    ];
    let positions: Vec<usize> = order.iter().map(|k| raw.find(k).unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{raw}");
}

#[test]
fn trace_ids_are_shared_within_a_trace_and_absent_outside() {
    let dir = tempfile::tempdir().unwrap();
    let (subscriber, guard) = Builder::new("svc")
        .console(false)
        .otlp(false)
        .json_file(options(dir.path()))
        .build()
        .unwrap();
    tracing::subscriber::with_default(subscriber, || {
        info!("outside any span");
        let parent = info_span!("request");
        let _p = parent.enter();
        info!("in parent");
        let child = info_span!("db");
        let _c = child.enter();
        warn!("in child");
    });
    assert!(guard.flush());
    let lines = read_lines(&dir.path().join("app.jsonl"));
    assert!(lines[0].get("trace_id").is_none());
    assert_eq!(lines[1]["trace_id"], lines[2]["trace_id"]);
    assert_ne!(lines[1]["span_id"], lines[2]["span_id"]);
    assert_eq!(lines[2]["level"], "WARNING");
}

#[test]
fn rotates_by_size_between_lines() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(NOV_22_2026_23H);
    let mut file = RotatingFile::open(
        FileOptions {
            max_bytes: 1000,
            ..options(dir.path())
        },
        Arc::new(clock),
    )
    .unwrap();
    let line = format!("{{\"n\":\"{}\"}}\n", "x".repeat(90)); // 100 bytes
    for _ in 0..25 {
        file.write_lines(line.as_bytes()).unwrap();
    }
    // A buffer of several lines straddling the limit is split between lines.
    file.write_lines(line.repeat(7).as_bytes()).unwrap();
    file.sync();
    let rotated = rotated_files(&options(dir.path())).unwrap();
    assert_eq!(rotated.len(), 3, "{rotated:?}");
    let mut total = 0;
    for path in rotated.iter().chain([&dir.path().join("app.jsonl")]) {
        let text = std::fs::read_to_string(path).unwrap();
        assert!(
            text.len() <= 1000,
            "{} has {} bytes",
            path.display(),
            text.len()
        );
        assert!(text.ends_with('\n'));
        total += text.lines().count();
    }
    assert_eq!(total, 32, "no line lost");
    assert!(
        rotated[0]
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("app.2026-11-22.1")
    );
}

#[test]
fn rotates_daily_with_an_injected_clock_and_compresses_off_thread() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(NOV_22_2026_23H);
    let opts = FileOptions {
        compress: true,
        ..options(dir.path())
    };
    let mut file = RotatingFile::open(opts.clone(), Arc::new(clock.clone())).unwrap();
    file.write_lines(b"{\"day\":22}\n").unwrap();
    clock.advance(Duration::from_secs(3600)); // midnight UTC passes
    file.write_lines(b"{\"day\":23}\n").unwrap();
    file.sync();
    let rotated = rotated_files(&opts).unwrap();
    assert_eq!(rotated.len(), 1);
    let name = rotated[0]
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(name, "app.2026-11-22.1.jsonl.gz");
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&rotated[0]).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(text, "{\"day\":22}\n");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("app.jsonl")).unwrap(),
        "{\"day\":23}\n"
    );
}

#[test]
fn retention_keeps_at_most_max_files() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(NOV_22_2026_23H);
    let opts = FileOptions {
        max_bytes: 10,
        max_files: Some(2),
        ..options(dir.path())
    };
    let mut file = RotatingFile::open(opts.clone(), Arc::new(clock)).unwrap();
    for i in 0..6 {
        file.write_lines(format!("{{\"i\":{i}}}\n").as_bytes())
            .unwrap();
        file.write_lines(b"{\"pad\":1}\n").unwrap();
    }
    file.sync();
    assert_eq!(rotated_files(&opts).unwrap().len(), 2);
}

#[test]
fn restart_continues_the_current_file() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::at(NOV_22_2026_23H));
    {
        let mut file = RotatingFile::open(options(dir.path()), clock.clone()).unwrap();
        file.write_lines(b"{\"run\":1}\n").unwrap();
    }
    // The file was last written at the clock's time (not the real one, which may be another day: then the
    // restart would rightly start a new file).
    std::fs::File::options()
        .append(true)
        .open(dir.path().join("app.jsonl"))
        .unwrap()
        .set_modified(std::time::UNIX_EPOCH + Clock::now(&*clock))
        .unwrap();
    let mut file = RotatingFile::open(options(dir.path()), clock).unwrap();
    file.write_lines(b"{\"run\":2}\n").unwrap();
    drop(file);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("app.jsonl")).unwrap(),
        "{\"run\":1}\n{\"run\":2}\n"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("app.jsonl"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode & !0o640, 0, "mode {mode:o} is no wider than 0640");
    }
}

#[test]
fn unwritable_directory_is_a_clear_error_at_init() {
    let error = Builder::new("svc")
        .console(false)
        .otlp(false)
        .json_file(FileOptions::new("/proc/vigil-no/app.jsonl"))
        .build()
        .err()
        .unwrap();
    assert!(error.to_string().contains("/proc/vigil-no"), "{error}");
}

/// A sink that is slow until released, so the buffer fills.
struct Gate {
    lines: Arc<std::sync::Mutex<Vec<u8>>>,
    open: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
}

impl LineSink for Gate {
    fn write_lines(&mut self, lines: &[u8]) -> std::io::Result<()> {
        let (lock, cvar) = &*self.open;
        let mut open = lock.lock().unwrap();
        while !*open {
            open = cvar.wait(open).unwrap();
        }
        self.lines.lock().unwrap().extend_from_slice(lines);
        Ok(())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn overload_with_drop_policy_counts_and_writes_a_marker() {
    let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
    let open = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
    let sink = Gate {
        lines: lines.clone(),
        open: open.clone(),
    };
    let writer = AsyncWriter::start(
        sink,
        1024,
        FullPolicy::Drop,
        Arc::new(ManualClock::at(NOV_22_2026_23H)),
    )
    .unwrap();
    let line = format!("{{\"pad\":\"{}\"}}\n", "y".repeat(88)); // 100 bytes
    for _ in 0..200 {
        writer.write(line.as_bytes());
    }
    let dropped = writer.dropped();
    assert!(
        dropped > 0,
        "a stalled writer with a 1 KiB buffer must drop"
    );
    *open.0.lock().unwrap() = true;
    open.1.notify_all();
    assert!(writer.flush(Duration::from_secs(10)));
    let text = String::from_utf8(lines.lock().unwrap().clone()).unwrap();
    let written = text.lines().filter(|l| l.contains("\"pad\"")).count() as u64;
    assert_eq!(written + dropped, 200, "every line is written or counted");
    let marker: Value = serde_json::from_str(
        text.lines()
            .find(|l| l.contains("records dropped"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(marker["dropped_records"], dropped);
    assert_eq!(marker["level"], "WARNING");
}

#[test]
fn concurrent_writers_lose_nothing_across_rotations() {
    let dir = tempfile::tempdir().unwrap();
    let clock: Arc<ManualClock> = Arc::new(ManualClock::at(NOV_22_2026_23H));
    let opts = FileOptions {
        max_bytes: 64 * 1024,
        ..options(dir.path())
    };
    let file = RotatingFile::open(opts.clone(), clock.clone()).unwrap();
    let writer = Arc::new(AsyncWriter::start(file, 16 * 1024, FullPolicy::Block, clock).unwrap());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let writer = writer.clone();
            std::thread::spawn(move || {
                for i in 0..5000 {
                    writer.write(format!("{{\"t\":{t},\"i\":{i}}}\n").as_bytes());
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert!(writer.shutdown(Duration::from_secs(30)));
    let mut seen = std::collections::HashSet::new();
    let rotated = rotated_files(&opts).unwrap();
    assert!(
        rotated.len() >= 3,
        "the test must cross rotations: {rotated:?}"
    );
    for path in rotated.iter().chain([&dir.path().join("app.jsonl")]) {
        for line in read_lines(path) {
            assert!(
                seen.insert((line["t"].as_u64().unwrap(), line["i"].as_u64().unwrap())),
                "duplicate {line}"
            );
        }
    }
    assert_eq!(seen.len(), 20_000);
}

#[test]
fn logging_config_drives_handlers_formats_and_levels() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "logging:\n  version: 1\n  formatters:\n    json: {{class: json}}\n    detailed: {{format: '%(asctime)s - %(name)s - %(levelname)-8s - %(message)s'}}\n  handlers:\n    text:\n      class: file\n      filename: {dir}/app.log\n      formatter: detailed\n      compress: false\n    json:\n      class: file\n      filename: {dir}/app.jsonl\n      formatter: json\n      level: WARNING\n      compress: false\n  loggers:\n    noisy.module: {{level: ERROR}}\n  root:\n    level: INFO\n    handlers: [text, json]\n",
        dir = dir.path().display()
    );
    let config = crate::config::logging::LoggingConfig::parse(&text, "test.yaml").unwrap();
    let (subscriber, guard) = Builder::new("svc")
        .otlp(false)
        .logging_config(config)
        .clock(Arc::new(ManualClock::at(NOV_22_2026_23H)))
        .build()
        .unwrap();
    tracing::subscriber::with_default(subscriber, || {
        let span = info_span!("job", experiment_id = "exp_001");
        let _entered = span.enter();
        tracing::debug!("below the root level");
        info!(step = 3, "step done");
        warn!(loss = 9.5, "loss exploded");
        tracing::warn!(target: "noisy::module", "below this logger's level");
    });
    assert!(guard.flush());
    let text_log = std::fs::read_to_string(dir.path().join("app.log")).unwrap();
    let lines: Vec<&str> = text_log.lines().collect();
    assert_eq!(lines.len(), 2, "{text_log}");
    assert!(
        lines[0].starts_with("2026-11-22 23:00:00,000 - vigil::log::tests - INFO     - step done step=3 experiment_id=\"exp_001\" trace_id="),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains(" - WARNING  - loss exploded loss=9.5"),
        "{}",
        lines[1]
    );
    let json = read_lines(&dir.path().join("app.jsonl"));
    assert_eq!(
        json.len(),
        1,
        "the json handler only takes WARNING and above"
    );
    assert_eq!(json[0]["message"], "loss exploded");
}

#[test]
fn correlation_survives_await_and_spawned_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let (subscriber, guard) = Builder::new("svc")
        .console(false)
        .otlp(false)
        .json_file(options(dir.path()))
        .build()
        .unwrap();
    let dispatch = tracing::Dispatch::new(subscriber);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    tracing::dispatcher::with_default(&dispatch, || {
        use tracing::Instrument;
        use tracing::instrument::WithSubscriber;
        let handle_dispatch = dispatch.clone();
        runtime.block_on(
            async move {
                info!("before await");
                tokio::task::yield_now().await;
                info!("after await");
                let child = tokio::spawn(
                    async {
                        tokio::task::yield_now().await;
                        info!("in spawned task");
                    }
                    .in_current_span()
                    .with_subscriber(handle_dispatch),
                );
                child.await.unwrap();
            }
            .instrument(info_span!("request", request_id = "r-7")),
        );
    });
    assert!(guard.flush());
    let lines = read_lines(&dir.path().join("app.jsonl"));
    assert_eq!(lines.len(), 3);
    for line in &lines {
        assert_eq!(line["request_id"], "r-7", "{line}");
        assert_eq!(line["trace_id"], lines[0]["trace_id"], "{line}");
    }
}

#[test]
fn a_task_spawned_inside_a_context_stays_in_the_request_trace() {
    // The README's shape: a request span, a context bound inside it, and a task spawned with
    // `.in_current_span()`, whose current span is then the context alone. The task's lines and spans must stay
    // in the request's trace, and an ERROR in it must mark the request span.
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
    use tracing_subscriber::layer::SubscriberExt as _;

    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::at(NOV_22_2026_23H));
    let writer = Arc::new(
        AsyncWriter::start(
            RotatingFile::open(options(dir.path()), clock.clone()).unwrap(),
            1 << 16,
            FullPolicy::Block,
            clock.clone(),
        )
        .unwrap(),
    );
    let spans = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(spans.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(super::json::JsonLayer::new(writer.clone(), clock.clone()))
        .with(crate::trace::exported_spans(
            tracing_opentelemetry::layer().with_tracer(provider.tracer("test")),
        ));
    let dispatch = tracing::Dispatch::new(subscriber);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    tracing::dispatcher::with_default(&dispatch, || {
        use tracing::Instrument;
        use tracing::instrument::WithSubscriber;
        let handle_dispatch = dispatch.clone();
        runtime.block_on(
            async move {
                info!("in the request");
                let task = tokio::spawn(
                    async {
                        tokio::task::yield_now().await;
                        info!("in the task");
                        info_span!("query").in_scope(|| info!("in the query"));
                        tracing::error!("task failed");
                    }
                    .in_current_span()
                    .with_subscriber(handle_dispatch),
                );
                task.await.unwrap();
            }
            .instrument(crate::context!(request_id = "r-8"))
            .instrument(info_span!("request")),
        );
    });
    assert!(writer.flush(Duration::from_secs(5)));
    let _ = provider.force_flush();
    let lines = read_lines(&dir.path().join("app.jsonl"));
    assert_eq!(lines.len(), 4, "{lines:?}");
    let finished = spans.get_finished_spans().unwrap();
    let names: Vec<&str> = finished.iter().map(|s| s.name.as_ref()).collect();
    assert_eq!(
        names.len(),
        2,
        "only the real spans are exported: {names:?}"
    );
    let request = finished.iter().find(|s| s.name == "request").unwrap();
    let query = finished.iter().find(|s| s.name == "query").unwrap();
    let trace_id = format!("{:032x}", request.span_context.trace_id());
    for line in &lines {
        assert_eq!(line["request_id"], "r-8", "{line}");
        assert_eq!(line["trace_id"], trace_id.as_str(), "{line}");
    }
    assert_eq!(query.parent_span_id, request.span_context.span_id());
    assert!(
        matches!(request.status, opentelemetry::trace::Status::Error { .. }),
        "the ERROR in the task marks the request span: {:?}",
        request.status
    );
}

#[test]
fn context_macro_binds_fields_to_every_line_in_scope() {
    let dir = tempfile::tempdir().unwrap();
    let (subscriber, guard) = Builder::new("svc")
        .console(false)
        .otlp(false)
        .json_file(options(dir.path()))
        .build()
        .unwrap();
    tracing::subscriber::with_default(subscriber, || {
        let _bound = crate::context!(request_id = "r-9", user_id = 7u64).entered();
        info!("first");
        warn!("second");
    });
    assert!(guard.flush());
    let lines = read_lines(&dir.path().join("app.jsonl"));
    assert_eq!(lines.len(), 2);
    assert!(
        lines
            .iter()
            .all(|l| l["request_id"] == "r-9" && l["user_id"] == 7)
    );
}

#[test]
fn critical_is_its_own_level_in_every_formatter() {
    let dir = tempfile::tempdir().unwrap();
    let (subscriber, guard) = Builder::new("svc")
        .console(false)
        .otlp(false)
        .json_file(options(dir.path()))
        .build()
        .unwrap();
    tracing::subscriber::with_default(subscriber, || {
        crate::critical!(disk = "/data", "Out of disk space");
        tracing::error!("plain error");
    });
    assert!(guard.flush());
    let lines = read_lines(&dir.path().join("app.jsonl"));
    assert_eq!(lines[0]["level"], "CRITICAL");
    assert!(
        lines[0].get("critical").is_none(),
        "the marker field is not repeated"
    );
    assert_eq!(lines[0]["disk"], "/data");
    assert_eq!(lines[1]["level"], "ERROR");
}

#[test]
fn daily_rotation_can_follow_a_fixed_offset_or_local_time() {
    // 23:00 UTC is already the next day at UTC+02:00: a write an hour before UTC midnight rotates.
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(NOV_22_2026_23H - 3 * 3600); // 20:00 UTC = 22:00 at +02:00
    let opts = FileOptions {
        utc_offset_seconds: 7200,
        ..options(dir.path())
    };
    let mut file = RotatingFile::open(opts.clone(), Arc::new(clock.clone())).unwrap();
    file.write_lines(b"{\"at\":\"22:00 local\"}\n").unwrap();
    clock.advance(Duration::from_secs(2 * 3600 + 60)); // 22:01 UTC = 00:01 at +02:00
    file.write_lines(b"{\"at\":\"00:01 local\"}\n").unwrap();
    file.sync();
    let rotated = rotated_files(&opts).unwrap();
    assert_eq!(
        rotated.len(),
        1,
        "the local day changed although the UTC day did not"
    );
    assert!(
        rotated[0]
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("app.2026-11-22.")
    );
    // Local time (the zone of this machine) is accepted and behaves like some fixed offset.
    let local = FileOptions {
        local_time: true,
        ..options(&dir.path().join("local"))
    };
    let mut file = RotatingFile::open(local, Arc::new(ManualClock::at(NOV_22_2026_23H))).unwrap();
    file.write_lines(b"{\"ok\":true}\n").unwrap();
}

#[test]
fn log_sampling_keeps_the_first_then_one_in_m_and_summarises_what_it_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::at(NOV_22_2026_23H));
    let (subscriber, guard) = Builder::new("sampler")
        .console(false)
        .otlp(false)
        .json_file(options(dir.path()))
        .clock(clock.clone())
        .log_sampling(super::sampling::LogSamplingConfig {
            first: 5,
            thereafter: 100,
            interval: Duration::from_secs(10),
            ..Default::default()
        })
        .build()
        .unwrap();
    tracing::subscriber::with_default(subscriber, || {
        for step in 0..=1000u64 {
            if step == 1000 {
                clock.advance(Duration::from_secs(10));
            }
            info!(step, "hot loop");
            if step % 250 == 0 && step < 1000 {
                warn!(step, "never sampled");
            }
        }
    });
    assert!(guard.flush());
    let lines = read_lines(&dir.path().join("app.jsonl"));
    let steps: Vec<u64> = lines
        .iter()
        .filter(|l| l["message"] == "hot loop")
        .map(|l| l["step"].as_u64().unwrap())
        .collect();
    // The first 5, then every 100th after them, then the first of the next interval.
    let mut expected: Vec<u64> = (0..5).collect();
    expected.extend((5..1000).step_by(100));
    expected.push(1000);
    assert_eq!(steps, expected);
    let warnings = lines.iter().filter(|l| l["level"] == "WARNING").count();
    assert_eq!(
        warnings, 4,
        "WARNING and above are never sampled by default"
    );
    let summary = lines
        .iter()
        .find(|l| l["target"] == super::sampling::SUMMARY_TARGET)
        .expect("a summary record");
    assert_eq!(summary["suppressed"], 1000 - 15);
    let position = |predicate: &dyn Fn(&Value) -> bool| lines.iter().position(predicate);
    assert!(
        position(&|l| l["target"] == super::sampling::SUMMARY_TARGET)
            < position(&|l| l["step"] == 1000),
        "the summary comes before the next interval's first record"
    );
}

#[test]
fn log_sampling_comes_from_the_logging_config_and_rejects_bad_values() {
    let text =
        "logging:\n  version: 1\n  sampling:\n    first: 2\n    thereafter: 0\n    interval: 5s\n";
    let config = crate::config::logging::LoggingConfig::parse(text, "logging.yaml").unwrap();
    let sampling = config.sampling.expect("the sampling section");
    assert_eq!(sampling.first, 2);
    assert_eq!(sampling.interval, Duration::from_secs(5));
    let bad = "logging:\n  version: 1\n  sampling:\n    interval: soon\n";
    let error = crate::config::logging::LoggingConfig::parse(bad, "logging.yaml")
        .unwrap_err()
        .to_string();
    assert!(error.starts_with("logging.yaml:4:"), "{error}");
    assert!(error.contains("soon"), "{error}");
}

/// `let _ = vigil::init(..)?` drops the guard at once and shuts the writers down: later lines are counted as
/// late and said once on stderr ([`crate::log::writer::LATE_WARNING`]), not lost in silence.
#[test]
fn lines_after_shutdown_are_counted_as_late() {
    let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
    let open = Arc::new((std::sync::Mutex::new(true), std::sync::Condvar::new()));
    let writer = AsyncWriter::start(
        Gate {
            lines: lines.clone(),
            open,
        },
        1024,
        FullPolicy::Block,
        Arc::new(ManualClock::at(NOV_22_2026_23H)),
    )
    .unwrap();
    writer.write(b"before\n");
    assert!(writer.shutdown(Duration::from_secs(5)));
    writer.write(b"after 1\n");
    writer.write(b"after 2\n");
    assert_eq!(writer.late(), 2);
    let text = String::from_utf8(lines.lock().unwrap().clone()).unwrap();
    assert_eq!(text, "before\n");
    assert!(crate::log::writer::LATE_WARNING.contains("let _guard = vigil::init"));
}

/// A stack trace reads as indented lines on a console instead of one 30-frame line; a one-line value stays a
/// field. (JSON and OTLP keep it one field, `exception.stacktrace`.)
#[test]
fn a_stack_trace_is_printed_as_indented_lines_on_the_console() {
    use tracing_subscriber::layer::SubscriberExt as _;
    let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
    let open = Arc::new((std::sync::Mutex::new(true), std::sync::Condvar::new()));
    let writer = Arc::new(
        AsyncWriter::start(
            Gate {
                lines: lines.clone(),
                open,
            },
            1 << 16,
            FullPolicy::Block,
            Arc::new(ManualClock::at(NOV_22_2026_23H)),
        )
        .unwrap(),
    );
    let layer = super::text::TextLayer::new(
        super::text::Pattern::parse("%(levelname)s %(message)s").unwrap(),
        writer.clone(),
        Arc::new(ManualClock::at(NOV_22_2026_23H)),
    );
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        let trace = "   0: app::load\n             at src/load.rs:12:5\n   1: app::main\n";
        tracing::error!(exception.stacktrace = %trace, attempt = 2, "load failed");
        tracing::error!(exception.stacktrace = "one line", "short");
    });
    assert!(writer.flush(Duration::from_secs(5)));
    let text = String::from_utf8(lines.lock().unwrap().clone()).unwrap();
    assert_eq!(
        text,
        "ERROR load failed attempt=2\n       0: app::load\n                 at src/load.rs:12:5\n       1: app::main\n\
         ERROR short exception.stacktrace=\"one line\"\n"
    );
}

/// A key on both a span and the event (or on two spans, or recorded twice on one span) appears once in every
/// sink, with the innermost value: OTLP requires unique keys and Elasticsearch rejects JSON with duplicates.
#[test]
fn a_key_on_span_and_event_appears_once_with_the_innermost_value() {
    use opentelemetry::logs::AnyValue;
    use opentelemetry_sdk::logs::{InMemoryLogExporter, SdkLoggerProvider};
    use tracing_subscriber::layer::SubscriberExt as _;

    let dir = tempfile::tempdir().unwrap();
    let text_lines = Arc::new(std::sync::Mutex::new(Vec::new()));
    let clock = Arc::new(ManualClock::at(NOV_22_2026_23H));
    let text_writer = Arc::new(
        AsyncWriter::start(
            Gate {
                lines: text_lines.clone(),
                open: Arc::new((std::sync::Mutex::new(true), std::sync::Condvar::new())),
            },
            1 << 16,
            FullPolicy::Block,
            clock.clone(),
        )
        .unwrap(),
    );
    let json_writer = Arc::new(
        AsyncWriter::start(
            RotatingFile::open(options(dir.path()), clock.clone()).unwrap(),
            1 << 16,
            FullPolicy::Block,
            clock.clone(),
        )
        .unwrap(),
    );
    let logs = InMemoryLogExporter::default();
    let provider = SdkLoggerProvider::builder()
        .with_simple_exporter(logs.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(super::json::JsonLayer::new(
            json_writer.clone(),
            clock.clone(),
        ))
        .with(super::text::TextLayer::new(
            super::text::Pattern::parse("%(message)s").unwrap(),
            text_writer.clone(),
            clock.clone(),
        ))
        .with(super::otlp::OtlpLogLayer::new(&provider));
    tracing::subscriber::with_default(subscriber, || {
        let _job = info_span!("job", epoch = 0u64, run = "outer", stage = "load").entered();
        let step = info_span!("step", run = "inner", stage = tracing::field::Empty);
        step.record("stage", "train");
        step.record("stage", "eval");
        let _step = step.entered();
        info!(epoch = 1u64, "epoch done");
    });
    assert!(json_writer.flush(Duration::from_secs(5)));
    assert!(text_writer.flush(Duration::from_secs(5)));

    let raw = std::fs::read_to_string(dir.path().join("app.jsonl")).unwrap();
    for key in ["\"epoch\"", "\"run\"", "\"stage\""] {
        assert_eq!(raw.matches(key).count(), 1, "{key} once in {raw}");
    }
    let line: Value = serde_json::from_str(raw.trim()).unwrap();
    assert_eq!(line["epoch"], 1, "the event's own value wins");
    assert_eq!(line["run"], "inner", "then the innermost span's");
    assert_eq!(line["stage"], "eval", "a span's latest record wins");

    let text = String::from_utf8(text_lines.lock().unwrap().clone()).unwrap();
    assert_eq!(text, "epoch done epoch=1 run=\"inner\" stage=\"eval\"\n");

    let _ = provider.force_flush();
    let records = logs.get_emitted_logs().unwrap();
    assert_eq!(records.len(), 1);
    let attributes: Vec<(String, AnyValue)> = records[0]
        .record
        .attributes_iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let value = |key: &str| {
        let found: Vec<&AnyValue> = attributes
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v)
            .collect();
        assert_eq!(found.len(), 1, "{key} once in {attributes:?}");
        found[0].clone()
    };
    assert_eq!(value("epoch"), AnyValue::Int(1));
    assert_eq!(value("run"), AnyValue::String("inner".into()));
    assert_eq!(value("stage"), AnyValue::String("eval".into()));
}

#[test]
fn a_value_recorded_after_a_line_shows_on_the_next_line_in_every_sink_and_is_masked() {
    // Span fields are formatted at the first line inside the span and kept; a later `record` must show on the
    // next line in JSON, text and OTLP alike, masked like any field.
    use opentelemetry::logs::AnyValue;
    use opentelemetry_sdk::logs::{InMemoryLogExporter, SdkLoggerProvider};
    use tracing_subscriber::layer::SubscriberExt as _;

    let dir = tempfile::tempdir().unwrap();
    let text_lines = Arc::new(std::sync::Mutex::new(Vec::new()));
    let clock = Arc::new(ManualClock::at(NOV_22_2026_23H));
    let text_writer = Arc::new(
        AsyncWriter::start(
            Gate {
                lines: text_lines.clone(),
                open: Arc::new((std::sync::Mutex::new(true), std::sync::Condvar::new())),
            },
            1 << 16,
            FullPolicy::Block,
            clock.clone(),
        )
        .unwrap(),
    );
    let json_writer = Arc::new(
        AsyncWriter::start(
            RotatingFile::open(options(dir.path()), clock.clone()).unwrap(),
            1 << 16,
            FullPolicy::Block,
            clock.clone(),
        )
        .unwrap(),
    );
    let logs = InMemoryLogExporter::default();
    let provider = SdkLoggerProvider::builder()
        .with_simple_exporter(logs.clone())
        .build();
    let masker = crate::mask::Masker::new(&crate::mask::MaskConfig::default()).unwrap();
    let subscriber = tracing_subscriber::registry()
        .with(
            super::json::JsonLayer::new(json_writer.clone(), clock.clone())
                .with_masker(Some(masker.clone())),
        )
        .with(
            super::text::TextLayer::new(
                super::text::Pattern::parse("%(message)s").unwrap(),
                text_writer.clone(),
                clock.clone(),
            )
            .with_masker(Some(masker.clone())),
        )
        .with(super::otlp::OtlpLogLayer::new(&provider).with_masker(Some(masker)));
    tracing::subscriber::with_default(subscriber, || {
        let step = info_span!(
            "step",
            step = 1u64,
            password = tracing::field::Empty,
            note = "first"
        );
        let _step = step.enter();
        info!("one");
        step.record("step", 2u64);
        step.record("password", "hunter2-secret");
        step.record("note", "second");
        info!("two");
    });
    assert!(json_writer.flush(Duration::from_secs(5)));
    assert!(text_writer.flush(Duration::from_secs(5)));

    let lines = read_lines(&dir.path().join("app.jsonl"));
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["step"], 1);
    assert_eq!(lines[0]["note"], "first");
    assert!(lines[0].get("password").is_none(), "{}", lines[0]);
    assert_eq!(lines[1]["step"], 2, "{}", lines[1]);
    assert_eq!(lines[1]["note"], "second");
    assert!(lines[1]["password"].is_string(), "{}", lines[1]);
    let raw = std::fs::read_to_string(dir.path().join("app.jsonl")).unwrap();
    assert!(!raw.contains("hunter2"), "{raw}");

    let text = String::from_utf8(text_lines.lock().unwrap().clone()).unwrap();
    let text_lines: Vec<&str> = text.lines().collect();
    assert_eq!(text_lines.len(), 2, "{text}");
    assert!(text_lines[0].contains("step=1") && text_lines[0].contains("note=\"first\""));
    assert!(text_lines[1].contains("step=2") && text_lines[1].contains("note=\"second\""));
    assert!(
        text_lines[1].contains("password=") && !text.contains("hunter2"),
        "{text}"
    );

    let _ = provider.force_flush();
    let records = logs.get_emitted_logs().unwrap();
    assert_eq!(records.len(), 2);
    let attribute = |index: usize, key: &str| {
        records[index]
            .record
            .attributes_iter()
            .find(|(k, _)| k.as_str() == key)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(attribute(0, "step"), Some(AnyValue::Int(1)));
    assert_eq!(attribute(1, "step"), Some(AnyValue::Int(2)));
    assert_eq!(
        attribute(1, "note"),
        Some(AnyValue::String("second".into()))
    );
    match attribute(1, "password") {
        Some(AnyValue::String(masked)) => assert!(!masked.as_str().contains("hunter2")),
        other => panic!("password masked in OTLP: {other:?}"),
    }
}

#[test]
fn two_handlers_of_one_format_each_write_span_fields_once() {
    // Two JSON files and two text files: the span's fields (set at creation and recorded later) appear once in
    // every line of each, and nothing panics on the span's shared state.
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "formatters:\n  json: {{class: json}}\n  plain: {{format: '%(message)s'}}\nhandlers:\n  a: {{class: file, filename: {dir}/a.jsonl, formatter: json, compress: false}}\n  b: {{class: file, filename: {dir}/b.jsonl, formatter: json, compress: false}}\n  c: {{class: file, filename: {dir}/c.log, formatter: plain, compress: false}}\n  d: {{class: file, filename: {dir}/d.log, formatter: plain, compress: false}}\nroot: {{level: INFO, handlers: [a, b, c, d]}}\n",
        dir = dir.path().display()
    );
    let config = crate::config::logging::LoggingConfig::parse(&text, "two.yaml").unwrap();
    let (subscriber, guard) = Builder::new("svc")
        .otlp(false)
        .logging_config(config)
        .build()
        .unwrap();
    tracing::subscriber::with_default(subscriber, || {
        let span = info_span!(
            "job",
            experiment_id = "exp_001",
            step = tracing::field::Empty
        );
        let _entered = span.enter();
        span.record("step", 7);
        info!("inside");
    });
    assert!(guard.flush());
    for name in ["a.jsonl", "b.jsonl"] {
        let lines = read_lines(&dir.path().join(name));
        assert_eq!(lines.len(), 1, "{name}");
        assert_eq!(lines[0]["experiment_id"], "exp_001", "{name}");
        assert_eq!(lines[0]["step"], 7, "{name}");
        let raw = std::fs::read_to_string(dir.path().join(name)).unwrap();
        assert_eq!(raw.matches("\"step\"").count(), 1, "{raw}");
    }
    for name in ["c.log", "d.log"] {
        let raw = std::fs::read_to_string(dir.path().join(name)).unwrap();
        assert_eq!(raw.matches("step=7").count(), 1, "{name}: {raw}");
        assert_eq!(raw.matches("experiment_id=").count(), 1, "{name}: {raw}");
    }
}

/// Float fields are written in their shortest form that reads back to the very same value, whatever their
/// magnitude; NaN and infinities, which JSON cannot hold, become strings.
#[test]
fn float_fields_read_back_to_the_same_value() {
    let dir = tempfile::tempdir().unwrap();
    let (subscriber, guard) = Builder::new("floats")
        .console(false)
        .otlp(false)
        .json_file(options(dir.path()))
        .build()
        .unwrap();
    let values = [
        125.5,
        0.1 + 0.2,
        1e21,
        1e-7,
        -0.0,
        f64::MAX,
        f64::MIN_POSITIVE,
        5e-324,
        9_007_199_254_740_993.0,
        -123_456.789,
        3.0,
    ];
    tracing::subscriber::with_default(subscriber, || {
        for value in values {
            info!(value, "float");
        }
        info!(value = f64::NAN, "float");
        info!(value = f64::NEG_INFINITY, "float");
    });
    assert!(guard.flush());
    let lines = read_lines(&dir.path().join("app.jsonl"));
    assert_eq!(lines.len(), values.len() + 2);
    for (line, value) in lines.iter().zip(values) {
        let read = line["value"]
            .as_f64()
            .unwrap_or_else(|| panic!("{value}: {line}"));
        assert_eq!(read.to_bits(), value.to_bits(), "{value}: {line}");
    }
    assert_eq!(lines[values.len()]["value"], "NaN");
    assert_eq!(lines[values.len() + 1]["value"], "-inf");
}
