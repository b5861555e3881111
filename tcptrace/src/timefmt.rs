//! Timestamps for output: RFC 3339 (UTC) for JSON, local time of day for
//! human lines. No allocation beyond the returned string.

/// `2026-11-24T14:53:01.123456789Z` from Unix nanoseconds.
pub fn rfc3339(unix_ns: i128) -> String {
    Rfc3339(unix_ns).to_string()
}

/// Unix nanoseconds that display as RFC 3339 UTC (no allocation).
#[derive(Debug, Clone, Copy)]
pub struct Rfc3339(pub i128);

impl std::fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let secs = self.0.div_euclid(1_000_000_000) as i64;
        let nanos = self.0.rem_euclid(1_000_000_000) as u32;
        let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        )
    }
}

/// Writes `Rfc3339(unix_ns)` with no formatting machinery (hot path).
pub fn write_rfc3339(out: &mut impl std::io::Write, unix_ns: i128) -> std::io::Result<()> {
    let secs = unix_ns.div_euclid(1_000_000_000) as i64;
    let nanos = unix_ns.rem_euclid(1_000_000_000) as u32;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    let mut buf = *b"0000-00-00T00:00:00.000000000Z";
    let mut put = |at: usize, width: usize, mut value: u64| {
        for i in (at..at + width).rev() {
            buf[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, y.clamp(0, 9999) as u64);
    put(5, 2, u64::from(m));
    put(8, 2, u64::from(d));
    put(11, 2, (rem / 3600) as u64);
    put(14, 2, (rem % 3600 / 60) as u64);
    put(17, 2, (rem % 60) as u64);
    put(20, 9, u64::from(nanos));
    out.write_all(&buf)
}

/// `14:53:01.123456` in the local time zone.
pub fn local_time_of_day(unix_ns: i128) -> String {
    let secs = unix_ns.div_euclid(1_000_000_000) as libc::time_t;
    let micros = unix_ns.rem_euclid(1_000_000_000) / 1000;
    // SAFETY: localtime_r writes into the tm we own.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    unsafe { libc::localtime_r(&secs, &mut tm) };
    format!(
        "{:02}:{:02}:{:02}.{micros:06}",
        tm.tm_hour, tm.tm_min, tm.tm_sec
    )
}

/// Days since 1970-01-01 -> (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `1.25s`, `59.8s`, `350ms`, `12.3ms`, `850us`: short and unambiguous.
pub fn duration_ns(ns: u64) -> String {
    let ns = ns as f64;
    if ns >= 1e9 {
        format!("{:.2}s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.1}ms", ns / 1e6)
    } else {
        format!("{:.0}us", ns / 1e3)
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
            rfc3339(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000000000Z"
        );
    }

    #[test]
    fn fast_writer_matches_display() {
        for ns in [0i128, 1_795_963_981_123_456_789, 951_782_400_000_000_007] {
            let mut buf = Vec::new();
            write_rfc3339(&mut buf, ns).unwrap();
            assert_eq!(String::from_utf8(buf).unwrap(), rfc3339(ns));
        }
    }

    #[test]
    fn durations() {
        assert_eq!(duration_ns(1_250_000_000), "1.25s");
        assert_eq!(duration_ns(12_340_000), "12.3ms");
        assert_eq!(duration_ns(850_000), "850us");
    }
}
