//! Connection tracking (netfilter conntrack) of one network namespace:
//! the per-CPU statistics of `/proc/net/stat/nf_conntrack` summed, how
//! full the table is (`nf_conntrack_count` of `_max`, `_buckets`), how
//! strict the TCP tracker is (`nf_conntrack_tcp_be_liberal`, `_tcp_loose`)
//! and the TCP timeouts that decide when an idle entry is forgotten.
//!
//! All of it is per network namespace and resolved through the calling
//! *thread*: `/proc/thread-self/net/stat/nf_conntrack` and
//! `/proc/sys/net/netfilter/*` follow the thread's namespace, so read on a
//! thread that entered the namespace being diagnosed. Without the
//! nf_conntrack module neither exists: that is [`Conntrack::NotLoaded`],
//! not an error. (`nf_conntrack_max` and `_buckets` are host-wide limits
//! that every namespace shows read-only; the count is the namespace's own.)

use std::{
    fmt, fs, io,
    path::{Path, PathBuf},
};

use serde::{
    Deserialize, Deserializer, Serialize, Serializer,
    de::{MapAccess, Visitor},
    ser::SerializeMap as _,
};

/// The statistics that mean packets were refused or entries lost; shown
/// even when zero.
pub const KEY_STATS: &[&str] = &["invalid", "insert_failed", "drop", "early_drop"];

/// The header column that is a gauge (the namespace's entry count,
/// repeated on every CPU's row), not a per-CPU counter to sum.
const ENTRIES: &str = "entries";

/// Why conntrack could not be read. A missing module or file is no error
/// (see [`Conntrack::NotLoaded`]); these are.
#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    /// A file exists but could not be read (permissions, I/O).
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What reading it returned.
        #[source]
        source: io::Error,
    },
    /// A file's text is not what this kernel version writes (a header
    /// without columns, rows of the wrong width, a value that is not hex
    /// or a sysctl that is not a number).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong, one line.
        message: String,
    },
}

/// Conntrack in one namespace at one moment.
///
/// JSON: `{"loaded": false}`, or `{"loaded": true, "stats": {..}, "count":
/// .., "max": .., ...}` with the fields of [`ConntrackState`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conntrack {
    /// No nf_conntrack module: nothing is tracked, nothing can be dropped
    /// by a full table or a stateful rule.
    NotLoaded,
    /// The module is loaded in this namespace: its figures.
    Loaded(ConntrackState),
}

/// What a namespace with conntrack loaded reports. A field is `None` when
/// this kernel lacks that sysctl.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConntrackState {
    /// Per-CPU statistics summed, named and ordered as the running
    /// kernel's header line names them (`found`, `invalid`, `insert`,
    /// `insert_failed`, `drop`, `early_drop`, `icmp_error`,
    /// `search_restart`, ...). Counts since the namespace was created.
    /// Empty when the kernel has no /proc/net/stat/nf_conntrack
    /// (CONFIG_NF_CONNTRACK_PROCFS off).
    pub stats: Stats,
    /// Entries in this namespace's table now (`nf_conntrack_count`).
    pub count: Option<u64>,
    /// Host-wide table limit (`nf_conntrack_max`): past it, new flows are
    /// dropped (`drop`) once evicting unreplied ones fails (`early_drop`).
    pub max: Option<u64>,
    /// Hash buckets (`nf_conntrack_buckets`), host-wide.
    pub buckets: Option<u64>,
    /// 1: the TCP tracker accepts out-of-window packets instead of marking
    /// them INVALID (`nf_conntrack_tcp_be_liberal`).
    pub tcp_be_liberal: Option<u64>,
    /// 1: a mid-stream packet of an unknown connection starts a new entry;
    /// 0: it is INVALID (`nf_conntrack_tcp_loose`).
    pub tcp_loose: Option<u64>,
    /// Seconds an idle ESTABLISHED entry is kept
    /// (`nf_conntrack_tcp_timeout_established`).
    pub tcp_timeout_established: Option<u64>,
    /// Seconds for CLOSE_WAIT (`nf_conntrack_tcp_timeout_close_wait`).
    pub tcp_timeout_close_wait: Option<u64>,
    /// Seconds for TIME_WAIT (`nf_conntrack_tcp_timeout_time_wait`).
    pub tcp_timeout_time_wait: Option<u64>,
}

/// Summed statistic columns in the kernel's order; a JSON object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats(Vec<(String, u64)>);

impl Stats {
    /// One column by the kernel's name (`invalid`); `None` if this kernel
    /// has no such column.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    /// Every column as (kernel name, sum over CPUs), in the kernel's order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.0.iter().map(|(n, v)| (n.as_str(), *v))
    }
}

impl Serialize for Stats {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(n, v)| (n, v)))
    }
}

/// Read back in the kernel's order (a record file's readings).
impl<'de> Deserialize<'de> for Stats {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Stats, D::Error> {
        struct Columns;
        impl<'de> Visitor<'de> for Columns {
            type Value = Stats;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("conntrack statistics by column name")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Stats, A::Error> {
                let mut columns = Vec::new();
                while let Some(column) = map.next_entry::<String, u64>()? {
                    columns.push(column);
                }
                Ok(Stats(columns))
            }
        }
        deserializer.deserialize_map(Columns)
    }
}

/// The JSON `Serialize` writes (`{"loaded": false}` or the state with
/// `"loaded": true`), read back.
impl<'de> Deserialize<'de> for Conntrack {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Conntrack, D::Error> {
        #[derive(Deserialize)]
        struct Tagged {
            loaded: bool,
            #[serde(flatten)]
            state: ConntrackState,
        }
        let tagged = Tagged::deserialize(deserializer)?;
        Ok(match tagged.loaded {
            true => Conntrack::Loaded(tagged.state),
            false => Conntrack::NotLoaded,
        })
    }
}

impl Serialize for Conntrack {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Tagged<'a> {
            loaded: bool,
            #[serde(flatten)]
            state: Option<&'a ConntrackState>,
        }
        Tagged {
            loaded: matches!(self, Conntrack::Loaded(_)),
            state: self.state(),
        }
        .serialize(serializer)
    }
}

impl Conntrack {
    /// Reads the calling thread's network namespace.
    pub fn read() -> Result<Conntrack, ConntrackError> {
        Self::read_from(
            Path::new("/proc/thread-self/net"),
            Path::new("/proc/sys/net/netfilter"),
        )
    }

    /// Reads `stat/nf_conntrack` under a directory shaped like /proc/net
    /// and the `nf_conntrack_*` files of one shaped like
    /// /proc/sys/net/netfilter.
    pub fn read_from(proc_net: &Path, netfilter: &Path) -> Result<Conntrack, ConntrackError> {
        let stat_path = proc_net.join("stat/nf_conntrack");
        let stat = read_optional(&stat_path)?;
        let sysctl = |name: &str| read_sysctl(netfilter, name);
        let count = sysctl("count")?;
        if stat.is_none() && count.is_none() {
            return Ok(Conntrack::NotLoaded);
        }
        let (entries, stats) = match stat {
            Some(text) => parse_stat(&text).map_err(|message| ConntrackError::Parse {
                path: stat_path,
                message,
            })?,
            None => (None, Stats::default()),
        };
        Ok(Conntrack::Loaded(ConntrackState {
            stats,
            count: count.or(entries),
            max: sysctl("max")?,
            buckets: sysctl("buckets")?,
            tcp_be_liberal: sysctl("tcp_be_liberal")?,
            tcp_loose: sysctl("tcp_loose")?,
            tcp_timeout_established: sysctl("tcp_timeout_established")?,
            tcp_timeout_close_wait: sysctl("tcp_timeout_close_wait")?,
            tcp_timeout_time_wait: sysctl("tcp_timeout_time_wait")?,
        }))
    }

    /// The figures, when the module is loaded.
    pub fn state(&self) -> Option<&ConntrackState> {
        match self {
            Conntrack::NotLoaded => None,
            Conntrack::Loaded(state) => Some(state),
        }
    }
}

/// Conntrack over a run: the readings at the start and the end, and the
/// change of every statistic.
///
/// JSON: `{"loaded": false}` when neither reading found conntrack, else
/// `{"loaded": true, "start": Conntrack, "end": Conntrack, "delta":
/// {"invalid": 8, ...}}` (`delta` has every column both readings have).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConntrackChange {
    /// The reading before the run.
    pub start: Conntrack,
    /// The reading after it.
    pub end: Conntrack,
}

impl ConntrackChange {
    /// The change from `start` to `end`.
    pub fn new(start: Conntrack, end: Conntrack) -> ConntrackChange {
        ConntrackChange { start, end }
    }

    /// Whether either reading found the module loaded (it can be loaded
    /// during the run, by the first stateful rule).
    pub fn loaded(&self) -> bool {
        self.start.state().is_some() || self.end.state().is_some()
    }

    /// end - start of every column both readings have, kernel order.
    pub fn delta(&self) -> Vec<(&str, i64)> {
        let (Some(start), Some(end)) = (self.start.state(), self.end.state()) else {
            return Vec::new();
        };
        end.stats
            .iter()
            .filter_map(|(name, now)| {
                let then = start.stats.get(name)?;
                Some((name, signed(now) - signed(then)))
            })
            .collect()
    }

    /// A column's change; 0 when either reading lacks it.
    pub fn delta_of(&self, name: &str) -> i64 {
        self.delta()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, v)| v)
    }
}

impl Serialize for ConntrackChange {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let loaded = self.loaded();
        let mut map = serializer.serialize_map(Some(if loaded { 4 } else { 1 }))?;
        map.serialize_entry("loaded", &loaded)?;
        if loaded {
            map.serialize_entry("start", &self.start)?;
            map.serialize_entry("end", &self.end)?;
            let delta = DeltaMap(self.delta());
            map.serialize_entry("delta", &delta)?;
        }
        map.end()
    }
}

struct DeltaMap<'a>(Vec<(&'a str, i64)>);

impl Serialize for DeltaMap<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().copied())
    }
}

/// `conntrack: 3 entries of 262144 (buckets 262144), tcp_loose 0, ...`
impl fmt::Display for Conntrack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(s) = self.state() else {
            return f.write_str("conntrack not loaded (no nf_conntrack: nothing is tracked)");
        };
        write!(
            f,
            "conntrack: {} entries of {} (buckets {}), tcp_loose {}, tcp_be_liberal {}; \
             TCP timeouts established {} s, close_wait {} s, time_wait {} s",
            opt(s.count),
            opt(s.max),
            opt(s.buckets),
            opt(s.tcp_loose),
            opt(s.tcp_be_liberal),
            opt(s.tcp_timeout_established),
            opt(s.tcp_timeout_close_wait),
            opt(s.tcp_timeout_time_wait),
        )?;
        let shown: Vec<String> = s
            .stats
            .iter()
            .filter(|(name, value)| *value != 0 || KEY_STATS.contains(name))
            .map(|(name, value)| format!("{name} {value}"))
            .collect();
        if !shown.is_empty() {
            write!(f, "; statistics: {}", shown.join(", "))?;
        }
        Ok(())
    }
}

/// `conntrack: 3 entries of 262144 (0 at the start); changed: invalid +8`
impl fmt::Display for ConntrackChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(end) = self.end.state().or(self.start.state()) else {
            return f.write_str("conntrack not loaded (no nf_conntrack: nothing is tracked)");
        };
        write!(
            f,
            "conntrack: {} entries of {}",
            opt(end.count),
            opt(end.max)
        )?;
        if let Some(start) = self.start.state() {
            write!(f, " ({} at the start)", opt(start.count))?;
        }
        write!(
            f,
            ", tcp_loose {}, tcp_be_liberal {}",
            opt(end.tcp_loose),
            opt(end.tcp_be_liberal)
        )?;
        let changed: Vec<String> = self
            .delta()
            .into_iter()
            .filter(|(_, v)| *v != 0)
            .map(|(name, v)| format!("{name} {v:+}"))
            .collect();
        if changed.is_empty() {
            f.write_str("; no statistic changed")
        } else {
            write!(f, "; changed: {}", changed.join(", "))
        }
    }
}

fn opt(value: Option<u64>) -> String {
    value.map_or_else(|| "?".into(), |v| v.to_string())
}

fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Parses /proc/net/stat/nf_conntrack: a header of column names, then
/// one row of 8-digit hex values per possible CPU. Returns the `entries`
/// gauge (the same on every row) and every other column summed.
pub fn parse_stat(text: &str) -> Result<(Option<u64>, Stats), String> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .next()
        .ok_or("empty file")?
        .split_whitespace()
        .collect();
    if header.is_empty()
        || header
            .iter()
            .any(|name| u64::from_str_radix(name, 16).is_ok())
    {
        return Err(format!("no header line of column names: {header:?}"));
    }
    let mut sums = vec![0u64; header.len()];
    let mut entries = None;
    for (row, line) in lines.enumerate() {
        let values: Vec<&str> = line.split_whitespace().collect();
        if values.len() != header.len() {
            return Err(format!(
                "CPU row {row} has {} values for {} columns",
                values.len(),
                header.len()
            ));
        }
        for ((name, sum), value) in header.iter().zip(&mut sums).zip(values) {
            let value = u64::from_str_radix(value, 16)
                .map_err(|_| format!("CPU row {row}, {name}: {value:?} is not hex"))?;
            if *name == ENTRIES {
                entries = Some(value);
            } else {
                *sum = sum.saturating_add(value);
            }
        }
    }
    let stats = header
        .iter()
        .zip(sums)
        .filter(|(name, _)| **name != ENTRIES)
        .map(|(name, sum)| (name.to_string(), sum))
        .collect();
    Ok((entries, Stats(stats)))
}

fn read_optional(path: &Path) -> Result<Option<String>, ConntrackError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ConntrackError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// `nf_conntrack_NAME` as a number; `None` if this kernel lacks it.
fn read_sysctl(netfilter: &Path, name: &str) -> Result<Option<u64>, ConntrackError> {
    let path = netfilter.join(format!("nf_conntrack_{name}"));
    let Some(text) = read_optional(&path)? else {
        return Ok(None);
    };
    text.trim()
        .parse()
        .map(Some)
        .map_err(|_| ConntrackError::Parse {
            message: format!("{:?} is not a number", text.trim()),
            path,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured on this kernel (6.18, 2 CPUs) in a namespace with 3
    /// tracked connections after 4 packets of a connection conntrack had
    /// not seen start were dropped as INVALID (each seen at OUTPUT and
    /// PREROUTING on loopback: invalid 8).
    const STAT_6_18: &str = include_str!("fixtures/nf_conntrack-6.18-2cpu");

    #[test]
    fn sums_cpu_rows_by_the_kernels_column_names() {
        let (entries, stats) = parse_stat(STAT_6_18).unwrap();
        // A gauge repeated on each row: not 3 + 3.
        assert_eq!(entries, Some(3));
        assert_eq!(stats.get("invalid"), Some(8));
        assert_eq!(stats.get("drop"), Some(0));
        assert_eq!(stats.get("icmp_error"), Some(0));
        assert_eq!(stats.get("entries"), None);
        assert_eq!(stats.get("searched"), None);
        let names: Vec<&str> = stats.iter().map(|(n, _)| n).collect();
        assert_eq!(names.len(), 16);
        assert_eq!(names[..3], ["clashres", "found", "new"]);
        assert_eq!(names.last(), Some(&"search_restart"));
    }

    #[test]
    fn columns_come_from_the_header_not_positions() {
        // The layout of kernels before 5.x had `searched` and
        // `delete_list` and no `clashres`.
        let text = "entries  searched found new invalid ignore delete delete_list insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart\n\
                    0000000a  00000001 00000002 00000003 00000004 00000000 00000000 00000000 00000005 00000006 0000000f 00000010 00000000  00000000 00000000 00000000 00000001\n\
                    0000000a  00000001 00000002 00000003 00000004 00000000 00000000 00000000 00000005 00000006 00000001 00000000 00000000  00000000 00000000 00000000 00000000\n";
        let (entries, stats) = parse_stat(text).unwrap();
        assert_eq!(entries, Some(10));
        assert_eq!(stats.get("searched"), Some(2));
        assert_eq!(stats.get("insert_failed"), Some(12));
        assert_eq!(stats.get("drop"), Some(16));
        assert_eq!(stats.get("early_drop"), Some(16));
        assert_eq!(stats.get("search_restart"), Some(1));
        assert_eq!(stats.get("clashres"), None);
    }

    #[test]
    fn malformed_files_are_errors_not_panics() {
        for bad in [
            "",
            "00000001 00000002\n",
            "entries found\n00000001\n",
            "entries found\n00000001 zz\n",
        ] {
            assert!(parse_stat(bad).is_err(), "{bad:?}");
        }
        // A header alone (no CPU rows) is odd but harmless.
        let (entries, stats) = parse_stat("entries found\n").unwrap();
        assert_eq!((entries, stats.get("found")), (None, Some(0)));
    }

    fn fake_proc(stat: Option<&str>, sysctls: &[(&str, &str)]) -> (tempdir::Dir, PathBuf, PathBuf) {
        let dir = tempdir::Dir::new();
        let net = dir.path().join("net");
        let netfilter = dir.path().join("netfilter");
        fs::create_dir_all(net.join("stat")).unwrap();
        fs::create_dir_all(&netfilter).unwrap();
        if let Some(text) = stat {
            fs::write(net.join("stat/nf_conntrack"), text).unwrap();
        }
        for (name, value) in sysctls {
            fs::write(netfilter.join(format!("nf_conntrack_{name}")), value).unwrap();
        }
        (dir, net, netfilter)
    }

    #[test]
    fn no_module_reads_as_not_loaded() {
        let (_dir, net, netfilter) = fake_proc(None, &[]);
        let ct = Conntrack::read_from(&net, &netfilter).unwrap();
        assert_eq!(ct, Conntrack::NotLoaded);
        assert_eq!(
            serde_json::to_value(&ct).unwrap(),
            serde_json::json!({"loaded": false})
        );
        assert!(ct.to_string().contains("conntrack not loaded"), "{ct}");
        // A missing /proc/net directory altogether is the same.
        let gone = Path::new("/nonexistent-tcptrace");
        assert_eq!(
            Conntrack::read_from(gone, gone).unwrap(),
            Conntrack::NotLoaded
        );
    }

    #[test]
    fn reads_stat_and_sysctls() {
        let (_dir, net, netfilter) = fake_proc(
            Some(STAT_6_18),
            &[
                ("count", "3\n"),
                ("max", "262144\n"),
                ("buckets", "262144\n"),
                ("tcp_loose", "0\n"),
                ("tcp_be_liberal", "0\n"),
                ("tcp_timeout_established", "432000\n"),
                ("tcp_timeout_close_wait", "60\n"),
                ("tcp_timeout_time_wait", "120\n"),
            ],
        );
        let ct = Conntrack::read_from(&net, &netfilter).unwrap();
        let state = ct.state().unwrap();
        assert_eq!(state.count, Some(3));
        assert_eq!(state.max, Some(262_144));
        assert_eq!(state.tcp_loose, Some(0));
        assert_eq!(state.tcp_timeout_established, Some(432_000));
        assert_eq!(state.stats.get("invalid"), Some(8));
        let json = serde_json::to_value(&ct).unwrap();
        assert_eq!(json["loaded"], true);
        assert_eq!(json["count"], 3);
        assert_eq!(json["stats"]["invalid"], 8);
        assert_eq!(json["tcp_timeout_time_wait"], 120);
        let text = ct.to_string();
        assert!(text.contains("3 entries of 262144"), "{text}");
        assert!(
            text.contains("invalid 8, insert_failed 0, drop 0, early_drop 0"),
            "{text}"
        );
        assert!(
            !text.contains("found"),
            "zero non-key columns are left out: {text}"
        );
    }

    #[test]
    fn a_sysctl_that_is_not_a_number_is_an_error() {
        let (_dir, net, netfilter) = fake_proc(Some(STAT_6_18), &[("count", "many\n")]);
        let err = Conntrack::read_from(&net, &netfilter)
            .unwrap_err()
            .to_string();
        assert!(err.contains("nf_conntrack_count"), "{err}");
    }

    #[test]
    fn change_over_a_run() {
        let (_dir, net, netfilter) = fake_proc(Some(STAT_6_18), &[("count", "3")]);
        let end = Conntrack::read_from(&net, &netfilter).unwrap();
        let start_text = STAT_6_18.replacen("00000008", "00000002", 1);
        let (_dir2, net2, netfilter2) = fake_proc(Some(&start_text), &[("count", "1")]);
        let start = Conntrack::read_from(&net2, &netfilter2).unwrap();
        let change = ConntrackChange::new(start, end);
        assert_eq!(change.delta_of("invalid"), 6);
        assert_eq!(change.delta_of("drop"), 0);
        assert_eq!(change.delta_of("no_such_column"), 0);
        let json = serde_json::to_value(&change).unwrap();
        assert_eq!(json["loaded"], true);
        assert_eq!(json["delta"]["invalid"], 6);
        assert_eq!(json["start"]["count"], 1);
        assert_eq!(json["end"]["count"], 3);
        let text = change.to_string();
        assert!(text.contains("3 entries of ? (1 at the start)"), "{text}");
        assert!(text.ends_with("changed: invalid +6"), "{text}");

        let none = ConntrackChange::new(Conntrack::NotLoaded, Conntrack::NotLoaded);
        assert!(!none.loaded());
        assert_eq!(
            serde_json::to_value(&none).unwrap(),
            serde_json::json!({"loaded": false})
        );
        assert!(none.to_string().contains("not loaded"));
    }

    #[test]
    fn reads_this_namespace() {
        // Loaded or not depends on the machine; either way it must read.
        let ct = Conntrack::read().unwrap();
        if let Some(state) = ct.state() {
            assert!(state.max.is_some());
        }
    }

    /// A directory removed on drop (no tempfile crate needed for this).
    mod tempdir {
        use std::path::{Path, PathBuf};

        pub struct Dir(PathBuf);

        impl Dir {
            pub fn new() -> Dir {
                use std::sync::atomic::{AtomicU32, Ordering};
                static NEXT: AtomicU32 = AtomicU32::new(0);
                let dir = std::env::temp_dir().join(format!(
                    "tcptrace-conntrack-test-{}-{}",
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::Relaxed)
                ));
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::create_dir_all(&dir).unwrap();
                Dir(dir)
            }

            pub fn path(&self) -> &Path {
                &self.0
            }
        }

        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }
}
