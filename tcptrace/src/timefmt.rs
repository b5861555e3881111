//! Times and durations as tcptrace prints them: RFC 3339 (UTC) for JSON,
//! local time of day for human lines (both through jiff), and the one
//! duration format every report uses.

use std::{cell::RefCell, io};

use jiff::{Timestamp, tz::TimeZone};

/// `2026-11-24T14:53:01.123456789Z` from Unix nanoseconds (always nine
/// fraction digits, so lines align and sort as text).
pub fn rfc3339(unix_ns: i128) -> String {
    let mut out = Vec::with_capacity(30);
    // Writing to a Vec cannot fail.
    let _ = write_rfc3339(&mut out, unix_ns);
    String::from_utf8(out).unwrap_or_default()
}

/// Writes `rfc3339(unix_ns)` without allocating. This runs for every
/// event of `trace --json`: the date and time of day are formatted by
/// jiff once per second (cached per thread), the nanoseconds by hand.
pub fn write_rfc3339(out: &mut impl io::Write, unix_ns: i128) -> io::Result<()> {
    let secs = unix_ns.div_euclid(1_000_000_000) as i64;
    let nanos = unix_ns.rem_euclid(1_000_000_000) as u32;
    thread_local! {
        static UTC_SECOND: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) };
    }
    UTC_SECOND.with_borrow_mut(|(cached, prefix)| {
        if *cached != secs {
            *cached = secs;
            *prefix = match Timestamp::from_second(secs) {
                Ok(ts) => ts.strftime("%Y-%m-%dT%H:%M:%S").to_string(),
                Err(_) => "0000-00-00T00:00:00".into(),
            };
        }
        out.write_all(prefix.as_bytes())
    })?;
    let mut fraction = *b".000000000Z";
    write_digits(&mut fraction[1..10], nanos);
    out.write_all(&fraction)
}

/// `14:53:01.123456` in the local time zone.
pub fn local_time_of_day(unix_ns: i128) -> String {
    let secs = unix_ns.div_euclid(1_000_000_000) as i64;
    let micros = (unix_ns.rem_euclid(1_000_000_000) / 1000) as u32;
    thread_local! {
        static LOCAL_SECOND: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) };
    }
    LOCAL_SECOND.with_borrow_mut(|(cached, prefix)| {
        if *cached != secs {
            *cached = secs;
            *prefix = match Timestamp::from_second(secs) {
                Ok(ts) => TimeZone::system()
                    .to_datetime(ts)
                    .strftime("%H:%M:%S")
                    .to_string(),
                Err(_) => "00:00:00".into(),
            };
        }
        let mut fraction = *b".000000";
        write_digits(&mut fraction[1..], micros);
        format!("{prefix}{}", String::from_utf8_lossy(&fraction))
    })
}

/// Writes `value` as zero-padded decimal digits filling `digits`.
fn write_digits(digits: &mut [u8], mut value: u32) {
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// A duration, short and unambiguous, in the units `--duration` and
/// friends accept: `850us`, `20ms`, `20.1ms`, `3s`, `1.25s`. Whole
/// milliseconds and seconds print without decimals; otherwise one
/// decimal for milliseconds, two for seconds; microsecond resolution.
pub fn duration_ns(ns: u64) -> String {
    let us = (ns + 500) / 1000;
    match us {
        0..1_000 => format!("{us}us"),
        1_000..1_000_000 if us.is_multiple_of(1_000) => format!("{}ms", us / 1_000),
        1_000..1_000_000 => format!("{:.1}ms", us as f64 / 1e3),
        _ if us.is_multiple_of(1_000_000) => format!("{}s", us / 1_000_000),
        _ => format!("{:.2}s", us as f64 / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339(1_795_963_981_123_456_789),
            "2026-11-29T14:53:01.123456789Z"
        );
        assert_eq!(
            rfc3339(951_782_400_000_000_007),
            "2000-02-29T00:00:00.000000007Z"
        );
        // The per-second cache must not leak a second into the next.
        assert_eq!(
            rfc3339(951_782_401_000_000_000),
            "2000-02-29T00:00:01.000000000Z"
        );
    }

    #[test]
    fn local_time_has_microseconds() {
        let text = local_time_of_day(1_795_963_981_123_456_789);
        assert_eq!(text.len(), "14:53:01.123456".len(), "{text}");
        assert!(text.ends_with(".123456"), "{text}");
    }

    #[test]
    fn durations() {
        assert_eq!(duration_ns(45_000), "45us");
        assert_eq!(duration_ns(850_000), "850us");
        assert_eq!(duration_ns(20_000_000), "20ms");
        assert_eq!(duration_ns(20_150_000), "20.1ms");
        assert_eq!(duration_ns(12_340_000), "12.3ms");
        assert_eq!(duration_ns(3_000_000_000), "3s");
        assert_eq!(duration_ns(1_234_567_000), "1.23s");
        assert_eq!(duration_ns(1_250_000_000), "1.25s");
        assert_eq!(duration_ns(400), "0us");
    }
}
