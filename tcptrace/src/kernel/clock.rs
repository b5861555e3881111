//! Kernel clocks: the jiffies rate (idle times are read in jiffies) and
//! turning CLOCK_MONOTONIC stamps (bpf_ktime_get_ns) into wall time.

use std::{
    io::Read as _,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// CONFIG_HZ of the running kernel: from /proc/config.gz or
/// /boot/config-$(uname -r); otherwise measured from /proc/timer_list.
pub fn hz() -> Option<u32> {
    config_hz().or_else(measured_hz)
}

fn config_hz() -> Option<u32> {
    let mut text = String::new();
    if let Ok(file) = std::fs::File::open("/proc/config.gz") {
        flate2::read::GzDecoder::new(file)
            .read_to_string(&mut text)
            .ok()?;
    } else {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
        text = std::fs::read_to_string(format!("/boot/config-{}", release.trim())).ok()?;
    }
    parse_config_hz(&text)
}

pub fn parse_config_hz(config: &str) -> Option<u32> {
    config
        .lines()
        .find_map(|l| l.strip_prefix("CONFIG_HZ="))
        .and_then(|v| v.trim().parse().ok())
}

/// Counts jiffies over 200 ms and rounds to the nearest usual rate.
fn measured_hz() -> Option<u32> {
    let jiffies = || -> Option<u64> {
        let text = std::fs::read_to_string("/proc/timer_list").ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("jiffies: "))
            .and_then(|v| v.trim().parse().ok())
    };
    let start = (jiffies()?, std::time::Instant::now());
    std::thread::sleep(Duration::from_millis(200));
    let ticks = jiffies()? - start.0;
    let rate = ticks as f64 / start.1.elapsed().as_secs_f64();
    [100, 250, 300, 1000]
        .into_iter()
        .min_by_key(|hz| (f64::from(*hz) - rate).abs() as u64)
}

/// Maps monotonic nanoseconds to wall-clock time, fixed at start-up.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    offset_ns: i128,
}

impl WallClock {
    pub fn now() -> WallClock {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as i128;
        WallClock {
            offset_ns: wall - monotonic_ns() as i128,
        }
    }

    /// Unix time in nanoseconds for a monotonic stamp.
    pub fn unix_ns(&self, monotonic_ns: u64) -> i128 {
        monotonic_ns as i128 + self.offset_ns
    }
}

pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_hz_line() {
        assert_eq!(
            parse_config_hz("# CONFIG_HZ_100 is not set\nCONFIG_HZ_250=y\nCONFIG_HZ=250\n"),
            Some(250)
        );
        assert_eq!(parse_config_hz("CONFIG_FOO=y\n"), None);
    }

    #[test]
    fn wall_clock_is_close_to_now() {
        let clock = WallClock::now();
        let wall = clock.unix_ns(monotonic_ns());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i128;
        assert!((wall - now).abs() < 1_000_000_000);
    }
}
