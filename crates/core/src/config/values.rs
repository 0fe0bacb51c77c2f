//! Parsers for configuration value forms shared by every component: Fluent Bit's durations
//! (`30`, `30s`, `10m`, `1h`, `1d`), sizes (`512k`, `16M`) and booleans (`on`, `off`, ...).

use std::time::Duration;

/// Parses a Fluent Bit time value: a bare number is seconds; suffixes `ms`, `s`, `m`, `h`, `d`;
/// decimals allowed (`1.5s`). Negative values and overflows are rejected.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let (num, mult_ms): (&str, f64) = if let Some(n) = lower.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = lower.strip_suffix('s') {
        (n, 1_000.0)
    } else if let Some(n) = lower.strip_suffix('m') {
        (n, 60_000.0)
    } else if let Some(n) = lower.strip_suffix('h') {
        (n, 3_600_000.0)
    } else if let Some(n) = lower.strip_suffix('d') {
        (n, 86_400_000.0)
    } else {
        (lower.as_str(), 1_000.0)
    };
    let num = num.trim();
    let bad = || format!("'{t}' is not a duration (use forms like 30, 30s, 10m, 1h, 1d)");
    if num.is_empty() || !num.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(bad());
    }
    let v: f64 = num.parse().map_err(|_| bad())?;
    let ms = v * mult_ms;
    if !ms.is_finite() || !(0.0..=1e15).contains(&ms) {
        return Err(bad());
    }
    Ok(Duration::from_micros((ms * 1000.0).round() as u64))
}

/// Parses a size: a bare number is bytes; suffixes `k`, `m`, `g` (optionally followed by `b`
/// or `ib`) are powers of 1024, as in Fluent Bit.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let stripped = lower
        .strip_suffix("ib")
        .or_else(|| lower.strip_suffix('b'))
        .unwrap_or(&lower);
    let (num, mult): (&str, u64) = if let Some(n) = stripped.strip_suffix('k') {
        (n, 1 << 10)
    } else if let Some(n) = stripped.strip_suffix('m') {
        (n, 1 << 20)
    } else if let Some(n) = stripped.strip_suffix('g') {
        (n, 1 << 30)
    } else {
        (stripped, 1)
    };
    let num = num.trim();
    let bad = || format!("'{t}' is not a size (use forms like 4096, 512k, 16M, 1G)");
    if num.is_empty() || !num.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(bad());
    }
    let v: f64 = num.parse().map_err(|_| bad())?;
    let bytes = v * mult as f64;
    if !bytes.is_finite() || !(0.0..=9.0e18).contains(&bytes) {
        return Err(bad());
    }
    Ok(bytes.round() as u64)
}

/// Parses a boolean the way Fluent Bit does: `on`/`off`, `true`/`false`, `yes`/`no`, `1`/`0`.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        _ => Err(format!("'{}' is not a boolean (use on or off)", s.trim())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration(" 2H "), Ok(Duration::from_secs(7200)));
        for bad in ["", "s", "-1", "1x", "ten", "1e9", "1..2s", "1 m s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512k"), Ok(512 * 1024));
        assert_eq!(parse_size("16M"), Ok(16 << 20));
        assert_eq!(parse_size("12MB"), Ok(12 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        for bad in ["", "k", "-1", "12Q", "many"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bools() {
        assert_eq!(parse_bool("On"), Ok(true));
        assert_eq!(parse_bool("false"), Ok(false));
        assert!(parse_bool("maybe").is_err());
    }

    proptest! {
        #[test]
        fn parsers_never_panic(s in ".{0,24}") {
            let _ = parse_duration(&s);
            let _ = parse_size(&s);
            let _ = parse_bool(&s);
        }

        #[test]
        fn whole_seconds_roundtrip(n in 0u64..10_000_000) {
            prop_assert_eq!(parse_duration(&format!("{n}s")), Ok(Duration::from_secs(n)));
            prop_assert_eq!(parse_duration(&n.to_string()), Ok(Duration::from_secs(n)));
        }
    }
}
