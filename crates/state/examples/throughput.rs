//! Throughput benchmark of the state database: one writer committing batches of records (each
//! with a dedup key, one fsync per batch) while a reader thread reads them back and the writer
//! acknowledges what was read, as the agent does.
//!
//! `cargo run --release -p kubetrail-state --example throughput -- records=200000 batch=1000
//! size=1536 sync=full dedup=on keys=random|ordered prefill=0 payload=letters|audit
//! dir=/var/tmp` (every argument optional). `payload=audit`: the records are real apiserver
//! audit lines from the shared fixtures (`$KUBETRAIL_FIXTURES`) in turn, which compress as
//! records do (`size` is then ignored); `letters`: `size` bytes of a-z over and over. The
//! bytes the process wrote to storage (`/proc/self/io`) are printed per record.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kubetrail_state::{Ack, CommitBatch, Dedup, Entry, Store, StoreOptions, SyncMode};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: HashMap<String, String> = std::env::args()
        .skip(1)
        .filter_map(|a| a.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    let get = |k: &str, default: &str| args.get(k).cloned().unwrap_or_else(|| default.to_owned());
    let records: u64 = get("records", "200000").parse()?;
    let batch: u64 = get("batch", "1000").parse()?;
    let size: usize = get("size", "1536").parse()?;
    let sync = match get("sync", "full").as_str() {
        "normal" => SyncMode::Normal,
        _ => SyncMode::Full,
    };
    let dedup = get("dedup", "on") == "on";
    // `keys=ordered`: time-ordered keys, as audit records' dedup keys are; `random`: like uids.
    let ordered = get("keys", "random") == "ordered";
    // Dedup keys stored before the timed run, as a long retention window leaves them.
    let prefill: u64 = get("prefill", "0").parse()?;
    let base = PathBuf::from(get("dir", &std::env::temp_dir().to_string_lossy()));
    let dir = tempfile::tempdir_in(base)?;
    let db = dir.path().join("kubetrail.db");

    let mut store = Store::open(
        &db,
        &StoreOptions {
            sync,
            ..StoreOptions::default()
        },
    )?;
    let q = store.queue_id("out")?;
    for chunk in (0..prefill).collect::<Vec<_>>().chunks(10_000) {
        let entries = chunk
            .iter()
            .map(|n| Entry {
                dedup: Some(Dedup {
                    scope: "bench".into(),
                    key: format!("old{:016x}", n.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
                    value: "1".into(),
                    expires_at_unix_ms: i64::MAX,
                }),
                queues: [].into(),
                id: String::new(),
                data: Default::default(),
            })
            .collect();
        store.commit(&CommitBatch {
            entries,
            ..CommitBatch::default()
        })?;
    }
    let mut reader = store.reader()?;
    let (acks_tx, acks_rx) = mpsc::sync_channel::<u64>(64);

    let started = Instant::now();
    let read_side = std::thread::spawn(move || -> Result<(u64, Duration), String> {
        let mut after = 0;
        let mut read = 0u64;
        let mut bytes = 0u64;
        while read < records {
            let items = reader
                .read_queue(q, after, 1000, 4 << 20)
                .map_err(|e| e.to_string())?;
            if items.is_empty() {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            read += items.len() as u64;
            bytes += items.iter().map(|i| i.data.len() as u64).sum::<u64>();
            after = items.last().map_or(after, |i| i.seq);
            // The writer may be done already; a closed channel is fine.
            let _ = acks_tx.try_send(after);
        }
        Ok((bytes, started.elapsed()))
    });

    let payloads: Vec<bytes::Bytes> = match get("payload", "letters").as_str() {
        "audit" => audit_lines()?,
        _ => vec![
            (0..size)
                .map(|i| b'a' + (i % 26) as u8)
                .collect::<Vec<u8>>()
                .into(),
        ],
    };
    let payload_bytes: u64 = (0..records)
        .map(|n| payloads[n as usize % payloads.len()].len() as u64)
        .sum();
    let written_before = write_bytes();
    let mut commit_times = Vec::new();
    let mut n = 0u64;
    while n < records {
        let mut entries = Vec::with_capacity(batch as usize);
        for _ in 0..batch.min(records - n) {
            n += 1;
            // Spread keys like uids do: a multiplicative hash of the counter.
            let key = if ordered {
                format!("{n:020}")
            } else {
                format!("{:016x}", n.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            };
            entries.push(Entry {
                dedup: dedup.then(|| Dedup {
                    scope: "bench".into(),
                    key: key.clone(),
                    value: "1".into(),
                    expires_at_unix_ms: i64::MAX,
                }),
                queues: [q].into(),
                id: key,
                data: payloads[n as usize % payloads.len()].clone(),
            });
        }
        let acks = acks_rx
            .try_iter()
            .max()
            .map(|up_to_seq| Ack {
                queue: q,
                up_to_seq,
                state: Some(("out-offset".into(), up_to_seq.to_string())),
            })
            .into_iter()
            .collect();
        let t = Instant::now();
        store.commit(&CommitBatch {
            entries,
            checkpoints: vec![("bench".into(), n.to_string())],
            forget: vec![],
            acks,
            trims: vec![],
        })?;
        commit_times.push(t.elapsed());
    }
    let write_elapsed = started.elapsed();
    let (bytes, read_elapsed) = read_side.join().map_err(|_| "reader panicked")??;
    commit_times.sort();
    let p = |q: f64| commit_times[((commit_times.len() - 1) as f64 * q) as usize];
    let file_len = |p: PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let written = write_bytes().zip(written_before).map(|(a, b)| a - b);
    println!(
        "{records} records of {} B on average, batch {batch}, sync {sync:?}, dedup {dedup} (prefilled {prefill} keys)\n\
         write: {:.0} records/s ({:.1} MiB/s), commit p50 {:?} p99 {:?} max {:?}\n\
         write+read back: {:.0} records/s ({} bytes read)\n\
         written to storage: {} bytes per record of payload ({})\n\
         depth left {:?}, db {} MiB, wal {} MiB",
        payload_bytes / records.max(1),
        records as f64 / write_elapsed.as_secs_f64(),
        payload_bytes as f64 / write_elapsed.as_secs_f64() / (1 << 20) as f64,
        p(0.5),
        p(0.99),
        p(1.0),
        records as f64 / read_elapsed.as_secs_f64(),
        bytes,
        written.map_or("?".into(), |w| format!(
            "{:.2}",
            w as f64 / payload_bytes as f64
        )),
        written.map_or("/proc/self/io not readable".into(), |w| format!(
            "{} MiB",
            w >> 20
        )),
        store.queue_depth(q),
        file_len(db.clone()) >> 20,
        file_len(dir.path().join("kubetrail.db-wal")) >> 20,
    );
    Ok(())
}

/// `write_bytes` of `/proc/self/io`: what this process caused to be written to storage.
fn write_bytes() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|v| v.trim().parse().ok())
}

/// The real apiserver audit lines of the shared fixtures.
fn audit_lines() -> Result<Vec<bytes::Bytes>, Box<dyn std::error::Error>> {
    let dir = PathBuf::from(std::env::var("KUBETRAIL_FIXTURES")?);
    let mut out = Vec::new();
    for f in [
        "audit/kube-apiserver-1.28/audit-sample-200.jsonl",
        "scenarios/shop/audit.log",
    ] {
        let text = std::fs::read(dir.join(f))?;
        out.extend(
            text.split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .map(bytes::Bytes::copy_from_slice),
        );
    }
    Ok(out)
}
