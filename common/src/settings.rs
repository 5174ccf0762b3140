//! Parsing and printing setting values: durations, byte counts, numbers.
//!
//! One parser per kind of value for every binary, and printers that are
//! their inverse, so a typed default can be shown as the text a flag
//! accepts ([`default_text!`](crate::default_text)) and the typed value
//! stays the one definition.

use std::time::Duration;

/// The text form of a typed default, for clap's `default_value`: rendered
/// once, on first use, and kept for the life of the process.
///
/// ```
/// use std::time::Duration;
/// const RESYNC: Duration = Duration::from_secs(3600);
/// let text: &'static str = netaware_common::default_text!(netaware_common::format_duration(RESYNC));
/// assert_eq!(text, "1h");
/// ```
#[macro_export]
macro_rules! default_text {
    ($value:expr) => {{
        static TEXT: ::std::sync::OnceLock<::std::string::String> = ::std::sync::OnceLock::new();
        TEXT.get_or_init(|| ::std::string::ToString::to_string(&$value))
            .as_str()
    }};
}

/// A duration longer than zero, such as `200ms`, `10s`, `2m` or `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    match parse_duration_or_zero(s)? {
        d if d.is_zero() => Err(format!("'{s}' must be longer than zero")),
        d => Ok(d),
    }
}

/// A duration, zero allowed (`0s`).
pub fn parse_duration_or_zero(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("'{s}' is not a duration like 200ms, 10s or 2m: {e}"))
}

/// The inverse of [`parse_duration`]: `200ms`, `1m 30s`, `1h`.
pub fn format_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// A finite number above zero.
pub fn parse_positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("'{s}' must be a positive number")),
    }
}

/// A whole number above zero (counts and sizes given on the command line).
pub fn parse_nonzero_usize(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(v) if v > 0 => Ok(v),
        _ => Err(format!("'{s}' must be a whole number greater than zero")),
    }
}

/// A byte count such as `8MiB`, `100MB`, `1.5GiB` or `4096`: decimal units
/// (kB, MB, GB, TB = 1000ⁿ) and binary ones (KiB, MiB, GiB, TiB = 1024ⁿ),
/// case-insensitive, `B` optional.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let mult: f64 = match unit {
        "" => 1.0,
        "k" => 1e3,
        "m" => 1e6,
        "g" => 1e9,
        "t" => 1e12,
        "ki" => 1024.0,
        "mi" => 1024.0 * 1024.0,
        "gi" => 1024.0 * 1024.0 * 1024.0,
        "ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => {
            return Err(format!(
                "'{s}' is not a byte count like 8MiB, 100MB or 4096 (unknown unit)"
            ));
        }
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a byte count like 8MiB, 100MB or 4096"))?;
    let bytes = (v * mult).round();
    if !(bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64) {
        return Err(format!("'{s}' is out of range"));
    }
    Ok(bytes as u64)
}

/// The inverse of [`parse_bytes`] for exact values: the largest binary unit
/// that divides `bytes` (`16GiB`, `512MiB`), else plain bytes.
pub fn format_bytes(bytes: u64) -> String {
    for (unit, size) in [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ] {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_parse_with_decimal_and_binary_units() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("8MiB"), Ok(8 << 20));
        assert_eq!(parse_bytes("8 mib"), Ok(8 << 20));
        assert_eq!(parse_bytes("100MB"), Ok(100_000_000));
        assert_eq!(parse_bytes("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_bytes("2k"), Ok(2000));
        for bad in ["", "MB", "8 parsecs", "-1", "1e400"] {
            let e = parse_bytes(bad).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn durations_parse_and_print_back() {
        for d in [
            Duration::from_micros(500),
            Duration::from_millis(200),
            Duration::from_secs(10),
            Duration::from_secs(90),
            Duration::from_secs(1800),
            Duration::from_secs(3600),
        ] {
            let text = format_duration(d);
            assert_eq!(parse_duration(&text), Ok(d), "{text}");
        }
        assert_eq!(format_duration(Duration::from_millis(200)), "200ms");
        assert!(
            parse_duration("0s")
                .unwrap_err()
                .contains("longer than zero")
        );
        assert_eq!(parse_duration_or_zero("0s"), Ok(Duration::ZERO));
        let e = parse_duration("soon").unwrap_err();
        assert!(e.contains("'soon'") && e.contains("like 200ms"), "{e}");
    }

    #[test]
    fn byte_counts_print_back_exactly() {
        for b in [0, 1, 1000, 1024, 1536, 8 << 20, 1 << 30, 16 << 30, 3 << 40] {
            let text = format_bytes(b);
            assert_eq!(parse_bytes(&text), Ok(b), "{text}");
        }
        assert_eq!(format_bytes(16 << 30), "16GiB");
        assert_eq!(format_bytes(1536), "1536");
    }

    #[test]
    fn positive_numbers_only() {
        assert_eq!(parse_positive("2.5"), Ok(2.5));
        for bad in ["0", "-1", "NaN", "inf", "x"] {
            assert!(parse_positive(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn default_text_renders_once_per_place() {
        let texts: Vec<&'static str> = (0..2)
            .map(|_| crate::default_text!(format_bytes(1 << 30)))
            .collect();
        assert_eq!(texts[0], "1GiB");
        // The same place hands out the same rendering, not a new one.
        assert!(std::ptr::eq(texts[0], texts[1]));
    }
}
