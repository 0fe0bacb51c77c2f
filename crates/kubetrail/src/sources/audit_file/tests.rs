//! Tests of the whole source (tailer and committer) against real files in a temporary
//! directory and a fake pipeline that keeps what is committed, with paused time: rotation by
//! rename (in the middle of a line), a rotated file without final newline, copytruncate,
//! gzip of backups (also across a restart), long lines, backpressure, restarts, and the
//! checkpoints of files long gone being forgotten.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kubetrail_core::{Original, Record, RecordKind};
use kubetrail_state::Checkpoint;

use super::batch::{FileCheckpoint, RecordContext};
use super::commit::Committer;
use super::config::AuditFileConfig;
use super::tail::TailMetrics;
use crate::pipeline::{PipelineError, SourceError, Submission, SubmitOutcome};
use crate::shutdown::{self, ShutdownTrigger};
use crate::telemetry::ComponentMetrics;

/// What the fake pipeline committed.
#[derive(Default)]
struct FakeState {
    checkpoints: HashMap<String, String>,
    /// Checkpoint streams deleted, in order.
    forgotten: Vec<String>,
    records: Vec<Record>,
    dedup: HashSet<(String, String)>,
    duplicates: usize,
    /// Answer `QueueFull` to this many submissions from now.
    queue_full: usize,
    submits: usize,
    submission_sizes: Vec<usize>,
    /// Only count records and bytes (for the throughput measurement).
    count_only: bool,
    counted: usize,
    counted_bytes: usize,
}

#[derive(Default)]
struct Fake(Mutex<FakeState>);

impl Fake {
    fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.0.lock().unwrap()
    }

    /// Audit ids (`auditID/stage`) committed, in order.
    fn ids(&self) -> Vec<String> {
        self.lock()
            .records
            .iter()
            .filter(|r| r.kind == RecordKind::K8sAudit)
            .map(|r| r.id.clone())
            .collect()
    }

    fn errors(&self) -> Vec<Record> {
        self.lock()
            .records
            .iter()
            .filter(|r| r.kind == RecordKind::Error)
            .cloned()
            .collect()
    }

    fn checkpoints(&self) -> Vec<FileCheckpoint> {
        self.lock()
            .checkpoints
            .values()
            .map(|v| FileCheckpoint::decode(v).unwrap())
            .collect()
    }
}

#[async_trait::async_trait]
impl Committer for Fake {
    async fn submit(&self, sub: Submission) -> Result<SubmitOutcome, PipelineError> {
        let mut s = self.lock();
        s.submits += 1;
        if s.queue_full > 0 {
            s.queue_full -= 1;
            return Err(PipelineError::QueueFull {
                output: "fake".into(),
            });
        }
        s.submission_sizes.push(sub.records.len());
        let mut out = SubmitOutcome::default();
        if s.count_only {
            s.counted += sub.records.len();
            s.counted_bytes += sub.records.iter().map(|r| r.encode().len()).sum::<usize>();
            return Ok(out);
        }
        for r in sub.records {
            if let Some(d) = &r.dedup
                && !s.dedup.insert((d.scope.to_string(), d.key.clone()))
            {
                s.duplicates += 1;
                out.duplicates += 1;
                continue;
            }
            out.accepted += 1;
            s.records.push(r);
        }
        for (stream, value) in sub.checkpoints {
            s.checkpoints.insert(stream, value);
        }
        Ok(out)
    }

    async fn checkpoint(&self, stream: &str) -> Result<Option<Checkpoint>, PipelineError> {
        Ok(self.lock().checkpoints.get(stream).map(|v| Checkpoint {
            value: v.clone(),
            updated_at_unix_ms: 0,
        }))
    }

    fn stream_name(&self, suffix: &str) -> String {
        format!("audit_file.0/{suffix}")
    }

    async fn checkpoints_under(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, Checkpoint)>, PipelineError> {
        let prefix = self.stream_name(prefix);
        let mut out: Vec<(String, Checkpoint)> = self
            .lock()
            .checkpoints
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(k, v)| {
                (
                    k.clone(),
                    Checkpoint {
                        value: v.clone(),
                        updated_at_unix_ms: 0,
                    },
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    async fn forget(&self, streams: Vec<String>) -> Result<(), PipelineError> {
        let mut s = self.lock();
        for stream in streams {
            s.checkpoints.remove(&stream);
            s.forgotten.push(stream);
        }
        Ok(())
    }
}

/// A realistic audit line with a unique `auditID` (`id-<n>`), `pad` bytes of padding.
fn event(n: usize, pad: usize) -> String {
    format!(
        concat!(
            r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"RequestResponse","auditID":"id-{:08}","#,
            r#""stage":"ResponseComplete","requestURI":"/api/v1/namespaces/default/pods?limit=500","verb":"list","#,
            r#""user":{{"username":"system:admin","groups":["system:masters"]}},"sourceIPs":["10.0.0.1"],"#,
            r#""responseStatus":{{"metadata":{{}},"code":200}},"requestObject":{{"pad":"{}"}},"#,
            r#""requestReceivedTimestamp":"2024-05-01T10:00:00.000000Z","stageTimestamp":"2024-05-01T10:00:00.100000Z"}}"#
        ),
        n,
        "x".repeat(pad)
    )
}

fn id(n: usize) -> String {
    format!("id-{n:08}/ResponseComplete")
}

fn lines(range: std::ops::Range<usize>) -> String {
    range.map(|n| event(n, n % 300) + "\n").collect()
}

fn append(path: &Path, text: &str) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn gzip(from: &Path, to: &Path) {
    let data = std::fs::read(from).unwrap();
    let mut enc =
        flate2::write::GzEncoder::new(File::create(to).unwrap(), flate2::Compression::fast());
    enc.write_all(&data).unwrap();
    enc.finish().unwrap();
}

fn config(dir: &Path) -> AuditFileConfig {
    let mut s = kubetrail_core::config::Section::from_pairs(
        kubetrail_core::config::SectionKind::Input,
        "audit_file",
        &[("path", &format!("{}/audit*.log*", dir.display()))],
    );
    AuditFileConfig::from_section(&mut s).unwrap()
}

struct Running {
    trigger: ShutdownTrigger,
    task: tokio::task::JoinHandle<Result<(), SourceError>>,
    metrics: ComponentMetrics,
    tail_metrics: TailMetrics,
}

fn start(cfg: AuditFileConfig, fake: &Arc<Fake>) -> Running {
    let (trigger, shutdown) = shutdown::channel();
    let metrics = ComponentMetrics::default();
    let tail_metrics = TailMetrics::default();
    let cx = RecordContext {
        source: Arc::from("audit_file.0"),
        tag: Arc::from("audit"),
        raw_format: cfg.raw_format,
        max_line: cfg.buffer_max_size,
    };
    let task = tokio::spawn(super::run(
        cfg,
        fake.clone(),
        shutdown,
        metrics.clone(),
        tail_metrics.clone(),
        cx,
        None,
    ));
    Running {
        trigger,
        task,
        metrics,
        tail_metrics,
    }
}

impl Running {
    async fn stop(self) {
        self.trigger.fire();
        self.task.await.unwrap().unwrap();
    }
}

/// Waits (in paused time) until `cond` holds; fails after a minute of virtual time.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..6000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn wait_ids(fake: &Fake, expected: &[String]) {
    wait_until(&format!("{} records", expected.len()), || {
        fake.ids().len() >= expected.len()
    })
    .await;
    // A little longer, so a duplicate arriving late is caught too.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = fake.ids();
    let set: HashSet<&String> = got.iter().collect();
    assert_eq!(set.len(), got.len(), "duplicates in {got:?}");
    assert_eq!(fake.lock().duplicates, 0, "the source submitted duplicates");
    let mut sorted = got.clone();
    sorted.sort();
    let mut want = expected.to_vec();
    want.sort();
    assert_eq!(sorted, want);
}

fn ids(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(id).collect()
}

#[tokio::test(start_paused = true)]
async fn reads_whole_lines_only_and_commits_offsets_with_them() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    append(&log, &lines(0..10));
    let fake = Arc::new(Fake::default());
    let run = start(config(dir.path()), &fake);
    wait_ids(&fake, &ids(0..10)).await;

    let partial = event(10, 5);
    append(&log, &(lines(11..15) + &partial[..100]));
    wait_ids(&fake, &[ids(0..10), ids(11..15)].concat()).await;
    // The half-written line is not a record, and the offset stops before it.
    let len = std::fs::metadata(&log).unwrap().len();
    let cps = fake.checkpoints();
    assert_eq!(cps.len(), 1);
    assert_eq!(cps[0].offset, len - 100);
    assert!(!cps[0].rotated && !cps[0].done);

    append(&log, &(partial[100..].to_string() + "\n"));
    wait_ids(&fake, &[ids(0..15)].concat()).await;
    assert_eq!(
        fake.checkpoints()[0].offset,
        std::fs::metadata(&log).unwrap().len()
    );
    assert!(fake.errors().is_empty());
    assert_eq!(run.metrics.errors.get(), 0);
    // Records keep the line exactly as written.
    let first = fake.lock().records[0].clone();
    assert!(matches!(first.original, Some(Original::Raw(r)) if r.get() == event(0, 0)));
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn read_from_head_off_starts_after_the_last_complete_line() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let partial = event(5, 10);
    append(&log, &(lines(0..5) + &partial[..50]));
    let mut cfg = config(dir.path());
    cfg.read_from_head = false;
    let fake = Arc::new(Fake::default());
    let run = start(cfg, &fake);
    // The starting point is committed at once, so a restart before any new line keeps it.
    wait_until("the first checkpoint", || !fake.checkpoints().is_empty()).await;
    assert_eq!(fake.checkpoints()[0].offset, lines(0..5).len() as u64);
    append(&log, &(partial[50..].to_string() + "\n" + &lines(6..8)));
    wait_ids(&fake, &ids(5..8)).await;
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn rename_rotation_in_the_middle_of_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let rotated = dir.path().join("audit-2024-05-01T10-00-00.000.log");
    let half = event(3, 40);
    append(&log, &(lines(0..3) + &half[..120]));
    let fake = Arc::new(Fake::default());
    let run = start(config(dir.path()), &fake);
    wait_ids(&fake, &ids(0..3)).await;

    // The apiserver's writer still has the old file open when it is renamed: the rest of the
    // line lands in the rotated file; then the new file starts.
    let mut writer = OpenOptions::new().append(true).open(&log).unwrap();
    std::fs::rename(&log, &rotated).unwrap();
    writer
        .write_all(format!("{}\n{}", &half[120..], lines(4..6)).as_bytes())
        .unwrap();
    drop(writer);
    append(&log, &lines(6..9));
    wait_ids(&fake, &ids(0..9)).await;

    // After rotate_wait the rotated file is left, read to its end.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let cps = fake.checkpoints();
    let old = cps
        .iter()
        .find(|c| c.path == rotated.to_string_lossy())
        .expect("checkpoint of the rotated file");
    assert!(old.rotated && old.done, "{old:?}");
    assert_eq!(old.offset, std::fs::metadata(&rotated).unwrap().len());
    assert_eq!(run.tail_metrics.rotations.get(), 1);
    assert!(fake.errors().is_empty());
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_rotated_file_without_final_newline_gives_its_last_line_after_rotate_wait() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    append(&log, &(lines(0..2) + &event(2, 7)));
    let fake = Arc::new(Fake::default());
    let run = start(config(dir.path()), &fake);
    wait_ids(&fake, &ids(0..2)).await;
    // Not rotated: the last line waits for its newline, however long.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(fake.ids().len(), 2);

    std::fs::rename(&log, dir.path().join("audit-2024-05-01T10-00-00.000.log")).unwrap();
    append(&log, &lines(3..4));
    wait_until("the new file's line", || fake.ids().contains(&id(3))).await;
    assert!(!fake.ids().contains(&id(2)), "emitted before rotate_wait");
    wait_ids(&fake, &ids(0..4)).await;
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn copytruncate_starts_again_at_zero_and_reads_the_rest_from_the_copy() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    append(&log, &lines(0..5));
    let fake = Arc::new(Fake::default());
    let run = start(config(dir.path()), &fake);
    wait_ids(&fake, &ids(0..5)).await;

    // Lines written just before the copy, which the tailer has not read yet, are only in the
    // copy once the file is truncated.
    append(&log, &lines(5..8));
    std::fs::copy(&log, dir.path().join("audit.log.1")).unwrap();
    OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&log, &lines(8..10));
    wait_ids(&fake, &ids(0..10)).await;
    assert_eq!(run.tail_metrics.truncations.get(), 1);

    // And the truncated file goes on normally.
    append(&log, &lines(10..12));
    wait_ids(&fake, &ids(0..12)).await;
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_truncated_file_is_read_again_from_zero() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    append(&log, &lines(0..20));
    let fake = Arc::new(Fake::default());
    let run = start(config(dir.path()), &fake);
    wait_ids(&fake, &ids(0..20)).await;
    OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    append(&log, &lines(20..22));
    wait_ids(&fake, &ids(0..22)).await;
    // Rewritten past the old read position: nothing is read from the middle of a line.
    OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&log, &lines(22..80));
    wait_ids(&fake, &ids(0..80)).await;
    assert!(fake.errors().is_empty(), "{:?}", fake.errors());
    assert_eq!(run.tail_metrics.truncations.get(), 2);
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn gzip_of_the_rotated_file_is_not_read_twice() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let rotated = dir.path().join("audit-2024-05-01T10-00-00.000.log");
    append(&log, &lines(0..5));
    let fake = Arc::new(Fake::default());
    let run = start(config(dir.path()), &fake);
    wait_ids(&fake, &ids(0..5)).await;

    append(&log, &lines(5..7));
    std::fs::rename(&log, &rotated).unwrap();
    append(&log, &lines(7..9));
    gzip(&rotated, &rotated.with_extension("log.gz"));
    std::fs::remove_file(&rotated).unwrap();
    wait_ids(&fake, &ids(0..9)).await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(fake.ids().len(), 9);
    assert_eq!(fake.lock().duplicates, 0);
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_gzipped_backup_is_read_on_from_its_uncompressed_offset_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let rotated = dir.path().join("audit-2024-05-01T10-00-00.000.log");
    append(&log, &lines(0..5));
    let fake = Arc::new(Fake::default());
    let run = start(config(dir.path()), &fake);
    wait_ids(&fake, &ids(0..5)).await;
    run.stop().await;

    // While stopped: more lines, rotation, compression (the plain backup removed).
    append(&log, &(lines(5..8) + &event(8, 3)));
    std::fs::rename(&log, &rotated).unwrap();
    gzip(&rotated, &rotated.with_extension("log.gz"));
    std::fs::remove_file(&rotated).unwrap();
    append(&log, &lines(9..11));

    let run = start(config(dir.path()), &fake);
    // A gzip file is complete: its last line without newline is emitted at its end.
    wait_ids(&fake, &ids(0..11)).await;
    let cps = fake.checkpoints();
    assert!(
        cps.iter().any(|c| c.done && c.path.ends_with(".log.gz")),
        "{cps:?}"
    );
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_line_of_5_mib_is_read_and_a_line_over_the_limit_is_an_error_record() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let mut cfg = config(dir.path());
    cfg.buffer_max_size = 6 << 20;
    let big = event(1, 5 << 20);
    let too_big = event(2, 7 << 20);
    let offset_of_too_big = (event(0, 0).len() + 1 + big.len() + 1) as u64;
    append(
        &log,
        &format!("{}\n{big}\n{too_big}\n{}\n", event(0, 0), event(3, 0)),
    );
    let fake = Arc::new(Fake::default());
    let run = start(cfg, &fake);
    wait_ids(&fake, &[id(0), id(1), id(3)]).await;
    let errors = fake.errors();
    assert_eq!(errors.len(), 1);
    let e = &errors[0];
    assert_eq!(e.fields["offset"], offset_of_too_big);
    assert_eq!(e.fields["file"], log.to_string_lossy().as_ref());
    assert!(
        e.fields["error"]
            .as_str()
            .unwrap()
            .contains("buffer_max_size"),
        "{:?}",
        e.fields
    );
    assert!(
        matches!(&e.original, Some(Original::Value(v)) if v.as_str().unwrap().starts_with("{\"kind\":\"Event\""))
    );
    assert_eq!(run.metrics.errors.get(), 1);
    let big_record = fake
        .lock()
        .records
        .iter()
        .find(|r| r.id == id(1))
        .cloned()
        .unwrap();
    assert!(matches!(big_record.original, Some(Original::Raw(r)) if r.get().len() == big.len()));
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn lines_that_are_not_audit_events_become_error_records() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let bad = "{\"kind\":\"Pod\",\"metadata\":{\"name\":\"p\"}}";
    let garbage = "not json at all \u{1F600}";
    append(
        &log,
        &format!("{}\n{bad}\n\n{garbage}\n{}\n", event(0, 0), event(1, 0)),
    );
    let fake = Arc::new(Fake::default());
    let run = start(config(dir.path()), &fake);
    wait_ids(&fake, &ids(0..2)).await;
    let errors = fake.errors();
    assert_eq!(errors.len(), 2, "{errors:?}");
    let first_len = event(0, 0).len() as u64 + 1;
    assert_eq!(errors[0].fields["offset"], first_len);
    assert!(matches!(&errors[0].original, Some(Original::Raw(r)) if r.get() == bad));
    assert_eq!(errors[1].fields["offset"], first_len + bad.len() as u64 + 2);
    assert!(matches!(&errors[1].original, Some(Original::Value(v)) if v == garbage));
    assert_eq!(run.metrics.errors.get(), 2);
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_is_waited_out_and_the_same_batch_retried() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    append(&log, &lines(0..50));
    let fake = Arc::new(Fake::default());
    fake.lock().queue_full = 4;
    let mut cfg = config(dir.path());
    cfg.batch_records = 10;
    let run = start(cfg, &fake);
    wait_ids(&fake, &ids(0..50)).await;
    let (sizes, submits) = {
        let s = fake.lock();
        (s.submission_sizes.clone(), s.submits)
    };
    // Batches of 10 lines; the committer merges at most MAX_MERGED batches that queued up.
    let most = 10 * super::commit::MAX_MERGED;
    assert!(sizes.iter().all(|n| *n <= most), "{sizes:?}");
    assert_eq!(sizes.iter().sum::<usize>(), 50, "{sizes:?}");
    assert_eq!(submits, sizes.len() + 4);
    assert_eq!(run.tail_metrics.backpressure.get(), 4);
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_restart_goes_on_from_the_committed_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    append(&log, &lines(0..20));
    let fake = Arc::new(Fake::default());
    let run = start(config(dir.path()), &fake);
    wait_ids(&fake, &ids(0..20)).await;
    run.stop().await;
    append(&log, &lines(20..30));
    let mut cfg = config(dir.path());
    // A file already known is not affected by read_from_head.
    cfg.read_from_head = false;
    let run = start(cfg, &fake);
    wait_ids(&fake, &ids(0..30)).await;
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_new_file_under_a_known_name_is_read_from_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    append(&log, &lines(0..30));
    let fake = Arc::new(Fake::default());
    let run = start(config(dir.path()), &fake);
    wait_ids(&fake, &ids(0..30)).await;
    run.stop().await;
    // Removed and created again while stopped (very likely with the same inode), shorter
    // than the old offset: neither name nor inode says it is new, its first line does.
    std::fs::remove_file(&log).unwrap();
    append(&log, &lines(30..33));
    let run = start(config(dir.path()), &fake);
    wait_ids(&fake, &ids(0..33)).await;
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_file_too_short_to_fingerprint_waits() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let line = event(0, 0);
    append(&log, &line[..20]);
    let fake = Arc::new(Fake::default());
    let run = start(config(dir.path()), &fake);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(fake.checkpoints().is_empty());
    append(&log, &(line[20..].to_string() + "\n"));
    wait_ids(&fake, &ids(0..1)).await;
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn older_backups_are_read_before_the_active_file() {
    let dir = tempfile::tempdir().unwrap();
    let b1 = dir.path().join("audit-2024-05-01T09-00-00.000.log");
    let b2 = dir.path().join("audit-2024-05-01T10-00-00.000.log.gz");
    let plain2 = dir.path().join("tmp-b2");
    append(&b1, &lines(0..10));
    append(&plain2, &lines(10..20));
    gzip(&plain2, &b2);
    let log = dir.path().join("audit.log");
    append(&log, &lines(20..30));
    let t0 = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    for (i, p) in [&b1, &b2, &log].into_iter().enumerate() {
        File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(t0 + Duration::from_secs(i as u64))
            .unwrap();
    }
    let fake = Arc::new(Fake::default());
    let run = start(config(dir.path()), &fake);
    wait_ids(&fake, &ids(0..30)).await;
    // The plain backup comes first, the active file last (gzip backups after plain ones).
    let got = fake.ids();
    let pos = |n: usize| got.iter().position(|x| *x == id(n)).unwrap();
    assert!(pos(9) < pos(20) && pos(19) < pos(20), "{got:?}");
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_unreadable_checkpoint_means_reading_the_file_from_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let content = lines(0..5);
    append(&log, &content);
    let fp = super::fingerprint::Fingerprint::of_start(content.as_bytes()).unwrap();
    let fake = Arc::new(Fake::default());
    fake.lock()
        .checkpoints
        .insert(format!("audit_file.0/fp:{}", fp.hex()), "garbage".into());
    let mut cfg = config(dir.path());
    cfg.read_from_head = false;
    let run = start(cfg, &fake);
    wait_ids(&fake, &ids(0..5)).await;
    assert_eq!(fake.checkpoints()[0].offset, content.len() as u64);
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn checkpoints_of_files_gone_for_dedup_retention_are_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let (log, old, back) = (
        dir.path().join("audit.log"),
        dir.path().join("audit-1.log"),
        dir.path().join("audit-2.log"),
    );
    append(&log, &lines(0..10));
    append(&old, &lines(10..20));
    append(&back, &lines(20..30));
    let fake = Arc::new(Fake::default());
    // A checkpoint of a file that was gone before this run started.
    fake.lock().checkpoints.insert(
        "audit_file.0/fp:0123456789abcdef".into(),
        FileCheckpoint {
            offset: 7,
            path: "/gone/audit.log".into(),
            rotated: true,
            done: true,
        }
        .encode(),
    );
    let mut cfg = config(dir.path());
    cfg.dedup_retention = Duration::from_secs(600);
    let run = start(cfg, &fake);
    wait_ids(&fake, &ids(0..30)).await;
    let stream_of = |path: &Path| {
        let want = path.to_string_lossy().to_string();
        let s = fake.lock();
        s.checkpoints
            .iter()
            .find(|(_, v)| FileCheckpoint::decode(v).is_some_and(|c| c.path == want))
            .map(|(k, _)| k.clone())
            .unwrap()
    };
    let (old_stream, back_stream) = (stream_of(&old), stream_of(&back));
    // Both backups go; one comes back before dedup_retention has passed.
    std::fs::remove_file(&old).unwrap();
    let aside = dir.path().join("aside");
    std::fs::rename(&back, &aside).unwrap();
    tokio::time::sleep(Duration::from_secs(300)).await;
    assert!(fake.lock().forgotten.is_empty(), "forgotten too early");
    std::fs::rename(&aside, &back).unwrap();
    tokio::time::sleep(Duration::from_secs(301)).await;
    wait_until("the gone checkpoints forgotten", || {
        fake.lock().forgotten.len() == 2
    })
    .await;
    let mut forgotten = fake.lock().forgotten.clone();
    forgotten.sort();
    let mut want = vec![old_stream, "audit_file.0/fp:0123456789abcdef".to_string()];
    want.sort();
    assert_eq!(forgotten, want);
    // The file that came back and the active one keep theirs, and nothing was read twice.
    assert!(fake.lock().checkpoints.contains_key(&back_stream));
    append(&log, &lines(30..31));
    wait_ids(&fake, &ids(0..31)).await;
    tokio::time::sleep(Duration::from_secs(1200)).await;
    assert_eq!(
        fake.lock().forgotten.len(),
        2,
        "files still there are never forgotten"
    );
    run.stop().await;
}
