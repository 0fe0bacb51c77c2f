//! A full disk, for real: the store's directory on a small tmpfs, filled by queue segments and
//! by the database. A commit that does not fit fails and says so (`is_disk_full`); the store
//! opens again without writing; with the reserve given back, acknowledgements commit and the
//! segments they free are freed; new records commit again once there is room.
//!
//! Mounting needs root (CI runs as root): without it, or if the mount fails, the test fails
//! and says why; it never passes without having filled a disk.

use std::path::{Path, PathBuf};
use std::process::Command;

use kubetrail_state::{
    Ack, CommitBatch, Dedup, Entry, QueueId, StateError, Store, StoreOptions, free_bytes,
};

/// A tmpfs mounted on a temporary directory, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Tmpfs { dir },
            Ok(o) => panic!(
                "cannot mount a tmpfs for the disk-full test (it needs root, as in CI): {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => panic!("cannot run mount for the disk-full test: {e}"),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Bytes that do not compress (so that segments grow as fast as records come).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

fn batch(q: QueueId, from: u64, n: u64, size: usize) -> CommitBatch {
    CommitBatch {
        entries: (from..from + n)
            .map(|i| Entry {
                dedup: Some(Dedup {
                    scope: "s".into(),
                    key: format!("key-{i:012}"),
                    value: "v".into(),
                    expires_at_unix_ms: i64::MAX,
                }),
                queues: [q].into(),
                id: format!("id-{i}"),
                data: noise(i, size).into(),
            })
            .collect(),
        checkpoints: vec![("src".into(), from.to_string())],
        ..CommitBatch::default()
    }
}

fn options() -> StoreOptions {
    StoreOptions {
        segment_bytes: 1 << 20,
        reserve_bytes: 1 << 20,
        ..StoreOptions::default()
    }
}

/// Commits batches until one fails; returns the error and the number of records stored.
fn fill(store: &mut Store, q: QueueId, size: usize) -> (StateError, u64) {
    let mut n = 0;
    loop {
        match store.commit(&batch(q, n, 20, size)) {
            Ok(_) => n += 20,
            Err(e) => return (e, n),
        }
    }
}

fn ack(q: QueueId, up_to_seq: u64) -> CommitBatch {
    CommitBatch {
        acks: vec![Ack {
            queue: q,
            up_to_seq,
            state: Some(("output/out".into(), up_to_seq.to_string())),
        }],
        ..CommitBatch::default()
    }
}

/// Takes whatever room is left with a file of its own.
fn fill_the_rest(fs: &Tmpfs) {
    use std::io::Write;
    let mut f = std::fs::File::create(fs.path().join("filler")).expect("filler");
    let chunk = vec![1u8; 4096];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
    assert_eq!(free_bytes(fs.path()).unwrap(), 0);
}

fn db(fs: &Tmpfs) -> PathBuf {
    fs.path().join("kubetrail.db")
}

#[test]
fn segments_fill_the_disk_and_acknowledgements_free_it_again() {
    let fs = Tmpfs::mount("12m");
    let db = db(&fs);
    let mut store = Store::open(&db, &options()).expect("open");
    let q = store.queue_id("output/out").expect("queue");
    let mut reader = store.reader().expect("reader");
    // Large records: the segments fill the disk.
    let (err, stored) = fill(&mut store, q, 16 << 10);
    assert!(err.is_disk_full(), "{err}");
    assert!(stored > 100, "{stored}");
    // Less room than one more batch (20 records of 16 KiB) needs; then none at all.
    let free = free_bytes(fs.path()).unwrap();
    assert!(free < 320 << 10, "{free}");
    fill_the_rest(&fs);

    // Opening again writes nothing: it works on the full disk (the bug this test is for).
    let again = store.close_for_reopen();
    let mut store = again.open().expect("reopen on a full disk");
    // Acknowledgements commit once the reserve is given back, refused records or not.
    assert_eq!(store.release_reserve(), 1 << 20);
    store.set_tight(true);
    let items = reader
        .read_queue(q, 0, usize::MAX, usize::MAX)
        .expect("read");
    assert_eq!(items.len() as u64, stored);
    let before = free_bytes(fs.path()).unwrap();
    store
        .commit(&ack(q, stored / 2))
        .expect("ack on a full disk");
    let half = free_bytes(fs.path()).unwrap();
    assert!(
        half > before + (2 << 20),
        "the delivered segments were freed: {before} -> {half}"
    );
    // Everything delivered: every segment goes, the last one and the spare too.
    store.commit(&ack(q, stored)).expect("ack");
    let qdir = fs
        .path()
        .join("kubetrail.db-queues")
        .join(format!("q{}", q.get()));
    let left: Vec<_> = std::fs::read_dir(&qdir)
        .expect("queue dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(left.is_empty(), "nothing kept on a full disk: {left:?}");
    let all = free_bytes(fs.path()).unwrap();
    assert!(all > 8 << 20, "{all}");
    assert!(store.restore_reserve(), "room for the reserve again");
    store.set_tight(false);
    // And records commit again, after the last ones.
    store
        .commit(&batch(q, stored, 20, 16 << 10))
        .expect("commit");
    let items = reader
        .read_queue(q, stored, usize::MAX, usize::MAX)
        .expect("read");
    assert_eq!(
        items.first().map(|i| (i.seq, i.id.clone())),
        Some((stored + 1, format!("id-{stored}")))
    );
    assert_eq!(items.len(), 20);
}

#[test]
fn the_database_fills_the_disk_and_a_new_process_opens_it() {
    let fs = Tmpfs::mount("6m");
    let db = db(&fs);
    let mut store = Store::open(&db, &options()).expect("open");
    let q = store.queue_id("output/out").expect("queue");
    // Small records: the dedup keys (the database and its WAL) fill the disk.
    let (err, stored) = fill(&mut store, q, 10);
    assert!(err.is_disk_full(), "{err}");
    assert!(stored > 1000, "{stored}");
    drop(store);
    fill_the_rest(&fs);
    // A new process (nothing of the old one left open) opens the full store and reads it.
    let mut store = Store::open(&db, &options()).expect("open on a full disk");
    let mut reader = store.reader().expect("reader");
    let items = reader
        .read_queue(q, 0, usize::MAX, usize::MAX)
        .expect("read");
    assert_eq!(items.len() as u64, stored);
    store.release_reserve();
    store.set_tight(true);
    store.commit(&ack(q, stored)).expect("ack on a full disk");
    assert_eq!(store.queue_depth(q).records, 0);
    assert_eq!(
        store
            .checkpoint("output/out")
            .expect("checkpoint")
            .map(|c| c.value),
        Some(stored.to_string())
    );
}
