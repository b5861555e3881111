//! `diagnose --during 'stress ...'`: the built-in load generator runs as a
//! child (`tcptrace stress ...`) while diagnose watches, inside the watched
//! network namespace; the run ends when the load ends. A child rather than
//! a task: it can live in another namespace, and its progress and report
//! go to our stderr, never mixed with the diagnose report.

use std::{
    fs::File,
    os::{
        fd::{AsFd as _, AsRawFd as _},
        unix::process::CommandExt as _,
    },
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
};

use anyhow::Context as _;
use clap::Parser as _;

use crate::cli::{Cli, Command as CliCommand};

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
        Err(err) => anyhow::bail!("--during '{text}': {}", crate::cli::usage_error(&err)),
    }
}

/// The load, started; killed if the diagnosis stops first.
pub struct Load {
    child: Child,
}

impl Load {
    /// Starts `tcptrace WORDS...`, inside the namespace at `netns` if any.
    pub fn start(words: &[String], netns: Option<&Path>) -> anyhow::Result<Load> {
        let exe = std::env::current_exe().context("cannot find the tcptrace executable")?;
        let stderr = std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .context("cannot share stderr with the load")?;
        let mut command = Command::new(exe);
        command
            .args(words)
            .stdin(Stdio::null())
            .stdout(Stdio::from(stderr));
        if let Some(path) = netns {
            let ns = File::open(path)
                .with_context(|| format!("cannot open network namespace {}", path.display()))?;
            // SAFETY: between fork and exec only setns(2), which is
            // async-signal-safe, on an fd that stays open in `command`'s
            // closure.
            unsafe {
                command.pre_exec(move || {
                    if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = command
            .spawn()
            .context("cannot start the load (tcptrace stress)")?;
        Ok(Load { child })
    }

    /// Exit status once it has ended, without waiting.
    pub fn ended(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn stop(mut self) -> Option<ExitStatus> {
        if let Some(status) = self.ended() {
            return Some(status);
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        if self.ended().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
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
