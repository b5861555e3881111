//! The TCP sysctls `tune` knows: how to validate a value, what each
//! profile recommends, and one line of why.

use super::profile::TuneProfile;

/// What values a key accepts. Ranges follow the kernel's own limits where
/// it has them and sanity where it has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Int {
        min: i64,
        max: i64,
    },
    /// Several integers on one line; `min <= a <= b <= ... <= max`.
    Ints {
        count: usize,
        min: i64,
        max: i64,
    },
    /// One of the words listed by another (read-only) sysctl.
    Choice {
        /// The sysctl that lists the accepted words.
        listed_by: &'static str,
    },
}

/// A sysctl `tune` manages: its value kind, a recommendation per profile, and why it matters.
#[derive(Debug)]
pub struct Setting {
    /// The sysctl key.
    pub key: &'static str,
    /// What values it takes.
    pub kind: Kind,
    /// Recommended value per profile, in [`TuneProfile::ALL`] order;
    /// `None`: no opinion, the current value stays.
    values: [Option<&'static str>; 4],
    /// Why it matters for resets and timeouts, one sentence.
    pub why: &'static str,
}

impl Setting {
    /// The value recommended for `profile`; `None` when the profile has no opinion.
    pub fn recommended(&self, profile: TuneProfile) -> Option<&'static str> {
        let index = TuneProfile::ALL
            .iter()
            .position(|p| *p == profile)
            .unwrap_or(0);
        self.values[index]
    }
}

const INT_MAX: i64 = i32::MAX as i64;

pub const KEEPALIVE_TIME: &str = "net.ipv4.tcp_keepalive_time";
pub const KEEPALIVE_INTVL: &str = "net.ipv4.tcp_keepalive_intvl";
pub const KEEPALIVE_PROBES: &str = "net.ipv4.tcp_keepalive_probes";
pub const SOMAXCONN: &str = "net.core.somaxconn";

/// Order is the order `tune` shows them in.
pub static SETTINGS: &[Setting] = &[
    Setting {
        key: KEEPALIVE_TIME,
        kind: Kind::Int { min: 1, max: 32767 },
        values: [Some("600"), Some("120"), Some("300"), Some("120")],
        why: "idle seconds before the first keepalive probe (kernel: 7200); keep it below \
              middlebox idle timeouts so dead or forgotten flows show up in minutes",
    },
    Setting {
        key: KEEPALIVE_INTVL,
        kind: Kind::Int { min: 1, max: 32767 },
        values: [Some("30"), Some("15"), Some("30"), Some("15")],
        why: "seconds between unanswered keepalive probes (kernel: 75)",
    },
    Setting {
        key: KEEPALIVE_PROBES,
        kind: Kind::Int { min: 1, max: 127 },
        values: [Some("5"), Some("4"), Some("5"), Some("4")],
        why: "unanswered probes before the connection is reset (kernel: 9)",
    },
    Setting {
        key: SOMAXCONN,
        kind: Kind::Int {
            min: 1,
            max: INT_MAX,
        },
        values: [Some("4096"), Some("8192"), Some("4096"), Some("16384")],
        why: "caps every listen() backlog; a full accept queue drops SYNs and final ACKs \
              (ListenOverflows)",
    },
    Setting {
        key: "net.ipv4.tcp_max_syn_backlog",
        kind: Kind::Int {
            min: 1,
            max: INT_MAX,
        },
        values: [Some("4096"), Some("8192"), Some("4096"), Some("16384")],
        why: "half-open connections kept per listener before SYN cookies or drops",
    },
    Setting {
        key: "net.ipv4.tcp_abort_on_overflow",
        kind: Kind::Int { min: 0, max: 1 },
        values: [Some("0"), Some("0"), Some("0"), Some("0")],
        why: "0 lets clients retry when the accept queue is full; 1 resets them at once",
    },
    Setting {
        key: "net.ipv4.ip_local_port_range",
        kind: Kind::Ints {
            count: 2,
            min: 1,
            max: 65535,
        },
        values: [
            Some("32768 60999"),
            Some("32768 60999"),
            Some("10240 65535"),
            Some("10240 65535"),
        ],
        why: "ephemeral ports per destination; each closed connection holds one for 60 s in \
              TIME_WAIT",
    },
    Setting {
        key: "net.ipv4.tcp_tw_reuse",
        kind: Kind::Int { min: 0, max: 2 },
        values: [Some("2"), Some("2"), Some("1"), Some("1")],
        why: "1 lets connect() reuse a TIME_WAIT port safely (timestamps); 2 only on loopback",
    },
    Setting {
        key: "net.ipv4.tcp_fin_timeout",
        kind: Kind::Int { min: 1, max: 3600 },
        values: [Some("30"), Some("30"), Some("15"), Some("15")],
        why: "seconds an orphaned connection may wait in FIN_WAIT2 (kernel: 60)",
    },
    Setting {
        key: "net.ipv4.tcp_rmem",
        kind: Kind::Ints {
            count: 3,
            min: 1,
            max: INT_MAX,
        },
        values: [None, None, None, Some("4096 131072 16777216")],
        why: "receive buffer min/default/max bytes; autotuning grows up to max",
    },
    Setting {
        key: "net.ipv4.tcp_wmem",
        kind: Kind::Ints {
            count: 3,
            min: 1,
            max: INT_MAX,
        },
        values: [None, None, None, Some("4096 16384 16777216")],
        why: "send buffer min/default/max bytes",
    },
    Setting {
        key: "net.ipv4.tcp_retries2",
        kind: Kind::Int { min: 1, max: 255 },
        values: [Some("8"), Some("8"), Some("8"), Some("8")],
        why: "retransmits before an established connection gives up: 15 is ~15 min of \
              black hole, 8 is ~100 s",
    },
    Setting {
        key: "net.ipv4.tcp_syn_retries",
        kind: Kind::Int { min: 1, max: 127 },
        values: [Some("6"), Some("6"), Some("3"), Some("3")],
        why: "SYN retransmits before connect() fails: 6 is ~2 min, 3 is ~15 s",
    },
    Setting {
        key: "net.core.netdev_max_backlog",
        kind: Kind::Int {
            min: 1,
            max: INT_MAX,
        },
        values: [None, Some("5000"), None, Some("16384")],
        why: "packets queued per CPU when the NIC outpaces the stack (host-wide)",
    },
    Setting {
        key: "net.netfilter.nf_conntrack_max",
        kind: Kind::Int {
            min: 1,
            max: INT_MAX,
        },
        values: [None, None, Some("262144"), Some("524288")],
        why: "a full conntrack table drops new SYNs silently (only when nf_conntrack is loaded)",
    },
    Setting {
        key: "net.ipv4.tcp_congestion_control",
        kind: Kind::Choice {
            listed_by: "net.ipv4.tcp_available_congestion_control",
        },
        values: [None, None, None, None],
        why: "congestion control; bbr can help on long lossy paths (set it with --set)",
    },
];

pub fn find(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|setting| setting.key == key)
}

/// Checks a value against its kind and returns it normalised (single
/// spaces), or why it is refused. `choices` is the list a `Choice` key
/// accepts (read from the kernel by the caller).
pub fn validate(kind: Kind, value: &str, choices: &[String]) -> Result<String, String> {
    let value = crate::host::sysctl::normalize(value);
    let int = |text: &str, min: i64, max: i64| match text.parse::<i64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        Ok(_) => Err(format!("out of range ({min} to {max})")),
        Err(_) => Err(format!("'{text}' is not an integer")),
    };
    match kind {
        Kind::Int { min, max } => {
            int(&value, min, max)?;
        }
        Kind::Ints { count, min, max } => {
            let parts: Vec<&str> = value.split(' ').filter(|p| !p.is_empty()).collect();
            if parts.len() != count {
                return Err(format!("expects {count} numbers separated by spaces"));
            }
            let numbers = parts
                .iter()
                .map(|p| int(p, min, max))
                .collect::<Result<Vec<_>, _>>()?;
            if numbers.windows(2).any(|pair| pair[0] > pair[1]) {
                return Err("the numbers must not decrease".into());
            }
        }
        Kind::Choice { listed_by } => {
            if !choices.contains(&value) {
                return Err(format!(
                    "not available on this kernel ({listed_by}: {})",
                    choices.join(" ")
                ));
            }
        }
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_profile_value_is_valid() {
        for setting in SETTINGS {
            for profile in TuneProfile::ALL {
                if let Some(value) = setting.recommended(profile) {
                    let normalized = validate(setting.kind, value, &[])
                        .unwrap_or_else(|e| panic!("{} = {value}: {e}", setting.key));
                    assert_eq!(normalized, value, "{} is written normalised", setting.key);
                }
            }
        }
    }

    #[test]
    fn keys_are_unique() {
        for (i, setting) in SETTINGS.iter().enumerate() {
            assert!(
                SETTINGS[i + 1..]
                    .iter()
                    .all(|other| other.key != setting.key),
                "{}",
                setting.key
            );
        }
    }

    #[test]
    fn values_out_of_range_or_malformed_are_refused() {
        let fin = find("net.ipv4.tcp_fin_timeout").unwrap().kind;
        assert_eq!(validate(fin, " 20\n", &[]), Ok("20".into()));
        assert_eq!(
            validate(fin, "0", &[]),
            Err("out of range (1 to 3600)".into())
        );
        assert_eq!(
            validate(fin, "abc", &[]),
            Err("'abc' is not an integer".into())
        );
        let range = find("net.ipv4.ip_local_port_range").unwrap().kind;
        assert_eq!(validate(range, "1024\t65535", &[]), Ok("1024 65535".into()));
        assert!(
            validate(range, "2000 1000", &[])
                .unwrap_err()
                .contains("must not decrease")
        );
        assert!(
            validate(range, "1024", &[])
                .unwrap_err()
                .contains("expects 2 numbers")
        );
        assert!(
            validate(range, "1024 70000", &[])
                .unwrap_err()
                .contains("out of range")
        );
    }

    #[test]
    fn choices_come_from_the_kernel_list() {
        let cc = find("net.ipv4.tcp_congestion_control").unwrap().kind;
        let available = vec!["reno".to_string(), "cubic".to_string()];
        assert_eq!(validate(cc, "cubic", &available), Ok("cubic".into()));
        let err = validate(cc, "bbr", &available).unwrap_err();
        assert!(err.contains("reno cubic"), "{err}");
    }
}
