//! The measurement behind the queue segments' codec (docs/ARCHITECTURE.md, "Queue segments"):
//! LZ4 and zstd at low levels on blocks of real audit records, as the journal writes them.
//!
//! The records are the shared fixtures' real apiserver audit lines, each parsed and normalized
//! as `audit_file` does (the normalized fields plus the original) and encoded as a kubetrail
//! record; they are laid into blocks of record frames (id, data) of a given raw size, as a
//! segment block holds them. For each codec and block size it prints the ratio (raw / stored
//! bytes) and the compression and decompression speeds in MB of raw bytes per CPU second of
//! this thread, as the minimum, median and maximum over `passes` passes.
//!
//! `cargo run --release -p kubetrail --example segment_codecs -- [passes=7] [mib=64]`
//! (`KUBETRAIL_FIXTURES` names the shared fixtures; `bench/segment-codecs.sh` runs it.)

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kubetrail::sources::audit;

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the pointer it is given, which points at
    // a live local.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Encoded records from every audit line of the fixtures.
fn records(fixtures: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let files = [
        "audit/kube-apiserver-1.28/audit-sample-200.jsonl",
        "scenarios/shop/audit.log",
        "audit/public/audit2rbac-demo.log",
    ];
    let (source, tag): (Arc<str>, Arc<str>) = (Arc::from("audit_file.0"), Arc::from("k8s.audit"));
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read(fixtures.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            if let Ok(item) = audit::parse_line(line) {
                let r = audit::normalize(item, &source, &tag, false);
                out.push((r.id.clone(), r.encode()));
            }
        }
    }
    out
}

/// Blocks of about `block` raw bytes: per record `u32 id_len, u32 data_len, u32 crc, id, data`,
/// records taken round the fixture list until `total` bytes.
fn blocks(records: &[(String, Vec<u8>)], block: usize, total: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut cur = Vec::with_capacity(block + 8192);
    let mut made = 0;
    for (id, data) in records.iter().cycle() {
        cur.extend_from_slice(&(id.len() as u32).to_le_bytes());
        cur.extend_from_slice(&(data.len() as u32).to_le_bytes());
        cur.extend_from_slice(&crc32c::crc32c(data).to_le_bytes());
        cur.extend_from_slice(id.as_bytes());
        cur.extend_from_slice(data);
        if cur.len() >= block {
            made += cur.len();
            out.push(std::mem::replace(
                &mut cur,
                Vec::with_capacity(block + 8192),
            ));
            if made >= total {
                break;
            }
        }
    }
    out
}

#[derive(Clone, Copy)]
enum Codec {
    Lz4,
    Zstd(i32),
}

impl Codec {
    fn name(self) -> String {
        match self {
            Codec::Lz4 => "lz4_flex (LZ4 block)".into(),
            Codec::Zstd(l) => format!("zstd level {l}"),
        }
    }
}

struct Pass {
    stored: usize,
    compress: Duration,
    decompress: Duration,
}

fn pass(codec: Codec, blocks: &[Vec<u8>]) -> Pass {
    let max = blocks.iter().map(Vec::len).max().unwrap_or(0);
    let mut packed: Vec<Vec<u8>> = Vec::with_capacity(blocks.len());
    let t = thread_cpu();
    match codec {
        Codec::Lz4 => {
            for b in blocks {
                packed.push(lz4_flex::block::compress(b));
            }
        }
        Codec::Zstd(level) => {
            let mut c = zstd::bulk::Compressor::new(level).expect("zstd compressor");
            for b in blocks {
                packed.push(c.compress(b).expect("zstd compress"));
            }
        }
    }
    let compress = thread_cpu() - t;
    let mut out = vec![0u8; max];
    let t = thread_cpu();
    match codec {
        Codec::Lz4 => {
            for (p, b) in packed.iter().zip(blocks) {
                let n = lz4_flex::block::decompress_into(p, &mut out[..b.len()]).expect("lz4");
                assert_eq!(&out[..n], &b[..]);
            }
        }
        Codec::Zstd(_) => {
            let mut d = zstd::bulk::Decompressor::new().expect("zstd decompressor");
            for (p, b) in packed.iter().zip(blocks) {
                let n = d.decompress_to_buffer(p, &mut out[..]).expect("zstd");
                assert_eq!(&out[..n], &b[..]);
            }
        }
    }
    // The comparison with the input is a memcmp: small beside either decoder, and the same
    // for both codecs.
    let decompress = thread_cpu() - t;
    Pass {
        stored: packed.iter().map(Vec::len).sum(),
        compress,
        decompress,
    }
}

fn main() {
    let args: std::collections::HashMap<String, String> = std::env::args()
        .skip(1)
        .filter_map(|a| a.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    let passes: usize = args.get("passes").map_or(7, |v| v.parse().expect("passes"));
    let mib: usize = args.get("mib").map_or(64, |v| v.parse().expect("mib"));
    let fixtures = PathBuf::from(
        std::env::var("KUBETRAIL_FIXTURES").expect("set KUBETRAIL_FIXTURES to the fixtures"),
    );
    let recs = records(&fixtures);
    let raw_avg = recs.iter().map(|(_, d)| d.len()).sum::<usize>() / recs.len().max(1);
    println!(
        "{} distinct audit records from the fixtures (mean {raw_avg} bytes encoded), {mib} MiB \
         of blocks per pass, {passes} passes; speeds in MB of raw bytes per CPU second",
        recs.len()
    );
    println!(
        "{:<22} {:>7} {:>7}  {:>26}  {:>26}",
        "codec", "block", "ratio", "compress MB/s min/med/max", "decompress MB/s min/med/max"
    );
    let codecs = [
        Codec::Lz4,
        Codec::Zstd(-5),
        Codec::Zstd(-1),
        Codec::Zstd(1),
        Codec::Zstd(3),
    ];
    for block in [64 << 10, 256 << 10, 1 << 20] {
        let bs = blocks(&recs, block, mib << 20);
        let raw: usize = bs.iter().map(Vec::len).sum();
        for codec in codecs {
            let mut runs: Vec<Pass> = (0..passes).map(|_| pass(codec, &bs)).collect();
            let stored = runs[0].stored;
            let speed = |d: Duration| raw as f64 / d.as_secs_f64().max(1e-9) / 1e6;
            runs.sort_by_key(|p| p.compress);
            let c: Vec<f64> = runs.iter().rev().map(|p| speed(p.compress)).collect();
            runs.sort_by_key(|p| p.decompress);
            let d: Vec<f64> = runs.iter().rev().map(|p| speed(p.decompress)).collect();
            let mid = passes / 2;
            println!(
                "{:<22} {:>6}K {:>7.2}  {:>8.0}/{:>6.0}/{:>8.0}  {:>8.0}/{:>6.0}/{:>8.0}",
                codec.name(),
                block >> 10,
                raw as f64 / stored as f64,
                c[0],
                c[mid],
                c[passes - 1],
                d[0],
                d[mid],
                d[passes - 1],
            );
        }
    }
}
