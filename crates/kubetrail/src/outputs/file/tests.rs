//! Tests of the `file` output: exactly once across restarts (the cut back to the committed
//! length, also of compressed members), rotation, compression, changing `compress`.

use super::*;
use kubetrail_core::config::SectionKind;

fn output(dir: &Path, extra: &[(&str, &str)]) -> FileOutput {
    let d = dir.to_string_lossy().to_string();
    let mut pairs = vec![("path", d.as_str())];
    pairs.extend_from_slice(extra);
    let mut s = Section::from_pairs(SectionKind::Output, "file", &pairs);
    FileOutput::from_section(&mut s).unwrap()
}

fn items(from: u64, n: u64) -> Vec<QueueItem> {
    (from..from + n)
        .map(|i| QueueItem {
            seq: i,
            id: i.to_string(),
            data: format!("{{\"n\":{i}}}").into_bytes().into(),
        })
        .collect()
}

/// How many pages of `path` are in the page cache (mincore over a mapping of it).
#[cfg(target_os = "linux")]
fn resident_pages(path: &Path) -> usize {
    use std::os::fd::AsRawFd;
    let f = File::open(path).unwrap();
    let len = f.metadata().unwrap().len() as usize;
    let page = 4096;
    let mut vec = vec![0u8; len.div_ceil(page)];
    // SAFETY: a private read-only mapping of a file nobody truncates meanwhile, only
    // passed to mincore (its pages are never read) and unmapped before returning.
    unsafe {
        let addr = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(addr, libc::MAP_FAILED);
        assert_eq!(libc::mincore(addr, len, vec.as_mut_ptr()), 0);
        libc::munmap(addr, len);
    }
    vec.iter().filter(|b| *b & 1 == 1).count()
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn written_pages_leave_the_page_cache_unless_kept() {
    // In a directory of the build (a disk file system; tmpfs pages are the storage).
    let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
    let big: Vec<QueueItem> = (0..256)
        .map(|i| QueueItem {
            seq: i,
            id: i.to_string(),
            data: format!("{{\"pad\":\"{}\"}}", "x".repeat(8000))
                .into_bytes()
                .into(),
        })
        .collect();
    let mut dropped = output(dir.path(), &[("file", "dropped.jsonl")]);
    dropped.open(None).await.unwrap();
    dropped.deliver(&big).await.unwrap();
    let mut kept = output(dir.path(), &[("file", "kept.jsonl"), ("drop_cache", "off")]);
    kept.open(None).await.unwrap();
    kept.deliver(&big).await.unwrap();
    let pages = 256 * 8012 / 4096;
    let (d, k) = (
        resident_pages(&dir.path().join("dropped.jsonl")),
        resident_pages(&dir.path().join("kept.jsonl")),
    );
    assert!(d <= 2, "{d} of {pages} pages still cached");
    assert!(k >= pages - 2, "only {k} of {pages} pages cached");
    // The content is all there.
    let text = std::fs::read_to_string(dir.path().join("dropped.jsonl")).unwrap();
    assert_eq!(text.lines().count(), 256);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn cuts_unacknowledged_tail_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = output(dir.path(), &[]);
    o.open(None).await.unwrap();
    let acked = o.deliver(&items(1, 3)).await.unwrap();
    o.deliver(&items(4, 2)).await.unwrap(); // written, never acknowledged
    let mut o2 = output(dir.path(), &[]);
    o2.open(acked).await.unwrap();
    o2.deliver(&items(4, 2)).await.unwrap();
    let text = std::fs::read_to_string(o2.path()).unwrap();
    let ns: Vec<&str> = text.lines().collect();
    assert_eq!(
        ns,
        vec![
            r#"{"n":1}"#,
            r#"{"n":2}"#,
            r#"{"n":3}"#,
            r#"{"n":4}"#,
            r#"{"n":5}"#
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn rotates_at_committed_boundaries_and_keeps_max_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = output(dir.path(), &[("max_size", "20"), ("max_files", "2")]);
    o.open(None).await.unwrap();
    for i in 0..5 {
        o.deliver(&items(i * 3 + 1, 3)).await.unwrap();
    }
    let base = o.path();
    assert!(
        o.rotated(Codec::None, 1).exists()
            && o.rotated(Codec::None, 2).exists()
            && !o.rotated(Codec::None, 3).exists()
    );
    let all: String = [o.rotated(Codec::None, 2), o.rotated(Codec::None, 1), base]
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    // The newest 3 files hold the newest batches in order, each file whole batches.
    assert!(
        all.ends_with("{\"n\":13}\n{\"n\":14}\n{\"n\":15}\n"),
        "{all}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn crash_after_rotation_before_ack_discards_new_file_content() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = output(dir.path(), &[("max_size", "10")]);
    o.open(None).await.unwrap();
    let acked = o.deliver(&items(1, 2)).await.unwrap();
    o.deliver(&items(3, 1)).await.unwrap(); // rotates, writes, crash before ack
    let mut o2 = output(dir.path(), &[("max_size", "10")]);
    o2.open(acked).await.unwrap();
    assert_eq!(std::fs::read_to_string(o2.path()).unwrap(), "");
    assert_eq!(
        std::fs::read_to_string(o2.rotated(Codec::None, 1)).unwrap(),
        "{\"n\":1}\n{\"n\":2}\n"
    );
}

#[test]
fn path_is_required() {
    let mut s = Section::from_pairs(SectionKind::Output, "file", &[]);
    assert!(
        FileOutput::from_section(&mut s)
            .err()
            .unwrap()
            .to_string()
            .contains("path")
    );
}

/// The text of a file of `codec`, decompressed the way tools do (every member or frame).
fn text_of(codec: Codec, path: &Path) -> String {
    use std::io::Read;
    let raw = std::fs::read(path).unwrap();
    let mut out = String::new();
    match codec {
        Codec::None => out = String::from_utf8(raw).unwrap(),
        Codec::Gzip => {
            flate2::read::MultiGzDecoder::new(&raw[..])
                .read_to_string(&mut out)
                .unwrap();
        }
        Codec::Zstd => {
            zstd::stream::read::Decoder::new(&raw[..])
                .unwrap()
                .read_to_string(&mut out)
                .unwrap();
        }
    }
    out
}

fn ns(text: &str) -> Vec<u64> {
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["n"].as_u64().unwrap()
        })
        .collect()
}

const COMPRESSED: [(&str, Codec); 2] = [("gzip", Codec::Gzip), ("zstd", Codec::Zstd)];

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn compressed_batches_are_members_that_tools_read_as_one_stream() {
    for (name, codec) in COMPRESSED {
        let dir = tempfile::tempdir().unwrap();
        let mut o = output(dir.path(), &[("compress", name)]);
        o.open(None).await.unwrap();
        let mut state = None;
        for b in 0..4 {
            state = o.deliver(&items(b * 50 + 1, 50)).await.unwrap();
        }
        let path = o.path();
        assert_eq!(
            path,
            dir.path()
                .join(format!("kubetrail.jsonl{}", codec.extension()))
        );
        assert_eq!(ns(&text_of(codec, &path)), (1..=200).collect::<Vec<_>>());
        let len = std::fs::metadata(&path).unwrap().len();
        assert_eq!(state, Some(format!("{len} {name}")));
        // The command line tools read it whole, too.
        let tool = match codec {
            Codec::Gzip => "gzip",
            _ => "zstd",
        };
        if let Ok(out) = std::process::Command::new(tool)
            .arg("-dc")
            .arg(&path)
            .output()
        {
            assert!(
                out.status.success(),
                "{tool}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(ns(&String::from_utf8(out.stdout).unwrap()).len(), 200);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_member_written_but_not_acknowledged_is_cut_whole_or_half_written() {
    for (name, codec) in COMPRESSED {
        for half in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let mut o = output(dir.path(), &[("compress", name)]);
            o.open(None).await.unwrap();
            o.deliver(&items(1, 3)).await.unwrap();
            let acked = o.deliver(&items(4, 3)).await.unwrap();
            let acked_len = std::fs::metadata(o.path()).unwrap().len();
            o.deliver(&items(7, 3)).await.unwrap(); // written, never acknowledged
            drop(o);
            if half {
                // A crash in the middle of writing the member: only its first bytes are there.
                let full = std::fs::metadata(
                    dir.path()
                        .join(format!("kubetrail.jsonl{}", codec.extension())),
                )
                .unwrap()
                .len();
                let f = OpenOptions::new()
                    .write(true)
                    .open(
                        dir.path()
                            .join(format!("kubetrail.jsonl{}", codec.extension())),
                    )
                    .unwrap();
                f.set_len(acked_len + (full - acked_len) / 2).unwrap();
            }
            let mut o2 = output(dir.path(), &[("compress", name)]);
            o2.open(acked).await.unwrap();
            assert_eq!(std::fs::metadata(o2.path()).unwrap().len(), acked_len);
            o2.deliver(&items(7, 3)).await.unwrap();
            assert_eq!(
                ns(&text_of(codec, &o2.path())),
                (1..=9).collect::<Vec<_>>(),
                "{name}, half-written: {half}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn compressed_files_rotate_under_names_tools_recognise() {
    for (name, codec) in COMPRESSED {
        let dir = tempfile::tempdir().unwrap();
        let mut o = output(
            dir.path(),
            &[("compress", name), ("max_size", "1"), ("max_files", "2")],
        );
        o.open(None).await.unwrap();
        for b in 0..4 {
            o.deliver(&items(b * 3 + 1, 3)).await.unwrap();
        }
        let ext = codec.extension();
        let names: Vec<PathBuf> = ["", ".1", ".2"]
            .iter()
            .map(|n| dir.path().join(format!("kubetrail.jsonl{n}{ext}")))
            .collect();
        assert!(names.iter().all(|p| p.exists()), "{names:?}");
        assert!(!dir.path().join(format!("kubetrail.jsonl.3{ext}")).exists());
        assert!(!dir.path().join("kubetrail.jsonl").exists());
        // Each file is a stream of its own; the newest three batches, in order.
        let all: Vec<u64> = names
            .iter()
            .rev()
            .flat_map(|p| ns(&text_of(codec, p)))
            .collect();
        assert_eq!(all, (4..=12).collect::<Vec<_>>());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn changing_compress_continues_in_a_new_file_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    // Uncompressed, with a batch written but not acknowledged.
    let mut plain = output(dir.path(), &[]);
    plain.open(None).await.unwrap();
    let acked = plain.deliver(&items(1, 3)).await.unwrap();
    plain.deliver(&items(4, 3)).await.unwrap();
    drop(plain);
    assert_eq!(
        acked.as_deref(),
        Some("24"),
        "the uncompressed state is as before"
    );

    // Now zstd: the plain file keeps what was acknowledged and becomes `.1`; the batch that
    // was not acknowledged goes into the new file, once, even when a crash interrupts the
    // change before its first acknowledgement.
    let mut z = output(dir.path(), &[("compress", "zstd")]);
    z.open(acked.clone()).await.unwrap();
    z.deliver(&items(4, 3)).await.unwrap(); // crash before the ack
    drop(z);
    let mut z = output(dir.path(), &[("compress", "zstd")]);
    z.open(acked.clone()).await.unwrap();
    let acked_z = z.deliver(&items(4, 3)).await.unwrap();
    z.deliver(&items(7, 3)).await.unwrap(); // not acknowledged
    drop(z);
    let first = dir.path().join("kubetrail.jsonl.1");
    assert_eq!(ns(&text_of(Codec::None, &first)), vec![1, 2, 3]);
    assert!(!dir.path().join("kubetrail.jsonl").exists());
    let zst = dir.path().join("kubetrail.jsonl.zst");
    assert_eq!(ns(&text_of(Codec::Zstd, &zst)), vec![4, 5, 6, 7, 8, 9]);

    // Back to uncompressed, interrupted by a crash, then to gzip: each acknowledged record
    // is in exactly one file.
    let mut plain = output(dir.path(), &[]);
    plain.open(acked_z.clone()).await.unwrap();
    plain.deliver(&items(7, 3)).await.unwrap(); // crash before the ack
    drop(plain);
    let mut gz = output(dir.path(), &[("compress", "gzip")]);
    gz.open(acked_z).await.unwrap();
    assert!(
        !dir.path().join("kubetrail.jsonl").exists(),
        "the interrupted change's file held nothing acknowledged"
    );
    gz.deliver(&items(7, 3)).await.unwrap();
    let mut all = ns(&text_of(Codec::None, &first));
    all.extend(ns(&text_of(
        Codec::Zstd,
        &dir.path().join("kubetrail.jsonl.1.zst"),
    )));
    all.extend(ns(&text_of(Codec::Gzip, &gz.path())));
    assert_eq!(all, (1..=9).collect::<Vec<_>>());
}

#[test]
fn committed_state_reads_what_it_writes_and_the_uncompressed_form_of_before() {
    for c in [
        Committed {
            len: 0,
            codec: Codec::None,
        },
        Committed {
            len: 123,
            codec: Codec::Gzip,
        },
        Committed {
            len: u64::MAX,
            codec: Codec::Zstd,
        },
    ] {
        assert_eq!(Committed::decode(&c.encode()), Some(c));
    }
    assert_eq!(
        Committed::decode("4096"),
        Some(Committed {
            len: 4096,
            codec: Codec::None
        })
    );
    for bad in ["", "x", "12 lz4", "12 zstd more", "-1"] {
        assert_eq!(Committed::decode(bad), None, "{bad}");
    }
}

#[test]
fn compress_takes_gzip_and_zstd_only() {
    let mut s = Section::from_pairs(
        SectionKind::Output,
        "file",
        &[("path", "/tmp/x"), ("compress", "lz4")],
    );
    let err = FileOutput::from_section(&mut s).err().unwrap().to_string();
    assert!(err.contains("compress") && err.contains("zstd"), "{err}");
}
