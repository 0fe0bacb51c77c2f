//! The bytes of queue segment files, without any I/O: the file header, the checksummed and
//! compressed blocks of records that segments hold since format 2, and the frames of format 1
//! (one uncompressed record each), which older kubetrail versions wrote and which are still
//! read. segments.rs does the I/O; this module only encodes and decodes, so that it can be
//! fuzzed on bytes alone.
//!
//! A format-2 segment file:
//!
//! ```text
//! file header (16 bytes, not part of the log's positions):
//!   u32 0              (a format-1 file starts with a frame length, never 0)
//!   "KTQS"             magic
//!   u16 LE 2           format version
//!   u16 0              reserved
//!   u32 LE CRC32C of the 12 bytes before it
//! blocks, back to back; each:
//!   "KTQB"             magic
//!   u8 codec           0 = stored, 1 = LZ4 block
//!   3 bytes 0          reserved
//!   u64 LE first_seq   sequence number of its first record; the others follow it
//!   u32 LE count       records (at least 1)
//!   u32 LE raw_len     bytes of the records once decompressed
//!   u32 LE stored_len  bytes of the payload that follows the header
//!   u32 LE CRC32C of the payload as stored (the compressed bytes)
//!   u32 LE CRC32C of the 32 header bytes before it
//!   payload            the records, compressed with `codec`; each record:
//!     u32 LE id_len, u32 LE data_len, u32 LE CRC32C of id then data, id (UTF-8), data
//! ```
//!
//! The block checksum detects a damaged block before anything is decompressed; the header's
//! own checksum says whether the header (and so where the next block starts) can be trusted
//! when the payload is damaged; the records' checksums say which records of a damaged block
//! are intact and can still be delivered (a flipped byte in LZ4's output damages only what is
//! decoded from it, or everything after it in the block).
//!
//! A format-1 segment is frames back to back, from the first byte:
//! `u32 LE total length, u32 LE id_len, u64 LE seq, id, data`.

use std::fmt;

/// Bytes of a format-2 file header.
pub const FILE_HEADER_LEN: u64 = 16;
const FILE_MAGIC: &[u8; 4] = b"KTQS";
const FORMAT_VERSION: u16 = 2;

/// Bytes of a block header.
pub const BLOCK_HEADER_LEN: usize = 36;
/// The bytes a block header starts with (a reader past a damaged header looks for them).
pub const BLOCK_MAGIC: &[u8; 4] = b"KTQB";

/// Bytes of a record's header inside a block's payload.
pub const RECORD_HEADER_LEN: usize = 12;

/// Bytes of a format-1 frame header.
pub const V1_FRAME_HEADER_LEN: usize = 16;

/// LZ4 cannot expand more than this (a 255-byte run per literal length byte, plus slack): a
/// block claiming a larger ratio is corrupt, and its size is never allocated.
const LZ4_MAX_RATIO: u64 = 255;

/// How a segment file lays out its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentFormat {
    /// Uncompressed frames without checksums (kubetrail before format 2); read only.
    V1,
    /// Checksummed, compressed blocks after a file header.
    V2,
}

impl SegmentFormat {
    /// Bytes at the start of the file that are not part of the log's positions.
    pub fn header_len(self) -> u64 {
        match self {
            SegmentFormat::V1 => 0,
            SegmentFormat::V2 => FILE_HEADER_LEN,
        }
    }

    /// Bytes needed to read a unit's header (see [`parse_unit`]).
    pub fn unit_header_len(self) -> usize {
        match self {
            SegmentFormat::V1 => V1_FRAME_HEADER_LEN,
            SegmentFormat::V2 => BLOCK_HEADER_LEN,
        }
    }
}

/// The payload codec of a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Not compressed (compression would not have made it smaller).
    Stored = 0,
    /// An LZ4 block (`lz4_flex::block`).
    Lz4 = 1,
}

/// Why bytes are not a valid part of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatError {
    /// Fewer bytes than the structure needs.
    Short { need: u64, have: u64 },
    /// A file header that is neither format 1 nor a valid format-2 header.
    FileHeader(&'static str),
    /// A block or frame header that is not valid (bad magic, checksum or fields).
    Header(String),
    /// The payload's checksum does not match: the block was damaged on disk.
    PayloadChecksum { stored: u32, computed: u32 },
    /// The payload could not be decompressed or its records do not add up.
    Payload(String),
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormatError::Short { need, have } => {
                write!(f, "{need} bytes needed, only {have} there")
            }
            FormatError::FileHeader(what) => write!(f, "bad segment file header: {what}"),
            FormatError::Header(what) => write!(f, "bad block header: {what}"),
            FormatError::PayloadChecksum { stored, computed } => write!(
                f,
                "block checksum mismatch (stored {stored:08x}, computed {computed:08x})"
            ),
            FormatError::Payload(what) => write!(f, "bad block payload: {what}"),
        }
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn need(b: &[u8], n: usize) -> Result<(), FormatError> {
    if b.len() < n {
        return Err(FormatError::Short {
            need: n as u64,
            have: b.len() as u64,
        });
    }
    Ok(())
}

/// The header a format-2 segment file starts with.
pub fn file_header() -> [u8; FILE_HEADER_LEN as usize] {
    let mut h = [0u8; FILE_HEADER_LEN as usize];
    h[4..8].copy_from_slice(FILE_MAGIC);
    h[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    let crc = crc32c::crc32c(&h[..12]);
    h[12..16].copy_from_slice(&crc.to_le_bytes());
    h
}

/// The format of a segment file from its first bytes (at least 16 when the file holds any
/// record). A format-1 file starts with a frame whose length is at least 16; a format-2 file
/// with four zero bytes, which no format-1 frame can.
pub fn parse_file_header(b: &[u8]) -> Result<SegmentFormat, FormatError> {
    need(b, 4)?;
    if u32_at(b, 0) != 0 {
        return Ok(SegmentFormat::V1);
    }
    need(b, FILE_HEADER_LEN as usize)?;
    if &b[4..8] != FILE_MAGIC {
        return Err(FormatError::FileHeader("not a kubetrail queue segment"));
    }
    if u32_at(b, 12) != crc32c::crc32c(&b[..12]) {
        return Err(FormatError::FileHeader("header checksum mismatch"));
    }
    let version = u16::from_le_bytes([b[8], b[9]]);
    if version != FORMAT_VERSION || b[10] != 0 || b[11] != 0 {
        return Err(FormatError::FileHeader(
            "a format this kubetrail does not know (written by a newer version?)",
        ));
    }
    Ok(SegmentFormat::V2)
}

/// A block's header, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockHeader {
    pub codec: Codec,
    pub first_seq: u64,
    pub count: u32,
    pub raw_len: u32,
    pub stored_len: u32,
    pub payload_crc: u32,
}

impl BlockHeader {
    /// Header and payload.
    pub fn total(&self) -> u64 {
        BLOCK_HEADER_LEN as u64 + u64::from(self.stored_len)
    }

    /// The header's bytes (with both checksums).
    pub fn encode(&self) -> [u8; BLOCK_HEADER_LEN] {
        let mut h = [0u8; BLOCK_HEADER_LEN];
        h[0..4].copy_from_slice(BLOCK_MAGIC);
        h[4] = self.codec as u8;
        h[8..16].copy_from_slice(&self.first_seq.to_le_bytes());
        h[16..20].copy_from_slice(&self.count.to_le_bytes());
        h[20..24].copy_from_slice(&self.raw_len.to_le_bytes());
        h[24..28].copy_from_slice(&self.stored_len.to_le_bytes());
        h[28..32].copy_from_slice(&self.payload_crc.to_le_bytes());
        let crc = crc32c::crc32c(&h[..32]);
        h[32..36].copy_from_slice(&crc.to_le_bytes());
        h
    }
}

/// Reads and checks a block header (magic, header checksum, fields that must agree).
pub fn parse_block_header(b: &[u8]) -> Result<BlockHeader, FormatError> {
    need(b, BLOCK_HEADER_LEN)?;
    let bad = |what: &str| Err(FormatError::Header(what.to_owned()));
    if &b[0..4] != BLOCK_MAGIC {
        return bad("no block magic");
    }
    if u32_at(b, 32) != crc32c::crc32c(&b[..32]) {
        return bad("header checksum mismatch");
    }
    let codec = match b[4] {
        0 => Codec::Stored,
        1 => Codec::Lz4,
        c => return Err(FormatError::Header(format!("unknown codec {c}"))),
    };
    if b[5..8] != [0, 0, 0] {
        return bad("reserved bytes are not zero");
    }
    let h = BlockHeader {
        codec,
        first_seq: u64_at(b, 8),
        count: u32_at(b, 16),
        raw_len: u32_at(b, 20),
        stored_len: u32_at(b, 24),
        payload_crc: u32_at(b, 28),
    };
    if h.count == 0 {
        return bad("no records");
    }
    if u64::from(h.raw_len) < u64::from(h.count) * RECORD_HEADER_LEN as u64 {
        return bad("records longer than the block");
    }
    let plausible = match h.codec {
        Codec::Stored => h.raw_len == h.stored_len,
        Codec::Lz4 => u64::from(h.raw_len) <= u64::from(h.stored_len) * LZ4_MAX_RATIO + 64,
    };
    if !plausible {
        return bad("decompressed size impossible for its codec");
    }
    Ok(h)
}

/// A unit of a segment's log: a format-2 block or a format-1 frame. Walks over the log go unit
/// by unit; a unit is acknowledged, trimmed and released whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unit {
    /// Sequence number of its first record.
    pub first_seq: u64,
    /// Records it holds.
    pub count: u64,
    /// Its bytes in the log.
    pub len: u64,
}

impl Unit {
    /// The sequence number after its last record.
    pub fn end_seq(&self) -> u64 {
        self.first_seq.saturating_add(self.count)
    }

    /// Whether it holds record `seq`.
    pub fn holds(&self, seq: u64) -> bool {
        self.first_seq <= seq && seq < self.end_seq()
    }
}

/// Reads the header of the unit that starts `b` (see [`SegmentFormat::unit_header_len`]).
pub fn parse_unit(format: SegmentFormat, b: &[u8]) -> Result<Unit, FormatError> {
    match format {
        SegmentFormat::V1 => {
            let f = parse_v1_frame_header(b)?;
            Ok(Unit {
                first_seq: f.seq,
                count: 1,
                len: f.total,
            })
        }
        SegmentFormat::V2 => {
            let h = parse_block_header(b)?;
            Ok(Unit {
                first_seq: h.first_seq,
                count: u64::from(h.count),
                len: h.total(),
            })
        }
    }
}

/// A format-1 frame's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct V1Frame {
    pub total: u64,
    pub id_len: u64,
    pub seq: u64,
}

/// Reads a format-1 frame header.
pub fn parse_v1_frame_header(b: &[u8]) -> Result<V1Frame, FormatError> {
    need(b, V1_FRAME_HEADER_LEN)?;
    let f = V1Frame {
        total: u64::from(u32_at(b, 0)),
        id_len: u64::from(u32_at(b, 4)),
        seq: u64_at(b, 8),
    };
    if f.total < V1_FRAME_HEADER_LEN as u64 + f.id_len {
        return Err(FormatError::Header(format!(
            "frame length {} shorter than its header and id ({} bytes)",
            f.total, f.id_len
        )));
    }
    Ok(f)
}

/// Checks a block's payload against its header and returns the records' bytes: decompressed,
/// or the payload itself when stored.
pub fn decode_payload(h: &BlockHeader, payload: &[u8]) -> Result<Vec<u8>, FormatError> {
    if payload.len() != h.stored_len as usize {
        return Err(FormatError::Short {
            need: u64::from(h.stored_len),
            have: payload.len() as u64,
        });
    }
    let computed = crc32c::crc32c(payload);
    if computed != h.payload_crc {
        return Err(FormatError::PayloadChecksum {
            stored: h.payload_crc,
            computed,
        });
    }
    decompress(h, payload)
}

/// Decompresses a payload whatever its checksum says (to salvage a damaged block's intact
/// records, which their own checksums then tell).
pub fn decompress(h: &BlockHeader, payload: &[u8]) -> Result<Vec<u8>, FormatError> {
    match h.codec {
        Codec::Stored => Ok(payload.to_vec()),
        Codec::Lz4 => {
            let raw = lz4_flex::block::decompress(payload, h.raw_len as usize)
                .map_err(|e| FormatError::Payload(format!("LZ4: {e}")))?;
            if raw.len() != h.raw_len as usize {
                return Err(FormatError::Payload(format!(
                    "decompressed to {} bytes instead of {}",
                    raw.len(),
                    h.raw_len
                )));
            }
            Ok(raw)
        }
    }
}

/// One record of a block's decompressed payload, as ranges of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    pub id: std::ops::Range<usize>,
    pub data: std::ops::Range<usize>,
    pub crc: u32,
}

impl RawRecord {
    /// Whether the record's bytes match its checksum.
    pub fn intact(&self, raw: &[u8]) -> bool {
        let crc = crc32c::crc32c(&raw[self.id.clone()]);
        crc32c::crc32c_append(crc, &raw[self.data.clone()]) == self.crc
    }
}

/// The records of a decompressed payload, in order. Stops with an error at the first record
/// whose header does not fit.
pub fn records(raw: &[u8]) -> impl Iterator<Item = Result<RawRecord, FormatError>> + '_ {
    let mut off = 0usize;
    std::iter::from_fn(move || {
        if off >= raw.len() {
            return None;
        }
        let rest = &raw[off..];
        if rest.len() < RECORD_HEADER_LEN {
            off = raw.len();
            return Some(Err(FormatError::Payload(
                "a record header runs past the block".into(),
            )));
        }
        let id_len = u32_at(rest, 0) as usize;
        let data_len = u32_at(rest, 4) as usize;
        let crc = u32_at(rest, 8);
        let id_start = off + RECORD_HEADER_LEN;
        let data_start = id_start.saturating_add(id_len);
        let end = data_start.saturating_add(data_len);
        if end > raw.len() {
            off = raw.len();
            return Some(Err(FormatError::Payload(
                "a record runs past the block".into(),
            )));
        }
        off = end;
        Some(Ok(RawRecord {
            id: id_start..data_start,
            data: data_start..end,
            crc,
        }))
    })
}

/// Bytes record `(id, data)` takes in a block's decompressed payload.
pub fn record_len(id_len: usize, data_len: usize) -> u64 {
    RECORD_HEADER_LEN as u64 + id_len as u64 + data_len as u64
}

/// Appends a record to a block's decompressed payload.
pub fn push_record(raw: &mut Vec<u8>, id: &[u8], data: &[u8]) {
    raw.extend_from_slice(&(id.len() as u32).to_le_bytes());
    raw.extend_from_slice(&(data.len() as u32).to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(id), data);
    raw.extend_from_slice(&crc.to_le_bytes());
    raw.extend_from_slice(id);
    raw.extend_from_slice(data);
}

/// Payloads larger than this are stored, not compressed (a single huge record; LZ4's block
/// format is meant for far smaller inputs).
const MAX_COMPRESSED_RAW: usize = 64 << 20;

/// Makes a block of `count` records starting at `first_seq` from their decompressed payload
/// `raw`, compressing it into `out` unless that would not make it smaller. Returns the header
/// and the payload: a part of `out` (which only grows, so that it is not zeroed again for
/// every block) or, when stored, `raw` itself. The block's bytes are the header's `encode()`
/// followed by the payload.
pub fn seal_block<'a>(
    first_seq: u64,
    count: u32,
    raw: &'a [u8],
    out: &'a mut Vec<u8>,
) -> (BlockHeader, &'a [u8]) {
    seal_block_as(first_seq, count, raw, out, true)
}

/// [`seal_block`], or with `compress` false a block stored as it is (the queue's
/// `queue_compress: off`: no CPU spent on compression, the records' bytes on disk).
pub fn seal_block_as<'a>(
    first_seq: u64,
    count: u32,
    raw: &'a [u8],
    out: &'a mut Vec<u8>,
    compress: bool,
) -> (BlockHeader, &'a [u8]) {
    let mut payload = raw;
    let mut codec = Codec::Stored;
    if compress && raw.len() <= MAX_COMPRESSED_RAW {
        let bound = lz4_flex::block::get_maximum_output_size(raw.len());
        if out.len() < bound {
            out.resize(bound, 0);
        }
        if let Ok(n) = lz4_flex::block::compress_into(raw, &mut out[..bound])
            && n < raw.len()
        {
            payload = &out[..n];
            codec = Codec::Lz4;
        }
    }
    let h = BlockHeader {
        codec,
        first_seq,
        count,
        raw_len: raw.len() as u32,
        stored_len: payload.len() as u32,
        payload_crc: crc32c::crc32c(payload),
    };
    (h, payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(first_seq: u64, recs: &[(&str, &[u8])]) -> Vec<u8> {
        let mut raw = Vec::new();
        for (id, data) in recs {
            push_record(&mut raw, id.as_bytes(), data);
        }
        let mut out = Vec::new();
        let (h, payload) = seal_block(first_seq, recs.len() as u32, &raw, &mut out);
        let mut b = h.encode().to_vec();
        b.extend_from_slice(payload);
        b
    }

    /// A block's header and its records as `(id, data)`.
    type Read = (BlockHeader, Vec<(String, Vec<u8>)>);

    fn read(b: &[u8]) -> Result<Read, FormatError> {
        let h = parse_block_header(b)?;
        let raw = decode_payload(&h, &b[BLOCK_HEADER_LEN..])?;
        let mut out = Vec::new();
        for r in records(&raw) {
            let r = r?;
            assert!(r.intact(&raw));
            out.push((
                String::from_utf8(raw[r.id].to_vec()).unwrap(),
                raw[r.data].to_vec(),
            ));
        }
        Ok((h, out))
    }

    #[test]
    fn blocks_round_trip_compressed_or_stored() {
        let json =
            br#"{"kind":"k8s_audit","verb":"get","verb2":"get","verb3":"get","verb4":"get"}"#;
        let b = block(7, &[("a", json), ("", b""), ("c", json)]);
        let (h, recs) = read(&b).unwrap();
        assert_eq!(h.codec, Codec::Lz4, "repetitive JSON compresses");
        assert_eq!((h.first_seq, h.count), (7, 3));
        assert_eq!(recs[0], ("a".to_string(), json.to_vec()));
        assert_eq!(recs[1], (String::new(), vec![]));
        // Incompressible: stored.
        let noise = crate::store::noise(1, 300);
        let b = block(1, &[("n", &noise)]);
        let (h, recs) = read(&b).unwrap();
        assert_eq!(h.codec, Codec::Stored);
        assert_eq!(recs[0].1, noise);
        assert_eq!(
            parse_unit(SegmentFormat::V2, &b).unwrap(),
            Unit {
                first_seq: 1,
                count: 1,
                len: b.len() as u64
            }
        );
    }

    #[test]
    fn every_flipped_bit_of_a_block_is_detected() {
        let json = br#"{"kind":"k8s_audit","verb":"get","user":{"username":"admin"}}"#;
        let b = block(3, &[("a", json), ("b", json)]);
        for i in 0..b.len() * 8 {
            let mut bad = b.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert!(read(&bad).is_err(), "bit {i} flipped unnoticed");
        }
    }

    #[test]
    fn a_damaged_payload_keeps_a_trusted_header_and_its_intact_records() {
        let a = vec![b'a'; 500];
        let b: Vec<u8> = (0..500u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut raw = Vec::new();
        push_record(&mut raw, b"a", &a);
        push_record(&mut raw, b"b", &b);
        // Stored, so that a flipped byte damages exactly one record.
        let h = BlockHeader {
            codec: Codec::Stored,
            first_seq: 1,
            count: 2,
            raw_len: raw.len() as u32,
            stored_len: raw.len() as u32,
            payload_crc: crc32c::crc32c(&raw),
        };
        let mut damaged = raw.clone();
        damaged[RECORD_HEADER_LEN + 1 + 10] ^= 0x40;
        let h = parse_block_header(&h.encode()).expect("the header is intact");
        assert!(matches!(
            decode_payload(&h, &damaged),
            Err(FormatError::PayloadChecksum { .. })
        ));
        let salvaged = decompress(&h, &damaged).unwrap();
        let intact: Vec<bool> = records(&salvaged)
            .map(|r| r.unwrap().intact(&salvaged))
            .collect();
        assert_eq!(intact, [false, true]);
    }

    #[test]
    fn file_headers_tell_the_formats_apart() {
        assert_eq!(parse_file_header(&file_header()), Ok(SegmentFormat::V2));
        // A format-1 file starts with a frame: its length is never 0.
        let mut v1 = 40u32.to_le_bytes().to_vec();
        v1.extend_from_slice(&[0; 12]);
        assert_eq!(parse_file_header(&v1), Ok(SegmentFormat::V1));
        let mut bad = file_header();
        bad[8] = 3;
        assert!(parse_file_header(&bad).is_err());
        assert!(parse_file_header(&[0; 16]).is_err(), "zeros are no header");
    }

    #[test]
    fn impossible_sizes_are_refused_before_anything_is_allocated() {
        let h = BlockHeader {
            codec: Codec::Lz4,
            first_seq: 1,
            count: 1,
            raw_len: u32::MAX,
            stored_len: 10,
            payload_crc: 0,
        };
        assert!(parse_block_header(&h.encode()).is_err());
        let h = BlockHeader {
            codec: Codec::Stored,
            raw_len: 20,
            stored_len: 21,
            ..h
        };
        assert!(parse_block_header(&h.encode()).is_err());
    }
}
