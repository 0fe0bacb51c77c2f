//! Reading a log file as lines: [`LineSplitter`] cuts a byte stream read in large chunks into
//! complete lines without copying or allocating per line, and skips lines longer than the
//! limit instead of holding them; [`Input`] is the byte stream of a plain or a gzipped file.
//!
//! Offsets are positions in the (uncompressed) stream, so a checkpoint means the same thing
//! for a file and for its gzipped backup.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};

use flate2::read::MultiGzDecoder;

/// How much of a too-long line is kept to show in its error record.
pub const TOO_LONG_HEAD: usize = 512;

/// What the splitter found.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A complete line (without its `\n`) starting at `offset`.
    Line { offset: u64, line: &'a [u8] },
    /// A line of `len` bytes (without its `\n`) at `offset`, longer than the limit: it was not
    /// kept, apart from its first bytes (`head`).
    TooLong {
        offset: u64,
        len: u64,
        head: Vec<u8>,
    },
}

/// A too-long line being skipped.
#[derive(Debug)]
struct Skip {
    offset: u64,
    len: u64,
    head: Vec<u8>,
}

/// Splits a byte stream into lines. Holds at most one partial line (up to `max_line` bytes)
/// plus one read chunk.
#[derive(Debug)]
pub struct LineSplitter {
    buf: Vec<u8>,
    /// `buf[start..end]` holds bytes not yet given out.
    start: usize,
    end: usize,
    /// `buf[start..scanned]` is known to hold no newline.
    scanned: usize,
    /// The stream offset of `buf[end]`: where the next read continues.
    pos: u64,
    max_line: usize,
    chunk: usize,
    skip: Option<Skip>,
}

impl LineSplitter {
    /// A splitter for a stream positioned at `offset`, reading `chunk` bytes at a time and
    /// keeping lines of up to `max_line` bytes.
    pub fn new(offset: u64, max_line: usize, chunk: usize) -> LineSplitter {
        let chunk = chunk.max(1);
        LineSplitter {
            buf: vec![0; chunk],
            start: 0,
            end: 0,
            scanned: 0,
            pos: offset,
            max_line,
            chunk,
            skip: None,
        }
    }

    /// Where the next line starts: everything before it has been given out. This is the
    /// offset to checkpoint.
    pub fn line_start(&self) -> u64 {
        match &self.skip {
            Some(s) => s.offset,
            None => self.pos - (self.end - self.start) as u64,
        }
    }

    /// The stream position of the next read.
    pub fn read_pos(&self) -> u64 {
        self.pos
    }

    /// Whether a partial line (or a too-long line being skipped) is pending.
    pub fn has_partial(&self) -> bool {
        self.skip.is_some() || self.start < self.end
    }

    /// Reads once from `input` into the buffer; returns how many bytes were read (0 at the
    /// end of the data for now).
    pub fn fill(&mut self, input: &mut impl Read) -> io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            self.scanned = 0;
            // Give back the memory of a long line once it is gone.
            if self.buf.len() > 4 * self.chunk {
                self.buf = vec![0; self.chunk];
            }
        }
        if self.buf.len() - self.end < self.chunk {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.scanned -= self.start;
                self.start = 0;
            }
            let needed = self.end + self.chunk;
            if self.buf.len() < needed {
                // Grow geometrically (a long line arrives chunk by chunk) but never past what
                // the longest line allowed needs.
                let cap = (self.buf.capacity() * 2)
                    .max(needed)
                    .min(needed.max(self.max_line + self.chunk));
                self.buf.reserve_exact(cap.saturating_sub(self.buf.len()));
                self.buf.resize(needed, 0);
            }
        }
        let n = loop {
            match input.read(&mut self.buf[self.end..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        };
        self.end += n;
        self.pos += n as u64;
        Ok(n)
    }

    /// The next complete line (or too-long line) in the buffer, if any.
    pub fn next_event(&mut self) -> Option<Event<'_>> {
        if let Some(skip) = self.skip.as_mut() {
            let data = &self.buf[self.start..self.end];
            let line_part = memchr::memchr(b'\n', data).unwrap_or(data.len());
            // The head shown in the error record fills up to its size as the line goes by.
            let want = TOO_LONG_HEAD.saturating_sub(skip.head.len()).min(line_part);
            skip.head.extend_from_slice(&data[..want]);
            return match memchr::memchr(b'\n', data) {
                Some(i) => {
                    skip.len += i as u64;
                    self.start += i + 1;
                    self.scanned = self.start;
                    let s = self.skip.take()?;
                    Some(Event::TooLong {
                        offset: s.offset,
                        len: s.len,
                        head: s.head,
                    })
                }
                None => {
                    skip.len += data.len() as u64;
                    self.start = self.end;
                    self.scanned = self.end;
                    None
                }
            };
        }
        match memchr::memchr(b'\n', &self.buf[self.scanned..self.end]) {
            Some(i) => {
                let offset = self.line_start();
                let (s, e) = (self.start, self.scanned + i);
                self.start = e + 1;
                self.scanned = self.start;
                if e - s > self.max_line {
                    let head = self.buf[s..s + TOO_LONG_HEAD.min(e - s)].to_vec();
                    return Some(Event::TooLong {
                        offset,
                        len: (e - s) as u64,
                        head,
                    });
                }
                Some(Event::Line {
                    offset,
                    line: &self.buf[s..e],
                })
            }
            None => {
                self.scanned = self.end;
                let len = self.end - self.start;
                if len > self.max_line {
                    // No newline within the limit: stop holding the line, remember where it
                    // started, and drop bytes until its end.
                    let offset = self.line_start();
                    let head = self.buf[self.start..self.start + TOO_LONG_HEAD.min(len)].to_vec();
                    self.skip = Some(Skip {
                        offset,
                        len: len as u64,
                        head,
                    });
                    self.start = self.end;
                    self.scanned = self.end;
                }
                None
            }
        }
    }

    /// The pending partial line as a last line, for a file that will not grow any more.
    pub fn finish(&mut self) -> Option<Event<'_>> {
        if let Some(s) = self.skip.take() {
            return Some(Event::TooLong {
                offset: s.offset,
                len: s.len,
                head: s.head,
            });
        }
        if self.start == self.end {
            return None;
        }
        let offset = self.line_start();
        let (s, e) = (self.start, self.end);
        self.start = e;
        self.scanned = e;
        if e - s > self.max_line {
            let head = self.buf[s..s + TOO_LONG_HEAD.min(e - s)].to_vec();
            return Some(Event::TooLong {
                offset,
                len: (e - s) as u64,
                head,
            });
        }
        Some(Event::Line {
            offset,
            line: &self.buf[s..e],
        })
    }

    /// The buffer's current size (for tests of the memory bound).
    #[cfg(test)]
    pub fn buffer_len(&self) -> usize {
        self.buf.len()
    }
}

/// The byte stream of a file: plain, or decompressed on the fly.
pub enum Input {
    Plain(File),
    Gzip(Box<MultiGzDecoder<BufReader<File>>>),
}

impl Read for Input {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Input::Plain(f) => f.read(buf),
            Input::Gzip(d) => d.read(buf),
        }
    }
}

/// Why an input could not be positioned at an offset.
#[derive(Debug)]
pub enum PositionError {
    /// The stream is shorter than the offset (a copy made earlier, or a gzip file still being
    /// written).
    TooShort,
    Io(io::Error),
}

impl Input {
    /// Positions `file` at `offset` of its (uncompressed) stream. For a gzip file this
    /// decompresses and discards everything before the offset.
    pub fn open_at(file: File, compressed: bool, offset: u64) -> Result<Input, PositionError> {
        if compressed {
            let mut dec = MultiGzDecoder::new(BufReader::with_capacity(64 << 10, file));
            let skipped = io::copy(&mut (&mut dec).take(offset), &mut io::sink())
                .map_err(PositionError::Io)?;
            if skipped < offset {
                return Err(PositionError::TooShort);
            }
            Ok(Input::Gzip(Box::new(dec)))
        } else {
            let mut file = file;
            let len = file.metadata().map_err(PositionError::Io)?.len();
            if len < offset {
                return Err(PositionError::TooShort);
            }
            file.seek(SeekFrom::Start(offset))
                .map_err(PositionError::Io)?;
            Ok(Input::Plain(file))
        }
    }
}

/// The offset just after the last newline of the first `len` bytes of a plain file (0 if it
/// has none): where a file that is not read from its head starts, so the line being written
/// at that moment is read whole.
pub fn last_line_end(file: &File, len: u64) -> io::Result<u64> {
    const STEP: u64 = 64 << 10;
    let mut buf = vec![0u8; STEP as usize];
    let mut end = len;
    while end > 0 {
        let start = end.saturating_sub(STEP);
        let chunk = &mut buf[..(end - start) as usize];
        read_exact_at(file, chunk, start)?;
        if let Some(i) = memchr::memrchr(b'\n', chunk) {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

fn read_exact_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        #[cfg(unix)]
        let n = std::os::unix::fs::FileExt::read_at(file, buf, offset);
        #[cfg(windows)]
        let n = std::os::windows::fs::FileExt::seek_read(file, buf, offset);
        match n {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use proptest::prelude::*;

    use super::*;

    /// A reader that hands out its data in the given chunk sizes (cycling), then 0.
    struct Chunked {
        data: Vec<u8>,
        at: usize,
        sizes: Vec<usize>,
        i: usize,
    }

    impl Read for Chunked {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let want = self.sizes[self.i % self.sizes.len()].max(1);
            self.i += 1;
            let n = want.min(buf.len()).min(self.data.len() - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    #[derive(Debug, PartialEq, Eq)]
    enum Owned {
        Line(u64, Vec<u8>),
        TooLong(u64, u64),
    }

    fn own(e: Event<'_>) -> Owned {
        match e {
            Event::Line { offset, line } => Owned::Line(offset, line.to_vec()),
            Event::TooLong { offset, len, .. } => Owned::TooLong(offset, len),
        }
    }

    /// Everything a splitter gives for `data`, read in `sizes` chunks: the complete lines,
    /// then (with `finish`) the last partial one. Also checks the memory bound as it goes.
    fn split(
        data: &[u8],
        sizes: Vec<usize>,
        max_line: usize,
        chunk: usize,
        finish: bool,
    ) -> (Vec<Owned>, u64) {
        let mut input = Chunked {
            data: data.to_vec(),
            at: 0,
            sizes,
            i: 0,
        };
        let mut sp = LineSplitter::new(0, max_line, chunk);
        let mut out = Vec::new();
        loop {
            while let Some(e) = sp.next_event() {
                out.push(own(e));
            }
            assert!(
                sp.buffer_len() <= max_line + 2 * chunk,
                "buffer {} too big",
                sp.buffer_len()
            );
            if sp.fill(&mut input).unwrap() == 0 {
                break;
            }
        }
        while let Some(e) = sp.next_event() {
            out.push(own(e));
        }
        if finish {
            if let Some(e) = sp.finish() {
                out.push(own(e));
            }
            assert!(!sp.has_partial());
        }
        (out, sp.line_start())
    }

    /// The obvious answer, computed the slow way.
    fn reference(data: &[u8], max_line: usize, finish: bool) -> (Vec<Owned>, u64) {
        let mut out = Vec::new();
        let mut offset = 0u64;
        let mut rest = data;
        while let Some(i) = rest.iter().position(|b| *b == b'\n') {
            out.push(if i > max_line {
                Owned::TooLong(offset, i as u64)
            } else {
                Owned::Line(offset, rest[..i].to_vec())
            });
            offset += i as u64 + 1;
            rest = &rest[i + 1..];
        }
        if finish && !rest.is_empty() {
            let n = rest.len();
            out.push(if n > max_line {
                Owned::TooLong(offset, n as u64)
            } else {
                Owned::Line(offset, rest.to_vec())
            });
            offset += n as u64;
        }
        (out, offset)
    }

    fn lines_strategy() -> impl Strategy<Value = Vec<u8>> {
        // Lines of varied lengths (some over the limits used below), sometimes empty, and
        // sometimes no final newline.
        (
            prop::collection::vec((0usize..300, any::<u8>()), 0..40),
            any::<bool>(),
        )
            .prop_map(|(lines, trailing)| {
                let mut data = Vec::new();
                for (i, (len, b)) in lines.iter().enumerate() {
                    let fill = if *b == b'\n' { b'x' } else { *b };
                    data.extend(std::iter::repeat_n(fill, *len));
                    if i + 1 < lines.len() || trailing {
                        data.push(b'\n');
                    }
                }
                data
            })
    }

    proptest! {
        #[test]
        fn any_chunking_gives_the_same_lines(
            data in lines_strategy(),
            sizes in prop::collection::vec(1usize..200, 1..20),
            max_line in 1usize..250,
            chunk in 1usize..128,
            finish in any::<bool>(),
        ) {
            let got = split(&data, sizes, max_line, chunk, finish);
            prop_assert_eq!(got, reference(&data, max_line, finish));
        }
    }

    #[test]
    fn partial_lines_wait_for_their_newline() {
        let mut sp = LineSplitter::new(100, 1000, 16);
        let mut input: &[u8] = b"{\"a\":1}\n{\"b\":";
        sp.fill(&mut input).unwrap();
        assert_eq!(
            sp.next_event(),
            Some(Event::Line {
                offset: 100,
                line: b"{\"a\":1}"
            })
        );
        assert_eq!(sp.next_event(), None);
        assert!(sp.has_partial());
        assert_eq!(sp.line_start(), 108);
        let mut input: &[u8] = b"2}\n";
        sp.fill(&mut input).unwrap();
        assert_eq!(
            sp.next_event(),
            Some(Event::Line {
                offset: 108,
                line: b"{\"b\":2}"
            })
        );
        assert_eq!(sp.line_start(), 116);
        assert_eq!(sp.read_pos(), 116);
    }

    #[test]
    fn a_line_over_the_limit_is_skipped_with_its_offset_and_head() {
        let mut data = b"short\n".to_vec();
        data.extend(std::iter::repeat_n(b'L', 10_000));
        data.extend_from_slice(b"\nafter\n");
        let mut input = Chunked {
            data,
            at: 0,
            sizes: vec![1000],
            i: 0,
        };
        let mut sp = LineSplitter::new(0, 100, 64);
        let mut out = Vec::new();
        while sp.fill(&mut input).unwrap() > 0 {
            while let Some(e) = sp.next_event() {
                if let Event::TooLong { head, .. } = &e {
                    assert_eq!(head.len(), TOO_LONG_HEAD);
                    assert!(head.iter().all(|b| *b == b'L'));
                }
                out.push(own(e));
            }
            // While skipping, the checkpoint stays at the long line's start.
            if sp.has_partial() && out.len() == 1 {
                assert_eq!(sp.line_start(), 6);
            }
            assert!(sp.buffer_len() <= 100 + 2 * 64 + 1000);
        }
        assert_eq!(
            out,
            vec![
                Owned::Line(0, b"short".to_vec()),
                Owned::TooLong(6, 10_000),
                Owned::Line(10_007, b"after".to_vec())
            ]
        );
    }

    #[test]
    fn gzip_input_skips_to_an_uncompressed_offset() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log.gz");
        let mut enc =
            flate2::write::GzEncoder::new(File::create(&p).unwrap(), flate2::Compression::fast());
        enc.write_all(b"line one\nline two\nline three\n").unwrap();
        enc.finish().unwrap();
        let mut input = Input::open_at(File::open(&p).unwrap(), true, 9).unwrap();
        let mut rest = String::new();
        input.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "line two\nline three\n");
        assert!(matches!(
            Input::open_at(File::open(&p).unwrap(), true, 1000),
            Err(PositionError::TooShort)
        ));
    }

    #[test]
    fn the_tail_start_is_after_the_last_newline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        let mut content = vec![b'a'; 200_000];
        content[70_000] = b'\n';
        content.extend_from_slice(b"partial");
        std::fs::write(&p, &content).unwrap();
        let f = File::open(&p).unwrap();
        assert_eq!(last_line_end(&f, content.len() as u64).unwrap(), 70_001);
        std::fs::write(&p, b"no newline at all").unwrap();
        let f = File::open(&p).unwrap();
        assert_eq!(last_line_end(&f, 17).unwrap(), 0);
        std::fs::write(&p, b"x\ny\n").unwrap();
        let f = File::open(&p).unwrap();
        assert_eq!(last_line_end(&f, 4).unwrap(), 4);
    }
}
