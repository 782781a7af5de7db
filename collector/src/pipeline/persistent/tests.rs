use std::time::Duration;

use super::*;
use crate::pipeline::Chunk;
use crate::pipeline::receipt::Receipt;
use vigil_proto::otlp::Signal;

fn settings(dir: &Path, max_size_mib: u64) -> StorageSettings {
    StorageSettings {
        directory: dir.to_path_buf(),
        fsync: Fsync::Always,
        max_size_mib,
    }
}

fn batch(tag: &str, items: u64, size: usize) -> Batch {
    let mut bytes = tag.as_bytes().to_vec();
    bytes.resize(size.max(tag.len()), b'.');
    Batch::new(Signal::Logs, Bytes::from(bytes), items)
}

fn tag_of(batch: &Batch) -> String {
    let bytes = batch.to_bytes();
    String::from_utf8_lossy(&bytes)
        .trim_end_matches('.')
        .to_string()
}

/// Writes a batch and waits until it is stored (its receipt released).
async fn store(queue: &PersistentQueue, mut batch: Batch) -> Result<(), Refusal> {
    let (receipt, wait) = Receipt::new();
    for chunk in &mut batch.chunks {
        chunk.receipt = Some(receipt.clone());
    }
    drop(receipt);
    queue.reserve().await?;
    queue.write(batch);
    wait.wait().await
}

/// Stores `count` records of one item and 300 KB each, tagged `<prefix>0`, `<prefix>1`…: with 1 MiB segments,
/// four to a segment.
async fn store_numbered(queue: &PersistentQueue, prefix: &str, count: u64) {
    for i in 0..count {
        store(queue, batch(&format!("{prefix}{i}"), 1, 300_000))
            .await
            .unwrap();
    }
}

fn no_closing() -> (watch::Sender<bool>, watch::Receiver<bool>) {
    watch::channel(false)
}

/// Takes what the queue has right now (stops when it would wait).
async fn take_available(queue: &PersistentQueue) -> Vec<(Batch, Ticket)> {
    let (_keep, mut closing) = no_closing();
    let mut taken = Vec::new();
    while let Ok(Some(next)) =
        tokio::time::timeout(Duration::from_millis(200), queue.take(&mut closing)).await
    {
        taken.push(next);
    }
    taken
}

/// The tags of what the queue has right now, leaving the records unfinished.
async fn take_tags(queue: &PersistentQueue) -> Vec<String> {
    take_available(queue)
        .await
        .iter()
        .map(|(b, _)| tag_of(b))
        .collect()
}

fn counter(registry: &Registry, name: &str, labels: &[(&str, &str)]) -> u64 {
    registry.counter_sum(name, labels)
}

fn segment_files(dir: &Path) -> Vec<u64> {
    list_segments(&queue_dir(dir, "otlp")).unwrap()
}

#[tokio::test]
async fn stored_batches_come_back_in_order_and_finished_segments_are_kept_as_spares() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::default();
    let queue = PersistentQueue::open("otlp", &settings(dir.path(), 4), &registry).unwrap();
    // 1 MiB segments: 300 KB records fill one every 4 records.
    for i in 0..10 {
        store(&queue, batch(&format!("b{i}"), i + 1, 300_000))
            .await
            .unwrap();
    }
    assert_eq!(queue.pending_items(), 55);
    assert!(segment_files(dir.path()).len() >= 3);
    let taken = take_available(&queue).await;
    let tags: Vec<String> = taken.iter().map(|(b, _)| tag_of(b)).collect();
    assert_eq!(tags, (0..10).map(|i| format!("b{i}")).collect::<Vec<_>>());
    for (_, ticket) in taken {
        queue.done(ticket);
    }
    assert_eq!(queue.pending_items(), 0);
    // Only the segment still being written remains; the finished ones wait to be reused.
    assert_eq!(segment_files(dir.path()).len(), 1);
    let spares = spare_files(dir.path());
    assert!((1..=MAX_SPARES).contains(&spares.len()), "{spares:?}");
    assert_eq!(
        counter(&registry, "vigil_exporter_queue_written_items_total", &[]),
        55
    );
}

fn spare_files(dir: &Path) -> Vec<String> {
    fs::read_dir(queue_dir(dir, "otlp"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("spare-"))
        .collect()
}

/// Segments are reused: records written over a spare's old ones come back exactly, before and after a restart,
/// the old ones never (not delivered, not counted as damage), and the disk gauge counts the files.
#[tokio::test]
async fn a_recycled_segment_gives_back_only_its_new_records() {
    let dir = tempfile::tempdir().unwrap();
    {
        let registry = Registry::default();
        let queue = PersistentQueue::open("otlp", &settings(dir.path(), 4), &registry).unwrap();
        // 1 MiB segments: 300 KB records fill one every 4 records; all of them delivered.
        store_numbered(&queue, "old", 12).await;
        for (_, ticket) in take_available(&queue).await {
            queue.done(ticket);
        }
        let spares = spare_files(dir.path()).len();
        assert!(spares >= 2, "{spares} spares");
        // New records, smaller: the segments they go to are recycled and keep old records after them.
        for i in 0..20 {
            store(&queue, batch(&format!("new{i}"), 2, 100_000))
                .await
                .unwrap();
        }
        assert!(spare_files(dir.path()).len() < spares, "a spare was reused");
        let taken = take_available(&queue).await;
        let tags: Vec<String> = taken.iter().map(|(b, _)| tag_of(b)).collect();
        assert_eq!(tags, (0..20).map(|i| format!("new{i}")).collect::<Vec<_>>());
        // The first ten are delivered; the rest are in flight when the collector is killed.
        for (_, ticket) in taken.into_iter().take(10) {
            queue.done(ticket);
        }
        let on_disk: u64 = fs::read_dir(queue_dir(dir.path(), "otlp"))
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        let gauge = queue.shared.disk_bytes.load(Ordering::Acquire);
        assert!(
            gauge <= on_disk && on_disk - gauge < 4096,
            "gauge {gauge}, files {on_disk}"
        );
    }
    let registry = Registry::default();
    let queue = PersistentQueue::open("otlp", &settings(dir.path(), 4), &registry).unwrap();
    assert_eq!(queue.pending_items(), 20);
    let tags = take_tags(&queue).await;
    assert_eq!(
        tags,
        (10..20).map(|i| format!("new{i}")).collect::<Vec<_>>()
    );
    assert_eq!(lost(&registry), 0);
    assert_eq!(
        counter(&registry, "vigil_exporter_queue_corrupt_bytes_total", &[]),
        0
    );
    assert!(!queue_dir(dir.path(), "otlp").join("quarantine").exists());
    assert!(
        spare_files(dir.path()).is_empty(),
        "a restart starts its own spares"
    );
    let report = check::check(&queue_dir(dir.path(), "otlp"), false).unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.pending_items, 20);
    assert_eq!(report.dir, queue_dir(dir.path(), "otlp"));
}

/// A write cut short where old bytes follow (a whole header, half its payload, the file longer than the record,
/// as in a recycled segment): at restart it is a torn tail, its bytes quarantined and counted, no item counted
/// as lost (its client was never answered), the records before it kept and new ones written after them.
#[tokio::test]
async fn a_write_torn_over_old_bytes_is_a_torn_tail_not_lost_items() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = three_records(dir.path()).await;
    let mut record = Vec::new();
    record::encode(&mut record, &batch("torn", 9, 500), 3, 7, now_unix_ms());
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&wal)
        .unwrap();
    let marker_at = file.metadata().unwrap().len() - HEADER_LEN as u64;
    file.write_all_at(&record[..HEADER_LEN + 250], marker_at)
        .unwrap();
    file.set_len(marker_at + record.len() as u64 + 1_000)
        .unwrap();
    drop(file);
    let report = check::check(&queue_dir(dir.path(), "otlp"), false).unwrap();
    assert_eq!(
        (report.lost_items, report.pending_items),
        (0, 7),
        "{report}"
    );
    assert!(report.damage.iter().all(|d| d.to_end), "{report}");
    let registry = Registry::default();
    let queue = PersistentQueue::open("otlp", &settings(dir.path(), 64), &registry).unwrap();
    assert_eq!(
        counter(&registry, "vigil_exporter_queue_corrupt_bytes_total", &[]),
        record.len() as u64 + 1_000
    );
    assert_eq!(queue.pending_items(), 7);
    assert_eq!(take_tags(&queue).await, ["one", "two", "four"]);
    assert_eq!(lost(&registry), 0, "the torn record was never acknowledged");
    store(&queue, batch("later", 2, 100)).await.unwrap();
    queue.close().await;
    drop(queue);
    let (registry, tags) = reopen_and_drain(dir.path()).await;
    assert_eq!(tags, ["one", "two", "four", "later"]);
    assert_eq!(lost(&registry), 0);
}

/// The records of a segment file written over an older one: its own up to the end marker, never the old ones;
/// a hole of old bytes between its own (a power cut that kept some pages and not others) is damage, and what
/// follows the hole is read; a torn write (no end marker) is damage that ends where the old records begin.
#[test]
fn old_records_end_a_recycled_segment_and_holes_in_it_are_damage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seg.wal");
    let records = |seqs: std::ops::Range<u64>, size: usize| {
        let mut out = Vec::new();
        let mut offsets = Vec::new();
        for seq in seqs {
            offsets.push(out.len() as u64);
            record::encode(&mut out, &batch("r", 1, size), seq, seq, 0);
        }
        (out, offsets)
    };
    let entries = |bytes: &[u8]| {
        fs::write(&path, bytes).unwrap();
        let file = File::open(&path).unwrap();
        let mut found = Vec::new();
        let mut offset = 0;
        while let Some(entry) = next_entry(&file, offset, bytes.len() as u64, 100).unwrap() {
            offset = match &entry {
                Entry::Record { offset, header } => offset + header.record_len(),
                Entry::Damaged { offset, len, .. } => offset + len,
            };
            found.push(entry);
        }
        found
    };
    let describe = |found: &[Entry]| -> Vec<String> {
        found
            .iter()
            .map(|e| match e {
                Entry::Record { header, .. } => format!("record {}", header.seq),
                Entry::Damaged { len, to_end, .. } => format!("damaged {len} to_end={to_end}"),
            })
            .collect()
    };
    // A repair's tombstone for items lost before the first record carries the sequence number before it, and
    // belongs; an old record with that number does not.
    let mut repaired = Vec::new();
    record::encode_tombstone(&mut repaired, 99, 3, 0);
    let (first, _) = records(100..101, 10);
    repaired.extend_from_slice(&first);
    record::encode_end(&mut repaired, 101, 101);
    assert_eq!(describe(&entries(&repaired)), ["record 99", "record 100"]);
    let (just_before, _) = records(99..100, 10);
    assert!(entries(&just_before).is_empty());
    // In a new file: a record cut short at the end, and bytes that are no record at the end, are each one
    // damaged range to the end.
    let (two, two_offsets) = records(100..102, 500);
    let short = &two[..two_offsets[1] as usize + HEADER_LEN + 100];
    assert_eq!(
        describe(&entries(short)),
        [
            "record 100",
            &format!("damaged {} to_end=true", HEADER_LEN + 100)
        ]
    );
    let mut garbage = two[..two_offsets[1] as usize].to_vec();
    garbage.extend_from_slice(&[0xab; 30]);
    assert_eq!(
        describe(&entries(&garbage)),
        ["record 100", "damaged 30 to_end=true"]
    );
    // The file's earlier use: records 40..60 of 1,000 bytes.
    let (old, _) = records(40..60, 1_000);
    // Nothing new written yet (a crash right after the spare was renamed): no records.
    assert!(entries(&old).is_empty());
    // Three new records of 700 bytes over it, and the end marker the writer puts after them.
    let (mut new, new_offsets) = records(100..103, 700);
    record::encode_end(&mut new, 103, 103);
    let mut file = old.clone();
    file[..new.len()].copy_from_slice(&new);
    assert_eq!(
        describe(&entries(&file)),
        ["record 100", "record 101", "record 102"]
    );
    // A hole: record 101's bytes went back to the old ones.
    let mut holed = file.clone();
    let (a, b) = (new_offsets[1] as usize, new_offsets[2] as usize);
    holed[a..b].copy_from_slice(&old[a..b]);
    assert_eq!(
        describe(&entries(&holed)),
        [
            "record 100",
            &format!("damaged {} to_end=false", b - a),
            "record 102"
        ]
    );
    // Torn: record 102 cut to half a header, the old bytes after it.
    let mut torn = old.clone();
    let cut = new_offsets[2] as usize + HEADER_LEN / 2;
    torn[..cut].copy_from_slice(&new[..cut]);
    let found = entries(&torn);
    assert_eq!(describe(&found[..2]), ["record 100", "record 101"]);
    let Entry::Damaged {
        offset,
        len,
        to_end: true,
    } = found[2]
    else {
        panic!("{:?}", describe(&found));
    };
    assert_eq!(offset, new_offsets[2]);
    // The damage ends where the first whole old record begins (1,000-byte records, so at a multiple of
    // their length), not at the end of the file.
    let old_record_len = (old.len() / 20) as u64;
    assert_eq!(offset + len, (offset / old_record_len + 1) * old_record_len);
    assert_eq!(found.len(), 3);
}

#[tokio::test]
async fn a_restart_delivers_what_was_not_done_and_counts_redeliveries() {
    for fsync in [
        Fsync::Always,
        Fsync::Interval(Duration::from_millis(5)),
        Fsync::Never,
    ] {
        restart_with(fsync).await;
    }
}

async fn restart_with(fsync: Fsync) {
    let dir = tempfile::tempdir().unwrap();
    let settings = |dir: &Path, max_size_mib| StorageSettings {
        fsync,
        ..settings(dir, max_size_mib)
    };
    {
        let registry = Registry::default();
        let queue = PersistentQueue::open("otlp", &settings(dir.path(), 64), &registry).unwrap();
        for (tag, items) in [("done", 1), ("started", 2), ("waiting", 4)] {
            store(&queue, batch(tag, items, 10)).await.unwrap();
        }
        let (_keep, mut closing) = no_closing();
        let (first, ticket) = queue.take(&mut closing).await.unwrap();
        assert_eq!(tag_of(&first), "done");
        queue.done(ticket);
        let (second, _in_flight) = queue.take(&mut closing).await.unwrap();
        assert_eq!(tag_of(&second), "started");
        // Crash: no close, no done for the second.
    }
    // What an inspection after the crash shows: the record being sent, which may arrive twice.
    let report = check::check(&queue_dir(dir.path(), "otlp"), false).unwrap();
    assert_eq!(
        (
            report.pending_items,
            report.in_flight_records,
            report.in_flight_items
        ),
        (6, 1, 2)
    );
    assert!(
        report
            .to_string()
            .contains("1 of them (2 items) were handed to the exporter and not confirmed"),
        "{report}"
    );
    let registry = Registry::default();
    let queue = PersistentQueue::open("otlp", &settings(dir.path(), 64), &registry).unwrap();
    assert_eq!(queue.pending_items(), 6);
    let tags = take_tags(&queue).await;
    assert_eq!(tags, ["started", "waiting"]);
    assert_eq!(
        counter(&registry, "vigil_exporter_redelivered_items_total", &[]),
        2
    );
    // New records continue after the old ones.
    store(&queue, batch("new", 8, 10)).await.unwrap();
    let taken = take_available(&queue).await;
    assert_eq!(
        taken.iter().map(|(b, _)| tag_of(b)).collect::<Vec<_>>(),
        ["new"]
    );
    // Once everything is done, nothing is in flight any more, and the report says nothing of it.
    let (_keep, mut closing) = no_closing();
    queue.done(taken.into_iter().next().unwrap().1);
    // The redelivered records, taken by `take_tags` and left unfinished, are taken again to finish them.
    drop(queue);
    let queue = PersistentQueue::open("otlp", &settings(dir.path(), 64), &registry).unwrap();
    while let Ok(Some((_, ticket))) =
        tokio::time::timeout(Duration::from_millis(200), queue.take(&mut closing)).await
    {
        queue.done(ticket);
    }
    let report = check::check(&queue_dir(dir.path(), "otlp"), false).unwrap();
    assert_eq!((report.pending_items, report.in_flight_items), (0, 0));
    assert!(
        !report.to_string().contains("handed to the exporter"),
        "{report}"
    );
}

#[tokio::test]
async fn a_second_collector_cannot_open_the_same_queue() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::default();
    let _first = PersistentQueue::open("otlp", &settings(dir.path(), 64), &registry).unwrap();
    let second = PersistentQueue::open("otlp", &settings(dir.path(), 64), &registry);
    assert!(matches!(second, Err(OpenError::Locked(_))));
}

/// Writes three records of 1, 2 and 4 items, returns the segment path and the records' offsets.
async fn three_records(dir: &Path) -> (PathBuf, Vec<u64>) {
    let registry = Registry::default();
    let queue = PersistentQueue::open("otlp", &settings(dir, 64), &registry).unwrap();
    for (tag, items) in [("one", 1), ("two", 2), ("four", 4)] {
        store(&queue, batch(tag, items, 100)).await.unwrap();
    }
    queue.close().await;
    let qdir = queue_dir(dir, "otlp");
    let id = list_segments(&qdir).unwrap()[0];
    let (wal, _) = segment_paths(&qdir, id);
    let file = File::open(&wal).unwrap();
    let len = file.metadata().unwrap().len();
    let mut offsets = Vec::new();
    let mut offset = 0;
    while let Some(Entry::Record { offset: at, header }) =
        next_entry(&file, offset, len, id).unwrap()
    {
        offsets.push(at);
        offset = at + header.record_len();
    }
    (wal, offsets)
}

fn flip(path: &Path, at: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at as usize] ^= 0x10;
    fs::write(path, bytes).unwrap();
}

async fn reopen_and_drain(dir: &Path) -> (Registry, Vec<String>) {
    let registry = Registry::default();
    let queue = PersistentQueue::open("otlp", &settings(dir, 64), &registry).unwrap();
    let tags = take_tags(&queue).await;
    (registry, tags)
}

fn lost(registry: &Registry) -> u64 {
    counter(
        registry,
        "vigil_exporter_dropped_items_total",
        &[("reason", "queue_corrupted")],
    )
}

#[tokio::test]
async fn a_damaged_payload_loses_exactly_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, offsets) = three_records(dir.path()).await;
    flip(&wal, offsets[1] + HEADER_LEN as u64 + 30);
    let (registry, tags) = reopen_and_drain(dir.path()).await;
    assert_eq!(tags, ["one", "four"]);
    assert_eq!(lost(&registry), 2);
}

#[tokio::test]
async fn a_damaged_header_is_skipped_and_its_items_counted_from_the_next_record() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, offsets) = three_records(dir.path()).await;
    flip(&wal, offsets[1] + 20);
    let (registry, tags) = reopen_and_drain(dir.path()).await;
    assert_eq!(tags, ["one", "four"]);
    assert_eq!(lost(&registry), 2);
    let quarantined = fs::read_dir(queue_dir(dir.path(), "otlp").join("quarantine"))
        .unwrap()
        .count();
    assert_eq!(quarantined, 1);
    // The offline check agrees, and repairs.
    let report = check::check(&queue_dir(dir.path(), "otlp"), false).unwrap();
    assert!(!report.is_clean());
    assert_eq!(report.damage.len(), 1);
}

#[tokio::test]
async fn a_torn_tail_keeps_the_records_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, offsets) = three_records(dir.path()).await;
    let file = OpenOptions::new().write(true).open(&wal).unwrap();
    file.set_len(offsets[2] + 10).unwrap();
    drop(file);
    let (registry, tags) = reopen_and_drain(dir.path()).await;
    assert_eq!(tags, ["one", "two"]);
    assert_eq!(
        counter(&registry, "vigil_exporter_queue_corrupt_bytes_total", &[]),
        10
    );
}

#[tokio::test]
async fn a_missing_segment_is_counted_exactly() {
    let dir = tempfile::tempdir().unwrap();
    {
        let registry = Registry::default();
        let queue = PersistentQueue::open("otlp", &settings(dir.path(), 4), &registry).unwrap();
        store_numbered(&queue, "b", 12).await;
        queue.close().await;
    }
    let qdir = queue_dir(dir.path(), "otlp");
    let ids = list_segments(&qdir).unwrap();
    assert!(ids.len() >= 3, "{ids:?}");
    let (wal, _) = segment_paths(&qdir, ids[1]);
    let file = File::open(&wal).unwrap();
    let len = file.metadata().unwrap().len();
    let mut in_missing = 0;
    let mut offset = 0;
    while let Some(Entry::Record { offset: at, header }) =
        next_entry(&file, offset, len, ids[1]).unwrap()
    {
        in_missing += header.items;
        offset = at + header.record_len();
    }
    fs::remove_file(&wal).unwrap();
    let (registry, tags) = reopen_and_drain(dir.path()).await;
    assert_eq!(tags.len() as u64, 12 - in_missing);
    assert_eq!(lost(&registry), in_missing);
    let report = check::check(&qdir, false).unwrap();
    assert_eq!(report.lost_items, in_missing);
}

#[tokio::test]
async fn admission_refuses_past_the_size_limit_and_reopens_when_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::default();
    let queue = PersistentQueue::open("otlp", &settings(dir.path(), 1), &registry).unwrap();
    for i in 0..4 {
        store(&queue, batch(&format!("b{i}"), 1, 300_000))
            .await
            .unwrap();
    }
    assert!(matches!(queue.try_reserve(), Err(Refusal::Full { .. })));
    let (_keep, mut closing) = no_closing();
    let (_, ticket) = queue.take(&mut closing).await.unwrap();
    queue.done(ticket);
    assert_eq!(queue.try_reserve(), Ok(()));
    queue.close().await;
    assert_eq!(queue.try_reserve(), Err(Refusal::ShuttingDown));
}

#[tokio::test]
async fn repair_leaves_a_clean_queue_with_the_intact_records() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, offsets) = three_records(dir.path()).await;
    flip(&wal, offsets[1] + HEADER_LEN as u64 + 5);
    let qdir = queue_dir(dir.path(), "otlp");
    let report = check::check(&qdir, true).unwrap();
    assert!(report.repaired);
    assert_eq!(report.lost_items, 2);
    let again = check::check(&qdir, false).unwrap();
    assert!(again.is_clean(), "{again}");
    assert_eq!(again.pending_items, 5);
    let (_, tags) = reopen_and_drain(dir.path()).await;
    assert_eq!(tags, ["one", "four"]);
}

#[test]
fn fsync_policies_parse_and_bad_ones_say_what_is_accepted() {
    assert_eq!(Fsync::parse("always"), Ok(Fsync::Always));
    assert_eq!(Fsync::parse("never"), Ok(Fsync::Never));
    assert_eq!(
        Fsync::parse("interval(250ms)"),
        Ok(Fsync::Interval(Duration::from_millis(250)))
    );
    assert!(
        Fsync::parse("sometimes")
            .unwrap_err()
            .contains("interval(1s)")
    );
    assert!(Fsync::parse("interval(0s)").unwrap_err().contains("always"));
    assert!(Fsync::parse("interval(soon)").is_err());
}

#[test]
fn chunk_receipts_survive_batch_copies_until_the_last_is_released() {
    let (receipt, wait) = Receipt::new();
    let mut batch = Batch::empty(Signal::Traces);
    batch.push(Chunk {
        receipt: Some(receipt),
        ..Chunk::new(Bytes::from_static(b"x"), 1)
    });
    let mut copy = batch.clone();
    copy.release_receipts();
    drop(batch);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    assert_eq!(runtime.block_on(wait.wait()), Ok(()));
}

/// A fault the [`FaultyDisk`] plays on the next append (or sync) of a segment.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// The disk is full: nothing is written (`ENOSPC`).
    Full,
    /// Only the first bytes reach the file, then the write fails (`EIO`): a torn write.
    Torn(usize),
    /// The append succeeds and the sync fails (`EIO`).
    SyncFails,
}

/// The operating system, with faults played in order on segment appends; acknowledgement-file writes (16
/// bytes) pass through.
#[derive(Default)]
struct FaultyDisk {
    plan: std::sync::Mutex<std::collections::VecDeque<Fault>>,
    failing_sync: std::sync::atomic::AtomicBool,
}

impl FaultyDisk {
    fn next(&self, fault: Fault) {
        self.plan.lock().unwrap().push_back(fault);
    }
}

impl SegmentIo for FaultyDisk {
    fn write_at(&self, file: &File, parts: &[io::IoSlice<'_>], offset: u64) -> io::Result<()> {
        let bytes: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
        match self.plan.lock().unwrap().pop_front() {
            None => file.write_all_at(&bytes, offset),
            Some(Fault::Full) => Err(io::Error::from_raw_os_error(libc::ENOSPC)),
            Some(Fault::Torn(n)) => {
                file.write_all_at(&bytes[..n.min(bytes.len())], offset)?;
                Err(io::Error::from_raw_os_error(libc::EIO))
            }
            Some(Fault::SyncFails) => {
                self.failing_sync.store(true, Ordering::SeqCst);
                file.write_all_at(&bytes, offset)
            }
        }
    }

    fn append(&self, mut file: &File, bytes: &[u8]) -> io::Result<()> {
        use std::io::Write as _;
        file.write_all(bytes)
    }

    fn sync(&self, file: &File) -> io::Result<()> {
        match self.failing_sync.swap(false, Ordering::SeqCst) {
            true => Err(io::Error::from_raw_os_error(libc::EIO)),
            false => file.sync_data(),
        }
    }
}

/// For each fault: the client whose write meets it is told to retry (nothing it sent is kept), the problem
/// shows on `/readyz` until a write succeeds, the clients before and after are stored whole, and a restart
/// finds a clean queue with exactly their records, nothing counted as lost.
#[tokio::test]
async fn a_full_disk_a_torn_write_or_a_failed_sync_refuses_only_the_client_it_hits() {
    for fault in [
        Fault::Full,
        Fault::Torn(30),
        Fault::Torn(HEADER_LEN + 7),
        Fault::SyncFails,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::default();
        let disk = Arc::new(FaultyDisk::default());
        let queue =
            PersistentQueue::open_with("otlp", &settings(dir.path(), 4), &registry, disk.clone())
                .unwrap();
        store(&queue, batch("before", 3, 1_000)).await.unwrap();
        disk.next(fault);
        let refused = store(&queue, batch("hit", 5, 1_000)).await;
        let Err(Refusal::Storage {
            message,
            retry_after,
        }) = refused
        else {
            panic!("{fault:?}: the client must be told to retry, got {refused:?}");
        };
        assert!(!retry_after.is_zero());
        assert!(
            message.contains("Input/output error") || message.contains("No space left"),
            "{message}"
        );
        assert!(
            registry.problems().list().contains_key("queue/otlp"),
            "{fault:?}: the failure shows on /readyz"
        );
        assert_eq!(
            counter(&registry, "vigil_exporter_queue_write_errors_total", &[]),
            1
        );
        store(&queue, batch("after", 7, 1_000)).await.unwrap();
        assert!(
            registry.problems().list().is_empty(),
            "{fault:?}: a good write clears it"
        );
        assert_eq!(queue.pending_items(), 10, "{fault:?}");
        assert_eq!(take_tags(&queue).await, ["before", "after"], "{fault:?}");
        assert_eq!(
            counter(&registry, "vigil_exporter_queue_written_items_total", &[]),
            10
        );
        queue.close().await;
        drop(queue);

        let (registry, tags) = reopen_and_drain(dir.path()).await;
        assert_eq!(tags, ["before", "after"], "{fault:?}: after a restart");
        assert_eq!(lost(&registry), 0, "{fault:?}: nothing was damaged");
        assert_eq!(
            counter(&registry, "vigil_exporter_queue_corrupt_bytes_total", &[]),
            0
        );
    }
}

/// A process killed in the middle of a write leaves the head of a record at the end of the segment (its client
/// was never answered). The restart cuts it off, counts no acknowledged item as lost, keeps every record before
/// it, and the records written after the restart follow the cut and survive the next restart.
#[tokio::test]
async fn a_write_torn_by_a_crash_is_cut_off_at_restart_and_writing_goes_on() {
    for torn_len in [20, HEADER_LEN + 30] {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = three_records(dir.path()).await;
        let mut record = Vec::new();
        record::encode(&mut record, &batch("torn", 9, 500), 3, 7, now_unix_ms());
        // The next write starts where the last group's end marker is, over it.
        let marker_at = {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&wal)
                .unwrap();
            let marker_at = file.metadata().unwrap().len() - HEADER_LEN as u64;
            let mut marker = [0u8; HEADER_LEN];
            file.read_exact_at(&mut marker, marker_at).unwrap();
            assert!(record::decode_header(&marker).is_some_and(|h| h.end));
            file.write_all_at(&record[..torn_len], marker_at).unwrap();
            marker_at
        };
        let registry = Registry::default();
        let queue = PersistentQueue::open("otlp", &settings(dir.path(), 64), &registry).unwrap();
        assert_eq!(
            counter(&registry, "vigil_exporter_queue_corrupt_bytes_total", &[]),
            fs::metadata(&wal).unwrap().len() - marker_at,
            "exactly the torn bytes (and what is left of the marker under them) are quarantined"
        );
        assert_eq!(
            fs::metadata(&wal).unwrap().len() - marker_at,
            torn_len.max(HEADER_LEN) as u64
        );
        assert_eq!(lost(&registry), 0, "the torn record was never acknowledged");
        store(&queue, batch("later", 2, 100)).await.unwrap();
        assert_eq!(take_tags(&queue).await, ["one", "two", "four", "later"]);
        queue.close().await;
        drop(queue);
        let (registry, tags) = reopen_and_drain(dir.path()).await;
        assert_eq!(tags, ["one", "two", "four", "later"]);
        assert_eq!(lost(&registry), 0);
    }
}

/// The operating system, remembering how much of each file its last sync made durable, so that a test can cut
/// the power: every segment goes back to what was synced, as after a crash of the machine (a killed process
/// loses nothing: the kernel still holds what it wrote).
#[derive(Default)]
struct PowerCutDisk {
    /// Synced length by inode.
    durable: std::sync::Mutex<std::collections::HashMap<u64, u64>>,
}

impl SegmentIo for PowerCutDisk {
    fn write_at(&self, file: &File, parts: &[io::IoSlice<'_>], offset: u64) -> io::Result<()> {
        write_all_vectored_at(file, parts, offset)
    }

    fn append(&self, mut file: &File, bytes: &[u8]) -> io::Result<()> {
        use std::io::Write as _;
        file.write_all(bytes)
    }

    fn sync(&self, file: &File) -> io::Result<()> {
        use std::os::unix::fs::MetadataExt as _;
        file.sync_data()?;
        let metadata = file.metadata()?;
        self.durable
            .lock()
            .unwrap()
            .insert(metadata.ino(), metadata.len());
        Ok(())
    }
}

/// Cuts every segment under `dir` back to its length in `durable` (nothing of a segment never synced).
fn cut_power(dir: &Path, durable: &std::collections::HashMap<u64, u64>) {
    use std::os::unix::fs::MetadataExt as _;
    let queue = queue_dir(dir, "otlp");
    for entry in std::fs::read_dir(&queue).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "wal") {
            let file = OpenOptions::new().write(true).open(&path).unwrap();
            let inode = file.metadata().unwrap().ino();
            file.set_len(durable.get(&inode).copied().unwrap_or(0))
                .unwrap();
        }
    }
}

/// Stores one small record every 20 ms for `records` records, then cuts the power at once; returns how long
/// before the cut each record was acknowledged, and the records that a restart finds.
async fn write_then_cut_power(
    fsync: Fsync,
    records: usize,
) -> (Vec<(String, Duration)>, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let disk = Arc::new(PowerCutDisk::default());
    let storage = StorageSettings {
        fsync,
        ..settings(dir.path(), 16)
    };
    let queue =
        PersistentQueue::open_with("otlp", &storage, &Registry::default(), disk.clone()).unwrap();
    let mut acknowledged = Vec::new();
    for i in 0..records {
        let tag = format!("r{i:03}");
        store(&queue, batch(&tag, 1, 200)).await.unwrap();
        acknowledged.push((tag, std::time::Instant::now()));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The moment of the cut: only what was synced by now survives.
    let cut = std::time::Instant::now();
    let durable = disk.durable.lock().unwrap().clone();
    queue.close().await;
    drop(queue);
    cut_power(dir.path(), &durable);
    let (_, survivors) = reopen_and_drain(dir.path()).await;
    let ages = acknowledged
        .into_iter()
        .map(|(tag, at)| (tag, cut.duration_since(at)))
        .collect();
    (ages, survivors)
}

/// `fsync: always` loses nothing acknowledged to a power cut. `fsync: interval(100ms)` loses at most the
/// records of the last moments before it: every record acknowledged a second before the cut (ten intervals,
/// slack for a loaded machine) survives, the survivors are the oldest records with no gap, and the window lost
/// is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_loses_nothing_with_fsync_always_and_at_most_the_last_interval_otherwise() {
    let (ages, survivors) = write_then_cut_power(Fsync::Always, 20).await;
    let all: Vec<String> = ages.iter().map(|(tag, _)| tag.clone()).collect();
    assert_eq!(survivors, all, "fsync: always");

    let interval = Duration::from_millis(100);
    let (ages, survivors) = write_then_cut_power(Fsync::Interval(interval), 75).await;
    let all: Vec<String> = ages.iter().map(|(tag, _)| tag.clone()).collect();
    assert_eq!(
        survivors,
        all[..survivors.len()],
        "the survivors are the oldest records, in order"
    );
    let lost = &ages[survivors.len()..];
    for (tag, age) in lost {
        assert!(
            *age < Duration::from_secs(1),
            "{tag}, acknowledged {age:?} before the cut, was lost with fsync every {interval:?}"
        );
    }
    assert!(
        survivors.len() >= 25,
        "syncs happened: {} of {} survived",
        survivors.len(),
        all.len()
    );
    eprintln!(
        "fsync interval({interval:?}): {} of {} acknowledged records lost to the cut, the oldest {:?} before it",
        lost.len(),
        all.len(),
        lost.first().map(|(_, age)| *age).unwrap_or_default()
    );
}

/// More slices than one `pwritev` takes, some empty, at an offset: the file holds exactly their bytes there.
#[test]
fn a_vectored_write_lays_every_slice_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    fs::write(&path, vec![b'x'; 100]).unwrap();
    let pieces: Vec<Vec<u8>> = (0..3_000u32)
        .map(|i| vec![(i % 251) as u8; (i % 7) as usize])
        .collect();
    let slices: Vec<io::IoSlice<'_>> = pieces.iter().map(|p| io::IoSlice::new(p)).collect();
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    write_all_vectored_at(&file, &slices, 10).unwrap();
    let mut expected = vec![b'x'; 10];
    expected.extend(pieces.concat());
    if expected.len() < 100 {
        expected.extend(vec![b'x'; 100 - expected.len()]);
    }
    assert_eq!(fs::read(&path).unwrap(), expected);
}

/// A write the operating system refuses (here: a file opened read-only) is an error, not a retry for ever.
#[test]
fn a_refused_vectored_write_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    fs::write(&path, b"data").unwrap();
    let file = File::open(&path).unwrap();
    let bytes = [1u8; 8];
    let error = write_all_vectored_at(&file, &[io::IoSlice::new(&bytes)], 0).unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::EBADF));
    assert_eq!(fs::read(&path).unwrap(), b"data");
}

/// Every file of a queue directory and its bytes.
fn directory_contents(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            (name, fs::read(entry.path()).unwrap())
        })
        .collect()
}

#[tokio::test]
async fn a_queue_names_its_format_and_a_newer_one_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    three_records(dir.path()).await;
    let qdir = queue_dir(dir.path(), "otlp");
    let format = qdir.join(record::FORMAT_FILE);
    assert_eq!(fs::read_to_string(&format).unwrap(), "vigil-queue 1\n");

    // A later build's queue: this one neither delivers nor repairs it, and changes nothing in it.
    fs::write(&format, "vigil-queue 2\n").unwrap();
    let before = directory_contents(&qdir);
    let registry = Registry::default();
    let refused = PersistentQueue::open("otlp", &settings(dir.path(), 64), &registry);
    let Err(error) = refused else {
        panic!("a queue in format 2 was opened")
    };
    let message = error.to_string();
    assert!(
        message.contains("holds `vigil-queue 2`")
            && message.contains("reads `vigil-queue 1`")
            && message.contains(&format.display().to_string()),
        "{message}"
    );
    for repair in [false, true] {
        assert!(matches!(
            check::check(&qdir, repair),
            Err(OpenError::UnknownFormat { .. })
        ));
    }
    assert_eq!(directory_contents(&qdir), before);

    // A `FORMAT` that cannot be read is an error, not a missing file to write anew.
    fs::remove_file(&format).unwrap();
    fs::create_dir(&format).unwrap();
    for repair in [false, true] {
        match check::check(&qdir, repair) {
            Err(OpenError::Io { path, .. }) => assert_eq!(path, format),
            other => panic!("an unreadable FORMAT gave {other:?}"),
        }
    }
    fs::remove_dir(&format).unwrap();

    // Where the file cannot be written (here a directory is in the staged file's way; a full disk in life),
    // the queue still opens and drains: a missing file means version 1.
    fs::create_dir(qdir.join("FORMAT.tmp")).unwrap();
    let (_, tags) = reopen_and_drain(dir.path()).await;
    assert_eq!(tags, ["one", "two", "four"]);
    assert!(!format.exists());
    fs::remove_dir(qdir.join("FORMAT.tmp")).unwrap();

    // A queue written before the file existed is version 1: it opens, and gains the file.
    assert!(check::check(&qdir, false).unwrap().is_clean());
    assert!(
        !format.exists(),
        "a check that does not repair writes nothing"
    );
    let (_, tags) = reopen_and_drain(dir.path()).await;
    assert_eq!(tags, ["one", "two", "four"]);
    assert_eq!(fs::read_to_string(&format).unwrap(), "vigil-queue 1\n");
}

#[test]
fn format_files_name_exactly_one_version() {
    assert_eq!(
        record::decode_format(record::encode_format().as_bytes()),
        Some(record::FORMAT_VERSION)
    );
    assert_eq!(record::decode_format(b"vigil-queue 1"), Some(1));
    assert_eq!(record::decode_format(b"vigil-queue 12\n"), Some(12));
    for bad in [
        &b""[..],
        b"vigil-queue ",
        b"vigil-queue +1",
        b"vigil-queue 1\n\n",
        b"vigil-queue 1 ",
        b"vigil-queue  1",
        b"other 1",
        b"vigil-queue 99999999999",
        b"\xff",
    ] {
        assert_eq!(
            record::decode_format(bad),
            None,
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn a_format_file_that_cannot_be_put_in_place_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    // The staged file is written and synced, then cannot be renamed to a path whose directory is missing.
    assert!(write_format(dir.path(), &dir.path().join("missing").join("FORMAT")).is_err());
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    write_format(dir.path(), &dir.path().join(record::FORMAT_FILE)).unwrap();
    assert_eq!(
        directory_contents(dir.path())
            .into_iter()
            .collect::<Vec<_>>(),
        [("FORMAT".to_string(), b"vigil-queue 1\n".to_vec())]
    );
}
