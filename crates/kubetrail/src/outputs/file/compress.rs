//! The `file` output's `compress` option: each batch becomes one self-contained gzip member or
//! zstd frame appended to the file. Both formats define a file of members (frames) back to
//! back as one stream, so `zcat`, `gzip -d`, `zstdcat`, `zstd -d` and the libraries read the
//! whole file as the concatenation of the batches; and since a member ends exactly where its
//! batch ends, the committed length the output cuts back to at start is always a member
//! boundary: a member written but not acknowledged before a crash (whole, or cut short by it)
//! is removed like an uncompressed batch would be.

use std::io::Write;

use kubetrail_core::config::{ConfigError, Section};

/// How the file is compressed (`compress`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    None,
    Gzip,
    Zstd,
}

/// zstd's own default level.
const ZSTD_LEVEL: i32 = 3;
/// gzip's own default level.
const GZIP_LEVEL: u32 = 6;

impl Codec {
    /// Reads `compress` (`gzip`, `zstd`, or `none`/`off`, the default).
    pub fn from_section(s: &mut Section) -> Result<Codec, ConfigError> {
        Ok(
            match s.get_choice("compress", &["gzip", "zstd", "none", "off", "false"])? {
                Some("gzip") => Codec::Gzip,
                Some("zstd") => Codec::Zstd,
                _ => Codec::None,
            },
        )
    }

    /// The file name suffix tools recognise the format by.
    pub fn extension(self) -> &'static str {
        match self {
            Codec::None => "",
            Codec::Gzip => ".gz",
            Codec::Zstd => ".zst",
        }
    }

    /// The name of the codec in the output's committed state (`None` has none: a state
    /// without a codec is an uncompressed file, as before compression existed).
    pub fn state_name(self) -> Option<&'static str> {
        match self {
            Codec::None => None,
            Codec::Gzip => Some("gzip"),
            Codec::Zstd => Some("zstd"),
        }
    }

    /// The codec named in a committed state.
    pub fn from_state_name(name: Option<&str>) -> Option<Codec> {
        match name {
            None => Some(Codec::None),
            Some("gzip") => Some(Codec::Gzip),
            Some("zstd") => Some(Codec::Zstd),
            Some(_) => None,
        }
    }
}

/// Makes the members: a codec's reusable state (zstd's context is a few megabytes and costs
/// more to set up than a small batch costs to compress).
pub enum Encoder {
    Gzip,
    Zstd(zstd::zstd_safe::CCtx<'static>),
}

impl Encoder {
    /// The encoder of `codec`, `None` for an uncompressed file.
    pub fn new(codec: Codec) -> std::io::Result<Option<Encoder>> {
        use zstd::zstd_safe::{CCtx, CParameter};
        let zstd_error = |code| std::io::Error::other(zstd::zstd_safe::get_error_name(code));
        Ok(match codec {
            Codec::None => None,
            Codec::Gzip => Some(Encoder::Gzip),
            Codec::Zstd => {
                let mut cctx = CCtx::try_create()
                    .ok_or_else(|| std::io::Error::other("cannot allocate a zstd context"))?;
                cctx.set_parameter(CParameter::CompressionLevel(ZSTD_LEVEL))
                    .map_err(zstd_error)?;
                // A checksum of the content in every frame (xxHash64), as gzip members have
                // their CRC-32: a damaged archive is detected when read.
                cctx.set_parameter(CParameter::ChecksumFlag(true))
                    .map_err(zstd_error)?;
                Some(Encoder::Zstd(cctx))
            }
        })
    }

    /// Appends to `out` one member (frame) holding the concatenation of `parts`.
    pub fn member<'a>(
        &mut self,
        parts: impl IntoIterator<Item = &'a [u8]>,
        out: &mut Vec<u8>,
    ) -> std::io::Result<()> {
        match self {
            Encoder::Gzip => {
                let mut enc =
                    flate2::write::GzEncoder::new(out, flate2::Compression::new(GZIP_LEVEL));
                for p in parts {
                    enc.write_all(p)?;
                }
                enc.finish()?;
            }
            Encoder::Zstd(cctx) => {
                // The context keeps its parameters; each encoder starts a new frame on it.
                let mut enc = zstd::stream::write::Encoder::with_context(out, cctx);
                for p in parts {
                    enc.write_all(p)?;
                }
                enc.finish()?;
            }
        }
        Ok(())
    }
}
