//! `/proc/net/sockstat` and `sockstat6`: sockets in use, orphans, TIME_WAIT
//! buckets and memory pages per protocol, as the kernel accounts them.

use std::{collections::BTreeMap, fs, io, path::Path};

/// protocol (`TCP`, `TCP6`, `sockets`, ...) -> field (`inuse`, `tw`, ...) -> value.
pub type Sockstat = BTreeMap<String, BTreeMap<String, i64>>;

/// Reads both files from a directory shaped like /proc/net. `sockstat6`
/// is missing when IPv6 is disabled; that is not an error.
pub fn read_from(dir: &Path) -> io::Result<Sockstat> {
    let mut text = fs::read_to_string(dir.join("sockstat"))?;
    match fs::read_to_string(dir.join("sockstat6")) {
        Ok(v6) => text.push_str(&v6),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok(parse(&text))
}

/// Parses `PROTO: name value name value ...` lines. Malformed pairs are
/// skipped: this is context for a human, not a figure anything depends on.
pub fn parse(text: &str) -> Sockstat {
    let mut stats = Sockstat::new();
    for line in text.lines() {
        let Some((protocol, rest)) = line.split_once(':') else {
            continue;
        };
        let words: Vec<&str> = rest.split_whitespace().collect();
        let fields = stats.entry(protocol.trim().to_string()).or_default();
        for pair in words.chunks_exact(2) {
            if let Ok(value) = pair[1].parse() {
                fields.insert(pair[0].to_string(), value);
            }
        }
    }
    stats.retain(|_, fields| !fields.is_empty());
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_files() {
        let text = "sockets: used 291\n\
                    TCP: inuse 7 orphan 1 tw 12 alloc 9 mem 3\n\
                    UDP: inuse 2 mem 1\n\
                    FRAG: inuse 0 memory 0\n\
                    TCP6: inuse 4\n\
                    broken line\n\
                    RAW6: inuse x\n";
        let stats = parse(text);
        assert_eq!(stats["TCP"]["tw"], 12);
        assert_eq!(stats["TCP"]["orphan"], 1);
        assert_eq!(stats["sockets"]["used"], 291);
        assert_eq!(stats["TCP6"]["inuse"], 4);
        assert_eq!(stats["FRAG"]["memory"], 0);
        assert!(!stats.contains_key("RAW6"));
        assert_eq!(stats.len(), 5);
    }

    #[test]
    fn reads_the_real_files() {
        let stats = read_from(Path::new("/proc/thread-self/net")).unwrap();
        assert!(stats["TCP"].contains_key("inuse"));
    }
}
