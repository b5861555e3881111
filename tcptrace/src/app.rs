//! The binary's entry: parse the command line, start the async runtime
//! the command needs, dispatch, and turn any error into one line on
//! stderr with a non-zero exit (2 for usage, 1 otherwise).

use std::{io, process::ExitCode};

use clap::Parser as _;

use crate::cli::{Cli, Command, StressMode, usage_error};

/// Runs tcptrace with the process's arguments; the exit code to return.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) if !err.use_stderr() => {
            // --help and --version.
            let _ = err.print();
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("{} (see --help)", error_line(&usage_error(&err)));
            return ExitCode::from(2);
        }
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp(None)
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{}", error_line(&one_line(&err)));
            if is_usage(&err) {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// A command line that parsed but asks for what cannot be: a `tune
/// --set` key tune does not manage, or a value its key refuses. Exit 2,
/// as for any other usage error.
fn is_usage(err: &anyhow::Error) -> bool {
    use crate::tune::TuneError;
    err.chain().any(|e| {
        matches!(
            e.downcast_ref::<TuneError>(),
            Some(TuneError::UnknownKey(_) | TuneError::BadValue { .. })
        )
    })
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // One thread is plenty to read events; a load generator must use every
    // core to keep up with a blocking connect loop on as many threads.
    let mut builder = match &cli.command {
        Command::Stress(args) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            // A local connect completes inside the syscall, so churn is
            // CPU-bound in the kernel: as many workers as connections in
            // flight (within 1 to 4 per core) get the same share of the
            // CPU as a blocking loop with that many threads.
            if let StressMode::Churn(churn) = &args.mode {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                builder.worker_threads((churn.concurrency as usize).clamp(cores, 4 * cores));
            }
            builder
        }
        _ => tokio::runtime::Builder::new_current_thread(),
    };
    let runtime = builder
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async move {
        match cli.command {
            Command::Trace(args) => crate::trace::run(args).await,
            Command::Snapshot(args) => crate::snapshot::run(args).await,
            Command::Tune(args) => crate::tune::run(args).await,
            Command::Stress(args) => crate::stress::run(args).await,
            Command::Diagnose(args) => crate::diagnose::run(args).await,
            Command::Top(args) => crate::top::run(args).await,
            Command::Exporter(args) => crate::exporter::run(args).await,
            Command::Replay(args) => crate::replay::run(args),
        }
    })
}

/// The error and its causes on one line, without repeating a cause that
/// the outer message already quotes.
fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}

/// `tcptrace: LINE`, with the program's name once: a message that
/// already starts with it (`tcptrace stress ...`) does not get it twice.
fn error_line(line: &str) -> String {
    let line = line
        .strip_prefix("tcptrace:")
        .or_else(|| line.strip_prefix("tcptrace "))
        .map_or(line, str::trim_start);
    format!("tcptrace: {line}")
}

/// A closed stdout (`tcptrace trace | head`) ends the run quietly.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_join_on_one_line_without_repeats() {
        let inner = io::Error::new(io::ErrorKind::NotFound, "no such file");
        let err = anyhow::Error::new(inner).context("cannot open /x: no such file");
        assert_eq!(one_line(&err), "cannot open /x: no such file");
        let err = anyhow::anyhow!("line one\nline two").context("outer");
        assert_eq!(one_line(&err), "outer: line one line two");
    }

    #[test]
    fn the_program_name_comes_once() {
        assert_eq!(error_line("no such file"), "tcptrace: no such file");
        assert_eq!(
            error_line("tcptrace stress needs a subcommand"),
            "tcptrace: stress needs a subcommand"
        );
        assert_eq!(error_line("tcptrace: warning"), "tcptrace: warning");
        assert_eq!(error_line("tcptraces"), "tcptrace: tcptraces");
        let usage = Cli::try_parse_from(["tcptrace"]).unwrap_err();
        let line = error_line(&usage_error(&usage));
        assert!(!line.contains("tcptrace: tcptrace"), "{line}");
        assert!(
            !error_line(&crate::error::Error::NotRoot.to_string()).contains("tcptrace: tcptrace")
        );
    }

    #[test]
    fn a_broken_pipe_is_recognised_through_context() {
        let err = anyhow::Error::new(io::Error::from(io::ErrorKind::BrokenPipe)).context("writing");
        assert!(is_broken_pipe(&err));
        assert!(!is_broken_pipe(&anyhow::anyhow!("other")));
    }
}
