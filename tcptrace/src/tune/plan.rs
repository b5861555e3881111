//! What `tune` would change, decided before anything is touched, and the
//! all-or-nothing write of a set of values.

use std::{collections::BTreeMap, time::Duration};

use super::{
    TuneError,
    profile::TuneProfile,
    settings::{self, KEEPALIVE_TIME, Kind, SETTINGS, Setting},
};
use crate::host::sysctl::{Access, SysctlBackend, SysctlError};

/// What happens to one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The current value differs from the recommendation.
    Change,
    /// Already the recommended value.
    AlreadySet,
    /// The profile has no opinion; shown for context.
    Keep,
    /// Not on this kernel or in this namespace (e.g. nf_conntrack not loaded).
    Absent,
    /// Visible but not writable here (host-wide keys inside a namespace).
    ReadOnly,
}

impl Action {
    /// The word the table shows.
    pub fn label(self) -> &'static str {
        match self {
            Action::Change => "change",
            Action::AlreadySet => "ok",
            Action::Keep => "-",
            Action::Absent => "absent",
            Action::ReadOnly => "read-only",
        }
    }
}

/// One key of the plan: its value now, the recommendation, what happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The sysctl key.
    pub key: &'static str,
    /// Its value now (`None`: absent here).
    pub current: Option<String>,
    /// The profile's value (`None`: no opinion).
    pub recommended: Option<String>,
    /// What `--apply` does with it.
    pub action: Action,
    /// Why the value matters.
    pub why: String,
}

/// What `tune` would change for a profile, decided before anything is touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The profile planned for.
    pub profile: TuneProfile,
    /// Every managed key, in catalogue order.
    pub rows: Vec<Row>,
}

impl Plan {
    /// Every value the drop-in file holds: all recommendations that apply
    /// here, changed or not, so the file alone recreates the tuning.
    pub fn entries(&self) -> Vec<(&'static str, &str)> {
        self.rows
            .iter()
            .filter(|row| matches!(row.action, Action::Change | Action::AlreadySet))
            .filter_map(|row| Some((row.key, row.recommended.as_deref()?)))
            .collect()
    }

    /// The writes to make: (key, new value, value now).
    pub fn changes(&self) -> Vec<Change> {
        self.rows
            .iter()
            .filter(|row| row.action == Action::Change)
            .filter_map(|row| {
                Some(Change {
                    key: row.key.to_string(),
                    value: row.recommended.clone()?,
                    previous: row.current.clone()?,
                })
            })
            .collect()
    }
}

/// One sysctl write and the value to put back if the set fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The sysctl key.
    pub key: String,
    /// The value to write.
    pub value: String,
    /// The value to restore if the set fails.
    pub previous: String,
}

/// Builds the plan: the profile's values, adjusted to the idle timeout,
/// overridden by `--set`. Any bad override is an error here, before a
/// single value is written.
pub fn plan(
    backend: &impl SysctlBackend,
    profile: TuneProfile,
    idle_timeout: Option<Duration>,
    overrides: &[(String, String)],
) -> Result<Plan, TuneError> {
    let mut wanted: BTreeMap<&str, &str> = BTreeMap::new();
    for (key, value) in overrides {
        let setting = settings::find(key).ok_or_else(|| TuneError::UnknownKey(key.clone()))?;
        wanted.insert(setting.key, value);
    }
    let mut rows = Vec::with_capacity(SETTINGS.len());
    for setting in SETTINGS {
        rows.push(plan_row(
            backend,
            setting,
            profile,
            idle_timeout,
            wanted.get(setting.key).copied(),
        )?);
    }
    Ok(Plan { profile, rows })
}

fn plan_row(
    backend: &impl SysctlBackend,
    setting: &'static Setting,
    profile: TuneProfile,
    idle_timeout: Option<Duration>,
    overridden: Option<&str>,
) -> Result<Row, TuneError> {
    let key = setting.key;
    let mut why = setting.why.to_string();
    let recommendation = match overridden {
        Some(value) => {
            why = format!("set on the command line; {why}");
            Some(value.to_string())
        }
        None => match (setting.key, idle_timeout, setting.recommended(profile)) {
            (KEEPALIVE_TIME, Some(idle), Some(value)) => {
                let (value, reason) = keepalive_below(idle, value);
                why = reason;
                Some(value)
            }
            (_, _, value) => value.map(str::to_string),
        },
    };
    let access = backend.access(key)?;
    if access != Access::ReadWrite {
        if overridden.is_some() {
            return Err(match access {
                Access::Absent => TuneError::Sysctl(SysctlError::Absent(key.to_string())),
                _ => TuneError::ReadOnly(key.to_string()),
            });
        }
        let action = if access == Access::Absent {
            Action::Absent
        } else {
            Action::ReadOnly
        };
        let current = if access == Access::Absent {
            None
        } else {
            Some(backend.read(key)?)
        };
        return Ok(Row {
            key,
            current,
            recommended: recommendation,
            action,
            why,
        });
    }
    let current = backend.read(key)?;
    let Some(recommendation) = recommendation else {
        return Ok(Row {
            key,
            current: Some(current),
            recommended: None,
            action: Action::Keep,
            why,
        });
    };
    let choices = match setting.kind {
        Kind::Choice { listed_by } => backend
            .read(listed_by)?
            .split(' ')
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    };
    let recommended =
        settings::validate(setting.kind, &recommendation, &choices).map_err(|reason| {
            TuneError::BadValue {
                key: key.to_string(),
                value: recommendation.clone(),
                reason,
            }
        })?;
    let action = if recommended == current {
        Action::AlreadySet
    } else {
        Action::Change
    };
    Ok(Row {
        key,
        current: Some(current),
        recommended: Some(recommended),
        action,
        why,
    })
}

/// Keepalive probes must start before a middlebox forgets an idle flow:
/// three quarters of its idle timeout, never more than the profile says.
pub fn keepalive_below(idle: Duration, profile_value: &str) -> (String, String) {
    let profile: u64 = profile_value.parse().unwrap_or(7200);
    let below = (idle.as_secs() * 3 / 4).max(1);
    let value = profile.min(below);
    (
        value.to_string(),
        format!(
            "first keepalive probe after {value} s idle, before the {} s idle timeout \
             drops the flow (kernel: 7200)",
            idle.as_secs()
        ),
    )
}

/// Writes every change or none: on the first failure, the keys already
/// written get their previous values back (newest first), and the error
/// says which key failed and whether the roll-back was complete. Each
/// write is read back, since a kernel may accept and adjust a value.
pub fn apply_all(backend: &mut impl SysctlBackend, changes: &[Change]) -> Result<(), TuneError> {
    for (index, change) in changes.iter().enumerate() {
        // `touched`: how many keys may differ from their previous value.
        let (reason, touched) = match backend.write(&change.key, &change.value) {
            Err(e) => (e.to_string(), index),
            Ok(()) => match backend.read(&change.key) {
                Ok(now) if now == change.value => continue,
                Ok(now) => (
                    format!(
                        "{} reads back as '{now}' after writing '{}'",
                        change.key, change.value
                    ),
                    index + 1,
                ),
                Err(e) => (e.to_string(), index + 1),
            },
        };
        let not_restored: Vec<String> = changes[..touched]
            .iter()
            .rev()
            .filter(|c| backend.write(&c.key, &c.previous).is_err())
            .map(|c| c.key.clone())
            .collect();
        return Err(TuneError::Applied {
            reason,
            undone: touched,
            not_restored,
        });
    }
    Ok(())
}

#[cfg(test)]
pub mod tests {
    use std::collections::HashMap;

    use super::*;

    /// An in-memory kernel: some keys refuse writes, some are read-only.
    #[derive(Debug, Default, Clone)]
    pub struct FakeSysctl {
        pub values: HashMap<String, String>,
        pub refuse: Vec<String>,
        pub read_only: Vec<String>,
        pub writes: Vec<(String, String)>,
    }

    impl FakeSysctl {
        /// Every known key at the kernel's default, congestion control
        /// choices listed, nf_conntrack not loaded.
        pub fn stock() -> FakeSysctl {
            let values: HashMap<String, String> = [
                ("net.ipv4.tcp_keepalive_time", "7200"),
                ("net.ipv4.tcp_keepalive_intvl", "75"),
                ("net.ipv4.tcp_keepalive_probes", "9"),
                ("net.core.somaxconn", "4096"),
                ("net.ipv4.tcp_max_syn_backlog", "1024"),
                ("net.ipv4.tcp_abort_on_overflow", "0"),
                ("net.ipv4.ip_local_port_range", "32768 60999"),
                ("net.ipv4.tcp_tw_reuse", "2"),
                ("net.ipv4.tcp_fin_timeout", "60"),
                ("net.ipv4.tcp_rmem", "4096 131072 6291456"),
                ("net.ipv4.tcp_wmem", "4096 16384 4194304"),
                ("net.ipv4.tcp_retries2", "15"),
                ("net.ipv4.tcp_syn_retries", "6"),
                ("net.core.netdev_max_backlog", "1000"),
                ("net.ipv4.tcp_congestion_control", "cubic"),
                ("net.ipv4.tcp_available_congestion_control", "reno cubic"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            FakeSysctl {
                values,
                ..FakeSysctl::default()
            }
        }
    }

    impl SysctlBackend for FakeSysctl {
        fn access(&self, key: &str) -> Result<Access, SysctlError> {
            Ok(if !self.values.contains_key(key) {
                Access::Absent
            } else if self.read_only.iter().any(|k| k == key) {
                Access::ReadOnly
            } else {
                Access::ReadWrite
            })
        }
        fn read(&self, key: &str) -> Result<String, SysctlError> {
            self.values
                .get(key)
                .cloned()
                .ok_or_else(|| SysctlError::Absent(key.to_string()))
        }
        fn write(&mut self, key: &str, value: &str) -> Result<(), SysctlError> {
            self.writes.push((key.to_string(), value.to_string()));
            if self.refuse.iter().any(|k| k == key) {
                return Err(SysctlError::Write {
                    key: key.to_string(),
                    value: value.to_string(),
                    source: std::io::Error::from_raw_os_error(libc::EINVAL),
                });
            }
            self.values.insert(key.to_string(), value.to_string());
            Ok(())
        }
    }

    fn row<'a>(plan: &'a Plan, key: &str) -> &'a Row {
        plan.rows.iter().find(|r| r.key == key).unwrap()
    }

    #[test]
    fn plans_changes_against_current_values() {
        let kernel = FakeSysctl::stock();
        let plan = plan(&kernel, TuneProfile::HighChurnClient, None, &[]).unwrap();
        let fin = row(&plan, "net.ipv4.tcp_fin_timeout");
        assert_eq!(
            (fin.current.as_deref(), fin.recommended.as_deref()),
            (Some("60"), Some("15"))
        );
        assert_eq!(fin.action, Action::Change);
        assert_eq!(row(&plan, "net.core.somaxconn").action, Action::AlreadySet);
        assert_eq!(row(&plan, "net.ipv4.tcp_rmem").action, Action::Keep);
        assert_eq!(
            row(&plan, "net.netfilter.nf_conntrack_max").action,
            Action::Absent
        );
        let changes = plan.changes();
        let changed: Vec<&str> = changes.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(
            changed,
            vec![
                "net.ipv4.tcp_keepalive_time",
                "net.ipv4.tcp_keepalive_intvl",
                "net.ipv4.tcp_keepalive_probes",
                "net.ipv4.tcp_max_syn_backlog",
                "net.ipv4.ip_local_port_range",
                "net.ipv4.tcp_tw_reuse",
                "net.ipv4.tcp_fin_timeout",
                "net.ipv4.tcp_retries2",
                "net.ipv4.tcp_syn_retries",
            ]
        );
        // The drop-in also holds what is already right, not what is absent.
        let entries = plan.entries();
        assert!(entries.contains(&("net.core.somaxconn", "4096")));
        assert!(!entries.iter().any(|(k, _)| k.contains("conntrack")));
        assert_eq!(
            entries.len(),
            changed.len() + 2,
            "somaxconn and tcp_abort_on_overflow"
        );
    }

    #[test]
    fn overrides_win_and_are_validated() {
        let kernel = FakeSysctl::stock();
        let set = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        let plan = plan(
            &kernel,
            TuneProfile::Default,
            None,
            &set("net.ipv4.tcp_fin_timeout", "20"),
        )
        .unwrap();
        assert_eq!(
            row(&plan, "net.ipv4.tcp_fin_timeout")
                .recommended
                .as_deref(),
            Some("20")
        );

        let err = super::plan(
            &kernel,
            TuneProfile::Default,
            None,
            &set("net.ipv4.tcp_fin_timeout", "0"),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "net.ipv4.tcp_fin_timeout = 0: out of range (1 to 3600)"
        );
        let err = super::plan(
            &kernel,
            TuneProfile::Default,
            None,
            &set("net.ipv4.tcp_nonsense", "1"),
        )
        .unwrap_err();
        assert!(matches!(err, TuneError::UnknownKey(_)), "{err}");
        let err = super::plan(
            &kernel,
            TuneProfile::Default,
            None,
            &set("net.netfilter.nf_conntrack_max", "9"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("does not exist"), "{err}");
        let err = super::plan(
            &kernel,
            TuneProfile::Default,
            None,
            &set("net.ipv4.tcp_congestion_control", "bbr"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("not available"), "{err}");
        let plan = super::plan(
            &kernel,
            TuneProfile::Default,
            None,
            &set("net.ipv4.tcp_congestion_control", "reno"),
        )
        .unwrap();
        assert_eq!(
            row(&plan, "net.ipv4.tcp_congestion_control").action,
            Action::Change
        );
    }

    #[test]
    fn read_only_keys_are_skipped_unless_asked_for() {
        let mut kernel = FakeSysctl::stock();
        kernel.read_only.push("net.core.netdev_max_backlog".into());
        let plan = plan(&kernel, TuneProfile::Proxy, None, &[]).unwrap();
        assert_eq!(
            row(&plan, "net.core.netdev_max_backlog").action,
            Action::ReadOnly
        );
        assert!(
            !plan
                .entries()
                .iter()
                .any(|(k, _)| *k == "net.core.netdev_max_backlog")
        );
        let set = vec![(
            "net.core.netdev_max_backlog".to_string(),
            "5000".to_string(),
        )];
        let err = super::plan(&kernel, TuneProfile::Proxy, None, &set).unwrap_err();
        assert!(matches!(err, TuneError::ReadOnly(_)), "{err}");
    }

    #[test]
    fn idle_timeout_pulls_keepalive_below_it() {
        let kernel = FakeSysctl::stock();
        let plan = plan(
            &kernel,
            TuneProfile::Proxy,
            Some(Duration::from_secs(60)),
            &[],
        )
        .unwrap();
        assert_eq!(
            row(&plan, KEEPALIVE_TIME).recommended.as_deref(),
            Some("45")
        );
        // A long idle timeout keeps the profile's own, shorter value.
        let plan = super::plan(
            &kernel,
            TuneProfile::Proxy,
            Some(Duration::from_secs(3600)),
            &[],
        )
        .unwrap();
        assert_eq!(
            row(&plan, KEEPALIVE_TIME).recommended.as_deref(),
            Some("120")
        );
        assert_eq!(keepalive_below(Duration::from_secs(1), "120").0, "1");
    }

    #[test]
    fn apply_is_all_or_nothing() {
        let mut kernel = FakeSysctl::stock();
        let before = kernel.values.clone();
        let plan = plan(&kernel, TuneProfile::HighChurnClient, None, &[]).unwrap();
        let changes = plan.changes();
        // The fourth write fails: the three before it are restored.
        kernel.refuse.push(changes[3].key.clone());
        let err = apply_all(&mut kernel, &changes).unwrap_err();
        assert_eq!(kernel.values, before);
        match &err {
            TuneError::Applied {
                undone,
                not_restored,
                ..
            } => {
                assert_eq!(*undone, 3);
                assert!(not_restored.is_empty(), "{not_restored:?}");
            }
            other => panic!("unexpected {other}"),
        }
        let message = err.to_string();
        assert!(message.contains(&changes[3].key), "{message}");
        let restores: Vec<&str> = kernel.writes[4..].iter().map(|(k, _)| k.as_str()).collect();
        let expected: Vec<&str> = changes[..3].iter().rev().map(|c| c.key.as_str()).collect();
        assert_eq!(restores, expected, "restored newest first");
    }

    #[test]
    fn a_value_the_kernel_adjusts_counts_as_refused() {
        /// Accepts every write but raises a fin timeout under 30 to 30.
        struct Clamping(FakeSysctl);
        impl SysctlBackend for Clamping {
            fn access(&self, key: &str) -> Result<Access, SysctlError> {
                self.0.access(key)
            }
            fn read(&self, key: &str) -> Result<String, SysctlError> {
                self.0.read(key)
            }
            fn write(&mut self, key: &str, value: &str) -> Result<(), SysctlError> {
                let too_low =
                    key == "net.ipv4.tcp_fin_timeout" && value.parse::<u32>().is_ok_and(|v| v < 30);
                let clamped = if too_low { "30" } else { value };
                self.0.write(key, clamped)
            }
        }
        let mut kernel = Clamping(FakeSysctl::stock());
        let before = kernel.0.values.clone();
        let plan = plan(&kernel, TuneProfile::HighChurnClient, None, &[]).unwrap();
        let err = apply_all(&mut kernel, &plan.changes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("reads back as '30'"), "{err}");
        assert_eq!(kernel.0.values, before, "the adjusted key is restored too");
    }

    #[test]
    fn apply_writes_everything_when_the_kernel_agrees() {
        let mut kernel = FakeSysctl::stock();
        let plan = plan(&kernel, TuneProfile::Proxy, None, &[]).unwrap();
        apply_all(&mut kernel, &plan.changes()).unwrap();
        for (key, value) in plan.entries() {
            assert_eq!(kernel.values[key], value, "{key}");
        }
        let again = super::plan(&kernel, TuneProfile::Proxy, None, &[]).unwrap();
        assert!(again.changes().is_empty(), "a second run has nothing to do");
    }
}
