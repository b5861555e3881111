//! Kernel counters from `/proc/net/netstat`, `/proc/net/snmp` and `snmp6`, and
//! their change over an interval.
//!
//! `netstat` and `snmp` hold pairs of lines, a header and its values, under
//! a prefix (`TcpExt:`, `Tcp:`, `Ip:`, ...); `snmp6` one counter per line
//! (see [`crate::host::icmp`]). Every counter is kept, named the
//! way `nstat` names it (prefix + field, `TcpExtListenOverflows`), so the
//! ones not listed in [`KEY_COUNTERS`] are still available to `diagnose`.
//! The files are read through `/proc/thread-self/net`, which follows the
//! network namespace of the calling thread (`snapshot --netns`).

use std::{collections::BTreeMap, fs, path::Path};

use serde::{Deserialize, Serialize};

use crate::host::icmp;

/// The counters that explain resets, drops and retransmits, in the order
/// reports show them.
pub const KEY_COUNTERS: &[&str] = &[
    "TcpExtListenOverflows",
    "TcpExtListenDrops",
    "TcpExtTCPReqQFullDrop",
    "TcpExtTCPBacklogDrop",
    "TcpExtTCPAbortOnData",
    "TcpExtTCPAbortOnClose",
    "TcpExtTCPAbortOnTimeout",
    "TcpExtTCPAbortOnMemory",
    "TcpExtTCPAbortOnLinger",
    "TcpExtTCPTimeouts",
    "TcpExtTCPSynRetrans",
    "TcpExtTCPChallengeACK",
    "TcpExtTW",
    "TcpExtTCPTimeWaitOverflow",
    "TcpEstabResets",
    "TcpOutRsts",
    "TcpAttemptFails",
    "TcpRetransSegs",
    "TcpInErrs",
];

/// Why the counters could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CounterError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A file was not shaped as header/value line pairs.
    #[error("{file}: {message}")]
    Parse {
        /// `netstat` or `snmp`.
        file: String,
        /// What was wrong.
        message: String,
    },
}

/// All counters at one moment. Values are signed because a few snmp
/// fields are gauges or -1 (`TcpMaxConn`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Counters {
    values: BTreeMap<String, i64>,
}

impl Counters {
    /// Reads the counters of the calling thread's network namespace.
    pub fn read() -> Result<Counters, CounterError> {
        Self::read_from(Path::new("/proc/thread-self/net"))
    }

    /// Reads `netstat` and `snmp` from a directory shaped like /proc/net.
    pub fn read_from(dir: &Path) -> Result<Counters, CounterError> {
        let read = |name: &str| {
            let path = dir.join(name);
            fs::read_to_string(&path).map_err(|source| CounterError::Read {
                path: path.display().to_string(),
                source,
            })
        };
        let mut counters = Self::parse(&read("netstat")?, &read("snmp")?)?;
        // IPv6 ICMP counters (Packet Too Big) live in snmp6, absent when
        // IPv6 is disabled.
        let snmp6 = icmp::read_snmp6(dir).map_err(|source| CounterError::Read {
            path: dir.join("snmp6").display().to_string(),
            source,
        })?;
        if let Some(text) = snmp6 {
            let values = icmp::parse_snmp6(&text).map_err(|message| CounterError::Parse {
                file: "snmp6".into(),
                message,
            })?;
            counters.values.extend(values);
        }
        for name in icmp::ZERO_WHEN_ABSENT {
            counters.values.entry(name.to_string()).or_insert(0);
        }
        Ok(counters)
    }

    /// Parses the text of /proc/net/netstat and /proc/net/snmp.
    pub fn parse(netstat: &str, snmp: &str) -> Result<Counters, CounterError> {
        let mut values = BTreeMap::new();
        parse_pairs("netstat", netstat, &mut values)?;
        parse_pairs("snmp", snmp, &mut values)?;
        Ok(Counters { values })
    }

    /// One counter by its nstat name (`TcpExtListenOverflows`).
    pub fn get(&self, name: &str) -> Option<i64> {
        self.values.get(name).copied()
    }

    /// What changed since `before`. Counters missing from either side
    /// (a kernel that lacks them) are left out.
    pub fn delta(&self, before: &Counters) -> CounterDelta {
        let values = self
            .values
            .iter()
            .filter_map(|(name, now)| {
                let then = before.values.get(name)?;
                Some((name.clone(), now.wrapping_sub(*then)))
            })
            .collect();
        CounterDelta { values }
    }

    /// Keeps only the counters whose name `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.values.retain(|name, _| keep(name));
    }

    /// Every counter, by nstat name, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, i64)> {
        self.values
            .iter()
            .map(|(name, value)| (name.as_str(), *value))
    }
}

impl FromIterator<(String, i64)> for Counters {
    fn from_iter<I: IntoIterator<Item = (String, i64)>>(iter: I) -> Counters {
        Counters {
            values: iter.into_iter().collect(),
        }
    }
}

/// The change of every counter over an interval.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct CounterDelta {
    values: BTreeMap<String, i64>,
}

impl CounterDelta {
    /// One counter's change by its nstat name; 0 when the kernel lacks it.
    pub fn get(&self, name: &str) -> i64 {
        self.values.get(name).copied().unwrap_or(0)
    }

    /// Every counter's change, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, i64)> {
        self.values
            .iter()
            .map(|(name, value)| (name.as_str(), *value))
    }

    /// The counters that moved, key ones first, then the rest by name.
    pub fn nonzero(&self) -> Vec<(&str, i64)> {
        let key = KEY_COUNTERS.iter().filter_map(|name| {
            let (name, value) = self.values.get_key_value(*name)?;
            (*value != 0).then_some((name.as_str(), *value))
        });
        let rest = self
            .iter()
            .filter(|(name, value)| *value != 0 && !KEY_COUNTERS.contains(name));
        key.chain(rest).collect()
    }
}

/// Parses `Prefix: name name ...` / `Prefix: value value ...` line pairs.
fn parse_pairs(
    file: &str,
    text: &str,
    into: &mut BTreeMap<String, i64>,
) -> Result<(), CounterError> {
    let error = |message: String| CounterError::Parse {
        file: file.to_string(),
        message,
    };
    let mut lines = text.lines().filter(|line| !line.trim().is_empty());
    while let Some(header) = lines.next() {
        let (prefix, names) = header
            .split_once(':')
            .ok_or_else(|| error(format!("line without a prefix: {header:?}")))?;
        let values_line = lines
            .next()
            .ok_or_else(|| error(format!("{prefix}: header without values")))?;
        let (value_prefix, values) = values_line
            .split_once(':')
            .filter(|(value_prefix, _)| *value_prefix == prefix)
            .ok_or_else(|| error(format!("{prefix}: header not followed by its values")))?;
        let names: Vec<&str> = names.split_whitespace().collect();
        let values: Vec<&str> = values.split_whitespace().collect();
        if names.len() != values.len() {
            return Err(error(format!(
                "{value_prefix}: {} names but {} values",
                names.len(),
                values.len()
            )));
        }
        for (name, value) in names.iter().zip(values) {
            // Counters are u64 in the kernel; anything past i64 would be
            // centuries of traffic, so saturate rather than fail.
            let value = value
                .parse::<i64>()
                .or_else(|_| {
                    value
                        .parse::<u64>()
                        .map(|v| i64::try_from(v).unwrap_or(i64::MAX))
                })
                .map_err(|_| error(format!("{prefix}{name}: {value:?} is not a number")))?;
            into.insert(format!("{prefix}{name}"), value);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const NETSTAT: &str = "\
TcpExt: SyncookiesSent SyncookiesRecv ListenOverflows ListenDrops TCPAbortOnData TCPTimeouts
TcpExt: 0 0 12 15 3 7
IpExt: InNoRoutes InOctets
IpExt: 0 18446744073709551615
";
    pub const SNMP: &str = "\
Ip: Forwarding DefaultTTL
Ip: 1 64
Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens EstabResets CurrEstab OutRsts RetransSegs
Tcp: 1 200 120000 -1 100 4 9 20 31
Udp: InDatagrams InErrors
Udp: 5 0
";

    #[test]
    fn parses_every_counter_with_nstat_names() {
        let counters = Counters::parse(NETSTAT, SNMP).unwrap();
        assert_eq!(counters.get("TcpExtListenOverflows"), Some(12));
        assert_eq!(counters.get("TcpMaxConn"), Some(-1));
        assert_eq!(counters.get("IpExtInOctets"), Some(i64::MAX));
        assert_eq!(counters.get("UdpInErrors"), Some(0));
        assert_eq!(counters.get("IpDefaultTTL"), Some(64));
        assert_eq!(counters.iter().count(), 6 + 2 + 2 + 9 + 2);
    }

    #[test]
    fn delta_names_what_moved() {
        let before = Counters::parse(NETSTAT, SNMP).unwrap();
        let after = Counters::parse(
            &NETSTAT.replace("0 0 12 15 3 7", "0 0 14 18 3 7"),
            &SNMP.replace("100 4 9 20 31", "104 4 7 20 40"),
        )
        .unwrap();
        let delta = after.delta(&before);
        assert_eq!(delta.get("TcpExtListenOverflows"), 2);
        assert_eq!(delta.get("TcpExtListenDrops"), 3);
        assert_eq!(delta.get("TcpExtTCPAbortOnData"), 0);
        assert_eq!(delta.get("TcpRetransSegs"), 9);
        assert_eq!(delta.get("TcpCurrEstab"), -2);
        assert_eq!(delta.get("NoSuchCounter"), 0);
        assert_eq!(
            delta.nonzero(),
            vec![
                ("TcpExtListenOverflows", 2),
                ("TcpExtListenDrops", 3),
                ("TcpRetransSegs", 9),
                ("TcpActiveOpens", 4),
                ("TcpCurrEstab", -2),
            ]
        );
    }

    #[test]
    fn counters_missing_on_one_side_are_left_out() {
        let before = Counters::parse("TcpExt: A\nTcpExt: 1\n", "").unwrap();
        let after = Counters::parse("TcpExt: A B\nTcpExt: 5 9\n", "").unwrap();
        let delta = after.delta(&before);
        assert_eq!(delta.iter().collect::<Vec<_>>(), vec![("TcpExtA", 4)]);
    }

    #[test]
    fn malformed_text_is_an_error_not_a_panic() {
        for bad in [
            "TcpExt: A B\nTcpExt: 1\n",
            "TcpExt: A\n",
            "TcpExt: A\nIpExt: 1\n",
            "TcpExt: A\nTcpExt: x\n",
            "garbage\n",
        ] {
            let err = Counters::parse(bad, "").unwrap_err();
            assert!(err.to_string().starts_with("netstat: "), "{err}");
        }
    }

    #[test]
    fn reads_the_real_files() {
        // /proc/net exists on every Linux machine, root or not.
        let counters = Counters::read().unwrap();
        assert!(counters.get("TcpExtListenOverflows").is_some());
        assert!(counters.get("TcpRetransSegs").is_some());
        // Every ICMP counter diagnose shows is known, IcmpMsg ones included
        // before any such message was counted (IPv6 may be disabled).
        for name in icmp::ICMP_COUNTERS.iter().filter(|n| !n.contains('6')) {
            assert!(counters.get(name).is_some(), "{name}");
        }
    }
}
