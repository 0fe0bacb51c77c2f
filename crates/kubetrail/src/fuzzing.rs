//! What the cargo-fuzz targets (`fuzz/fuzz_targets/`) do with each input, kept in the library
//! so that the committed corpora replay through exactly the same code in ordinary tests
//! (`tests/fuzz_corpus.rs`), which run without a nightly toolchain or libFuzzer. Beyond "no
//! input panics", each function asserts what must hold of whatever the parser accepts, and
//! panics when it does not.

use std::sync::Arc;

use kubetrail_core::Record;
use kubetrail_kube::frames::{self, Frame, FrameSplitter};

use crate::sources::audit::{self, AuditParseError, MAX_STORED_DEPTH};
use crate::sources::kubernetes_events::normalize::{
    EventsApi, NormalizeContext, Observed, Updates, normalize,
};

fn names() -> (Arc<str>, Arc<str>) {
    (Arc::from("fuzz"), Arc::from("fuzz"))
}

/// A record encodes as one line of valid JSON (checked at any depth), and an error record's
/// original nests no deeper than the cap (plus the record around it).
fn check_record(r: &Record) {
    let line = r.encode();
    assert!(!line.contains(&b'\n'), "a record is one line: {r:?}");
    let text = std::str::from_utf8(&line).expect("records are UTF-8");
    // `IgnoredAny` checks the syntax without building anything, at any depth.
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
        panic!("a record that is not JSON ({e}): {text:.300}");
    }
    if r.kind == kubetrail_core::RecordKind::Error {
        let depth = audit::nesting::depth(text);
        assert!(
            depth <= MAX_STORED_DEPTH + 1,
            "an error record nests {depth} deep: {text:.300}"
        );
    }
}

/// The `webhook_body` target: a webhook body is parsed (one pass where it can) exactly as the
/// careful two-pass parser says, and every item becomes a record. Returns whether the body
/// was accepted.
pub fn webhook_body(data: &[u8]) -> bool {
    let (source, tag) = names();
    let parsed = audit::parse_body(data);
    let careful = audit::parse_body_split(data);
    match (&parsed, &careful) {
        (Ok(a), Ok(b)) => assert_eq!(
            format!("{a:?}"),
            format!("{b:?}"),
            "one pass and the careful way disagree"
        ),
        (Err(_), Err(_)) => {}
        _ => panic!("one pass and the careful way disagree: {parsed:?} / {careful:?}"),
    }
    let Ok(items) = parsed else {
        return false;
    };
    for item in items {
        let record = match item {
            Ok(item) => audit::normalize(item, &source, &tag, false),
            Err(err) => audit::error_record(err, &source, &tag),
        };
        check_record(&record);
    }
    true
}

/// The `audit_line` target: any line becomes one record (an audit event, or an error record
/// with the line or its text).
pub fn audit_line(data: &[u8]) {
    let (source, tag) = names();
    let record = match audit::parse_line(data) {
        Ok(item) => audit::normalize(item, &source, &tag, true),
        Err(AuditParseError::NotAnEvent(err)) => audit::error_record(err, &source, &tag),
        Err(AuditParseError::Json(e)) => {
            audit::invalid_input_record(data, &e.to_string(), &source, &tag)
        }
    };
    check_record(&record);
}

/// The `watch_stream` target: the input's first byte picks the chunk size (1 to 64 bytes), the
/// API view and the format, the second the frame cap (32 bytes to 8 KiB, small enough for
/// inputs to reach it), the rest is a watch response body. The splitter must yield exactly the
/// stream's non-blank lines, in order, until the first line over the frame cap (then an
/// error, after which the stream is not read on), with bounded buffering; every frame is
/// parsed, every Event change normalized into a record; the whole input is also parsed as a
/// list page. Returns how many records were made.
pub fn watch_stream(data: &[u8]) -> usize {
    let [k, cap, stream @ ..] = data else {
        return 0;
    };
    let (k, max_frame) = (*k, 32 * (1 + usize::from(*cap)));
    let chunk = 1 + usize::from(k % 64);
    let api = if k & 0x40 == 0 {
        EventsApi::EventsV1
    } else {
        EventsApi::CoreV1
    };
    let (source, tag) = names();
    let scope: Arc<str> = Arc::from("fuzz");
    let cx = NormalizeContext {
        api,
        source: &source,
        tag: &tag,
        dedup_scope: &scope,
        raw_format: k & 0x80 != 0,
        updates: Updates::All,
    };

    // What the splitter must say: the non-blank lines, the last one only at the end.
    let blank = |l: &[u8]| l.iter().all(u8::is_ascii_whitespace);
    let mut lines: Vec<&[u8]> = stream.split(|b| *b == b'\n').collect();
    let last = lines.pop().unwrap_or_default();
    let oversized_at = lines.iter().position(|l| l.len() > max_frame);
    let complete = &lines[..oversized_at.unwrap_or(lines.len())];
    let want: Vec<&[u8]> = complete.iter().copied().filter(|l| !blank(l)).collect();

    let mut splitter = FrameSplitter::new(max_frame);
    let mut got: Vec<bytes::Bytes> = Vec::new();
    let mut failed = false;
    let mut records = 0;
    'feed: for piece in stream.chunks(chunk) {
        splitter.push(piece);
        loop {
            match splitter.next_frame() {
                Some(Ok(frame)) => {
                    assert!(!frame.contains(&b'\n') && !blank(&frame));
                    assert!(frame.len() <= max_frame);
                    records += handle_frame(&frame, &cx);
                    got.push(frame);
                }
                Some(Err(e)) => {
                    assert_eq!(e.kind(), "oversized", "{e}");
                    failed = true;
                    break 'feed;
                }
                None => break,
            }
        }
        // Bounded: at most one incomplete frame up to the cap, plus the chunk just added.
        assert!(splitter.buffered() <= max_frame + chunk);
    }
    let got: Vec<&[u8]> = got.iter().map(|b| b.as_ref()).collect();
    if failed {
        // Refused at the first line over the cap, whether complete or still growing, after
        // every line before it.
        assert!(oversized_at.is_some() || last.len() > max_frame);
        assert_eq!(got, want, "the frames before the refusal");
    } else {
        assert!(oversized_at.is_none());
        assert_eq!(got, want, "the frames are the stream's lines");
        match splitter.take_rest() {
            Some(rest) => {
                assert_eq!(rest.as_ref(), last);
                records += handle_frame(&rest, &cx);
            }
            None => assert!(blank(last)),
        }
    }

    if let Ok(page) = frames::parse_list_page(stream, Some("Event")) {
        for item in page.items {
            if let Ok(r) = normalize(item.raw, Observed::Listed, &cx) {
                check_record(&r);
                records += 1;
            }
        }
    }
    records
}

/// Parses one frame; an Event change becomes a record (1 is returned).
fn handle_frame(frame: &[u8], cx: &NormalizeContext<'_>) -> usize {
    match frames::parse_frame(frame, Some("Event")) {
        Ok(Frame::Change(t, obj)) => {
            let observed = match t {
                kubetrail_kube::WatchEventType::Added => Observed::Added,
                kubetrail_kube::WatchEventType::Modified => Observed::Modified,
                kubetrail_kube::WatchEventType::Deleted => Observed::Deleted,
            };
            assert!(!obj.uid.is_empty() && !obj.resource_version.is_empty());
            if let Ok(r) = normalize(obj.raw, observed, cx) {
                check_record(&r);
                return 1;
            }
        }
        Ok(Frame::Bookmark { resource_version }) => assert!(!resource_version.is_empty()),
        Ok(Frame::Error(_)) | Err(_) => {}
    }
    0
}

/// The `segment` target, over the bytes of queue segment files (`kubetrail_state::format`):
///
/// - the input read as a segment file: its header, then unit after unit (format-2 blocks:
///   header, payload checked and decompressed, records; a damaged payload decompressed anyway
///   and its records walked, as a reader salvaging a damaged block would; format-1 frames:
///   id and data), each unit decoded only once all its bytes are there, as the reader does —
///   no input may panic or allocate beyond what its sizes allow;
/// - the input cut into records (its first byte says how many, 1 to 16), sealed into a block
///   (compressed when that makes it smaller) and read back: the same records, all intact;
///   then one byte of the block, chosen by the input's last two bytes, changed: the header's
///   or the payload's checksum says so, and the records salvaged before the damaged byte are
///   the ones written.
pub fn segment(data: &[u8]) {
    read_segment(data);
    seal_and_damage(data);
}

fn read_segment(data: &[u8]) {
    use kubetrail_state::format::{self, SegmentFormat};
    let Ok(fmt) = format::parse_file_header(data) else {
        return;
    };
    let mut pos = fmt.header_len() as usize;
    while pos < data.len() {
        let Ok(unit) = format::parse_unit(fmt, &data[pos..]) else {
            return;
        };
        assert!(unit.len > 0, "a unit of no bytes would never end a walk");
        // As the reader: a unit is decoded only once all its bytes are there.
        let Some(unit_bytes) = usize::try_from(unit.len)
            .ok()
            .and_then(|len| data.get(pos..pos.checked_add(len)?))
        else {
            return;
        };
        match fmt {
            SegmentFormat::V1 => {
                let Ok(f) = format::parse_v1_frame_header(unit_bytes) else {
                    unreachable!("parse_unit read this header");
                };
                assert_eq!(f.total, unit.len);
                let id_end = format::V1_FRAME_HEADER_LEN + f.id_len as usize;
                // The reader's id and data split (its length arithmetic must not underflow).
                assert!(id_end <= unit_bytes.len());
                let _ = std::str::from_utf8(&unit_bytes[format::V1_FRAME_HEADER_LEN..id_end]);
            }
            SegmentFormat::V2 => {
                let Ok(h) = format::parse_block_header(unit_bytes) else {
                    unreachable!("parse_unit read this header");
                };
                let payload = &unit_bytes[format::BLOCK_HEADER_LEN..];
                let raw = match format::decode_payload(&h, payload) {
                    Ok(raw) => Some(raw),
                    // Salvage, as a reader of a damaged block would.
                    Err(_) => format::decompress(&h, payload).ok(),
                };
                if let Some(raw) = raw {
                    assert_eq!(raw.len(), h.raw_len as usize);
                    let mut n = 0u64;
                    for r in format::records(&raw) {
                        let Ok(r) = r else { break };
                        assert!(r.id.end == r.data.start && r.data.end <= raw.len());
                        let _ = r.intact(&raw);
                        let _ = std::str::from_utf8(&raw[r.id.clone()]);
                        n += 1;
                    }
                    // At most as many records as headers fit in the decompressed bytes.
                    assert!(n <= raw.len() as u64 / format::RECORD_HEADER_LEN as u64);
                }
            }
        }
        pos += unit_bytes.len();
    }
}

fn seal_and_damage(data: &[u8]) {
    use kubetrail_state::format::{self, FormatError};
    let [n, rest @ ..] = data else {
        return;
    };
    let n = 1 + usize::from(n % 16);
    // Records: the input cut into n pieces; each piece's first byte says how much is the id.
    let piece = rest.len().div_ceil(n).max(1);
    let originals: Vec<(&[u8], &[u8])> = (0..n)
        .map(|i| {
            let p = rest
                .get(i * piece..((i + 1) * piece).min(rest.len()))
                .unwrap_or(&[]);
            let split = p.first().map_or(0, |b| usize::from(*b) % (p.len() + 1));
            p.split_at(split)
        })
        .collect();
    let mut raw = Vec::new();
    for (id, data) in &originals {
        format::push_record(&mut raw, id, data);
    }
    let mut out = Vec::new();
    let (h, payload) = format::seal_block(7, n as u32, &raw, &mut out);
    let mut file = format::file_header().to_vec();
    file.extend_from_slice(&h.encode());
    file.extend_from_slice(payload);

    // Read back whole.
    assert_eq!(
        format::parse_file_header(&file),
        Ok(format::SegmentFormat::V2)
    );
    let at = format::FILE_HEADER_LEN as usize;
    assert_eq!(format::parse_block_header(&file[at..]), Ok(h));
    let back =
        format::decode_payload(&h, &file[at + format::BLOCK_HEADER_LEN..]).expect("intact block");
    assert_eq!(back, raw);
    let got: Vec<(&[u8], &[u8])> = format::records(&back)
        .map(|r| {
            let r = r.expect("records of a sealed block");
            assert!(r.intact(&back));
            (&back[r.id.clone()], &back[r.data.clone()])
        })
        .collect();
    assert_eq!(got, originals);

    // One byte changed (never to itself): always detected.
    let [.., a, b] = data else {
        return;
    };
    let k = (usize::from(*a) << 8 | usize::from(*b)) % (file.len() - at) + at;
    let mut bad = file.clone();
    bad[k] ^= a | 1;
    let block = &bad[at..];
    match format::parse_block_header(block) {
        Err(_) => assert!(
            k < at + format::BLOCK_HEADER_LEN,
            "a payload byte broke the header"
        ),
        Ok(h2) => {
            assert_eq!(h2, h, "a header byte changed unnoticed");
            let payload = &block[format::BLOCK_HEADER_LEN..];
            match format::decode_payload(&h2, payload) {
                Err(FormatError::PayloadChecksum { .. }) => {}
                other => panic!("a damaged payload was not detected: {other:?}"),
            }
            // Salvage. A record's checksum covers its id and data, not its lengths or place:
            // after a damaged length the walk reads record headers out of other records' data
            // (and twelve zero bytes read as an intact empty record), so only the records
            // before the damage are promised: the originals, intact, in order; and the record
            // whose id, data or checksum holds the damaged byte is never taken as intact.
            // (LZ4's output after a damaged byte is anything: there, decoding must only stay
            // within bounds.)
            let Ok(salvaged) = format::decompress(&h2, payload) else {
                return;
            };
            if h2.codec != format::Codec::Stored || k < at + format::BLOCK_HEADER_LEN {
                for r in format::records(&salvaged).flatten() {
                    let _ = r.intact(&salvaged);
                }
                return;
            }
            let damaged = k - at - format::BLOCK_HEADER_LEN;
            for (i, r) in format::records(&salvaged).enumerate() {
                let Ok(r) = r else { break };
                let start = r.id.start - format::RECORD_HEADER_LEN;
                if r.data.end <= damaged {
                    assert!(r.intact(&salvaged), "record {i}, before the damage");
                    let rec = (&salvaged[r.id.clone()], &salvaged[r.data.clone()]);
                    assert_eq!(rec, originals[i], "record {i}, before the damage");
                } else {
                    if damaged >= start + 8 {
                        assert!(!r.intact(&salvaged), "record {i} holds the damage");
                    }
                    break;
                }
            }
        }
    }
}
