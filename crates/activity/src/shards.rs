//! A store kept in several SQLite files, "shards", written in parallel.
//!
//! One SQLite file takes one writer at a time, and on a small machine that writer is bound by
//! the CPU of one core (B-tree inserts, the WAL), so a store in one file ingests at the speed
//! of one core. A store in `count` files takes each batch's records split between them by
//! a hash of the record id ([`shard_of`]: the same id always goes to the same file, so a
//! record delivered again meets its first copy and is still stored once), written and
//! committed by one thread per file at the same time. The batch is acknowledged once every
//! file has committed its part; when one fails, the batch is delivered again and the files
//! that had committed skip their records as stored already.
//!
//! Positions (`seq`) are the store's, not a file's: the writer numbers a batch's records in
//! order before splitting it, so `(time, seq)` orders records across files as in one. Each
//! file keeps `through`, the last position of the last batch it committed (whether or not any
//! record of it went there): every record at or before the smallest `through` of the files is
//! committed, which is how far a live reader may go ([`shard_files`] and the query layer).
//!
//! Shard 0 is the file the store is named by (`activity.db`); shard `k` is beside it
//! (`activity.1.db`). The count is chosen when the store is made and kept in every file's
//! table `shard`; a store made by an earlier kubetrail has one shard.

use std::path::{Path, PathBuf};

use rusqlite::Connection;

use crate::ActivityError;
use crate::writer::{ActivityWriter, InsertStats, WriterOptions};

/// The most shards a store may have.
pub const MAX_SHARDS: usize = 16;

/// The file of shard `number` of the store named by `path`: `path` itself for shard 0;
/// `activity.1.db` for shard 1 of `activity.db` (`name.1` for a name without extension).
pub fn shard_path(path: &Path, number: usize) -> PathBuf {
    if number == 0 {
        return path.to_path_buf();
    }
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    let name = match path.extension() {
        Some(ext) => format!("{stem}.{number}.{}", ext.to_string_lossy()),
        None => format!("{stem}.{number}"),
    };
    path.with_file_name(name)
}

/// The shard a record goes to: FNV-1a (64 bits) of its id, mixed (splitmix64's finalizer),
/// modulo `count`. Part of the store's format: a store's records stay where this put them.
pub fn shard_of(id: &str, count: usize) -> usize {
    let mut h = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^= h >> 31;
    (h % count.max(1) as u64) as usize
}

/// A store file's row of the table `shard`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardRow {
    /// How many shard files the store has.
    pub count: usize,
    /// Which one this file is (0: the file the store is named by).
    pub number: usize,
    /// Every batch through this position is committed in this file.
    pub through: i64,
}

/// A file's row of the table `shard`.
pub(crate) fn read_row(conn: &Connection) -> Result<ShardRow, ActivityError> {
    conn.query_row("SELECT count, number, through FROM shard", [], |r| {
        Ok(ShardRow {
            count: usize::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
            number: usize::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
            through: r.get(2)?,
        })
    })
    .map_err(ActivityError::sql("reading the table shard"))
}

/// The files of the store named by `path` (shard 0 first), read from its table `shard`, for
/// readers. `path` must be shard 0; every other file must be there.
pub fn shard_files(path: &Path) -> Result<Vec<PathBuf>, ActivityError> {
    let conn = crate::open_reader(path)?;
    let row = read_row(&conn)?;
    if row.number != 0 {
        return Err(not_first(path, row));
    }
    let files: Vec<PathBuf> = (0..row.count.clamp(1, MAX_SHARDS))
        .map(|k| shard_path(path, k))
        .collect();
    if let Some(missing) = files.iter().find(|f| !f.exists()) {
        return Err(ActivityError::Shards(format!(
            "the store {} has {} shards, but {} is missing",
            path.display(),
            row.count,
            missing.display()
        )));
    }
    Ok(files)
}

/// The error for a store named by another file than its first.
fn not_first(path: &Path, row: ShardRow) -> ActivityError {
    ActivityError::Shards(format!(
        "{} is shard {} of a store of {}: a store is named by its first file, {}",
        path.display(),
        row.number,
        row.count,
        first_file(path, row.number).display()
    ))
}

/// Shard 0's file, from shard `number`'s (`activity.1.db` → `activity.db`).
fn first_file(path: &Path, number: usize) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    let suffix = format!(".{number}");
    match (stem.strip_suffix(&suffix), path.extension()) {
        // `activity.1.db`: the stem `activity.1`.
        (Some(first), Some(ext)) => {
            path.with_file_name(format!("{first}.{}", ext.to_string_lossy()))
        }
        // `store.1`: the "extension" is the number.
        _ => match name.strip_suffix(&suffix) {
            Some(first) => path.with_file_name(first),
            None => path.to_path_buf(),
        },
    }
}

/// The writer of a store in one or more files.
pub struct ShardedWriter {
    shards: Vec<ActivityWriter>,
    /// The position the next batch's first record gets.
    next: i64,
}

impl ShardedWriter {
    /// Opens (creating or migrating) the store named by `path`. A new store gets `count`
    /// shards (1 to [`MAX_SHARDS`]); an existing one keeps the count it was made with. The
    /// page cache `opts.cache_kib` is shared between the files.
    pub fn open(
        path: &Path,
        count: usize,
        opts: &WriterOptions,
    ) -> Result<ShardedWriter, ActivityError> {
        if !(1..=MAX_SHARDS).contains(&count) {
            return Err(ActivityError::Shards(format!(
                "a store has 1 to {MAX_SHARDS} shards, not {count}"
            )));
        }
        let first = ActivityWriter::open(path, opts)?;
        let row = first.shard()?;
        if row.number != 0 {
            return Err(not_first(path, row));
        }
        let fresh = first.is_empty()? && row.through == 0;
        // A new store's other files are made before the first names them: a reader opening
        // the store meanwhile sees one empty file, never a missing one.
        let count = if fresh && row.count != count {
            count
        } else {
            if row.count != count {
                tracing::info!(path = %path.display(), shards = row.count, configured = count, "the activity store keeps the shard count it was made with");
            }
            row.count.clamp(1, MAX_SHARDS)
        };
        let cache_kib = (opts.cache_kib / count as u32).max(1024);
        first.set_cache_kib(cache_kib)?;
        let per_shard = WriterOptions {
            cache_kib,
            ..opts.clone()
        };
        let mut shards = vec![first];
        for number in 1..count {
            let file = shard_path(path, number);
            if !file.exists() && !fresh {
                return Err(ActivityError::Shards(format!(
                    "the store {} has {count} shards, but {} is missing",
                    path.display(),
                    file.display()
                )));
            }
            let mut w = ActivityWriter::open(&file, &per_shard)?;
            let r = w.shard()?;
            if fresh && w.is_empty()? && r.through == 0 {
                if (r.count, r.number) != (count, number) {
                    w.set_shard(count, number)?;
                }
            } else if r.count != count || r.number != number {
                return Err(ActivityError::Shards(format!(
                    "{} says it is shard {} of {}, where the store {} expects shard {number} of {count}",
                    file.display(),
                    r.number,
                    r.count,
                    path.display()
                )));
            }
            shards.push(w);
        }
        if shards[0].shard()?.count != count {
            shards[0].set_shard(count, 0)?;
        }
        let next = shards
            .iter()
            .map(ActivityWriter::next_seq)
            .max()
            .unwrap_or(1);
        Ok(ShardedWriter { shards, next })
    }

    /// How many files the store has.
    pub fn count(&self) -> usize {
        self.shards.len()
    }

    /// The page cache of all the files' connections, KiB.
    pub fn cache_kib(&self) -> Result<u32, ActivityError> {
        let mut total = 0u32;
        for w in &self.shards {
            total = total.saturating_add(w.cache_kib()?);
        }
        Ok(total)
    }

    /// The store's files, shard 0 first.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.shards.iter().map(|w| w.path().to_path_buf()).collect()
    }

    /// Stores a batch of `(record id, encoded record)`: numbered in order, split between the
    /// shards by id, each part committed by its own thread. Returns once every shard has
    /// answered: the first error if any (the parts of the shards that committed stay, and
    /// are skipped as stored when the batch is delivered again).
    pub fn insert<'a>(
        &mut self,
        records: impl IntoIterator<Item = (&'a str, &'a [u8])>,
        now: i64,
    ) -> Result<InsertStats, ActivityError> {
        let count = self.shards.len();
        let mut parts: Vec<Vec<(i64, &str, &[u8])>> = vec![Vec::new(); count];
        let mut seq = self.next;
        for (id, data) in records {
            let k = if count == 1 { 0 } else { shard_of(id, count) };
            parts[k].push((seq, id, data));
            seq += 1;
        }
        if seq == self.next {
            return Ok(InsertStats::default());
        }
        let through = seq - 1;
        // The positions are used whatever happens next (a failed batch comes again with
        // new ones; its records already committed somewhere are then skipped there).
        self.next = seq;
        let mut parts = parts.into_iter();
        let (first, rest) = match self.shards.split_first_mut() {
            Some(split) => split,
            None => return Ok(InsertStats::default()),
        };
        let first_part = parts.next().unwrap_or_default();
        if rest.is_empty() {
            return first.insert_at(first_part, through, now);
        }
        let results: Vec<Result<InsertStats, ActivityError>> = std::thread::scope(|s| {
            let mut handles = Vec::with_capacity(rest.len());
            for (w, part) in rest.iter_mut().zip(parts) {
                let spawned = std::thread::Builder::new()
                    .name("kubetrail-store-shard".into())
                    .spawn_scoped(s, move || w.insert_at(part, through, now));
                handles.push(spawned);
            }
            let mut out = vec![first.insert_at(first_part, through, now)];
            for h in handles {
                out.push(match h {
                    Ok(h) => h.join().unwrap_or_else(|_| {
                        Err(ActivityError::Shards(
                            "a shard's writer thread panicked".into(),
                        ))
                    }),
                    Err(e) => Err(ActivityError::Shards(format!(
                        "starting a shard's writer thread: {e}"
                    ))),
                });
            }
            out
        });
        let mut total = InsertStats::default();
        for r in results {
            let s = r?;
            total.inserted += s.inserted;
            total.duplicates += s.duplicates;
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audit(i: usize) -> (String, String) {
        let id = format!("a-{i}/ResponseComplete");
        let rec = format!(
            r#"{{"id":"{id}","time":"2026-12-06T23:{m:02}:{s:02}.5Z","kind":"k8s_audit","source":"s","verb":"get","user":{{"username":"alice"}},"object_ref":{{"resource":"pods","namespace":"shop","name":"web-{i}","uid":"u-{i}"}},"response_code":200}}"#,
            m = (i / 60) % 60,
            s = i % 60
        );
        (id, rec)
    }

    fn store(w: &mut ShardedWriter, from: usize, to: usize) -> InsertStats {
        let recs: Vec<(String, String)> = (from..to).map(audit).collect();
        w.insert(recs.iter().map(|(i, r)| (i.as_str(), r.as_bytes())), 0)
            .unwrap()
    }

    /// `(seq, id)` of every record in a file, in position order.
    fn rows(path: &Path) -> Vec<(i64, String)> {
        let c = crate::open_reader(path).unwrap();
        let mut s = c
            .prepare("SELECT seq, id FROM records ORDER BY seq")
            .unwrap();
        s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn row(path: &Path) -> ShardRow {
        read_row(&crate::open_reader(path).unwrap()).unwrap()
    }

    #[test]
    fn shard_files_are_named_beside_the_first() {
        let p = Path::new("/data/activity.db");
        assert_eq!(shard_path(p, 0), p);
        assert_eq!(shard_path(p, 1), Path::new("/data/activity.1.db"));
        assert_eq!(shard_path(p, 12), Path::new("/data/activity.12.db"));
        assert_eq!(shard_path(Path::new("store"), 2), Path::new("store.2"));
        assert_eq!(first_file(Path::new("/data/activity.1.db"), 1), p);
        assert_eq!(first_file(Path::new("store.2"), 2), Path::new("store"));
        assert_eq!(
            first_file(Path::new("/d/a.12.db"), 12),
            Path::new("/d/a.db")
        );
        assert_eq!(
            first_file(Path::new("/d/x.1.y.1.db"), 1),
            Path::new("/d/x.1.y.db")
        );
        for k in 1..20 {
            assert_eq!(first_file(&shard_path(p, k), k), p);
        }
    }

    /// Where a record goes is part of a store's format: pinned.
    #[test]
    fn the_shard_of_an_id_is_stable_and_even() {
        let pinned: Vec<usize> = ["a", "b", "a-1/ResponseComplete", "uid-x/ResponseComplete"]
            .iter()
            .map(|id| shard_of(id, 16))
            .collect();
        assert_eq!(pinned, [8, 5, 4, 11]);
        assert_eq!(shard_of("anything", 1), 0);
        let mut counts = [0usize; 3];
        for i in 0..30_000 {
            counts[shard_of(&format!("{i:016x}-{i}/ResponseComplete"), 3)] += 1;
        }
        assert!(
            counts.iter().all(|&c| (9_500..=10_500).contains(&c)),
            "{counts:?}"
        );
    }

    /// A batch is numbered in order and split between the files by id; every record is in
    /// one file, once, delivered again or not; every file is `through` the last batch.
    #[test]
    fn a_batch_is_split_between_the_files_and_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("activity.db");
        let mut w = ShardedWriter::open(&path, 2, &WriterOptions::default()).unwrap();
        assert_eq!(w.count(), 2);
        let s = store(&mut w, 0, 300);
        assert_eq!((s.inserted, s.duplicates), (300, 0));
        let again = store(&mut w, 0, 300);
        assert_eq!((again.inserted, again.duplicates), (0, 300));
        let s = store(&mut w, 250, 400);
        assert_eq!((s.inserted, s.duplicates), (100, 50));
        let first = rows(&path);
        let second = rows(&shard_path(&path, 1));
        assert!(
            first.len() > 150 && second.len() > 150,
            "{} {}",
            first.len(),
            second.len()
        );
        let mut all: Vec<(i64, String)> = first.iter().chain(&second).cloned().collect();
        all.sort();
        let ids: Vec<String> = all.iter().map(|(_, id)| id.clone()).collect();
        let expected: Vec<String> = (0..400).map(|i| audit(i).0).collect();
        assert_eq!(ids, expected, "positions follow the batches' order");
        for (seq, id) in &first {
            assert_eq!(shard_of(id, 2), 0, "{seq} {id}");
        }
        // The first batch took positions 1-300, the second (all stored) 301-600, the third
        // 601-750: its 100 new records are 651-750.
        assert_eq!(all.first().map(|r| r.0), Some(1));
        assert_eq!(all.last().map(|r| r.0), Some(750));
        for f in [path.clone(), shard_path(&path, 1)] {
            let r = row(&f);
            assert_eq!((r.count, r.through), (2, 750), "{}", f.display());
        }
        assert_eq!(row(&shard_path(&path, 1)).number, 1);
        assert_eq!(shard_files(&path).unwrap().len(), 2);
    }

    /// Opened again, the store keeps its count and numbers on after every file's newest.
    #[test]
    fn a_store_keeps_its_count_and_positions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("activity.db");
        let mut w = ShardedWriter::open(&path, 3, &WriterOptions::default()).unwrap();
        store(&mut w, 0, 90);
        drop(w);
        let mut w = ShardedWriter::open(&path, 2, &WriterOptions::default()).unwrap();
        assert_eq!(w.count(), 3, "made with 3");
        assert_eq!(store(&mut w, 0, 90).inserted, 0, "still stored once");
        store(&mut w, 90, 100);
        let max = (0..3)
            .flat_map(|k| rows(&shard_path(&path, k)))
            .map(|r| r.0)
            .max();
        assert_eq!(max, Some(190));
        // A store of one file (as an earlier kubetrail made it) stays one.
        let one = dir.path().join("one.db");
        let mut w = ShardedWriter::open(&one, 1, &WriterOptions::default()).unwrap();
        store(&mut w, 0, 10);
        drop(w);
        let w = ShardedWriter::open(&one, 2, &WriterOptions::default()).unwrap();
        assert_eq!(w.count(), 1);
        assert!(!shard_path(&one, 1).exists());
        assert_eq!(shard_files(&one).unwrap(), std::slice::from_ref(&one));
    }

    /// One file failing a batch: the batch fails, the other file keeps its part, and the
    /// batch delivered again stores the rest once. Readers go no further than the file that
    /// lags.
    #[test]
    fn a_file_failing_its_part_fails_the_batch_and_nothing_repeats() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("activity.db");
        let mut w = ShardedWriter::open(&path, 2, &WriterOptions::default()).unwrap();
        store(&mut w, 0, 50);
        // The second file refuses writes for a while.
        let second = shard_path(&path, 1);
        let c = rusqlite::Connection::open(&second).unwrap();
        c.execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON records BEGIN SELECT RAISE(ABORT, 'refused'); END",
        )
        .unwrap();
        let recs: Vec<(String, String)> = (50..100).map(audit).collect();
        let batch = || recs.iter().map(|(i, r)| (i.as_str(), r.as_bytes()));
        assert!(w.insert(batch(), 0).is_err());
        assert_eq!(row(&path).through, 100);
        assert_eq!(row(&second).through, 50, "the lagging file");
        c.execute_batch("DROP TRIGGER refuse").unwrap();
        let s = w.insert(batch(), 0).unwrap();
        assert_eq!(s.inserted + s.duplicates, 50);
        assert!(s.duplicates > 0, "the first file's part was kept");
        let mut ids: Vec<String> = rows(&path)
            .into_iter()
            .chain(rows(&second))
            .map(|r| r.1)
            .collect();
        ids.sort();
        let mut expected: Vec<String> = (0..100).map(|i| audit(i).0).collect();
        expected.sort();
        assert_eq!(ids, expected);
        assert_eq!((row(&path).through, row(&second).through), (150, 150));
    }

    /// A file missing from a store with records, or the store opened by another file than
    /// its first: refused, by the writer and by readers.
    #[test]
    fn a_missing_or_wrong_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("activity.db");
        let mut w = ShardedWriter::open(&path, 2, &WriterOptions::default()).unwrap();
        store(&mut w, 0, 20);
        drop(w);
        let second = shard_path(&path, 1);
        let err = ShardedWriter::open(&second, 2, &WriterOptions::default())
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref().is_some_and(|e| e.contains("activity.db")),
            "{err:?}"
        );
        let err = shard_files(&second).err().map(|e| e.to_string());
        assert!(
            err.as_deref().is_some_and(|e| e.contains("shard 1 of")),
            "{err:?}"
        );
        std::fs::rename(&second, dir.path().join("moved.db")).unwrap();
        let _ = std::fs::remove_file(dir.path().join("activity.1.db-wal"));
        let _ = std::fs::remove_file(dir.path().join("activity.1.db-shm"));
        assert!(ShardedWriter::open(&path, 2, &WriterOptions::default()).is_err());
        assert!(shard_files(&path).is_err());
        assert!(ShardedWriter::open(&path, 0, &WriterOptions::default()).is_err());
        assert!(ShardedWriter::open(&path, MAX_SHARDS + 1, &WriterOptions::default()).is_err());
    }
}
