//! `tcptrace tune`: the TCP sysctls that matter for resets and timeouts,
//! with a recommendation per workload. Dry run by default; `--apply`
//! writes one drop-in file and applies it all or nothing; `--revert`
//! restores what was there; `--lb` prints a matching proxy config.

mod files;
mod lb;
mod plan;
mod profile;
mod settings;

use std::{
    io::{self, Write as _},
    path::{Path, PathBuf},
    process::ExitCode,
};

pub use self::{
    plan::{Action, Change, Plan, Row, apply_all, plan},
    profile::{LoadBalancer, TuneProfile},
    settings::{SETTINGS, Setting},
};
use crate::{
    cli::TuneArgs,
    host::sysctl::{Access, ProcSys, SysctlBackend, SysctlError},
    text_table::write_table,
};

/// Why `tune` refused or failed; nothing is left half-applied.
#[derive(Debug, thiserror::Error)]
pub enum TuneError {
    /// `--apply`/`--revert` without root.
    #[error("tune --apply and --revert change kernel settings: run them as root")]
    NotRoot,
    /// A `--set` key `tune` does not manage.
    #[error("unknown key '{0}' (run `tcptrace tune` to list the keys it manages)")]
    UnknownKey(String),
    /// A `--set` value the key does not accept.
    #[error("{key} = {value}: {reason}")]
    BadValue {
        /// The key.
        key: String,
        /// The value given.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// A key that cannot be written here.
    #[error("{0} is read-only here (a host-wide key seen from a network namespace?)")]
    ReadOnly(String),
    /// Reading or writing a sysctl failed.
    #[error(transparent)]
    Sysctl(#[from] SysctlError),
    /// A write failed part way; what was written was undone.
    #[error("{reason}; {}", rollback_note(*undone, not_restored))]
    Applied {
        /// What failed.
        reason: String,
        /// Writes rolled back.
        undone: usize,
        /// Keys that could not be put back.
        not_restored: Vec<String>,
    },
    /// The drop-in file exists and was not written by `tune`.
    #[error("{}: not written by tcptrace tune; refusing to replace it (choose another --file)", .0.display())]
    NotOurs(PathBuf),
    /// `--revert` without a drop-in file.
    #[error("nothing to revert: {} does not exist", .0.display())]
    NothingToRevert(PathBuf),
    /// A drop-in or state file that does not parse.
    #[error("{}: {reason}", path.display())]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A file could not be read, written or removed.
    #[error("cannot {action} {}: {source}", path.display())]
    File {
        /// `read`, `write`, `remove`, ...
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

fn rollback_note(undone: usize, not_restored: &[String]) -> String {
    match (undone, not_restored.is_empty()) {
        (0, _) => "nothing was applied".into(),
        (n, true) => format!("nothing was applied ({n} earlier writes rolled back)"),
        (_, false) => format!(
            "rolled back, but could not restore {}",
            not_restored.join(", ")
        ),
    }
}

fn file_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> TuneError {
    let path = path.to_path_buf();
    move |source| TuneError::File {
        action,
        path,
        source,
    }
}

/// Runs `tcptrace tune`.
pub async fn run(args: TuneArgs) -> anyhow::Result<ExitCode> {
    let mut out = io::stdout().lock();
    if let Some(balancer) = args.lb {
        let balancer = LoadBalancer::from(balancer);
        let profile = args.profile.map_or(TuneProfile::Proxy, TuneProfile::from);
        // Required by clap together with --lb.
        let idle = args.idle_timeout.unwrap_or_default();
        let tuning = lb::LbTuning::for_profile(profile, idle);
        out.write_all(lb::snippet(balancer, profile, &tuning).as_bytes())?;
        return Ok(ExitCode::SUCCESS);
    }
    if (args.apply || args.revert) && !rustix::process::geteuid().is_root() {
        return Err(TuneError::NotRoot.into());
    }
    let mut kernel = ProcSys;
    if args.revert {
        let restored = revert(&mut kernel, &args.file)?;
        writeln!(
            out,
            "restored {restored} values; removed {}",
            args.file.display()
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let profile = args.profile.map_or(TuneProfile::Default, TuneProfile::from);
    let plan = plan(&kernel, profile, args.idle_timeout, &args.set)?;
    show(&mut out, &plan)?;
    let changes = plan.changes().len();
    let entries = plan.entries().len();
    if !args.apply {
        writeln!(
            out,
            "\ndry run: {changes} to change, {} already set. --apply writes {} and applies it; \
             --revert undoes that.",
            entries - changes,
            args.file.display()
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    apply(&mut kernel, &plan, &args.file)?;
    writeln!(
        out,
        "\napplied {changes} changes; wrote {} ({entries} settings); previous values in {}\n\
         undo with: tcptrace tune --revert --file {}",
        args.file.display(),
        files::state_path(&args.file).display(),
        args.file.display()
    )?;
    Ok(ExitCode::SUCCESS)
}

fn show(out: &mut impl io::Write, plan: &Plan) -> io::Result<()> {
    writeln!(out, "TCP sysctls for profile {}", plan.profile.name())?;
    let dash = || "-".to_string();
    let rows: Vec<Vec<String>> = plan
        .rows
        .iter()
        .map(|row| {
            vec![
                row.key.to_string(),
                row.current.clone().unwrap_or_else(dash),
                row.recommended.clone().unwrap_or_else(dash),
                row.action.label().to_string(),
                row.why.clone(),
            ]
        })
        .collect();
    write_table(
        out,
        &["KEY", "CURRENT", "RECOMMENDED", "ACTION", "WHY"],
        &[],
        &rows,
    )
}

/// Saves the values about to be replaced, applies the changes all or
/// nothing, then writes the drop-in. Any failure puts values and files
/// back as they were.
pub fn apply(
    kernel: &mut impl SysctlBackend,
    plan: &Plan,
    drop_in: &Path,
) -> Result<(), TuneError> {
    let entries = plan.entries();
    let state = files::state_path(drop_in);
    let old_drop_in = files::read_optional(drop_in).map_err(file_error("read", drop_in))?;
    if old_drop_in
        .as_deref()
        .is_some_and(|text| !files::is_ours(text))
    {
        return Err(TuneError::NotOurs(drop_in.to_path_buf()));
    }
    let old_state = files::read_optional(&state).map_err(file_error("read", &state))?;
    // An earlier --apply not yet reverted: keep its saved values, which
    // are the ones from before any tuning.
    let mut previous = match &old_state {
        Some(text) if !files::is_ours(text) => return Err(TuneError::NotOurs(state)),
        Some(text) => files::parse(text).map_err(|reason| TuneError::BadFile {
            path: state.clone(),
            reason,
        })?,
        None => Vec::new(),
    };
    for row in &plan.rows {
        let wanted = entries.iter().any(|(key, _)| *key == row.key);
        if let (true, Some(current)) = (wanted, &row.current)
            && !previous.iter().any(|(key, _)| key == row.key)
        {
            previous.push((row.key.to_string(), current.clone()));
        }
    }
    files::write_atomically(&state, &files::render_state(&previous, drop_in))
        .map_err(file_error("write", &state))?;

    let changes = plan.changes();
    if let Err(e) = apply_all(kernel, &changes) {
        let _ = files::restore(&state, old_state.as_deref());
        return Err(e);
    }
    let text = files::render_drop_in(plan.profile.name(), &entries, drop_in);
    if let Err(e) = files::write_atomically(drop_in, &text) {
        let undo: Vec<Change> = changes
            .iter()
            .rev()
            .map(|c| Change {
                key: c.key.clone(),
                value: c.previous.clone(),
                previous: c.value.clone(),
            })
            .collect();
        let _ = apply_all(kernel, &undo);
        let _ = files::restore(&state, old_state.as_deref());
        return Err(file_error("write", drop_in)(e));
    }
    Ok(())
}

/// Writes back every saved value (all or nothing), then removes the
/// drop-in and the saved values. Returns how many keys were restored.
pub fn revert(kernel: &mut impl SysctlBackend, drop_in: &Path) -> Result<usize, TuneError> {
    let state = files::state_path(drop_in);
    let text = files::read_optional(&state)
        .map_err(file_error("read", &state))?
        .ok_or_else(|| TuneError::NothingToRevert(state.clone()))?;
    if !files::is_ours(&text) {
        return Err(TuneError::NotOurs(state));
    }
    let saved = files::parse(&text).map_err(|reason| TuneError::BadFile {
        path: state.clone(),
        reason,
    })?;
    let mut changes = Vec::new();
    for (key, value) in &saved {
        // A key gone since (nf_conntrack unloaded) has nothing to restore.
        if kernel.access(key)? == Access::Absent {
            log::warn!("{key} no longer exists; its saved value {value} is not restored");
            continue;
        }
        let current = kernel.read(key)?;
        if current != *value {
            changes.push(Change {
                key: key.clone(),
                value: value.clone(),
                previous: current,
            });
        }
    }
    apply_all(kernel, &changes)?;
    match files::read_optional(drop_in).map_err(file_error("read", drop_in))? {
        Some(text) if files::is_ours(&text) => {
            files::restore(drop_in, None).map_err(file_error("remove", drop_in))?
        }
        // Someone replaced it with their own file: theirs to keep.
        _ => {}
    }
    files::restore(&state, None).map_err(file_error("remove", &state))?;
    Ok(saved.len())
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::{plan::tests::FakeSysctl, *};

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let dir =
                std::env::temp_dir().join(format!("tcptrace-tune-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn apply_then_revert_restores_everything_and_removes_the_files() {
        let dir = TempDir::new("roundtrip");
        let drop_in = dir.0.join("90-tcptrace.conf");
        let mut kernel = FakeSysctl::stock();
        let before = kernel.values.clone();
        let plan = plan(&kernel, TuneProfile::Proxy, None, &[]).unwrap();
        apply(&mut kernel, &plan, &drop_in).unwrap();
        let written = files::parse(&fs::read_to_string(&drop_in).unwrap()).unwrap();
        let entries: Vec<(String, String)> = plan
            .entries()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(written, entries);
        for (key, value) in &written {
            assert_eq!(&kernel.values[key], value);
        }
        assert_eq!(revert(&mut kernel, &drop_in).unwrap(), entries.len());
        assert_eq!(kernel.values, before);
        assert!(!drop_in.exists() && !files::state_path(&drop_in).exists());
        assert!(matches!(
            revert(&mut kernel, &drop_in),
            Err(TuneError::NothingToRevert(_))
        ));
    }

    #[test]
    fn a_second_apply_keeps_the_original_values() {
        let dir = TempDir::new("twice");
        let drop_in = dir.0.join("90-tcptrace.conf");
        let mut kernel = FakeSysctl::stock();
        let before = kernel.values.clone();
        let first = plan(&kernel, TuneProfile::HighChurnClient, None, &[]).unwrap();
        apply(&mut kernel, &first, &drop_in).unwrap();
        let second = plan(&kernel, TuneProfile::Proxy, None, &[]).unwrap();
        apply(&mut kernel, &second, &drop_in).unwrap();
        revert(&mut kernel, &drop_in).unwrap();
        assert_eq!(kernel.values, before);
    }

    #[test]
    fn a_refused_value_leaves_values_and_files_untouched() {
        let dir = TempDir::new("refused");
        let drop_in = dir.0.join("90-tcptrace.conf");
        let mut kernel = FakeSysctl::stock();
        kernel.refuse.push("net.ipv4.tcp_fin_timeout".into());
        let before = kernel.values.clone();
        let plan = plan(&kernel, TuneProfile::HighChurnClient, None, &[]).unwrap();
        let err = apply(&mut kernel, &plan, &drop_in).unwrap_err().to_string();
        assert!(
            err.starts_with("the kernel refused net.ipv4.tcp_fin_timeout = 15"),
            "{err}"
        );
        assert!(err.contains("nothing was applied"), "{err}");
        assert_eq!(kernel.values, before);
        assert_eq!(
            fs::read_dir(&dir.0).unwrap().count(),
            0,
            "no file left behind"
        );
    }

    #[test]
    fn someone_elses_file_is_never_replaced() {
        let dir = TempDir::new("foreign");
        let drop_in = dir.0.join("90-tcptrace.conf");
        fs::write(&drop_in, "net.core.somaxconn = 1\n").unwrap();
        let mut kernel = FakeSysctl::stock();
        let plan = plan(&kernel, TuneProfile::Proxy, None, &[]).unwrap();
        assert!(matches!(
            apply(&mut kernel, &plan, &drop_in),
            Err(TuneError::NotOurs(_))
        ));
        assert!(kernel.writes.is_empty());
        assert_eq!(
            fs::read_to_string(&drop_in).unwrap(),
            "net.core.somaxconn = 1\n"
        );
    }

    #[test]
    fn revert_skips_keys_that_no_longer_exist() {
        let dir = TempDir::new("gone");
        let drop_in = dir.0.join("90-tcptrace.conf");
        let mut kernel = FakeSysctl::stock();
        kernel
            .values
            .insert("net.netfilter.nf_conntrack_max".into(), "65536".into());
        let before = kernel.values.clone();
        let plan = plan(&kernel, TuneProfile::Proxy, None, &[]).unwrap();
        apply(&mut kernel, &plan, &drop_in).unwrap();
        kernel.values.remove("net.netfilter.nf_conntrack_max");
        revert(&mut kernel, &drop_in).unwrap();
        let mut expected = before;
        expected.remove("net.netfilter.nf_conntrack_max");
        assert_eq!(kernel.values, expected);
    }

    #[test]
    fn rollback_messages() {
        assert_eq!(rollback_note(0, &[]), "nothing was applied");
        assert_eq!(
            rollback_note(2, &[]),
            "nothing was applied (2 earlier writes rolled back)"
        );
        assert_eq!(
            rollback_note(2, &["a".into()]),
            "rolled back, but could not restore a"
        );
    }
}
