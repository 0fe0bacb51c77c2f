//! File identity by content: a fingerprint of a file's first bytes, so a file is recognised
//! after a rename, after gzip (the fingerprint of a `.gz` is that of its decompressed start,
//! equal to the original's), and not confused with a new file that got a recycled inode.
//!
//! The fingerprinted prefix is the first line (newline included) or the first
//! [`FINGERPRINT_BYTES`] bytes, whichever is shorter. Either is fixed once written, so the
//! fingerprint of a growing file never changes. A file with less than that is too short to
//! fingerprint yet and waits. An audit line holds its `auditID` within its first 256 bytes, so
//! two audit log files never share a fingerprint unless one is a copy of the other.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use flate2::read::MultiGzDecoder;

/// How many bytes at most are fingerprinted.
pub const FINGERPRINT_BYTES: usize = 256;

/// A stable (across runs, versions and platforms) 64-bit fingerprint of a file's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub u64);

impl Fingerprint {
    /// The fingerprint of a file whose first bytes are `start` (as many as were available, at
    /// most [`FINGERPRINT_BYTES`] are looked at), or `None` if it is too short yet.
    pub fn of_start(start: &[u8]) -> Option<Fingerprint> {
        let head = &start[..start.len().min(FINGERPRINT_BYTES)];
        let len = match memchr::memchr(b'\n', head) {
            Some(i) => i + 1,
            None if head.len() == FINGERPRINT_BYTES => FINGERPRINT_BYTES,
            None => return None,
        };
        Some(Fingerprint(fnv1a64(&head[..len])))
    }

    /// Sixteen lowercase hex digits (used in checkpoint stream names).
    pub fn hex(self) -> String {
        format!("{:016x}", self.0)
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// FNV-1a, 64 bits: tiny, stable, and good enough to tell files apart by their first line.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Whether a path names a gzip-compressed file (by its name, as logrotate and the apiserver
/// name them).
pub fn is_gzip_path(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gz"))
}

/// Reads up to [`FINGERPRINT_BYTES`] from the start of an open plain file without moving its
/// read position.
pub fn read_start_plain(file: &File) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; FINGERPRINT_BYTES];
    let mut filled = 0;
    while filled < buf.len() {
        match read_at(file, &mut buf[filled..], filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

/// Reads up to [`FINGERPRINT_BYTES`] of the decompressed start of a gzip file. A file still
/// being compressed (or too short to hold a gzip header yet) gives what could be decompressed,
/// which may be too little to fingerprint: such a file waits like a short plain file.
pub fn read_start_gzip(file: File) -> Vec<u8> {
    let mut dec = MultiGzDecoder::new(io::BufReader::with_capacity(8 << 10, file));
    let mut buf = vec![0u8; FINGERPRINT_BYTES];
    let mut filled = 0;
    while filled < buf.len() {
        match dec.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // Incomplete or corrupt: keep what was decompressed so far.
            Err(_) => break,
        }
    }
    buf.truncate(filled);
    buf
}

/// The fingerprint of the file at `path` (plain or gzip), `None` if it is too short yet.
pub fn fingerprint_path(path: &Path) -> io::Result<Option<Fingerprint>> {
    let file = File::open(path)?;
    let start = if is_gzip_path(path) {
        read_start_gzip(file)
    } else {
        read_start_plain(&file)?
    };
    Ok(Fingerprint::of_start(&start))
}

#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, offset)
}

#[cfg(windows)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(file, buf, offset)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::Compression;
    use flate2::write::GzEncoder;

    use super::*;

    #[test]
    fn fnv1a_matches_the_published_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn short_files_wait_until_a_newline_or_enough_bytes() {
        assert_eq!(Fingerprint::of_start(b""), None);
        assert_eq!(Fingerprint::of_start(b"{\"partial"), None);
        assert_eq!(Fingerprint::of_start(&[b'x'; FINGERPRINT_BYTES - 1]), None);
        assert!(Fingerprint::of_start(b"{}\n").is_some());
        assert!(Fingerprint::of_start(&[b'x'; FINGERPRINT_BYTES]).is_some());
    }

    #[test]
    fn a_growing_file_keeps_its_fingerprint() {
        let line = b"{\"auditID\":\"1\"}\n";
        let fp = Fingerprint::of_start(line).unwrap();
        let mut more = line.to_vec();
        more.extend_from_slice(&[b'y'; 1000]);
        assert_eq!(Fingerprint::of_start(&more), Some(fp));

        let long = vec![b'z'; 5000];
        let fp_long = Fingerprint::of_start(&long[..FINGERPRINT_BYTES]).unwrap();
        assert_eq!(Fingerprint::of_start(&long), Some(fp_long));
        assert_ne!(fp, fp_long);
        // Different first lines, different fingerprints.
        assert_ne!(Fingerprint::of_start(b"{\"auditID\":\"2\"}\n"), Some(fp));
    }

    #[test]
    fn a_gzipped_copy_has_the_fingerprint_of_the_original() {
        let dir = tempfile::tempdir().unwrap();
        let mut content = Vec::new();
        for i in 0..100 {
            writeln!(
                content,
                "{{\"auditID\":\"id-{i}\",\"stage\":\"ResponseComplete\",\"pad\":\"{}\"}}",
                "p".repeat(i)
            )
            .unwrap();
        }
        let plain = dir.path().join("audit-2024-01-01T00-00-00.000.log");
        std::fs::write(&plain, &content).unwrap();
        let gz = dir.path().join("audit-2024-01-01T00-00-00.000.log.gz");
        let mut enc = GzEncoder::new(File::create(&gz).unwrap(), Compression::default());
        enc.write_all(&content).unwrap();
        enc.finish().unwrap();
        let a = fingerprint_path(&plain).unwrap().unwrap();
        let b = fingerprint_path(&gz).unwrap().unwrap();
        assert_eq!(a, b);
        assert!(is_gzip_path(&gz) && !is_gzip_path(&plain));

        // A gzip file cut short (still being written) is "too short", not an error.
        let bytes = std::fs::read(&gz).unwrap();
        let cut = dir.path().join("cut.log.gz");
        std::fs::write(&cut, &bytes[..10]).unwrap();
        assert_eq!(fingerprint_path(&cut).unwrap(), None);
    }

    #[test]
    fn reading_the_start_does_not_move_the_read_position() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        std::fs::write(&p, b"first line\nsecond line\n").unwrap();
        let mut f = File::open(&p).unwrap();
        let mut two = [0u8; 6];
        f.read_exact(&mut two).unwrap();
        assert_eq!(read_start_plain(&f).unwrap(), b"first line\nsecond line\n");
        let mut rest = String::new();
        f.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "line\nsecond line\n");
    }
}
