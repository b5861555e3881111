//! Kernel clocks: the jiffies rate (idle times are read in jiffies) and
//! turning CLOCK_MONOTONIC stamps (bpf_ktime_get_ns) into wall time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use procfs::ConfigSetting;

/// CONFIG_HZ of the running kernel (jiffies per second): from the
/// kernel's build configuration (/proc/config.gz or /boot/config-$(uname
/// -r), read by procfs); otherwise measured from /proc/timer_list.
pub fn hz() -> Option<u32> {
    config_hz().or_else(measured_hz)
}

fn config_hz() -> Option<u32> {
    match procfs::kernel_config().ok()?.get("CONFIG_HZ")? {
        ConfigSetting::Value(value) => value.trim().parse().ok(),
        _ => None,
    }
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
    /// The offset between the two clocks now.
    pub fn now() -> WallClock {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as i128;
        WallClock {
            offset_ns: wall - monotonic_ns() as i128,
        }
    }

    /// Unix time in nanoseconds of monotonic zero (about when the host
    /// booted): what a record file keeps to print wall times later.
    pub fn boot_unix_ns(&self) -> i128 {
        self.offset_ns
    }

    /// The clock `boot_unix_ns` describes.
    pub fn from_boot_unix_ns(offset_ns: i128) -> WallClock {
        WallClock { offset_ns }
    }

    /// Unix time in nanoseconds for a monotonic stamp.
    pub fn unix_ns(&self, monotonic_ns: u64) -> i128 {
        monotonic_ns as i128 + self.offset_ns
    }
}

/// CLOCK_MONOTONIC now, in nanoseconds: the clock of `bpf_ktime_get_ns`
/// and so of every event's `mono_ns`.
pub fn monotonic_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hz_is_a_usual_rate() {
        let hz = hz().expect("this kernel's HZ");
        assert!([100, 250, 300, 1000].contains(&hz), "{hz}");
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
