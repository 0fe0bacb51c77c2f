//! The lock file keeps a second store (in this process or another) off a database at once.

use std::path::Path;
use std::process::Command;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use kubetrail_state::{StateError, Store, StoreOptions, SyncMode, lock_path};

/// Env var that turns `child_tries_to_open` into the second process.
const CHILD_DB: &str = "KUBETRAIL_STATE_TEST_LOCK_CHILD_DB";

/// Held by a test while it spawns a child, and by a test while it closes and reopens a store.
///
/// A spawned child holds a copy of every descriptor of this process from the fork until its
/// exec closes them (they are close-on-exec), and the lock belongs to the open file
/// description: a store closed in that window stays locked until the child's exec. Tests run
/// in parallel and start together, so without this the same-process test's reopen could meet
/// the other test's spawn (it did, once, in CI).
static SPAWN: Mutex<()> = Mutex::new(());

fn options() -> StoreOptions {
    StoreOptions {
        sync: SyncMode::Normal,
        // Long, so that a second open that waited on SQLite instead of failing on the lock
        // file would show up as slow.
        busy_timeout: Duration::from_secs(60),
        ..StoreOptions::default()
    }
}

fn assert_locked(result: Result<Store, StateError>, db: &Path) {
    match result {
        Err(StateError::Locked {
            path,
            lock_path: lp,
        }) => {
            assert_eq!(path, db);
            assert_eq!(lp, lock_path(db));
            let message = StateError::Locked {
                path,
                lock_path: lp,
            }
            .to_string();
            assert_eq!(
                message,
                format!(
                    "state database {} is in use by another kubetrail process (lock file {}.lock)",
                    db.display(),
                    db.display()
                )
            );
        }
        Err(other) => panic!("expected Locked, got {other:?}"),
        Ok(_) => panic!("second open of {} succeeded", db.display()),
    }
}

#[test]
fn second_open_in_the_same_process_fails_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("kubetrail.db");
    let _no_spawn = SPAWN.lock().unwrap_or_else(PoisonError::into_inner);
    let first = Store::open(&db, &options()).expect("first open");
    let started = Instant::now();
    assert_locked(Store::open(&db, &options()), &db);
    assert!(started.elapsed() < Duration::from_secs(10), "did not wait");
    drop(first);
    let again = Store::open(&db, &options()).expect("open after the first closed");
    drop(again);
}

#[test]
fn second_open_from_another_process_fails_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("kubetrail.db");
    let _first = Store::open(&db, &options()).expect("first open");
    let exe = std::env::current_exe().expect("current exe");
    let started = Instant::now();
    let spawning = SPAWN.lock().unwrap_or_else(PoisonError::into_inner);
    let output = Command::new(exe)
        .args([
            "--exact",
            "child_tries_to_open",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DB, &db)
        .output()
        .expect("spawn child");
    drop(spawning);
    assert!(
        output.status.success(),
        "child failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("child saw Locked"),
        "the child did not run the check: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(started.elapsed() < Duration::from_secs(30), "did not wait");
}

/// The child half of `second_open_from_another_process_fails_at_once`; does nothing unless
/// started by it.
#[test]
fn child_tries_to_open() {
    let Some(db) = std::env::var_os(CHILD_DB) else {
        return;
    };
    let db = Path::new(&db);
    assert_locked(Store::open(db, &options()), db);
    println!("child saw Locked");
}

#[test]
fn missing_directory_is_a_lock_file_error_naming_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("missing").join("kubetrail.db");
    match Store::open(&db, &options()) {
        Err(err @ StateError::LockFile { .. }) => {
            assert!(
                err.to_string().contains("missing/kubetrail.db.lock"),
                "{err}"
            );
        }
        other => panic!("expected LockFile error, got {other:?}"),
    }
}
