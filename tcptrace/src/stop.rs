//! The one stop signal: Ctrl-C (SIGINT), SIGTERM, SIGHUP (an ssh session
//! dropping) or the end of `--duration`. Every command that runs until
//! stopped ends on it the same way: flush, summarise, report.

use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};

/// Why a run stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// SIGINT (Ctrl-C).
    Interrupted,
    /// SIGTERM.
    Terminated,
    /// SIGHUP: the terminal or ssh session went away.
    HungUp,
    /// `--duration` has passed.
    DurationReached,
    /// The command asked for it (its load ended, `q` in the TUI, ...).
    Requested,
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StopReason::Interrupted => "interrupted",
            StopReason::Terminated => "terminated",
            StopReason::HungUp => "hung up",
            StopReason::DurationReached => "duration reached",
            StopReason::Requested => "requested",
        })
    }
}

/// Resolves on SIGINT, SIGTERM or SIGHUP, or when `duration` has passed.
/// The handlers are installed by this call, not at the first poll: a
/// signal that arrives right after the command says it is running must
/// stop it cleanly, not kill the process. A handler that cannot be
/// installed (never expected) leaves that signal's default action.
pub fn stop_signal(duration: Option<Duration>) -> impl Future<Output = StopReason> {
    let mut interrupt = signal(SignalKind::interrupt()).ok();
    let mut terminate = signal(SignalKind::terminate()).ok();
    let mut hangup = signal(SignalKind::hangup()).ok();
    async move {
        let timer = async {
            match duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = received(&mut interrupt) => StopReason::Interrupted,
            () = received(&mut terminate) => StopReason::Terminated,
            () = received(&mut hangup) => StopReason::HungUp,
            () = timer => StopReason::DurationReached,
        }
    }
}

/// Resolves when `signal` arrives; never without a handler.
async fn received(signal: &mut Option<Signal>) {
    match signal {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_duration_ends_it() {
        let reason = stop_signal(Some(Duration::from_millis(10))).await;
        assert_eq!(reason, StopReason::DurationReached);
    }

    #[tokio::test]
    async fn sighup_ends_it_like_sigterm() {
        let stop = stop_signal(None);
        use rustix::process::{Signal, getpid, kill_process};
        kill_process(getpid(), Signal::HUP).unwrap();
        let reason = tokio::time::timeout(Duration::from_secs(5), stop).await;
        assert_eq!(reason.ok(), Some(StopReason::HungUp));
    }
}
