//! `diagnose --during 'stress ...'`: the built-in load generator runs as a
//! child (`tcptrace stress ...`) while diagnose watches, inside the watched
//! network namespace; the run ends when the load ends. A child rather than
//! a task: it can live in another namespace, and its progress and report
//! go to our stderr, never mixed with the diagnose report.
//!
//! At the end of the run the load is asked to stop (SIGTERM, as Ctrl-C on
//! `stress` alone would) and given `GRACE` to print its report of the
//! attempts so far: the person reads both reports.
//!
//! The load never outlives diagnose: it runs in a process group of its own
//! that `stop` (after the grace) and `Drop` kill, and with `PR_SET_PDEATHSIG` = SIGKILL, so a
//! SIGKILL of diagnose (or anything else that ends it without unwinding)
//! ends the load too. The kernel sends that signal when the *thread* that
//! spawned the child exits: diagnose runs on a current-thread runtime, so
//! that is the main thread, which lives as long as the process.
//!
//! A Unix socket links the two (`--parent-fd`): the load writes one byte
//! once it has started making load (resolved its target, attached its
//! tracer), so a load that exits before that failed at once, and
//! diagnosing nothing is an error, not "no problem found". And the load
//! ends as soon as our end closes, which on a SIGKILL happens before the
//! kernel has torn down our eBPF programs and sends the death signal.

use std::{
    fs::File,
    io::Read as _,
    os::{
        fd::{AsFd as _, AsRawFd as _, BorrowedFd},
        unix::{net::UnixStream, process::CommandExt as _},
    },
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::Parser as _;

use crate::cli::{Cli, Command as CliCommand, usage_error};

/// Checks `text` is a `stress` command line and returns its words.
pub fn parse(text: &str) -> anyhow::Result<Vec<String>> {
    let words: Vec<String> = text.split_whitespace().map(str::to_string).collect();
    if words.first().map(String::as_str) != Some("stress") {
        anyhow::bail!(
            "--during '{text}': expected a stress command, e.g. 'stress churn 127.0.0.1:8080 --duration 10s'"
        );
    }
    let argv = std::iter::once("tcptrace".to_string()).chain(words.iter().cloned());
    match Cli::try_parse_from(argv) {
        Ok(Cli {
            command: CliCommand::Stress(_),
        }) => Ok(words),
        Ok(_) => anyhow::bail!("--during '{text}': not a stress command"),
        Err(err) => anyhow::bail!("--during '{text}': {}", usage_error(&err)),
    }
}

/// How long a load asked to stop has to print its report before it is
/// killed: `stress` stops its clients and prints within milliseconds.
const GRACE: Duration = Duration::from_secs(2);

/// The load, started; killed if the diagnosis stops first.
pub struct Load {
    child: Child,
    /// Our end of the link (see the module doc); non-blocking.
    link: UnixStream,
    started: bool,
}

impl Load {
    /// Starts `tcptrace WORDS... --parent-fd N`, inside the namespace at
    /// `netns` if any.
    pub fn start(words: &[String], netns: Option<&Path>) -> anyhow::Result<Load> {
        let exe = std::env::current_exe().context("cannot find the tcptrace executable")?;
        let stderr = std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .context("cannot share stderr with the load")?;
        // Both ends close-on-exec; the child clears it on its own end.
        let (link, their_end) = UnixStream::pair().context("cannot make a socket for the load")?;
        link.set_nonblocking(true)
            .context("cannot make a socket for the load")?;
        let ns = netns
            .map(|path| {
                File::open(path)
                    .with_context(|| format!("cannot open network namespace {}", path.display()))
            })
            .transpose()?;
        let parent = rustix::process::getpid();
        let mut command = Command::new(exe);
        command
            .args(words)
            .arg("--parent-fd")
            .arg(their_end.as_raw_fd().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::from(stderr))
            // Its own group: `stop` reaches whatever it forks, and a Ctrl-C
            // on the terminal is ours to handle (we stop it, then report).
            .process_group(0);
        // SAFETY: between fork and exec only raw prctl(2), getppid(2),
        // fcntl(2) and setns(2) system calls (rustix, no allocation), all
        // async-signal-safe, on fds that stay open in `command`'s closure.
        unsafe {
            command.pre_exec(move || {
                in_child(parent, their_end.as_fd(), ns.as_ref().map(|f| f.as_fd()))
            });
        }
        let child = command
            .spawn()
            .context("cannot start the load (tcptrace stress)")?;
        Ok(Load {
            child,
            link,
            started: false,
        })
    }

    /// Exit status once it has ended, without waiting. A load that ended
    /// before it started making load is an error: nothing was diagnosed.
    pub fn ended(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        let status = self.child.try_wait().ok().flatten();
        // Read after the exit is seen, so a byte written just before it
        // counts.
        if !self.started {
            let mut byte = [0u8; 1];
            self.started = matches!((&self.link).read(&mut byte), Ok(1));
        }
        match status {
            Some(status) if !self.started => anyhow::bail!(
                "the --during load failed before it made any load ({status}; its error is above): nothing to diagnose"
            ),
            status => Ok(status),
        }
    }

    /// Asks it to stop (SIGTERM to its process group) if it still runs,
    /// without waiting: it prints its report meanwhile, and `stop` reaps it.
    pub fn ask_to_stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None))
            && let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32)
        {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::TERM);
        }
    }

    /// Waits up to `GRACE` for it to end once asked, then stops its whole
    /// process group; its exit status.
    pub fn stop(mut self) -> Option<ExitStatus> {
        let deadline = Instant::now() + GRACE;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(_) => break,
            }
        }
        self.kill_and_reap()
    }

    fn kill_and_reap(&mut self) -> Option<ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.kill_and_reap();
    }
}

/// Runs in the forked child before exec: die with the parent, keep its
/// end of the link across exec, enter the namespace.
fn in_child(
    parent: rustix::process::Pid,
    link: BorrowedFd<'_>,
    netns: Option<BorrowedFd<'_>>,
) -> std::io::Result<()> {
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
    // The parent may have died before the line above: then nobody would
    // ever send the signal.
    if rustix::process::getppid() != Some(parent) {
        return Err(std::io::Error::from(rustix::io::Errno::SRCH));
    }
    rustix::io::fcntl_setfd(link, rustix::io::FdFlags::empty())?;
    if let Some(fd) = netns {
        rustix::thread::move_into_link_name_space(
            fd,
            Some(rustix::thread::LinkNameSpaceType::Network),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_stress_commands_are_accepted() {
        assert_eq!(
            parse("stress churn 127.0.0.1:8080 --duration 2s").unwrap()[1],
            "churn"
        );
        let err = parse("trace --json").unwrap_err().to_string();
        assert!(err.contains("expected a stress command"), "{err}");
        let err = parse("stress nonsense").unwrap_err().to_string();
        assert!(err.starts_with("--during 'stress nonsense':"), "{err}");
        assert!(!err.contains('\n'));
        let err = parse("stress churn").unwrap_err().to_string();
        assert!(err.contains("<TARGET>"), "{err}");
        assert!(!err.contains('\n'));
    }
}
