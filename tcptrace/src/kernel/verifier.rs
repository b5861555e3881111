//! The verifier's verdict on a program the kernel refused, in one line.

use aya::programs::ProgramError;

/// aya's load error carries the whole verifier log: say the syscall's
/// error and the verifier's last word (the log's last line that is not
/// statistics); the whole log goes to the debug log.
pub fn verdict(err: &ProgramError) -> String {
    match err {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            log::debug!("verifier log:\n{log}");
            let verdict = log.lines().rev().map(str::trim).find(|l| {
                !l.is_empty()
                    && !l.starts_with("verification time")
                    && !l.starts_with("processed")
                    && !l.starts_with("stack depth")
            });
            match verdict {
                Some(verdict) => format!("BPF_PROG_LOAD: {io_error}; verifier: {verdict}"),
                None => format!("BPF_PROG_LOAD: {io_error}"),
            }
        }
        other => other.to_string(),
    }
}
