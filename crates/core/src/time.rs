//! Timestamps: nanoseconds since the Unix epoch, parsed from and printed as RFC 3339 the way
//! Kubernetes writes them (`2026-11-27T00:31:51Z`, MicroTime `2026-11-27T00:31:51.810715Z`).

use std::fmt;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A point in time, UTC, with nanosecond precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

impl Timestamp {
    /// From nanoseconds since the Unix epoch.
    pub const fn from_unix_nanos(nanos: i64) -> Timestamp {
        Timestamp(nanos)
    }

    /// Nanoseconds since the Unix epoch.
    pub const fn unix_nanos(self) -> i64 {
        self.0
    }

    /// Whole seconds since the Unix epoch.
    pub const fn unix_seconds(self) -> i64 {
        self.0.div_euclid(1_000_000_000)
    }

    /// The current wall-clock time.
    pub fn now() -> Timestamp {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
    }

    /// Parses RFC 3339 (any offset, any number of fractional digits). `None` if it is not one.
    pub fn parse_rfc3339(s: &str) -> Option<Timestamp> {
        let dt = OffsetDateTime::parse(s, &Rfc3339).ok()?;
        i64::try_from(dt.unix_timestamp_nanos()).ok().map(Timestamp)
    }

    /// RFC 3339 in UTC with as many fractional digits as needed (Go's `RFC3339Nano`).
    pub fn to_rfc3339(self) -> String {
        let mut buf = [0u8; RFC3339_MAX];
        let n = self.rfc3339_bytes(&mut buf);
        // Only ASCII digits and separators were written.
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// Appends [`Timestamp::to_rfc3339`]'s text to `out`, without allocating (every record's
    /// encoding writes one).
    pub fn write_rfc3339(self, out: &mut Vec<u8>) {
        let mut buf = [0u8; RFC3339_MAX];
        let n = self.rfc3339_bytes(&mut buf);
        out.extend_from_slice(&buf[..n]);
    }

    /// Writes the RFC 3339 text into `buf`; returns its length.
    fn rfc3339_bytes(self, buf: &mut [u8; RFC3339_MAX]) -> usize {
        let dt = OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0))
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        // An i64 of nanoseconds spans the years 1677 to 2262: always four digits.
        let year = u32::try_from(dt.year()).unwrap_or(0) % 10_000;
        digits(&mut buf[0..4], year);
        buf[4] = b'-';
        digits(&mut buf[5..7], u32::from(u8::from(dt.month())));
        buf[7] = b'-';
        digits(&mut buf[8..10], u32::from(dt.day()));
        buf[10] = b'T';
        digits(&mut buf[11..13], u32::from(dt.hour()));
        buf[13] = b':';
        digits(&mut buf[14..16], u32::from(dt.minute()));
        buf[16] = b':';
        digits(&mut buf[17..19], u32::from(dt.second()));
        let mut n = 19;
        let mut nanos = dt.nanosecond();
        if nanos != 0 {
            let mut width = 9;
            while nanos.is_multiple_of(10) {
                nanos /= 10;
                width -= 1;
            }
            buf[n] = b'.';
            digits(&mut buf[n + 1..n + 1 + width], nanos);
            n += 1 + width;
        }
        buf[n] = b'Z';
        n + 1
    }
}

/// The longest text [`Timestamp::to_rfc3339`] writes: `2026-11-27T00:31:51.123456789Z`.
const RFC3339_MAX: usize = 30;

/// Writes `v` as exactly `out.len()` decimal digits, zero-padded on the left.
fn digits(out: &mut [u8], mut v: u32) {
    for d in out.iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn kubernetes_forms() {
        let t = Timestamp::parse_rfc3339("2026-11-27T00:31:51Z").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-27T00:31:51Z");
        let m = Timestamp::parse_rfc3339("2026-11-27T00:31:51.810715Z").unwrap();
        assert_eq!(m.to_rfc3339(), "2026-11-27T00:31:51.810715Z");
        assert_eq!(m.unix_seconds(), t.unix_seconds());
        assert!(Timestamp::parse_rfc3339("yesterday").is_none());
        assert!(Timestamp::parse_rfc3339("").is_none());
    }

    /// The formatting this module used before it wrote digits itself: the reference.
    fn reference_rfc3339(t: Timestamp) -> String {
        let dt = OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.0)).unwrap();
        let mut s = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            dt.year(),
            u8::from(dt.month()),
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second()
        );
        let nanos = dt.nanosecond();
        if nanos != 0 {
            s.push('.');
            s.push_str(format!("{nanos:09}").trim_end_matches('0'));
        }
        s.push('Z');
        s
    }

    #[test]
    fn edges_of_the_range() {
        for n in [i64::MIN, i64::MIN + 1, -1, 0, 1, 999_999_999, i64::MAX] {
            let t = Timestamp::from_unix_nanos(n);
            assert_eq!(t.to_rfc3339(), reference_rfc3339(t), "{n}");
        }
        assert_eq!(
            Timestamp::from_unix_nanos(0).to_rfc3339(),
            "1970-01-01T00:00:00Z"
        );
        assert_eq!(
            Timestamp::from_unix_nanos(i64::MAX).to_rfc3339(),
            "2262-04-11T23:47:16.854775807Z"
        );
        let mut out = b"x".to_vec();
        Timestamp::from_unix_nanos(1_500_000_000).write_rfc3339(&mut out);
        assert_eq!(out, b"x1970-01-01T00:00:01.5Z");
    }

    proptest! {
        #[test]
        fn same_text_as_the_reference(n in any::<i64>()) {
            let t = Timestamp::from_unix_nanos(n);
            prop_assert_eq!(t.to_rfc3339(), reference_rfc3339(t));
        }

        #[test]
        fn print_parse_roundtrip(n in 0i64..4_102_444_800_000_000_000i64) {
            let t = Timestamp::from_unix_nanos(n);
            prop_assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()), Some(t));
        }

        #[test]
        fn parse_never_panics(s in ".{0,40}") {
            let _ = Timestamp::parse_rfc3339(&s);
        }
    }
}
