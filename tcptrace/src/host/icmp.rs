//! The ICMP and fragmentation counters that tell an unreachable peer or a
//! path MTU problem, and the reader of `/proc/net/snmp6` where the IPv6
//! ones live.
//!
//! IPv4 "fragmentation needed" (type 3 code 4) is not counted apart from
//! the other destination-unreachable codes: `IcmpMsgInType3`/`OutType3`
//! count them all. IPv6 has its own type, Packet Too Big
//! (`Icmp6InPktTooBigs`/`OutPktTooBigs`). `IpFragFails`/`Ip6FragFails`
//! count packets that needed fragmenting but could not be (DF set, or
//! IPv6): the local side of a PMTU black hole.

use std::{collections::BTreeMap, fs, io, path::Path};

/// The counters that join the TCP ones in `diagnose`'s deltas, by nstat
/// name.
pub const ICMP_COUNTERS: &[&str] = &[
    "IcmpMsgInType3",
    "IcmpMsgOutType3",
    "Icmp6InDestUnreachs",
    "Icmp6OutDestUnreachs",
    "Icmp6InPktTooBigs",
    "Icmp6OutPktTooBigs",
    "IpFragFails",
    "Ip6FragFails",
];

/// `IcmpMsg:` columns appear in /proc/net/snmp only once a message of
/// that type was counted; until then the counter is 0, not unknown.
pub const ZERO_WHEN_ABSENT: &[&str] = &["IcmpMsgInType3", "IcmpMsgOutType3"];

/// Whether a counter is one of [`ICMP_COUNTERS`].
pub fn matters(name: &str) -> bool {
    ICMP_COUNTERS.contains(&name)
}

/// The text of `snmp6` under a directory shaped like /proc/net; `None`
/// when IPv6 is disabled (the file does not exist).
pub fn read_snmp6(proc_net: &Path) -> io::Result<Option<String>> {
    match fs::read_to_string(proc_net.join("snmp6")) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Parses /proc/net/snmp6: one `Name value` pair per line, already
/// named as nstat names them (`Icmp6InPktTooBigs`).
pub fn parse_snmp6(text: &str) -> Result<BTreeMap<String, i64>, String> {
    let mut values = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut words = line.split_whitespace();
        let (Some(name), Some(value), None) = (words.next(), words.next(), words.next()) else {
            return Err(format!("not a `name value` line: {line:?}"));
        };
        // u64 counters; past i64 would be centuries of traffic.
        let value = value
            .parse::<u64>()
            .map(|v| i64::try_from(v).unwrap_or(i64::MAX))
            .map_err(|_| format!("{name}: {value:?} is not a number"))?;
        values.insert(name.to_string(), value);
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_snmp6() {
        // Lines captured on this host (6.18); the kernel pads with spaces
        // and a tab.
        let text = "Ip6InReceives                   \t1\n\
                    Ip6FragFails                    \t0\n\
                    Icmp6InDestUnreachs             \t1\n\
                    Icmp6InPktTooBigs               \t0\n\
                    Icmp6OutPktTooBigs              \t4\n\
                    Icmp6InType1                    \t1\n";
        let values = parse_snmp6(text).unwrap();
        assert_eq!(values["Icmp6InDestUnreachs"], 1);
        assert_eq!(values["Icmp6OutPktTooBigs"], 4);
        assert_eq!(values["Ip6FragFails"], 0);
        assert_eq!(values.len(), 6);
        assert!(parse_snmp6("Icmp6InMsgs x\n").is_err());
        assert!(parse_snmp6("Icmp6InMsgs 1 2\n").is_err());
        assert!(parse_snmp6("Icmp6InMsgs\n").is_err());
    }

    #[test]
    fn reads_the_real_file() {
        let Some(text) = read_snmp6(Path::new("/proc/thread-self/net")).unwrap() else {
            return; // IPv6 disabled on this host
        };
        let values = parse_snmp6(&text).unwrap();
        for name in ICMP_COUNTERS.iter().filter(|n| n.contains('6')) {
            assert!(values.contains_key(*name), "{name}");
        }
    }
}
