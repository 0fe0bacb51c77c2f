//! A state database that is damaged (overwritten with garbage, truncated) is refused at open
//! with an error that names the file and says what to do; nothing is written to it.

use kubetrail_state::{CommitBatch, Dedup, Entry, StateError, Store, StoreOptions};

fn fill(path: &std::path::Path) {
    let mut store = Store::open(path, &StoreOptions::default()).expect("open");
    let q = store.queue_id("output/out").expect("queue");
    for round in 0..20u64 {
        let batch = CommitBatch {
            entries: (0..500u64)
                .map(|i| Entry {
                    dedup: Some(Dedup {
                        scope: "s".into(),
                        key: format!("key-{round}-{i:08}-{}", "k".repeat(40)),
                        value: "v".into(),
                        expires_at_unix_ms: i64::MAX,
                    }),
                    queues: [q].into(),
                    id: format!("id-{round}-{i}"),
                    data: b"data".to_vec().into(),
                })
                .collect(),
            checkpoints: vec![("src".into(), round.to_string())],
            ..CommitBatch::default()
        };
        store.commit(&batch).expect("commit");
    }
}

fn assert_damaged(err: StateError, path: &std::path::Path) {
    let text = err.to_string();
    assert!(matches!(err, StateError::Damaged { .. }), "{text}");
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("Restore it from a backup"), "{text}");
    assert!(text.contains("move it aside"), "{text}");
}

#[test]
fn a_file_of_garbage_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubetrail.db");
    let garbage: Vec<u8> = (0..64 << 10).map(|i| (i * 7 + 3) as u8).collect();
    std::fs::write(&path, &garbage).unwrap();
    let err = Store::open(&path, &StoreOptions::default()).expect_err("garbage opens");
    assert_damaged(err, &path);
    assert_eq!(std::fs::read(&path).unwrap(), garbage, "nothing written");
}

#[test]
fn a_truncated_database_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubetrail.db");
    fill(&path);
    let len = std::fs::metadata(&path).unwrap().len();
    assert!(len > 256 << 10, "{len}");
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len / 2).unwrap();
    drop(f);
    let err = Store::open(&path, &StoreOptions::default()).expect_err("a truncated file opens");
    assert_damaged(err, &path);
}

#[test]
fn a_flipped_page_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubetrail.db");
    fill(&path);
    let mut bytes = std::fs::read(&path).unwrap();
    // A b-tree page in the middle of the file: its header overwritten.
    let page = 4096 * (bytes.len() / 4096 / 2);
    for b in &mut bytes[page..page + 64] {
        *b = 0xA5;
    }
    std::fs::write(&path, &bytes).unwrap();
    let err = Store::open(&path, &StoreOptions::default()).expect_err("a damaged page opens");
    assert_damaged(err, &path);
}
