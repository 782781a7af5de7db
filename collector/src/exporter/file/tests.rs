use bytes::Bytes;
use prost::Message;
use vigil_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
use vigil_proto::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};

use super::*;

fn logs_batch(records: usize) -> Batch {
    let request = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![
                    LogRecord {
                        severity_number: 9,
                        body: Some(vigil_proto::otlp::common::v1::AnyValue {
                            value: Some(
                                vigil_proto::otlp::common::v1::any_value::Value::StringValue(
                                    "x".repeat(1000)
                                )
                            ),
                        }),
                        ..Default::default()
                    };
                    records
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    Batch::new(
        Signal::Logs,
        Bytes::from(request.encode_to_vec()),
        records as u64,
    )
}

fn exporter(dir: &std::path::Path, max_backups: usize) -> FileExporter {
    FileExporter::new(&FileExporterConfig {
        path: dir.display().to_string(),
        rotation: Rotation {
            max_megabytes: 1,
            max_backups,
        },
        sending_queue: QueueSettings::default(),
        retry_on_failure: RetrySettings::default(),
    })
    .unwrap()
}

#[tokio::test]
async fn writes_one_json_line_per_batch_per_signal() {
    let dir = tempfile::tempdir().unwrap();
    let exporter = exporter(dir.path(), 3);
    exporter.export(&logs_batch(2)).await.unwrap();
    exporter.export(&logs_batch(1)).await.unwrap();
    exporter.shutdown().await;
    let text = std::fs::read_to_string(dir.path().join("logs.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(
        lines[0]["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        lines[0]["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]["severityNumber"],
        9
    );
    assert!(!dir.path().join("traces.jsonl").exists());
}

#[tokio::test]
async fn rotates_by_size_without_splitting_lines_and_keeps_max_backups() {
    let dir = tempfile::tempdir().unwrap();
    let exporter = exporter(dir.path(), 2);
    // ~100 KB per line, 1 MiB limit: 35 lines force at least three rotations.
    for _ in 0..35 {
        exporter.export(&logs_batch(100)).await.unwrap();
    }
    exporter.shutdown().await;
    let mut rotated = Vec::new();
    let mut lines = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with('\n'), "{name} ends with a whole line");
        for line in text.lines() {
            serde_json::from_str::<serde_json::Value>(line)
                .unwrap_or_else(|e| panic!("{name}: split line: {e}"));
            lines += 1;
        }
        assert!(
            text.len() as u64 <= 1 << 20,
            "{name} is over the size limit"
        );
        if name != "logs.jsonl" {
            rotated.push(name);
        }
    }
    assert_eq!(
        rotated.len(),
        2,
        "only max_backups rotated files are kept: {rotated:?}"
    );
    assert!(lines < 35, "older rotated files were pruned");
}

#[test]
fn unwritable_directory_fails_at_build() {
    let error = FileExporter::new(&FileExporterConfig {
        path: "/proc/vigil-cannot-write-here".into(),
        rotation: Rotation::default(),
        sending_queue: QueueSettings::default(),
        retry_on_failure: RetrySettings::default(),
    })
    .err()
    .unwrap();
    assert!(error.contains("/proc/vigil-cannot-write-here"), "{error}");
}
