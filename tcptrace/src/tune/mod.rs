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
    path::PathBuf,
    process::ExitCode,
    time::Duration,
};

pub use self::{
    files::{STATE_DIR, Tuning},
    plan::{Action, Change, Plan, Row, apply_all, plan},
    profile::{LoadBalancer, TuneProfile},
    settings::{SETTINGS, Setting},
};
use crate::{
    cli::TuneArgs,
    host::sysctl::{Access, ProcSys, SysctlBackend, SysctlError},
    safe_file::{self, SafeFileError},
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
    #[error("{}: not written by tcptrace tune; refusing to use or replace it", .0.display())]
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
    /// A link, someone else's file, an unsafe state directory, a held
    /// lock, or an I/O error, with the path.
    #[error(transparent)]
    Unsafe(#[from] SafeFileError),
}

/// How long a second `--apply`/`--revert` waits for the first to finish.
/// One takes milliseconds; longer means a stuck or stopped run.
const LOCK_WAIT: Duration = Duration::from_secs(5);

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
    let mut kernel = ProcSys;
    if !(args.apply || args.revert) {
        let profile = args.profile.map_or(TuneProfile::Default, TuneProfile::from);
        let plan = plan(&kernel, profile, args.idle_timeout, &args.set)?;
        show(&mut out, &plan)?;
        let changes = plan.changes().len();
        writeln!(
            out,
            "\ndry run: {changes} to change, {} already set. --apply writes {} and applies it; \
             --revert undoes that.",
            plan.entries().len() - changes,
            args.file.display()
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    if !rustix::process::geteuid().is_root() {
        return Err(TuneError::NotRoot.into());
    }
    safe_file::private_dir(&args.state_dir).map_err(TuneError::from)?;
    let at = Tuning::locate(&args.file, &args.state_dir)?;
    // Held until the end: a second run would otherwise read the values
    // this one is about to replace and save them as the originals.
    let _lock = safe_file::lock(&at.lock, LOCK_WAIT).map_err(TuneError::from)?;
    if args.revert {
        let restored = revert(&mut kernel, &at)?;
        writeln!(
            out,
            "restored {restored} values; removed {}",
            args.file.display()
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    // Planned under the lock, so "current" is what this run replaces.
    let profile = args.profile.map_or(TuneProfile::Default, TuneProfile::from);
    let plan = plan(&kernel, profile, args.idle_timeout, &args.set)?;
    show(&mut out, &plan)?;
    apply(&mut kernel, &plan, &at)?;
    let state_dir = if args.state_dir == std::path::Path::new(STATE_DIR) {
        String::new()
    } else {
        format!(" --state-dir {}", args.state_dir.display())
    };
    writeln!(
        out,
        "\napplied {} changes; wrote {} ({} settings); previous values in {}\n\
         undo with: tcptrace tune --revert --file {}{state_dir}",
        plan.changes().len(),
        args.file.display(),
        plan.entries().len(),
        at.state.display(),
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
/// back as they were. The caller holds `at.lock`.
pub fn apply(kernel: &mut impl SysctlBackend, plan: &Plan, at: &Tuning) -> Result<(), TuneError> {
    let entries = plan.entries();
    let old_drop_in = files::read_ours(&at.drop_in)?;
    let old_state = files::read_ours(&at.state)?;
    // An earlier --apply not yet reverted: keep its saved values, which
    // are the ones from before any tuning.
    let mut previous = match &old_state {
        Some(text) => files::parse_state(text).map_err(|reason| TuneError::BadFile {
            path: at.state.clone(),
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
    safe_file::write_atomically(
        &at.state,
        files::render_state(&previous, &at.drop_in).as_bytes(),
    )?;

    let changes = plan.changes();
    if let Err(e) = apply_all(kernel, &changes) {
        let _ = files::restore(&at.state, old_state.as_deref());
        return Err(e);
    }
    let text = files::render_drop_in(plan.profile.name(), &entries, &at.drop_in);
    if let Err(e) = safe_file::write_atomically(&at.drop_in, text.as_bytes()) {
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
        let _ = files::restore(&at.state, old_state.as_deref());
        let _ = files::restore(&at.drop_in, old_drop_in.as_deref());
        return Err(e.into());
    }
    Ok(())
}

/// Writes back every saved value (all or nothing), then removes the
/// drop-in and the saved values. Returns how many keys were restored.
/// The saved values are used only from a file of ours (see
/// [`safe_file::read_trusted`]) that lists keys of tune's catalogue.
pub fn revert(kernel: &mut impl SysctlBackend, at: &Tuning) -> Result<usize, TuneError> {
    let text =
        files::read_ours(&at.state)?.ok_or_else(|| TuneError::NothingToRevert(at.state.clone()))?;
    let saved = files::parse_state(&text).map_err(|reason| TuneError::BadFile {
        path: at.state.clone(),
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
    match files::read_ours(&at.drop_in) {
        Ok(Some(_)) => safe_file::remove(&at.drop_in)?,
        Ok(None) => {}
        // Someone replaced it with their own file: theirs to keep.
        Err(e) => log::warn!("{e}; left in place"),
    }
    safe_file::remove(&at.state)?;
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

    /// The drop-in in the scratch directory, the state in `state/` in it.
    fn tuning(dir: &TempDir) -> Tuning {
        let state_dir = dir.0.join("state");
        safe_file::private_dir(&state_dir).unwrap();
        Tuning::locate(&dir.0.join("90-tcptrace.conf"), &state_dir).unwrap()
    }

    /// Files in the scratch directory and its state directory.
    fn files_in(dir: &TempDir) -> Vec<PathBuf> {
        [dir.0.clone(), dir.0.join("state")]
            .iter()
            .flat_map(|d| fs::read_dir(d).into_iter().flatten())
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect()
    }

    #[test]
    fn apply_then_revert_restores_everything_and_removes_the_files() {
        let dir = TempDir::new("roundtrip");
        let at = tuning(&dir);
        let drop_in = at.drop_in.clone();
        let mut kernel = FakeSysctl::stock();
        let before = kernel.values.clone();
        let plan = plan(&kernel, TuneProfile::Proxy, None, &[]).unwrap();
        apply(&mut kernel, &plan, &at).unwrap();
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
        assert_eq!(revert(&mut kernel, &at).unwrap(), entries.len());
        assert_eq!(kernel.values, before);
        assert!(!drop_in.exists() && !at.state.exists());
        assert!(matches!(
            revert(&mut kernel, &at),
            Err(TuneError::NothingToRevert(_))
        ));
    }

    #[test]
    fn a_second_apply_keeps_the_original_values() {
        let dir = TempDir::new("twice");
        let at = tuning(&dir);
        let mut kernel = FakeSysctl::stock();
        let before = kernel.values.clone();
        let first = plan(&kernel, TuneProfile::HighChurnClient, None, &[]).unwrap();
        apply(&mut kernel, &first, &at).unwrap();
        let second = plan(&kernel, TuneProfile::Proxy, None, &[]).unwrap();
        apply(&mut kernel, &second, &at).unwrap();
        revert(&mut kernel, &at).unwrap();
        assert_eq!(kernel.values, before);
    }

    #[test]
    fn a_refused_value_leaves_values_and_files_untouched() {
        let dir = TempDir::new("refused");
        let at = tuning(&dir);
        let mut kernel = FakeSysctl::stock();
        kernel.refuse.push("net.ipv4.tcp_fin_timeout".into());
        let before = kernel.values.clone();
        let plan = plan(&kernel, TuneProfile::HighChurnClient, None, &[]).unwrap();
        let err = apply(&mut kernel, &plan, &at).unwrap_err().to_string();
        assert!(
            err.starts_with("the kernel refused net.ipv4.tcp_fin_timeout = 15"),
            "{err}"
        );
        assert!(err.contains("nothing was applied"), "{err}");
        assert_eq!(kernel.values, before);
        assert_eq!(files_in(&dir), Vec::<PathBuf>::new(), "no file left behind");
    }

    #[test]
    fn someone_elses_file_is_never_replaced() {
        let dir = TempDir::new("foreign");
        let at = tuning(&dir);
        let drop_in = at.drop_in.clone();
        fs::write(&drop_in, "net.core.somaxconn = 1\n").unwrap();
        fs::set_permissions(
            &drop_in,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        let mut kernel = FakeSysctl::stock();
        let plan = plan(&kernel, TuneProfile::Proxy, None, &[]).unwrap();
        assert!(matches!(
            apply(&mut kernel, &plan, &at),
            Err(TuneError::NotOurs(_))
        ));
        assert!(kernel.writes.is_empty());
        assert_eq!(
            fs::read_to_string(&drop_in).unwrap(),
            "net.core.somaxconn = 1\n"
        );
    }

    #[test]
    fn a_planted_state_file_is_refused_and_nothing_is_written() {
        use std::os::unix::fs::{PermissionsExt as _, symlink};
        let dir = TempDir::new("planted");
        let at = tuning(&dir);
        let mut kernel = FakeSysctl::stock();
        let plan = plan(&kernel, TuneProfile::Proxy, None, &[]).unwrap();
        let planted = format!("{}\nnet.ipv4.tcp_fin_timeout = 60\n", files::MARKER);
        let refused = |kernel: &mut FakeSysctl| {
            let revert_err = revert(kernel, &at).unwrap_err().to_string();
            let apply_err = apply(kernel, &plan, &at).unwrap_err().to_string();
            assert!(kernel.writes.is_empty(), "{revert_err}; {apply_err}");
            assert!(!at.drop_in.exists(), "{apply_err}");
            (revert_err, apply_err)
        };

        // Writable by others: anyone could have put values in it.
        fs::write(&at.state, &planted).unwrap();
        fs::set_permissions(&at.state, fs::Permissions::from_mode(0o666)).unwrap();
        let (err, _) = refused(&mut kernel);
        assert!(err.contains("group or others can write to it"), "{err}");

        // Ours, but with a key tune does not manage.
        fs::write(
            &at.state,
            format!("{planted}kernel.core_pattern = |/tmp/x %p\n"),
        )
        .unwrap();
        fs::set_permissions(&at.state, fs::Permissions::from_mode(0o600)).unwrap();
        let (err, _) = refused(&mut kernel);
        assert!(
            err.contains("kernel.core_pattern is not a key tune manages"),
            "{err}"
        );

        // A link to a file of ours.
        fs::remove_file(&at.state).unwrap();
        let elsewhere = dir.0.join("elsewhere");
        fs::write(&elsewhere, &planted).unwrap();
        symlink(&elsewhere, &at.state).unwrap();
        let (err, _) = refused(&mut kernel);
        assert!(err.contains("is a symbolic link"), "{err}");
        assert_eq!(fs::read_to_string(&elsewhere).unwrap(), planted);
    }

    #[test]
    fn revert_skips_keys_that_no_longer_exist() {
        let dir = TempDir::new("gone");
        let at = tuning(&dir);
        let mut kernel = FakeSysctl::stock();
        kernel
            .values
            .insert("net.netfilter.nf_conntrack_max".into(), "65536".into());
        let before = kernel.values.clone();
        let plan = plan(&kernel, TuneProfile::Proxy, None, &[]).unwrap();
        apply(&mut kernel, &plan, &at).unwrap();
        kernel.values.remove("net.netfilter.nf_conntrack_max");
        revert(&mut kernel, &at).unwrap();
        let mut expected = before;
        expected.remove("net.netfilter.nf_conntrack_max");
        assert_eq!(kernel.values, expected);
    }

    #[test]
    fn the_default_state_dir_is_the_documented_one() {
        use clap::Parser as _;
        let cli = crate::cli::Cli::try_parse_from(["tcptrace", "tune"]).unwrap();
        let crate::cli::Command::Tune(args) = cli.command else {
            panic!("tune parses as tune");
        };
        assert_eq!(args.state_dir, std::path::Path::new(STATE_DIR));
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
